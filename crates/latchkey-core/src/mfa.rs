//! Second factors (SPEC 11): setting up an authenticator app (TOTP) with its recovery
//! codes, listing and removing factors, and the second step of a sign-in.
//!
//! - Changing factors needs a sign-in within the last 5 minutes ([`RECENT_SIGN_IN`]),
//!   and ends every other session of the user: a thief holding a session can neither add
//!   a factor nor survive the owner adding one.
//! - A password that is right for a user with a factor yields no session but an
//!   `mfa_token` (`lkm_`, 5 minutes, hashed at rest, spent by a success, kept through wrong
//!   codes), bound to the password hash it passed, so a new password voids it.
//! - Wrong codes count against the account and the client address exactly like wrong
//!   passwords (the same counters and lockouts).
//! - A TOTP secret is stored sealed under the master key when one is set (bound to its
//!   factor's id), otherwise as it is, like the signing keys; its first byte says which.

use std::time::Duration;

use latchkey_proto::auth::{MfaFactorView, MfaFactors, MfaMethod, RecoveryCodes, TotpEnrolment};
use latchkey_proto::{ErrorReason, MfaToken, OneTimeCode};

use crate::account::Principal;
use crate::caller::Caller;
use crate::clock::Timestamp;
use crate::crypto::{TokenHash, b64, new_id, random_bytes};
use crate::login::LoginError;
use crate::mail::FactorChange;
use crate::service::Latchkey;
use crate::store::{
    FactorRecord, MfaChallengeRecord, NewMail, RevocationTarget, StoreError, UserRecord, UserStatus,
};
use crate::throttle::{account_key, address_key};
use crate::totp::{TotpSecret, otpauth_uri};

/// `amr` of a sign-in with the password alone.
pub const AMR_PASSWORD: &str = "pwd";
/// `amr` of a sign-in with the password and an authenticator app's code.
pub const AMR_PASSWORD_AND_OTP: &str = "pwd otp mfa";
/// `amr` of a sign-in with the password and a recovery code (SPEC 11: `["pwd","mfa"]`).
pub const AMR_PASSWORD_AND_RECOVERY_CODE: &str = "pwd mfa";

/// The assurance of a sign-in (SPEC 11 `acr`), weakest first: the order is what
/// `acr_values` step-up compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AcrLevel {
    /// The password alone.
    Password,
    /// The password and a second factor.
    MultiFactor,
    /// A passkey: phishing-resistant.
    PhishingResistant,
}

impl AcrLevel {
    /// Every level, weakest first (discovery's `acr_values_supported`).
    pub const ALL: [Self; 3] = [Self::Password, Self::MultiFactor, Self::PhishingResistant];

    /// The level of a sign-in with these `amr` values: a hardware or software key (a
    /// passkey) is phishing-resistant; otherwise `mfa` counts.
    pub fn of(amr: &str) -> Self {
        let has = |value: &str| amr.split(' ').any(|v| v == value);
        if has("hwk") || has("swk") {
            Self::PhishingResistant
        } else if has("mfa") {
            Self::MultiFactor
        } else {
            Self::Password
        }
    }

    /// The `acr` claim's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Password => "urn:latchkey:acr:pwd",
            Self::MultiFactor => "urn:latchkey:acr:mfa",
            Self::PhishingResistant => "urn:latchkey:acr:phr",
        }
    }

    /// The level an `acr` value names; `None` for values Latchkey does not know.
    pub fn parse(acr: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str() == acr)
    }
}

/// The `acr` (SPEC 11) of a sign-in with these `amr` values.
pub fn acr_of(amr: &str) -> &'static str {
    AcrLevel::of(amr).as_str()
}

/// The `amr` claim's values.
pub fn amr_values(amr: &str) -> Vec<String> {
    amr.split(' ').filter(|v| !v.is_empty()).map(str::to_owned).collect()
}

/// How recent a sign-in must be to change factors.
pub const RECENT_SIGN_IN: Duration = Duration::from_secs(5 * 60);
/// How long an `mfa_token` lives.
pub const MFA_TOKEN_TTL: Duration = Duration::from_secs(5 * 60);
/// How many recovery codes a set has.
pub const RECOVERY_CODES: usize = 10;
/// How long a factor-change notice is worth sending.
const NOTICE_TTL: Duration = Duration::from_secs(24 * 3600);
/// The prefix of an `mfa_token` for the second step of a sign-in.
pub(crate) const MFA_TOKEN_PREFIX: &str = "lkm_";
/// The prefix of an `mfa_token` for setting up a first factor (SPEC 11 policy).
pub(crate) const ENROL_TOKEN_PREFIX: &str = "lke_";
/// The stored kind of an authenticator-app factor.
const TOTP: &str = "totp";
/// The first byte of a stored secret: as it is, or sealed under the master key.
const PLAIN: u8 = 0;
const SEALED: u8 = 1;

