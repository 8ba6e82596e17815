//! Email addresses on accounts (SPEC 10, issue 14): registration with and without an
//! address, `registration_email = required`, uniqueness compared case-insensitively,
//! sign-in by a *verified* address only, one throttle counter per account whichever name
//! reaches it, `GET /auth/me`, and the CLI (`user add --email`, `user set-email`,
//! `user list`).

use latchkey_core::settings::RegistrationEmail;
use serde_json::{Value, json};

use crate::{TestServer, http_client, send};

const PASSWORD: &str = "correct horse battery";

async fn register(s: &TestServer, c: &reqwest::Client, body: Value) -> latchkey_testkit::Answer {
    s.post(c, "/auth/register", body).await
}

/// A sign-in whose answer the test judges (`TestServer::login` expects a 200).
async fn try_login(
    s: &TestServer,
    c: &reqwest::Client,
    login: &str,
    password: &str,
) -> latchkey_testkit::Answer {
    s.post(c, "/auth/login", json!({"username": login, "password": password})).await
}

async fn me_of(s: &TestServer, c: &reqwest::Client, username: &str) -> Value {
    let login = try_login(s, c, username, PASSWORD).await;
    assert_eq!(login.status, 200, "{}", login.text);
    let me = s.get_auth(c, "/auth/me", login.str("access_token")).await;
    assert_eq!(me.status, 200, "{}", me.text);
    me.json
}

#[tokio::test]
async fn registration_keeps_the_address_as_given_and_unverified() {
    let s = TestServer::start().await;
    let c = http_client();
    let r =
        register(&s, &c, json!({"username": "ann", "password": PASSWORD, "email": "Ann.Lee@Example.COM"}))
            .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json, json!({"sub": r.str("sub"), "username": "ann"}), "the answer is unchanged");
    let me = me_of(&s, &c, "ann").await;
    assert_eq!(me["email"], "Ann.Lee@Example.COM");
    assert_eq!(me["email_verified"], false);

    assert_eq!(s.register(&c, "bea", PASSWORD).await.status, 201);
    let me = me_of(&s, &c, "bea").await;
    assert_eq!(me["email"], Value::Null);
    assert_eq!(me["email_verified"], false);
}

