//! What a signed-in user does with their sessions (SPEC 5.1): Bearer authentication,
//! logout (idempotent), logout-all, the device list, revoking one device, `me`, and
//! password change (which revokes every other session and bumps `authz_ver`).

use latchkey_proto::auth::{MeResponse, PasswordChangeRequest, SessionInfo, SessionsResponse};
use latchkey_proto::claims::AccessTokenClaims;
use latchkey_proto::{ErrorReason, RefreshToken, TokenErrorReason};

use crate::caller::Caller;
use crate::crypto::RefreshTokenKey;
use crate::ids::{SessionId, UserId};
use crate::password::PasswordError;
use crate::service::Latchkey;
use crate::store::{
    RevocationTarget, SessionRecord, SessionRevocation, StoreError, UserChange, UserChangeKind, UserRecord,
    UserStatus,
};

/// A Bearer token that verified and whose session and user are alive: proof for the
/// account operations below, which take it instead of re-checking. Its fields are private,
/// so only [`Latchkey::authenticate_any`] (after the checks) can make one.
#[derive(Debug, Clone)]
pub struct Authenticated {
    claims: AccessTokenClaims,
    session: SessionRecord,
    user: UserRecord,
}

impl Authenticated {
    /// The token's claims.
    pub fn claims(&self) -> &AccessTokenClaims {
        &self.claims
    }

    /// The token's session, as stored when the token was checked.
    pub fn session(&self) -> &SessionRecord {
        &self.session
    }

    /// The session's user, as stored when the token was checked.
    pub fn user(&self) -> &UserRecord {
        &self.user
    }
}

/// Proof that a request acts for a user whose credentials were checked: a Bearer token
/// ([`Authenticated`], the API) or a browser session ([`SignedIn`](crate::web::SignedIn), the
/// pages). Account operations that both the API and the pages offer (SPEC 10's address
/// verification and change) take either. Sealed: only those two proofs implement it, so
/// no caller can vouch for a user it did not check.
pub trait Principal: sealed::Sealed {
    /// The user the proof is for, as stored when it was checked.
    fn user(&self) -> &UserRecord;
    /// The session the proof is for (its `created_at` is when the user signed in).
    fn session(&self) -> &SessionRecord;
}

impl Principal for Authenticated {
    fn user(&self) -> &UserRecord {
        &self.user
    }

    fn session(&self) -> &SessionRecord {
        &self.session
    }
}

impl Principal for crate::web::SignedIn {
    fn user(&self) -> &UserRecord {
        crate::web::SignedIn::user(self)
    }

    fn session(&self) -> &SessionRecord {
        crate::web::SignedIn::session(self)
    }
}

mod sealed {
    /// Keeps [`super::Principal`] to this crate's proof types.
    pub trait Sealed {}
    impl Sealed for super::Authenticated {}
    impl Sealed for crate::web::SignedIn {}
}

