//! `POST /auth/step-up` (SPEC 12): a session that `risk_policy` stopped with
//! `step_up_required` continues once its user proves themselves again: with the password,
//! or, for a user with a second factor, that factor's code (what a sign-in would need). The session, its tokens and its key stay; the refresh token
//! rotates as any refresh does, unscored (the user just signed in again).

use latchkey_proto::auth::{Credentials, StepUpRequest, TokenResponse};
use latchkey_proto::{ErrorReason, TokenErrorReason};

use crate::caller::Caller;
use crate::crypto::RefreshTokenKey;
use crate::login::LoginError;
use crate::mfa::{CodeMethod, MfaError};
use crate::refresh::RefreshError;
use crate::service::Latchkey;
use crate::store::{StoreError, UserStatus};
use crate::throttle::account_key;

/// Step-up failures.
#[derive(Debug, thiserror::Error)]
pub enum StepUpError {
    /// The access token is not acceptable, even expired (`401 invalid_token`).
    #[error("invalid access token: {}", .0.as_str())]
    InvalidToken(TokenErrorReason),
    /// Neither a password nor a method and code, or both (`400 invalid_request`).
    #[error("{0}")]
    MissingProof(&'static str),
    /// The password or code is wrong (`401 invalid_credentials`).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Too many failures; retry after this many seconds.
    #[error("throttled for {retry_after} s")]
    Throttled {
        /// Seconds.
        retry_after: u64,
    },
    /// The refresh that follows, refused (`invalid_grant` with its reason).
    #[error(transparent)]
    Refresh(#[from] RefreshError),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LoginError> for StepUpError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::Throttled { retry_after } => Self::Throttled { retry_after },
            LoginError::Store(s) => Self::Store(s),
            _ => Self::InvalidCredentials,
        }
    }
}

impl From<MfaError> for StepUpError {
    fn from(e: MfaError) -> Self {
        match e {
            MfaError::Throttled { retry_after } => Self::Throttled { retry_after },
            MfaError::Store(s) => Self::Store(s),
            _ => Self::InvalidCredentials,
        }
    }
}

impl Latchkey {
    /// Continues a session after its user signs in again: `access_token` (expired is fine)
    /// and the request's refresh token must be the same session's.
    ///
    /// # Errors
    /// See [`StepUpError`].
    pub async fn step_up(
        &self,
        access_token: &str,
        req: StepUpRequest,
        caller: &Caller,
    ) -> Result<TokenResponse, StepUpError> {
        let claims = self.verify_access_token(access_token, true).map_err(StepUpError::InvalidToken)?;
        let key = RefreshTokenKey::of(req.refresh_token.expose_secret());
        let session = self.store.find_session_by_refresh_token(&key).await?;
        let unknown = StepUpError::Refresh(RefreshError::Refused(ErrorReason::UnknownToken));
        // First-party sessions only, like `/auth/refresh`: an app's session continues through
        // `prompt=login`, and its refresh token is redeemed at `/oauth/token` with the app's
        // own authentication, never here without it.
        let is_first_party =
            |s: &crate::store::SessionRecord| s.client_id == crate::login::FIRST_PARTY_CLIENT_ID;
        let Some(session) =
            session.filter(|s| claims.sid.as_deref() == Some(s.id.as_str()) && is_first_party(s))
        else {
            return Err(unknown);
        };
        let user = self.store.find_user(&session.user_id).await?;
        let Some(user) = user.filter(|u| u.status == UserStatus::Active) else {
            return Err(StepUpError::Refresh(RefreshError::Refused(ErrorReason::UserDisabled)));
        };
        // A retired token, or a session that ended, goes straight to the rotation, which
        // judges it (reuse revokes) before any password is checked: old tokens must not buy
        // password or code guesses, nor clear the account's failure count.
        if session.revoked_at.is_some() || !self.store.is_live_refresh_token(&key).await? {
            return Err(self
                .rotate(
                    &session.client_id,
                    &req.refresh_token,
                    crate::refresh::Requested::default(),
                    caller,
                    false,
                )
                .await
                .err()
                .map_or(unknown, StepUpError::from));
        }
        let now = self.clock.now();
        let has_factor = self.store.list_factors(&user.id).await?.iter().any(|f| f.confirmed_at.is_some());
        match (req.password, req.method, req.code) {
            // A user with a second factor proves that factor, as a sign-in would need it.
            (Some(_), None, None) if has_factor => {
                return Err(StepUpError::MissingProof(
                    "This account has a second factor: send its method (totp, recovery_code) and code.",
                ));
            }
            (Some(password), None, None) => {
                let username = latchkey_proto::Username::parse(&user.username)
                    .map_err(|_| StepUpError::InvalidCredentials)?;
                let checked = self.check_credentials(Credentials { username, password }, caller, now).await?;
                if checked.id != user.id {
                    return Err(StepUpError::InvalidCredentials);
                }
            }
            (None, Some(method), Some(code)) => {
                let method = CodeMethod::of(method)
                    .ok_or(StepUpError::MissingProof("A step-up proves a code: totp or recovery_code."))?;
                self.prove_code(&user, method, &code, caller, now).await?;
            }
            _ => {
                return Err(StepUpError::MissingProof(
                    "Send the password, or a method (totp, recovery_code) and its code.",
                ));
            }
        }
        let tokens = self
            .rotate(
                &session.client_id,
                &req.refresh_token,
                crate::refresh::Requested::default(),
                caller,
                true,
            )
            .await?;
        self.store.delete_throttle(&account_key(&user.username)).await?;
        Ok(tokens)
    }
}
