//! DPoP at the token-issuing endpoints (SPEC 12): bound sessions and tokens, key
//! continuity deciding duplicate from theft, every kind of bad proof at every endpoint,
//! replay across requests, server nonces, and many parallel refreshes of a bound session.

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::future::join_all;
use latchkey_dpop::ProofKey;
use latchkey_testkit::{Answer, ISSUER};
use serde_json::{Value, json};

use crate::oauth::{App, REDIRECT, VERIFIER, browser, first_code, register_app};
use crate::{TestServer, http_client, send};

const PASSWORD: &str = "correct horse battery";

fn now(s: &TestServer) -> i64 {
    latchkey_core::Clock::now(&*s.clock).0
}

fn claims(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// A fresh proof by `key` for `POST path` on the test server, with the server's time.
fn proof(s: &TestServer, key: &ProofKey, path: &str) -> String {
    key.proof("POST", &format!("{ISSUER}{path}"), now(s), None, None).unwrap()
}

/// `POST` JSON with a `DPoP` header, when given one.
async fn post(s: &TestServer, path: &str, body: Value, dpop: Option<&str>) -> Answer {
    let mut req = http_client().post(s.url(path)).json(&body);
    if let Some(p) = dpop {
        req = req.header("DPoP", p);
    }
    send(req).await
}

async fn login(s: &TestServer, user: &str, key: Option<&ProofKey>) -> Answer {
    let p = key.map(|k| proof(s, k, "/auth/login"));
    post(s, "/auth/login", json!({"username": user, "password": PASSWORD}), p.as_deref()).await
}

async fn refresh(s: &TestServer, token: &str, key: Option<&ProofKey>) -> Answer {
    let p = key.map(|k| proof(s, k, "/auth/refresh"));
    post(s, "/auth/refresh", json!({"refresh_token": token}), p.as_deref()).await
}

/// Asserts a token response bound to `key`.
fn assert_bound(a: &Answer, key: &ProofKey) {
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.str("token_type"), "DPoP");
    assert_eq!(claims(a.str("access_token"))["cnf"]["jkt"], key.thumbprint().as_str());
}

async fn events_of_kind(s: &TestServer, kind: &str) -> usize {
    s.store().list_security_events(1000).await.unwrap().iter().filter(|e| e.kind == kind).count()
}

async fn metric(s: &TestServer, line: &str) -> bool {
    send(http_client().get(s.url("/metrics"))).await.text.lines().any(|l| l == line)
}

#[tokio::test]
async fn a_session_opened_with_a_proof_is_bound_to_its_key_for_life() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "dora", PASSWORD).await;
    let key = ProofKey::generate_es256().unwrap();
    let first = login(&s, "dora", Some(&key)).await;
    assert_bound(&first, &key);
    // Each refresh needs a proof from the same key, and stays bound.
    let mut rt = first.str("refresh_token").to_owned();
    for _ in 0..3 {
        let next = refresh(&s, &rt, Some(&key)).await;
        assert_bound(&next, &key);
        rt = next.str("refresh_token").to_owned();
    }
    // A Bearer sign-in stays Bearer: no cnf, token_type Bearer.
    let bearer = login(&s, "dora", None).await;
    assert_eq!(bearer.str("token_type"), "Bearer");
    assert!(claims(bearer.str("access_token")).get("cnf").is_none());
    // The discovery document says which algorithms proofs may use.
    let d = send(c.get(s.url("/.well-known/openid-configuration"))).await;
    assert_eq!(d.json["dpop_signing_alg_values_supported"], json!(["ES256", "EdDSA", "Ed25519"]));
}

