//! `latchkey-verify` and the notes-api example against the real server (SPEC 5.4-5.6, 13):
//! local verification, logout and role changes reaching the API through the feed, SPEC 5.5
//! errors, no request to the server per API call, and `DELETE /notes/{id}` held to the
//! role `manager` and, for apps' tokens, the scope `notes`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{TestServer, http_client, send};

/// A running notes-api that follows `s`.
pub(crate) struct Notes {
    pub(crate) base: String,
    _task: tokio::task::JoinHandle<()>,
}

async fn notes_api(s: &TestServer, poll_every: Duration) -> Notes {
    notes_api_with(s, |b| b.poll_every(poll_every)).await
}

pub(crate) async fn notes_api_with(
    s: &TestServer,
    configure: impl FnOnce(latchkey_verify::VerifierBuilder) -> latchkey_verify::VerifierBuilder,
) -> Notes {
    let (client_id, client_secret) = crate::feed::feed_client(s, "revocations:read").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    // Where clients reach it, which DPoP proofs name (a test behind a proxy sets its own).
    let verifier = latchkey_verify::Verifier::builder(s.issuer())
        .endpoint(&s.base)
        .feed_credentials(client_id, client_secret)
        .resource_url(&base);
    let verifier = configure(verifier).build().await.unwrap();
    let task = tokio::spawn(async move {
        notes_api::serve(listener, notes_api::app(verifier)).await;
    });
    // Until its first feed snapshot the verifier refuses tokens (fail closed): tests wait
    // for their first 200.
    Notes { base, _task: task }
}

/// Polls (bounded, 50 ms steps) until `cond` holds: the feed is asynchronous by design.
pub(crate) async fn wait_for<F, Fut>(cond: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not met within 10 s");
}

