//! Passkeys (SPEC 11): WebAuthn registration and username-less sign-in, through
//! `webauthn-rs`. The relying party is the issuer: its host is the RP ID and its origin
//! the only one accepted, so passkeys need an issuer with a domain name (`localhost`
//! included), never an IP address.
//!
//! - A passkey is a factor (`kind` `passkey`) whose stored "secret" is the credential's
//!   public key, counter and flags as `webauthn-rs` serialises them (nothing secret: it
//!   is not sealed). Its id is derived from the credential id, so a sign-in finds it
//!   with one point read.
//! - The user handle given to authenticators is derived from the user id (SHA-256,
//!   first 16 bytes as a UUID): opaque, stable for every passkey of the user, and
//!   checked at sign-in against the owner of the credential presented (the library
//!   checks the signature, not who the credential belongs to).
//! - Each ceremony's state waits in the database between start and finish (any node may
//!   finish it), is taken by the finish (one answer per challenge) and lives 5 minutes.
//! - User verification is required, not merely preferred: a passkey signs a user in on
//!   its own, counting as both factors, which is only true when the authenticator
//!   verified the user (PIN or biometrics). `webauthn-rs`'s passkey API insists on it.
//! - A sign-in with a passkey has `amr` `hwk mfa` (`swk mfa` for a passkey that may be
//!   synced between devices) and the `acr` `urn:latchkey:acr:phr`.

use std::time::Duration;

use latchkey_proto::MfaToken;
use latchkey_proto::auth::{PasskeyFinish, PasskeyOptions, PasskeyRegistered, TokenResponse};
use serde_json::Value;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Url, Uuid, Webauthn, WebauthnBuilder,
};

use crate::account::Principal;
use crate::caller::Caller;
use crate::clock::Timestamp;
use crate::crypto::{TokenHash, b64, new_id};
use crate::ids::UserId;
use crate::mail::FactorChange;
use crate::mfa::{MFA_TOKEN_PREFIX, MfaError};
use crate::service::Latchkey;
use crate::store::{FactorRecord, PasskeyChallengeRecord, UserRecord, UserStatus};
use crate::throttle::{account_key, address_key};
use crate::web::SignedIn;

/// The stored kind of a passkey factor.
pub const PASSKEY: &str = "passkey";
/// How long a ceremony may take between its start and its finish (WebAuthn's
/// recommended timeout, also given to the browser).
const CEREMONY_TTL: Duration = Duration::from_secs(300);
/// The longest passkey name kept.
const MAX_NAME_CHARS: usize = 100;
/// The name of a passkey registered without one.
const DEFAULT_NAME: &str = "Passkey";
/// Sign-in ceremonies one client address may start in a clock minute: each stores state
/// for 5 minutes, and nothing else limits who may start one.
const STARTS_PER_MINUTE: i64 = 30;

/// Whether a character may appear in a passkey's name: no control characters and no
/// invisible formatting (bidirectional overrides, zero-width characters), which could make
/// one name look like another in the account's list.
fn is_shown_char(c: char) -> bool {
    !c.is_control()
        && !matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// The factor id of the passkey with this credential id.
fn factor_id(credential_id: &[u8]) -> String {
    format!("pk_{}", b64(&TokenHash::of(&b64(credential_id)).0))
}

/// The WebAuthn user handle of a user: 16 bytes of SHA-256 over the user id.
fn user_handle(user_id: &UserId) -> Uuid {
    let hash = TokenHash::of(&format!("latchkey webauthn user handle\n{}", user_id.as_str()));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.0[..16]);
    Uuid::from_bytes(bytes)
}

/// State that cannot be read or written back: a bug or a corrupt row, never the caller's.
fn internal(e: impl std::fmt::Display) -> MfaError {
    MfaError::Internal(e.to_string())
}

/// The `amr` of a sign-in with a passkey, after the password or alone: a key that may be
/// synced to other devices is a software key, one bound to its authenticator a hardware
/// key.
fn passkey_amr(backup_eligible: bool, after_password: bool) -> &'static str {
    match (backup_eligible, after_password) {
        (true, false) => "swk mfa",
        (false, false) => "hwk mfa",
        (true, true) => "pwd swk mfa",
        (false, true) => "pwd hwk mfa",
    }
}