/// Bearer authentication failures.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// `invalid_token` with this reason.
    #[error("invalid token: {}", .0.as_str())]
    InvalidToken(TokenErrorReason),
    /// A valid token of a third-party app on a first-party endpoint (`403`).
    #[error("an app's token cannot manage the account")]
    NotFirstParty,
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Account operation failures.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// No such session of this user.
    #[error("no such session")]
    SessionNotFound,
    /// `current_password` is wrong.
    #[error("current password is wrong")]
    WrongPassword,
    /// Too many wrong passwords for this account or address; retry after this many seconds.
    #[error("throttled for {retry_after} s")]
    Throttled {
        /// Seconds.
        retry_after: u64,
    },
    /// The new password breaks the rules, or the pool is overloaded.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// Neither a Bearer token nor a refresh token was given.
    #[error("a Bearer token or a refresh_token is required")]
    MissingCredential,
    /// Bearer authentication failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Latchkey {
    /// Authenticates a Bearer access token for the first-party endpoints: any valid token
    /// (see [`Self::authenticate_any`]) of a first-party session. An app's token cannot
    /// manage the account (sessions, password, logout-all).
    ///
    /// # Errors
    /// [`AuthError::InvalidToken`] with the reason; [`AuthError::NotFirstParty`].
    pub async fn authenticate(&self, bearer: &str) -> Result<Authenticated, AuthError> {
        let auth = self.authenticate_any(bearer).await?;
        if auth.session.client_id != crate::login::FIRST_PARTY_CLIENT_ID {
            return Err(AuthError::NotFirstParty);
        }
        Ok(auth)
    }

    /// Authenticates a Bearer access token of any session: signature and claims, then the
    /// session (not revoked, not expired) and the user (active).
    ///
    /// # Errors
    /// [`AuthError::InvalidToken`] with the reason.
    pub async fn authenticate_any(&self, bearer: &str) -> Result<Authenticated, AuthError> {
        let claims = self.verify_access_token(bearer, false).map_err(AuthError::InvalidToken)?;
        let sid = claims.sid.as_deref().ok_or(AuthError::InvalidToken(TokenErrorReason::Malformed))?;
        let revoked = AuthError::InvalidToken(TokenErrorReason::Revoked);
        let session = self
            .store
            .find_session(&SessionId::from(sid))
            .await?
            .ok_or(AuthError::InvalidToken(TokenErrorReason::Revoked))?;
        let now = self.clock.now();
        if session.revoked_at.is_some() || session.user_id.as_str() != claims.sub {
            return Err(revoked);
        }
        if now >= session.expires_at || now >= session.idle_expires_at {
            return Err(AuthError::InvalidToken(TokenErrorReason::Expired));
        }
        let user = self
            .store
            .find_user(&session.user_id)
            .await?
            .ok_or(AuthError::InvalidToken(TokenErrorReason::Revoked))?;
        if user.status != UserStatus::Active {
            return Err(revoked);
        }
        Ok(Authenticated { claims, session, user })
    }

    /// Revokes `target` for `reason`, recording a `session_revoked` security event.
    pub(crate) async fn revoke(
        &self,
        target: RevocationTarget,
        reason: ErrorReason,
        user_id: Option<&UserId>,
        session_id: Option<&SessionId>,
        ctx: &Caller,
    ) -> Result<Vec<SessionId>, StoreError> {
        self.revoke_with(target, self.revocation(reason, user_id, session_id, ctx)).await
    }

    /// A revocation now, with a `session_revoked` security event the caller may reword.
    pub(crate) fn revocation(
        &self,
        reason: ErrorReason,
        user_id: Option<&UserId>,
        session_id: Option<&SessionId>,
        ctx: &Caller,
    ) -> SessionRevocation {
        let now = self.clock.now();
        SessionRevocation {
            reason,
            now,
            until: self.revocation_until(now),
            event: self.event(now, "session_revoked", user_id, session_id, Some(ctx)),
        }
    }

    /// Applies a revocation: the store revokes and publishes atomically, then the feed hub
    /// and the metrics learn of it.
    pub(crate) async fn revoke_with(
        &self,
        target: RevocationTarget,
        revocation: SessionRevocation,
    ) -> Result<Vec<SessionId>, StoreError> {
        let revoked = self.store.revoke_sessions(&target, &revocation).await?;
        self.feed.changed();
        self.metrics.revocations(revocation.reason.as_str(), revoked.len());
        Ok(revoked)
    }

    /// Logs a first-party session out (SPEC 5.1 `POST /auth/logout`). Idempotent: an
    /// already revoked session, an expired access token or an unknown refresh token still
    /// succeed, so a client can always reach the logged-out state; an app's token succeeds
    /// too and changes nothing. A Bearer token must carry a valid
    /// signature; that alone proves which session to end.
    ///
    /// # Errors
    /// A Bearer token that is not ours, or neither credential.
    pub async fn logout(
        &self,
        bearer: Option<&str>,
        refresh_token: Option<&RefreshToken>,
        ctx: &Caller,
    ) -> Result<(), AccountError> {
        // A Bearer token that no longer verifies (its key was retired, say) does not stop a
        // logout that also carries the refresh token.
        let from_bearer = bearer.map(|token| self.verify_access_token(token, true));
        // First-party logout ends first-party sessions only (SPEC 5.1): an app's token is
        // left alone, and the answer is the same 204, so this endpoint is neither a way to
        // end someone's app grant with a leaked token nor an oracle for which tokens exist.
        // Apps revoke their own tokens with RFC 7009, which authenticates the client.
        let is_first_party = |client_id: &str| client_id == crate::login::FIRST_PARTY_CLIENT_ID;
        let session = match (from_bearer, refresh_token) {
            (Some(Ok(claims)), _) => claims
                .sid
                .filter(|_| is_first_party(&claims.client_id))
                .map(|sid| (SessionId::from(sid), UserId::from(claims.sub))),
            (Some(Err(_)) | None, Some(rt)) => self
                .store
                .find_session_by_refresh_token(&RefreshTokenKey::of(rt.expose_secret()))
                .await?
                .filter(|s| is_first_party(s.client_id.as_str()))
                .map(|s| (s.id, s.user_id)),
            (Some(Err(reason)), None) => return Err(AccountError::Auth(AuthError::InvalidToken(reason))),
            (None, None) => return Err(AccountError::MissingCredential),
        };
        if let Some((id, user_id)) = session {
            let target = RevocationTarget::Session { id: id.clone(), user_id: None };
            self.revoke(target, ErrorReason::LoggedOut, Some(&user_id), Some(&id), ctx).await?;
        }
        Ok(())
    }

    /// Logs out every session of the user, optionally keeping the current one.
    ///
    /// # Errors
    /// Storage.
    pub async fn logout_all(
        &self,
        auth: &Authenticated,
        keep_current: bool,
        ctx: &Caller,
    ) -> Result<(), AccountError> {
        let target = RevocationTarget::UserSessions {
            user_id: auth.user.id.clone(),
            except: keep_current.then(|| auth.session.id.clone()),
        };
        self.revoke(target, ErrorReason::LoggedOut, Some(&auth.user.id), Some(&auth.session.id), ctx).await?;
        Ok(())
    }

    /// The user's live sessions ("your devices").
    ///
    /// # Errors
    /// Storage.
    pub async fn sessions(&self, auth: &Authenticated) -> Result<SessionsResponse, AccountError> {
        let now = self.clock.now();
        let sessions = self.store.list_live_sessions(&auth.user.id, now).await?;
        Ok(SessionsResponse {
            sessions: sessions
                .into_iter()
                .map(|s| SessionInfo {
                    current: s.id == auth.session.id,
                    id: s.id.into_string(),
                    client_id: s.client_id.into_string(),
                    created_at: s.created_at.rfc3339(),
                    last_used_at: s.last_used_at.rfc3339(),
                    idle_expires_at: s.idle_expires_at.rfc3339(),
                    expires_at: s.expires_at.rfc3339(),
                    ip: s.ip,
                    user_agent: s.user_agent,
                })
                .collect(),
        })
    }

    /// Revokes one of the user's own sessions; another user's id is "not found".
    ///
    /// # Errors
    /// [`AccountError::SessionNotFound`].
    pub async fn revoke_own_session(
        &self,
        auth: &Authenticated,
        id: &SessionId,
        ctx: &Caller,
    ) -> Result<(), AccountError> {
        let session = self.store.find_session(id).await?;
        match session {
            Some(s) if s.user_id == auth.user.id => {
                let target =
                    RevocationTarget::Session { id: s.id.clone(), user_id: Some(auth.user.id.clone()) };
                self.revoke(target, ErrorReason::RevokedByUser, Some(&auth.user.id), Some(&s.id), ctx)
                    .await?;
                Ok(())
            }
            _ => Err(AccountError::SessionNotFound),
        }
    }

    /// `GET /auth/me`: the user as stored now (roles are fresh, not the token's).
    pub fn me(&self, auth: &Authenticated) -> MeResponse {
        MeResponse {
            sub: auth.user.id.to_string(),
            username: auth.user.username.clone(),
            roles: auth.user.roles.clone(),
            email: auth.user.email.as_ref().map(|e| e.address.clone()),
            email_verified: auth.user.email.as_ref().is_some_and(|e| e.verified_at.is_some()),
        }
    }

    /// Changes the password: checks the current one, revokes every other session
    /// (`password_changed`), bumps `authz_ver` and publishes `user_changed`.
    ///
    /// # Errors
    /// [`AccountError::WrongPassword`], password rules.
    pub async fn change_password(
        &self,
        auth: &Authenticated,
        req: PasswordChangeRequest,
        ctx: &Caller,
    ) -> Result<(), AccountError> {
        crate::password::check_new_password(&req.new_password)?;
        // A wrong current password counts against the account like a failed login, so a
        // stolen token is not an unthrottled password oracle.
        let now = self.clock.now();
        let acct = crate::throttle::account_key(&auth.user.username);
        let addr = ctx.ip.as_deref().map(crate::throttle::address_key);
        if let Some(retry_after) = self.throttled_for(&acct, addr.as_deref(), now).await? {
            return Err(AccountError::Throttled { retry_after });
        }
        let is_valid = self.passwords.verify(&req.current_password, Some(&auth.user.password_hash)).await?;
        if !is_valid {
            let user_id = Some(&auth.user.id);
            let locked = self
                .record_failure("password_change_failed", user_id, &acct, addr.as_deref(), ctx, now)
                .await?;
            return Err(match locked {
                Some(retry_after) => AccountError::Throttled { retry_after },
                None => AccountError::WrongPassword,
            });
        }
        let password_hash = self.passwords.hash(&req.new_password).await?;
        let change = UserChange {
            user_id: auth.user.id.clone(),
            kind: UserChangeKind::SetPassword { password_hash, keep_session: Some(auth.session.id.clone()) },
            now,
            until: self.revocation_until(now),
            event: self.event(
                now,
                "password_changed",
                Some(&auth.user.id),
                Some(&auth.session.id),
                Some(ctx),
            ),
        };
        let changed = self.store.apply_user_change(&change).await?;
        self.feed.changed();
        if let Some((_, revoked)) = changed {
            self.metrics.revocations(ErrorReason::PasswordChanged.as_str(), revoked.len());
        }
        Ok(())
    }
}