pub(crate) async fn api(
    n: &Notes,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> latchkey_testkit::Answer {
    let mut req = http_client().request(method, format!("{}{path}", n.base)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    send(req).await
}

#[tokio::test]
async fn notes_api_serves_verified_users_and_follows_role_changes() {
    let s = TestServer::start().await;
    let c = http_client();
    let n = notes_api(&s, Duration::from_millis(100)).await;
    let login = s.signed_in(&c, "noter").await;
    let at = login.str("access_token").to_owned();
    wait_for(|| async { api(&n, reqwest::Method::GET, "/whoami", &at, None).await.status == 200 }).await;
    let me = api(&n, reqwest::Method::GET, "/whoami", &at, None).await;
    assert_eq!(me.json["sid"], login.json["session_id"]);
    assert_eq!(me.json["roles"], json!([]));
    assert_eq!(me.json["scope"], "profile");
    let created = api(&n, reqwest::Method::POST, "/notes", &at, Some(json!({"text": "hello"}))).await;
    assert_eq!(created.status, 201);
    assert_eq!(created.json["text"], "hello");
    assert_eq!(created.json["owner"], me.json["sub"]);
    let listed = api(&n, reqwest::Method::GET, "/notes", &at, None).await;
    assert_eq!(listed.json.as_array().unwrap().len(), 1);
    // Not a manager: 403 insufficient_scope.
    let id = created.json["id"].as_u64().unwrap();
    let denied = api(&n, reqwest::Method::DELETE, &format!("/notes/{id}"), &at, None).await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.json["error"], "insufficient_scope");
    assert!(denied.header("www-authenticate").unwrap().contains("insufficient_scope"));
    // Promotion: the old token becomes stale at once; a refreshed one carries the role.
    s.cli(&["user", "set-roles", "noter", "manager"], "").await.unwrap();
    wait_for(|| async {
        api(&n, reqwest::Method::GET, "/notes", &at, None).await.json["error_reason"] == "claims_stale"
    })
    .await;
    let stale = api(&n, reqwest::Method::GET, "/notes", &at, None).await;
    assert_eq!(stale.status, 401);
    assert_eq!(stale.json["error_type"], "OAuthAccessTokenError");
    let fresh = s.refresh(&c, login.str("refresh_token")).await;
    let deleted =
        api(&n, reqwest::Method::DELETE, &format!("/notes/{id}"), fresh.str("access_token"), None).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
}

#[tokio::test]
async fn logout_reaches_the_api_through_the_feed() {
    let s = TestServer::start().await;
    let c = http_client();
    let n = notes_api(&s, Duration::from_millis(100)).await;
    let login = s.signed_in(&c, "leaving").await;
    let at = login.str("access_token").to_owned();
    wait_for(|| async { api(&n, reqwest::Method::GET, "/whoami", &at, None).await.status == 200 }).await;
    assert_eq!(send(c.post(s.url("/auth/logout")).bearer_auth(&at)).await.status, 204);
    wait_for(|| async {
        api(&n, reqwest::Method::GET, "/whoami", &at, None).await.json["error_reason"] == "revoked"
    })
    .await;
    let a = api(&n, reqwest::Method::GET, "/whoami", &at, None).await;
    assert_eq!(a.status, 401);
    assert!(a.header("www-authenticate").unwrap().starts_with("Bearer error=\"invalid_token\""));
}

#[tokio::test]
async fn notes_api_refuses_bad_requests_as_spec_5_5_says() {
    let s = TestServer::start().await;
    let c = http_client();
    let n = notes_api(&s, Duration::from_millis(100)).await;
    let login = s.signed_in(&c, "probe").await;
    let at = login.str("access_token").to_owned();
    wait_for(|| async { api(&n, reqwest::Method::GET, "/whoami", &at, None).await.status == 200 }).await;
    let parts: Vec<&str> = at.split('.').collect();
    let none = format!("{}.{}.", base64_json(&json!({"alg": "none", "typ": "at+jwt"})), parts[1]);
    for (token, reason) in [("garbage", "malformed"), (none.as_str(), "malformed")] {
        let a = api(&n, reqwest::Method::GET, "/whoami", token, None).await;
        assert_eq!(a.status, 401);
        assert_eq!(a.json["error_reason"], reason, "{}", a.text);
    }
    // A token in the query string is refused as such, even a valid one.
    let query = send(c.get(format!("{}/whoami?access_token={at}", n.base))).await;
    assert_eq!(query.status, 401);
    assert_eq!(query.json["error"], "invalid_token");
    assert!(query.header("www-authenticate").unwrap().starts_with("Bearer error=\"invalid_token\""));
    // No token at all: a bare challenge (RFC 6750 §3.1).
    let bare = send(c.get(format!("{}/whoami", n.base))).await;
    assert_eq!((bare.status, bare.header("www-authenticate")), (401, Some("Bearer")));
    // Two Authorization headers: SPEC 5.5's 400, with RFC 6750's invalid_request challenge.
    let two = send(
        c.get(format!("{}/whoami", n.base))
            .header("authorization", format!("Bearer {at}"))
            .header("authorization", format!("Bearer {at}")),
    )
    .await;
    assert_eq!(two.status, 400);
    assert_eq!(two.json["error"], "invalid_request");
    assert!(two.header("www-authenticate").unwrap().starts_with("Bearer error=\"invalid_request\""));
    let bad_body = send(
        c.post(format!("{}/notes", n.base))
            .bearer_auth(&at)
            .header("content-type", "application/json")
            .body("{"),
    )
    .await;
    assert_eq!(bad_body.status, 400);
    assert_eq!(bad_body.json["error"], "invalid_request");
}

fn base64_json(v: &Value) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, v.to_string())
}

