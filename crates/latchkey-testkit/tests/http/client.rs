//! `latchkey-client` against the real server and notes-api (SPEC 5.7), through small
//! counting and delaying proxies: the seed race (a refresh in flight when logout starts),
//! single-flight refresh under 50 concurrent calls, one refresh and one retry on
//! `claims_stale`, exactly one re-auth callback (with the typed reason) when the session ends
//! elsewhere, and the token kept to the issuer and the configured API origin.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use latchkey_client::reqwest::Method;
use latchkey_client::{Client, Error, ErrorReason, MemoryStorage, TokenStorage};
use serde_json::{Value, json};

use crate::notes::{Notes, api, notes_api_with, wait_for};
use crate::{TestServer, http_client, send};

/// A reverse proxy that counts requests, delays refresh answers on demand, and keeps the
/// token answers it passed on.
#[derive(Clone)]
struct Proxy {
    base: String,
    upstream: String,
    http: reqwest::Client,
    requests: Arc<AtomicUsize>,
    refreshes: Arc<AtomicUsize>,
    with_token: Arc<AtomicUsize>,
    refresh_delay_ms: Arc<AtomicU64>,
    token_answers: Arc<Mutex<Vec<Value>>>,
}

impl Proxy {
    async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let p = Self {
            base: format!("http://{}", listener.local_addr().unwrap()),
            upstream: upstream.to_owned(),
            http: http_client(),
            requests: Arc::default(),
            refreshes: Arc::default(),
            with_token: Arc::default(),
            refresh_delay_ms: Arc::default(),
            token_answers: Arc::default(),
        };
        let app = axum::Router::new().fallback(forward).with_state(p.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        p
    }

    fn refreshes(&self) -> usize {
        self.refreshes.load(Ordering::SeqCst)
    }
}

async fn forward(State(p): State<Proxy>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map(|pq| pq.as_str().to_owned()).unwrap_or_default();
    let is_refresh = path.starts_with("/auth/refresh");
    p.requests.fetch_add(1, Ordering::SeqCst);
    if is_refresh {
        p.refreshes.fetch_add(1, Ordering::SeqCst);
    }
    if parts.headers.contains_key("authorization") {
        p.with_token.fetch_add(1, Ordering::SeqCst);
    }
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let mut headers = parts.headers.clone();
    headers.remove("host");
    headers.remove("content-length");
    let up = p
        .http
        .request(parts.method.clone(), format!("{}{path}", p.upstream))
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = up.status();
    let up_headers = up.headers().clone();
    let bytes = up.bytes().await.unwrap();
    if (is_refresh || path.starts_with("/auth/login"))
        && let Ok(v) = serde_json::from_slice::<Value>(&bytes)
    {
        p.token_answers.lock().unwrap().push(v);
    }
    if is_refresh {
        let delay = p.refresh_delay_ms.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut res = Response::new(Body::from(bytes));
    *res.status_mut() = status;
    for (k, v) in &up_headers {
        if k != "content-length" && k != "transfer-encoding" {
            res.headers_mut().append(k.clone(), v.clone());
        }
    }
    res
}

/// The server, notes-api, a proxy in front of each, and a user.
struct Rig {
    s: TestServer,
    auth: Proxy,
    notes: Notes,
    api: Proxy,
}

impl Rig {
    async fn start(adjust: impl FnOnce(&mut latchkey::config::Config)) -> Self {
        let s = TestServer::start_with(adjust).await;
        let notes = notes_api_with(&s, |b| b.poll_every(Duration::from_millis(100))).await;
        let auth = Proxy::start(&s.base).await;
        let api = Proxy::start(&notes.base).await;
        Self { s, auth, notes, api }
    }

    /// A client of the server's proxy that sends its token to the API's proxy too.
    fn client(
        &self,
        reauth: Option<Arc<Mutex<Vec<ErrorReason>>>>,
        storage: Option<Arc<MemoryStorage>>,
    ) -> Client {
        let mut b =
            Client::builder(&self.auth.base).api_origin(&self.api.base).refresh_margin(Duration::ZERO);
        if let Some(seen) = reauth {
            b = b.on_reauth(move |reason| seen.lock().unwrap().push(reason));
        }
        if let Some(st) = storage {
            b = b.storage(st);
        }
        b.build().unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api.base)
    }
}

