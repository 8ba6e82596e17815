//! Test support: [`TestServer`] starts the real server (the binary's own builder) on a free
//! port with a fresh SQLite file and a [`ManualClock`], so tests talk real HTTP and advance
//! time instead of sleeping. It also captures every log line of the test process, so tests
//! can prove no secret is ever logged.

// Test support fails loudly on purpose: a broken fixture should stop the test at once.
#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test support: failing loudly is the point"
)]

pub mod html;
pub mod logout_receiver;
pub mod process;
pub mod smtp;

use std::io::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use latchkey::config::{Config, Flags};
use latchkey::server::Server;
use latchkey_core::{Clock, Latchkey, Store, Timestamp};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// A clock tests move by hand.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// Starts at the real current time, so tokens look normal to outside verifiers.
    pub fn new() -> Self {
        Self(AtomicI64::new(latchkey_core::SystemClock.now().0))
    }

    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(i64::try_from(by.as_secs()).unwrap_or(i64::MAX), Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// Every log line written by the test process.
static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber (at TRACE, for every crate but the tests' own HTTP
/// client's cookie jar, which logs the cookies the tests' browsers receive) once per
/// process.
fn capture_logs() -> Arc<Mutex<Vec<u8>>> {
    Arc::clone(LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = LogSink(Arc::clone(&buf));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace,cookie_store=off"))
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .try_init();
        buf
    }))
}

/// Everything logged so far by this test process.
pub fn captured_logs() -> String {
    let buf = capture_logs();
    let bytes = buf.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The real server on a free port with a fresh database.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The running service (for its store and metrics).
    pub service: Arc<Latchkey>,
    /// The server's clock.
    pub clock: Arc<ManualClock>,
    /// The database URL (for CLI calls and direct inspection).
    pub database_url: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// Where PostgreSQL-backed test servers create their databases: the database `test` of the
/// local server unless `LATCHKEY_TEST_POSTGRES` names another (`.ci/run` starts PostgreSQL).
pub fn pg_admin_url() -> String {
    std::env::var("LATCHKEY_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Creates an empty PostgreSQL database (`latchkey_t_…`, left for the machine's cleanup:
/// `.ci/run` drops them first) and returns its URL.
///
/// # Panics
/// When PostgreSQL cannot be reached.
pub async fn fresh_pg_database() -> String {
    use sqlx::Connection as _;
    let admin = pg_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL must be running for LATCHKEY_TEST_BACKEND=postgres (see .ci/run)");
    let name = format!("latchkey_t_{}", latchkey_core::crypto::new_id().to_lowercase().replace('-', "_"));
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create database");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b).to_owned();
    format!("{base}/{name}")
}

/// The issuer every test server uses.
pub const ISSUER: &str = "http://latchkey.test";

/// The `mail_from` of [`deliver_mail_to`].
pub const MAIL_FROM: &str = "Latchkey <no-reply@latchkey.test>";

/// Sets a test server's mail delivery to `smtp_url` (a [`smtp::SmtpSink`]'s URL), from
/// [`MAIL_FROM`]: use it in [`TestServer::start_with`].
pub fn deliver_mail_to(config: &mut Config, smtp_url: &str) {
    let mail = latchkey::config::MailConfig::new(smtp_url, MAIL_FROM, None).expect("a valid smtp_url");
    config.mail = Some(mail);
}

impl TestServer {
    /// Starts a server with default settings.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after letting the test adjust its configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_on(None, adjust).await
    }

    /// Starts a server whose issuer is `http://localhost:PORT`, its own address by name:
    /// passkeys need an issuer with a domain name (SPEC 11), and browsers allow WebAuthn on
    /// `localhost` over plain http.
    pub async fn start_on_localhost(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_at_own_address("localhost", adjust).await
    }

    /// Starts a server whose issuer is its own address, `http://127.0.0.1:PORT`: for clients
    /// that sign the URLs they call (DPoP's `htu`, SPEC 12) and so must reach the server at
    /// its issuer.
    pub async fn start_reachable(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_at_own_address("127.0.0.1", adjust).await
    }

    /// A server on 127.0.0.1 whose issuer is `http://HOST:PORT`. The port is found free
    /// first and bound again by the server, which can lose a race with another process only
    /// in theory.
    async fn start_at_own_address(host: &str, adjust: impl FnOnce(&mut Config)) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Self::start_with(|c| {
            c.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            c.settings.issuer = format!("http://{host}:{port}");
            c.settings.audience = c.settings.issuer.clone();
            adjust(c);
        })
        .await
    }

    /// The issuer this server publishes.
    pub fn issuer(&self) -> &str {
        &self.service.settings().issuer
    }

    /// Starts a server on `database_url` (another node of a shared PostgreSQL database),
    /// or, with `None`, on a fresh database: a SQLite file, or a new PostgreSQL database
    /// when `LATCHKEY_TEST_BACKEND=postgres`.
    pub async fn start_on(database_url: Option<&str>, adjust: impl FnOnce(&mut Config)) -> Self {
        capture_logs();
        let dir = tempfile::tempdir().expect("temp dir");
        let database_url = match (database_url, std::env::var("LATCHKEY_TEST_BACKEND").as_deref()) {
            (Some(url), _) => url.to_owned(),
            (None, Ok("postgres")) => fresh_pg_database().await,
            (None, _) => format!("sqlite://{}", dir.path().join("latchkey.db").display()),
        };
        let flags = Flags {
            listen: Some("127.0.0.1:0".into()),
            issuer: Some(ISSUER.into()),
            database_url: Some(database_url.clone()),
        };
        let mut config = Config::load_with(None, &flags, &|_| None).expect("config");
        // One hash at a time keeps the suite's many parallel servers from fighting over the
        // two cores; it changes no behaviour.
        config.settings.password_hash_concurrency = 1;
        // Every test client registers from 127.0.0.1, many users a test; the per-address
        // registration limit has tests of its own, which set it back.
        config.settings.throttle.registration_attempts = 100_000;
        adjust(&mut config);
        let clock = Arc::new(ManualClock::new());
        let server = Server::bind(&config, Arc::clone(&clock) as Arc<dyn Clock>, Duration::from_millis(200))
            .await
            .expect("bind test server");
        let addr = server.local_addr().expect("addr");
        let service = Arc::clone(server.service());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = server
                .run(async {
                    let _ = rx.await;
                })
                .await;
        });
        Self {
            base: format!("http://{addr}"),
            service,
            clock,
            database_url,
            shutdown: Some(tx),
            task,
            _dir: dir,
        }
    }

    /// An absolute URL for a path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The store under the server.
    pub fn store(&self) -> &Arc<dyn Store> {
        self.service.store()
    }

    /// Runs a CLI command against this server's database, in-process; returns stdout.
    pub async fn cli(&self, args: &[&str], stdin: &str) -> anyhow::Result<String> {
        let mut argv = vec!["latchkey", "--database-url", &self.database_url];
        argv.extend_from_slice(args);
        let mut input = std::io::Cursor::new(stdin.as_bytes().to_vec());
        let mut out = Vec::new();
        latchkey::cli::run_args(&argv, &mut input, &mut out).await?;
        Ok(String::from_utf8(out)?)
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP client like a browser's: a cookie store, no redirects followed.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .user_agent("latchkey-tests/1")
        .build()
        .expect("client")
}

