//! Risk at every refresh (SPEC 12) over HTTP: the test server trusts 127.0.0.1 as a proxy,
//! so each request says which network it comes from in `X-Forwarded-For`. Signals alone
//! and together against the default policy, the step-up wait and `POST /auth/step-up`
//! (password, code, DPoP-bound), revocation, and `risk_policy = off`.

use std::time::Duration;

use latchkey_core::risk::RiskPolicy;
use latchkey_dpop::ProofKey;
use latchkey_testkit::{Answer, ISSUER};
use serde_json::{Value, json};

use crate::{TestServer, http_client, send};

const PASSWORD: &str = "correct horse battery";
const CHROME: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";
const HOME: &str = "198.51.100.7";
const ELSEWHERE: &str = "203.0.113.50";

async fn server(policy: Option<RiskPolicy>) -> TestServer {
    TestServer::start_with(move |c| {
        c.trusted_proxies = vec!["127.0.0.1".into()];
        if let Some(p) = policy {
            c.settings.risk = p;
        }
    })
    .await
}

/// `POST path` with JSON, from `ip` with `agent`.
async fn post_from(s: &TestServer, path: &str, ip: &str, agent: &str, body: Value) -> Answer {
    send(
        http_client().post(s.url(path)).header("x-forwarded-for", ip).header("user-agent", agent).json(&body),
    )
    .await
}

