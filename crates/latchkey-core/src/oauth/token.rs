//! `POST /oauth/token` (RFC 6749 §3.2, §4.1.3, §4.4, §6; RFC 7636 §4.6): client
//! authentication (`client_secret_basic`, `client_secret_post`, or none for public clients)
//! and the three grants. A code is redeemed atomically: its first use opens the app's
//! session (with a refresh token when the client may refresh) and a second use revokes
//! that session. Refresh uses the same rotation engine as first-party sessions.

use aws_lc_rs::digest::{SHA256, digest};
use latchkey_proto::oauth::OAuthTokenResponse;
use latchkey_proto::secret::ClientSecret;
use latchkey_proto::{ErrorReason, RefreshToken};

use super::OPENID;
use crate::caller::Caller;
use crate::clock::Timestamp;
use crate::crypto::{RefreshTokenKey, TokenHash, b64, new_refresh_token};
use crate::dpop::Thumbprint;
use crate::ids::{ClientId, RedirectUri, Scope};
use crate::keys::KeyError;
use crate::login::SessionLifetimes;
use crate::refresh::RefreshError;
use crate::service::Latchkey;
use crate::store::{
    AuthCodeRecord, ClientRecord, CodeDecision, CodeIssuer, CodeRedemption, RevocationTarget, SessionRecord,
    SessionRevocation, StoreError, UserStatus,
};
use crate::tokens::token_type;

/// How the client presented itself.
#[derive(Debug)]
pub enum ClientCredentials {
    /// HTTP Basic (`client_secret_basic`).
    Basic {
        /// The id.
        id: ClientId,
        /// The secret.
        secret: ClientSecret,
    },
    /// Form fields (`client_secret_post`).
    Post {
        /// The id.
        id: ClientId,
        /// The secret.
        secret: ClientSecret,
    },
    /// A public client: `client_id` only.
    Public {
        /// The id.
        id: ClientId,
    },
    /// `private_key_jwt` (RFC 7523): a signed assertion, and the `client_id` if sent.
    Assertion {
        /// The `client_id` parameter, when sent (it must be the assertion's).
        id: Option<ClientId>,
        /// The JWT.
        assertion: String,
    },
}

/// A token request's grant. `Debug` shows the grant type only.
pub enum TokenGrant {
    /// `authorization_code`.
    AuthorizationCode {
        /// The code.
        code: String,
        /// The redirect URI of the authorization request.
        redirect_uri: Option<RedirectUri>,
        /// The PKCE verifier.
        code_verifier: Option<String>,
        /// The resources asked for (RFC 8707): within the code's.
        resources: Vec<String>,
    },
    /// `refresh_token`.
    RefreshToken {
        /// The token.
        refresh_token: RefreshToken,
        /// A narrower scope, if asked (must be within the grant).
        scope: Option<Scope>,
        /// The resources asked for (RFC 8707): within the grant's.
        resources: Vec<String>,
    },
    /// `client_credentials`.
    ClientCredentials {
        /// The scope asked (default: every scope the client has).
        scope: Option<Scope>,
        /// The resources asked for (RFC 8707): registered for the client.
        resources: Vec<String>,
    },
    /// `urn:ietf:params:oauth:grant-type:device_code` (RFC 8628 §3.4).
    DeviceCode {
        /// The device code.
        device_code: String,
    },
}

impl std::fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::AuthorizationCode { .. } => "TokenGrant::AuthorizationCode",
            Self::RefreshToken { .. } => "TokenGrant::RefreshToken",
            Self::ClientCredentials { .. } => "TokenGrant::ClientCredentials",
            Self::DeviceCode { .. } => "TokenGrant::DeviceCode",
        })
    }
}

