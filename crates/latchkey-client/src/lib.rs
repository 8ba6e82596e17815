//! `latchkey-client`: holds one Latchkey session for an app and makes its API calls
//! (SPEC 5.7).
//!
//! - **Single-flight refresh**: however many calls find the access token expired or are
//!   refused with `invalid_token` (`claims_stale`, `expired`), one refresh runs and the
//!   others wait for it and use its result.
//! - **Proactive refresh** a little before the access token expires.
//! - **Logout barrier**: [`Client::logout`] first raises the client's epoch and forgets the
//!   tokens, then revokes the session on the server. A token that arrives afterwards from a
//!   request begun before the barrier (a refresh or a login) is discarded and, for good
//!   measure, revoked on the server, so no late response can sign the user back in.
//! - **Re-authentication hook**: when the server refuses the refresh token (`logged_out`,
//!   `revoked_by_user`, `reuse_detected`, `idle_expired`, ...), the session is forgotten
//!   and the callback is called once with the [`ErrorReason`]; later calls fail with
//!   [`Error::NotSignedIn`] at once, without a request, so nothing loops.
//! - **The token goes only where the app said**: to the issuer's origin and the API origins
//!   listed with [`ClientBuilder::api_origin`], scheme, host and port compared exactly. A
//!   call to any other URL fails with [`Error::OriginNotAllowed`] before anything is sent
//!   (no refresh either), and the default HTTP client follows a redirect only within one
//!   origin, so a redirect cannot carry the token elsewhere.
//! - **DPoP** (SPEC 12) with [`ClientBuilder::dpop`]: each sign-in makes a new P-256 key,
//!   the session is bound to it, and every refresh and API call carries a fresh proof (with
//!   `ath` for API calls); a `use_dpop_nonce` answer is retried once with the server's
//!   nonce. The key lives in memory only, so a DPoP session is not persisted and does not
//!   outlive the process: without its key the server would take the next refresh for theft.
//! - Tokens live in memory; [`TokenStorage`] persists them when the app wants to.
//!   Tokens and the client secret never appear in `Debug` output, logs or error messages.
//!
//! Calls are made with reqwest, which this crate re-exports as [`latchkey_client::reqwest`]
//! (its documentation says why).
//!
//! ```no_run
//! # async fn run() -> Result<(), latchkey_client::Error> {
//! use latchkey_client::reqwest::Method;
//!
//! let client = latchkey_client::Client::builder("http://127.0.0.1:8080")
//!     .api_origin("http://127.0.0.1:8090")
//!     .on_reauth(|reason| eprintln!("please sign in again ({})", reason.as_str()))
//!     .build()?;
//! client.login("alice", "correct horse battery").await?;
//! let me = client.get("http://127.0.0.1:8090/whoami").await?;
//! println!("{}", me.text().await.map_err(latchkey_client::Error::transport)?);
//! let body = serde_json::json!({"text": "buy milk"});
//! client.request(Method::POST, "http://127.0.0.1:8090/notes", |r| r.json(&body)).await?;
//! // Refused before anything is sent: not an origin the client was built with.
//! let elsewhere = client.get("https://tracker.example/collect").await;
//! assert!(matches!(elsewhere, Err(latchkey_client::Error::OriginNotAllowed { .. })));
//! client.logout().await?;
//! # Ok(()) }
//! ```
//!
//! [`latchkey_client::reqwest`]: crate::reqwest

mod dpop;
mod error;
mod held;
mod origin;
mod storage;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use latchkey_dpop::ProofKey;
use latchkey_proto::RefreshToken;
use reqwest::StatusCode;
use serde_json::json;

use crate::dpop::authorized;
use crate::held::Tokens;
use crate::origin::AllowedOrigins;

/// The HTTP client library the calls are made with, re-exported on purpose.
///
/// [`Client::request`] takes a [`reqwest::Method`] and a closure over a
/// [`reqwest::RequestBuilder`], and answers a [`reqwest::Response`];
/// [`ClientBuilder::http_client`] takes a [`reqwest::Client`]. Wrapping them would mean a
/// second, smaller copy of reqwest's API for bodies (JSON, forms, streams), headers and
/// reading answers, for no gain: an app that calls an API already knows reqwest's. Using
/// this re-export, rather than a `reqwest` dependency of the app's own, guarantees the
/// version matches; a different one would give type errors that name two `reqwest`s.
pub use reqwest;

