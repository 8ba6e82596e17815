//! The device authorization grant (RFC 8628, SPEC 13), for TVs and command-line tools: the
//! device asks for codes at `/oauth/device_authorization`, the user types the user code at
//! `/device` in a signed-in browser and allows or denies, and the device polls the token
//! endpoint meanwhile.
//!
//! User codes are 8 letters from [`USER_CODE_ALPHABET`] (20 letters without vowels and
//! look-alikes, so no word and no `0`/`O` confusion): about 34.6 bits, shown as
//! `XXXX-XXXX`. Guessing is bounded by [`WRONG_CODES`] wrong codes per user and per
//! address in [`WRONG_CODE_WINDOW`], and a code lives [`DEVICE_CODE_TTL`]. Device codes
//! are `lkd_` and 256 bits, stored as SHA-256. The poll rules ([`poll_decision`]) are pure
//! and run in the store's transaction.

use std::time::Duration;

use latchkey_proto::oauth::{DeviceAuthorizationResponse, OAuthTokenResponse};

use super::token::{ClientCredentials, TokenRequestError, has_grant, narrowed};
use super::{OFFLINE_ACCESS, ScopeInfo, describe_scope};
use crate::caller::Caller;
use crate::clock::Timestamp;
use crate::crypto::{RefreshTokenKey, TokenHash, b64, new_refresh_token, random_bytes};
use crate::ids::Scope;
use crate::login::SessionLifetimes;
use crate::service::Latchkey;
use crate::store::{
    ClientRecord, DeviceAuthorizationRecord, DevicePoll, DevicePollDecision, DeviceState, DeviceWait,
    SessionRecord, StoreError,
};
use crate::web::SignedIn;

/// The grant type a client must be registered for.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// The letters of user codes (SPEC 13).
pub const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
/// How long the codes live.
pub const DEVICE_CODE_TTL: Duration = Duration::from_secs(600);
/// The polling interval a device starts with, in seconds.
pub const POLL_INTERVAL_SECS: i64 = 5;
/// Wrong user codes allowed per user, and per client address, in [`WRONG_CODE_WINDOW`].
pub const WRONG_CODES: i64 = 10;
/// The window of [`WRONG_CODES`].
pub const WRONG_CODE_WINDOW: Duration = Duration::from_secs(600);
const DEVICE_CODE_PREFIX: &str = "lkd_";

/// A fresh user code: 8 letters, uniform over the alphabet (bytes of 240 and up are
/// drawn again, so that `% 20` has no bias).
fn new_user_code() -> String {
    let mut code = String::with_capacity(8);
    while code.len() < 8 {
        for b in random_bytes::<16>() {
            if b < 240 && code.len() < 8 {
                code.push(char::from(USER_CODE_ALPHABET.get(usize::from(b % 20)).copied().unwrap_or(b'B')));
            }
        }
    }
    code
}

/// A typed user code as stored: upper case, without the dash or spaces; `None` unless it
/// is 8 letters of the alphabet.
pub fn normalize_user_code(input: &str) -> Option<String> {
    let code: String =
        input.chars().filter(|c| !c.is_whitespace() && *c != '-').map(|c| c.to_ascii_uppercase()).collect();
    (code.len() == 8 && code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b))).then_some(code)
}

/// A stored user code as shown: `XXXX-XXXX`.
pub fn display_user_code(code: &str) -> String {
    match (code.get(..4), code.get(4..)) {
        (Some(a), Some(b)) => format!("{a}-{b}"),
        _ => code.to_owned(),
    }
}

/// Decides one poll (RFC 8628 §3.5), given the approving browser session as it is now.
/// `Issue` opens `session` (built by the caller only when needed, through `open`).
pub fn poll_decision(
    auth: &DeviceAuthorizationRecord,
    browser: Option<&SessionRecord>,
    now: Timestamp,
    open: impl FnOnce(&DeviceAuthorizationRecord, &SessionRecord) -> DevicePollDecision,
) -> DevicePollDecision {
    let wait = DevicePollDecision::Wait;
    if auth.state == DeviceState::Used {
        return wait(DeviceWait::Spent);
    }
    if now >= auth.expires_at {
        return wait(DeviceWait::Expired);
    }
    if auth.last_polled_at.is_some_and(|last| now.seconds_since(last) < auth.interval_secs) {
        return wait(DeviceWait::SlowDown);
    }
    match auth.state {
        DeviceState::Pending => wait(DeviceWait::Pending),
        DeviceState::Denied => wait(DeviceWait::Denied),
        DeviceState::Used => wait(DeviceWait::Spent),
        DeviceState::Approved => {
            let live = browser.filter(|b| {
                b.revoked_at.is_none()
                    && Some(&b.user_id) == auth.user_id.as_ref()
                    && now < b.expires_at
                    && now < b.idle_expires_at
            });
            match live {
                Some(b) => open(auth, b),
                None => wait(DeviceWait::SignInEnded),
            }
        }
    }
}