/// Token endpoint failures (RFC 6749 §5.2).
#[derive(Debug, thiserror::Error)]
pub enum TokenRequestError {
    /// `invalid_request`.
    #[error("{0}")]
    InvalidRequest(&'static str),
    /// `invalid_client` (401; with a Basic challenge when Basic was used).
    #[error("client authentication failed")]
    InvalidClient {
        /// Whether the client used HTTP Basic.
        basic: bool,
    },
    /// `invalid_grant`, with Latchkey's `error_reason` for refresh failures.
    #[error("{description}")]
    InvalidGrant {
        /// A sentence.
        description: &'static str,
        /// The reason, when there is one.
        reason: Option<ErrorReason>,
    },
    /// `unauthorized_client`.
    #[error("{0}")]
    UnauthorizedClient(&'static str),
    /// `invalid_scope`.
    #[error("{0}")]
    InvalidScope(&'static str),
    /// `invalid_target` (RFC 8707): a `resource` not registered for the client, or not
    /// granted.
    #[error("{0}")]
    InvalidTarget(&'static str),
    /// Revocation (RFC 7009 §2.2): the client revoked too many of its own tokens lately;
    /// `503` with `Retry-After`, and the token is still valid.
    #[error("too many token revocations; retry after {retry_after} s")]
    RevocationThrottled {
        /// Seconds.
        retry_after: u64,
    },
    /// A device's poll that gets no tokens (RFC 8628 §3.5): `authorization_pending`,
    /// `slow_down`, `access_denied`, `expired_token`, or `invalid_grant` for a spent code
    /// or an approval whose sign-in has ended.
    #[error("no tokens for this device code yet: {0:?}")]
    DeviceWait(crate::store::DeviceWait),
    /// Signing.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A server fault in the refresh engine.
    #[error("refresh failed")]
    Internal,
}

impl From<RefreshError> for TokenRequestError {
    fn from(e: RefreshError) -> Self {
        match e {
            RefreshError::Refused(reason) => {
                Self::InvalidGrant { description: reason.description(), reason: Some(reason) }
            }
            RefreshError::ScopeExceeded => Self::InvalidScope("The scope exceeds what was granted."),
            RefreshError::TargetExceeded => {
                Self::InvalidTarget("The resource was not granted to this session.")
            }
            RefreshError::Keys(k) => Self::Keys(k),
            RefreshError::Store(s) => Self::Store(s),
            RefreshError::Sealing => Self::Internal,
        }
    }
}

pub(super) fn has_grant(client: &ClientRecord, grant: &str) -> bool {
    client.grant_types.iter().any(|g| g == grant)
}

/// Whether a PKCE verifier has the RFC 7636 §4.1 shape: 43 to 128 unreserved characters.
fn is_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Why a code cannot be redeemed by this request, if it cannot.
fn code_problem(
    code: &AuthCodeRecord,
    client_id: &ClientId,
    redirect_uri: &RedirectUri,
    verifier: &str,
    key: Option<&Thumbprint>,
    now: Timestamp,
) -> Option<&'static str> {
    if code.client_id != *client_id {
        return Some("The authorization code was issued to another client.");
    }
    if now >= code.expires_at {
        return Some("The authorization code has expired.");
    }
    if code.redirect_uri != *redirect_uri {
        return Some("redirect_uri does not match the authorization request.");
    }
    let challenge = b64(digest(&SHA256, verifier.as_bytes()).as_ref());
    if !TokenHash::of(&challenge).ct_eq(&TokenHash::of(&code.code_challenge)) {
        return Some("The code_verifier does not match the code_challenge.");
    }
    if code.dpop_jkt.as_ref().is_some_and(|bound| !key.is_some_and(|k| k.ct_eq(bound))) {
        return Some("The DPoP proof is not from the key the authorization request named (dpop_jkt).");
    }
    None
}

/// Why a code whose own checks passed is worthless now: the browser session that approved it
/// has ended (logout, logout-all, password change, device revocation), or the user
/// withdrew the consent behind it (the app was disconnected). Revoked is final (SPEC 4), so
/// a code issued just before cannot open a new session after.
fn issuer_problem(code: &AuthCodeRecord, issuer: &CodeIssuer, now: Timestamp) -> Option<&'static str> {
    let ended = "The sign-in that approved the authorization code has ended.";
    let Some(session) = &issuer.browser_session else { return Some(ended) };
    if session.revoked_at.is_some()
        || session.user_id != code.user_id
        || now >= session.expires_at
        || now >= session.idle_expires_at
    {
        return Some(ended);
    }
    // A withdrawn consent is gone, even for a code that grants no scope.
    if !issuer.consented_scopes.as_ref().is_some_and(|c| c.covers(&code.scope)) {
        return Some("The user no longer allows this app what the authorization code grants.");
    }
    None
}

/// The names of `asked`, once each, if all are within `allowed`.
pub(super) fn narrowed(asked: &Scope, allowed: &Scope) -> Option<Scope> {
    let mut out: Vec<&str> = Vec::new();
    for s in asked.names() {
        if !allowed.contains(s) {
            return None;
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Some(Scope::from_names(out))
}

impl Latchkey {
    /// Authenticates the client of a token, revocation or introspection request.
    ///
    /// # Errors
    /// [`TokenRequestError::InvalidClient`] for every mismatch alike.
    pub async fn authenticate_token_client(
        &self,
        creds: &ClientCredentials,
    ) -> Result<ClientRecord, TokenRequestError> {
        let basic = matches!(creds, ClientCredentials::Basic { .. });
        let invalid = TokenRequestError::InvalidClient { basic };
        match creds {
            ClientCredentials::Basic { id, secret } | ClientCredentials::Post { id, secret } => {
                self.authenticate_client(id, secret).await.map(|c| c.record().clone()).map_err(|e| match e {
                    crate::clients::ClientError::Store(s) => TokenRequestError::Store(s),
                    _ => invalid,
                })
            }
            ClientCredentials::Public { id } => match self.store.find_client(id).await? {
                Some(c) if c.is_public() && c.client_id == *id => Ok(c),
                _ => Err(invalid),
            },
            ClientCredentials::Assertion { id, assertion } => {
                self.authenticate_by_assertion(id.as_ref(), assertion).await.map_err(|e| match e {
                    crate::clients::ClientError::Store(s) => TokenRequestError::Store(s),
                    _ => invalid,
                })
            }
        }
    }

    /// Serves a token request.
    ///
    /// # Errors
    /// See [`TokenRequestError`].
    pub async fn token(
        &self,
        creds: &ClientCredentials,
        grant: TokenGrant,
        ctx: &Caller,
    ) -> Result<OAuthTokenResponse, TokenRequestError> {
        let client = self.authenticate_token_client(creds).await?;
        let asked = match &grant {
            TokenGrant::AuthorizationCode { resources, .. }
            | TokenGrant::RefreshToken { resources, .. }
            | TokenGrant::ClientCredentials { resources, .. } => resources.as_slice(),
            TokenGrant::DeviceCode { .. } => &[],
        };
        if asked.iter().any(|r| !client.resources.contains(r)) {
            return Err(TokenRequestError::InvalidTarget("The client is not registered for that resource."));
        }
        match grant {
            TokenGrant::AuthorizationCode { code, redirect_uri, code_verifier, resources } => {
                let redirect_uri =
                    redirect_uri.ok_or(TokenRequestError::InvalidRequest("redirect_uri is required."))?;
                let verifier = code_verifier
                    .ok_or(TokenRequestError::InvalidRequest("code_verifier (PKCE) is required."))?;
                if !is_verifier(&verifier) {
                    return Err(TokenRequestError::InvalidRequest(
                        "code_verifier must be 43 to 128 unreserved characters.",
                    ));
                }
                self.redeem_code(&client, &code, &redirect_uri, &verifier, resources, ctx).await
            }
            TokenGrant::RefreshToken { refresh_token, scope, resources } => {
                if !has_grant(&client, "refresh_token") {
                    return Err(TokenRequestError::UnauthorizedClient(
                        "This client may not use refresh tokens.",
                    ));
                }
                // A scope beyond the grant is refused and nothing rotates (RFC 6749 §6), but
                // only after the token's own state is judged: a retired token presented with
                // a bad scope is still reuse. A narrower scope is accepted, and the tokens
                // keep the session's scope, which the answer's `scope` states.
                let asked = crate::refresh::Requested { scope, resources };
                let t = self.refresh_for(&client.client_id, &refresh_token, asked, ctx).await?;
                Ok(OAuthTokenResponse {
                    access_token: t.access_token,
                    token_type: t.token_type,
                    expires_in: t.expires_in,
                    refresh_token: Some(t.refresh_token),
                    id_token: None,
                    scope: t.scope,
                })
            }
            TokenGrant::DeviceCode { device_code } => self.poll_device(&client, &device_code, ctx).await,
            TokenGrant::ClientCredentials { scope, resources } => {
                if client.is_public() || !has_grant(&client, "client_credentials") {
                    return Err(TokenRequestError::UnauthorizedClient(
                        "This client may not use the client_credentials grant.",
                    ));
                }
                let scope = match scope {
                    Some(asked) => narrowed(&asked, &client.scopes).ok_or(
                        TokenRequestError::InvalidScope("The client is not registered for that scope."),
                    )?,
                    None => client.scopes.clone(),
                };
                let now = self.clock.now();
                let access_token =
                    self.mint_client_token(&client.client_id, &scope, ctx.dpop.as_ref(), &resources, now)?;
                Ok(OAuthTokenResponse {
                    access_token,
                    token_type: token_type(ctx.dpop.as_ref()),
                    expires_in: self.settings.access_token_ttl.as_secs(),
                    refresh_token: None,
                    id_token: None,
                    scope: scope.into_string(),
                })
            }
        }
    }

    async fn redeem_code(
        &self,
        client: &ClientRecord,
        code: &str,
        redirect_uri: &RedirectUri,
        verifier: &str,
        asked: Vec<String>,
        ctx: &Caller,
    ) -> Result<OAuthTokenResponse, TokenRequestError> {
        let unknown = TokenRequestError::InvalidGrant {
            description: "The authorization code is not valid.",
            reason: None,
        };
        if !has_grant(client, "authorization_code") {
            return Err(TokenRequestError::UnauthorizedClient(
                "This client may not use authorization codes.",
            ));
        }
        if !code.starts_with("lkc_") {
            return Err(unknown);
        }
        let now = self.clock.now();
        let s = &self.settings;
        let refresh_token = has_grant(client, "refresh_token").then(new_refresh_token);
        let refresh_key = refresh_token.as_ref().map(|t| RefreshTokenKey::of(t.expose_secret()));
        let (client_id, redirect, verifier_owned) =
            (client.client_id.clone(), redirect_uri.clone(), verifier.to_owned());
        let lifetimes = SessionLifetimes::from(s);
        // RFC 9449 §5: a public client's refresh tokens are bound to its key for the session's
        // life; a confidential client's are bound to its credentials, and each of its access
        // tokens to the key of the request that got it.
        let is_public = client.is_public();
        let ctx_owned = ctx.clone();
        let asked_owned = asked.clone();
        let decide = Box::new(move |code: &AuthCodeRecord, issuer: &CodeIssuer| {
            let problem =
                code_problem(code, &client_id, &redirect, &verifier_owned, ctx_owned.dpop.as_ref(), now)
                    .or_else(|| issuer_problem(code, issuer, now))
                    .or_else(|| {
                        let granted = asked_owned.iter().all(|r| code.resources.contains(r));
                        (!granted).then_some("The resource was not part of the authorization request.")
                    });
            if let Some(why) = problem {
                return CodeDecision::Refuse { why };
            }
            let mut session =
                lifetimes.start(code.user_id.clone(), client_id.clone(), code.scope.clone(), &ctx_owned, now);
            // The app's session is as strong as the browser sign-in that approved the code.
            // ... and ends with it at RP-initiated logout (SPEC 13).
            if let Some(browser) = &issuer.browser_session {
                session.amr.clone_from(&browser.amr);
                session.browser_session_id = Some(browser.id.clone());
            }
            if !is_public {
                session.dpop_jkt = None;
            }
            session.resources.clone_from(&code.resources);
            CodeDecision::Issue { session: Box::new(session), refresh_token: refresh_key }
        });
        let reuse = SessionRevocation {
            reason: ErrorReason::ReuseDetected,
            now,
            until: self.revocation_until(now),
            event: self.event(now, "authorization_code_reuse", None, None, Some(ctx)),
        };
        let hash = TokenHash::of(code);
        let outcome = self.store.redeem_auth_code(&hash, &client.client_id, now, &reuse, decide).await?;
        let (code, session) = match outcome {
            CodeRedemption::Unknown => return Err(unknown),
            CodeRedemption::OtherClient { code } => {
                // Someone holds another app's code: a leaked redirect, or a public client
                // id borrowed to burn it. The code stays redeemable by its own app.
                let detail = Some(format!(
                    "code of client {} presented by client {}",
                    code.client_id, client.client_id
                ));
                let mut event =
                    self.event(now, "authorization_code_wrong_client", Some(&code.user_id), None, Some(ctx));
                event.detail = detail;
                self.record(event).await;
                tracing::warn!(client_id = %client.client_id, "authorization code of another client presented");
                return Err(unknown);
            }
            CodeRedemption::Reused { code, revoked } => {
                tracing::warn!(client_id = %code.client_id, sessions = revoked.len(), "authorization code reused; what it produced is revoked");
                self.metrics.revocations(ErrorReason::ReuseDetected.as_str(), revoked.len());
                self.feed.changed();
                return Err(TokenRequestError::InvalidGrant {
                    description: "The authorization code was already used.",
                    reason: None,
                });
            }
            CodeRedemption::Redeemed { decision: CodeDecision::Refuse { why }, .. } => {
                return Err(TokenRequestError::InvalidGrant { description: why, reason: None });
            }
            CodeRedemption::Redeemed { code, decision: CodeDecision::Issue { session, .. } } => {
                (code, session)
            }
        };
        self.answer_new_session(
            &session,
            &asked,
            code.auth_time,
            code.nonce.as_deref(),
            refresh_token,
            ctx,
            now,
        )
        .await
    }

    /// The token response for a session a grant just opened (a code, or a device's
    /// approval): its user must still be active (else the session is revoked at once), an
    /// access token for the resources `asked` (all the session's when none), and an ID
    /// token when `openid` was granted.
    #[expect(clippy::too_many_arguments, reason = "each is one fact of the grant being answered")]
    pub(crate) async fn answer_new_session(
        &self,
        session: &SessionRecord,
        asked: &[String],
        auth_time: Timestamp,
        nonce: Option<&str>,
        refresh_token: Option<RefreshToken>,
        ctx: &Caller,
        now: Timestamp,
    ) -> Result<OAuthTokenResponse, TokenRequestError> {
        let user = self.store.find_user(&session.user_id).await?;
        let Some(user) = user.filter(|u| u.status == UserStatus::Active) else {
            let revocation = SessionRevocation {
                reason: ErrorReason::UserDisabled,
                now,
                until: self.revocation_until(now),
                event: self.event(
                    now,
                    "session_revoked",
                    Some(&session.user_id),
                    Some(&session.id),
                    Some(ctx),
                ),
            };
            let target = RevocationTarget::Session { id: session.id.clone(), user_id: None };
            self.store.revoke_sessions(&target, &revocation).await?;
            self.feed.changed();
            return Err(TokenRequestError::InvalidGrant {
                description: ErrorReason::UserDisabled.description(),
                reason: Some(ErrorReason::UserDisabled),
            });
        };
        let audience = if asked.is_empty() { session.resources.as_slice() } else { asked };
        let access_token = self.mint_access_token(
            &user,
            session,
            ctx.dpop.as_ref(),
            audience,
            self.settings.access_token_ttl,
            now,
        )?;
        let is_oidc = session.scope.contains(OPENID);
        let id_token = if is_oidc {
            Some(self.mint_id_token(&user, session, auth_time, nonce, &access_token, now)?)
        } else {
            None
        };
        Ok(OAuthTokenResponse {
            access_token,
            token_type: token_type(ctx.dpop.as_ref()),
            expires_in: self.access_token_lifetime(session, self.settings.access_token_ttl, now),
            refresh_token,
            id_token,
            scope: session.scope.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code() -> AuthCodeRecord {
        AuthCodeRecord {
            hash: TokenHash::of("lkc_x"),
            client_id: "app".into(),
            user_id: "u".into(),
            redirect_uri: "https://app.example/cb".into(),
            scope: "openid".into(),
            nonce: None,
            // RFC 7636 appendix B.
            code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
            auth_time: Timestamp(100),
            created_at: Timestamp(100),
            expires_at: Timestamp(160),
            used_at: None,
            session_id: None,
            browser_session_id: Some("web".into()),
            dpop_jkt: None,
            resources: Vec::new(),
        }
    }

    fn browser_session() -> SessionRecord {
        SessionRecord {
            id: "web".into(),
            user_id: "u".into(),
            client_id: "latchkey".into(),
            scope: "profile".into(),
            created_at: Timestamp(100),
            last_used_at: Timestamp(100),
            idle_expires_at: Timestamp(1000),
            expires_at: Timestamp(2000),
            ip: None,
            user_agent: None,
            revoked_at: None,
            revoke_reason: None,
            amr: "pwd".to_owned(),
            dpop_jkt: None,
            step_up_at: None,
            browser_session_id: None,
            resources: Vec::new(),
        }
    }

    /// Probe finding F1: a code dies with the sign-in that approved it and with the consent.
    #[test]
    fn a_code_needs_its_sign_in_alive_and_its_consent_standing() {
        let c = code();
        let live = CodeIssuer {
            browser_session: Some(browser_session()),
            consented_scopes: Some("openid profile".into()),
        };
        assert_eq!(issuer_problem(&c, &live, Timestamp(120)), None);
        let mut revoked = live.clone();
        if let Some(s) = revoked.browser_session.as_mut() {
            s.revoked_at = Some(Timestamp(110));
        }
        assert!(issuer_problem(&c, &revoked, Timestamp(120)).is_some());
        assert!(
            issuer_problem(&c, &CodeIssuer { browser_session: None, ..live.clone() }, Timestamp(120))
                .is_some()
        );
        assert!(issuer_problem(&c, &live, Timestamp(1000)).is_some(), "the sign-in went idle");
        let withdrawn = CodeIssuer { consented_scopes: None, ..live.clone() };
        assert!(issuer_problem(&c, &withdrawn, Timestamp(120)).is_some());
        let narrower = CodeIssuer { consented_scopes: Some("profile".into()), ..live.clone() };
        assert!(issuer_problem(&c, &narrower, Timestamp(120)).is_some());
        // A code for no scope needs a consent all the same.
        let no_scope = AuthCodeRecord { scope: "".into(), ..c };
        assert!(issuer_problem(&no_scope, &withdrawn, Timestamp(120)).is_some());
        let empty_consent = CodeIssuer { consented_scopes: Some("".into()), ..live };
        assert_eq!(issuer_problem(&no_scope, &empty_consent, Timestamp(120)), None);
    }

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    use crate::store::SessionRecord;

    #[test]
    fn a_code_needs_its_client_redirect_uri_verifier_and_time() {
        let c = code();
        let ok = |client: &str, redirect: &str, verifier: &str, now: i64| {
            code_problem(&c, &client.into(), &redirect.into(), verifier, None, Timestamp(now))
        };
        assert_eq!(ok("app", "https://app.example/cb", VERIFIER, 159), None);
        assert!(ok("other", "https://app.example/cb", VERIFIER, 120).is_some());
        assert!(ok("app", "https://app.example/cb/", VERIFIER, 120).is_some());
        assert!(ok("app", "https://app.example/cb", &VERIFIER.replace('d', "e"), 120).is_some());
        assert!(ok("app", "https://app.example/cb", VERIFIER, 160).is_some());
    }

    #[test]
    fn a_code_bound_by_dpop_jkt_needs_a_proof_from_that_key() {
        let key = |n: u8| Thumbprint::parse(&format!("{}{n:03}", "k".repeat(40))).unwrap();
        let c = AuthCodeRecord { dpop_jkt: Some(key(1)), ..code() };
        let with = |k: Option<&Thumbprint>| {
            code_problem(&c, &"app".into(), &"https://app.example/cb".into(), VERIFIER, k, Timestamp(120))
        };
        assert_eq!(with(Some(&key(1))), None);
        assert!(with(Some(&key(2))).is_some());
        assert!(with(None).is_some());
    }

    #[test]
    fn verifiers_and_scopes() {
        assert!(is_verifier(VERIFIER));
        assert!(!is_verifier("short"));
        assert!(!is_verifier(&"a".repeat(129)));
        assert!(!is_verifier(&format!("{VERIFIER}+")));
        let allowed = Scope::from("a b");
        assert_eq!(narrowed(&"b a b".into(), &allowed), Some("b a".into()));
        assert_eq!(narrowed(&"a c".into(), &allowed), None);
    }
}