/// A parsed answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Raw body.
    pub text: String,
    /// Body as JSON (`Null` when it is not JSON).
    pub json: Value,
}

impl Answer {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A string field of the JSON body.
    pub fn str(&self, field: &str) -> &str {
        self.json[field].as_str().unwrap_or_else(|| panic!("no string field {field:?} in {}", self.text))
    }
}

/// Sends a request and reads the whole answer.
pub async fn send(req: reqwest::RequestBuilder) -> Answer {
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer { status, headers, text, json }
}

/// Registers a user on the server at `base`; panics unless it succeeds.
pub async fn register_at(base: &str, client: &reqwest::Client, username: &str, password: &str) -> Answer {
    let body = json!({"username": username, "password": password});
    let a = send(client.post(format!("{base}/auth/register")).json(&body)).await;
    assert_eq!(a.status, 201, "register: {}", a.text);
    a
}

/// Logs in on the server at `base`; panics unless it succeeds.
pub async fn login_at(base: &str, client: &reqwest::Client, username: &str, password: &str) -> Answer {
    let body = json!({"username": username, "password": password});
    let a = send(client.post(format!("{base}/auth/login")).json(&body)).await;
    assert_eq!(a.status, 200, "login: {}", a.text);
    a
}

/// Refreshes on the server at `base`.
pub async fn refresh_at(base: &str, client: &reqwest::Client, refresh_token: &str) -> Answer {
    send(client.post(format!("{base}/auth/refresh")).json(&json!({"refresh_token": refresh_token}))).await
}

/// Conveniences for the first-party API.
impl TestServer {
    /// `POST` JSON.
    pub async fn post(&self, client: &reqwest::Client, path: &str, body: Value) -> Answer {
        send(client.post(self.url(path)).json(&body)).await
    }

    /// `POST` JSON with a Bearer token.
    pub async fn post_auth(&self, client: &reqwest::Client, path: &str, token: &str, body: Value) -> Answer {
        send(client.post(self.url(path)).bearer_auth(token).json(&body)).await
    }

    /// `GET` with a Bearer token.
    pub async fn get_auth(&self, client: &reqwest::Client, path: &str, token: &str) -> Answer {
        send(client.get(self.url(path)).bearer_auth(token)).await
    }

    /// Registers a user; panics unless it succeeds.
    pub async fn register(&self, client: &reqwest::Client, username: &str, password: &str) -> Answer {
        register_at(&self.base, client, username, password).await
    }

    /// Logs in; panics unless it succeeds.
    pub async fn login(&self, client: &reqwest::Client, username: &str, password: &str) -> Answer {
        login_at(&self.base, client, username, password).await
    }

    /// Registers and logs in a fresh user; returns the login answer.
    pub async fn signed_in(&self, client: &reqwest::Client, username: &str) -> Answer {
        self.register(client, username, "correct horse battery").await;
        self.login(client, username, "correct horse battery").await
    }

    /// Refreshes.
    pub async fn refresh(&self, client: &reqwest::Client, refresh_token: &str) -> Answer {
        refresh_at(&self.base, client, refresh_token).await
    }

    /// Counts a session's live (not retired) refresh tokens, straight from the database.
    pub async fn live_refresh_tokens(&self, session_id: &str) -> i64 {
        if self.database_url.starts_with("postgres") {
            use sqlx::Connection as _;
            let mut conn = sqlx::PgConnection::connect(&self.database_url).await.expect("connect");
            return sqlx::query_scalar(
                "SELECT COUNT(*) FROM refresh_tokens WHERE session_id = $1 AND retired_at IS NULL",
            )
            .bind(session_id)
            .fetch_one(&mut conn)
            .await
            .expect("count");
        }
        let path = self.database_url.trim_start_matches("sqlite://").to_owned();
        let session_id = session_id.to_owned();
        tokio::task::spawn_blocking(move || {
            let conn =
                rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                    .expect("open db");
            conn.query_row(
                "SELECT COUNT(*) FROM refresh_tokens WHERE session_id = ?1 AND retired_at IS NULL",
                [session_id],
                |r| r.get(0),
            )
            .expect("count")
        })
        .await
        .expect("join")
    }
}
