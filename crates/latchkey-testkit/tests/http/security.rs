//! Login failures and throttling, identical answers for unknown users and wrong passwords,
//! security events, and no secret in any log line.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{TestServer, http_client, send};

fn login_from(
    s: &TestServer,
    c: &reqwest::Client,
    ip: &str,
    username: &str,
    password: &str,
) -> reqwest::RequestBuilder {
    c.post(s.url("/auth/login"))
        .header("x-forwarded-for", ip)
        .json(&json!({"username": username, "password": password}))
}

/// A server that believes X-Forwarded-For from loopback, so one test can play many clients.
async fn behind_proxy() -> TestServer {
    TestServer::start_with(|c| c.trusted_proxies = vec!["127.0.0.1".into()]).await
}

#[tokio::test]
async fn unknown_user_and_wrong_password_answer_the_same() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "known", "correct horse battery").await;
    let mut unknown_times = Vec::new();
    let mut wrong_times = Vec::new();
    let mut bodies = Vec::new();
    for i in 0..5 {
        let t = Instant::now();
        let a = s
            .post(&c, "/auth/login", json!({"username": format!("nobody{i}"), "password": "whatever pass"}))
            .await;
        unknown_times.push(t.elapsed());
        let t = Instant::now();
        let b = s
            .post(&c, "/auth/login", json!({"username": "known", "password": format!("wrong pass {i}")}))
            .await;
        wrong_times.push(t.elapsed());
        assert_eq!((a.status, b.status), (401, 401));
        bodies.push((a.text, b.text));
    }
    for (a, b) in &bodies {
        assert_eq!(a, b, "byte-identical bodies");
        assert_eq!(
            a,
            r#"{"error":"invalid_credentials","error_description":"Invalid username or password."}"#
        );
    }
    // Both do one Argon2id check: same order of magnitude (a loose bound; the machine is
    // noisy, and the point is that neither path skips the hash).
    unknown_times.sort();
    wrong_times.sort();
    let (u, w) = (unknown_times[2].as_secs_f64(), wrong_times[2].as_secs_f64());
    assert!(u / w < 4.0 && w / u < 4.0, "median unknown {u:.4}s vs wrong {w:.4}s");
    let events = s.store().list_security_events(50).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.kind == "login_failed").count(), 10);
}

#[tokio::test]
async fn account_is_throttled_from_many_addresses() {
    let s = behind_proxy().await;
    let c = http_client();
    s.register(&c, "target", "correct horse battery").await;
    let mut statuses = Vec::new();
    for i in 0..10 {
        let a = send(login_from(&s, &c, &format!("198.51.100.{i}"), "target", "wrong password")).await;
        statuses.push(a.status);
        if a.status == 429 {
            let retry: u64 = a.header("retry-after").unwrap().parse().unwrap();
            assert!(retry >= 1);
            assert_eq!(a.json["error"], "too_many_requests");
        }
    }
    assert_eq!(statuses.last(), Some(&429), "throttled no later than the 10th failure: {statuses:?}");
    // Even the right password is refused while locked, from a fresh address.
    let right = send(login_from(&s, &c, "203.0.113.9", "target", "correct horse battery")).await;
    assert_eq!(right.status, 429);
    assert!(right.header("retry-after").is_some());
    // After the lockout, the right password works and clears the counter.
    s.clock.advance(Duration::from_secs(31));
    let ok = send(login_from(&s, &c, "203.0.113.9", "target", "correct horse battery")).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let events = s.store().list_security_events(100).await.unwrap();
    assert!(events.iter().any(|e| e.kind == "login_throttled"));
    assert!(send(c.get(s.url("/metrics"))).await.text.contains("latchkey_login_throttled_total 2"));
}