#[tokio::test]
async fn the_seed_race_a_refresh_in_flight_when_logout_starts() {
    let rig = Rig::start(|_| {}).await;
    rig.s.register(&http_client(), "race", "correct horse battery").await;
    let mut late_tokens_seen = 0;
    for round in 0..40u64 {
        let client = rig.client(None, None);
        client.login("race", "correct horse battery").await.unwrap();
        // The refresh answer lands 0-78 ms late; logout starts 0-12 ms after the refresh.
        rig.auth.refresh_delay_ms.store((round * 2) % 80, Ordering::SeqCst);
        rig.auth.token_answers.lock().unwrap().clear();
        let refreshing = {
            let c = client.clone();
            tokio::spawn(async move { c.refresh().await })
        };
        tokio::time::sleep(Duration::from_millis(round % 13)).await;
        client.logout().await.unwrap();
        let refreshed = refreshing.await.unwrap();
        rig.auth.refresh_delay_ms.store(0, Ordering::SeqCst);
        // The client holds nothing and sends no token.
        assert_eq!(client.session(), None, "round {round}: {refreshed:?}");
        let before = rig.api.requests.load(Ordering::SeqCst);
        assert_eq!(client.get(&rig.url("/whoami")).await.err(), Some(Error::NotSignedIn));
        assert_eq!(
            rig.api.requests.load(Ordering::SeqCst),
            before,
            "round {round}: no request without a session"
        );
        // Whatever the late answer carried is dead on the server too.
        let answers = rig.auth.token_answers.lock().unwrap().clone();
        for a in answers.iter().filter(|a| a["refresh_token"].is_string()) {
            late_tokens_seen += 1;
            let r = rig.s.refresh(&http_client(), a["refresh_token"].as_str().unwrap()).await;
            assert_eq!(r.status, 400, "round {round}: a late refresh token still works: {}", r.text);
            let me = rig.s.get_auth(&http_client(), "/auth/me", a["access_token"].as_str().unwrap()).await;
            assert_eq!(me.status, 401, "round {round}: a late access token still works");
        }
    }
    // Most rounds produce a late answer (a logout that wins outright leaves none to kill).
    assert!(late_tokens_seen >= 30, "the race was exercised ({late_tokens_seen} late answers)");
    eprintln!("seed race: 40 rounds, {late_tokens_seen} late token answers, all dead on the server");
}

#[tokio::test]
async fn fifty_concurrent_calls_with_an_expired_token_make_one_refresh() {
    let rig = Rig::start(|c| c.settings.access_token_ttl = Duration::from_secs(2)).await;
    rig.s.register(&http_client(), "many", "correct horse battery").await;
    let client = rig.client(None, None);
    client.login("many", "correct horse battery").await.unwrap();
    assert_eq!(client.get(&rig.url("/whoami")).await.unwrap().status(), 200);
    for round in 0..3 {
        // Wait out the access token's lifetime (the client's own clock decides).
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let before = rig.auth.refreshes();
        let url = rig.url("/whoami");
        let calls = (0..50).map(|_| client.get(&url));
        let answers = futures::future::join_all(calls).await;
        assert!(answers.iter().all(|a| a.as_ref().is_ok_and(|r| r.status() == 200)), "round {round}");
        assert_eq!(rig.auth.refreshes() - before, 1, "round {round}: one refresh for 50 calls");
    }
}

