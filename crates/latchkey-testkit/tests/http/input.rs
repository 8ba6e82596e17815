//! The bad-input matrix (SPEC 5): every malformed request gets a JSON 4xx, changes nothing,
//! and leaves the server healthy.

use serde_json::json;

use crate::{TestServer, http_client, send};

const JSON_ENDPOINTS: [&str; 5] =
    ["/auth/register", "/auth/login", "/auth/refresh", "/auth/password", "/auth/logout"];

fn assert_json_4xx(a: &latchkey_testkit::Answer, what: &str) {
    assert!((400..500).contains(&a.status), "{what}: status {} body {}", a.status, a.text);
    assert!(a.json["error"].is_string(), "{what}: not a JSON error: {}", a.text);
    assert!(a.json["error_description"].is_string(), "{what}: {}", a.text);
    assert_eq!(a.header("content-type"), Some("application/json"), "{what}");
}

#[tokio::test]
async fn malformed_bodies_are_json_4xx_and_change_nothing() {
    let s = TestServer::start().await;
    let c = http_client();
    let login = s.signed_in(&c, "matrix").await;
    let at = login.str("access_token").to_owned();
    let users_before = s.store().list_users().await.unwrap().len();
    let big = vec![b'a'; 2 * 1024 * 1024];
    // (what, content type, body, expected status when one is pinned)
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, Option<u16>);
    let cases: Vec<Case<'_>> = vec![
        ("invalid json", Some("application/json"), b"{not json".to_vec(), Some(400)),
        (
            "wrong content type",
            Some("text/plain"),
            br#"{"username":"a","password":"bbbbbbbb"}"#.to_vec(),
            Some(415),
        ),
        (
            "form content type",
            Some("application/x-www-form-urlencoded"),
            b"username=a&password=b".to_vec(),
            Some(415),
        ),
        ("missing content type", None, br#"{"username":"a","password":"bbbbbbbb"}"#.to_vec(), None),
        ("empty body", Some("application/json"), Vec::new(), None),
        ("2 MB body", Some("application/json"), big, Some(413)),
        (
            "invalid utf-8",
            Some("application/json"),
            b"{\"username\":\"\xff\xfe\",\"password\":\"bbbbbbbb\"}".to_vec(),
            Some(400),
        ),
        (
            "NUL in username",
            Some("application/json"),
            br#"{"username":"a\u0000b","password":"bbbbbbbbbb"}"#.to_vec(),
            None,
        ),
        (
            "control character",
            Some("application/json"),
            br#"{"username":"a\u0007b","password":"bbbbbbbbbb"}"#.to_vec(),
            None,
        ),
        (
            "blank username",
            Some("application/json"),
            br#"{"username":"   ","password":"bbbbbbbbbb"}"#.to_vec(),
            None,
        ),
        (
            "wrong types",
            Some("application/json"),
            br#"{"username":5,"password":["x"],"refresh_token":7,"current_password":1,"new_password":false}"#
                .to_vec(),
            None,
        ),
        ("array body", Some("application/json"), b"[1,2,3]".to_vec(), None),
        ("null body", Some("application/json"), b"null".to_vec(), None),
    ];
    let long_password = json!({"username": "someone", "password": "p".repeat(10 * 1024),
        "current_password": "p".repeat(10 * 1024), "new_password": "p".repeat(10 * 1024)});
    for endpoint in JSON_ENDPOINTS {
        for (what, ctype, body, status) in &cases {
            // Logout takes an optional body with an optional field: an empty body or an
            // object without `refresh_token` is a valid logout, not bad input.
            let is_valid_logout = ["empty", "NUL", "control", "blank"].iter().any(|p| what.starts_with(p));
            if endpoint == "/auth/logout" && is_valid_logout {
                continue;
            }
            let mut req = c.post(s.url(endpoint)).bearer_auth(&at).body(body.clone());
            if let Some(t) = ctype {
                req = req.header("content-type", *t);
            }
            let a = send(req).await;
            assert_json_4xx(&a, &format!("{endpoint} {what}"));
            if let Some(st) = status {
                assert_eq!(a.status, *st, "{endpoint} {what}: {}", a.text);
            }
        }
        if endpoint != "/auth/refresh" && endpoint != "/auth/logout" {
            let a = send(c.post(s.url(endpoint)).bearer_auth(&at).json(&long_password)).await;
            assert_json_4xx(&a, &format!("{endpoint} 10 KB password"));
        }
    }
    assert_eq!(s.store().list_users().await.unwrap().len(), users_before, "no user was created");
    // The session is intact and the server healthy.
    assert_eq!(s.get_auth(&c, "/auth/me", &at).await.status, 200);
    assert_eq!(s.refresh(&c, login.str("refresh_token")).await.status, 200);
    assert_eq!(send(c.get(s.url("/healthz"))).await.status, 200);
}

