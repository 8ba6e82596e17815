//! The storage port for SPEC 11's second factors ([`MfaStore`]): the factors themselves,
//! recovery codes and the sign-ins waiting for a factor (`mfa_token`s). Every "once" here
//! is one conditional write, so two requests racing with one code or one token cannot
//! both win.

use async_trait::async_trait;

use super::{NewMail, StoreError};
use crate::clock::Timestamp;
use crate::crypto::TokenHash;
use crate::ids::UserId;

/// A second factor as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct FactorRecord {
    /// Its id.
    pub id: String,
    /// Whose.
    pub user_id: UserId,
    /// `totp`.
    pub kind: String,
    /// Its name, for the user.
    pub name: String,
    /// The secret as stored (sealed under the master key when one is set).
    pub secret: Vec<u8>,
    /// When it was set up.
    pub created_at: Timestamp,
    /// When it was confirmed; until then it does not count.
    pub confirmed_at: Option<Timestamp>,
    /// TOTP: the last step accepted (each code once).
    pub last_used_step: Option<i64>,
}

impl std::fmt::Debug for FactorRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FactorRecord")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("confirmed_at", &self.confirmed_at)
            .finish_non_exhaustive()
    }
}

/// A sign-in waiting for its second factor (SPEC 11 `mfa_token`), by the token's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaChallengeRecord {
    /// SHA-256 of the `mfa_token`.
    pub hash: TokenHash,
    /// Whose.
    pub user_id: UserId,
    /// The password hash the sign-in passed: a new password voids the challenge.
    pub password_hash: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it stops working.
    pub expires_at: Timestamp,
    /// When a success spent it.
    pub used_at: Option<Timestamp>,
}

/// A passkey ceremony between its start and its finish (SPEC 11 `challenge_id`).
#[derive(Clone, PartialEq, Eq)]
pub struct PasskeyChallengeRecord {
    /// The `challenge_id`.
    pub id: String,
    /// The registering user; `None` for a sign-in.
    pub user_id: Option<UserId>,
    /// The WebAuthn state as JSON (it holds the challenge).
    pub state: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it stops working.
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for PasskeyChallengeRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasskeyChallengeRecord")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Second factors (SPEC 11).
#[async_trait]
pub trait MfaStore {
    /// Adds an unconfirmed factor, replacing the user's other unconfirmed ones of its kind.
    async fn insert_factor(&self, factor: &FactorRecord) -> Result<(), StoreError>;
    /// The user's factors, confirmed or not, oldest first.
    async fn list_factors(&self, user_id: &UserId) -> Result<Vec<FactorRecord>, StoreError>;
    /// Confirms an unconfirmed factor with the TOTP step its first code was for, replaces
    /// the user's recovery codes with `recovery_codes` and queues `mails`, in one
    /// transaction; `false` (and nothing queued) when the factor is gone or already
    /// confirmed.
    async fn confirm_factor(
        &self,
        factor_id: &str,
        step: i64,
        recovery_codes: &[TokenHash],
        mails: &[NewMail],
        now: Timestamp,
    ) -> Result<bool, StoreError>;
    /// Records `step` as the last used by a confirmed TOTP factor, if it is later than the
    /// last one; `false` when it is not (the code was used already).
    async fn use_totp_step(&self, factor_id: &str, step: i64) -> Result<bool, StoreError>;
    /// Removes a factor of the user's and queues `mails`, in one transaction; with the last
    /// confirmed factor, its recovery codes go too. `false` (and nothing queued) when the
    /// user has no such factor.
    async fn delete_factor(
        &self,
        user_id: &UserId,
        factor_id: &str,
        mails: &[NewMail],
    ) -> Result<bool, StoreError>;
    /// Marks a recovery code of the user's used; `false` when it is unknown or used.
    async fn use_recovery_code(
        &self,
        user_id: &UserId,
        hash: &TokenHash,
        now: Timestamp,
    ) -> Result<bool, StoreError>;
    /// How many unused recovery codes the user has.
    async fn count_recovery_codes(&self, user_id: &UserId) -> Result<i64, StoreError>;
    /// Replaces the user's recovery codes with `codes`, if the user has a confirmed factor;
    /// `false` (and nothing written) otherwise.
    async fn replace_recovery_codes(
        &self,
        user_id: &UserId,
        codes: &[TokenHash],
        now: Timestamp,
    ) -> Result<bool, StoreError>;
    /// Adds a factor that counts at once (a passkey) and queues `mails`, in one
    /// transaction; `false` (nothing written) when a factor with its id exists already.
    async fn insert_confirmed_factor(
        &self,
        factor: &FactorRecord,
        mails: &[NewMail],
        now: Timestamp,
    ) -> Result<bool, StoreError>;
    /// A factor by its id.
    async fn find_factor(&self, factor_id: &str) -> Result<Option<FactorRecord>, StoreError>;
    /// Replaces a factor's stored secret (a passkey's signature counter and backup state
    /// after a sign-in).
    async fn update_factor_secret(&self, factor_id: &str, secret: &[u8]) -> Result<(), StoreError>;
    /// Stores a passkey ceremony's state until its finish.
    async fn insert_passkey_challenge(&self, challenge: &PasskeyChallengeRecord) -> Result<(), StoreError>;
    /// Takes a ceremony's state: deletes it and returns it when it was there, unexpired
    /// at `now` and started for `user_id` (`None`: a sign-in), so two finishes with one
    /// `challenge_id` cannot both get it, and another user's finish leaves it alone.
    async fn take_passkey_challenge(
        &self,
        id: &str,
        user_id: Option<&UserId>,
        now: Timestamp,
    ) -> Result<Option<PasskeyChallengeRecord>, StoreError>;
    /// Stores a sign-in waiting for its factor.
    async fn insert_mfa_challenge(&self, challenge: &MfaChallengeRecord) -> Result<(), StoreError>;
    /// A challenge by its token's hash.
    async fn find_mfa_challenge(&self, hash: &TokenHash) -> Result<Option<MfaChallengeRecord>, StoreError>;
    /// Spends a challenge that is unused and unexpired at `now`; `false` otherwise.
    async fn spend_mfa_challenge(&self, hash: &TokenHash, now: Timestamp) -> Result<bool, StoreError>;
}
