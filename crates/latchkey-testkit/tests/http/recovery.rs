//! Password recovery (SPEC 10): `POST /auth/password/forgot` answers the same for every
//! login and mails an `lkp_` link only to an account that exists (read here from the
//! outbox with `latchkey mail list`); `POST /auth/password/reset` uses it once, sets the
//! password, revokes every session with feed events and publishes `user_changed`.

use std::time::Duration;

use futures::future::join_all;
use serde_json::json;

use crate::verification::{forgot_token, link_token_mailed_to, outbox, reset_queue_drained, with_address};
use crate::{TestServer, http_client, send};

const PASSWORD: &str = "correct horse battery";
const NEW_PASSWORD: &str = "a brand new passphrase";

async fn forgot(s: &TestServer, c: &reqwest::Client, login: &str) -> latchkey_testkit::Answer {
    s.post(c, "/auth/password/forgot", json!({"login": login})).await
}

async fn reset(s: &TestServer, c: &reqwest::Client, token: &str, password: &str) -> latchkey_testkit::Answer {
    s.post(c, "/auth/password/reset", json!({"token": token, "new_password": password})).await
}

async fn try_login(
    s: &TestServer,
    c: &reqwest::Client,
    login: &str,
    password: &str,
) -> latchkey_testkit::Answer {
    s.post(c, "/auth/login", json!({"username": login, "password": password})).await
}

#[tokio::test]
async fn a_reset_sets_the_password_and_ends_every_session() {
    let s = TestServer::start().await;
    let c = http_client();
    with_address(&s, &c, "ann", "ann@example.com").await;
    let phone = s.login(&c, "ann", PASSWORD).await;
    let laptop = s.login(&c, "ann", PASSWORD).await;

    let token = forgot_token(&s, &c, "ann", "ann@example.com").await;
    let mails = outbox(&s).await;
    assert_eq!(mails[0]["kind"], "password_reset");
    assert_eq!(mails[0]["subject"], "Reset your password");

    let done = reset(&s, &c, &token, NEW_PASSWORD).await;
    assert_eq!(done.status, 204, "{}", done.text);
    for old in [&phone, &laptop] {
        let r = s.post(&c, "/auth/refresh", json!({"refresh_token": old.str("refresh_token")})).await;
        assert_eq!(
            (r.status, r.json["error_reason"].as_str()),
            (400, Some("password_changed")),
            "{}",
            r.text
        );
    }
    let (id, secret) = feed_client(&s).await;
    let feed = send(c.get(s.url("/revocations?after=0")).basic_auth(&id, Some(&secret))).await;
    let events = feed.json["events"].as_array().unwrap();
    let revoked = events.iter().filter(|e| e["type"] == "session_revoked").count();
    assert!(revoked >= 2, "{}", feed.text);
    assert!(events.iter().any(|e| e["type"] == "user_changed"), "{}", feed.text);

    assert_eq!(try_login(&s, &c, "ann", PASSWORD).await.status, 401);
    let now = try_login(&s, &c, "ann", NEW_PASSWORD).await;
    assert_eq!(now.status, 200);
    let me = s.get_auth(&c, "/auth/me", now.str("access_token")).await;
    assert_eq!(me.json["email_verified"], true, "the reset proved the address");
    let again = reset(&s, &c, &token, "yet another passphrase").await;
    assert_eq!(again.json["error_reason"], "used", "{}", again.text);
    let security = s.store().list_security_events(50).await.unwrap();
    assert!(security.iter().any(|e| e.kind == "password_reset"));
}

/// A feed reader's client id and secret (for `/revocations`).
async fn feed_client(s: &TestServer) -> (String, String) {
    let args = [
        "client",
        "add",
        "--name",
        "feed",
        "--grant-types",
        "client_credentials",
        "--scopes",
        "revocations:read",
    ];
    let out = s.cli(&args, "").await.unwrap();
    let client: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    (client["client_id"].as_str().unwrap().to_owned(), client["client_secret"].as_str().unwrap().to_owned())
}