#[tokio::test]
async fn usernames_follow_the_rules() {
    let s = TestServer::start().await;
    let c = http_client();
    for (name, ok) in [
        ("a", true),
        ("Zoë 名前", true),
        (&*"x".repeat(255), true),
        (&*"x".repeat(256), false),
        ("", false),
        ("tab\there", false),
    ] {
        let a = s.post(&c, "/auth/register", json!({"username": name, "password": "long enough pw"})).await;
        assert_eq!(a.status == 201, ok, "{name:?}: {}", a.text);
        if !ok {
            assert_eq!(a.json["error"], "invalid_request");
        }
    }
}

#[tokio::test]
async fn passwords_follow_the_rules() {
    let s = TestServer::start().await;
    let c = http_client();
    let exactly_1k = "p".repeat(1024);
    assert_eq!(
        s.post(&c, "/auth/register", json!({"username": "k1", "password": exactly_1k})).await.status,
        201
    );
    s.login(&c, "k1", &exactly_1k).await;
    assert_eq!(
        s.post(&c, "/auth/register", json!({"username": "k2", "password": "p".repeat(1025)})).await.status,
        400
    );
    assert_eq!(
        s.post(&c, "/auth/register", json!({"username": "k3", "password": "1234567"})).await.status,
        400
    );
    assert_eq!(
        s.post(&c, "/auth/register", json!({"username": "k4", "password": "12345678"})).await.status,
        201
    );
    let long = s.post(&c, "/auth/login", json!({"username": "k1", "password": "p".repeat(10 * 1024)})).await;
    assert_eq!(long.status, 400);
}

#[tokio::test]
async fn bearer_edge_cases() {
    let s = TestServer::start().await;
    let c = http_client();
    let login = s.signed_in(&c, "bearer").await;
    let at = login.str("access_token");
    // Two Authorization headers.
    let two = send(
        c.get(s.url("/auth/me"))
            .header("authorization", format!("Bearer {at}"))
            .header("authorization", format!("Bearer {at}")),
    )
    .await;
    assert_eq!(two.status, 400);
    assert_eq!(two.json["error"], "invalid_request");
    // A token in the query string is never accepted.
    let q = send(c.get(s.url(&format!("/auth/me?access_token={at}")))).await;
    assert_eq!(q.status, 401);
    assert_eq!(q.header("www-authenticate"), Some("Bearer realm=\"latchkey\""));
    // Wrong scheme, garbage, tampered payload.
    let basic = send(c.get(s.url("/auth/me")).header("authorization", "Basic Zm9vOmJhcg==")).await;
    assert_eq!(basic.status, 401);
    let garbage = s.get_auth(&c, "/auth/me", "garbage").await;
    assert_eq!(garbage.json["error_reason"], "malformed");
    let mut parts: Vec<String> = at.split('.').map(str::to_owned).collect();
    let payload = crate::tokens::claims(at);
    let mut forged = payload.clone();
    forged["roles"] = json!(["admin"]);
    parts[1] = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, forged.to_string());
    let tampered = s.get_auth(&c, "/auth/me", &parts.join(".")).await;
    assert_eq!(tampered.status, 401);
    assert_eq!(tampered.json["error_reason"], "bad_signature");
    assert_eq!(tampered.json["error_type"], "OAuthAccessTokenError");
}

#[tokio::test]
async fn error_descriptions_never_echo_values() {
    let s = TestServer::start().await;
    let c = http_client();
    for body in [
        json!({"username": "someone", "password": 987_654_321_u64}),
        json!({"username": "someone", "password": true, "extra": "x"}),
        json!({"username": ["secret-in-array-42"], "password": "long enough"}),
    ] {
        let a = s.post(&c, "/auth/login", body).await;
        assert_eq!(a.status, 400, "{}", a.text);
        for leaked in ["987654321", "secret-in-array-42", "true"] {
            assert!(!a.text.contains(leaked), "echoed a value: {}", a.text);
        }
    }
    let missing = s.post(&c, "/auth/login", json!({"username": "someone"})).await;
    assert!(missing.text.contains("missing field `password`"), "{}", missing.text);
}

