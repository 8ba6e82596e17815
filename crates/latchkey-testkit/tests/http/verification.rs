//! Proving an address (SPEC 10): `POST /auth/email/verify/send` queues a mail with an
//! `lkv_` link in the outbox (read here through `latchkey mail list`, as a developer
//! without SMTP would), and `POST /auth/email/verify` uses it once: used, expired, replaced
//! and unknown links, throttling, and parallel use of one link.

use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};

use crate::{TestServer, http_client, send};

const PASSWORD: &str = "correct horse battery";

/// Registers `username` with `email` and signs in; the access token.
pub(crate) async fn with_address(s: &TestServer, c: &reqwest::Client, username: &str, email: &str) -> String {
    let r = s
        .post(c, "/auth/register", json!({"username": username, "password": PASSWORD, "email": email}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    s.login(c, username, PASSWORD).await.str("access_token").to_owned()
}

/// The pending mails, newest first, as `latchkey mail list` prints them.
pub(crate) async fn outbox(s: &TestServer) -> Vec<Value> {
    let out = s.cli(&["mail", "list"], "").await.unwrap();
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The tokens with `prefix` in pending mail to `to`, newest first.
fn tokens_in(mails: &[Value], to: &str, prefix: &str) -> Vec<String> {
    mails
        .iter()
        .filter(|m| m["to"] == to)
        .filter_map(|m| {
            let text = m["text"].as_str()?;
            let start = text.find(prefix)?;
            Some(
                text[start..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                    .collect(),
            )
        })
        .collect()
}

/// Asks for a reset link for `login` over the API and waits (up to 10 s) for its mail to
/// `to`: the link is made after the `202` (so that its timing tells nothing). Its token.
pub(crate) async fn forgot_token(s: &TestServer, c: &reqwest::Client, login: &str, to: &str) -> String {
    let before = tokens_in(&outbox(s).await, to, "lkp_");
    let r = s.post(c, "/auth/password/forgot", json!({"login": login})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mails = outbox(s).await;
        if let Some(token) = tokens_in(&mails, to, "lkp_").into_iter().find(|t| !before.contains(t)) {
            assert_eq!(token, link_token_mailed_to(s, to, "lkp_", "reset-password").await, "the newest");
            return token;
        }
        assert!(std::time::Instant::now() < deadline, "no new reset mail to {to}: {mails:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every forgot-password request made so far has been dealt with: they are
/// taken in order, so once a request for a fresh account has its mail, all before it are
/// done (and any mail they made is in the outbox).
pub(crate) async fn reset_queue_drained(s: &TestServer, c: &reqwest::Client) {
    let name = format!("sentinel{}", next_sentinel());
    let address = format!("{name}@sentinel.test");
    with_address(s, c, &name, &address).await;
    forgot_token(s, c, &name, &address).await;
}

fn next_sentinel() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The `lkv_` token of the newest mail to `to`.
async fn token_mailed_to(s: &TestServer, to: &str) -> String {
    link_token_mailed_to(s, to, "lkv_", "verify-email").await
}

/// The token with `prefix` in the newest pending mail to `to`, checked to sit in a link to
/// the page `page`.
/// Waits up to 10 s for one to be queued (a reset link is made just after its `202`).
pub(crate) async fn link_token_mailed_to(s: &TestServer, to: &str, prefix: &str, page: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut mails = outbox(s).await;
    while !mails.iter().any(|m| m["to"] == to) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        mails = outbox(s).await;
    }
    let mail = mails.iter().find(|m| m["to"] == to).unwrap_or_else(|| panic!("no mail to {to}: {mails:?}"));
    let text = mail["text"].as_str().unwrap();
    let start = text.find(prefix).unwrap_or_else(|| panic!("no {prefix} link: {text}"));
    let token: String =
        text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect();
    assert_eq!(token.len(), 4 + 43, "{text}");
    assert!(text.contains(&format!("/{page}?token={token}")), "{text}");
    token
}

async fn verify(s: &TestServer, c: &reqwest::Client, token: &str) -> latchkey_testkit::Answer {
    s.post(c, "/auth/email/verify", json!({"token": token})).await
}

async fn send_link(s: &TestServer, c: &reqwest::Client, at: &str) -> latchkey_testkit::Answer {
    s.post_auth(c, "/auth/email/verify/send", at, json!({})).await
}

#[tokio::test]
async fn a_verification_link_verifies_once() {
    let s = TestServer::start().await;
    let c = http_client();
    let at = with_address(&s, &c, "ann", "Ann@Example.com").await;
    assert!(outbox(&s).await.is_empty(), "registration mails nothing by itself");
    let sent = send_link(&s, &c, &at).await;
    assert_eq!((sent.status, &sent.json), (202, &json!({})), "{}", sent.text);
    let mails = outbox(&s).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0]["kind"], "verify_email");
    assert_eq!(mails[0]["subject"], "Verify your email address");
    assert_eq!(mails[0]["state"], "pending");
    let token = token_mailed_to(&s, "Ann@Example.com").await;

    let r = verify(&s, &c, &token).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let me = s.get_auth(&c, "/auth/me", &at).await;
    assert_eq!(me.json["email_verified"], true);
    let again = verify(&s, &c, &token).await;
    assert_eq!(again.status, 400);
    assert_eq!(
        again.json,
        json!({"error": "invalid_token", "error_description": "This link was already used.", "error_reason": "used"})
    );
    // The address now signs in, and a verified address asks for no more links.
    assert_eq!(s.login(&c, "ann@example.com", PASSWORD).await.status, 200);
    assert_eq!(send_link(&s, &c, &at).await.status, 202);
    assert_eq!(outbox(&s).await.len(), 1, "nothing more was queued");
    let events = s.store().list_security_events(20).await.unwrap();
    assert!(events.iter().any(|e| e.kind == "email_verified"));
}

#[tokio::test]
async fn a_link_lives_24_hours_and_a_newer_one_replaces_it() {
    let s = TestServer::start().await;
    let c = http_client();
    let at = with_address(&s, &c, "bo", "bo@example.com").await;
    send_link(&s, &c, &at).await;
    let first = token_mailed_to(&s, "bo@example.com").await;
    s.clock.advance(Duration::from_secs(24 * 3600));
    let late = verify(&s, &c, &first).await;
    assert_eq!((late.status, late.json["error_reason"].as_str()), (400, Some("expired")), "{}", late.text);

    let at = s.login(&c, "bo", PASSWORD).await.str("access_token").to_owned();
    send_link(&s, &c, &at).await;
    let older = token_mailed_to(&s, "bo@example.com").await;
    send_link(&s, &c, &at).await;
    let newer = token_mailed_to(&s, "bo@example.com").await;
    assert_ne!(older, newer);
    assert_eq!(verify(&s, &c, &older).await.json["error_reason"], "expired", "replaced by the newer link");
    s.clock.advance(Duration::from_secs(24 * 3600 - 1));
    assert_eq!(verify(&s, &c, &newer).await.status, 204, "works until its last second");
}

#[tokio::test]
async fn garbage_and_foreign_tokens_are_unknown() {
    let s = TestServer::start().await;
    let c = http_client();
    let login = s.signed_in(&c, "cy").await;
    let well_formed = format!("lkv_{}", "A".repeat(43));
    let reset_shaped = format!("lkp_{}", "A".repeat(43));
    for token in
        ["", "lkv_x", &well_formed, &reset_shaped, login.str("refresh_token"), login.str("access_token")]
    {
        let r = verify(&s, &c, token).await;
        assert_eq!(r.status, 400, "{token}: {}", r.text);
        assert_eq!(r.json["error_reason"], "unknown", "{}", r.text);
        assert!(!r.text.contains(token) || token.is_empty(), "echoed: {}", r.text);
    }
    for body in [json!({"token": 5}), json!({}), json!({"token": null})] {
        let r = s.post(&c, "/auth/email/verify", body).await;
        assert_eq!((r.status, r.json["error"].as_str()), (400, Some("invalid_request")), "{}", r.text);
    }
}

#[tokio::test]
async fn sends_are_throttled_per_account_per_clock_hour() {
    let s = TestServer::start().await;
    let c = http_client();
    let at = with_address(&s, &c, "di", "di@example.com").await;
    for i in 0..5 {
        assert_eq!(send_link(&s, &c, &at).await.status, 202, "send {i}");
    }
    let sixth = send_link(&s, &c, &at).await;
    assert_eq!(sixth.status, 429, "{}", sixth.text);
    let retry: u64 = sixth.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    assert_eq!(outbox(&s).await.len(), 5);
    s.clock.advance(Duration::from_secs(retry));
    let at = s.login(&c, "di", PASSWORD).await.str("access_token").to_owned();
    assert_eq!(send_link(&s, &c, &at).await.status, 202, "a new hour");
}

#[tokio::test]
async fn no_address_and_replaced_addresses() {
    let s = TestServer::start().await;
    let c = http_client();
    let login = s.signed_in(&c, "ed").await;
    let r = send_link(&s, &c, login.str("access_token")).await;
    assert_eq!((r.status, r.json["error"].as_str()), (400, Some("invalid_request")), "{}", r.text);
    assert_eq!(send(c.post(s.url("/auth/email/verify/send"))).await.status, 401, "Bearer needed");

    let at = with_address(&s, &c, "fi", "fi@example.com").await;
    send_link(&s, &c, &at).await;
    let token = token_mailed_to(&s, "fi@example.com").await;
    s.cli(&["user", "set-email", "fi", "fi@example.org"], "").await.unwrap();
    let r = verify(&s, &c, &token).await;
    assert_eq!(
        r.json["error_reason"], "expired",
        "the link's address is no longer the account's: {}",
        r.text
    );
    let me = s.get_auth(&c, "/auth/me", &at).await;
    assert_eq!(
        (me.json["email"].as_str(), me.json["email_verified"].as_bool()),
        (Some("fi@example.org"), Some(false))
    );
}

/// One link used by many requests at once: exactly one verifies, every other is `used`.
#[tokio::test]
async fn parallel_uses_of_one_link_verify_once() {
    let s = TestServer::start().await;
    let c = http_client();
    for round in 0..10 {
        let name = format!("par{round}");
        let at = with_address(&s, &c, &name, &format!("{name}@example.com")).await;
        send_link(&s, &c, &at).await;
        let token = token_mailed_to(&s, &format!("{name}@example.com")).await;
        let answers = join_all((0..16).map(|_| verify(&s, &c, &token))).await;
        let ok = answers.iter().filter(|a| a.status == 204).count();
        let used = answers.iter().filter(|a| a.status == 400 && a.json["error_reason"] == "used").count();
        assert_eq!(
            (ok, used),
            (1, 15),
            "round {round}: {:?}",
            answers.iter().map(|a| a.status).collect::<Vec<_>>()
        );
    }
    let events = s.store().list_security_events(100).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.kind == "email_verified").count(), 10);
}

async fn change(
    s: &TestServer,
    c: &reqwest::Client,
    at: &str,
    email: &str,
    password: &str,
) -> latchkey_testkit::Answer {
    s.post_auth(c, "/auth/email", at, json!({"email": email, "current_password": password})).await
}

/// SPEC 10: the new address is mailed a link and takes effect when it is used; the old
/// address is told when the change is requested.
#[tokio::test]
async fn an_address_change_is_confirmed_from_the_new_address_and_told_to_the_old() {
    let s = TestServer::start().await;
    let c = http_client();
    let at = with_address(&s, &c, "gil", "gil@old.example").await;
    s.cli(&["user", "set-email", "gil", "gil@old.example", "--verified"], "").await.unwrap();
    let old_reset = forgot_token(&s, &c, "gil", "gil@old.example").await;

    let wrong = change(&s, &c, &at, "gil@new.example", "wrong password").await;
    assert_eq!(
        (wrong.status, wrong.json["error"].as_str()),
        (403, Some("invalid_credentials")),
        "{}",
        wrong.text
    );
    let r = change(&s, &c, &at, "Gil@New.example", PASSWORD).await;
    assert_eq!((r.status, &r.json), (202, &json!({})), "{}", r.text);
    let mails = outbox(&s).await;
    let notice = mails.iter().find(|m| m["kind"] == "email_change_requested").unwrap();
    assert_eq!(notice["to"], "gil@old.example");
    let notice_text = notice["text"].as_str().unwrap();
    assert!(notice_text.contains("Gil@New.example") && !notice_text.contains("lk"), "{notice_text}");
    let me = s.get_auth(&c, "/auth/me", &at).await;
    assert_eq!(me.json["email"], "gil@old.example", "nothing changes before the link is used");

    let token = token_mailed_to(&s, "Gil@New.example").await;
    assert_eq!(verify(&s, &c, &token).await.status, 204);
    let me = s.get_auth(&c, "/auth/me", &at).await;
    assert_eq!(
        (me.json["email"].as_str(), me.json["email_verified"].as_bool()),
        (Some("Gil@New.example"), Some(true))
    );
    let r = s
        .post(&c, "/auth/password/reset", json!({"token": old_reset, "new_password": "another passphrase"}))
        .await;
    assert_eq!(r.json["error_reason"], "expired", "a reset link sent to the old address dies: {}", r.text);
    let old = s.post(&c, "/auth/login", json!({"username": "gil@old.example", "password": PASSWORD})).await;
    assert_eq!(old.status, 401);
    assert_eq!(s.login(&c, "gil@new.example", PASSWORD).await.status, 200);
}

/// A change to an address another account holds answers the same and mails it nothing;
/// an address taken between the request and the link's use is a 409, and nothing changes.
#[tokio::test]
async fn a_taken_address_gets_no_link_and_a_lost_race_is_a_conflict() {
    let s = TestServer::start().await;
    let c = http_client();
    with_address(&s, &c, "hal", "hal@example.com").await;
    let at = with_address(&s, &c, "ida", "ida@example.com").await;
    let r = change(&s, &c, &at, "HAL@example.com", PASSWORD).await;
    assert_eq!((r.status, &r.json), (202, &json!({})), "{}", r.text);
    let mails = outbox(&s).await;
    assert!(mails.iter().all(|m| m["to"] != "HAL@example.com" && m["to"] != "hal@example.com"), "{mails:?}");
    assert!(mails.iter().any(|m| m["kind"] == "email_change_requested" && m["to"] == "ida@example.com"));

    let r = change(&s, &c, &at, "free@example.com", PASSWORD).await;
    assert_eq!(r.status, 202);
    let token = token_mailed_to(&s, "free@example.com").await;
    s.cli(&["user", "set-email", "hal", "free@example.com"], "").await.unwrap();
    let r = verify(&s, &c, &token).await;
    assert_eq!((r.status, r.json["error"].as_str()), (409, Some("email_taken")), "{}", r.text);
    let me = s.get_auth(&c, "/auth/me", &at).await;
    assert_eq!(me.json["email"], "ida@example.com");
}

/// Outside probe (issue 14, cosmetic): wrong current passwords on an address change are
/// throttled like sign-ins, and the `429` says so (not "too many emails").
#[tokio::test]
async fn wrong_passwords_on_an_address_change_are_throttled_as_such() {
    let s = TestServer::start().await;
    let c = http_client();
    let at = with_address(&s, &c, "ida", "ida@example.com").await;
    let r = crate::until_throttled(12, || change(&s, &c, &at, "ida@new.example", "not the password")).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert!(r.header("retry-after").is_some());
    let said = r.json["error_description"].as_str().unwrap();
    assert!(said.contains("password") && !said.contains("email"), "{said}");
    assert!(outbox(&s).await.is_empty(), "nothing mailed");
}