/// A passkey sign-in that passed.
#[derive(Debug)]
pub struct PasskeySignIn {
    /// The user.
    pub user: UserRecord,
    /// Whether the passkey may be synced between devices (WebAuthn's backup eligibility).
    pub backup_eligible: bool,
}

/// The relying party for an issuer: its host is the RP ID and its origin the only one
/// accepted; `None` when it has no domain name (an IP address).
pub(crate) fn relying_party(issuer: &str) -> Option<Webauthn> {
    let origin = Url::parse(issuer).ok()?;
    let rp_id = origin.domain()?.to_owned();
    WebauthnBuilder::new(&rp_id, &origin).and_then(|b| b.rp_name(&rp_id).timeout(CEREMONY_TTL).build()).ok()
}

impl Latchkey {
    /// The relying party, or [`MfaError::PasskeysUnavailable`].
    fn webauthn(&self) -> Result<&Webauthn, MfaError> {
        self.webauthn.as_ref().ok_or(MfaError::PasskeysUnavailable)
    }

    /// Stores a ceremony's state; its `challenge_id`.
    async fn save_ceremony(
        &self,
        user_id: Option<&UserId>,
        state: &impl serde::Serialize,
        now: Timestamp,
    ) -> Result<String, MfaError> {
        let record = PasskeyChallengeRecord {
            id: new_id(),
            user_id: user_id.cloned(),
            state: serde_json::to_string(state).map_err(internal)?,
            created_at: now,
            expires_at: now.plus(CEREMONY_TTL),
        };
        self.store.insert_passkey_challenge(&record).await?;
        Ok(record.id)
    }

    /// Takes a ceremony's state, if it is alive and was started for `user_id` (another
    /// user's `challenge_id` is left alone).
    async fn take_ceremony<T: serde::de::DeserializeOwned>(
        &self,
        challenge_id: &str,
        user_id: Option<&UserId>,
        now: Timestamp,
    ) -> Result<T, MfaError> {
        match self.store.take_passkey_challenge(challenge_id, user_id, now).await? {
            Some(r) => serde_json::from_str(&r.state).map_err(internal),
            None => Err(MfaError::UnknownChallenge),
        }
    }

    /// The user's passkeys, as stored, with their credentials.
    async fn passkeys_of(&self, user_id: &UserId) -> Result<Vec<(FactorRecord, Passkey)>, MfaError> {
        let factors = self.store.list_factors(user_id).await?;
        factors
            .into_iter()
            .filter(|f| f.kind == PASSKEY)
            .map(|f| {
                let key = serde_json::from_slice(&f.secret).map_err(internal)?;
                Ok((f, key))
            })
            .collect()
    }

    /// `POST /auth/passkeys/register/start`: the options for `navigator.credentials.create`
    /// (a discoverable credential, user verification required, the user's passkeys
    /// excluded); needs a sign-in within 5 minutes.
    ///
    /// # Errors
    /// [`MfaError::RecentSignInRequired`], [`MfaError::PasskeysUnavailable`], storage.
    pub async fn begin_passkey_registration(
        &self,
        auth: &impl Principal,
    ) -> Result<PasskeyOptions, MfaError> {
        let now = self.clock.now();
        self.require_recent_sign_in(auth, now)?;
        let webauthn = self.webauthn()?;
        let user = auth.user();
        let exclude = self.passkeys_of(&user.id).await?.iter().map(|(_, k)| k.cred_id().clone()).collect();
        let (options, state) = webauthn
            .start_passkey_registration(user_handle(&user.id), &user.username, &user.username, Some(exclude))
            .map_err(internal)?;
        let mut public_key = serde_json::to_value(&options.public_key).map_err(internal)?;
        // Discoverable, so that sign-in needs no username (the library's passkey options
        // leave it to the authenticator; the finish does not depend on it).
        if let Some(selection) = public_key.get_mut("authenticatorSelection").and_then(Value::as_object_mut) {
            selection.insert("residentKey".into(), Value::from("required"));
            selection.insert("requireResidentKey".into(), Value::from(true));
        }
        let challenge_id = self.save_ceremony(Some(&user.id), &state, now).await?;
        Ok(PasskeyOptions { challenge_id, public_key })
    }