pub use error::Error;
pub use latchkey_proto::auth::ReceivedTokens;
pub use latchkey_proto::secret::ClientSecret;
pub use latchkey_proto::{ErrorCode, ErrorReason};
pub use storage::{MemoryStorage, TokenStorage};

/// The key under which the session is persisted in a [`TokenStorage`].
pub const STORAGE_KEY: &str = "latchkey.session";

/// How refresh and logout reach the server.
#[derive(Clone)]
enum Grant {
    /// The first-party API (`/auth/refresh`, `/auth/logout`).
    FirstParty,
    /// An app that got its tokens from the OAuth code flow (`/oauth/token`,
    /// `/oauth/revoke`), with its secret when it is a confidential client.
    OAuth { client_id: String, client_secret: Option<ClientSecret> },
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::FirstParty => f.write_str("FirstParty"),
            Self::OAuth { client_id, client_secret } => f
                .debug_struct("OAuth")
                .field("client_id", client_id)
                .field("client_secret", client_secret)
                .finish(),
        }
    }
}

/// What the app may know of the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The session id (first-party sessions).
    pub session_id: Option<String>,
    /// When the current access token expires.
    pub expires_at: SystemTime,
}

/// The wall clock: the client runs in the app's process, on its clock (the server's
/// injected clock is not reachable here).
#[expect(clippy::disallowed_methods, reason = "the app's own clock decides when its token expires")]
fn wall_now() -> SystemTime {
    SystemTime::now()
}

#[derive(Default)]
struct State {
    /// Raised by every logout: answers to requests begun under an older epoch are dropped.
    epoch: u64,
    tokens: Option<Tokens>,
    /// Whether the re-auth callback was called for the session that ended.
    reauth_reported: bool,
}

type ReauthCallback = Arc<dyn Fn(ErrorReason) + Send + Sync>;

struct Inner {
    /// The issuer URL without a trailing slash; endpoint paths are appended to it.
    base: String,
    origins: AllowedOrigins,
    http: reqwest::Client,
    grant: Grant,
    margin: Duration,
    state: Mutex<State>,
    /// Held while a refresh runs: the single flight.
    flight: tokio::sync::Mutex<()>,
    /// Orders writes to the storage with logout's removal.
    storage_order: tokio::sync::Mutex<()>,
    storage: Arc<dyn TokenStorage>,
    on_reauth: Option<ReauthCallback>,
    /// Whether sign-ins make a DPoP key.
    dpop: bool,
    /// The latest `DPoP-Nonce` of each origin (RFC 9449 §8, §9).
    nonces: Mutex<std::collections::HashMap<String, String>>,
}

/// Builds a [`Client`]. Nothing is checked until [`ClientBuilder::build`], which parses
/// the issuer and the API origins once.
pub struct ClientBuilder {
    base: String,
    api_origins: Vec<String>,
    http: Option<reqwest::Client>,
    grant: Grant,
    margin: Duration,
    storage: Option<Arc<dyn TokenStorage>>,
    on_reauth: Option<ReauthCallback>,
    dpop: bool,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base", &self.base)
            .field("api_origins", &self.api_origins)
            .field("grant", &self.grant)
            .field("margin", &self.margin)
            .field("dpop", &self.dpop)
            .finish_non_exhaustive()
    }
}

/// How many redirects the default HTTP client follows in one call, as reqwest's default.
const MAX_REDIRECTS: usize = 10;