#[tokio::test]
async fn the_live_token_without_the_key_or_with_another_revokes_the_session() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "eve", PASSWORD).await;
    let owner = ProofKey::generate_ed25519().unwrap();
    for (round, thief) in [None, Some(ProofKey::generate_es256().unwrap())].into_iter().enumerate() {
        let first = login(&s, "eve", Some(&owner)).await;
        assert_bound(&first, &owner);
        let rt = first.str("refresh_token");
        // A copy of the live token, presented without the key: theft.
        let stolen = refresh(&s, rt, thief.as_ref()).await;
        assert_eq!(stolen.status, 400, "{}", stolen.text);
        assert_eq!(stolen.json["error"], "invalid_grant");
        assert_eq!(stolen.json["error_reason"], "reuse_detected");
        // The session is over for the owner too, and its access token is refused.
        assert_eq!(refresh(&s, rt, Some(&owner)).await.json["error_reason"], "reuse_detected");
        assert_eq!(s.get_auth(&c, "/auth/me", first.str("access_token")).await.status, 401);
        assert_eq!(events_of_kind(&s, "dpop_key_mismatch").await, round + 1);
    }
    assert!(metric(&s, "latchkey_refreshes_total{result=\"dpop_proof_missing\"} 1").await);
    assert!(metric(&s, "latchkey_refreshes_total{result=\"dpop_key_mismatch\"} 1").await);
    // Both are thefts caught, where operators' alerts look.
    assert!(metric(&s, "latchkey_refresh_reuse_detections_total 2").await);
    // The feed published the revocations.
    let feed = s.store().list_feed_events(0, latchkey_core::Clock::now(&*s.clock), 100).await.unwrap();
    assert_eq!(feed.len(), 2, "{feed:?}");
}

#[tokio::test]
async fn a_duplicate_with_the_sessions_key_is_benign_and_with_another_key_is_theft() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "fay", PASSWORD).await;
    let key = ProofKey::generate_es256().unwrap();

    // Same key, inside the window, from another user agent: the same successor.
    let first = login(&s, "fay", Some(&key)).await;
    let rt = first.str("refresh_token");
    let rotated = refresh(&s, rt, Some(&key)).await;
    assert_bound(&rotated, &key);
    s.clock.advance(Duration::from_secs(5));
    let p = proof(&s, &key, "/auth/refresh");
    let other_agent = reqwest::Client::builder().user_agent("another-agent/2").build().unwrap();
    let dup =
        send(other_agent.post(s.url("/auth/refresh")).header("DPoP", p).json(&json!({"refresh_token": rt})))
            .await;
    assert_bound(&dup, &key);
    assert_eq!(dup.str("refresh_token"), rotated.str("refresh_token"));
    assert_eq!(events_of_kind(&s, "dpop_key_mismatch").await, 0);

    // Another key, inside the window, before the successor was used: theft.
    let first = login(&s, "fay", Some(&key)).await;
    let rt = first.str("refresh_token");
    let rotated = refresh(&s, rt, Some(&key)).await;
    let thief = ProofKey::generate_es256().unwrap();
    let stolen = refresh(&s, rt, Some(&thief)).await;
    assert_eq!(stolen.json["error_reason"], "reuse_detected", "{}", stolen.text);
    assert_eq!(
        refresh(&s, rotated.str("refresh_token"), Some(&key)).await.json["error_reason"],
        "reuse_detected"
    );
    assert_eq!(events_of_kind(&s, "dpop_key_mismatch").await, 1);
    let _ = c;
}

#[tokio::test]
async fn parallel_refreshes_of_a_bound_session_yield_one_successor() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "gil", PASSWORD).await;
    let key = ProofKey::generate_es256().unwrap();
    for round in 0..10 {
        let first = login(&s, "gil", Some(&key)).await;
        let rt = first.str("refresh_token").to_owned();
        // Each request its own proof, all from the session's key.
        let answers = join_all((0..24).map(|_| refresh(&s, &rt, Some(&key)))).await;
        let successors: HashSet<&str> = answers
            .iter()
            .map(|a| {
                assert_bound(a, &key);
                a.str("refresh_token")
            })
            .collect();
        assert_eq!(successors.len(), 1, "round {round}");
        assert_eq!(s.live_refresh_tokens(first.str("session_id")).await, 1, "round {round}");
    }
    assert_eq!(events_of_kind(&s, "dpop_key_mismatch").await, 0);
}

/// `GET path` on the server with a bound token and a fresh proof for it.
fn dpop_get(
    s: &TestServer,
    c: &reqwest::Client,
    path: &str,
    token: &str,
    key: &ProofKey,
) -> reqwest::RequestBuilder {
    let p = key.proof("GET", &format!("{ISSUER}{path}"), now(s), Some(token), None).unwrap();
    c.get(s.url(path)).header("Authorization", format!("DPoP {token}")).header("DPoP", p)
}

