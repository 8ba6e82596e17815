//! Revocation (RFC 7009), introspection (RFC 7662) and userinfo (OpenID Connect Core
//! §5.3) for apps.

use latchkey_proto::{ErrorReason, RefreshToken};
use serde_json::{Value, json};

use super::OPENID;
use super::token::TokenRequestError;
use crate::account::AuthError;
use crate::crypto::TokenHash;
use crate::service::{ClientContext, Latchkey};
use crate::store::{ClientRecord, RevocationTarget, UserStatus};

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
        ctx: &ClientContext,
    ) -> Result<(), TokenRequestError> {
        if token.starts_with(RefreshToken::PREFIX) {
            let session = self.store.find_session_by_refresh_token(&TokenHash::of(token)).await?;
            if let Some(s) = session.filter(|s| s.client_id == client.client_id) {
                let target = RevocationTarget::Session { id: s.id.clone(), user_id: None };
                self.revoke(target, ErrorReason::LoggedOut, Some(&s.user_id), Some(&s.id), ctx).await?;
            }
            return Ok(());
        }
        if let Ok(claims) = self.verify_access_token(token, true)
            && claims.client_id == client.client_id
        {
            let now = self.clock.now();
            let until = crate::clock::Timestamp(claims.exp).plus(self.settings.clock_skew);
            if until > now {
                self.store.revoke_access_token(&claims.jti, until, now).await?;
                self.feed.changed();
            }
        }
        Ok(())
    }

    /// Introspects a token for a confidential client (RFC 7662): `{"active": false}` for
    /// anything unknown, expired, revoked or stale.
    ///
    /// # Errors
    /// [`TokenRequestError::InvalidClient`] for a public client; storage.
    pub async fn introspect(&self, client: &ClientRecord, token: &str) -> Result<Value, TokenRequestError> {
        if client.secret_hash.is_none() {
            return Err(TokenRequestError::InvalidClient { basic: false });
        }
        let inactive = json!({"active": false});
        let now = self.clock.now();
        if token.starts_with(RefreshToken::PREFIX) {
            let hash = TokenHash::of(token);
            let Some(session) = self.store.find_session_by_refresh_token(&hash).await? else {
                return Ok(inactive);
            };
            let is_live = self.store.is_live_refresh_token(&hash).await?
                && session.revoked_at.is_none()
                && now < session.expires_at
                && now < session.idle_expires_at;
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
        let Ok(claims) = self.verify_access_token(token, false) else { return Ok(inactive) };
        if self.store.is_access_token_revoked(&claims.jti).await? {
            return Ok(inactive);
        }
        let mut username = None;
        if let Some(sid) = &claims.sid {
            let session = self.store.find_session(sid).await?;
            let is_live = session.is_some_and(|s| {
                s.revoked_at.is_none()
                    && now < s.expires_at
                    && now < s.idle_expires_at
                    && s.user_id == claims.sub
            });
            let user = self.store.find_user(&claims.sub).await?;
            match user {
                Some(u) if is_live && u.status == UserStatus::Active && u.authz_ver <= claims.authz_ver => {
                    username = Some(u.username);
                }
                _ => return Ok(inactive),
            }
        } else if self.store.find_client(&claims.sub).await?.is_none() {
            // A client_credentials token of a client that was removed since.
            return Ok(inactive);
        }
        let mut out = json!({
            "active": true,
            "token_type": "Bearer",
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
        if self.store.is_access_token_revoked(&auth.claims.jti).await.map_err(AuthError::Store)? {
            return Err(UserinfoError::Auth(AuthError::InvalidToken(
                latchkey_proto::TokenErrorReason::Revoked,
            )));
        }
        let scopes: Vec<&str> = auth.claims.scope.split(' ').collect();
        if !scopes.contains(&OPENID) {
            return Err(UserinfoError::InsufficientScope);
        }
        let mut out = serde_json::Map::new();
        out.insert("sub".to_owned(), json!(auth.user.id));
        if scopes.contains(&"profile") {
            out.insert("preferred_username".to_owned(), json!(auth.user.username));
        }
        Ok(Value::Object(out))
    }
}
