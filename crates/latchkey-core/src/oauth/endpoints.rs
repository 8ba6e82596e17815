//! Revocation (RFC 7009), introspection (RFC 7662) and userinfo (OpenID Connect Core
//! §5.3) for apps.

use latchkey_proto::{ErrorReason, RefreshToken};
use serde_json::{Value, json};

use super::OPENID;
use super::token::TokenRequestError;
use crate::account::AuthError;
use crate::caller::Caller;
use crate::crypto::RefreshTokenKey;
use crate::ids::{ClientId, SessionId, UserId};
use crate::service::Latchkey;
use crate::store::{ClientRecord, RevocationTarget, UserStatus};

/// The scope that lets a confidential client (a resource server) introspect tokens issued
/// to other clients.
pub const INTROSPECT_SCOPE: &str = "introspect";

/// The most `token_revoked` events one session (or, for `client_credentials` tokens, one
/// client) may cause, each within [`TOKEN_REVOCATION_WINDOW`] of the previous. A client that
/// revokes its old access token at every refresh stays far below it.
pub const MAX_TOKEN_REVOCATIONS: i64 = 10;
/// See [`MAX_TOKEN_REVOCATIONS`].
pub const TOKEN_REVOCATION_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// Userinfo failures.
#[derive(Debug, thiserror::Error)]
pub enum UserinfoError {
    /// The Bearer token is not valid.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The token lacks the `openid` scope.
    #[error("the token lacks the openid scope")]
    InsufficientScope,
}

impl Latchkey {
    /// Revokes a token for the client that holds it (RFC 7009): a refresh token revokes its
    /// session (SPEC 5.2); an access token is published as `token_revoked`. Unknown tokens
    /// and other clients' tokens change nothing, and the answer is the same.
    ///
    /// # Errors
    /// Storage.
    pub async fn revoke_oauth_token(
        &self,
        client: &ClientRecord,
        token: &str,
        ctx: &Caller,
    ) -> Result<(), TokenRequestError> {
        if token.starts_with(RefreshToken::PREFIX) {
            let session = self.store.find_session_by_refresh_token(&RefreshTokenKey::of(token)).await?;
            if let Some(s) = session.filter(|s| s.client_id == client.client_id) {
                let target = RevocationTarget::Session { id: s.id.clone(), user_id: None };
                self.revoke(target, ErrorReason::LoggedOut, Some(&s.user_id), Some(&s.id), ctx).await?;
            }
            return Ok(());
        }
        if let Ok(claims) = self.verify_issued_access_token(token, true)
            && client.client_id == claims.client_id.as_str()
        {
            let now = self.clock.now();
            let until = crate::clock::Timestamp(claims.exp).plus(self.settings.clock_skew);
            if until > now {
                self.revoke_access_token(&claims, until, ctx).await?;
            }
        }
        Ok(())
    }

    /// Publishes one access token's revocation, within the per-session and per-client caps
    /// of [`MAX_TOKEN_REVOCATIONS`] (issue 12: every `token_revoked` event is pushed to every
    /// resource server, so an ordinary user looping refresh + revoke must not flood them).
    /// Nothing that matters is dropped: a token of a revoked session needs no event of its
    /// own; past the cap a session's tokens are revoked all at once by revoking the session
    /// (one event); a client's own tokens past the cap answer 503 with `Retry-After`, which
    /// RFC 7009 §2.2 tells the client to read as "the token still exists, retry later".
    async fn revoke_access_token(
        &self,
        claims: &latchkey_proto::claims::AccessTokenClaims,
        until: crate::clock::Timestamp,
        ctx: &Caller,
    ) -> Result<(), TokenRequestError> {
        let now = self.clock.now();
        // Revoking is idempotent (RFC 7009): a token revoked already counts against no cap.
        if self.store.is_access_token_revoked(&claims.jti).await? {
            return Ok(());
        }
        let window = i64::try_from(TOKEN_REVOCATION_WINDOW.as_secs()).unwrap_or(i64::MAX);
        match &claims.sid {
            Some(sid) => {
                let sid = SessionId::from(sid.as_str());
                let session = self.store.find_session(&sid).await?;
                if session.is_none_or(|s| s.revoked_at.is_some()) {
                    return Ok(()); // its session_revoked event covers the token
                }
                let counted =
                    self.store.record_throttle_failure(&format!("tokrev:{sid}"), now, window).await?;
                if counted.count > MAX_TOKEN_REVOCATIONS {
                    let sub = UserId::from(claims.sub.as_str());
                    let target = RevocationTarget::Session { id: sid.clone(), user_id: None };
                    let mut revocation = self.revocation(ErrorReason::LoggedOut, Some(&sub), Some(&sid), ctx);
                    revocation.event.kind = "token_revocation_flood";
                    revocation.event.detail = Some(format!(
                        "{} access-token revocations within {window} s of each other; the session is revoked instead",
                        counted.count
                    ));
                    self.revoke_with(target, revocation).await?;
                    return Ok(());
                }
            }
            None => {
                let key = format!("tokrev-client:{}", claims.client_id);
                let counted = self.store.record_throttle_failure(&key, now, window).await?;
                if counted.count > MAX_TOKEN_REVOCATIONS {
                    return Err(TokenRequestError::RevocationThrottled {
                        retry_after: TOKEN_REVOCATION_WINDOW.as_secs(),
                    });
                }
            }
        }
        self.store.revoke_access_token(&claims.jti, until, now).await?;
        self.feed.changed();
        Ok(())
    }