#[tokio::test]
async fn a_bound_token_works_at_the_servers_endpoints_only_with_its_proof() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "lou", PASSWORD).await;
    let key = ProofKey::generate_es256().unwrap();
    let signed_in = login(&s, "lou", Some(&key)).await;
    let at = signed_in.str("access_token");
    // As Bearer: refused with a DPoP challenge.
    let bearer = s.get_auth(&c, "/auth/me", at).await;
    assert_eq!(bearer.status, 401);
    assert_eq!(bearer.json["error_reason"], "dpop_required");
    let challenge = bearer.header("www-authenticate").unwrap();
    assert!(
        challenge.starts_with("DPoP error=\"invalid_token\"")
            && challenge.contains("algs=\"ES256 EdDSA Ed25519\""),
        "{challenge}"
    );
    // With a proof: served; the same proof again is not.
    let p = key.proof("GET", &format!("{ISSUER}/auth/me"), now(&s), Some(at), None).unwrap();
    let me = || c.get(s.url("/auth/me")).header("Authorization", format!("DPoP {at}"));
    assert_eq!(send(me().header("DPoP", &p)).await.status, 200);
    let replay = send(me().header("DPoP", &p)).await;
    assert_eq!((replay.status, replay.json["error"].as_str()), (401, Some("invalid_dpop_proof")));
    assert!(replay.header("www-authenticate").unwrap().starts_with("DPoP error=\"invalid_dpop_proof\""));
    // Another key's proof; a proof without ath; no proof at all.
    let other = ProofKey::generate_es256().unwrap();
    let a = send(dpop_get(&s, &c, "/auth/me", at, &other)).await;
    assert_eq!((a.status, a.json["error_reason"].as_str()), (401, Some("dpop_key_mismatch")));
    let no_ath = key.proof("GET", &format!("{ISSUER}/auth/me"), now(&s), None, None).unwrap();
    assert_eq!(send(me().header("DPoP", no_ath)).await.json["error"], "invalid_dpop_proof");
    assert_eq!(send(me()).await.json["error"], "invalid_dpop_proof");
    // A Bearer token sent as DPoP is not bound to the proof's key.
    let plain = login(&s, "lou", None).await;
    let a = send(dpop_get(&s, &c, "/auth/me", plain.str("access_token"), &key)).await;
    assert_eq!(a.json["error_reason"], "dpop_key_mismatch");
    // Logout takes the bound token with its proof.
    let p = key.proof("POST", &format!("{ISSUER}/auth/logout"), now(&s), Some(at), None).unwrap();
    let out =
        send(c.post(s.url("/auth/logout")).header("Authorization", format!("DPoP {at}")).header("DPoP", p))
            .await;
    assert_eq!(out.status, 204, "{}", out.text);
    assert_eq!(
        refresh(&s, signed_in.str("refresh_token"), Some(&key)).await.json["error_reason"],
        "logged_out"
    );
}

#[tokio::test]
async fn notes_api_takes_bound_tokens_with_proofs_and_hears_of_theft_through_the_feed() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "max", PASSWORD).await;
    let n = crate::notes::notes_api_with(&s, |b| b.poll_every(Duration::from_millis(100))).await;
    let key = ProofKey::generate_ed25519().unwrap();
    let signed_in = login(&s, "max", Some(&key)).await;
    let at = signed_in.str("access_token").to_owned();
    let whoami = |token: &str, key: Option<&ProofKey>| {
        let url = format!("{}/whoami", n.base);
        let mut req = c.get(&url);
        req = match key {
            Some(k) => req
                .header("Authorization", format!("DPoP {token}"))
                .header("DPoP", k.proof("GET", &url, now(&s), Some(token), None).unwrap()),
            None => req.bearer_auth(token),
        };
        send(req)
    };
    crate::notes::wait_for(|| async { whoami(&at, Some(&key)).await.status == 200 }).await;
    let bearer = whoami(&at, None).await;
    assert_eq!((bearer.status, bearer.json["error_reason"].as_str()), (401, Some("dpop_required")));
    // The API keeps its own replay cache: one proof, sent twice, passes once.
    let url = format!("{}/whoami", n.base);
    let p = key.proof("GET", &url, now(&s), Some(&at), None).unwrap();
    let twice = || c.get(&url).header("Authorization", format!("DPoP {at}")).header("DPoP", &p);
    assert_eq!(send(twice()).await.status, 200);
    let replayed = send(twice()).await;
    assert_eq!((replayed.status, replayed.json["error"].as_str()), (401, Some("invalid_dpop_proof")));
    assert!(bearer.header("www-authenticate").unwrap().starts_with("DPoP "));
    // The refresh token is copied and used without the key: the session is revoked, and
    // the API refuses the owner's access token once the feed says so.
    let stolen = refresh(&s, signed_in.str("refresh_token"), None).await;
    assert_eq!(stolen.json["error_reason"], "reuse_detected");
    crate::notes::wait_for(|| async { whoami(&at, Some(&key)).await.json["error_reason"] == "revoked" })
        .await;
}