#[tokio::test]
async fn other_endpoints_reject_bad_input_as_json() {
    let s = TestServer::start().await;
    let c = http_client();
    let login = s.signed_in(&c, "edges").await;
    let at = login.str("access_token");
    for (what, req) in [
        (
            "logout-all invalid json",
            c.post(s.url("/auth/logout-all"))
                .bearer_auth(at)
                .header("content-type", "application/json")
                .body("{"),
        ),
        (
            "logout-all wrong type",
            c.post(s.url("/auth/logout-all")).bearer_auth(at).json(&json!({"keep_current": "yes"})),
        ),
        (
            "logout-all text body",
            c.post(s.url("/auth/logout-all")).bearer_auth(at).header("content-type", "text/plain").body("x"),
        ),
        ("session id not utf-8", c.delete(s.url("/auth/sessions/%FF%FE")).bearer_auth(at)),
        ("unknown session id", c.delete(s.url("/auth/sessions/nope")).bearer_auth(at)),
    ] {
        let a = send(req).await;
        assert_json_4xx(&a, what);
    }
    // Nothing was logged out.
    assert_eq!(s.refresh(&c, login.str("refresh_token")).await.status, 200);
}

#[tokio::test]
async fn no_store_and_clear_site_data_everywhere_they_belong() {
    let s = TestServer::start().await;
    let c = http_client();
    let login = s.signed_in(&c, "headers").await;
    let r = s.refresh(&c, login.str("refresh_token")).await;
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let bad = s.refresh(&c, "lkr_nope").await;
    assert_eq!(bad.header("cache-control"), Some("no-store"));
    let all = send(c.post(s.url("/auth/logout-all")).bearer_auth(r.str("access_token"))).await;
    assert_eq!(all.status, 204);
    assert_eq!(all.header("clear-site-data"), Some("\"cookies\", \"storage\""));
}

#[tokio::test]
async fn logout_falls_back_to_the_refresh_token() {
    let s = TestServer::start().await;
    let c = http_client();
    let login = s.signed_in(&c, "fallback").await;
    let out = send(
        c.post(s.url("/auth/logout"))
            .bearer_auth("not.a.token")
            .json(&json!({"refresh_token": login.str("refresh_token")})),
    )
    .await;
    assert_eq!(out.status, 204, "{}", out.text);
    assert_eq!(s.refresh(&c, login.str("refresh_token")).await.json["error_reason"], "logged_out");
}

/// Outside probe: a request whose `Content-Length` is over the limit, but whose body never
/// comes (or only a few bytes of it), is answered `413` within `LINGER_TIME`, not `408`
/// after the body timeout. Real time is used only as a bound on the server's answer.
#[tokio::test]
async fn probe_a_declared_oversized_body_is_answered_413_within_the_linger_time() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let s = TestServer::start().await;
    let host = s.base.trim_start_matches("http://").to_owned();
    let bound = latchkey_http::LINGER_TIME + std::time::Duration::from_secs(3);
    assert!(bound < latchkey_http::REQUEST_BODY_TIMEOUT, "the bound tells 413 from 408");
    let head = format!(
        "POST /auth/login HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    );
    let ask = |sent: &'static [u8]| {
        let (addr, head) = (host.clone(), head.clone());
        async move {
            let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            stream.write_all(head.as_bytes()).await.unwrap();
            stream.write_all(sent).await.unwrap();
            // The connection stays open for writing: the rest of the body never comes.
            let mut answer = Vec::new();
            tokio::time::timeout(bound, stream.read_to_end(&mut answer))
                .await
                .unwrap_or_else(|_| panic!("no answer within {bound:?} after {} bytes", sent.len()))
                .unwrap();
            String::from_utf8_lossy(&answer).into_owned()
        }
    };
    let (nothing, a_few) = tokio::join!(ask(b""), ask(b"{\"username\":"));
    for answer in [nothing, a_few] {
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
        assert!(answer.contains("payload_too_large"), "{answer}");
    }
    // The server is healthy afterwards.
    assert_eq!(send(http_client().get(s.url("/healthz"))).await.status, 200);
}