/// What the `/device` page shows once a code was found.
#[derive(Debug, Clone)]
pub struct DeviceRequest {
    /// The user code, `XXXX-XXXX`.
    pub user_code: String,
    /// The app on the device.
    pub client: ClientRecord,
    /// What it asks for, in plain words.
    pub scopes: Vec<ScopeInfo>,
}

/// Why `/device` cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Not a code that waits for a decision (unknown, expired, already decided).
    #[error("the code is not valid")]
    WrongCode,
    /// Too many wrong codes.
    #[error("too many wrong codes; retry in {retry_after} s")]
    Throttled {
        /// Seconds.
        retry_after: u64,
    },
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Latchkey {
    /// `POST /oauth/device_authorization` (RFC 8628 §3.1): new codes for the client's
    /// scopes, or the ones asked (each registered for it).
    ///
    /// # Errors
    /// [`TokenRequestError`]: client authentication, a client without the grant, a scope.
    pub async fn device_authorization(
        &self,
        creds: &ClientCredentials,
        scope: Option<Scope>,
    ) -> Result<DeviceAuthorizationResponse, TokenRequestError> {
        let client = self.authenticate_token_client(creds).await?;
        if !has_grant(&client, DEVICE_CODE_GRANT) {
            return Err(TokenRequestError::UnauthorizedClient("This client may not use the device flow."));
        }
        let mut allowed = client.scopes.clone();
        if has_grant(&client, "refresh_token") {
            allowed = allowed.union(&Scope::from(OFFLINE_ACCESS));
        }
        let scope = match scope {
            Some(asked) => narrowed(&asked, &allowed)
                .ok_or(TokenRequestError::InvalidScope("The client is not registered for that scope."))?,
            None => client.scopes.clone(),
        };
        let now = self.clock.now();
        let device_code = format!("{DEVICE_CODE_PREFIX}{}", b64(&random_bytes::<32>()));
        let mut record = DeviceAuthorizationRecord {
            device_code_hash: TokenHash::of(&device_code),
            user_code: new_user_code(),
            client_id: client.client_id.clone(),
            scope,
            created_at: now,
            expires_at: now.plus(DEVICE_CODE_TTL),
            interval_secs: POLL_INTERVAL_SECS,
            last_polled_at: None,
            state: DeviceState::Pending,
            user_id: None,
            browser_session_id: None,
            decided_at: None,
            session_id: None,
        };
        // A user code taken by a live authorization (1 in 2.5e10 per live code) is drawn again.
        let mut tries = 0;
        loop {
            match self.store.insert_device_authorization(&record).await {
                Ok(()) => break,
                Err(StoreError::Conflict(_)) if tries < 5 => {
                    tries += 1;
                    record.user_code = new_user_code();
                }
                Err(e) => return Err(e.into()),
            }
        }
        let user_code = display_user_code(&record.user_code);
        let verification_uri = format!("{}/device", self.settings.issuer);
        Ok(DeviceAuthorizationResponse {
            device_code,
            verification_uri_complete: format!("{verification_uri}?user_code={user_code}"),
            verification_uri,
            user_code,
            expires_in: DEVICE_CODE_TTL.as_secs(),
            interval: POLL_INTERVAL_SECS.unsigned_abs(),
        })
    }

    /// The wait, if this user or address typed too many wrong codes lately.
    async fn wrong_code_wait(&self, keys: &[String], now: Timestamp) -> Result<Option<u64>, StoreError> {
        let window = i64::try_from(WRONG_CODE_WINDOW.as_secs()).unwrap_or(i64::MAX);
        for key in keys {
            if let Some(rec) = self.store.find_throttle(key).await?
                && rec.count >= WRONG_CODES
                && now.seconds_since(rec.window_start) < window
            {
                let wait = rec.window_start.0.saturating_add(window) - now.0;
                return Ok(Some(u64::try_from(wait).unwrap_or(1).max(1)));
            }
        }
        Ok(None)
    }

    /// `/device`: finds the authorization a signed-in user typed the code of. A code that
    /// does not wait for a decision counts against the user and the address.
    ///
    /// # Errors
    /// [`DeviceError`].
    pub async fn find_device_request(
        &self,
        who: &SignedIn,
        typed: &str,
        ctx: &Caller,
    ) -> Result<DeviceRequest, DeviceError> {
        let now = self.clock.now();
        let mut keys = vec![format!("devc:user:{}", who.user().id)];
        if let Some(ip) = ctx.ip.as_deref() {
            keys.push(format!("devc:{}", crate::throttle::address_key(ip)));
        }
        if let Some(retry_after) = self.wrong_code_wait(&keys, now).await? {
            return Err(DeviceError::Throttled { retry_after });
        }
        let found = match normalize_user_code(typed) {
            Some(code) => self.store.find_device_authorization(&code).await?,
            None => None,
        };
        let waiting = found.filter(|a| a.state == DeviceState::Pending && now < a.expires_at);
        let client = match &waiting {
            Some(a) => self.store.find_client(&a.client_id).await?,
            None => None,
        };
        let (Some(auth), Some(client)) = (waiting, client) else {
            let window = i64::try_from(WRONG_CODE_WINDOW.as_secs()).unwrap_or(i64::MAX);
            for key in &keys {
                self.store.record_throttle_failure(key, now, window).await?;
            }
            return Err(DeviceError::WrongCode);
        };
        let scopes = auth
            .scope
            .names()
            .filter(|s| *s != super::OPENID)
            .map(|s| ScopeInfo { name: s.to_owned(), description: describe_scope(s) })
            .collect();
        Ok(DeviceRequest { user_code: display_user_code(&auth.user_code), client, scopes })
    }

    /// `/device`'s Allow or Deny. An allowed app's consent is remembered, as after the code
    /// flow, so it is listed among the user's connected apps.
    ///
    /// # Errors
    /// [`DeviceError::WrongCode`] when the code no longer waits for a decision.
    pub async fn decide_device_request(
        &self,
        who: &SignedIn,
        typed: &str,
        allow: bool,
    ) -> Result<(), DeviceError> {
        let now = self.clock.now();
        let code = normalize_user_code(typed).ok_or(DeviceError::WrongCode)?;
        let auth = self.store.find_device_authorization(&code).await?.ok_or(DeviceError::WrongCode)?;
        let user = &who.user().id;
        let approved_by = allow.then(|| who.session().id.clone());
        if !self.store.decide_device_authorization(&code, user, approved_by.as_ref(), now).await? {
            return Err(DeviceError::WrongCode);
        }
        if allow {
            let granted = match self.store.find_consent(user, &auth.client_id).await? {
                Some(before) => before.union(&auth.scope),
                None => auth.scope.clone(),
            };
            self.store.save_consent(user, &auth.client_id, &granted, now).await?;
        }
        Ok(())
    }

    /// A device's poll at the token endpoint (RFC 8628 §3.4, §3.5).
    pub(super) async fn poll_device(
        &self,
        client: &ClientRecord,
        device_code: &str,
        ctx: &Caller,
    ) -> Result<OAuthTokenResponse, TokenRequestError> {
        let unknown =
            TokenRequestError::InvalidGrant { description: "The device code is not valid.", reason: None };
        if !has_grant(client, DEVICE_CODE_GRANT) {
            return Err(TokenRequestError::UnauthorizedClient("This client may not use the device flow."));
        }
        if !device_code.starts_with(DEVICE_CODE_PREFIX) {
            return Err(unknown);
        }
        let now = self.clock.now();
        let refresh_token = has_grant(client, "refresh_token").then(new_refresh_token);
        let refresh_key = refresh_token.as_ref().map(|t| RefreshTokenKey::of(t.expose_secret()));
        let lifetimes = SessionLifetimes::from(&self.settings);
        let (client_id, ctx_owned) = (client.client_id.clone(), ctx.clone());
        let is_public = client.is_public();
        let decide = Box::new(move |auth: &DeviceAuthorizationRecord, browser: Option<&SessionRecord>| {
            poll_decision(auth, browser, now, |auth, browser| {
                let mut session =
                    lifetimes.start(browser.user_id.clone(), client_id, auth.scope.clone(), &ctx_owned, now);
                // As strong as the sign-in that approved it; the device is not that browser,
                // so its session does not end with the browser's.
                session.amr.clone_from(&browser.amr);
                if !is_public {
                    session.dpop_jkt = None;
                }
                DevicePollDecision::Issue { session: Box::new(session), refresh_token: refresh_key }
            })
        });
        let hash = TokenHash::of(device_code);
        match self.store.poll_device_authorization(&hash, &client.client_id, now, decide).await? {
            DevicePoll::Unknown => Err(unknown),
            DevicePoll::Decided { decision: DevicePollDecision::Wait(why), .. } => {
                Err(TokenRequestError::DeviceWait(why))
            }
            DevicePoll::Decided { authorization, decision: DevicePollDecision::Issue { session, .. } } => {
                // `auth_time` is when the approving browser signed in, as for a code.
                let browser = match &authorization.browser_session_id {
                    Some(id) => self.store.find_session(id).await?,
                    None => None,
                };
                let auth_time = browser.map_or(now, |b| b.created_at);
                self.answer_new_session(&session, &[], auth_time, None, refresh_token, ctx, now).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_700_000_000);

    fn auth(state: DeviceState) -> DeviceAuthorizationRecord {
        DeviceAuthorizationRecord {
            device_code_hash: TokenHash::of("lkd_x"),
            user_code: "BCDFGHJK".into(),
            client_id: "tv".into(),
            scope: "openid".into(),
            created_at: NOW,
            expires_at: NOW.plus(DEVICE_CODE_TTL),
            interval_secs: 5,
            last_polled_at: None,
            state,
            user_id: Some("u".into()),
            browser_session_id: Some("web".into()),
            decided_at: None,
            session_id: None,
        }
    }

    fn browser() -> SessionRecord {
        let ctx = Caller { ip: None, user_agent: None, dpop: None };
        let lifetimes = SessionLifetimes { max: Duration::from_secs(3600), idle: Duration::from_secs(600) };
        let mut s = lifetimes.start("u".into(), "latchkey".into(), "profile".into(), &ctx, NOW);
        s.id = "web".into();
        s
    }

    fn opened(_: &DeviceAuthorizationRecord, b: &SessionRecord) -> DevicePollDecision {
        DevicePollDecision::Issue { session: Box::new(b.clone()), refresh_token: None }
    }

    fn decide(
        a: &DeviceAuthorizationRecord,
        b: Option<&SessionRecord>,
        now: Timestamp,
    ) -> DevicePollDecision {
        poll_decision(a, b, now, opened)
    }

    #[test]
    fn each_state_answers_as_rfc_8628_says() {
        let b = browser();
        let wait = DevicePollDecision::Wait;
        assert_eq!(decide(&auth(DeviceState::Pending), None, NOW), wait(DeviceWait::Pending));
        assert_eq!(decide(&auth(DeviceState::Denied), None, NOW), wait(DeviceWait::Denied));
        assert_eq!(decide(&auth(DeviceState::Used), Some(&b), NOW), wait(DeviceWait::Spent));
        assert!(matches!(
            decide(&auth(DeviceState::Approved), Some(&b), NOW),
            DevicePollDecision::Issue { .. }
        ));
        let late = NOW.plus(DEVICE_CODE_TTL);
        assert_eq!(decide(&auth(DeviceState::Approved), Some(&b), late), wait(DeviceWait::Expired));
        assert_eq!(decide(&auth(DeviceState::Pending), None, late), wait(DeviceWait::Expired));
    }

    #[test]
    fn a_poll_sooner_than_the_interval_is_told_to_slow_down() {
        let mut a = auth(DeviceState::Pending);
        a.last_polled_at = Some(NOW);
        assert_eq!(
            decide(&a, None, NOW.plus(Duration::from_secs(4))),
            DevicePollDecision::Wait(DeviceWait::SlowDown)
        );
        assert_eq!(
            decide(&a, None, NOW.plus(Duration::from_secs(5))),
            DevicePollDecision::Wait(DeviceWait::Pending)
        );
    }

    #[test]
    fn an_approval_dies_with_the_sign_in_that_gave_it() {
        let a = auth(DeviceState::Approved);
        let mut ended = browser();
        ended.revoked_at = Some(NOW);
        assert_eq!(decide(&a, Some(&ended), NOW), DevicePollDecision::Wait(DeviceWait::SignInEnded));
        assert_eq!(decide(&a, None, NOW), DevicePollDecision::Wait(DeviceWait::SignInEnded));
        let mut other = browser();
        other.user_id = "someone else".into();
        assert_eq!(decide(&a, Some(&other), NOW), DevicePollDecision::Wait(DeviceWait::SignInEnded));
    }

    #[test]
    fn user_codes_use_the_alphabet_and_read_back() {
        for _ in 0..500 {
            let code = new_user_code();
            assert_eq!(code.len(), 8);
            assert!(code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)), "{code}");
            let shown = display_user_code(&code);
            assert_eq!(shown.len(), 9);
            assert_eq!(normalize_user_code(&shown).as_deref(), Some(code.as_str()));
            assert_eq!(normalize_user_code(&shown.to_lowercase()).as_deref(), Some(code.as_str()));
        }
        for bad in ["", "BCDF-GHJ", "BCDF-GHJKL", "ABCD-EFGH", "BCDF-GHJ0", "BCDFGHJ\u{130}"] {
            assert_eq!(normalize_user_code(bad), None, "{bad}");
        }
        assert_eq!(normalize_user_code(" bcdf ghjk ").as_deref(), Some("BCDFGHJK"));
    }
}
