//! The storage port, one trait per aggregate. `latchkey-store` implements it for SQLite and
//! PostgreSQL.
//!
//! Every operation that must be atomic is one method here, run by the store in one
//! transaction: rotation with reuse detection, revocation (with its feed event), user
//! changes that revoke sessions. The domain never holds a transaction. No SQL and no
//! backend types appear in this file.

use async_trait::async_trait;
use latchkey_proto::ErrorReason;

use crate::caller::CallerFingerprint;
use crate::clock::Timestamp;
use crate::crypto::{RefreshTokenKey, TokenHash};
use crate::ids::{ClientId, Scope, SessionId, UserId};

/// What went wrong in the store, without backend types.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint was violated (for example a taken username).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database cannot be reached now.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else the backend reported.
    #[error("database error: {0}")]
    Backend(String),
}

/// Whether a user may sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    /// Normal.
    Active,
    /// Disabled by an administrator: no login, no refresh.
    Disabled,
}

impl UserStatus {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
        }
    }

    /// Parses a stored value; `None` for anything else (a corrupt row).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "disabled" => Some(Self::Disabled),
            _ => None,
        }
    }
}

/// A user. `Debug` leaves out the password hash.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Opaque id (the `sub` claim).
    pub id: UserId,
    /// Unique username.
    pub username: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Bumped whenever roles, password or status change (SPEC 1.6).
    pub authz_ver: i64,
    /// Status.
    pub status: UserStatus,
    /// Creation time.
    pub created_at: Timestamp,
    /// The account's email address, when it has one (SPEC 10).
    pub email: Option<UserEmail>,
}

/// An account's email address (SPEC 10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEmail {
    /// The address as the user gave it.
    pub address: String,
    /// What uniqueness and sign-in compare: the address in lower case
    /// (`EmailAddress::key`).
    pub key: String,
    /// When the address was proven; `None` while unverified.
    pub verified_at: Option<Timestamp>,
}

impl UserEmail {
    /// A parsed address, unverified or verified at `verified_at`.
    pub fn new(address: &latchkey_proto::EmailAddress, verified_at: Option<Timestamp>) -> Self {
        Self { address: address.as_str().to_owned(), key: address.key(), verified_at }
    }
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("roles", &self.roles)
            .field("authz_ver", &self.authz_ver)
            .field("status", &self.status)
            .field("created_at", &self.created_at)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// A session: one login on one device, or one grant of a user to an app (SPEC 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Opaque id (the `sid` claim).
    pub id: SessionId,
    /// The user.
    pub user_id: UserId,
    /// The client.
    pub client_id: ClientId,
    /// Granted scope.
    pub scope: Scope,
    /// Login time.
    pub created_at: Timestamp,
    /// Last login or refresh.
    pub last_used_at: Timestamp,
    /// Sliding expiry; never after `expires_at`.
    pub idle_expires_at: Timestamp,
    /// Absolute expiry; nothing extends it.
    pub expires_at: Timestamp,
    /// Client address at the last use.
    pub ip: Option<String>,
    /// User agent at login (the binding reference).
    pub user_agent: Option<String>,
    /// When it was revoked; revoked is final.
    pub revoked_at: Option<Timestamp>,
    /// Why.
    pub revoke_reason: Option<ErrorReason>,
    /// How the user signed in to open it: RFC 8176 `amr` values separated by spaces
    /// (`pwd`, `pwd otp mfa`, `pwd mfa`; see [`crate::mfa::acr_of`]). An app's session takes
    /// the browser sign-in's.
    pub amr: String,
    /// The DPoP key the session is bound to for its whole life (SPEC 12): every refresh must
    /// come with a proof from it. `None` for a Bearer session.
    pub dpop_jkt: Option<crate::dpop::Thumbprint>,
    /// Since when the session waits for its user to sign in again (`risk_policy`'s
    /// `step_up`, SPEC 12): refreshes are refused until `POST /auth/step-up`.
    pub step_up_at: Option<Timestamp>,
    /// For an app's session, the browser session whose sign-in approved its code:
    /// RP-initiated logout of that browser session ends it too (SPEC 13).
    pub browser_session_id: Option<SessionId>,
    /// The resources (RFC 8707) granted to an app's session: its access tokens are for
    /// them (or a part it asks for). Empty: the `audience` setting.
    pub resources: Vec<String>,
}