/// Existing and unknown logins get the same status and body; only an account with an
/// address gets mail (to that address, verified or not).
#[tokio::test]
async fn forgot_password_answers_the_same_for_every_login() {
    let s = TestServer::start().await;
    let c = http_client();
    with_address(&s, &c, "bo", "Bo@Example.com").await;
    s.register(&c, "noaddress", PASSWORD).await;
    s.register(&c, "gone", PASSWORD).await;
    s.cli(&["user", "set-email", "gone", "gone@example.com"], "").await.unwrap();
    s.cli(&["user", "disable", "gone"], "").await.unwrap();
    let mut answers = Vec::new();
    for login in
        ["bo", "noaddress", "bo@example.com", "gone", "nobody", "BO@EXAMPLE.COM", "nobody@example.com"]
    {
        let r = forgot(&s, &c, login).await;
        answers.push((login, r.status, r.text.clone()));
    }
    for (login, status, text) in &answers {
        assert_eq!((*status, text.as_str()), (202, "{}"), "{login}");
    }
    reset_queue_drained(&s, &c).await;
    let mails: Vec<_> = outbox(&s).await.into_iter().filter(|m| m["to"] == "Bo@Example.com").collect();
    assert_eq!(mails.len(), 3, "three requests named bo, by name and by address: {mails:?}");
    assert_eq!(outbox(&s).await.len(), 4, "and the sentinel's");
}

#[tokio::test]
async fn a_reset_link_lives_30_minutes_and_a_newer_one_replaces_it() {
    let s = TestServer::start().await;
    let c = http_client();
    with_address(&s, &c, "cy", "cy@example.com").await;
    let older = forgot_token(&s, &c, "cy", "cy@example.com").await;
    let newer = forgot_token(&s, &c, "cy", "cy@example.com").await;
    assert_ne!(older, newer);
    let r = reset(&s, &c, &older, NEW_PASSWORD).await;
    assert_eq!(r.json["error_reason"], "expired", "replaced: {}", r.text);
    s.clock.advance(Duration::from_secs(30 * 60));
    let r = reset(&s, &c, &newer, NEW_PASSWORD).await;
    assert_eq!(r.json["error_reason"], "expired", "past 30 minutes: {}", r.text);
    let fresh = forgot_token(&s, &c, "cy", "cy@example.com").await;
    s.clock.advance(Duration::from_secs(30 * 60 - 1));
    assert_eq!(reset(&s, &c, &fresh, NEW_PASSWORD).await.status, 204, "works until its last second");
}