/// Every kind of bad proof, refused with `400 invalid_dpop_proof`.
fn bad_proofs(s: &TestServer, path: &str) -> Vec<(&'static str, String)> {
    let key = ProofKey::generate_es256().unwrap();
    let url = format!("{ISSUER}{path}");
    let t = now(s);
    let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.public_jwk()});
    let claims = |htm: &str, htu: &str, iat: i64| json!({"jti": format!("j-{iat}-{htm}"), "htm": htm, "htu": htu, "iat": iat});
    let other = ProofKey::generate_es256().unwrap();
    let mut private = key.public_jwk().clone();
    private["d"] = json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let none_header = URL_SAFE_NO_PAD
        .encode(json!({"typ": "dpop+jwt", "alg": "none", "jwk": key.public_jwk()}).to_string());
    let none_claims = URL_SAFE_NO_PAD.encode(claims("POST", &url, t).to_string());
    vec![
        ("htm", key.proof("GET", &url, t, None, None).unwrap()),
        ("htu", key.proof("POST", &format!("{ISSUER}/elsewhere"), t, None, None).unwrap()),
        ("htu host", key.proof("POST", &format!("https://evil.example{path}"), t, None, None).unwrap()),
        ("iat past", key.proof("POST", &url, t - 120, None, None).unwrap()),
        ("iat future", key.proof("POST", &url, t + 120, None, None).unwrap()),
        ("wrong key", other.sign(&header, &claims("POST", &url, t)).unwrap()),
        ("alg none", format!("{none_header}.{none_claims}.")),
        (
            "private key",
            key.sign(&json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": private}), &claims("POST", &url, t))
                .unwrap(),
        ),
        (
            "typ",
            key.sign(
                &json!({"typ": "JWT", "alg": "ES256", "jwk": key.public_jwk()}),
                &claims("POST", &url, t),
            )
            .unwrap(),
        ),
        ("ath at a token endpoint", key.proof("POST", &url, t, Some("some-token"), None).unwrap()),
        ("garbage", "not.a.proof".to_owned()),
        ("huge", "A".repeat(3000)),
    ]
}

#[tokio::test]
async fn every_bad_proof_is_refused_at_every_endpoint_and_nothing_is_issued() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "hal", PASSWORD).await;
    let live = login(&s, "hal", None).await;
    let app = register_app(&s, &["--grant-types", "client_credentials", "--scopes", "notes:read"]).await;
    let secret = app.secret.clone().unwrap();
    let bodies: Vec<(&str, Value)> = vec![
        ("/auth/login", json!({"username": "hal", "password": PASSWORD})),
        ("/auth/refresh", json!({"refresh_token": live.str("refresh_token")})),
        ("/auth/login/mfa", json!({"mfa_token": "lkm_x", "method": "totp", "code": "123456"})),
        ("/auth/passkeys/login/finish", json!({"challenge_id": "x", "credential": {}})),
    ];
    for (path, body) in &bodies {
        for (what, p) in bad_proofs(&s, path) {
            let a = post(&s, path, body.clone(), Some(&p)).await;
            assert_eq!(a.status, 400, "{path} {what}: {}", a.text);
            assert_eq!(a.json["error"], "invalid_dpop_proof", "{path} {what}: {}", a.text);
        }
    }
    for (what, p) in bad_proofs(&s, "/oauth/token") {
        let req = c
            .post(s.url("/oauth/token"))
            .basic_auth(&app.id, Some(&secret))
            .header("DPoP", p)
            .form(&[("grant_type", "client_credentials")]);
        let a = send(req).await;
        assert_eq!(
            (a.status, a.json["error"].as_str()),
            (400, Some("invalid_dpop_proof")),
            "{what}: {}",
            a.text
        );
    }
    // Two DPoP headers.
    let key = ProofKey::generate_es256().unwrap();
    let url = format!("{ISSUER}/auth/login");
    let two = c
        .post(s.url("/auth/login"))
        .header("DPoP", key.proof("POST", &url, now(&s), None, None).unwrap())
        .header("DPoP", key.proof("POST", &url, now(&s), None, None).unwrap())
        .json(&json!({"username": "hal", "password": PASSWORD}));
    assert_eq!(send(two).await.json["error"], "invalid_dpop_proof");
    // Nothing was issued or spent: the refresh token still rotates, once.
    let rotated = s.refresh(&c, live.str("refresh_token")).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let sessions = s.get_auth(&c, "/auth/sessions", rotated.str("access_token")).await;
    assert_eq!(sessions.json["sessions"].as_array().unwrap().len(), 1, "{}", sessions.text);
}