#[tokio::test]
async fn registration_email_required_refuses_a_missing_address() {
    let s = TestServer::start_with(|c| c.settings.registration_email = RegistrationEmail::Required).await;
    let c = http_client();
    let r = register(&s, &c, json!({"username": "cy", "password": PASSWORD})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json["error"], "invalid_request");
    assert!(r.json["error_description"].as_str().unwrap().contains("email"), "{}", r.text);
    let r =
        register(&s, &c, json!({"username": "cy", "password": PASSWORD, "email": "cy@example.com"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    // The CLI may still create users without one.
    s.cli(&["user", "add", "ops"], "").await.unwrap();
}

#[tokio::test]
async fn addresses_are_unique_case_insensitively() {
    let s = TestServer::start().await;
    let c = http_client();
    let r =
        register(&s, &c, json!({"username": "dee", "password": PASSWORD, "email": "dee@example.com"})).await;
    assert_eq!(r.status, 201);
    for taken in ["dee@example.com", "DEE@Example.com"] {
        let r = register(&s, &c, json!({"username": "other", "password": PASSWORD, "email": taken})).await;
        assert_eq!(r.status, 409, "{}", r.text);
        assert_eq!(
            r.json,
            json!({"error": "email_taken", "error_description": "That email address is already in use."})
        );
    }
    let err = s.cli(&["user", "add", "other", "--email", "Dee@example.com"], "").await.unwrap_err();
    assert!(err.to_string().contains("email"), "{err}");
    // Nothing of the refused attempts was created.
    assert_eq!(try_login(&s, &c, "other", PASSWORD).await.status, 401);
    // A new username may not be another account's address either: sign-in tries
    // usernames first, so it would take that address's sign-in over.
    let r = register(&s, &c, json!({"username": "DEE@example.com", "password": PASSWORD})).await;
    assert_eq!((r.status, r.json["error"].as_str()), (409, Some("username_taken")), "{}", r.text);
    // Nor may an address be another account's username (outside probe: that account would
    // keep the address's sign-in and recovery).
    assert_eq!(s.register(&c, "zed@example.com", PASSWORD).await.status, 201);
    for email in ["zed@example.com", "Zed@example.com"] {
        let r = register(&s, &c, json!({"username": "zed", "password": PASSWORD, "email": email})).await;
        assert_eq!((r.status, r.json["error"].as_str()), (409, Some("email_taken")), "{}", r.text);
    }
    assert!(s.cli(&["user", "set-email", "name-free", "x@example.com"], "").await.is_err(), "unknown user");
    s.cli(&["user", "add", "zoe"], "").await.unwrap();
    assert!(s.cli(&["user", "set-email", "zoe", "zed@example.com"], "").await.is_err());
}

#[tokio::test]
async fn invalid_addresses_are_refused_without_echo() {
    let s = TestServer::start().await;
    let c = http_client();
    for bad in
        [json!("not-an-address"), json!("a b@example.com"), json!("x@[127.0.0.1]"), json!(42), json!("")]
    {
        let r = register(&s, &c, json!({"username": "eve", "password": PASSWORD, "email": bad})).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
        assert_eq!(r.json["error"], "invalid_request");
        if let Some(text) = bad.as_str().filter(|t| !t.is_empty()) {
            assert!(!r.text.contains(text), "the value is echoed: {}", r.text);
        }
    }
    assert_eq!(try_login(&s, &c, "eve", PASSWORD).await.status, 401, "nothing was created");
}

#[tokio::test]
async fn sign_in_accepts_a_verified_address_only() {
    let s = TestServer::start().await;
    let c = http_client();
    let r =
        register(&s, &c, json!({"username": "fay", "password": PASSWORD, "email": "Fay@Example.com"})).await;
    assert_eq!(r.status, 201);
    let unknown = try_login(&s, &c, "nobody@example.com", PASSWORD).await;
    let unverified = try_login(&s, &c, "fay@example.com", PASSWORD).await;
    assert_eq!(unverified.status, 401);
    assert_eq!(unverified.json, unknown.json, "an unverified address answers like an unknown login");

    let out = s.cli(&["user", "set-email", "fay", "Fay@Example.com", "--verified"], "").await.unwrap();
    let out: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(out["email_verified"], true);
    for login in ["Fay@Example.com", "fay@example.com", "FAY@EXAMPLE.COM"] {
        let r = try_login(&s, &c, login, PASSWORD).await;
        assert_eq!(r.status, 200, "{login}: {}", r.text);
        let me = s.get_auth(&c, "/auth/me", r.str("access_token")).await;
        assert_eq!(me.json["username"], "fay");
        assert_eq!(me.json["email_verified"], true);
    }
    let wrong = try_login(&s, &c, "fay@example.com", "wrong password").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json, unknown.json);
}

/// A username that looks like an address keeps its sign-in: no other account may take
/// that address (usernames are tried first, so it would never sign in anyway).
#[tokio::test]
async fn a_username_shaped_like_an_address_keeps_its_sign_in() {
    let s = TestServer::start().await;
    let c = http_client();
    assert_eq!(s.register(&c, "gus@example.com", PASSWORD).await.status, 201);
    let err = s.cli(&["user", "add", "other", "--email", "gus@example.com", "--email-verified"], "").await;
    assert!(err.is_err(), "an address may not be another account's username");
    let r = try_login(&s, &c, "gus@example.com", PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let me = s.get_auth(&c, "/auth/me", r.str("access_token")).await;
    assert_eq!(me.json["username"], "gus@example.com");
}

/// Failures by username and by address count against one account (SPEC 5.1: throttled
/// no later than the 10th consecutive failure for one account).
#[tokio::test]
async fn failures_by_username_and_by_address_count_as_one_account() {
    let s = TestServer::start_with(|c| c.trusted_proxies = vec!["127.0.0.1".into()]).await;
    let c = http_client();
    let r =
        register(&s, &c, json!({"username": "hal", "password": PASSWORD, "email": "hal@example.com"})).await;
    assert_eq!(r.status, 201);
    s.cli(&["user", "set-email", "hal", "hal@example.com", "--verified"], "").await.unwrap();
    let mut statuses = Vec::new();
    for i in 0..10 {
        let login = ["hal", "HAL@example.com"][i % 2];
        let req = c
            .post(s.url("/auth/login"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .json(&json!({"username": login, "password": "wrong password"}));
        statuses.push(send(req).await.status);
    }
    assert_eq!(statuses.last(), Some(&429), "one counter for both names: {statuses:?}");
    let right = try_login(&s, &c, "hal@example.com", PASSWORD).await;
    assert_eq!(right.status, 429, "{}", right.text);
}

#[tokio::test]
async fn the_cli_adds_sets_clears_and_lists_addresses() {
    let s = TestServer::start().await;
    let out = s.cli(&["user", "add", "ivy", "--email", "ivy@example.com"], "").await.unwrap();
    let added: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(added.as_object().unwrap().len(), 2, "still {{sub, username}}: {out}");
    let listed = |out: String| -> Value {
        out.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|u| u["username"] == "ivy")
            .unwrap()
    };
    let ivy = listed(s.cli(&["user", "list"], "").await.unwrap());
    assert_eq!(
        (ivy["email"].as_str(), ivy["email_verified"].as_bool()),
        (Some("ivy@example.com"), Some(false))
    );

    s.cli(&["user", "set-email", "ivy", "Ivy@Example.org", "--verified"], "").await.unwrap();
    let ivy = listed(s.cli(&["user", "list"], "").await.unwrap());
    assert_eq!(
        (ivy["email"].as_str(), ivy["email_verified"].as_bool()),
        (Some("Ivy@Example.org"), Some(true))
    );

    let out = s.cli(&["user", "set-email", "ivy", "--clear"], "").await.unwrap();
    let cleared: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(cleared["email"], Value::Null);
    let ivy = listed(s.cli(&["user", "list"], "").await.unwrap());
    assert_eq!(ivy["email"], Value::Null);

    s.cli(&["user", "add", "jo", "--email", "jo@example.com"], "").await.unwrap();
    let err = s.cli(&["user", "set-email", "ivy", "JO@example.com"], "").await.unwrap_err();
    assert!(err.to_string().contains("email"), "{err}");
    assert!(s.cli(&["user", "set-email", "nobody", "n@example.com"], "").await.is_err());
    assert!(s.cli(&["user", "set-email", "ivy", "not an address"], "").await.is_err());
    assert!(s.cli(&["user", "add", "kim", "--email-verified"], "").await.is_err(), "needs --email");
}
