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
//!   and the callback is called once with the `error_reason`; later calls fail with
//!   [`Error::NotSignedIn`] at once, without a request, so nothing loops.
//! - Tokens live in memory; [`TokenStorage`] persists them when the app wants to.
//!   Tokens never appear in `Debug` output, logs or error messages.
//!
//! ```no_run
//! # async fn run() -> Result<(), latchkey_client::Error> {
//! let client = latchkey_client::Client::builder("http://127.0.0.1:8080")
//!     .on_reauth(|reason| eprintln!("please sign in again ({reason})"))
//!     .build();
//! client.login("alice", "correct horse battery").await?;
//! let me = client.get("http://127.0.0.1:8090/whoami").await?;
//! println!("{}", me.text().await.map_err(latchkey_client::Error::transport)?);
//! client.logout().await?;
//! # Ok(()) }
//! ```

mod storage;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use latchkey_proto::RefreshToken;
use latchkey_proto::auth::ReceivedTokens;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

pub use storage::{MemoryStorage, TokenStorage};

/// The key under which the session is persisted in a [`TokenStorage`].
pub const STORAGE_KEY: &str = "latchkey.session";

/// Why a call failed. Never carries a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No session: never signed in, signed out, or ended (after the re-auth callback).
    #[error("not signed in")]
    NotSignedIn,
    /// The server ended the session; the re-auth callback was called with this reason.
    #[error("the session ended ({0}); sign in again")]
    Reauth(String),
    /// Wrong username or password.
    #[error("wrong username or password")]
    InvalidCredentials,
    /// Too many failed sign-ins; retry after this many seconds.
    #[error("too many attempts; retry after {0} s")]
    Throttled(u64),
    /// Another error answer from the server.
    #[error("the server answered {status}: {error}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The `error` code.
        error: String,
    },
    /// The request did not complete (network, timeout, unreadable answer).
    #[error("request failed: {0}")]
    Transport(String),
}

impl Error {
    /// A transport error, without the URL (which is the app's, but need not be logged).
    pub fn transport(e: reqwest::Error) -> Self {
        Self::Transport(e.without_url().to_string())
    }
}

/// How refresh and logout reach the server.
#[derive(Clone)]
pub enum Grant {
    /// The first-party API (`/auth/refresh`, `/auth/logout`).
    FirstParty,
    /// An app that got its tokens from the OAuth code flow (`/oauth/token`,
    /// `/oauth/revoke`).
    OAuth {
        /// The client id.
        client_id: String,
        /// The client secret, for confidential clients.
        client_secret: Option<String>,
    },
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::FirstParty => f.write_str("FirstParty"),
            Self::OAuth { client_id, .. } => {
                f.debug_struct("OAuth").field("client_id", client_id).finish_non_exhaustive()
            }
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

/// The held tokens.
#[derive(Clone)]
struct Tokens {
    access: String,
    refresh: Option<RefreshToken>,
    session_id: Option<String>,
    expires_at: SystemTime,
    /// The same moment on the monotonic clock, for refresh decisions.
    expires: Instant,
}

/// The persisted form.
#[derive(Serialize, Deserialize)]
struct Stored {
    access_token: String,
    refresh_token: Option<String>,
    session_id: Option<String>,
    expires_at: u64,
}

/// The wall clock: the client runs in the app's process, on its clock (the server's
/// injected clock is not reachable here).
#[expect(clippy::disallowed_methods, reason = "the app's own clock decides when its token expires")]
fn wall_now() -> SystemTime {
    SystemTime::now()
}

impl Tokens {
    fn from_answer(t: ReceivedTokens, keep_refresh: Option<RefreshToken>) -> Self {
        let lifetime = Duration::from_secs(t.expires_in);
        Self {
            access: t.access_token,
            refresh: t.refresh_token.or(keep_refresh),
            session_id: t.session_id,
            expires_at: wall_now() + lifetime,
            expires: Instant::now() + lifetime,
        }
    }

    fn stored(&self) -> String {
        let expires_at = self.expires_at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let s = Stored {
            access_token: self.access.clone(),
            refresh_token: self.refresh.as_ref().map(|r| r.expose_secret().to_owned()),
            session_id: self.session_id.clone(),
            expires_at,
        };
        serde_json::to_string(&s).unwrap_or_default()
    }