async fn sign_in(s: &TestServer, user: &str) -> Answer {
    s.register(&http_client(), user, PASSWORD).await;
    let a = post_from(s, "/auth/login", HOME, CHROME, json!({"username": user, "password": PASSWORD})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    a
}

async fn refresh_from(s: &TestServer, token: &str, ip: &str, agent: &str) -> Answer {
    post_from(s, "/auth/refresh", ip, agent, json!({"refresh_token": token})).await
}

async fn risk_events(s: &TestServer) -> Vec<String> {
    let events = s.store().list_security_events(1000).await.unwrap();
    events.into_iter().filter(|e| e.kind == "refresh_risk").filter_map(|e| e.detail).collect()
}

async fn metric(s: &TestServer, line: &str) -> bool {
    send(http_client().get(s.url("/metrics"))).await.text.lines().any(|l| l == line)
}

#[tokio::test]
async fn one_signal_alone_is_allowed_and_two_shorten_the_access_token() {
    let s = server(None).await;
    let first = sign_in(&s, "ana").await;
    // Each alone, minutes apart: a new network; then another browser family (the session's
    // last network is now ELSEWHERE, so this one comes from there).
    s.clock.advance(Duration::from_secs(270));
    let moved = refresh_from(&s, first.str("refresh_token"), ELSEWHERE, CHROME).await;
    assert_eq!((moved.status, moved.json["expires_in"].as_u64()), (200, Some(300)), "{}", moved.text);
    s.clock.advance(Duration::from_secs(270));
    let browser = refresh_from(&s, moved.str("refresh_token"), ELSEWHERE, FIREFOX).await;
    assert_eq!((browser.status, browser.json["expires_in"].as_u64()), (200, Some(300)), "{}", browser.text);
    // Fast: seconds after the last refresh (in the sign-in's browser again).
    s.clock.advance(Duration::from_secs(5));
    let fast = refresh_from(&s, browser.str("refresh_token"), ELSEWHERE, CHROME).await;
    assert_eq!((fast.status, fast.json["expires_in"].as_u64()), (200, Some(300)), "{}", fast.text);
    assert_eq!(risk_events(&s).await, Vec::<String>::new());

    // A new network and another browser family together: a 60-second access token.
    let other = sign_in(&s, "ben").await;
    s.clock.advance(Duration::from_secs(270));
    let both = refresh_from(&s, other.str("refresh_token"), ELSEWHERE, FIREFOX).await;
    assert_eq!((both.status, both.json["expires_in"].as_u64()), (200, Some(60)), "{}", both.text);
    let events = risk_events(&s).await;
    assert_eq!(events, ["shorten: score 3 (new_network, agent_family_changed)"]);
    assert!(metric(&s, "latchkey_refresh_risk_actions_total{action=\"shorten\"} 1").await);
}

#[tokio::test]
async fn every_repeated_risk_decision_is_recorded_and_counted() {
    let s = server(None).await;
    let first = sign_in(&s, "dee").await;
    // Another browser family refreshing every few seconds: each refresh is shortened.
    let mut rt = first.str("refresh_token").to_owned();
    for _ in 0..4 {
        s.clock.advance(Duration::from_secs(5));
        let r = refresh_from(&s, &rt, HOME, FIREFOX).await;
        assert_eq!((r.status, r.json["expires_in"].as_u64()), (200, Some(60)), "{}", r.text);
        rt = r.str("refresh_token").to_owned();
    }
    // SPEC 12: every non-`allow` decision is a security event, repeated or not.
    assert_eq!(risk_events(&s).await, ["shorten: score 3 (agent_family_changed, fast_cadence)"; 4]);
    assert!(metric(&s, "latchkey_refresh_risk_actions_total{action=\"shorten\"} 4").await);
    // The same from another address is recorded again: it may be someone else. (Moving
    // there is a risk of its own; then the same fast refreshes from there.)
    s.clock.advance(Duration::from_secs(180));
    let r = refresh_from(&s, &rt, ELSEWHERE, FIREFOX).await;
    assert_eq!(r.json["expires_in"].as_u64(), Some(60), "{}", r.text);
    rt = r.str("refresh_token").to_owned();
    s.clock.advance(Duration::from_secs(5));
    let r = refresh_from(&s, &rt, ELSEWHERE, FIREFOX).await;
    assert_eq!(r.json["expires_in"].as_u64(), Some(60), "{}", r.text);
    let events = risk_events(&s).await;
    assert_eq!(events.len(), 6, "{events:?}");
    assert_eq!(events.iter().filter(|d| d.ends_with("(agent_family_changed, fast_cadence)")).count(), 5);
    // Another session showing the same thing has its own event.
    let second = sign_in(&s, "eve").await;
    s.clock.advance(Duration::from_secs(5));
    let r = refresh_from(&s, second.str("refresh_token"), HOME, FIREFOX).await;
    assert_eq!(r.json["expires_in"].as_u64(), Some(60), "{}", r.text);
    assert_eq!(risk_events(&s).await.len(), 7);
}

#[tokio::test]
async fn a_risky_refresh_waits_for_the_user_to_step_up() {
    let s = server(None).await;
    let first = sign_in(&s, "cy").await;
    let rt = first.str("refresh_token");
    // From another network a minute later (both in use at once), in another browser.
    s.clock.advance(Duration::from_secs(60));
    let risky = refresh_from(&s, rt, ELSEWHERE, FIREFOX).await;
    assert_eq!(risky.status, 400, "{}", risky.text);
    assert_eq!(risky.json["error"], "invalid_grant");
    assert_eq!(risky.json["error_reason"], "step_up_required");
    // The session stays, waiting: an ordinary refresh from home is refused the same way.
    s.clock.advance(Duration::from_secs(300));
    assert_eq!(refresh_from(&s, rt, HOME, CHROME).await.json["error_reason"], "step_up_required");
    assert!(metric(&s, "latchkey_refresh_risk_actions_total{action=\"step_up\"} 1").await);
    assert!(risk_events(&s).await[0].starts_with("step_up: score 6"));

    // Stepping up: the (expired) access token, the refresh token and the password.
    let at = first.str("access_token");
    let step_up = |body: Value| {
        let req = http_client()
            .post(s.url("/auth/step-up"))
            .bearer_auth(at)
            .header("x-forwarded-for", HOME)
            .header("user-agent", CHROME)
            .json(&body);
        send(req)
    };
    let wrong = step_up(json!({"refresh_token": rt, "password": "not the password"})).await;
    assert_eq!(
        (wrong.status, wrong.json["error"].as_str()),
        (401, Some("invalid_credentials")),
        "{}",
        wrong.text
    );
    let neither = step_up(json!({"refresh_token": rt})).await;
    assert_eq!((neither.status, neither.json["error"].as_str()), (400, Some("invalid_request")));
    let other_session = sign_in(&s, "dee").await;
    let foreign =
        step_up(json!({"refresh_token": other_session.str("refresh_token"), "password": PASSWORD})).await;
    assert_eq!(foreign.json["error_reason"], "unknown_token", "{}", foreign.text);
    let done = step_up(json!({"refresh_token": rt, "password": PASSWORD})).await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert_eq!(done.str("session_id"), first.str("session_id"));
    // The session goes on: the new refresh token rotates as usual.
    s.clock.advance(Duration::from_secs(270));
    let next = refresh_from(&s, done.str("refresh_token"), HOME, CHROME).await;
    assert_eq!(next.status, 200, "{}", next.text);
    // The retired token is still reuse.
    assert_eq!(refresh_from(&s, rt, HOME, CHROME).await.json["error_reason"], "reuse_detected");
}

#[tokio::test]
async fn many_strong_signals_at_once_revoke_and_off_allows_everything() {
    let s = server(None).await;
    let first = sign_in(&s, "eli").await;
    s.clock.advance(Duration::from_secs(5));
    let thief = refresh_from(&s, first.str("refresh_token"), ELSEWHERE, FIREFOX).await;
    assert_eq!(thief.json["error_reason"], "suspicious_refresh", "{}", thief.text);
    assert_eq!(s.get_auth(&http_client(), "/auth/me", first.str("access_token")).await.status, 401);
    assert!(metric(&s, "latchkey_refresh_risk_actions_total{action=\"revoke\"} 1").await);
    assert!(metric(&s, "latchkey_revocations_total{reason=\"suspicious_refresh\"} 1").await);

    let off = server(Some(RiskPolicy::OFF)).await;
    let first = sign_in(&off, "fin").await;
    off.clock.advance(Duration::from_secs(5));
    let anything = refresh_from(&off, first.str("refresh_token"), ELSEWHERE, FIREFOX).await;
    assert_eq!(
        (anything.status, anything.json["expires_in"].as_u64()),
        (200, Some(300)),
        "{}",
        anything.text
    );
    assert_eq!(risk_events(&off).await, Vec::<String>::new());
}

/// A bound session's key proves its client wherever it is, so networks are no signal for it;
/// a stricter policy (step-up from 3) still stops it on another browser family refreshing
/// fast, and it steps up with its key.
#[tokio::test]
async fn a_bound_session_steps_up_with_its_key_only() {
    let s = server(Some(RiskPolicy { shorten: Some(2), step_up: Some(3), revoke: None })).await;
    s.register(&http_client(), "gus", PASSWORD).await;
    let key = ProofKey::generate_es256().unwrap();
    let now = || latchkey_core::Clock::now(&*s.clock).0;
    let proof = |path: &str, token: Option<&str>| {
        key.proof("POST", &format!("{ISSUER}{path}"), now(), token, None).unwrap()
    };
    let login = send(
        http_client()
            .post(s.url("/auth/login"))
            .header("x-forwarded-for", HOME)
            .header("user-agent", CHROME)
            .header("DPoP", proof("/auth/login", None))
            .json(&json!({"username": "gus", "password": PASSWORD})),
    )
    .await;
    assert_eq!(login.str("token_type"), "DPoP");
    let (at, rt) = (login.str("access_token"), login.str("refresh_token"));
    // Another network, same browser, minutes later: nothing (the key proves the client).
    s.clock.advance(Duration::from_secs(270));
    let moved = send(
        http_client()
            .post(s.url("/auth/refresh"))
            .header("x-forwarded-for", ELSEWHERE)
            .header("user-agent", CHROME)
            .header("DPoP", proof("/auth/refresh", None))
            .json(&json!({"refresh_token": rt})),
    )
    .await;
    assert_eq!((moved.status, moved.json["expires_in"].as_u64()), (200, Some(300)), "{}", moved.text);
    let rt = moved.str("refresh_token");
    // Another browser family seconds later (2 + 1): the stricter policy asks for a step-up.
    s.clock.advance(Duration::from_secs(5));
    let risky = send(
        http_client()
            .post(s.url("/auth/refresh"))
            .header("x-forwarded-for", ELSEWHERE)
            .header("user-agent", FIREFOX)
            .header("DPoP", proof("/auth/refresh", None))
            .json(&json!({"refresh_token": rt})),
    )
    .await;
    assert_eq!(risky.json["error_reason"], "step_up_required", "{}", risky.text);
    // The step-up proves the key with the access token's proof; the tokens stay bound.
    let done = send(
        http_client()
            .post(s.url("/auth/step-up"))
            .header("authorization", format!("DPoP {at}"))
            .header("DPoP", proof("/auth/step-up", Some(at)))
            .json(&json!({"refresh_token": rt, "password": PASSWORD})),
    )
    .await;
    assert_eq!((done.status, done.json["token_type"].as_str()), (200, Some("DPoP")), "{}", done.text);
    // As Bearer, without the key, it is refused before anything is checked.
    let bearer = send(
        http_client()
            .post(s.url("/auth/step-up"))
            .bearer_auth(at)
            .json(&json!({"refresh_token": rt, "password": PASSWORD})),
    )
    .await;
    assert_eq!(bearer.json["error_reason"], "dpop_required");
}

/// From the outside probe: an agent made unreadable (a byte that is not ASCII) once read as
/// no agent, which raised no signal; and an app's session could be stepped up here without
/// the app's own authentication.
#[tokio::test]
async fn an_unreadable_agent_is_another_family_and_apps_cannot_step_up_here() {
    let s = server(None).await;
    let first = sign_in(&s, "hob").await;
    s.clock.advance(Duration::from_secs(60));
    let req = http_client()
        .post(s.url("/auth/refresh"))
        .header("x-forwarded-for", ELSEWHERE)
        .header("user-agent", reqwest::header::HeaderValue::from_bytes(b"Mozilla/5.0 Firefox \xe9").unwrap())
        .json(&json!({"refresh_token": first.str("refresh_token")}));
    let a = send(req).await;
    assert_eq!(a.json["error_reason"], "step_up_required", "{}", a.text);

    let app = crate::oauth::register_app(&s, &[]).await;
    let code = crate::oauth::first_code(&s, &crate::oauth::browser(), &app, "hob").await;
    let tokens = crate::oauth::exchange(&s, &app, &code).await;
    let step_up = send(
        http_client()
            .post(s.url("/auth/step-up"))
            .bearer_auth(tokens.str("access_token"))
            .json(&json!({"refresh_token": tokens.str("refresh_token"), "password": PASSWORD})),
    )
    .await;
    assert_eq!(step_up.json["error_reason"], "unknown_token", "{}", step_up.text);
    // The app's refresh token is untouched: it still rotates at the token endpoint.
    assert_eq!(crate::oauth::refresh_app(&s, &app, tokens.str("refresh_token")).await.status, 200);
}

/// From the review: step-up asks a user with a second factor for that factor (a password
/// alone would do what sign-in does not allow, and clear the account's failure count), and
/// an old token goes to the rotation, which judges it, before any password is checked.
#[tokio::test]
async fn step_up_needs_the_factor_of_a_user_who_has_one_and_a_live_token() {
    use latchkey_core::totp::TotpSecret;
    let s = server(None).await;
    let c = http_client();
    let first = sign_in(&s, "mia").await;
    let (at, rt) = (first.str("access_token"), first.str("refresh_token"));
    let begun = s.post_auth(&c, "/auth/mfa/totp", at, json!({})).await;
    let secret = TotpSecret::from_base32(begun.str("secret")).unwrap();
    let confirmed = s
        .post_auth(&c, "/auth/mfa/totp/confirm", at, json!({"code": crate::mfa::code(&s, &secret, 0)}))
        .await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.text);
    let step_up = |body: Value| send(http_client().post(s.url("/auth/step-up")).bearer_auth(at).json(&body));
    let password_only = step_up(json!({"refresh_token": rt, "password": PASSWORD})).await;
    assert_eq!((password_only.status, password_only.json["error"].as_str()), (400, Some("invalid_request")));
    s.clock.advance(Duration::from_secs(30));
    let with_code =
        step_up(json!({"refresh_token": rt, "method": "totp", "code": crate::mfa::code(&s, &secret, 0)}))
            .await;
    assert_eq!(with_code.status, 200, "{}", with_code.text);
    // The retired token, even with the right password, is reuse: the session ends.
    s.clock.advance(Duration::from_secs(60));
    let next = refresh_from(&s, with_code.str("refresh_token"), HOME, CHROME).await;
    assert_eq!(next.status, 200, "{}", next.text);
    let old =
        step_up(json!({"refresh_token": rt, "method": "totp", "code": crate::mfa::code(&s, &secret, 1)}))
            .await;
    assert_eq!(old.json["error_reason"], "reuse_detected", "{}", old.text);
    assert_eq!(
        refresh_from(&s, next.str("refresh_token"), HOME, CHROME).await.json["error_reason"],
        "reuse_detected"
    );
}