/// A refresh token as stored: its key and hash, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTokenRecord {
    /// Its key and hash.
    pub key: RefreshTokenKey,
    /// Its session.
    pub session_id: SessionId,
    /// Issue time.
    pub created_at: Timestamp,
    /// When it was rotated; `None` while it is the session's live token.
    pub retired_at: Option<Timestamp>,
    /// The successor, sealed under a key only the holder of this token can derive.
    pub successor_sealed: Option<Vec<u8>>,
    /// Whether the successor has itself been rotated (the grace window's use bound).
    pub is_successor_used: bool,
    /// Who rotated it: a duplicate is benign only from the same caller (SPEC 4). `None`
    /// while live, and for tokens retired before this was recorded.
    pub retired_by: Option<CallerFingerprint>,
}

/// Everything a rotation decision needs, read inside the rotation's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshSnapshot {
    /// The presented token.
    pub token: RefreshTokenRecord,
    /// Its session.
    pub session: SessionRecord,
    /// The session's user.
    pub user: UserRecord,
}

/// Updates to a session when it is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch {
    /// Now.
    pub now: Timestamp,
    /// New idle expiry.
    pub idle_expires_at: Timestamp,
    /// Client address, when known.
    pub ip: Option<String>,
    /// Whether this use ends the session's step-up wait (a refresh after `POST /auth/step-up`).
    pub ends_step_up_wait: bool,
}

/// How long a session's repeated anomaly is recorded once: a session that keeps showing
/// the same `binding_anomaly` on every refresh (a browser updated since sign-in under
/// `binding = "log"`) leaves one per detail and client address in this time. Risk
/// decisions are always recorded (SPEC 12). Metrics still count every refresh.
pub const ANOMALY_QUIET: std::time::Duration = std::time::Duration::from_secs(3600);

/// What the domain decided, for the store to apply inside the same transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationDecision {
    /// Retire the presented token and make `successor` the live one.
    Rotate {
        /// The caller that rotated, stored with the retired token.
        retired_by: CallerFingerprint,
        /// Key and hash of the new token.
        successor: RefreshTokenKey,
        /// The new token sealed for the grace window.
        successor_sealed: Vec<u8>,
        /// Session update (which also ends a step-up wait).
        touch: Touch,
        /// Events to record: a risk action always; a `binding_anomaly` (policy `log`)
        /// unless the session already has one with the same detail and address within
        /// [`ANOMALY_QUIET`] before `touch.now`.
        events: Vec<NewSecurityEvent>,
        /// Whether risk shortened the new access token's life.
        shortened: bool,
    },
    /// A benign concurrent refresh inside the grace window: hand out the same successor.
    Replay {
        /// Session update.
        touch: Touch,
        /// Events to record: a risk action always; a `binding_anomaly` (policy `log`)
        /// unless the session already has one with the same detail and address within
        /// [`ANOMALY_QUIET`] before `touch.now`.
        events: Vec<NewSecurityEvent>,
        /// Whether risk shortened the new access token's life.
        shortened: bool,
    },
    /// Refuse, and make the session wait for its user to sign in again (risk's `step_up`).
    StepUp {
        /// Now.
        at: Timestamp,
        /// The risk event.
        event: NewSecurityEvent,
    },
    /// Revoke the session (reuse detected, binding denied).
    Revoke {
        /// The revocation.
        revocation: SessionRevocation,
    },
    /// Refuse without changing anything (already revoked, expired).
    Refuse {
        /// Why.
        reason: ErrorReason,
    },
    /// Refuse without changing anything: the request asked for a scope the session does not
    /// hold (RFC 6749 §6, `invalid_scope`). Decided only after the token's own state, so a
    /// retired token cannot be probed this way.
    ScopeExceeded,
    /// Likewise for a `resource` the session was not granted (RFC 8707, `invalid_target`).
    TargetExceeded,
}