#[tokio::test]
async fn bad_tokens_and_weak_passwords() {
    let s = TestServer::start().await;
    let c = http_client();
    let at = with_address(&s, &c, "di", "di@example.com").await;
    s.post_auth(&c, "/auth/email/verify/send", &at, json!({})).await;
    let verify_token = link_token_mailed_to(&s, "di@example.com", "lkv_", "verify-email").await;
    let well_formed = format!("lkp_{}", "A".repeat(43));
    for token in ["", "lkp_x", well_formed.as_str(), verify_token.as_str(), "lkr_abc"] {
        let r = reset(&s, &c, token, NEW_PASSWORD).await;
        assert_eq!(
            (r.status, r.json["error_reason"].as_str()),
            (400, Some("unknown")),
            "{token}: {}",
            r.text
        );
    }
    let token = forgot_token(&s, &c, "di", "di@example.com").await;
    let weak = reset(&s, &c, &token, "short").await;
    assert_eq!((weak.status, weak.json["error"].as_str()), (400, Some("invalid_request")), "{}", weak.text);
    assert_eq!(
        reset(&s, &c, &token, NEW_PASSWORD).await.status,
        204,
        "a refused password leaves the link usable"
    );
    for body in [
        json!({"token": 1, "new_password": NEW_PASSWORD}),
        json!({"new_password": NEW_PASSWORD}),
        json!({"login": 5}),
    ] {
        let r = s.post(&c, "/auth/password/reset", body).await;
        assert_eq!(r.status, 400, "{}", r.text);
    }
    let r = s.post(&c, "/auth/password/forgot", json!({"login": ""})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let said = r.json["error_description"].as_str().unwrap();
    assert!(said.contains("login must not be blank"), "the field is named: {said}");
}

/// Throttling is decided from the request alone: a known and an unknown login are refused
/// alike, and one account gets at most 5 reset mails an hour however it is named.
#[tokio::test]
async fn forgot_password_throttling_reveals_nothing() {
    let s = TestServer::start().await;
    let c = http_client();
    with_address(&s, &c, "ed", "ed@example.com").await;
    s.cli(&["user", "set-email", "ed", "ed@example.com", "--verified"], "").await.unwrap();
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..6 {
        known.push(forgot(&s, &c, "ed").await);
        unknown.push(forgot(&s, &c, "nobody").await);
    }
    let statuses = |v: &[latchkey_testkit::Answer]| v.iter().map(|a| a.status).collect::<Vec<_>>();
    assert_eq!(statuses(&known), vec![202, 202, 202, 202, 202, 429]);
    assert_eq!(statuses(&known), statuses(&unknown));
    assert_eq!(known[5].json, unknown[5].json);
    assert!(known[5].header("retry-after").is_some());
    // By address too: still at most 5 mails for the account this hour.
    for _ in 0..3 {
        forgot(&s, &c, "ed@example.com").await;
    }
    reset_queue_drained(&s, &c).await;
    let mails = outbox(&s).await.into_iter().filter(|m| m["to"] == "ed@example.com").count();
    assert_eq!(mails, 5);
}

/// One link used by many resets at once: exactly one sets the password.
#[tokio::test]
async fn parallel_resets_with_one_link_succeed_once() {
    let s = TestServer::start().await;
    let c = http_client();
    with_address(&s, &c, "fay", "fay@example.com").await;
    for round in 0..5 {
        let token = forgot_token(&s, &c, "fay", "fay@example.com").await;
        let passwords: Vec<String> = (0..8).map(|i| format!("passphrase number {round}-{i}")).collect();
        let answers = join_all(passwords.iter().map(|p| reset(&s, &c, &token, p))).await;
        let ok: Vec<usize> = (0..8).filter(|i| answers[*i].status == 204).collect();
        assert_eq!(ok.len(), 1, "round {round}: {:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
        let used = answers.iter().filter(|a| a.json["error_reason"] == "used").count();
        assert_eq!(used, 7);
        let winner = format!("passphrase number {round}-{}", ok[0]);
        assert_eq!(try_login(&s, &c, "fay", &winner).await.status, 200, "round {round}");
    }
}

/// Outside probe (issue 14, high): an address change an attacker asked for must not
/// survive the remedy its notice recommends. A new password, by reset or by change, voids
/// pending address changes and other reset links; so does an operator's address change.
#[tokio::test]
async fn a_new_password_or_address_voids_pending_changes_and_reset_links() {
    let s = TestServer::start().await;
    let c = http_client();
    let at = with_address(&s, &c, "vic", "vic@example.com").await;
    // The attacker, holding a session, asks to move the account to their address.
    let r = s
        .post_auth(&c, "/auth/email", &at, json!({"email": "vic@evil.test", "current_password": PASSWORD}))
        .await;
    assert_eq!(r.status, 202);
    let attackers = link_token_mailed_to(&s, "vic@evil.test", "lkv_", "verify-email").await;
    // The owner, told by the notice, resets the password.
    let token = forgot_token(&s, &c, "vic", "vic@example.com").await;
    assert_eq!(reset(&s, &c, &token, NEW_PASSWORD).await.status, 204);
    let r = s.post(&c, "/auth/email/verify", json!({"token": attackers})).await;
    assert_eq!(r.json["error_reason"], "expired", "the change died with the reset: {}", r.text);

    // A password change voids reset links asked for before it.
    let before_change = forgot_token(&s, &c, "vic", "vic@example.com").await;
    let at = s.login(&c, "vic", NEW_PASSWORD).await.str("access_token").to_owned();
    let r = s
        .post_auth(
            &c,
            "/auth/password",
            &at,
            json!({"current_password": NEW_PASSWORD, "new_password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = reset(&s, &c, &before_change, "a third passphrase").await;
    assert_eq!(r.json["error_reason"], "expired", "{}", r.text);

    // An operator's address change voids reset links sent to the old one.
    let to_old = forgot_token(&s, &c, "vic", "vic@example.com").await;
    s.cli(&["user", "set-email", "vic", "vic@example.org"], "").await.unwrap();
    let r = reset(&s, &c, &to_old, "a third passphrase").await;
    assert_eq!(r.json["error_reason"], "expired", "{}", r.text);
}

/// Outside probe (issue 14, high): a sign-in with the old password that is still being
/// checked when a reset or a change commits must not keep a session (SPEC 10, 5.1: every
/// session revoked). Each round races parallel sign-ins with the old password against a
/// new one, alternately by reset link and by change; every session they got must be dead.
#[tokio::test]
async fn sign_ins_racing_a_new_password_keep_no_session() {
    let s = TestServer::start_with(|c| {
        c.settings.throttle.account_failures = 1_000;
        c.settings.throttle.address_failures = 1_000;
    })
    .await;
    let c = http_client();
    with_address(&s, &c, "ray", "ray@example.com").await;
    let mut password = PASSWORD.to_owned();
    let mut won = 0;
    for round in 0..8 {
        let next = format!("round {round} passphrase");
        let by_reset = round % 2 == 0;
        let reset_link =
            if by_reset { Some(forgot_token(&s, &c, "ray", "ray@example.com").await) } else { None };
        let at = s.login(&c, "ray", &password).await.str("access_token").to_owned();
        // Staggered, so that some read the old hash before the change commits and finish
        // checking it after.
        let logins = join_all((0..16u64).map(|i| {
            let (s, c, password) = (&s, &c, &password);
            async move {
                tokio::time::sleep(Duration::from_millis(i * 5)).await;
                try_login(s, c, "ray", password).await
            }
        }));
        let change = async {
            tokio::time::sleep(Duration::from_millis(10 + round * 3)).await;
            match &reset_link {
                Some(token) => reset(&s, &c, token, &next).await,
                None => {
                    let body = json!({"current_password": password, "new_password": next});
                    s.post_auth(&c, "/auth/password", &at, body).await
                }
            }
        };
        let (answers, changed) = tokio::join!(logins, change);
        assert_eq!(changed.status, 204, "round {round}: {}", changed.text);
        // Checked before the next round, whose change would end them anyway.
        for a in answers.iter().filter(|a| a.status == 200) {
            let r = s.post(&c, "/auth/refresh", json!({"refresh_token": a.str("refresh_token")})).await;
            assert_eq!(r.status, 400, "round {round}: a sign-in survived the new password: {}", r.text);
            let me = s.get_auth(&c, "/auth/me", a.str("access_token")).await;
            assert_eq!(me.status, 401, "round {round}");
            won += 1;
        }
        password = next;
    }
    assert!(won > 8, "some sign-ins must have won before the change: {won}");
}

/// Outside probe (issue 14, medium): forgot-password requests answered `202` and still
/// queued when the server shuts down get their links before it ends.
#[tokio::test]
async fn a_graceful_shutdown_makes_the_links_already_promised() {
    let s = TestServer::start().await;
    let c = http_client();
    let names = ["sa", "sb", "sc", "sd"];
    for name in names {
        with_address(&s, &c, name, &format!("{name}@example.com")).await;
    }
    // 20 requests (the most one client address gets in an hour), 5 per account.
    let asked = join_all((0..20).map(|i| forgot(&s, &c, names[i % 4]))).await;
    assert!(
        asked.iter().all(|a| a.status == 202),
        "{:?}",
        asked.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    let store = std::sync::Arc::clone(s.store());
    s.stop().await;
    let mails = store.list_mail(None, 100).await.unwrap();
    assert_eq!(mails.len(), 20, "every accepted request has its mail");
}