#[tokio::test]
async fn claims_stale_gets_one_refresh_and_one_retry_with_the_new_roles() {
    let rig = Rig::start(|_| {}).await;
    rig.s.register(&http_client(), "promoted", "correct horse battery").await;
    let client = rig.client(None, None);
    client.login("promoted", "correct horse battery").await.unwrap();
    let note = client
        .request(Method::POST, &rig.url("/notes"), |r| r.json(&json!({"text": "hello"})))
        .await
        .unwrap();
    assert_eq!(note.status(), 201);
    let id = note.json::<Value>().await.unwrap()["id"].as_u64().unwrap();
    let note_url = rig.url(&format!("/notes/{id}"));
    assert_eq!(client.request(Method::DELETE, &note_url, |r| r).await.unwrap().status(), 403);
    let old = client.access_token().await.unwrap();
    rig.s.cli(&["user", "set-roles", "promoted", "manager"], "").await.unwrap();
    wait_for(|| async {
        api(&rig.notes, reqwest::Method::GET, "/whoami", &old, None).await.json["error_reason"]
            == "claims_stale"
    })
    .await;
    let before = rig.auth.refreshes();
    let deleted = client.request(Method::DELETE, &note_url, |r| r).await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(rig.auth.refreshes() - before, 1, "one refresh, one retry");
    assert_ne!(client.access_token().await.unwrap(), old);
}

#[tokio::test]
async fn a_session_ended_elsewhere_calls_on_reauth_once_and_never_loops() {
    let rig = Rig::start(|_| {}).await;
    let c = http_client();
    for (user, how) in [
        ("by-device-list", "revoked_by_user"),
        ("by-logout-all", "logged_out"),
        ("by-theft", "reuse_detected"),
    ] {
        rig.s.register(&c, user, "correct horse battery").await;
        let reason = ErrorReason::parse(how).unwrap();
        let seen: Arc<Mutex<Vec<ErrorReason>>> = Arc::default();
        let storage = Arc::new(MemoryStorage::default());
        let client = rig.client(Some(Arc::clone(&seen)), Some(Arc::clone(&storage)));
        let session = client.login(user, "correct horse battery").await.unwrap();
        assert_eq!(client.get(&rig.url("/whoami")).await.unwrap().status(), 200);
        let other = rig.s.login(&c, user, "correct horse battery").await;
        let other_at = other.str("access_token");
        match how {
            "revoked_by_user" => {
                let sid = session.session_id.clone().unwrap();
                let a =
                    send(c.delete(rig.s.url(&format!("/auth/sessions/{sid}"))).bearer_auth(other_at)).await;
                assert_eq!(a.status, 204);
            }
            "logged_out" => {
                assert_eq!(rig.s.post_auth(&c, "/auth/logout-all", other_at, json!({})).await.status, 204);
            }
            _ => {
                // A thief copied the stored refresh token and rotated it twice.
                let stored: Value =
                    serde_json::from_str(&storage.get(latchkey_client::STORAGE_KEY).await.unwrap()).unwrap();
                let stolen = stored["refresh_token"].as_str().unwrap().to_owned();
                let t1 = rig.s.refresh(&c, &stolen).await;
                assert_eq!(rig.s.refresh(&c, t1.str("refresh_token")).await.status, 200);
            }
        }
        let first = if how == "reuse_detected" {
            // The thief's rotation leaves the victim's access token alone: the victim's next
            // refresh (an explicit one here; after expiry in real life) is the reuse.
            client.refresh().await.map(|_| ()).err()
        } else {
            // The API learns of it through the feed; the next call is refused, and its one
            // refresh is refused with the reason.
            let held = client.access_token().await.unwrap();
            wait_for(|| async {
                api(&rig.notes, reqwest::Method::GET, "/whoami", &held, None).await.status == 401
            })
            .await;
            client.get(&rig.url("/whoami")).await.map(|_| ()).err()
        };
        assert_eq!(first, Some(Error::Reauth(reason)), "{user}");
        assert_eq!(*seen.lock().unwrap(), [reason], "{user}: exactly one callback with the reason");
        // No loop: the next calls fail at once, without a request, and call nobody.
        let (api_before, auth_before) =
            (rig.api.requests.load(Ordering::SeqCst), rig.auth.requests.load(Ordering::SeqCst));
        for _ in 0..5 {
            assert_eq!(client.get(&rig.url("/whoami")).await.err(), Some(Error::NotSignedIn));
        }
        assert_eq!(rig.api.requests.load(Ordering::SeqCst), api_before);
        assert_eq!(rig.auth.requests.load(Ordering::SeqCst), auth_before);
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert!(storage.get(latchkey_client::STORAGE_KEY).await.is_none(), "{user}: storage cleared");
        assert_eq!(client.session(), None);
    }
}