    fn restored(text: &str) -> Option<Self> {
        let s: Stored = serde_json::from_str(text).ok()?;
        let expires_at = SystemTime::UNIX_EPOCH + Duration::from_secs(s.expires_at);
        let left = expires_at.duration_since(wall_now()).unwrap_or_default();
        Some(Self {
            access: s.access_token,
            refresh: s.refresh_token.map(RefreshToken::new),
            session_id: s.session_id,
            expires_at,
            expires: Instant::now() + left,
        })
    }
}

#[derive(Default)]
struct State {
    /// Raised by every logout: answers to requests begun under an older epoch are dropped.
    epoch: u64,
    tokens: Option<Tokens>,
    /// Whether the re-auth callback was called for the session that ended.
    reauth_reported: bool,
}

type ReauthCallback = Arc<dyn Fn(&str) + Send + Sync>;

struct Inner {
    base: String,
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
}

/// Builds a [`Client`].
pub struct ClientBuilder {
    base: String,
    http: Option<reqwest::Client>,
    grant: Grant,
    margin: Duration,
    storage: Option<Arc<dyn TokenStorage>>,
    on_reauth: Option<ReauthCallback>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base", &self.base)
            .field("grant", &self.grant)
            .field("margin", &self.margin)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// The HTTP client (timeouts, proxies, TLS roots are the app's choice).
    #[must_use]
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Refresh and revoke through the OAuth endpoints, for tokens from the code flow.
    #[must_use]
    pub fn oauth(mut self, client_id: impl Into<String>, client_secret: Option<String>) -> Self {
        self.grant = Grant::OAuth { client_id: client_id.into(), client_secret };
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

    /// Called once, with the `error_reason`, when the session ends on the server and the
    /// user must sign in again.
    #[must_use]
    pub fn on_reauth(mut self, callback: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.on_reauth = Some(Arc::new(callback));
        self
    }

    /// The client.
    pub fn build(self) -> Client {
        Client {
            inner: Arc::new(Inner {
                base: self.base.trim_end_matches('/').to_owned(),
                http: self.http.unwrap_or_default(),
                grant: self.grant,
                margin: self.margin,
                state: Mutex::new(State::default()),
                flight: tokio::sync::Mutex::new(()),
                storage_order: tokio::sync::Mutex::new(()),
                storage: self.storage.unwrap_or_else(|| Arc::new(MemoryStorage::default())),
                on_reauth: self.on_reauth,
            }),
        }
    }
}

/// One app's Latchkey session. Cheap to clone; clones share the session.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.inner.base).field("session", &self.session()).finish()
    }
}

/// The `error` and `error_reason` of an error answer.
async fn error_of(res: reqwest::Response) -> (u16, String, Option<String>, Option<u64>) {
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body: serde_json::Value = res.json().await.unwrap_or_default();
    let text = |k: &str| body.get(k).and_then(serde_json::Value::as_str).map(str::to_owned);
    (status, text("error").unwrap_or_default(), text("error_reason"), retry_after)
}

/// What a refresh request came to.
enum Refreshed {
    Tokens(ReceivedTokens),
    /// `invalid_grant` (or an unusable token): the session is over, for this reason.
    Refused(String),
}

impl Client {
    /// Starts building a client for the Latchkey server at `base_url`.
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base: base_url.into(),
            http: None,
            grant: Grant::FirstParty,
            margin: Duration::from_secs(30),
            storage: None,
            on_reauth: None,
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
        let res = self
            .inner
            .http
            .post(self.url("/auth/login"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .map_err(Error::transport)?;
        if !res.status().is_success() {
            let (status, error, _, retry_after) = error_of(res).await;
            return Err(match (status, error.as_str()) {
                (401, _) => Error::InvalidCredentials,
                (429, _) => Error::Throttled(retry_after.unwrap_or(1)),
                _ => Error::Server { status, error },
            });
        }
        let answer: ReceivedTokens = res.json().await.map_err(Error::transport)?;
        self.adopt(epoch, Tokens::from_answer(answer, None)).await
    }

    /// Takes over tokens the app obtained itself (the OAuth code flow's token answer).
    ///
    /// # Errors
    /// [`Error::NotSignedIn`] when a logout started meanwhile.
    pub async fn set_tokens(&self, answer: ReceivedTokens) -> Result<Session, Error> {
        let epoch = self.state().epoch;
        self.adopt(epoch, Tokens::from_answer(answer, None)).await
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
            (Grant::FirstParty, None) => http.post(self.url("/auth/logout")).bearer_auth(&tokens.access),
            (Grant::OAuth { client_id, client_secret }, rt) => {
                let token = rt.as_ref().map_or(tokens.access.as_str(), RefreshToken::expose_secret);
                self.oauth_post("/oauth/revoke", vec![("token", token)], client_id, client_secret.as_deref())
            }
        };
        let res = req.send().await.map_err(Error::transport)?;
        if res.status().is_success() {
            Ok(())
        } else {
            let (status, error, _, _) = error_of(res).await;
            Err(Error::Server { status, error })
        }
    }