#[tokio::test]
async fn a_proof_is_accepted_once() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "ida", PASSWORD).await;
    let key = ProofKey::generate_ed25519().unwrap();
    let p = proof(&s, &key, "/auth/login");
    let body = json!({"username": "ida", "password": PASSWORD});
    assert_bound(&post(&s, "/auth/login", body.clone(), Some(&p)).await, &key);
    let again = post(&s, "/auth/login", body.clone(), Some(&p)).await;
    assert_eq!(
        (again.status, again.json["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "{}",
        again.text
    );
    // Replayed in parallel: exactly one gets through.
    let p = proof(&s, &key, "/auth/login");
    let answers = join_all((0..12).map(|_| post(&s, "/auth/login", body.clone(), Some(&p)))).await;
    assert_eq!(answers.iter().filter(|a| a.status == 200).count(), 1);
    assert!(answers.iter().all(|a| a.status == 200 || a.json["error"] == "invalid_dpop_proof"));
    // A proof dated a minute ahead passes for two minutes; it is remembered as long, even
    // across the maintenance that forgets spent proofs.
    let ahead = key.proof("POST", &format!("{ISSUER}/auth/login"), now(&s) + 60, None, None).unwrap();
    assert_eq!(post(&s, "/auth/login", body.clone(), Some(&ahead)).await.status, 200);
    s.clock.advance(Duration::from_secs(120));
    s.service.maintain().await.unwrap();
    let late = post(&s, "/auth/login", body, Some(&ahead)).await;
    assert_eq!(late.json["error"], "invalid_dpop_proof", "{}", late.text);
    assert!(late.json["error_description"].as_str().unwrap().contains("used before"), "{}", late.text);
}

#[tokio::test]
async fn with_nonces_on_a_proof_must_carry_a_current_one() {
    let s = TestServer::start_with(|c| c.settings.dpop_nonce = true).await;
    let c = http_client();
    s.register(&c, "jo", PASSWORD).await;
    let key = ProofKey::generate_es256().unwrap();
    let url = format!("{ISSUER}/auth/login");
    let body = json!({"username": "jo", "password": PASSWORD});
    let first = post(&s, "/auth/login", body.clone(), Some(&proof(&s, &key, "/auth/login"))).await;
    assert_eq!((first.status, first.json["error"].as_str()), (400, Some("use_dpop_nonce")), "{}", first.text);
    let nonce = first.header("dpop-nonce").unwrap().to_owned();
    let made_up = key.proof("POST", &url, now(&s), None, Some("made-up")).unwrap();
    assert_eq!(post(&s, "/auth/login", body.clone(), Some(&made_up)).await.json["error"], "use_dpop_nonce");
    let signed_in = post(
        &s,
        "/auth/login",
        body.clone(),
        Some(&key.proof("POST", &url, now(&s), None, Some(&nonce)).unwrap()),
    )
    .await;
    assert_bound(&signed_in, &key);
    // Every answer offers the current nonce; the previous one still works for a while, not forever.
    assert!(signed_in.header("dpop-nonce").is_some());
    // At a resource, the nonce is asked for with a 401 DPoP challenge (RFC 9449 section 9).
    let at = signed_in.str("access_token");
    let me = send(dpop_get(&s, &c, "/auth/me", at, &key)).await;
    assert_eq!((me.status, me.json["error"].as_str()), (401, Some("use_dpop_nonce")), "{}", me.text);
    assert!(me.header("www-authenticate").unwrap().starts_with("DPoP error=\"use_dpop_nonce\""));
    let fresh = me.header("dpop-nonce").unwrap().to_owned();
    let p = key.proof("GET", &format!("{ISSUER}/auth/me"), now(&s), Some(at), Some(&fresh)).unwrap();
    let served =
        send(c.get(s.url("/auth/me")).header("Authorization", format!("DPoP {at}")).header("DPoP", p)).await;
    assert_eq!(served.status, 200, "{}", served.text);
    s.clock.advance(Duration::from_secs(300));
    let still = key.proof("POST", &url, now(&s), None, Some(&nonce)).unwrap();
    assert_eq!(post(&s, "/auth/login", body.clone(), Some(&still)).await.status, 200);
    s.clock.advance(Duration::from_secs(600));
    let stale = key.proof("POST", &url, now(&s), None, Some(&nonce)).unwrap();
    assert_eq!(post(&s, "/auth/login", body, Some(&stale)).await.json["error"], "use_dpop_nonce");
    // Bearer requests need no nonce.
    assert_eq!(login(&s, "jo", None).await.status, 200);
}

/// The code flow: a public app's session is bound for life; a confidential app's access
/// tokens are bound per request, its refresh tokens to its credentials (RFC 9449 §5).
#[tokio::test]
async fn apps_get_bound_tokens_through_the_code_flow_and_client_credentials() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "kim", PASSWORD).await;
    let key = ProofKey::generate_es256().unwrap();
    let exchange = |app: &App, code: String, key: &ProofKey| {
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code),
            ("redirect_uri", REDIRECT.to_owned()),
            ("code_verifier", VERIFIER.to_owned()),
        ];
        let mut req = c.post(s.url("/oauth/token")).header("DPoP", proof(&s, key, "/oauth/token"));
        match &app.secret {
            Some(secret) => req = req.basic_auth(&app.id, Some(secret)),
            None => form.push(("client_id", app.id.clone())),
        }
        send(req.form(&form))
    };
    let refresh = |app: &App, rt: &str, key: Option<&ProofKey>| {
        let mut form = vec![("grant_type", "refresh_token".to_owned()), ("refresh_token", rt.to_owned())];
        let mut req = c.post(s.url("/oauth/token"));
        if let Some(k) = key {
            req = req.header("DPoP", proof(&s, k, "/oauth/token"));
        }
        match &app.secret {
            Some(secret) => req = req.basic_auth(&app.id, Some(secret)),
            None => form.push(("client_id", app.id.clone())),
        }
        send(req.form(&form))
    };

    let public = register_app(&s, &["--public"]).await;
    let code = first_code(&s, &browser(), &public, "kim").await;
    let tokens = exchange(&public, code, &key).await;
    assert_bound(&tokens, &key);
    // The app's bound token reads userinfo with a proof, and not as Bearer.
    let at = tokens.str("access_token");
    let info = send(dpop_get(&s, &c, "/oauth/userinfo", at, &key)).await;
    assert_eq!(info.status, 200, "{}", info.text);
    assert_eq!(s.get_auth(&c, "/oauth/userinfo", at).await.json["error_reason"], "dpop_required");
    let rt = tokens.str("refresh_token");
    let next = refresh(&public, rt, Some(&key)).await;
    assert_bound(&next, &key);
    let stolen = refresh(&public, next.str("refresh_token"), None).await;
    assert_eq!(stolen.json["error_reason"], "reuse_detected", "{}", stolen.text);

    let confidential = register_app(&s, &[]).await;
    let code = first_code(&s, &browser(), &confidential, "kim").await;
    let tokens = exchange(&confidential, code, &key).await;
    assert_bound(&tokens, &key);
    let other = ProofKey::generate_ed25519().unwrap();
    let next = refresh(&confidential, tokens.str("refresh_token"), Some(&other)).await;
    assert_bound(&next, &other);
    let bearer = refresh(&confidential, next.str("refresh_token"), None).await;
    assert_eq!(bearer.str("token_type"), "Bearer", "{}", bearer.text);

    let machine = register_app(&s, &["--grant-types", "client_credentials", "--scopes", "notes:read"]).await;
    let req = c
        .post(s.url("/oauth/token"))
        .basic_auth(&machine.id, machine.secret.as_deref())
        .header("DPoP", proof(&s, &key, "/oauth/token"))
        .form(&[("grant_type", "client_credentials")]);
    let machine_token = send(req).await;
    assert_bound(&machine_token, &key);
    // Introspection tells a resource server the token's key (RFC 9449 section 6.2).
    let seen = send(
        c.post(s.url("/oauth/introspect"))
            .basic_auth(&machine.id, machine.secret.as_deref())
            .form(&[("token", machine_token.str("access_token"))]),
    )
    .await;
    assert_eq!(seen.json["active"], true, "{}", seen.text);
    assert_eq!(seen.json["token_type"], "DPoP");
    assert_eq!(seen.json["cnf"]["jkt"], key.thumbprint().as_str());
}