    /// Introspects a token for a confidential client (RFC 7662): `{"active": false}` for
    /// anything unknown, expired, revoked or stale, and for another client's token unless
    /// the caller holds the scope [`INTROSPECT_SCOPE`] (SPEC 5.2; RFC 7662 §4 lets the
    /// server decide who may learn what, and an app must not read other apps' users).
    ///
    /// # Errors
    /// [`TokenRequestError::InvalidClient`] for a public client; storage.
    pub async fn introspect(&self, client: &ClientRecord, token: &str) -> Result<Value, TokenRequestError> {
        if client.is_public() {
            return Err(TokenRequestError::InvalidClient { basic: false });
        }
        let inactive = json!({"active": false});
        let may_see =
            |issued_to: &str| client.client_id == issued_to || client.scopes.contains(INTROSPECT_SCOPE);
        let now = self.clock.now();
        if token.starts_with(RefreshToken::PREFIX) {
            let key = RefreshTokenKey::of(token);
            // A retired token has no session here: inactive, like an unknown one.
            let session = self.store.find_session_by_live_refresh_token(&key).await?;
            let Some(session) = session.filter(|s| may_see(s.client_id.as_str())) else {
                return Ok(inactive);
            };
            let is_live =
                session.revoked_at.is_none() && now < session.expires_at && now < session.idle_expires_at;
            let user = self.store.find_user(&session.user_id).await?;
            let Some(user) = user.filter(|u| is_live && u.status == UserStatus::Active) else {
                return Ok(inactive);
            };
            return Ok(json!({
                "active": true,
                "token_type": "refresh_token",
                "client_id": session.client_id,
                "sub": user.id,
                "username": user.username,
                "scope": session.scope,
                "iat": session.last_used_at.0,
                "exp": session.idle_expires_at.0,
                "sid": session.id,
                "iss": self.settings.issuer,
            }));
        }
        let Ok(claims) = self.verify_issued_access_token(token, false) else { return Ok(inactive) };
        if !may_see(&claims.client_id) {
            return Ok(inactive);
        }
        if self.store.is_access_token_revoked(&claims.jti).await? {
            return Ok(inactive);
        }
        let mut username = None;
        if let Some(sid) = &claims.sid {
            let sub = UserId::from(claims.sub.as_str());
            let session = self.store.find_session(&SessionId::from(sid.as_str())).await?;
            let is_live = session.is_some_and(|s| {
                s.revoked_at.is_none() && now < s.expires_at && now < s.idle_expires_at && s.user_id == sub
            });
            let user = self.store.find_user(&sub).await?;
            match user {
                Some(u) if is_live && u.status == UserStatus::Active && u.authz_ver <= claims.authz_ver => {
                    username = Some(u.username);
                }
                _ => return Ok(inactive),
            }
        } else if self.store.find_client(&ClientId::from(claims.sub.as_str())).await?.is_none() {
            // A client_credentials token of a client that was removed since.
            return Ok(inactive);
        }
        // RFC 9449 §6.2: a bound token's key, so a resource server can check the proof.
        let token_type = if claims.cnf.is_some() { "DPoP" } else { "Bearer" };
        let mut out = json!({
            "active": true,
            "token_type": token_type,
            "client_id": claims.client_id,
            "sub": claims.sub,
            "scope": claims.scope,
            "iat": claims.iat,
            "exp": claims.exp,
            "iss": claims.iss,
            "aud": claims.aud,
            "jti": claims.jti,
        });
        if let Some(obj) = out.as_object_mut() {
            if let Some(sid) = claims.sid {
                obj.insert("sid".to_owned(), json!(sid));
            }
            if let Some(name) = username {
                obj.insert("username".to_owned(), json!(name));
            }
            if let Some(cnf) = claims.cnf {
                obj.insert("cnf".to_owned(), json!({"jkt": cnf.jkt}));
            }
        }
        Ok(out)
    }

    /// Userinfo for an access token with the `openid` scope: `sub`, and
    /// `preferred_username` with `profile`.
    ///
    /// # Errors
    /// See [`UserinfoError`].
    pub async fn userinfo(&self, bearer: &str) -> Result<Value, UserinfoError> {
        let auth = self.authenticate_any(bearer).await?;
        if self.store.is_access_token_revoked(&auth.claims().jti).await.map_err(AuthError::Store)? {
            return Err(UserinfoError::Auth(AuthError::InvalidToken(
                latchkey_proto::TokenErrorReason::Revoked,
            )));
        }
        let scopes: Vec<&str> = auth.claims().scope.split(' ').collect();
        if !scopes.contains(&OPENID) {
            return Err(UserinfoError::InsufficientScope);
        }
        let mut out = serde_json::Map::new();
        out.insert("sub".to_owned(), json!(auth.user().id));
        if scopes.contains(&"profile") {
            out.insert("preferred_username".to_owned(), json!(auth.user().username));
        }
        Ok(Value::Object(out))
    }
}