#[tokio::test]
async fn the_token_goes_only_to_the_issuer_and_the_configured_api_origin() {
    let rig = Rig::start(|_| {}).await;
    rig.s.register(&http_client(), "careful", "correct horse battery").await;
    // The same notes-api behind another proxy: a real API, at an origin the client was not
    // given (same host, another port).
    let elsewhere = Proxy::start(&rig.notes.base).await;
    let client = rig.client(None, None);
    client.login("careful", "correct horse battery").await.unwrap();
    assert_eq!(client.get(&rig.url("/whoami")).await.unwrap().status(), 200);
    assert_eq!(client.get(&format!("{}/auth/me", rig.auth.base)).await.unwrap().status(), 200);

    let refused = Some(Error::OriginNotAllowed { origin: elsewhere.base.clone() });
    assert_eq!(client.get(&format!("{}/whoami", elsewhere.base)).await.err(), refused);
    let posted = client
        .request(Method::POST, &format!("{}/notes", elsewhere.base), |r| r.json(&json!({"text": "leak"})))
        .await;
    assert_eq!(posted.err(), refused);
    assert_eq!(elsewhere.requests.load(Ordering::SeqCst), 0, "nothing was sent there");
    assert_eq!(elsewhere.with_token.load(Ordering::SeqCst), 0);
    // The refusal is about the call, not the session: the configured API still works.
    assert_eq!(client.get(&rig.url("/whoami")).await.unwrap().status(), 200);
    assert_eq!(rig.api.with_token.load(Ordering::SeqCst), 2);
}

/// `dpop(true)` (SPEC 12): the session is bound to a key the client made at sign-in, API
/// calls carry proofs, 20 concurrent forced refreshes make one rotation with the key (no
/// theft detected), nothing is persisted, and logout ends the session.
#[tokio::test]
async fn a_dpop_client_binds_its_session_and_refreshes_and_calls_with_proofs() {
    let s = TestServer::start_reachable(|_| {}).await;
    let n = notes_api_with(&s, |b| b.poll_every(Duration::from_millis(100))).await;
    s.register(&http_client(), "dpo", "correct horse battery").await;
    let storage = Arc::new(MemoryStorage::default());
    let client = Client::builder(s.issuer())
        .api_origin(&n.base)
        .dpop(true)
        .storage(Arc::clone(&storage) as Arc<dyn TokenStorage>)
        .build()
        .unwrap();
    let session = client.login("dpo", "correct horse battery").await.unwrap();
    let at = client.access_token().await.unwrap();
    let part = at.split('.').nth(1).unwrap();
    use base64::Engine as _;
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap())
            .unwrap();
    assert!(claims["cnf"]["jkt"].as_str().is_some_and(|j| j.len() == 43), "{claims}");
    // The API takes it with proofs; as Bearer, by hand, it is refused.
    let whoami = format!("{}/whoami", n.base);
    wait_for(|| async { client.get(&whoami).await.unwrap().status() == 200 }).await;
    assert_eq!(api(&n, Method::GET, "/whoami", &at, None).await.json["error_reason"], "dpop_required");
    // Single flight with the key: one rotation, and the session lives on.
    let refreshed = futures::future::join_all((0..20).map(|_| client.refresh())).await;
    assert!(refreshed.iter().all(Result::is_ok), "{refreshed:?}");
    assert_eq!(client.session().unwrap().session_id, session.session_id);
    assert_ne!(client.access_token().await.unwrap(), at);
    assert_eq!(client.get(&whoami).await.unwrap().status(), 200);
    let metrics = send(http_client().get(s.url("/metrics"))).await.text;
    assert!(metrics.contains("latchkey_refresh_reuse_detections_total 0"), "{metrics}");
    // The key cannot be stored, so neither is the session.
    assert_eq!(storage.get(latchkey_client::STORAGE_KEY).await, None);
    client.logout().await.unwrap();
    let sid = latchkey_core::SessionId::from(session.session_id.unwrap().as_str());
    let ended = s.store().find_session(&sid).await.unwrap().unwrap();
    assert_eq!(ended.revoke_reason, Some(ErrorReason::LoggedOut));
}