/// The HTTP client used when the app gives none: reqwest's defaults, except that a redirect
/// is followed only to the origin it came from. reqwest drops `Authorization` on its own
/// when the host or port changes, but not when only the scheme does (`https://h:8443` to
/// `http://h:8443`), which would send the token in clear to another origin.
fn default_http() -> Result<reqwest::Client, Error> {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        let is_same_origin =
            attempt.previous().last().is_some_and(|from| from.origin() == attempt.url().origin());
        if !is_same_origin {
            attempt.stop()
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder().redirect(policy).build().map_err(Error::transport)
}

impl ClientBuilder {
    /// Also sends the access token to this API origin, `scheme://host[:port]` (a trailing
    /// `/` is fine; a path, query or user info is refused by [`Self::build`], since the
    /// token would not be kept to it). Call once per API. The issuer's origin is always
    /// allowed; every other origin is refused with [`Error::OriginNotAllowed`]. Scheme,
    /// host and port are compared exactly: `https://api.example.com` does not allow
    /// `http://api.example.com`, `https://api.example.com:8443` or
    /// `https://www.api.example.com`.
    #[must_use]
    pub fn api_origin(mut self, origin: impl Into<String>) -> Self {
        self.api_origins.push(origin.into());
        self
    }

    /// The HTTP client (timeouts, proxies, TLS roots are the app's choice).
    ///
    /// Its redirect policy is the app's too. reqwest's default follows redirects to other
    /// origins, dropping `Authorization` when the host or port changes but not when only the
    /// scheme does; give it [`reqwest::redirect::Policy::none`] (or one that stays within an
    /// origin, as the default client here does) to keep the token to the allowed origins
    /// through redirects as well.
    #[must_use]
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Refresh and revoke through the OAuth endpoints, for tokens from the code flow;
    /// a confidential client authenticates with HTTP Basic and its secret, a public one
    /// (`None`) sends its `client_id` in the form.
    #[must_use]
    pub fn oauth(mut self, client_id: impl Into<String>, client_secret: Option<ClientSecret>) -> Self {
        self.grant = Grant::OAuth { client_id: client_id.into(), client_secret };
        self
    }

    /// Binds each session to a key this client holds (DPoP, SPEC 12): see the crate docs.
    /// Sessions are then not persisted.
    #[must_use]
    pub fn dpop(mut self, on: bool) -> Self {
        self.dpop = on;
        self
    }

    /// How long before expiry the access token is refreshed (default 30 s).
    #[must_use]
    pub fn refresh_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// Where the session is persisted (default: memory only).
    #[must_use]
    pub fn storage(mut self, storage: Arc<dyn TokenStorage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Called once, with the reason (see [`Error::Reauth`]), when the session ends on the
    /// server and the user must sign in again. It runs on the task whose call found out, so
    /// it should return quickly (show a prompt; do not sign in from inside it).
    #[must_use]
    pub fn on_reauth(mut self, callback: impl Fn(ErrorReason) + Send + Sync + 'static) -> Self {
        self.on_reauth = Some(Arc::new(callback));
        self
    }

    /// The client.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] when the issuer is not an http(s) URL or an API origin is not a
    /// bare http(s) origin; [`Error::Transport`] when the default HTTP client cannot be made.
    pub fn build(self) -> Result<Client, Error> {
        let origins = AllowedOrigins::parse(&self.base, &self.api_origins)?;
        let http = match self.http {
            Some(http) => http,
            None => default_http()?,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                base: self.base.trim_end_matches('/').to_owned(),
                origins,
                http,
                grant: self.grant,
                margin: self.margin,
                state: Mutex::new(State::default()),
                flight: tokio::sync::Mutex::new(()),
                storage_order: tokio::sync::Mutex::new(()),
                storage: self.storage.unwrap_or_else(|| Arc::new(MemoryStorage::default())),
                on_reauth: self.on_reauth,
                dpop: self.dpop,
                nonces: Mutex::new(std::collections::HashMap::new()),
            }),
        })
    }
}

/// One app's Latchkey session. Cheap to clone; clones share the session.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.inner.base)
            .field("origins", &self.inner.origins.as_slice())
            .field("session", &self.session())
            .finish()
    }
}

/// What an error answer says.
struct ErrorAnswer {
    status: u16,
    error: Option<ErrorCode>,
    /// The `error_reason` as sent: text, so a reason newer than this client still arrives.
    reason: Option<String>,
    retry_after: Option<u64>,
}

async fn error_of(res: reqwest::Response) -> ErrorAnswer {
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let mut body: serde_json::Value = res.json().await.unwrap_or_default();
    let error = body.get_mut("error").and_then(|e| serde_json::from_value(e.take()).ok());
    let reason = body.get("error_reason").and_then(serde_json::Value::as_str).map(str::to_owned);
    ErrorAnswer { status, error, reason, retry_after }
}

/// What a refresh request came to.
enum Refreshed {
    Tokens(ReceivedTokens),
    /// `invalid_grant` (or no refresh token to present): the session is over, for this reason.
    Refused(ErrorReason),
}