#[tokio::test]
async fn address_is_throttled_across_accounts() {
    let s = behind_proxy().await;
    let c = http_client();
    let mut statuses = Vec::new();
    for i in 0..20 {
        statuses
            .push(send(login_from(&s, &c, "192.0.2.66", &format!("user{i}"), "wrong password")).await.status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 1, "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429));
    let blocked = send(login_from(&s, &c, "192.0.2.66", "someone", "wrong password")).await;
    assert_eq!(blocked.status, 429);
    // Another address is not affected; the window ends after a minute.
    assert_eq!(send(login_from(&s, &c, "192.0.2.67", "someone", "wrong password")).await.status, 401);
    s.clock.advance(Duration::from_secs(61));
    assert_eq!(send(login_from(&s, &c, "192.0.2.66", "someone", "wrong password")).await.status, 401);
}

#[tokio::test]
async fn untrusted_forwarded_for_is_ignored() {
    // Without trusted proxies, X-Forwarded-For is the client's own words.
    let s = TestServer::start().await;
    let c = http_client();
    let login = send(
        c.post(s.url("/auth/register"))
            .json(&json!({"username": "xff", "password": "correct horse battery"})),
    )
    .await;
    assert_eq!(login.status, 201);
    let a = send(login_from(&s, &c, "203.0.113.50", "xff", "correct horse battery")).await;
    let list = s.get_auth(&c, "/auth/sessions", a.str("access_token")).await;
    assert_eq!(list.json["sessions"][0]["ip"], "127.0.0.1");
}

#[tokio::test]
async fn trusted_proxy_forwarded_for_is_used() {
    let s = behind_proxy().await;
    let c = http_client();
    s.register(&c, "proxied", "correct horse battery").await;
    let a = send(login_from(&s, &c, "203.0.113.50, 127.0.0.1", "proxied", "correct horse battery")).await;
    let list = s.get_auth(&c, "/auth/sessions", a.str("access_token")).await;
    assert_eq!(list.json["sessions"][0]["ip"], "203.0.113.50");
}

#[tokio::test]
async fn no_secret_reaches_the_logs() {
    let s = TestServer::start().await;
    let c = http_client();
    let password = "pw-that-must-not-leak-7f3a";
    s.register(&c, "quiet", password).await;
    let login = s.login(&c, "quiet", password).await;
    let rt = login.str("refresh_token").to_owned();
    let at = login.str("access_token").to_owned();
    let next = s.refresh(&c, &rt).await;
    let _ = s.get_auth(&c, "/auth/me", &at).await;
    let changed = s
        .post_auth(
            &c,
            "/auth/password",
            &at,
            json!({"current_password": password, "new_password": "another-secret-99"}),
        )
        .await;
    assert_eq!(changed.status, 204, "{}", changed.text);
    let wrong = json!({"current_password": "wrong-current-77", "new_password": "long enough new"});
    assert_eq!(s.post_auth(&c, "/auth/password", &at, wrong).await.status, 403);
    let _ = s.post(&c, "/auth/login", json!({"username": "quiet", "password": "wrong-pw-also-secret"})).await;
    s.clock.advance(Duration::from_secs(30));
    let _reuse = s.refresh(&c, &rt).await;
    let _ = send(c.post(s.url("/auth/logout")).bearer_auth(&at)).await;
    let logs = latchkey_testkit::captured_logs();
    if let Ok(path) = std::env::var("LATCHKEY_DUMP_TEST_LOGS") {
        std::fs::write(path, &logs).unwrap();
    }
    assert!(!logs.is_empty(), "the capture works");
    assert!(logs.contains("refresh token reuse detected"), "the reuse warning is logged");
    for secret in [
        password,
        "wrong-pw-also-secret",
        "another-secret-99",
        "wrong-current-77",
        rt.as_str(),
        next.str("refresh_token"),
        at.as_str(),
    ] {
        assert!(!logs.contains(secret), "a secret leaked into the logs");
    }
    // No refresh token, authorization code, browser cookie or client secret of any test in
    // this process appears either.
    let leaked: Vec<&str> = logs.lines().filter(|l| contains_secret_token(l)).take(3).collect();
    assert!(leaked.is_empty(), "a secret token leaked into the logs: {leaked:?}");
    // The access token's signature part alone must not appear either.
    let sig = at.rsplit('.').next().unwrap();
    assert!(!logs.contains(sig));
}

/// Whether a line holds something shaped like a Latchkey secret: a refresh token (`lkr_`),
/// an authorization code (`lkc_`), a browser session cookie (`lkw_`) or a client secret
/// (`lks_`), each followed by 43 base64url characters. (A random 22-character id may
/// contain such letters by chance.)
fn contains_secret_token(line: &str) -> bool {
    ["lkr_", "lkc_", "lkw_", "lks_"].iter().any(|prefix| {
        line.match_indices(prefix).any(|(i, _)| {
            let rest = &line.as_bytes()[i + 4..];
            rest.len() >= 43
                && rest[..43].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        })
    })
}

#[tokio::test]
async fn metrics_and_health() {
    let s = TestServer::start().await;
    let c = http_client();
    let login = s.signed_in(&c, "metered").await;
    s.refresh(&c, login.str("refresh_token")).await;
    let _ = s.post(&c, "/auth/login", json!({"username": "metered", "password": "wrong password"})).await;
    let m = send(c.get(s.url("/metrics"))).await;
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    for line in [
        "latchkey_logins_total{result=\"success\"} 1",
        "latchkey_logins_total{result=\"failure\"} 1",
        "latchkey_refreshes_total{result=\"rotated\"} 1",
        "latchkey_registrations_total 1",
        "latchkey_http_request_duration_seconds_count{method=\"POST\",route=\"/auth/refresh\",status=\"200\"} 1",
    ] {
        assert!(m.text.contains(line), "missing {line}\n{}", m.text);
    }
    assert_eq!(send(c.get(s.url("/healthz"))).await.json["status"], "ok");
}

#[tokio::test]
async fn parallel_guesses_cannot_outrun_the_account_lock() {
    let s = behind_proxy().await;
    let c = http_client();
    s.register(&c, "raced", "correct horse battery").await;
    let guesses =
        (0..24).map(|i| send(login_from(&s, &c, &format!("198.51.100.{i}"), "raced", "wrong password")));
    let answers = futures::future::join_all(guesses).await;
    let refused = answers.iter().filter(|a| a.status == 401).count();
    assert!(refused <= 9, "{refused} failures answered 401 before the lock");
    assert!(answers.iter().all(|a| a.status == 401 || a.status == 429));
    // However the guesses interleaved, the right password is now refused.
    let right = send(login_from(&s, &c, "203.0.113.1", "raced", "correct horse battery")).await;
    assert_eq!(right.status, 429, "{}", right.text);
}

#[tokio::test]
async fn wrong_current_passwords_are_throttled_too() {
    let s = TestServer::start().await;
    let c = http_client();
    let login = s.signed_in(&c, "oracle").await;
    let at = login.str("access_token");
    let mut statuses = Vec::new();
    for i in 0..10 {
        let body =
            json!({"current_password": format!("guess number {i}"), "new_password": "brand new secret"});
        statuses.push(s.post_auth(&c, "/auth/password", at, body).await.status);
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // Login is locked for the account as well.
    let l =
        s.post(&c, "/auth/login", json!({"username": "oracle", "password": "correct horse battery"})).await;
    assert_eq!(l.status, 429);
}

#[tokio::test]
async fn master_key_warning_is_loud_off_loopback() {
    let _s = TestServer::start_with(|c| c.listen = "0.0.0.0:0".parse().unwrap()).await;
    assert!(latchkey_testkit::captured_logs().contains("LATCHKEY_MASTER_KEY IS NOT SET"));
}