#[tokio::test]
async fn api_calls_make_no_request_to_the_server() {
    let s = TestServer::start().await;
    let c = http_client();
    // Poll rarely, so any request the library makes during the calls would show.
    let n = notes_api(&s, Duration::from_secs(3600)).await;
    let login = s.signed_in(&c, "quietapi").await;
    let at = login.str("access_token").to_owned();
    let calls = |route: &str| {
        let text = s.service.metrics().render();
        text.lines()
            .filter(|l| {
                l.starts_with("latchkey_http_request_duration_seconds_count")
                    && l.contains(&format!("route=\"{route}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum::<u64>()
    };
    // The snapshot predates this login's session, so the first call verifies the token
    // locally: no feed or JWKS request needed.
    let (jwks_before, feed_before) = (calls("/jwks.json"), calls("/revocations"));
    let answers =
        futures::future::join_all((0..200).map(|_| api(&n, reqwest::Method::GET, "/whoami", &at, None)))
            .await;
    assert!(answers.iter().all(|a| a.status == 200));
    assert_eq!(calls("/jwks.json"), jwks_before, "no JWKS fetch per request");
    assert_eq!(calls("/revocations"), feed_before, "no feed request per request");
}

fn b64(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

/// Signs `claims` with a server's current EdDSA key: used with an
/// *attacker's* server to make tokens signed by a key the victim never published.
fn sign_with(server: &TestServer, claims: &Value) -> String {
    let set = server.service.keys().current();
    let key =
        set.signer(latchkey_core::keys::Algorithm::EdDSA, latchkey_core::Clock::now(&*server.clock)).unwrap();
    key.sign_jwt("at+jwt", claims).unwrap()
}

#[tokio::test]
async fn attack_corpus_against_notes_api() {
    let s = TestServer::start().await;
    let c = http_client();
    let n = notes_api(&s, Duration::from_millis(100)).await;
    let login = s.signed_in(&c, "victim").await;
    let at = login.str("access_token").to_owned();
    wait_for(|| async { api(&n, reqwest::Method::GET, "/whoami", &at, None).await.status == 200 }).await;
    let parts: Vec<&str> = at.split('.').collect();
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[0]).unwrap(),
    )
    .unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[1]).unwrap(),
    )
    .unwrap();
    let kid = header["kid"].as_str().unwrap().to_owned();
    let jwks: Value = serde_json::from_str(&send(c.get(s.url("/jwks.json"))).await.text).unwrap();
    let jwk = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid.as_str()).unwrap().clone();
    let raw =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, jwk["x"].as_str().unwrap())
            .unwrap();
    let mut der = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
    der.extend_from_slice(&raw);
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &der)
    );
    let mut corpus: Vec<(String, String)> = Vec::new();
    // alg none, in any case, with and without a signature part.
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = b64(json!({"alg": alg, "typ": "at+jwt", "kid": kid}).to_string().as_bytes());
        corpus.push((format!("alg {alg}"), format!("{h}.{}.", parts[1])));
        corpus.push((format!("alg {alg} with signature"), format!("{h}.{}.{}", parts[1], parts[2])));
    }
    // HMAC keyed with the public key, in every encoding.
    for (alg, name) in [
        (jsonwebtoken::Algorithm::HS256, "HS256"),
        (jsonwebtoken::Algorithm::HS384, "HS384"),
        (jsonwebtoken::Algorithm::HS512, "HS512"),
    ] {
        for (enc, secret) in [
            ("raw", raw.clone()),
            ("DER", der.clone()),
            ("PEM", pem.as_bytes().to_vec()),
            ("JWK JSON", jwk.to_string().into_bytes()),
            ("base64url x", jwk["x"].as_str().unwrap().as_bytes().to_vec()),
        ] {
            let mut h = jsonwebtoken::Header::new(alg);
            h.kid = Some(kid.clone());
            h.typ = Some("at+jwt".into());
            let t =
                jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_secret(&secret)).unwrap();
            corpus.push((format!("{name} keyed with the {enc} public key"), t));
        }
    }
    // Tampered payload; stripped, truncated and swapped signatures.
    let mut forged = claims.clone();
    forged["roles"] = json!(["manager"]);
    corpus.push((
        "tampered payload".into(),
        format!("{}.{}.{}", parts[0], b64(forged.to_string().as_bytes()), parts[2]),
    ));
    corpus.push(("stripped signature".into(), format!("{}.{}.", parts[0], parts[1])));
    corpus.push(("no signature part".into(), format!("{}.{}", parts[0], parts[1])));
    corpus.push(("truncated signature".into(), format!("{}.{}.{}", parts[0], parts[1], &parts[2][..20])));
    let other = s.login(&c, "victim", "correct horse battery").await;
    let other_sig = other.str("access_token").rsplit('.').next().unwrap().to_owned();
    corpus.push(("swapped signature".into(), format!("{}.{}.{}", parts[0], parts[1], other_sig)));
    // kid games.
    for bad_kid in ["no-such-key", "../../../../etc/passwd", "' OR '1'='1' --", "", "\u{0}"] {
        let h = b64(json!({"alg": "EdDSA", "typ": "at+jwt", "kid": bad_kid}).to_string().as_bytes());
        corpus.push((format!("kid {bad_kid:?}"), format!("{h}.{}.{}", parts[1], parts[2])));
    }
    // A key the attacker made: another Latchkey's key, under its own kid and under ours.
    let attacker = TestServer::start().await;
    let theirs = sign_with(&attacker, &claims);
    corpus.push(("attacker's key, attacker's kid".into(), theirs.clone()));
    let tp: Vec<&str> = theirs.split('.').collect();
    let ours_kid = b64(json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid}).to_string().as_bytes());
    corpus.push(("attacker's key, our kid".into(), format!("{ours_kid}.{}.{}", tp[1], tp[2])));
    // Embedded jwk, jku and x5u pointing at a server the test runs: it must never be contacted.
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_url = format!("http://{}/jwks.json", trap.local_addr().unwrap());
    let attacker_jwks: Value =
        serde_json::from_str(&send(c.get(attacker.url("/jwks.json"))).await.text).unwrap();
    let attacker_jwk = attacker_jwks["keys"][0].clone();
    let attacker_kid = attacker_jwk["kid"].as_str().unwrap().to_owned();
    for (what, extra) in [
        ("embedded jwk", json!({"jwk": attacker_jwk})),
        ("jku", json!({"jku": trap_url})),
        ("x5u", json!({"x5u": trap_url})),
    ] {
        let mut h = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": attacker_kid});
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        corpus.push((what.into(), format!("{}.{}.{}", b64(h.to_string().as_bytes()), tp[1], tp[2])));
    }
    // typ missing or JWT (an ID token or any other JWT is not an access token).
    for typ in [None, Some("JWT"), Some("id+jwt")] {
        let mut h = json!({"alg": "EdDSA", "kid": kid});
        if let Some(t) = typ {
            h["typ"] = json!(t);
        }
        corpus.push((
            format!("typ {typ:?}"),
            format!("{}.{}.{}", b64(h.to_string().as_bytes()), parts[1], parts[2]),
        ));
    }
    // Validly signed by the server's own key, but with the wrong claims.
    let now = claims["iat"].as_i64().unwrap();
    for (what, field, value) in [
        ("wrong iss", "iss", json!("http://evil.test")),
        ("wrong aud", "aud", json!("http://another-api.test")),
        ("expired", "exp", json!(now - 3600)),
        ("issued in the future", "iat", json!(now + 3600)),
        ("not yet valid", "nbf", json!(now + 3600)),
    ] {
        let mut c = claims.clone();
        c[field] = value;
        corpus.push((what.into(), sign_with(&s, &c)));
    }
    // Garbage, up to a megabyte of it.
    let mega = format!("{}.{}.{}", parts[0], "A".repeat(1024 * 1024), parts[2]);
    for g in ["garbage", "a.b.c", "....", "eyJ.eyJ.eyJ", "%00", &"A".repeat(8 * 1024), &mega] {
        corpus.push((format!("garbage {} ({} bytes)", &g[..g.len().min(12)], g.len()), g.to_owned()));
    }
    for (what, token) in &corpus {
        let a = api(&n, reqwest::Method::GET, "/whoami", token, None).await;
        assert_eq!(a.status, 401, "{what}: {}", a.text);
        assert!(
            a.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")),
            "{what}: {:?}",
            a.header("www-authenticate")
        );
        assert!(a.json["error"] == "invalid_token", "{what}: {}", a.text);
    }
    // The trap saw no connection.
    let accepted = tokio::time::timeout(Duration::from_millis(200), trap.accept()).await;
    assert!(accepted.is_err(), "the verifier contacted a URL from a token header");
    // The real token still works.
    assert_eq!(api(&n, reqwest::Method::GET, "/whoami", &at, None).await.status, 200);
}