/// The common part of every revocation: why, when, until when the feed must remember
/// it, and the security event to record with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRevocation {
    /// Reason stored on the session.
    pub reason: ErrorReason,
    /// Now.
    pub now: Timestamp,
    /// The feed event's `until`.
    pub until: Timestamp,
    /// Recorded in the same transaction.
    pub event: NewSecurityEvent,
}

impl SessionRevocation {
    /// The security event recorded with this revocation once the store knows which
    /// sessions it actually revoked (none are skipped: the caller records nothing then).
    pub fn event_for(&self, revoked: &[SessionId]) -> NewSecurityEvent {
        let mut event = self.event.clone();
        if event.detail.is_none() {
            event.detail = Some(format!("reason {}; {} session(s)", self.reason.as_str(), revoked.len()));
        }
        if event.session_id.is_none()
            && let [only] = revoked
        {
            event.session_id = Some(only.clone());
        }
        event
    }
}

/// Which sessions a revocation applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationTarget {
    /// One session, only if it belongs to `user_id` when given.
    Session {
        /// Session id.
        id: SessionId,
        /// Owner check.
        user_id: Option<UserId>,
    },
    /// Every live session of a user, except one.
    UserSessions {
        /// The user.
        user_id: UserId,
        /// A session to keep.
        except: Option<SessionId>,
    },
    /// Every live session of a client, for every user (the client is being removed); its
    /// remembered consents are forgotten in the same transaction.
    ClientSessions {
        /// The client.
        client_id: ClientId,
    },
    /// A browser session and every app session created under it (RP-initiated logout,
    /// SPEC 13), only if the browser session belongs to `user_id`.
    BrowserSession {
        /// The browser session.
        id: SessionId,
        /// Owner check.
        user_id: UserId,
    },
    /// A user's grant to an app: every live session of the user with that client; the
    /// remembered consent is forgotten in the same transaction.
    AppGrant {
        /// The user.
        user_id: UserId,
        /// The app.
        client_id: ClientId,
    },
}

/// A change to a user that bumps `authz_ver`, publishes `user_changed` and may revoke
/// sessions, all in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChangeKind {
    /// New roles.
    SetRoles(Vec<String>),
    /// New password hash; every session but `keep_session` is revoked (`password_changed`).
    SetPassword {
        /// Argon2id PHC string.
        password_hash: String,
        /// The session that made the change.
        keep_session: Option<SessionId>,
    },
    /// Disable the user and revoke every session (`user_disabled`).
    Disable,
}

impl UserChangeKind {
    /// The sessions this change ends, as (reason, session to keep): a new password ends
    /// every other session, disabling ends all, new roles end none (the feed's
    /// `user_changed` makes older tokens stale instead).
    pub fn revokes(&self) -> Option<(ErrorReason, Option<&SessionId>)> {
        match self {
            Self::SetRoles(_) => None,
            Self::SetPassword { keep_session, .. } => {
                Some((ErrorReason::PasswordChanged, keep_session.as_ref()))
            }
            Self::Disable => Some((ErrorReason::UserDisabled, None)),
        }
    }
}

impl UserChange {
    /// The revocation of the sessions this change ends, recorded as `session_revoked`.
    pub fn revocation(&self, reason: ErrorReason) -> SessionRevocation {
        let mut event = self.event.clone();
        event.kind = "session_revoked";
        SessionRevocation { reason, now: self.now, until: self.until, event }
    }
}

