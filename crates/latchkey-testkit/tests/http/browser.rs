//! The pages in a real headless Chromium (SPEC 5.3), driven over WebDriver (chromedriver +
//! fantoccini): sign in by label, Allow, Deny, the second authorization going straight
//! back without a page, Revoke on the account page, Sign out, sign-in with JavaScript
//! disabled, and the password-reset story from the sign-in page's link to the mailed link. Needs `chromium` and `chromium-driver` (Debian); `.ci/run` installs them.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::oauth::{App, VERIFIER, challenge, register_app};
use crate::{TestServer, http_client, send};

/// A chromedriver on a free port, killed on drop.
struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Driver {
    async fn start() -> Self {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver must be installed (Debian: apt-get install chromium chromium-driver)");
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if http_client().get(format!("{url}/status")).send().await.is_ok() {
                return Self { child, url };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start");
    }

    /// A fresh headless browser; with `javascript` false, scripts are disabled.
    async fn browser(&self, javascript: bool) -> Client {
        let mut options = json!({
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-dev-shm-usage", "--window-size=1200,900"],
        });
        if !javascript {
            options["prefs"] = json!({"profile.managed_default_content_settings.javascript": 2});
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".to_owned(), options);
        ClientBuilder::rustls()
            .unwrap()
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The app's side: a redirect URI that records what the browser brought back.
struct Callback {
    base: String,
    seen: Arc<Mutex<Vec<String>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Callback {
    async fn start() -> Self {
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let record = Arc::clone(&seen);
        let app = axum::Router::new()
            .route(
                "/js",
                axum::routing::get(|| async {
                    axum::response::Html(
                        "<!doctype html><title>js</title><h1 id=\"state\">off</h1>\
                         <script>document.getElementById('state').textContent = 'on'</script>",
                    )
                }),
            )
            .route(
                "/cb",
                axum::routing::get(move |axum::extract::RawQuery(q): axum::extract::RawQuery| {
                    let record = Arc::clone(&record);
                    async move {
                        record.lock().unwrap().push(q.unwrap_or_default());
                        axum::response::Html("<!doctype html><title>App</title><h1>Back at the app</h1>")
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { base, seen, _task: task }
    }

    fn redirect_uri(&self) -> String {
        format!("{}/cb", self.base)
    }

    fn last(&self) -> Vec<(String, String)> {
        let q = self.seen.lock().unwrap().last().cloned().expect("the app was reached");
        reqwest::Url::parse(&format!("http://x/?{q}"))
            .unwrap()
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn authorize(s: &TestServer, app: &App, redirect_uri: &str, state: &str) -> String {
    reqwest::Url::parse_with_params(
        &s.url("/oauth/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", app.id.as_str()),
            ("redirect_uri", redirect_uri),
            ("scope", "openid profile"),
            ("state", state),
            ("code_challenge", &challenge(VERIFIER)),
            ("code_challenge_method", "S256"),
        ],
    )
    .unwrap()
    .to_string()
}

/// Fills the input a `<label>` names, as a person would find it.
async fn fill_by_label(b: &Client, label: &str, text: &str) {
    let label = b.find(Locator::XPath(&format!("//label[normalize-space()='{label}']"))).await.unwrap();
    let id = label.attr("for").await.unwrap().expect("the label names its input");
    b.find(Locator::Id(&id)).await.unwrap().send_keys(text).await.unwrap();
}

async fn click_button(b: &Client, text: &str) {
    b.find(Locator::XPath(&format!("//button[normalize-space()='{text}']")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn sign_in(b: &Client, user: &str) {
    fill_by_label(b, "Username", user).await;
    fill_by_label(b, "Password", "correct horse battery").await;
    click_button(b, "Sign in").await;
}

async fn wait_until(b: &Client, what: &str, cond: impl Fn(&str, &str) -> bool) {
    for _ in 0..100 {
        let url = b.current_url().await.unwrap().to_string();
        let source = b.source().await.unwrap();
        if cond(&url, &source) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let source = b.source().await.unwrap();
    let text: String =
        source.lines().filter(|l| l.contains("<h1") || l.contains("<p") || l.contains("alert")).collect();
    panic!("{what}: still at {}: {text}", b.current_url().await.unwrap());
}

async fn exchange(s: &TestServer, app: &App, redirect_uri: &str, code: &str) -> Value {
    let a =
        send(http_client().post(s.url("/oauth/token")).basic_auth(&app.id, app.secret.as_deref()).form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", VERIFIER),
        ]))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.json
}

#[tokio::test]
async fn a_person_signs_in_allows_denies_revokes_and_signs_out_in_chromium() {
    let s = TestServer::start().await;
    s.register(&http_client(), "ivy", "correct horse battery").await;
    let cb = Callback::start().await;
    let redirect = cb.redirect_uri();
    let app = register_app(&s, &["--redirect-uri", &redirect]).await;
    let driver = Driver::start().await;
    let b = driver.browser(true).await;

    // First authorization: the sign-in page, then consent, then back at the app with a code.
    b.goto(&authorize(&s, &app, &redirect, "one")).await.unwrap();
    wait_until(&b, "sign-in page", |_, src| src.contains("Sign in")).await;
    sign_in(&b, "ivy").await;
    wait_until(&b, "consent page", |_, src| src.contains("Test App") && src.contains("Allow")).await;
    click_button(&b, "Allow").await;
    wait_until(&b, "back at the app", |url, _| url.starts_with(&redirect)).await;
    let back = cb.last();
    assert_eq!(get(&back, "state"), Some("one"));
    let tokens = exchange(&s, &app, &redirect, get(&back, "code").unwrap()).await;
    assert!(tokens["id_token"].is_string());

    // The second authorization goes straight back: no page in between.
    let before = cb.count();
    b.goto(&authorize(&s, &app, &redirect, "two")).await.unwrap();
    wait_until(&b, "straight back", |url, _| url.starts_with(&redirect)).await;
    assert_eq!(cb.count(), before + 1);
    assert_eq!(get(&cb.last(), "state"), Some("two"));

    // Deny (prompt=consent asks again): access_denied with user_denied.
    b.goto(&format!("{}&prompt=consent", authorize(&s, &app, &redirect, "three"))).await.unwrap();
    wait_until(&b, "consent again", |_, src| src.contains("Deny")).await;
    click_button(&b, "Deny").await;
    wait_until(&b, "denied", |url, _| url.starts_with(&redirect)).await;
    let denied = cb.last();
    assert_eq!(get(&denied, "error"), Some("access_denied"));
    assert_eq!(get(&denied, "error_reason"), Some("user_denied"));
    assert_eq!(get(&denied, "error_description"), Some("The user denied your request"));
    assert_eq!(get(&denied, "state"), Some("three"));

    // The account page lists the app; Revoke disconnects it and kills its tokens.
    b.goto(&s.url("/account")).await.unwrap();
    wait_until(&b, "account page", |_, src| src.contains("Connected apps") && src.contains("Test App")).await;
    // This device is named as people do (issue 13); the raw user agent stays in the title.
    let device = b.find(Locator::Css(".row-title:has(.badge) span[title]")).await.unwrap();
    let name = device.text().await.unwrap();
    assert!(name.contains("Chrome") && name.ends_with(" on Linux") && !name.contains("Mozilla"), "{name}");
    assert!(device.attr("title").await.unwrap().unwrap().starts_with("Mozilla/5.0 "));
    b.find(Locator::Css(&format!("form[action='/account/apps/{}/revoke'] button", app.id)))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until(&b, "app revoked", |url, src| url.ends_with("/account") && !src.contains("Test App")).await;
    let refresh =
        send(http_client().post(s.url("/oauth/token")).basic_auth(&app.id, app.secret.as_deref()).form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ]))
        .await;
    assert_eq!(refresh.json["error_reason"], "revoked_by_user", "{}", refresh.text);

    // Sign out: the account page then asks for a sign-in.
    click_button(&b, "Sign out").await;
    wait_until(&b, "signed out", |_, src| src.contains("You are signed out")).await;
    b.goto(&s.url("/account")).await.unwrap();
    wait_until(&b, "sign-in again", |url, _| url.contains("/login")).await;
    b.close().await.unwrap();
}

#[tokio::test]
async fn sign_in_works_with_javascript_disabled() {
    let s = TestServer::start().await;
    s.register(&http_client(), "jo", "correct horse battery").await;
    let cb = Callback::start().await;
    let redirect = cb.redirect_uri();
    let app = register_app(&s, &["--redirect-uri", &redirect]).await;
    let driver = Driver::start().await;
    let b = driver.browser(false).await;
    // The page's scripts really are off.
    b.goto(&format!("{}/js", cb.base)).await.unwrap();
    assert_eq!(b.find(Locator::Id("state")).await.unwrap().text().await.unwrap(), "off");
    b.goto(&authorize(&s, &app, &redirect, "nojs")).await.unwrap();
    wait_until(&b, "sign-in page", |_, src| src.contains("Sign in")).await;
    sign_in(&b, "jo").await;
    wait_until(&b, "consent page", |_, src| src.contains("Allow")).await;
    click_button(&b, "Allow").await;
    wait_until(&b, "back at the app", |url, _| url.starts_with(&redirect)).await;
    assert_eq!(get(&cb.last(), "state"), Some("nojs"));
    // Wrong password with JavaScript off: the page says so.
    let other = driver.browser(false).await;
    other.goto(&s.url("/login")).await.unwrap();
    fill_by_label(&other, "Username", "jo").await;
    fill_by_label(&other, "Password", "not the password").await;
    click_button(&other, "Sign in").await;
    wait_until(&other, "error shown", |_, src| src.contains("Wrong username or password")).await;
    other.close().await.unwrap();
    b.close().await.unwrap();
}

/// One origin for two tabs: the JS client's page, the client module, and proxies to
/// Latchkey (`/auth/*`, counting and delaying refreshes) and notes-api (`/api/*`), so the
/// page needs no CORS.
struct Origin {
    base: String,
    refreshes: Arc<std::sync::atomic::AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

const TWO_TAB_PAGE: &str = r#"<!doctype html><title>two tabs</title>
<script type="module">
import { Latchkey } from '/client/index.js';
// IndexedDB, not localStorage: its transactions are consistent across tabs at once, while
// localStorage may show another tab's write late when the tabs live in different processes.
const db = await new Promise((resolve, reject) => {
  const open = indexedDB.open('latchkey', 1);
  open.onupgradeneeded = () => open.result.createObjectStore('kv');
  open.onsuccess = () => resolve(open.result);
  open.onerror = () => reject(open.error);
});
const tx = (mode, run) => new Promise((resolve, reject) => {
  const t = db.transaction('kv', mode);
  const req = run(t.objectStore('kv'));
  t.oncomplete = () => resolve(req.result ?? null);
  t.onerror = () => reject(t.error);
});
const storage = {
  get: (k) => tx('readonly', (s) => s.get(k)),
  set: (k, v) => tx('readwrite', (s) => s.put(v, k)).then(() => {}),
  remove: (k) => tx('readwrite', (s) => s.delete(k)).then(() => {}),
};
const noLocks = location.search.includes('nolocks');
window.offset = 0;
window.lk = new Latchkey({
  issuer: location.origin, storage, now: () => Date.now() + window.offset,
  ...(noLocks ? { locks: null } : {}),
  ...(location.search.includes('dpop') ? { dpop: true } : {}),
});
window.ready = true;
</script>"#;

impl Origin {
    async fn start(latchkey: &str, notes: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, latchkey, notes).await
    }

    /// The origin on a listener bound beforehand, so that the server behind it can be
    /// started with the origin's URL as its issuer (DPoP proofs name the URL the page uses).
    async fn start_on(listener: tokio::net::TcpListener, latchkey: &str, notes: &str) -> Self {
        use axum::body::Body;
        use axum::extract::{Request, State};
        use axum::response::Response;

        #[derive(Clone)]
        struct Up {
            latchkey: String,
            notes: String,
            refreshes: Arc<std::sync::atomic::AtomicUsize>,
        }
        async fn forward(State(up): State<Up>, req: Request) -> Response {
            let (parts, body) = req.into_parts();
            let path = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
            let target = match path.strip_prefix("/api") {
                Some(rest) => format!("{}{rest}", up.notes),
                None => format!("{}{path}", up.latchkey),
            };
            let is_refresh = path.starts_with("/auth/refresh");
            if is_refresh {
                up.refreshes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let mut headers = parts.headers.clone();
            headers.remove("host");
            headers.remove("content-length");
            headers.remove("origin");
            let res =
                http_client().request(parts.method, target).headers(headers).body(body).send().await.unwrap();
            if is_refresh {
                // Long enough that the other tab asks while this refresh is in flight.
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
            let status = res.status();
            let mut out_headers = res.headers().clone();
            out_headers.remove("content-length");
            out_headers.remove("transfer-encoding");
            let mut out = Response::new(Body::from(res.bytes().await.unwrap()));
            *out.status_mut() = status;
            *out.headers_mut() = out_headers;
            out
        }
        let refreshes: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let up =
            Up { latchkey: latchkey.to_owned(), notes: notes.to_owned(), refreshes: Arc::clone(&refreshes) };
        let module = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/js/src/index.js"),
        )
        .unwrap();
        let app = axum::Router::new()
            .route("/", axum::routing::get(|| async { axum::response::Html(TWO_TAB_PAGE) }))
            .route(
                "/client/index.js",
                axum::routing::get(move || {
                    let module = module.clone();
                    async move { ([("content-type", "text/javascript")], module) }
                }),
            )
            .fallback(forward)
            .with_state(up);
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { base, refreshes, _task: task }
    }
}

async fn page_ready(b: &Client) {
    for _ in 0..100 {
        if b.execute("return window.ready === true", vec![]).await.unwrap() == json!(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the page's module did not load");
}

/// Opens a second tab on `page`, which must resume the first tab's session; then both tabs'
/// clocks jump past the access token's expiry and 25 API calls start in each. Asserts that
/// all 50 succeed; returns how many refreshes reached the server meanwhile.
async fn burst_in_two_tabs(b: &Client, origin: &Origin, page: &str) -> usize {
    let first = b.window().await.unwrap();
    let second = b.new_window(true).await.unwrap().handle;
    b.switch_to_window(second.clone()).await.unwrap();
    b.goto(page).await.unwrap();
    page_ready(b).await;
    let resumed = b
        .execute_async("const done = arguments[arguments.length - 1]; window.lk.resume().then(done);", vec![])
        .await
        .unwrap();
    assert_eq!(resumed, json!(true), "the second tab shares the session");
    let before = origin.refreshes.load(std::sync::atomic::Ordering::SeqCst);
    let burst = "window.offset = 10 * 60 * 1000;
         window.burst = Promise.all(Array.from({length: 25}, () => window.lk.fetch('/api/whoami')))
           .then((rs) => rs.map((r) => r.status), (e) => ['error ' + e.code]);
         return true;";
    for tab in [&first, &second] {
        b.switch_to_window(tab.clone()).await.unwrap();
        b.execute(burst, vec![]).await.unwrap();
    }
    for tab in [&first, &second] {
        b.switch_to_window(tab.clone()).await.unwrap();
        let statuses = b
            .execute_async("const done = arguments[arguments.length - 1]; window.burst.then(done);", vec![])
            .await
            .unwrap();
        assert_eq!(statuses, json!(vec![200; 25]), "{page}");
    }
    origin.refreshes.load(std::sync::atomic::Ordering::SeqCst) - before
}

#[tokio::test]
async fn two_tabs_share_one_refresh_with_web_locks_and_without() {
    let s = TestServer::start().await;
    s.register(&http_client(), "tabs", "correct horse battery").await;
    let notes = crate::notes::notes_api_with(&s, |b| b.poll_every(Duration::from_millis(100))).await;
    let origin = Origin::start(&s.base, &notes.base).await;
    let driver = Driver::start().await;
    for variant in ["", "?nolocks"] {
        let b = driver.browser(true).await;
        b.goto(&format!("{}/{variant}", origin.base)).await.unwrap();
        page_ready(&b).await;
        let login = b
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 window.lk.login({username: 'tabs', password: 'correct horse battery'})
                   .then(() => done('ok'), (e) => done(String(e.code)));",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(login, json!("ok"));
        let refreshes = burst_in_two_tabs(&b, &origin, &format!("{}/{variant}", origin.base)).await;
        assert_eq!(refreshes, 1, "{variant}: one refresh for 50 calls in two tabs");
        b.close().await.unwrap();
    }
}

/// SPEC 12 in a real browser: with `dpop: true` the JS client signs in with a WebCrypto key
/// whose private half cannot be exported, keeps it in IndexedDB, and a second tab finds it
/// there; 25 calls in each tab after the access token expired make one refresh, with the
/// session's key (a refresh without it would revoke the session), and every call reaches
/// notes-api with a proof.
#[tokio::test]
async fn two_tabs_share_one_dpop_key_and_one_refresh() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin_url = format!("http://{}", listener.local_addr().unwrap());
    let issuer = origin_url.clone();
    let s = TestServer::start_with(move |c| {
        c.settings.issuer = issuer.clone();
        c.settings.audience = issuer;
    })
    .await;
    s.register(&http_client(), "keyed", "correct horse battery").await;
    let api_url = format!("{origin_url}/api");
    let notes =
        crate::notes::notes_api_with(&s, |b| b.poll_every(Duration::from_millis(100)).resource_url(api_url))
            .await;
    let origin = Origin::start_on(listener, &s.base, &notes.base).await;
    let driver = Driver::start().await;
    let b = driver.browser(true).await;
    b.goto(&format!("{}/?dpop", origin.base)).await.unwrap();
    page_ready(&b).await;
    let signed_in = b
        .execute_async(
            "const done = arguments[arguments.length - 1];
             window.lk.login({username: 'keyed', password: 'correct horse battery'})
               .then(() => window.lk.accessToken())
               .then((t) => done(JSON.parse(atob(t.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))).cnf?.jkt ?? 'no cnf'),
                     (e) => done('error ' + (e.code ?? e)));",
            vec![],
        )
        .await
        .unwrap();
    let jkt = signed_in.as_str().unwrap().to_owned();
    assert_eq!(jkt.len(), 43, "a bound token: {signed_in}");
    // The key is in IndexedDB under its thumbprint, its private half not extractable.
    let stored = b
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const open = indexedDB.open('latchkey.dpop-keys');
             open.onsuccess = () => {
               const get = open.result.transaction('keys').objectStore('keys').get(arguments[0]);
               get.onsuccess = () => done(get.result ? [get.result.privateKey.extractable, get.result.privateKey.algorithm.namedCurve] : null);
             };
             open.onerror = () => done('no database');",
            vec![json!(jkt)],
        )
        .await
        .unwrap();
    assert_eq!(stored, json!([false, "P-256"]));
    let refreshes = burst_in_two_tabs(&b, &origin, &format!("{}/?dpop", origin.base)).await;
    assert_eq!(refreshes, 1, "one refresh for both tabs, with the key the second tab found");
    let metrics = send(http_client().get(s.url("/metrics"))).await.text;
    assert!(metrics.contains("latchkey_refresh_reuse_detections_total 0"), "{metrics}");
    assert!(metrics.contains("latchkey_refreshes_total{result=\"rotated\"} 1"), "{metrics}");
    b.close().await.unwrap();
}

/// SPEC 10 as a person meets it: **Forgot your password?** on the sign-in page, the mailed
/// link (read from `latchkey mail list`), **Set password**, then sign-in with the new one.
#[tokio::test]
async fn a_person_resets_a_forgotten_password_in_chromium() {
    let s = TestServer::start().await;
    crate::verification::with_address(&s, &http_client(), "liv", "liv@example.com").await;
    let driver = Driver::start().await;
    let b = driver.browser(true).await;

    b.goto(&s.url("/login")).await.unwrap();
    wait_until(&b, "sign-in page", |_, src| src.contains("Forgot your password?")).await;
    b.find(Locator::LinkText("Forgot your password?")).await.unwrap().click().await.unwrap();
    wait_until(&b, "forgot-password page", |url, _| url.ends_with("/forgot-password")).await;
    fill_by_label(&b, "Email or username", "liv@example.com").await;
    click_button(&b, "Send reset link").await;
    wait_until(&b, "confirmation", |_, src| src.contains("If an account matches")).await;

    let token =
        crate::verification::link_token_mailed_to(&s, "liv@example.com", "lkp_", "reset-password").await;
    b.goto(&s.url(&format!("/reset-password?token={token}"))).await.unwrap();
    wait_until(&b, "reset page", |_, src| src.contains("Set password")).await;
    fill_by_label(&b, "New password", "a brand new passphrase").await;
    click_button(&b, "Set password").await;
    wait_until(&b, "password set", |_, src| src.contains("Your password has been set.")).await;

    b.goto(&s.url("/login")).await.unwrap();
    wait_until(&b, "sign-in page", |_, src| src.contains("Sign in")).await;
    fill_by_label(&b, "Username", "liv").await;
    fill_by_label(&b, "Password", "a brand new passphrase").await;
    click_button(&b, "Sign in").await;
    wait_until(&b, "account page", |url, src| url.ends_with("/account") && src.contains("Signed in as liv"))
        .await;
    b.close().await.unwrap();
}

/// SPEC 11 as a person meets it: after the password, **Authentication code** and
/// **Verify**, then the account page.
#[tokio::test]
async fn a_person_signs_in_with_an_authenticator_app_in_chromium() {
    let s = TestServer::start().await;
    let (secret, _, _) = crate::mfa::enrolled(&s, &http_client(), "una").await;
    s.clock.advance(Duration::from_secs(30));
    let driver = Driver::start().await;
    let b = driver.browser(true).await;
    b.goto(&s.url("/login")).await.unwrap();
    wait_until(&b, "sign-in page", |_, src| src.contains("Sign in")).await;
    sign_in(&b, "una").await;
    wait_until(&b, "second step", |_, src| src.contains("Authentication code")).await;
    fill_by_label(&b, "Authentication code", &crate::mfa::code(&s, &secret, 0)).await;
    click_button(&b, "Verify").await;
    wait_until(&b, "account page", |url, src| url.ends_with("/account") && src.contains("Signed in as una"))
        .await;
    b.close().await.unwrap();
}

/// A WebDriver WebAuthn extension command (W3C WebAuthn §11, which chromedriver
/// implements); `path` is relative to `/session/{id}/webauthn/`.
#[derive(Debug)]
struct WebAuthnCommand {
    method: reqwest::Method,
    path: String,
    body: Option<Value>,
}

impl fantoccini::wd::WebDriverCompatibleCommand for WebAuthnCommand {
    fn endpoint(
        &self,
        base_url: &reqwest::Url,
        session_id: Option<&str>,
    ) -> Result<reqwest::Url, <reqwest::Url as std::str::FromStr>::Err> {
        let session = session_id.expect("a WebDriver session");
        base_url.join(&format!("session/{session}/webauthn/{}", self.path))
    }

    fn method_and_body(&self, _: &reqwest::Url) -> (reqwest::Method, Option<String>) {
        (self.method.clone(), self.body.as_ref().map(Value::to_string))
    }
}

/// Gives the browser a platform authenticator with discoverable credentials that
/// verifies its user (a fingerprint, say) without asking; its id.
async fn add_virtual_authenticator(b: &Client) -> String {
    let body = json!({
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": true,
        "hasUserVerification": true, "isUserConsenting": true, "isUserVerified": true,
    });
    let command =
        WebAuthnCommand { method: reqwest::Method::POST, path: "authenticator".into(), body: Some(body) };
    let id = b.issue_cmd(command).await.expect("addVirtualAuthenticator");
    id.as_str().expect("an authenticator id").to_owned()
}

/// The credentials the virtual authenticator holds.
async fn virtual_credentials(b: &Client, authenticator: &str) -> Vec<Value> {
    let path = format!("authenticator/{authenticator}/credentials");
    let command = WebAuthnCommand { method: reqwest::Method::GET, path, body: None };
    match b.issue_cmd(command).await.expect("getCredentials") {
        Value::Array(credentials) => credentials,
        other => panic!("getCredentials answered {other}"),
    }
}

/// SPEC 11 in Chromium: a person signs in with the password, adds a passkey on the account
/// page (the browser's authenticator makes a discoverable credential for `localhost`),
/// signs out, and signs in again with **Sign in with a passkey**, typing no username.
#[tokio::test]
async fn a_person_adds_a_passkey_and_signs_in_with_it_in_chromium() {
    let s = TestServer::start_on_localhost(|_| {}).await;
    s.register(&http_client(), "pia", "correct horse battery").await;
    let page = |path: &str| format!("{}{path}", s.issuer());
    let driver = Driver::start().await;
    let b = driver.browser(true).await;
    let authenticator = add_virtual_authenticator(&b).await;
    b.goto(&page("/login")).await.unwrap();
    wait_until(&b, "sign-in page", |_, src| src.contains("Sign in with a passkey")).await;
    sign_in(&b, "pia").await;
    wait_until(&b, "account page", |url, src| url.ends_with("/account") && src.contains("Signed in as pia"))
        .await;

    fill_by_label(&b, "Passkey name", "Work laptop").await;
    click_button(&b, "Add a passkey").await;
    wait_until(&b, "passkey added", |_, src| src.contains("Passkey added: Work laptop.")).await;
    let held = virtual_credentials(&b, &authenticator).await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["isResidentCredential"], true, "{held:?}");
    assert_eq!(held[0]["rpId"], "localhost", "{held:?}");
    b.goto(&page("/account")).await.unwrap();
    wait_until(&b, "the Security section", |_, src| src.contains("Work laptop") && src.contains("Passkey"))
        .await;

    click_button(&b, "Sign out").await;
    wait_until(&b, "signed out", |url, _| !url.ends_with("/account")).await;
    b.goto(&page("/login")).await.unwrap();
    wait_until(&b, "sign-in page", |_, src| src.contains("Sign in with a passkey")).await;
    click_button(&b, "Sign in with a passkey").await;
    wait_until(&b, "account page", |url, src| url.ends_with("/account") && src.contains("Signed in as pia"))
        .await;

    // The password now leads to a second step, which the same passkey finishes.
    click_button(&b, "Sign out").await;
    wait_until(&b, "signed out", |url, _| !url.ends_with("/account")).await;
    b.goto(&page("/login")).await.unwrap();
    wait_until(&b, "sign-in page", |_, src| src.contains("Sign in with a passkey")).await;
    sign_in(&b, "pia").await;
    wait_until(&b, "second step", |_, src| {
        src.contains("Two-step verification") && src.contains("data-mfa-token")
    })
    .await;
    click_button(&b, "Sign in with a passkey").await;
    wait_until(&b, "account page", |url, src| url.ends_with("/account") && src.contains("Signed in as pia"))
        .await;
    b.close().await.unwrap();
}

/// SPEC 11's Security section in Chromium: **Set up authenticator app** shows a QR code and
/// the key; the first code shows the recovery codes once; **New recovery codes** replaces
/// them; **Remove** takes the app away again.
#[tokio::test]
async fn a_person_manages_an_authenticator_app_on_the_account_page_in_chromium() {
    let s = TestServer::start().await;
    s.register(&http_client(), "quin", "correct horse battery").await;
    let driver = Driver::start().await;
    let b = driver.browser(true).await;
    b.goto(&s.url("/login")).await.unwrap();
    sign_in(&b, "quin").await;
    wait_until(&b, "account page", |url, src| url.ends_with("/account") && src.contains("Security")).await;
    click_button(&b, "Set up authenticator app").await;
    wait_until(&b, "set-up page", |_, src| src.contains("<h1>Set up authenticator app</h1>")).await;
    let qr = b.find(Locator::Css(".qr svg")).await.expect("the QR code");
    assert_eq!(qr.attr("role").await.unwrap().as_deref(), Some("img"));
    let key = b.find(Locator::Id("secret")).await.unwrap().text().await.unwrap();
    let secret = latchkey_core::totp::TotpSecret::from_base32(&key).expect("the key as text");
    fill_by_label(&b, "Authentication code", &crate::mfa::code(&s, &secret, 0)).await;
    click_button(&b, "Verify").await;
    wait_until(&b, "recovery codes", |_, src| src.contains("<h1>Recovery codes</h1>")).await;
    let codes = b.find_all(Locator::Css("ol.codes code")).await.unwrap();
    assert_eq!(codes.len(), 10);
    b.find(Locator::LinkText("Continue")).await.unwrap().click().await.unwrap();
    wait_until(&b, "account page", |_, src| {
        src.contains("Authenticator app") && src.contains("Recovery codes left: 10")
    })
    .await;
    click_button(&b, "New recovery codes").await;
    wait_until(&b, "new recovery codes", |_, src| src.contains("<h1>Recovery codes</h1>")).await;
    b.goto(&s.url("/account")).await.unwrap();
    b.find(Locator::XPath("//button[@aria-label='Remove Authenticator app']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until(&b, "removed", |_, src| {
        src.contains("The factor was removed") && src.contains("No second factor")
    })
    .await;
    b.close().await.unwrap();
}

/// The device flow as a person meets it (RFC 8628, SPEC 13): a TV shows a code; in
/// Chromium the person opens `/device`, signs in, types it under **Code**, presses
/// **Continue** and **Allow**, and the TV's next poll gets tokens; a second code is denied.
#[tokio::test]
async fn a_person_connects_a_device_and_denies_another_in_chromium() {
    use crate::device_grant::{ask, device_app, poll};
    let s = TestServer::start().await;
    s.register(&http_client(), "vic", "correct horse battery").await;
    let app = device_app(&s, false).await;
    let codes = ask(&s, &app, &[]).await;
    assert_eq!(poll(&s, &app, codes.str("device_code")).await.json["error"], "authorization_pending");
    let driver = Driver::start().await;
    let b = driver.browser(true).await;

    b.goto(&s.url("/device")).await.unwrap();
    wait_until(&b, "sign-in page", |url, _| url.contains("/login")).await;
    sign_in(&b, "vic").await;
    wait_until(&b, "device page", |url, src| url.ends_with("/device") && src.contains("Connect a device"))
        .await;
    fill_by_label(&b, "Code", codes.str("user_code")).await;
    click_button(&b, "Continue").await;
    wait_until(&b, "consent", |_, src| src.contains("Test App wants to access your account")).await;
    click_button(&b, "Allow").await;
    wait_until(&b, "connected", |_, src| src.contains("Device connected")).await;
    s.clock.advance(Duration::from_secs(10));
    let tokens = poll(&s, &app, codes.str("device_code")).await;
    assert_eq!(tokens.status, 200, "{}", tokens.text);

    let second = ask(&s, &app, &[]).await;
    b.goto(&s.url("/device")).await.unwrap();
    wait_until(&b, "device page", |_, src| src.contains("Connect a device")).await;
    fill_by_label(&b, "Code", &second.str("user_code").to_lowercase()).await;
    click_button(&b, "Continue").await;
    wait_until(&b, "consent", |_, src| src.contains(">Deny</button>")).await;
    click_button(&b, "Deny").await;
    wait_until(&b, "denied", |_, src| src.contains("Request denied")).await;
    assert_eq!(poll(&s, &app, second.str("device_code")).await.json["error"], "access_denied");
    b.close().await.unwrap();
}