/// RFC 9449 section 10: `dpop_jkt` at the authorization endpoint binds the code to a key,
/// through sign-in and consent; another key (or none) cannot redeem it.
#[tokio::test]
async fn dpop_jkt_binds_the_code_to_the_key_that_asked_for_it() {
    use crate::oauth::{authorize_url, consent, location, param, sign_in};
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "nia", PASSWORD).await;
    let app = register_app(&s, &["--public"]).await;
    let key = ProofKey::generate_es256().unwrap();
    let other = ProofKey::generate_es256().unwrap();
    let code_for = |b: reqwest::Client| {
        let url = authorize_url(&s, &app, &[("dpop_jkt", key.thumbprint().as_str())]);
        let s = &s;
        async move {
            let start = send(b.get(url)).await;
            let mut next = location(&start);
            if next.starts_with("/login") {
                next = sign_in(s, &b, &next, "nia").await;
            }
            if next.starts_with("/oauth/authorize") {
                next = consent(s, &b, &next, "allow").await;
            }
            param(&next, "code").unwrap_or_else(|| panic!("no code in {next}"))
        }
    };
    let exchange = |code: &str, k: Option<&ProofKey>| {
        let mut req = c.post(s.url("/oauth/token"));
        if let Some(k) = k {
            req = req.header("DPoP", proof(&s, k, "/oauth/token"));
        }
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("client_id", app.id.as_str()),
        ];
        send(req.form(&form))
    };
    let b = browser();
    for wrong in [Some(&other), None] {
        let code = code_for(b.clone()).await;
        let refused = exchange(&code, wrong).await;
        assert_eq!(
            (refused.status, refused.json["error"].as_str()),
            (400, Some("invalid_grant")),
            "{}",
            refused.text
        );
        assert!(refused.text.contains("dpop_jkt"), "{}", refused.text);
    }
    let code = code_for(b.clone()).await;
    assert_bound(&exchange(&code, Some(&key)).await, &key);
    // Not a thumbprint: refused at the authorization endpoint, back to the app.
    let bad = send(b.get(authorize_url(&s, &app, &[("dpop_jkt", "not-a-thumbprint")]))).await;
    assert_eq!(param(&location(&bad), "error").as_deref(), Some("invalid_request"));
}

/// From the review: `/auth/mfa/totp/confirm` takes both an access token and, for enrolment
/// at sign-in, a proof of its own; a bound session's one proof (with `ath`) is checked once.
#[tokio::test]
async fn a_bound_session_sets_up_an_authenticator_app() {
    use latchkey_core::totp::TotpSecret;
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "ola", PASSWORD).await;
    let key = ProofKey::generate_es256().unwrap();
    let signed_in = login(&s, "ola", Some(&key)).await;
    let at = signed_in.str("access_token");
    let post_bound = |path: &str, body: Value| {
        let p = key.proof("POST", &format!("{ISSUER}{path}"), now(&s), Some(at), None).unwrap();
        send(c.post(s.url(path)).header("Authorization", format!("DPoP {at}")).header("DPoP", p).json(&body))
    };
    let begun = post_bound("/auth/mfa/totp", json!({})).await;
    assert_eq!(begun.status, 200, "{}", begun.text);
    let secret = TotpSecret::from_base32(begun.str("secret")).unwrap();
    let confirmed =
        post_bound("/auth/mfa/totp/confirm", json!({"code": crate::mfa::code(&s, &secret, 0)})).await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.text);
    assert!(confirmed.json["recovery_codes"].is_array(), "{}", confirmed.text);
}