/// A user change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserChange {
    /// The user.
    pub user_id: UserId,
    /// What changes.
    pub kind: UserChangeKind,
    /// Now.
    pub now: Timestamp,
    /// The feed events' `until`.
    pub until: Timestamp,
    /// Recorded in the same transaction.
    pub event: NewSecurityEvent,
}

/// A security event to record (SPEC 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSecurityEvent {
    /// When.
    pub at: Timestamp,
    /// What, e.g. `login_failed`, `refresh_token_reuse`.
    pub kind: &'static str,
    /// The user, when known.
    pub user_id: Option<UserId>,
    /// The session, when known.
    pub session_id: Option<SessionId>,
    /// The client address, when known.
    pub ip: Option<String>,
    /// Free text; never a secret.
    pub detail: Option<String>,
}

/// A recorded security event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityEventRecord {
    /// Sequence.
    pub id: i64,
    /// When.
    pub at: Timestamp,
    /// What.
    pub kind: String,
    /// The user.
    pub user_id: Option<UserId>,
    /// The session.
    pub session_id: Option<SessionId>,
    /// Client address.
    pub ip: Option<String>,
    /// Detail.
    pub detail: Option<String>,
}

/// A signing key as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Key id (the JOSE `kid`).
    pub kid: String,
    /// JOSE algorithm name.
    pub alg: String,
    /// PKCS#8 private key, sealed under the master key when one is set (see `keys.rs`).
    pub private_key: Vec<u8>,
    /// Created.
    pub created_at: Timestamp,
    /// From when it signs (published before that, so caches learn it first).
    pub activates_at: Timestamp,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("activates_at", &self.activates_at)
            .finish_non_exhaustive()
    }
}

/// A throttling counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleRecord {
    /// Failures in the current window.
    pub count: i64,
    /// Start of the current window.
    pub window_start: Timestamp,
    /// The latest failure.
    pub last_failure_at: Timestamp,
}

/// A revocation-feed event as stored (SPEC 5.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEventRecord {
    /// Sequence number.
    pub seq: i64,
    /// The event.
    pub event: latchkey_proto::events::RevocationEvent,
}

/// The rotation decision function, run by the store inside the rotation's transaction
/// (possibly on the store's own thread, hence owned and `Send`).
pub type Decide = Box<dyn FnOnce(&RefreshSnapshot) -> RotationDecision + Send>;