#[tokio::test]
async fn revocations_reach_the_api_over_sse_quickly() {
    let s = TestServer::start().await;
    let c = http_client();
    // Polling once an hour: only the stream can deliver in time.
    let n = notes_api(&s, Duration::from_secs(3600)).await;
    s.register(&c, "timed", "correct horse battery").await;
    let mut delays = Vec::new();
    for _ in 0..10 {
        let login = s.login(&c, "timed", "correct horse battery").await;
        let at = login.str("access_token").to_owned();
        wait_for(|| async { api(&n, reqwest::Method::GET, "/whoami", &at, None).await.status == 200 }).await;
        let start = std::time::Instant::now();
        assert_eq!(send(c.post(s.url("/auth/logout")).bearer_auth(&at)).await.status, 204);
        loop {
            if api(&n, reqwest::Method::GET, "/whoami", &at, None).await.json["error_reason"] == "revoked" {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "revocation never arrived");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        delays.push(start.elapsed());
    }
    delays.sort();
    // Reported, not asserted (timing is for benchmarks): visible with --nocapture.
    eprintln!(
        "logout -> API rejection over SSE: p50 {:?}, max {:?}",
        delays[delays.len() / 2],
        delays[delays.len() - 1]
    );
}

#[tokio::test]
async fn key_rotation_while_the_api_runs() {
    // New keys sign at once here: the API runs on the real clock, so the test cannot move
    // the server's clock past the pre-publication period without making tokens look
    // issued in the future.
    let s = TestServer::start_with(|c| c.settings.key_publish_ahead = Duration::ZERO).await;
    let c = http_client();
    let n = notes_api(&s, Duration::from_millis(100)).await;
    let before = s.signed_in(&c, "rotating").await;
    let old = before.str("access_token").to_owned();
    wait_for(|| async { api(&n, reqwest::Method::GET, "/whoami", &old, None).await.status == 200 }).await;
    // The server's own rotation (a CLI would use its own config's key_publish_ahead), a
    // couple of seconds later so the new key is unambiguously the newest (well inside the
    // verifier's clock skew).
    s.clock.advance(Duration::from_secs(2));
    s.service.admin_rotate_keys().await.unwrap();
    let after = s.refresh(&c, before.str("refresh_token")).await;
    let new = after.str("access_token").to_owned();
    assert_ne!(new.split('.').next(), old.split('.').next(), "signed with the new key");
    // The new kid is unknown to the API: it refetches the keys once and accepts the token;
    // the old token still verifies too.
    assert_eq!(api(&n, reqwest::Method::GET, "/whoami", &new, None).await.status, 200);
    assert_eq!(api(&n, reqwest::Method::GET, "/notes", &old, None).await.status, 200);
}

#[tokio::test]
async fn feed_down_fails_closed_by_default_and_open_when_chosen() {
    for policy in [latchkey_verify::FeedPolicy::FailClosed, latchkey_verify::FeedPolicy::FailOpen] {
        let s = TestServer::start().await;
        let c = http_client();
        let n = notes_api_with(&s, |b| {
            b.poll_every(Duration::from_millis(100))
                .max_feed_staleness(Duration::from_millis(500))
                .feed_policy(policy)
        })
        .await;
        let login = s.signed_in(&c, "outage").await;
        let at = login.str("access_token").to_owned();
        wait_for(|| async { api(&n, reqwest::Method::GET, "/whoami", &at, None).await.status == 200 }).await;
        s.stop().await;
        match policy {
            latchkey_verify::FeedPolicy::FailClosed => {
                wait_for(|| async {
                    api(&n, reqwest::Method::GET, "/whoami", &at, None).await.status == 503
                })
                .await;
                let a = api(&n, reqwest::Method::GET, "/whoami", &at, None).await;
                assert_eq!(a.json["error"], "temporarily_unavailable");
                assert!(a.header("retry-after").is_some());
            }
            latchkey_verify::FeedPolicy::FailOpen => {
                tokio::time::sleep(Duration::from_millis(800)).await;
                assert_eq!(api(&n, reqwest::Method::GET, "/whoami", &at, None).await.status, 200);
            }
        }
    }
}

#[tokio::test]
async fn the_tower_layer_guards_a_whole_router() {
    use axum::Extension;
    use latchkey_verify::axum::{AccessToken, VerifyLayer};

    let s = TestServer::start().await;
    let c = http_client();
    let (client_id, client_secret) = crate::feed::feed_client(&s, "revocations:read").await;
    let verifier = latchkey_verify::Verifier::builder(latchkey_testkit::ISSUER)
        .endpoint(&s.base)
        .feed_credentials(client_id, client_secret)
        .build()
        .await
        .unwrap();
    let app = axum::Router::new()
        .route(
            "/sub",
            axum::routing::get(
                |Extension(AccessToken(t)): Extension<AccessToken>| async move { t.claims.sub },
            ),
        )
        // The extractor finds the layer's token and does not verify again.
        .route("/roles", axum::routing::get(|t: AccessToken| async move { t.0.claims.roles.join(",") }))
        .with_state(std::sync::Arc::clone(&verifier))
        .layer(VerifyLayer::new(verifier));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let _task = tokio::spawn(notes_api::serve(listener, app));
    let login = s.signed_in(&c, "layered").await;
    let at = login.str("access_token").to_owned();
    let get = |path: &'static str, token: Option<String>| {
        let c = c.clone();
        let url = format!("{base}{path}");
        async move {
            let mut req = c.get(url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            send(req).await
        }
    };
    wait_for(|| async { get("/sub", Some(at.clone())).await.status == 200 }).await;
    let sub = get("/sub", Some(at.clone())).await;
    assert_eq!(sub.text, s.get_auth(&c, "/auth/me", &at).await.str("sub"));
    assert_eq!(get("/roles", Some(at.clone())).await.status, 200);
    // Refusals are SPEC 5.5's, for every route behind the layer, even unknown ones.
    for path in ["/sub", "/roles", "/nowhere"] {
        let a = get(path, Some("garbage".into())).await;
        assert_eq!(a.status, 401, "{path}");
        assert_eq!(a.json["error_reason"], "malformed");
        assert!(a.header("www-authenticate").unwrap().starts_with("Bearer error=\"invalid_token\""));
        assert_eq!(get(path, None).await.status, 401);
    }
    // Logout reaches routes behind the layer too.
    assert_eq!(send(c.post(s.url("/auth/logout")).bearer_auth(&at)).await.status, 204);
    wait_for(|| async { get("/sub", Some(at.clone())).await.json["error_reason"] == "revoked" }).await;
}

/// An app's access token for `user` through the authorization code flow with the pages:
/// an app registered for `scope` asks for it, the user signs in and allows it.
async fn app_token(s: &TestServer, user: &str, scope: &str) -> String {
    use crate::oauth::{authorize_url, browser, consent, exchange, location, param, register_app, sign_in};

    let app = register_app(s, &["--scopes", scope]).await;
    let b = browser();
    let start = send(b.get(authorize_url(s, &app, &[("scope", scope)]))).await;
    assert_eq!(start.status, 303, "{}", start.text);
    let back = sign_in(s, &b, &location(&start), user).await;
    let to_app = consent(s, &b, &back, "allow").await;
    let code = param(&to_app, "code").unwrap_or_else(|| panic!("no code in {to_app}"));
    let tokens = exchange(s, &app, &code).await;
    assert_eq!(tokens.status, 200, "{}", tokens.text);
    tokens.str("access_token").to_owned()
}

/// A user with these roles, registered with the password the page helpers type.
async fn user_with_roles(s: &TestServer, username: &str, roles: &str) {
    s.register(&http_client(), username, "correct horse battery").await;
    s.cli(&["user", "set-roles", username, roles], "").await.unwrap();
}

/// Creates a note (any valid token may) and returns its path.
async fn new_note(n: &Notes, token: &str) -> String {
    let created = api(n, reqwest::Method::POST, "/notes", token, Some(json!({"text": "to delete"}))).await;
    assert_eq!(created.status, 201, "{}", created.text);
    format!("/notes/{}", created.json["id"])
}

/// Asserts a 403 `insufficient_scope` answer; returns its `WWW-Authenticate` challenge.
fn insufficient_scope(denied: &latchkey_testkit::Answer) -> &str {
    assert_eq!(
        (denied.status, &denied.json["error"]),
        (403, &json!("insufficient_scope")),
        "{}",
        denied.text
    );
    let challenge = denied.header("www-authenticate").unwrap();
    assert!(challenge.starts_with("Bearer error=\"insufficient_scope\""), "{challenge}");
    challenge
}

#[tokio::test]
async fn deleting_a_note_needs_the_manager_role_and_for_apps_the_notes_scope() {
    let s = TestServer::start().await;
    let c = http_client();
    let n = notes_api(&s, Duration::from_millis(100)).await;
    user_with_roles(&s, "boss", "manager").await;
    let manager = s.login(&c, "boss", "correct horse battery").await.str("access_token").to_owned();
    let staff = s.signed_in(&c, "staff").await.str("access_token").to_owned();
    wait_for(|| async { api(&n, reqwest::Method::GET, "/whoami", &manager, None).await.status == 200 }).await;

    // First-party tokens need only the role: they carry the scope `profile` and no `notes`.
    let note = new_note(&n, &staff).await;
    let denied = api(&n, reqwest::Method::DELETE, &note, &staff, None).await;
    let challenge = insufficient_scope(&denied);
    assert!(!challenge.contains(", scope="), "a role is no scope to ask for: {challenge}");
    let deleted = api(&n, reqwest::Method::DELETE, &note, &manager, None).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);

    // An app granted `notes` (and `roles`, so its token carries the user's roles) deletes
    // for a manager.
    let granted = app_token(&s, "boss", "notes roles").await;
    assert_eq!(
        api(&n, reqwest::Method::GET, "/whoami", &granted, None).await.json["roles"],
        json!(["manager"])
    );
    let note = new_note(&n, &granted).await;
    let deleted = api(&n, reqwest::Method::DELETE, &note, &granted, None).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);

    // An app granted only `openid profile` cannot, even for a manager and whatever roles
    // its token carries: the challenge names the scope to ask for (RFC 6750 §3.1).
    let signed_in_only = app_token(&s, "boss", "openid profile").await;
    let note = new_note(&n, &manager).await;
    let denied = api(&n, reqwest::Method::DELETE, &note, &signed_in_only, None).await;
    let challenge = insufficient_scope(&denied);
    assert!(challenge.ends_with(", scope=\"notes\""), "{challenge}");
    // The note is still there.
    let listed = api(&n, reqwest::Method::GET, "/notes", &manager, None).await;
    assert!(listed.json.as_array().unwrap().iter().any(|x| format!("/notes/{}", x["id"]) == note));
}

/// Depends on the server minting apps' tokens with `roles` only when the app was granted
/// the scope `roles` (SPEC 13).
#[tokio::test]
async fn an_app_without_the_roles_scope_cannot_act_with_the_users_roles() {
    let s = TestServer::start().await;
    let c = http_client();
    let n = notes_api(&s, Duration::from_millis(100)).await;
    user_with_roles(&s, "boss", "manager").await;
    let manager = s.login(&c, "boss", "correct horse battery").await.str("access_token").to_owned();
    wait_for(|| async { api(&n, reqwest::Method::GET, "/whoami", &manager, None).await.status == 200 }).await;
    let notes_only = app_token(&s, "boss", "notes").await;
    assert_eq!(api(&n, reqwest::Method::GET, "/whoami", &notes_only, None).await.json["roles"], json!([]));
    let note = new_note(&n, &manager).await;
    let denied = api(&n, reqwest::Method::DELETE, &note, &notes_only, None).await;
    assert_eq!(
        (denied.status, &denied.json["error"]),
        (403, &json!("insufficient_scope")),
        "{}",
        denied.text
    );
    assert_eq!(denied.json["error_description"], "The access token lacks the role manager.");
}
