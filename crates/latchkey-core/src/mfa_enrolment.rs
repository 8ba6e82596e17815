//! Setting up a first factor before any session (SPEC 11 policy: `mfa = "required"`, or
//! a role in `mfa_required_roles`). Such a user's right password yields an enrolment token
//! (`lke_`, 5 minutes, hashed at rest, bound to the password hash it passed) instead of a
//! session; with it the user starts and confirms an authenticator app, and the
//! confirmation is the sign-in: it spends the token, ends every other session of the user
//! (adding a factor always does) and opens a session whose `amr` says password and code.
//!
//! The token is good only while the user has no confirmed factor: once one exists (set up
//! in another tab, or by an earlier use), the next sign-in asks for it instead.

use latchkey_proto::auth::{EnrolledSignIn, RecoveryCodes, TotpEnrolment};
use latchkey_proto::{ErrorReason, MfaToken, OneTimeCode};

use crate::caller::Caller;
use crate::clock::Timestamp;
use crate::crypto::TokenHash;
use crate::mfa::{AMR_PASSWORD_AND_OTP, ENROL_TOKEN_PREFIX, MfaError};
use crate::service::Latchkey;
use crate::store::{RevocationTarget, UserRecord};
use crate::web::SignedIn;

impl Latchkey {
    /// The user an enrolment token names, while that user still has no confirmed factor;
    /// and the token's hash.
    async fn enrolling(&self, token: &MfaToken, now: Timestamp) -> Result<(UserRecord, TokenHash), MfaError> {
        let (user, hash) = self.open_challenge(token, ENROL_TOKEN_PREFIX, now).await?;
        let factors = self.store.list_factors(&user.id).await?;
        if factors.iter().any(|f| f.confirmed_at.is_some()) {
            return Err(MfaError::InvalidMfaToken);
        }
        Ok((user, hash))
    }

    /// `POST /auth/mfa/totp` with an enrolment token: a new authenticator app to set up.
    ///
    /// # Errors
    /// [`MfaError::InvalidMfaToken`], storage.
    pub async fn begin_totp_enrolment(&self, token: &MfaToken) -> Result<TotpEnrolment, MfaError> {
        let now = self.clock.now();
        let (user, _) = self.enrolling(token, now).await?;
        self.new_totp_factor(&user, now).await
    }

    /// Confirms the app with a code and spends the token: the user, and the new recovery
    /// codes. Every session the user had ends. The caller opens the new session.
    async fn finish_enrolment(
        &self,
        token: &MfaToken,
        code: &OneTimeCode,
        ctx: &Caller,
        now: Timestamp,
    ) -> Result<(UserRecord, RecoveryCodes), MfaError> {
        let (user, hash) = self.enrolling(token, now).await?;
        let (pending, step) = self.pending_totp(&user, code, now).await?;
        if !self.store.spend_mfa_challenge(&hash, now).await? {
            return Err(MfaError::InvalidMfaToken);
        }
        let codes = self.confirm_pending_totp(&user, &pending, step, now).await?;
        let target = RevocationTarget::UserSessions { user_id: user.id.clone(), except: None };
        self.revoke(target, ErrorReason::RevokedByUser, Some(&user.id), None, ctx).await?;
        self.record(self.event(now, "mfa_enabled", Some(&user.id), None, Some(ctx))).await;
        Ok((user, codes))
    }

    /// `POST /auth/mfa/totp/confirm` with an enrolment token: the sign-in it completes
    /// (a new session, `amr` `pwd otp mfa`) and the recovery codes.
    ///
    /// # Errors
    /// [`MfaError::InvalidMfaToken`], [`MfaError::NotEnrolling`], [`MfaError::WrongCode`];
    /// signing and storage.
    pub async fn confirm_totp_enrolment(
        &self,
        token: &MfaToken,
        code: &OneTimeCode,
        ctx: &Caller,
    ) -> Result<EnrolledSignIn, MfaError> {
        let now = self.clock.now();
        let (user, recovery_codes) = self.finish_enrolment(token, code, ctx, now).await?;
        let tokens = self.open_session(&user, AMR_PASSWORD_AND_OTP, ctx, now).await?;
        Ok(EnrolledSignIn { tokens, recovery_codes })
    }

    /// The pages' set-up step: as [`Latchkey::confirm_totp_enrolment`], opening a browser
    /// session; with its cookie value and the recovery codes.
    ///
    /// # Errors
    /// As [`Latchkey::confirm_totp_enrolment`].
    pub async fn web_confirm_totp_enrolment(
        &self,
        token: &MfaToken,
        code: &OneTimeCode,
        ctx: &Caller,
    ) -> Result<(SignedIn, String, RecoveryCodes), MfaError> {
        let now = self.clock.now();
        let (user, codes) = self.finish_enrolment(token, code, ctx, now).await?;
        let (signed_in, cookie) = self.open_web_session(user, AMR_PASSWORD_AND_OTP, ctx, now).await?;
        Ok((signed_in, cookie, codes))
    }
}
