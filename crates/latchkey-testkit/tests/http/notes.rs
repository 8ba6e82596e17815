//! `latchkey-verify` and the notes-api example against the real server (SPEC 5.4-5.6):
//! local verification, logout and role changes reaching the API through the feed, SPEC 5.5
//! errors, and no request to the server per API call.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{TestServer, http_client, send};

/// A running notes-api that follows `s`.
struct Notes {
    base: String,
    _task: tokio::task::JoinHandle<()>,
}

async fn notes_api(s: &TestServer, poll_every: Duration) -> Notes {
    let out = s
        .cli(
            &[
                "client",
                "add",
                "--name",
                "notes-api",
                "--grant-types",
                "client_credentials",
                "--scopes",
                "revocations:read",
            ],
            "",
        )
        .await
        .unwrap();
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let verifier = latchkey_verify::Verifier::builder(latchkey_testkit::ISSUER)
        .endpoint(&s.base)
        .feed_credentials(v["client_id"].as_str().unwrap(), v["client_secret"].as_str().unwrap())
        .poll_every(poll_every)
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, notes_api::app(verifier)).await;
    });
    // Until its first feed snapshot the verifier refuses tokens (fail closed): tests wait
    // for their first 200.
    Notes { base, _task: task }
}

/// Polls (bounded, 50 ms steps) until `cond` holds: the feed is asynchronous by design.
async fn wait_for<F, Fut>(cond: F)
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

async fn api(
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
    let query = send(c.get(format!("{}/whoami?access_token={at}", n.base))).await;
    assert_eq!(query.status, 401);
    let two = send(
        c.get(format!("{}/whoami", n.base))
            .header("authorization", format!("Bearer {at}"))
            .header("authorization", format!("Bearer {at}")),
    )
    .await;
    assert_eq!(two.status, 400);
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
        let text = s.app.metrics().render();
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