/// Users and their changes (SPEC 1.6, 5.1, 6).
#[async_trait]
pub trait UserStore {
    /// Inserts a user; a taken username or email key is [`StoreError::Conflict`].
    async fn insert_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    /// A user by id.
    async fn find_user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError>;
    /// A user by id, read once any change to the user in progress has committed (it waits
    /// for the row's lock): what a sign-in checks after opening its session, so that a new
    /// password committed meanwhile cannot miss the session it raced with.
    async fn find_user_settled(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError>;
    /// A user by username.
    async fn find_user_by_username(&self, username: &str) -> Result<Option<UserRecord>, StoreError>;
    /// The user whose email key is `key` (verified or not).
    async fn find_user_by_email(&self, key: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Sets or clears a user's email address and voids the user's unused reset and
    /// address-change links (they went to, or were asked from, the old state); `false` for
    /// an unknown user, and an address another user holds is [`StoreError::Conflict`].
    async fn set_user_email(
        &self,
        id: &UserId,
        email: Option<&UserEmail>,
        now: Timestamp,
    ) -> Result<bool, StoreError>;
    /// Every user, oldest first.
    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError>;
    /// Applies a user change atomically; returns the new `authz_ver` and the ids of the
    /// sessions it revoked, or `None` for an unknown user.
    async fn apply_user_change(
        &self,
        change: &UserChange,
    ) -> Result<Option<(i64, Vec<SessionId>)>, StoreError>;
}

/// Sessions, their refresh tokens and browser cookies: rotation and revocation (SPEC 4).
#[async_trait]
pub trait SessionStore {
    /// Inserts a session with its first refresh token.
    async fn insert_session(
        &self,
        session: &SessionRecord,
        refresh_token: &RefreshTokenKey,
    ) -> Result<(), StoreError>;
    /// A session by id.
    async fn find_session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError>;
    /// The session a refresh token (live or retired) belongs to.
    async fn find_session_by_refresh_token(
        &self,
        key: &RefreshTokenKey,
    ) -> Result<Option<SessionRecord>, StoreError>;
    /// The session of a refresh token that is still its session's live one (not retired),
    /// in one read: what introspection needs (the session itself may be revoked or expired).
    async fn find_session_by_live_refresh_token(
        &self,
        key: &RefreshTokenKey,
    ) -> Result<Option<SessionRecord>, StoreError>;
    /// A user's sessions that are neither revoked nor expired at `now`, newest first.
    async fn list_live_sessions(
        &self,
        user_id: &UserId,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError>;
    /// Revokes sessions that are not yet revoked, with one feed event each and the security
    /// event, atomically. Returns the ids it revoked.
    async fn revoke_sessions(
        &self,
        target: &RevocationTarget,
        revocation: &SessionRevocation,
    ) -> Result<Vec<SessionId>, StoreError>;
    /// Rotation with reuse detection, atomically: finds the token by hash, reads the
    /// snapshot, asks `decide`, applies the decision, commits. Concurrent calls for one
    /// session are serialised. `None` when the hash is unknown.
    async fn rotate_refresh_token(
        &self,
        presented: &RefreshTokenKey,
        decide: Decide,
    ) -> Result<Option<(RefreshSnapshot, RotationDecision)>, StoreError>;
    /// Whether a refresh token is its session's live one (not retired).
    async fn is_live_refresh_token(&self, key: &RefreshTokenKey) -> Result<bool, StoreError>;
    /// Opens a browser sign-in: the session and the hash of its cookie.
    async fn insert_web_session(&self, session: &SessionRecord, cookie: &TokenHash)
    -> Result<(), StoreError>;
    /// The session a browser cookie belongs to (revoked or expired ones too).
    async fn find_web_session(&self, cookie: &TokenHash) -> Result<Option<SessionRecord>, StoreError>;
    /// Records use of a session that has no refresh token (a browser sign-in).
    async fn touch_session(&self, session_id: &SessionId, touch: &Touch) -> Result<(), StoreError>;
}

/// The revocation feed (SPEC 5.4) and access-token revocations (RFC 7009).
#[async_trait]
pub trait FeedStore {
    /// Publishes a `token_revoked` feed event for an access token (once per `jti`).
    async fn revoke_access_token(
        &self,
        jti: &str,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// Whether an access token was revoked (and the event is still kept).
    async fn is_access_token_revoked(&self, jti: &str) -> Result<bool, StoreError>;
    /// The highest feed seq written so far (0 when none).
    async fn last_feed_seq(&self) -> Result<i64, StoreError>;
    /// Feed events after `after` whose `until` has not passed at `now`, in seq order.
    async fn list_feed_events(
        &self,
        after: i64,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<FeedEventRecord>, StoreError>;
}

/// Signing keys (SPEC 3).
#[async_trait]
pub trait KeyStore {
    /// Inserts a signing key.
    async fn insert_signing_key(&self, key: &StoredKey) -> Result<(), StoreError>;
    /// Every signing key, oldest first.
    async fn list_signing_keys(&self) -> Result<Vec<StoredKey>, StoreError>;
    /// Replaces a signing key's stored private key (re-sealing it); `kid` names the row.
    async fn update_signing_key(&self, key: &StoredKey) -> Result<(), StoreError>;
    /// Deletes a signing key that no live token can have been signed with.
    async fn delete_signing_key(&self, kid: &str) -> Result<(), StoreError>;
}

/// Throttling counters (SPEC 5.1, 10), shared by every node.
#[async_trait]
pub trait ThrottleStore {
    /// A throttling counter.
    async fn find_throttle(&self, key: &str) -> Result<Option<ThrottleRecord>, StoreError>;
    /// Counts a failure; a counter whose last failure is `window_secs` old or older starts
    /// again at one (a sliding idle window: failures keep counting while they keep coming).
    async fn record_throttle_failure(
        &self,
        key: &str,
        now: Timestamp,
        window_secs: i64,
    ) -> Result<ThrottleRecord, StoreError>;
    /// Forgets a counter (after a successful login).
    async fn delete_throttle(&self, key: &str) -> Result<(), StoreError>;
}

/// DPoP proofs seen (SPEC 12): the replay cache, in the database so that every node shares it.
#[async_trait]
pub trait ProofStore {
    /// Remembers a proof (by [`crate::dpop`]'s hash of its key and `jti`) until `until`;
    /// `false` when it was remembered already, by this node or another.
    async fn remember_dpop_proof(&self, hash: &TokenHash, until: Timestamp) -> Result<bool, StoreError>;
    /// Forgets the proofs remembered until `now` or earlier; how many.
    async fn forget_dpop_proofs(&self, now: Timestamp) -> Result<u64, StoreError>;
}

/// Security events (SPEC 8).
#[async_trait]
pub trait AuditStore {
    /// Records a security event.
    async fn insert_security_event(&self, event: &NewSecurityEvent) -> Result<(), StoreError>;
    /// The latest security events, newest first.
    async fn list_security_events(&self, limit: i64) -> Result<Vec<SecurityEventRecord>, StoreError>;
}

mod delivery;
mod device_grant;
mod mail;
mod mfa;
mod oauth;
mod pushed;
pub use delivery::{DeliveryOutcome, DeliveryState, LogoutDeliveryRecord, LogoutDeliveryStore};
pub use device_grant::{
    DeviceAuthorizationRecord, DeviceGrantStore, DevicePoll, DevicePollDecide, DevicePollDecision,
    DeviceState, DeviceWait,
};
pub use mail::{
    LinkEffect, LinkJudge, LinkPurpose, LinkRecord, LinkRedemption, LinkStore, MailRecord, NewMail,
    OutboxStore,
};
pub use mfa::{FactorRecord, MfaChallengeRecord, MfaStore, PasskeyChallengeRecord};
pub use oauth::{
    AuthCodeRecord, BackchannelLogout, ClientKeys, ClientRecord, CodeDecide, CodeDecision, CodeIssuer,
    CodeRedemption, OAuthStore,
};
pub use pushed::{PushedRequestRecord, PushedRequestStore};

/// The storage port: one trait per aggregate, so a new capability adds a trait of its own.
/// The domain holds an `Arc<dyn Store>`; bring the aggregate traits into scope with
/// `use crate::store::ports::*` to call their methods.
#[async_trait]
pub trait Store:
    UserStore
    + SessionStore
    + OAuthStore
    + FeedStore
    + KeyStore
    + ThrottleStore
    + AuditStore
    + LinkStore
    + OutboxStore
    + LogoutDeliveryStore
    + DeviceGrantStore
    + PushedRequestStore
    + MfaStore
    + ProofStore
    + Send
    + Sync
    + 'static
{
    /// Succeeds when the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Deletes what no longer matters: feed events past their `until`, throttling counters
    /// idle for a day, sessions (with their refresh tokens) that expired or were revoked
    /// before `forget_sessions_before`, and link tokens, mail and logout deliveries a week past their use.
    /// Returns how many rows went.
    async fn prune(&self, now: Timestamp, forget_sessions_before: Timestamp) -> Result<u64, StoreError>;
}

/// Every port trait, for `use crate::store::ports::*`.
pub mod ports {
    pub use super::{
        AuditStore, DeviceGrantStore, FeedStore, KeyStore, LinkStore, LogoutDeliveryStore, MfaStore,
        OAuthStore, OutboxStore, ProofStore, PushedRequestStore, SessionStore, Store, ThrottleStore,
        UserStore,
    };
}
