//! The storage port for the OAuth provider ([`OAuthStore`]): registered clients, codes and
//! the remembered consents. A code's first redemption and what it opens are one
//! transaction, decided by the domain ([`CodeDecide`]).

use async_trait::async_trait;

use super::{SessionRecord, SessionRevocation, StoreError};
use crate::clock::Timestamp;
use crate::crypto::RefreshTokenKey;
use crate::crypto::TokenHash;
use crate::ids::{ClientId, RedirectUri, Scope, SessionId, UserId};

/// An authorization code as stored: only its hash (RFC 6749 §4.1.2, SPEC 5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCodeRecord {
    /// SHA-256 of the code.
    pub hash: TokenHash,
    /// The client it was issued to.
    pub client_id: ClientId,
    /// The user who approved it.
    pub user_id: UserId,
    /// The redirect URI of the authorization request (the token request must repeat it).
    pub redirect_uri: RedirectUri,
    /// Granted scope.
    pub scope: Scope,
    /// The request's `nonce`, for the ID token.
    pub nonce: Option<String>,
    /// PKCE S256 challenge (base64url of SHA-256 of the verifier).
    pub code_challenge: String,
    /// When the user authenticated.
    pub auth_time: Timestamp,
    /// Issue time.
    pub created_at: Timestamp,
    /// Expiry (60 s after issue).
    pub expires_at: Timestamp,
    /// First redemption.
    pub used_at: Option<Timestamp>,
    /// The session the first redemption produced.
    pub session_id: Option<SessionId>,
    /// The browser session that approved it. The code is good only while that session is
    /// live and the user's consent stands: a logout, a password change or disconnecting
    /// the app before the redemption leaves the code worthless (SPEC 4: revoked is final).
    /// `None` for codes issued before this was recorded, which are refused.
    pub browser_session_id: Option<SessionId>,
    /// The DPoP key the code must be redeemed with (`dpop_jkt`, RFC 9449 §10).
    pub dpop_jkt: Option<crate::dpop::Thumbprint>,
    /// The resources (RFC 8707) the authorization request named.
    pub resources: Vec<String>,
}

/// What the domain decided about a code's first redemption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeDecision {
    /// Open this session (with this refresh token, if the client gets one).
    Issue {
        /// The new session.
        session: Box<SessionRecord>,
        /// Its first refresh token.
        refresh_token: Option<RefreshTokenKey>,
    },
    /// Refuse (the code is spent anyway).
    Refuse {
        /// Why, in a sentence for the `error_description`.
        why: &'static str,
    },
}

/// What stands behind a code when it is redeemed, read (and, on PostgreSQL, locked) in the
/// redemption's transaction, so that a concurrent logout or disconnect is seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeIssuer {
    /// The browser session that approved the code, as it is now.
    pub browser_session: Option<SessionRecord>,
    /// The scopes the user has granted the client now (`None`: no consent, or withdrawn).
    pub consented_scopes: Option<Scope>,
}

/// The code-redemption decision, run inside the store's transaction.
pub type CodeDecide = Box<dyn FnOnce(&AuthCodeRecord, &CodeIssuer) -> CodeDecision + Send>;

/// What a code redemption came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeRedemption {
    /// No such code.
    Unknown,
    /// The code was issued to another client: nothing changed (RFC 6749 §4.1.3: only the
    /// client a code was issued to may redeem it, so another client can neither spend it
    /// nor trigger its replay revocation).
    OtherClient {
        /// The code, untouched.
        code: Box<AuthCodeRecord>,
    },
    /// The code had been redeemed before: what the first use produced was revoked (the
    /// ids), with a feed event each.
    Reused {
        /// The code.
        code: Box<AuthCodeRecord>,
        /// Sessions revoked.
        revoked: Vec<SessionId>,
    },
    /// First redemption: the code is now spent, and the decision applied.
    Redeemed {
        /// The code as it was.
        code: Box<AuthCodeRecord>,
        /// The decision.
        decision: CodeDecision,
    },
}