/// Why a second-factor operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    /// Changing factors needs a sign-in within [`RECENT_SIGN_IN`].
    #[error("a recent sign-in is required")]
    RecentSignInRequired,
    /// No authenticator app is being set up (confirm without a start, or twice).
    #[error("no authenticator app is being set up")]
    NotEnrolling,
    /// The code is wrong, or was used already.
    #[error("wrong code")]
    WrongCode,
    /// The `mfa_token` is unknown, used, expired, or its password was changed since.
    #[error("the mfa_token is not valid")]
    InvalidMfaToken,
    /// The user has no such factor.
    #[error("no such factor")]
    UnknownFactor,
    /// Too many wrong codes (or passwords); retry after this many seconds.
    #[error("throttled for {retry_after} s")]
    Throttled {
        /// Seconds.
        retry_after: u64,
    },
    /// The policy says this user must have a second factor, and this is the last one.
    #[error("the last second factor cannot be removed")]
    FactorRequired,
    /// The user has no confirmed factor (new recovery codes need one).
    #[error("no second factor is set up")]
    NoFactor,
    /// The issuer has no domain name, so passkeys cannot work (SPEC 11).
    #[error("passkeys need an issuer with a domain name")]
    PasskeysUnavailable,
    /// The passkey `challenge_id` is unknown, answered already, expired, or another user's.
    #[error("the passkey challenge is not valid")]
    UnknownChallenge,
    /// The authenticator's answer was refused (why, for the caller).
    #[error("passkey refused: {0}")]
    PasskeyRefused(&'static str),
    /// A passkey credential that cannot be read, or a registration that did not verify.
    #[error("invalid passkey: {0}")]
    PasskeyInvalid(&'static str),
    /// The passkey is registered already.
    #[error("this passkey is registered already")]
    PasskeyTaken,
    /// The request names a method without what proves it (a code, or an assertion).
    #[error("{0}")]
    MissingProof(&'static str),
    /// Stored state that cannot be read or written back (a bug or a corrupt row).
    #[error("passkey state: {0}")]
    Internal(String),
    /// A mail template failed to render (a bug, not an input problem).
    #[error("mail template: {0}")]
    Template(#[from] askama::Error),
    /// A TOTP secret is sealed under a master key this process does not have.
    #[error("a TOTP secret cannot be opened with this process's master key")]
    Sealed,
    /// Opening the session failed (signing, storage).
    #[error(transparent)]
    Login(#[from] LoginError),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The second-step methods proved by a typed code (a passkey is proved by an assertion:
/// see `passkey.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeMethod {
    /// A code from an authenticator app.
    Totp,
    /// One of the user's recovery codes.
    RecoveryCode,
}

impl CodeMethod {
    /// The code method an API `method` names; `None` for a passkey.
    pub fn of(method: MfaMethod) -> Option<Self> {
        match method {
            MfaMethod::Totp => Some(Self::Totp),
            MfaMethod::RecoveryCode => Some(Self::RecoveryCode),
            MfaMethod::Passkey => None,
        }
    }
}

/// A second-factor sign-in that passed: the user, and the method that proved it.
#[derive(Debug)]
pub struct SecondFactor {
    /// The user.
    pub user: UserRecord,
    /// How.
    pub method: CodeMethod,
}

/// What a recovery code looks like once typed: lower case, without spaces or dashes.
fn normalized_recovery_code(code: &str) -> String {
    code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect()
}

/// How a recovery code is stored: SHA-256 over the user's id and the normalised code, so
/// that a copy of the database cannot test one guess against every user's codes at once.
fn recovery_code_hash(user_id: &crate::ids::UserId, code: &str) -> TokenHash {
    TokenHash::of(&format!("{}\n{}", user_id.as_str(), normalized_recovery_code(code)))
}

/// A new set of recovery codes, and their hashes for `user_id`.
pub(crate) fn new_recovery_codes(user_id: &crate::ids::UserId) -> (Vec<String>, Vec<TokenHash>) {
    let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect();
    let hashes = codes.iter().map(|c| recovery_code_hash(user_id, c)).collect();
    (codes, hashes)
}

/// A new recovery code: 60 random bits as 12 lower-case base32 letters and digits in
/// groups of four (`abcd-efgh-2345`).
fn new_recovery_code() -> String {
    let text = data_encoding::BASE32_NOPAD.encode(&random_bytes::<8>()).to_ascii_lowercase();
    let chars: Vec<char> = text.chars().take(12).collect();
    chars.chunks(4).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join("-")
}

impl SecondFactor {
    /// The session's `amr` for this sign-in.
    pub fn amr(&self) -> &'static str {
        match self.method {
            CodeMethod::Totp => AMR_PASSWORD_AND_OTP,
            CodeMethod::RecoveryCode => AMR_PASSWORD_AND_RECOVERY_CODE,
        }
    }
}

impl Latchkey {
    /// Fails unless `auth`'s session signed in within [`RECENT_SIGN_IN`].
    pub(crate) fn require_recent_sign_in(
        &self,
        auth: &impl Principal,
        now: Timestamp,
    ) -> Result<(), MfaError> {
        let signed_in = auth.session().created_at;
        if now.seconds_since(signed_in) > i64::try_from(RECENT_SIGN_IN.as_secs()).unwrap_or(i64::MAX) {
            return Err(MfaError::RecentSignInRequired);
        }
        Ok(())
    }

    fn seal_totp_secret(&self, factor_id: &str, secret: &TotpSecret) -> Vec<u8> {
        match self.keys.master_key().and_then(|k| k.seal_totp(factor_id, secret.expose_bytes())) {
            Some(sealed) => [&[SEALED][..], &sealed].concat(),
            None => [&[PLAIN][..], secret.expose_bytes()].concat(),
        }
    }

    fn open_totp_secret(&self, factor: &FactorRecord) -> Result<TotpSecret, MfaError> {
        match factor.secret.split_first() {
            Some((&PLAIN, bytes)) => Ok(TotpSecret::from_bytes(bytes)),
            Some((&SEALED, sealed)) => {
                let key = self.keys.master_key().ok_or(MfaError::Sealed)?;
                let bytes = key.open_totp(&factor.id, sealed).ok_or(MfaError::Sealed)?;
                Ok(TotpSecret::from_bytes(&bytes))
            }
            _ => Err(MfaError::Sealed),
        }
    }

    /// Starts setting up an authenticator app (`POST /auth/mfa/totp`): a new secret, shown
    /// once, in an unconfirmed factor that replaces any earlier unconfirmed one.
    ///
    /// # Errors
    /// [`MfaError::RecentSignInRequired`], storage.
    pub async fn begin_totp(&self, auth: &impl Principal) -> Result<TotpEnrolment, MfaError> {
        let now = self.clock.now();
        self.require_recent_sign_in(auth, now)?;
        self.new_totp_factor(auth.user(), now).await
    }

    /// A new unconfirmed authenticator-app factor for `user`, and what the app needs.
    pub(crate) async fn new_totp_factor(
        &self,
        user: &UserRecord,
        now: Timestamp,
    ) -> Result<TotpEnrolment, MfaError> {
        let secret = TotpSecret::generate();
        let id = new_id();
        let factor = FactorRecord {
            secret: self.seal_totp_secret(&id, &secret),
            id,
            user_id: user.id.clone(),
            kind: TOTP.to_owned(),
            name: "Authenticator app".to_owned(),
            created_at: now,
            confirmed_at: None,
            last_used_step: None,
        };
        self.store.insert_factor(&factor).await?;
        let issuer = crate::outbox::issuer_host(&self.settings.issuer);
        Ok(TotpEnrolment {
            otpauth_uri: otpauth_uri(&secret, issuer, &user.username),
            secret: secret.to_base32(),
        })
    }

    /// Confirms the authenticator app being set up with a code from it
    /// (`POST /auth/mfa/totp/confirm`): the factor counts from now, the user gets a new set
    /// of recovery codes (shown once), and every other session of the user ends.
    ///
    /// # Errors
    /// [`MfaError::RecentSignInRequired`], [`MfaError::NotEnrolling`],
    /// [`MfaError::WrongCode`], storage.
    pub async fn confirm_totp(
        &self,
        auth: &impl Principal,
        code: &OneTimeCode,
        ctx: &Caller,
    ) -> Result<RecoveryCodes, MfaError> {
        let now = self.clock.now();
        self.require_recent_sign_in(auth, now)?;
        let user = auth.user();
        let (pending, step) = self.pending_totp(user, code, now).await?;
        let codes = self.confirm_pending_totp(user, &pending, step, now).await?;
        self.end_other_sessions(auth, ctx).await?;
        self.record(self.event(now, "mfa_enabled", Some(&user.id), Some(&auth.session().id), Some(ctx)))
            .await;
        Ok(codes)
    }

    /// The user's authenticator app being set up, and the step `code` is from.
    ///
    /// # Errors
    /// [`MfaError::NotEnrolling`], [`MfaError::WrongCode`], storage.
    pub(crate) async fn pending_totp(
        &self,
        user: &UserRecord,
        code: &OneTimeCode,
        now: Timestamp,
    ) -> Result<(FactorRecord, i64), MfaError> {
        let factors = self.store.list_factors(&user.id).await?;
        let pending = factors.into_iter().rev().find(|f| f.kind == TOTP && f.confirmed_at.is_none());
        let Some(pending) = pending else { return Err(MfaError::NotEnrolling) };
        let secret = self.open_totp_secret(&pending)?;
        match secret.accepts(code.expose_secret(), now, None) {
            Some(step) => Ok((pending, step)),
            None => Err(MfaError::WrongCode),
        }
    }

    /// Confirms a pending authenticator app: it counts from now, with a new set of
    /// recovery codes (returned, to show once) and the notice queued in the same write.
    ///
    /// # Errors
    /// [`MfaError::NotEnrolling`] when another request confirmed it first; storage.
    pub(crate) async fn confirm_pending_totp(
        &self,
        user: &UserRecord,
        pending: &FactorRecord,
        step: i64,
        now: Timestamp,
    ) -> Result<RecoveryCodes, MfaError> {
        let (codes, hashes) = new_recovery_codes(&user.id);
        let notice = self.factor_notice(user, FactorChange::Added, now)?;
        if !self.store.confirm_factor(&pending.id, step, &hashes, &notice, now).await? {
            return Err(MfaError::NotEnrolling);
        }
        self.notice_queued(&notice);
        Ok(RecoveryCodes { recovery_codes: codes })
    }

    /// The notice of a factor change for the user's address, if it is verified (SPEC 11:
    /// "mails the user when an address is verified"), to queue with the change itself.
    ///
    /// # Errors
    /// A template that fails to render.
    pub(crate) fn factor_notice(
        &self,
        user: &UserRecord,
        change: FactorChange,
        now: Timestamp,
    ) -> Result<Vec<NewMail>, askama::Error> {
        let Some(email) = user.email.as_ref().filter(|e| e.verified_at.is_some()) else {
            return Ok(Vec::new());
        };
        let to = self.envelope(user, &email.address, now, now.plus(NOTICE_TTL));
        Ok(vec![crate::mail::factor_changed(&to, change)?])
    }

    /// Counts and announces the notices a committed change queued.
    pub(crate) fn notice_queued(&self, notice: &[NewMail]) {
        for _ in notice {
            self.metrics.mail_queued();
        }
        if !notice.is_empty() {
            self.mail_queued_notify();
        }
    }

    /// Every other session of the user, ended as the user's own doing (SPEC 11: adding or
    /// removing a factor).
    pub(crate) async fn end_other_sessions(
        &self,
        auth: &impl Principal,
        ctx: &Caller,
    ) -> Result<(), StoreError> {
        let (user, session) = (auth.user(), auth.session());
        let target =
            RevocationTarget::UserSessions { user_id: user.id.clone(), except: Some(session.id.clone()) };
        self.revoke(target, ErrorReason::RevokedByUser, Some(&user.id), Some(&session.id), ctx).await?;
        Ok(())
    }

    /// The user's confirmed factors and unused recovery codes (`GET /auth/mfa`).
    ///
    /// # Errors
    /// Storage.
    pub async fn list_mfa(&self, auth: &impl Principal) -> Result<MfaFactors, MfaError> {
        let user = auth.user();
        let factors = self.store.list_factors(&user.id).await?;
        let left = self.store.count_recovery_codes(&user.id).await?;
        Ok(MfaFactors {
            factors: factors
                .into_iter()
                .filter(|f| f.confirmed_at.is_some())
                .map(|f| MfaFactorView {
                    id: f.id,
                    kind: f.kind,
                    name: f.name,
                    created_at: f.created_at.rfc3339(),
                })
                .collect(),
            recovery_codes_left: usize::try_from(left).unwrap_or(0),
        })
    }

    /// A new set of recovery codes (`POST /auth/mfa/recovery-codes`), voiding the old;
    /// needs a sign-in within the last 5 minutes and a confirmed factor.
    ///
    /// # Errors
    /// [`MfaError::RecentSignInRequired`], [`MfaError::NoFactor`], storage.
    pub async fn replace_recovery_codes(
        &self,
        auth: &impl Principal,
        ctx: &Caller,
    ) -> Result<RecoveryCodes, MfaError> {
        let now = self.clock.now();
        self.require_recent_sign_in(auth, now)?;
        let user = auth.user();
        let (codes, hashes) = new_recovery_codes(&user.id);
        if !self.store.replace_recovery_codes(&user.id, &hashes, now).await? {
            return Err(MfaError::NoFactor);
        }
        let event =
            self.event(now, "recovery_codes_replaced", Some(&user.id), Some(&auth.session().id), Some(ctx));
        self.record(event).await;
        Ok(RecoveryCodes { recovery_codes: codes })
    }

    /// Removes a factor (`DELETE /auth/mfa/{id}`); with the last one, the recovery codes go
    /// too. Every other session of the user ends.
    ///
    /// # Errors
    /// [`MfaError::RecentSignInRequired`], [`MfaError::UnknownFactor`],
    /// [`MfaError::FactorRequired`] for the last factor of a user the policy covers,
    /// storage.
    pub async fn remove_factor(
        &self,
        auth: &impl Principal,
        factor_id: &str,
        ctx: &Caller,
    ) -> Result<(), MfaError> {
        let now = self.clock.now();
        self.require_recent_sign_in(auth, now)?;
        let user = auth.user();
        if self.settings.mfa.applies_to(&user.roles) {
            let factors = self.store.list_factors(&user.id).await?;
            let others = factors.iter().filter(|f| f.confirmed_at.is_some() && f.id != factor_id).count();
            if others == 0 {
                return Err(MfaError::FactorRequired);
            }
        }
        let notice = self.factor_notice(user, FactorChange::Removed, now)?;
        if !self.store.delete_factor(&user.id, factor_id, &notice).await? {
            return Err(MfaError::UnknownFactor);
        }
        self.notice_queued(&notice);
        self.end_other_sessions(auth, ctx).await?;
        self.record(self.event(now, "mfa_removed", Some(&user.id), Some(&auth.session().id), Some(ctx)))
            .await;
        Ok(())
    }

    /// After a right password: `None` for a user without a confirmed factor (sign in), or
    /// an `mfa_token` and the methods the user has (SPEC 11 `mfa_required`). Callers go
    /// through [`Latchkey::after_password`], which also decides the failure count.
    ///
    /// # Errors
    /// Storage.
    pub(crate) async fn second_factor_needed(
        &self,
        user: &UserRecord,
        now: Timestamp,
    ) -> Result<Option<(MfaToken, Vec<MfaMethod>)>, StoreError> {
        let methods = self.methods_of(user).await?;
        if methods.is_empty() {
            return Ok(None);
        }
        Ok(Some((self.new_challenge(user, MFA_TOKEN_PREFIX, now).await?, methods)))
    }

    /// The second-step methods a user has: none without a confirmed factor; recovery
    /// codes count only next to a factor.
    async fn methods_of(&self, user: &UserRecord) -> Result<Vec<MfaMethod>, StoreError> {
        let factors = self.store.list_factors(&user.id).await?;
        let has = |kind: &str| factors.iter().any(|f| f.kind == kind && f.confirmed_at.is_some());
        let mut methods = Vec::new();
        if has(TOTP) {
            methods.push(MfaMethod::Totp);
        }
        if has(crate::passkey::PASSKEY) {
            methods.push(MfaMethod::Passkey);
        }
        if !methods.is_empty() && self.store.count_recovery_codes(&user.id).await? > 0 {
            methods.push(MfaMethod::RecoveryCode);
        }
        Ok(methods)
    }

    /// The methods of the user behind a live second-step `mfa_token` (the pages show the
    /// step again after a wrong code).
    ///
    /// # Errors
    /// [`MfaError::InvalidMfaToken`], storage.
    pub async fn mfa_methods(&self, token: &MfaToken) -> Result<Vec<MfaMethod>, MfaError> {
        let (user, _) = self.open_challenge(token, MFA_TOKEN_PREFIX, self.clock.now()).await?;
        Ok(self.methods_of(&user).await?)
    }

    /// A new `mfa_token` for `user` after a right password: `prefix` says what it is for
    /// (the second step, or setting up a factor), and, being part of the hashed token,
    /// cannot be changed to use one kind for the other.
    pub(crate) async fn new_challenge(
        &self,
        user: &UserRecord,
        prefix: &str,
        now: Timestamp,
    ) -> Result<MfaToken, StoreError> {
        let token = MfaToken::new(format!("{prefix}{}", b64(&random_bytes::<32>())));
        let challenge = MfaChallengeRecord {
            hash: TokenHash::of(token.expose_secret()),
            user_id: user.id.clone(),
            password_hash: user.password_hash.clone(),
            created_at: now,
            expires_at: now.plus(MFA_TOKEN_TTL),
            used_at: None,
        };
        self.store.insert_mfa_challenge(&challenge).await?;
        Ok(token)
    }

    /// The user behind an unspent, unexpired `mfa_token` of the kind `prefix` names, if
    /// the user is still active with the password that token passed; and the token's hash.
    ///
    /// # Errors
    /// [`MfaError::InvalidMfaToken`], storage.
    pub(crate) async fn open_challenge(
        &self,
        token: &MfaToken,
        prefix: &str,
        now: Timestamp,
    ) -> Result<(UserRecord, TokenHash), MfaError> {
        if !token.expose_secret().starts_with(prefix) {
            return Err(MfaError::InvalidMfaToken);
        }
        let hash = TokenHash::of(token.expose_secret());
        let challenge = match self.store.find_mfa_challenge(&hash).await? {
            Some(c) if c.used_at.is_none() && now < c.expires_at => c,
            _ => return Err(MfaError::InvalidMfaToken),
        };
        match self.store.find_user(&challenge.user_id).await? {
            Some(u) if u.status == UserStatus::Active && u.password_hash == challenge.password_hash => {
                Ok((u, hash))
            }
            _ => Err(MfaError::InvalidMfaToken),
        }
    }

    /// Checks the second step of a sign-in: the `mfa_token` and a code by `method`,
    /// throttled like passwords. On success the token is spent and the user returned, to
    /// open a session for (the API and the pages each do).
    ///
    /// # Errors
    /// [`MfaError::InvalidMfaToken`], [`MfaError::WrongCode`], [`MfaError::Throttled`],
    /// storage.
    pub async fn check_second_factor(
        &self,
        token: &MfaToken,
        method: CodeMethod,
        code: &OneTimeCode,
        ctx: &Caller,
    ) -> Result<SecondFactor, MfaError> {
        let now = self.clock.now();
        let (user, hash) = self.open_challenge(token, MFA_TOKEN_PREFIX, now).await?;
        match self.prove_code(&user, method, code, ctx, now).await {
            Ok(()) => {}
            // SPEC 11: the token survives wrong codes until the account is throttled; then
            // it dies, and the next attempt starts again from the password.
            Err(e @ MfaError::Throttled { .. }) => {
                self.store.spend_mfa_challenge(&hash, now).await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        if !self.store.spend_mfa_challenge(&hash, now).await? {
            return Err(MfaError::InvalidMfaToken);
        }
        self.store.delete_throttle(&account_key(&user.username)).await?;
        Ok(SecondFactor { user, method })
    }

    /// Checks a code for `user`, throttled like passwords (per account and per address):
    /// the part of a second step shared by sign-in and step-up. The account's failure count
    /// is left for the caller to clear once the whole step has passed.
    ///
    /// # Errors
    /// [`MfaError::WrongCode`], [`MfaError::Throttled`], storage.
    pub(crate) async fn prove_code(
        &self,
        user: &UserRecord,
        method: CodeMethod,
        code: &OneTimeCode,
        ctx: &Caller,
        now: Timestamp,
    ) -> Result<(), MfaError> {
        let acct = account_key(&user.username);
        let addr = ctx.ip.as_deref().map(address_key);
        if let Some(retry_after) = self.throttled_for(&acct, addr.as_deref(), now).await? {
            return Err(MfaError::Throttled { retry_after });
        }
        if self.second_factor_is_right(user, method, code, now).await? {
            return Ok(());
        }
        let locked =
            self.record_failure("mfa_failed", Some(&user.id), &acct, addr.as_deref(), ctx, now).await?;
        Err(match locked {
            Some(retry_after) => MfaError::Throttled { retry_after },
            None => MfaError::WrongCode,
        })
    }

    /// Completes an API sign-in with its second factor (`POST /auth/login/mfa`): a new
    /// session and its tokens.
    ///
    /// # Errors
    /// See [`Latchkey::check_second_factor`]; signing and storage.
    pub async fn login_mfa(
        &self,
        req: latchkey_proto::auth::MfaLoginRequest,
        ctx: &Caller,
    ) -> Result<latchkey_proto::auth::TokenResponse, MfaError> {
        let (user, amr) = match CodeMethod::of(req.method) {
            None => {
                let (Some(challenge_id), Some(credential)) = (req.challenge_id, req.credential) else {
                    return Err(MfaError::MissingProof("method passkey needs challenge_id and credential."));
                };
                self.passkey_second_step(&req.mfa_token, &challenge_id, credential, ctx).await?
            }
            Some(method) => {
                let code = req.code.ok_or(MfaError::MissingProof("This method needs a code."))?;
                let passed = self.check_second_factor(&req.mfa_token, method, &code, ctx).await?;
                let amr = passed.amr();
                (passed.user, amr)
            }
        };
        let now = self.clock.now();
        Ok(self.open_session(&user, amr, ctx, now).await?)
    }

    /// Whether `code` proves the factor `method` names, using it up if so.
    async fn second_factor_is_right(
        &self,
        user: &UserRecord,
        method: CodeMethod,
        code: &OneTimeCode,
        now: Timestamp,
    ) -> Result<bool, MfaError> {
        match method {
            CodeMethod::RecoveryCode => {
                let hash = recovery_code_hash(&user.id, code.expose_secret());
                Ok(self.store.use_recovery_code(&user.id, &hash, now).await?)
            }
            CodeMethod::Totp => {
                let factors = self.store.list_factors(&user.id).await?;
                for factor in factors.iter().filter(|f| f.kind == TOTP && f.confirmed_at.is_some()) {
                    let secret = self.open_totp_secret(factor)?;
                    if let Some(step) = secret.accepts(code.expose_secret(), now, factor.last_used_step) {
                        // Two requests with one code: one conditional write wins.
                        return Ok(self.store.use_totp_step(&factor.id, step).await?);
                    }
                }
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acr_levels_follow_the_amr_and_order_weakest_first() {
        assert_eq!(acr_of(AMR_PASSWORD), "urn:latchkey:acr:pwd");
        assert_eq!(acr_of(AMR_PASSWORD_AND_OTP), "urn:latchkey:acr:mfa");
        assert_eq!(acr_of(AMR_PASSWORD_AND_RECOVERY_CODE), "urn:latchkey:acr:mfa");
        assert_eq!(acr_of("hwk user mfa"), "urn:latchkey:acr:phr");
        assert!(AcrLevel::Password < AcrLevel::MultiFactor);
        assert!(AcrLevel::MultiFactor < AcrLevel::PhishingResistant);
        for level in AcrLevel::ALL {
            assert_eq!(AcrLevel::parse(level.as_str()), Some(level));
        }
        assert_eq!(AcrLevel::parse("urn:latchkey:acr:other"), None);
    }

    #[test]
    fn recovery_codes_are_twelve_characters_in_three_groups() {
        let code = new_recovery_code();
        assert_eq!(code.len(), 14, "{code}");
        assert_eq!(code.matches('-').count(), 2);
        assert_eq!(normalized_recovery_code(&code).len(), 12);
        assert_eq!(normalized_recovery_code(" ABCD-efgh 2345 "), "abcdefgh2345");
        assert_ne!(new_recovery_code(), new_recovery_code());
    }

    #[test]
    fn a_recovery_code_hashes_differently_for_each_user() {
        let (ann, bo) = (crate::ids::UserId::from("ann"), crate::ids::UserId::from("bo"));
        let code = "abcd-efgh-2345";
        assert_eq!(recovery_code_hash(&ann, code), recovery_code_hash(&ann, "ABCD EFGH 2345"));
        assert_ne!(recovery_code_hash(&ann, code), recovery_code_hash(&bo, code));
        assert_ne!(recovery_code_hash(&ann, code), TokenHash::of("abcdefgh2345"), "not a bare SHA-256");
    }
}