    /// `POST /auth/passkeys/register/finish`: checks the new credential and keeps it as a
    /// factor. As with any new factor, every other session of the user ends and a verified
    /// address is mailed. Recovery codes are not made here: a passkey-only user has the
    /// methods `["passkey"]` (SPEC 11) until asking for codes.
    ///
    /// # Errors
    /// [`MfaError::RecentSignInRequired`], [`MfaError::UnknownChallenge`],
    /// [`MfaError::PasskeyRefused`], [`MfaError::PasskeyTaken`], storage.
    pub async fn finish_passkey_registration(
        &self,
        auth: &impl Principal,
        req: PasskeyFinish,
        ctx: &Caller,
    ) -> Result<PasskeyRegistered, MfaError> {
        let now = self.clock.now();
        self.require_recent_sign_in(auth, now)?;
        let webauthn = self.webauthn()?;
        let user = auth.user();
        let state: PasskeyRegistration = self.take_ceremony(&req.challenge_id, Some(&user.id), now).await?;
        let credential: RegisterPublicKeyCredential = serde_json::from_value(req.credential)
            .map_err(|_| MfaError::PasskeyInvalid("the credential cannot be read"))?;
        let passkey = webauthn
            .finish_passkey_registration(&credential, &state)
            .map_err(|_| MfaError::PasskeyInvalid("the authenticator's answer did not verify"))?;
        let name = req
            .name
            .map(|n| n.chars().filter(|c| is_shown_char(*c)).take(MAX_NAME_CHARS).collect::<String>())
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_NAME.to_owned());
        let factor = FactorRecord {
            id: factor_id(passkey.cred_id()),
            user_id: user.id.clone(),
            kind: PASSKEY.to_owned(),
            name: name.clone(),
            secret: serde_json::to_vec(&passkey).map_err(internal)?,
            created_at: now,
            confirmed_at: Some(now),
            last_used_step: None,
        };
        let notice = self.factor_notice(user, FactorChange::Added, now)?;
        if !self.store.insert_confirmed_factor(&factor, &notice, now).await? {
            return Err(MfaError::PasskeyTaken);
        }
        self.notice_queued(&notice);
        self.end_other_sessions(auth, ctx).await?;
        self.record(self.event(now, "passkey_added", Some(&user.id), Some(&auth.session().id), Some(ctx)))
            .await;
        Ok(PasskeyRegistered { id: factor.id, name })
    }

    /// Whether passkeys work with this issuer (it has a domain name).
    pub fn passkeys_available(&self) -> bool {
        self.webauthn.is_some()
    }

    /// `POST /auth/passkeys/login/start`: the options for `navigator.credentials.get`
    /// (no username: any of the user's discoverable credentials for this RP). At most
    /// 30 per client address and clock minute (`STARTS_PER_MINUTE`).
    ///
    /// # Errors
    /// [`MfaError::PasskeysUnavailable`], [`MfaError::Throttled`], storage.
    pub async fn begin_passkey_login(&self, ctx: &Caller) -> Result<PasskeyOptions, MfaError> {
        let now = self.clock.now();
        let webauthn = self.webauthn()?;
        if let Some(ip) = ctx.ip.as_deref() {
            let key = crate::throttle::passkey_start_key(ip, now);
            let rec = self.store.record_throttle_failure(&key, now, 60).await?;
            if let Some(retry_after) = crate::throttle::minute_retry_after(rec.count, STARTS_PER_MINUTE, now)
            {
                return Err(MfaError::Throttled { retry_after });
            }
        }
        let (options, state) = webauthn.start_discoverable_authentication().map_err(internal)?;
        let public_key = serde_json::to_value(&options.public_key).map_err(internal)?;
        let challenge_id = self.save_ceremony(None, &state, now).await?;
        Ok(PasskeyOptions { challenge_id, public_key })
    }

    /// Checks a passkey assertion for a sign-in started with
    /// [`Latchkey::begin_passkey_login`]: the challenge (taken, so once), the credential's
    /// owner (active, and the user handle the authenticator gave is that owner's), the
    /// signature and counter. Refusals are security events.
    ///
    /// # Errors
    /// [`MfaError::UnknownChallenge`], [`MfaError::PasskeyRefused`], storage.
    pub async fn check_passkey(
        &self,
        challenge_id: &str,
        credential: Value,
        ctx: &Caller,
    ) -> Result<PasskeySignIn, MfaError> {
        let now = self.clock.now();
        let webauthn = self.webauthn()?;
        let state: DiscoverableAuthentication = self.take_ceremony(challenge_id, None, now).await?;
        let credential: PublicKeyCredential = serde_json::from_value(credential)
            .map_err(|_| MfaError::PasskeyInvalid("the credential cannot be read"))?;
        let Ok((handle, credential_id)) = webauthn.identify_discoverable_authentication(&credential) else {
            return Err(self.passkey_refused(None, "no user handle", ctx, now).await);
        };
        let factor = match self.store.find_factor(&factor_id(credential_id)).await? {
            Some(f) if f.kind == PASSKEY => f,
            _ => return Err(self.passkey_refused(None, "unknown credential", ctx, now).await),
        };
        let user = match self.store.find_user(&factor.user_id).await? {
            Some(u) if u.status == UserStatus::Active && user_handle(&u.id) == handle => u,
            _ => {
                let why = "credential of another or inactive user";
                return Err(self.passkey_refused(Some(&factor.user_id), why, ctx, now).await);
            }
        };
        let mut passkey: Passkey = serde_json::from_slice(&factor.secret).map_err(internal)?;
        let result = match webauthn.finish_discoverable_authentication_v2(&credential, state, &passkey) {
            Ok(result) => result,
            // WebAuthn §6.1.1: a signature counter that did not move forward may mean the
            // passkey was copied; the assertion is refused and the event says why.
            Err(webauthn_rs::prelude::WebauthnError::CredentialPossibleCompromise) => {
                let why = "signature counter did not increase: possibly a cloned authenticator";
                return Err(self.passkey_refused(Some(&user.id), why, ctx, now).await);
            }
            Err(_) => {
                return Err(self.passkey_refused(Some(&user.id), "assertion did not verify", ctx, now).await);
            }
        };
        if passkey.update_credential(&result) == Some(true) {
            let secret = serde_json::to_vec(&passkey).map_err(internal)?;
            self.store.update_factor_secret(&factor.id, &secret).await?;
        }
        Ok(PasskeySignIn { user, backup_eligible: result.backup_eligible() })
    }

    /// Records a refused passkey sign-in (why, in the event's detail) and returns the one
    /// refusal every case answers with.
    async fn passkey_refused(
        &self,
        user_id: Option<&UserId>,
        why: &'static str,
        ctx: &Caller,
        now: Timestamp,
    ) -> MfaError {
        let mut event = self.event(now, "passkey_failed", user_id, None, Some(ctx));
        event.detail = Some(why.to_owned());
        self.record(event).await;
        MfaError::PasskeyRefused("this passkey is not recognised here")
    }

    /// `POST /auth/passkeys/login/finish`: a sign-in with a passkey alone; the token
    /// response.
    ///
    /// # Errors
    /// See [`Latchkey::check_passkey`]; signing and storage.
    pub async fn login_passkey(&self, req: PasskeyFinish, ctx: &Caller) -> Result<TokenResponse, MfaError> {
        let passed = self.check_passkey(&req.challenge_id, req.credential, ctx).await?;
        let now = self.clock.now();
        let amr = passkey_amr(passed.backup_eligible, false);
        Ok(self.open_session(&passed.user, amr, ctx, now).await?)
    }

    /// The pages' **Sign in with a passkey**: as [`Latchkey::login_passkey`], opening a
    /// browser session; with its cookie value.
    ///
    /// # Errors
    /// As [`Latchkey::login_passkey`].
    pub async fn web_login_passkey(
        &self,
        req: PasskeyFinish,
        ctx: &Caller,
    ) -> Result<(SignedIn, String), MfaError> {
        let passed = self.check_passkey(&req.challenge_id, req.credential, ctx).await?;
        let now = self.clock.now();
        let amr = passkey_amr(passed.backup_eligible, false);
        Ok(self.open_web_session(passed.user, amr, ctx, now).await?)
    }

    /// The pages' second step proved with a passkey: as `passkey_second_step` (`POST /auth/login/mfa`),
    /// opening a browser session; with its cookie value.
    ///
    /// # Errors
    /// As `passkey_second_step`: [`MfaError::InvalidMfaToken`], [`MfaError::Throttled`],
    /// [`MfaError::PasskeyRefused`]; signing and storage.
    pub async fn web_passkey_second_step(
        &self,
        token: &MfaToken,
        req: PasskeyFinish,
        ctx: &Caller,
    ) -> Result<(SignedIn, String), MfaError> {
        let (user, amr) = self.passkey_second_step(token, &req.challenge_id, req.credential, ctx).await?;
        Ok(self.open_web_session(user, amr, ctx, self.clock.now()).await?)
    }

    /// The second step of a password sign-in proved with a passkey (`POST
    /// /auth/login/mfa` with `method` `passkey`, or the pages' second step): the passkey
    /// must be the `mfa_token` user's. A success spends the token and clears the account's
    /// failure count, like a right code. The user, and the session's `amr`.
    ///
    /// # Errors
    /// [`MfaError::InvalidMfaToken`], [`MfaError::Throttled`], those of
    /// [`Latchkey::check_passkey`].
    pub(crate) async fn passkey_second_step(
        &self,
        token: &MfaToken,
        challenge_id: &str,
        credential: Value,
        ctx: &Caller,
    ) -> Result<(UserRecord, &'static str), MfaError> {
        let now = self.clock.now();
        let (user, hash) = self.open_challenge(token, MFA_TOKEN_PREFIX, now).await?;
        let acct = account_key(&user.username);
        let addr = ctx.ip.as_deref().map(address_key);
        // As with a code (SPEC 11): a throttled account's token dies, and the password
        // comes first again.
        if let Some(retry_after) = self.throttled_for(&acct, addr.as_deref(), now).await? {
            self.store.spend_mfa_challenge(&hash, now).await?;
            return Err(MfaError::Throttled { retry_after });
        }
        let passed = self.check_passkey(challenge_id, credential, ctx).await?;
        if passed.user.id != user.id {
            let why = "another user's passkey for this user's second step";
            return Err(self.passkey_refused(Some(&user.id), why, ctx, now).await);
        }
        if !self.store.spend_mfa_challenge(&hash, now).await? {
            return Err(MfaError::InvalidMfaToken);
        }
        self.store.delete_throttle(&acct).await?;
        Ok((user, passkey_amr(passed.backup_eligible, true)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_handles_are_stable_per_user_and_differ_between_users() {
        let (ann, bo) = (UserId::from("ann"), UserId::from("bo"));
        assert_eq!(user_handle(&ann), user_handle(&ann));
        assert_ne!(user_handle(&ann), user_handle(&bo));
    }

    #[test]
    fn names_keep_no_invisible_formatting() {
        let shown: String = "Lap\u{202E}pot\u{200B} \n".chars().filter(|c| is_shown_char(*c)).collect();
        assert_eq!(shown, "Lappot ");
        assert!(is_shown_char('é') && is_shown_char('名'));
    }

    #[test]
    fn factor_ids_are_fixed_length_whatever_the_credential_id() {
        let short = factor_id(&[1; 16]);
        let long = factor_id(&[2; 1023]);
        assert_eq!(short.len(), long.len());
        assert!(short.starts_with("pk_"));
        assert_ne!(factor_id(&[1; 16]), factor_id(&[1; 17]));
    }

    #[test]
    fn a_synced_passkey_is_a_software_key() {
        assert_eq!(passkey_amr(true, false), "swk mfa");
        assert_eq!(passkey_amr(false, false), "hwk mfa");
        assert_eq!(passkey_amr(false, true), "pwd hwk mfa");
        for (synced, after_password) in [(true, false), (false, false), (true, true), (false, true)] {
            assert_eq!(crate::mfa::acr_of(passkey_amr(synced, after_password)), "urn:latchkey:acr:phr");
        }
    }
}