    /// A current access token: the held one, refreshed first when it expires within the
    /// margin (single flight).
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
        let (epoch, refresh) = {
            let st = self.state();
            let t = st.tokens.as_ref().ok_or(Error::NotSignedIn)?;
            let is_replaced = stale.is_some_and(|s| s != t.access);
            let is_due = Instant::now() + self.inner.margin >= t.expires;
            if is_replaced || (stale.is_none() && !is_due) {
                return Ok(t.access.clone());
            }
            (st.epoch, t.refresh.clone())
        };
        let outcome = match &refresh {
            Some(rt) => self.post_refresh(rt).await?,
            None => Refreshed::Refused("no_refresh_token".to_owned()),
        };
        match outcome {
            Refreshed::Tokens(answer) => {
                let tokens = Tokens::from_answer(answer, refresh);
                let access = tokens.access.clone();
                self.adopt(epoch, tokens).await?;
                Ok(access)
            }
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
                    cb(&reason);
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
        client_secret: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let req = self.inner.http.post(self.url(path));
        let req = match client_secret {
            Some(secret) => req.basic_auth(client_id, Some(secret)),
            None => {
                form.push(("client_id", client_id));
                req
            }
        };
        req.form(&form)
    }

    async fn post_refresh(&self, rt: &RefreshToken) -> Result<Refreshed, Error> {
        let http = &self.inner.http;
        let req = match &self.inner.grant {
            Grant::FirstParty => {
                http.post(self.url("/auth/refresh")).json(&json!({"refresh_token": rt.expose_secret()}))
            }
            Grant::OAuth { client_id, client_secret } => self.oauth_post(
                "/oauth/token",
                vec![("grant_type", "refresh_token"), ("refresh_token", rt.expose_secret())],
                client_id,
                client_secret.as_deref(),
            ),
        };
        let res = req.send().await.map_err(Error::transport)?;
        if res.status().is_success() {
            return res.json().await.map(Refreshed::Tokens).map_err(Error::transport);
        }
        let (status, error, reason, _) = error_of(res).await;
        if status == 400 && error == "invalid_grant" {
            return Ok(Refreshed::Refused(reason.unwrap_or_else(|| "unknown_token".to_owned())));
        }
        Err(Error::Server { status, error })
    }

    /// Sends a request built by `build` with the access token; on a `401 invalid_token`
    /// (`claims_stale`, `expired`, ...) refreshes once (single flight) and retries once.
    /// `build` is called once per attempt.
    ///
    /// # Errors
    /// [`Error::NotSignedIn`], [`Error::Reauth`], transport errors. Other answers, error
    /// statuses included, are the caller's.
    pub async fn send(
        &self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Error> {
        let access = self.access_token().await?;
        let res = build(&self.inner.http).bearer_auth(&access).send().await.map_err(Error::transport)?;
        if res.status() != StatusCode::UNAUTHORIZED || !is_invalid_token(&res) {
            return Ok(res);
        }
        let access = self.refresh_once(Some(&access)).await?;
        build(&self.inner.http).bearer_auth(&access).send().await.map_err(Error::transport)
    }

    /// `GET url` through [`Self::send`].
    ///
    /// # Errors
    /// As [`Self::send`].
    pub async fn get(&self, url: &str) -> Result<reqwest::Response, Error> {
        self.send(|http| http.get(url)).await
    }
}

/// Whether a 401 is about the token (RFC 6750 `error="invalid_token"`).
fn is_invalid_token(res: &reqwest::Response) -> bool {
    res.headers()
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("error=\"invalid_token\""))
}