/// A registered OAuth client (an app, or a resource server reading the feed).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientRecord {
    /// The public id.
    pub client_id: ClientId,
    /// A name for people.
    pub name: String,
    /// SHA-256 of the secret; `None` for a public client.
    pub secret_hash: Option<TokenHash>,
    /// Exact redirect URIs.
    pub redirect_uris: Vec<RedirectUri>,
    /// Allowed grant types.
    pub grant_types: Vec<String>,
    /// Scopes it may hold.
    pub scopes: Scope,
    /// Registration time.
    pub created_at: Timestamp,
    /// Where the app may send the browser after RP-initiated logout (exact match).
    pub post_logout_redirect_uris: Vec<RedirectUri>,
    /// Where the app receives back-channel logout tokens, if it does (SPEC 13).
    pub backchannel_logout: Option<BackchannelLogout>,
    /// Its authorization requests must be pushed first (RFC 9126 §6).
    pub require_par: bool,
    /// The resources (RFC 8707) it may ask tokens for.
    pub resources: Vec<String>,
    /// Its public keys, for `private_key_jwt` (RFC 7523); such a client has no secret and
    /// is confidential.
    pub keys: Option<ClientKeys>,
    /// SHA-256 of its registration access token, when it registered itself (RFC 7592).
    pub registration_token_hash: Option<TokenHash>,
}

impl ClientRecord {
    /// A public client: it holds no secret and no key, so it authenticates by id alone.
    pub fn is_public(&self) -> bool {
        self.secret_hash.is_none() && self.keys.is_none()
    }
}

/// Where a `private_key_jwt` client's public keys are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientKeys {
    /// A JWK set registered with the client (`jwks`), as JSON.
    Inline(String),
    /// A URL Latchkey fetches the JWK set from (`jwks_uri`).
    Uri(String),
}

/// A client's back-channel logout registration (OpenID Connect Back-Channel Logout 1.0 §2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackchannelLogout {
    /// The `backchannel_logout_uri` logout tokens are POSTed to.
    pub uri: String,
    /// `backchannel_logout_session_required`: the app needs `sid` (Latchkey always sends it).
    pub session_required: bool,
}

impl std::fmt::Debug for ClientRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRecord")
            .field("client_id", &self.client_id)
            .field("name", &self.name)
            .field("is_public", &self.is_public())
            .field("redirect_uris", &self.redirect_uris)
            .field("grant_types", &self.grant_types)
            .field("scopes", &self.scopes)
            .field("post_logout_redirect_uris", &self.post_logout_redirect_uris)
            .field("backchannel_logout", &self.backchannel_logout)
            .field("require_par", &self.require_par)
            .field("resources", &self.resources)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// What the OAuth provider keeps: registered clients, authorization codes, consent
/// (SPEC 5.2).
#[async_trait]
pub trait OAuthStore {
    /// Inserts a registered client; a taken id is [`StoreError::Conflict`].
    async fn insert_client(&self, client: &ClientRecord) -> Result<(), StoreError>;
    /// A client by id.
    async fn find_client(&self, client_id: &ClientId) -> Result<Option<ClientRecord>, StoreError>;
    /// Every client, oldest first.
    async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError>;
    /// Deletes a client; `false` when there was none.
    async fn delete_client(&self, client_id: &ClientId) -> Result<bool, StoreError>;
    /// Replaces a client's metadata (everything but its id, secret, creation time and
    /// registration token); `false` when there is no such client.
    async fn update_client(&self, client: &ClientRecord) -> Result<bool, StoreError>;
    /// Stores an initial access token for dynamic registration (its hash).
    async fn insert_registration_token(
        &self,
        hash: &TokenHash,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError>;
    /// Spends an initial access token; `false` when it is unknown, spent or expired.
    async fn use_registration_token(&self, hash: &TokenHash, now: Timestamp) -> Result<bool, StoreError>;
    /// Stores a new authorization code.
    async fn insert_auth_code(&self, code: &AuthCodeRecord) -> Result<(), StoreError>;
    /// Redeems a code for `client_id` atomically: an unknown code is
    /// [`CodeRedemption::Unknown`]; another client's code is [`CodeRedemption::OtherClient`]
    /// and changes nothing; a spent one revokes the session its first use produced
    /// ([`CodeRedemption::Reused`], with `reuse`); otherwise the code is spent, `decide`
    /// runs and its session is inserted.
    async fn redeem_auth_code(
        &self,
        hash: &TokenHash,
        client_id: &ClientId,
        now: Timestamp,
        reuse: &SessionRevocation,
        decide: CodeDecide,
    ) -> Result<CodeRedemption, StoreError>;
    /// The scopes a user has granted a client so far.
    async fn find_consent(&self, user_id: &UserId, client_id: &ClientId)
    -> Result<Option<Scope>, StoreError>;
    /// Records (replaces) the scopes a user has granted a client.
    async fn save_consent(
        &self,
        user_id: &UserId,
        client_id: &ClientId,
        scopes: &Scope,
        now: Timestamp,
    ) -> Result<(), StoreError>;
}