/// The reason of an `invalid_grant` answer to a refresh (see [`Error::Reauth`] for why a
/// missing or unknown one is `unknown_token`).
fn refusal_reason(reason: Option<&str>) -> ErrorReason {
    match reason.map(|text| (text, ErrorReason::parse(text))) {
        Some((_, Some(known))) => known,
        Some((text, None)) => {
            tracing::warn!(
                error_reason = text,
                "the refresh was refused for a reason this client does not know"
            );
            ErrorReason::UnknownToken
        }
        None => ErrorReason::UnknownToken,
    }
}

impl Client {
    /// Starts building a client for the Latchkey server whose issuer URL is `issuer` (where
    /// `/auth/*` and `/oauth/*` are served). Add [`ClientBuilder::api_origin`] for every
    /// API the token is for.
    pub fn builder(issuer: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base: issuer.into(),
            api_origins: Vec::new(),
            http: None,
            grant: Grant::FirstParty,
            margin: Duration::from_secs(30),
            storage: None,
            on_reauth: None,
            dpop: false,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.inner.base)
    }

    /// The session, or `None` when signed out.
    pub fn session(&self) -> Option<Session> {
        self.state()
            .tokens
            .as_ref()
            .map(|t| Session { session_id: t.session_id.clone(), expires_at: t.expires_at })
    }

    /// Loads a session persisted in the storage; `true` when there was one.
    pub async fn resume(&self) -> bool {
        let epoch = self.state().epoch;
        let Some(text) = self.inner.storage.get(STORAGE_KEY).await else { return false };
        let Some(tokens) = Tokens::restored(&text) else { return false };
        let mut st = self.state();
        if st.epoch != epoch || st.tokens.is_some() {
            return st.tokens.is_some();
        }
        st.tokens = Some(tokens);
        st.reauth_reported = false;
        true
    }

    /// Signs in with the first-party API (SPEC 5.1 `POST /auth/login`).
    ///
    /// # Errors
    /// [`Error::InvalidCredentials`], [`Error::Throttled`], [`Error::NotSignedIn`] when a
    /// logout started meanwhile (the new session is revoked again), others.
    pub async fn login(&self, username: &str, password: &str) -> Result<Session, Error> {
        let epoch = self.state().epoch;
        let key = if self.inner.dpop {
            Some(Arc::new(ProofKey::generate_es256().map_err(|_| Error::Dpop)?))
        } else {
            None
        };
        let url = self.url("/auth/login");
        let body = json!({"username": username, "password": password});
        let res = self
            .send_proved(key.as_deref(), &reqwest::Method::POST, &url, None, || {
                self.inner.http.post(&url).json(&body)
            })
            .await?;
        if !res.status().is_success() {
            let e = error_of(res).await;
            return Err(match e.status {
                401 => Error::InvalidCredentials,
                429 => Error::Throttled(e.retry_after.unwrap_or(1)),
                status => Error::Server { status, error: e.error },
            });
        }
        let answer: ReceivedTokens = res.json().await.map_err(Error::transport)?;
        self.adopt(epoch, Tokens::from_answer(answer, None, key)).await
    }

    /// Takes over tokens the app obtained itself (the OAuth code flow's token answer).
    ///
    /// # Errors
    /// [`Error::NotSignedIn`] when a logout started meanwhile.
    pub async fn set_tokens(&self, answer: ReceivedTokens) -> Result<Session, Error> {
        let epoch = self.state().epoch;
        self.adopt(epoch, Tokens::from_answer(answer, None, None)).await
    }

    /// Installs tokens obtained under `epoch`, unless a logout came in between: then they
    /// are revoked instead.
    async fn adopt(&self, epoch: u64, tokens: Tokens) -> Result<Session, Error> {
        let is_current = {
            let mut st = self.state();
            let is_current = st.epoch == epoch;
            if is_current {
                st.tokens = Some(tokens.clone());
                st.reauth_reported = false;
            }
            is_current
        };
        if !is_current {
            self.revoke_on_server(&tokens).await;
            return Err(Error::NotSignedIn);
        }
        self.persist(epoch, &tokens).await;
        Ok(Session { session_id: tokens.session_id, expires_at: tokens.expires_at })
    }

    async fn persist(&self, epoch: u64, tokens: &Tokens) {
        // A bound session without its key is worthless, and the key stays in memory.
        if tokens.key.is_some() {
            return;
        }
        let _order = self.inner.storage_order.lock().await;
        let is_current = self.state().epoch == epoch;
        if is_current {
            self.inner.storage.set(STORAGE_KEY, tokens.stored()).await;
        }
    }

    /// Signs out: the barrier first (epoch raised, tokens forgotten, storage cleared), then
    /// the server revokes the session. Signed out locally even when the server cannot be
    /// reached.
    ///
    /// # Errors
    /// [`Error::Transport`] when the server could not be told (the session then ends on
    /// its own at its idle timeout; the tokens are gone from this client either way).
    pub async fn logout(&self) -> Result<(), Error> {
        let tokens = {
            let mut st = self.state();
            st.epoch += 1;
            st.tokens.take()
        };
        {
            let _order = self.inner.storage_order.lock().await;
            self.inner.storage.remove(STORAGE_KEY).await;
        }
        match tokens {
            Some(t) => self.revoke(&t).await,
            None => Ok(()),
        }
    }

    async fn revoke_on_server(&self, tokens: &Tokens) {
        if let Err(e) = self.revoke(tokens).await {
            tracing::warn!(error = %e, "could not revoke a session that arrived after logout");
        }
    }

    async fn revoke(&self, tokens: &Tokens) -> Result<(), Error> {
        let http = &self.inner.http;
        let req = match (&self.inner.grant, &tokens.refresh) {
            (Grant::FirstParty, Some(rt)) => {
                http.post(self.url("/auth/logout")).json(&json!({"refresh_token": rt.expose_secret()}))
            }
            (Grant::FirstParty, None) => {
                let url = self.url("/auth/logout");
                let access = &tokens.access;
                let res = self
                    .send_proved(tokens.key.as_deref(), &reqwest::Method::POST, &url, Some(access), || {
                        authorized(http.post(&url), access, tokens.key.is_some())
                    })
                    .await?;
                return if res.status().is_success() {
                    Ok(())
                } else {
                    let e = error_of(res).await;
                    Err(Error::Server { status: e.status, error: e.error })
                };
            }
            (Grant::OAuth { client_id, client_secret }, rt) => {
                let token = rt.as_ref().map_or(tokens.access.as_str(), RefreshToken::expose_secret);
                self.oauth_post("/oauth/revoke", vec![("token", token)], client_id, client_secret.as_ref())
            }
        };
        let res = req.send().await.map_err(Error::transport)?;
        if res.status().is_success() {
            Ok(())
        } else {
            let e = error_of(res).await;
            Err(Error::Server { status: e.status, error: e.error })
        }
    }

    /// A current access token: the held one, refreshed first when it expires within the
    /// margin (single flight). For calls made by other means, which skip the origin check of
    /// [`Self::request`]: send it only to the issuer or the app's own APIs.
    ///
    /// # Errors
    /// [`Error::NotSignedIn`], [`Error::Reauth`], transport errors.
    pub async fn access_token(&self) -> Result<String, Error> {
        let (access, due) = {
            let st = self.state();
            let t = st.tokens.as_ref().ok_or(Error::NotSignedIn)?;
            (t.access.clone(), Instant::now() + self.inner.margin >= t.expires)
        };
        if due { self.refresh_once(None).await } else { Ok(access) }
    }

    /// Refreshes now; joins a refresh already in flight instead of starting another.
    ///
    /// # Errors
    /// [`Error::NotSignedIn`], [`Error::Reauth`], transport errors.
    pub async fn refresh(&self) -> Result<Session, Error> {
        let held = self.state().tokens.as_ref().map(|t| t.access.clone()).ok_or(Error::NotSignedIn)?;
        self.refresh_once(Some(&held)).await?;
        self.session().ok_or(Error::NotSignedIn)
    }

    /// The single flight: `stale` is the access token the caller found wanting; if another
    /// refresh replaced it while this one waited, its result is used instead. Without
    /// `stale`, the proactive case: refresh only if still due.
    async fn refresh_once(&self, stale: Option<&str>) -> Result<String, Error> {
        let _flight = self.inner.flight.lock().await;
        // The token and its key from one look at the state: a sign-in in between must not
        // pair one session's token with another's key (the server would take it for theft).
        let (epoch, refresh, key) = {
            let st = self.state();
            let t = st.tokens.as_ref().ok_or(Error::NotSignedIn)?;
            let is_replaced = stale.is_some_and(|s| s != t.access);
            let is_due = Instant::now() + self.inner.margin >= t.expires;
            if is_replaced || (stale.is_none() && !is_due) {
                return Ok(t.access.clone());
            }
            (st.epoch, t.refresh.clone(), t.key.clone())
        };
        let outcome = match &refresh {
            Some(rt) => self.post_refresh(rt, key.as_deref()).await?,
            // Without a refresh token the session cannot outlive its access token.
            None => Refreshed::Refused(ErrorReason::SessionExpired),
        };
        match outcome {
            Refreshed::Tokens(answer) => {
                let tokens = Tokens::from_answer(answer, refresh, key);
                let access = tokens.access.clone();
                self.adopt(epoch, tokens).await?;
                Ok(access)
            }
            // The session stays, waiting for the user (see `Client::step_up`).
            Refreshed::Refused(ErrorReason::StepUpRequired) => Err(Error::StepUpRequired),
            Refreshed::Refused(reason) => {
                let callback = {
                    let mut st = self.state();
                    if st.epoch != epoch {
                        return Err(Error::NotSignedIn);
                    }
                    st.tokens = None;
                    st.epoch += 1;
                    let first = !st.reauth_reported;
                    st.reauth_reported = true;
                    first.then(|| self.inner.on_reauth.clone()).flatten()
                };
                {
                    let _order = self.inner.storage_order.lock().await;
                    self.inner.storage.remove(STORAGE_KEY).await;
                }
                if let Some(cb) = callback {
                    cb(reason);
                }
                Err(Error::Reauth(reason))
            }
        }
    }

    /// A form `POST` to an OAuth endpoint as the app: HTTP Basic with its secret
    /// (`client_secret_basic`), or its `client_id` in the form when it is a public client.
    fn oauth_post<'a>(
        &self,
        path: &str,
        mut form: Vec<(&'a str, &'a str)>,
        client_id: &'a str,
        client_secret: Option<&ClientSecret>,
    ) -> reqwest::RequestBuilder {
        let req = self.inner.http.post(self.url(path));
        let req = match client_secret {
            Some(secret) => {
                req.basic_auth(form_urlencoded(client_id), Some(form_urlencoded(secret.expose_secret())))
            }
            None => {
                form.push(("client_id", client_id));
                req
            }
        };
        req.form(&form)
    }

    async fn post_refresh(&self, rt: &RefreshToken, key: Option<&ProofKey>) -> Result<Refreshed, Error> {
        let http = &self.inner.http;
        let path = match &self.inner.grant {
            Grant::FirstParty => "/auth/refresh",
            Grant::OAuth { .. } => "/oauth/token",
        };
        let url = self.url(path);
        let build = || match &self.inner.grant {
            Grant::FirstParty => http.post(&url).json(&json!({"refresh_token": rt.expose_secret()})),
            Grant::OAuth { client_id, client_secret } => self.oauth_post(
                path,
                vec![("grant_type", "refresh_token"), ("refresh_token", rt.expose_secret())],
                client_id,
                client_secret.as_ref(),
            ),
        };
        let res = self.send_proved(key, &reqwest::Method::POST, &url, None, build).await?;
        if res.status().is_success() {
            return res.json().await.map(Refreshed::Tokens).map_err(Error::transport);
        }
        let e = error_of(res).await;
        if e.status == 400 && e.error == Some(ErrorCode::InvalidGrant) {
            return Ok(Refreshed::Refused(refusal_reason(e.reason.as_deref())));
        }
        Err(Error::Server { status: e.status, error: e.error })
    }

    /// Continues a session the server stopped with `step_up_required` ([`Error::StepUpRequired`]):
    /// the user's password, with the session's tokens (`POST /auth/step-up`, SPEC 12).
    ///
    /// # Errors
    /// [`Error::InvalidCredentials`], [`Error::Throttled`], [`Error::NotSignedIn`],
    /// [`Error::Reauth`] when the session ended meanwhile, others.
    pub async fn step_up(&self, password: &str) -> Result<Session, Error> {
        let _flight = self.inner.flight.lock().await;
        let (epoch, tokens) = {
            let st = self.state();
            (st.epoch, st.tokens.clone().ok_or(Error::NotSignedIn)?)
        };
        let refresh = tokens.refresh.clone().ok_or(Error::NotSignedIn)?;
        let url = self.url("/auth/step-up");
        let body = json!({"refresh_token": refresh.expose_secret(), "password": password});
        let access = &tokens.access;
        let res = self
            .send_proved(tokens.key.as_deref(), &reqwest::Method::POST, &url, Some(access), || {
                authorized(self.inner.http.post(&url).json(&body), access, tokens.key.is_some())
            })
            .await?;
        if !res.status().is_success() {
            let e = error_of(res).await;
            return Err(match (e.status, e.error) {
                (401, Some(ErrorCode::InvalidCredentials)) => Error::InvalidCredentials,
                (429, _) => Error::Throttled(e.retry_after.unwrap_or(1)),
                (400, Some(ErrorCode::InvalidGrant)) => Error::Reauth(refusal_reason(e.reason.as_deref())),
                (status, error) => Error::Server { status, error },
            });
        }
        let answer: ReceivedTokens = res.json().await.map_err(Error::transport)?;
        self.adopt(epoch, Tokens::from_answer(answer, Some(refresh), tokens.key)).await
    }

    /// Calls an API with the access token: `method url`, with whatever `build` adds (a body,
    /// headers, a query) to the request reqwest starts. On a `401 invalid_token`
    /// (`claims_stale`, `expired`, ...) it refreshes once (single flight) and retries once,
    /// so `build` is called once per attempt: a retried call is built again rather than
    /// copied, which works for every kind of body.
    ///
    /// The token goes only to the issuer's origin and the origins given to
    /// [`ClientBuilder::api_origin`]. Any other URL is refused before anything happens:
    /// no request, no refresh, and `build` is not called.
    ///
    /// # Errors
    /// [`Error::OriginNotAllowed`], [`Error::InvalidUrl`], [`Error::NotSignedIn`],
    /// [`Error::Reauth`], [`Error::Transport`]. Other answers, error statuses included, are
    /// the caller's to read.
    pub async fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Error> {
        // A RequestBuilder's URL cannot be changed afterwards, so the URL checked here is
        // the one the request goes to, whatever `build` does.
        let url = self.inner.origins.admit(url)?;
        let access = self.access_token().await?;
        let res = self.call(&method, &url, &access, &build).await?;
        if res.status() != StatusCode::UNAUTHORIZED || !is_invalid_token(&res) {
            return Ok(res);
        }
        let access = self.refresh_once(Some(&access)).await?;
        self.call(&method, &url, &access, &build).await
    }

    /// One attempt of [`Self::request`]: the token as `Bearer`, or as `DPoP` with a proof.
    async fn call(
        &self,
        method: &reqwest::Method,
        url: &reqwest::Url,
        access: &str,
        build: &impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Error> {
        let key = self.state().tokens.as_ref().and_then(|t| t.key.clone());
        let is_bound = key.is_some();
        self.send_proved(key.as_deref(), method, url.as_str(), Some(access), || {
            authorized(build(self.inner.http.request(method.clone(), url.clone())), access, is_bound)
        })
        .await
    }

    /// `GET url` through [`Self::request`].
    ///
    /// # Errors
    /// As [`Self::request`].
    pub async fn get(&self, url: &str) -> Result<reqwest::Response, Error> {
        self.request(reqwest::Method::GET, url, |r| r).await
    }
}

/// RFC 6749 §2.3.1: the id and secret in HTTP Basic are each form-urlencoded first (the
/// server decodes them), so a `:` or `+` in either survives. Generated ids and secrets are
/// base64url and pass through unchanged, without a copy.
fn form_urlencoded(value: &str) -> std::borrow::Cow<'_, str> {
    let is_plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'.' | b'_');
    if value.bytes().all(is_plain) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        match b {
            b if is_plain(b) => out.push(char::from(b)),
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Whether a 401 is about the token (RFC 6750 `error="invalid_token"`).
fn is_invalid_token(res: &reqwest::Response) -> bool {
    res.headers()
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("error=\"invalid_token\""))
}
