//! The command line (SPEC 6) against a running server's database: changes take effect at
//! once.

use serde_json::{Value, json};

use crate::{TestServer, http_client};

#[tokio::test]
async fn user_add_with_password_and_roles_then_login() {
    let s = TestServer::start().await;
    let out = s
        .cli(&["user", "add", "admin", "--password-stdin", "--roles", "manager,staff"], "a strong password\n")
        .await
        .unwrap();
    let created: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(created["username"], "admin");
    assert!(created["sub"].is_string());
    assert_eq!(created.as_object().unwrap().len(), 2);
    let c = http_client();
    let login = s.login(&c, "admin", "a strong password").await;
    let claims = crate::tokens::claims(login.str("access_token"));
    assert_eq!(claims["roles"], json!(["manager", "staff"]));
    // A duplicate fails.
    assert!(s.cli(&["user", "add", "admin"], "").await.is_err());
    // Without a password, the user exists but cannot sign in.
    s.cli(&["user", "add", "nopass"], "").await.unwrap();
    let a = s.post(&c, "/auth/login", json!({"username": "nopass", "password": "anything at all"})).await;
    assert_eq!(a.status, 401);
    let list = s.cli(&["user", "list"], "").await.unwrap();
    assert_eq!(list.lines().count(), 2);
    assert!(list.contains("\"username\":\"nopass\""));
    // The password line is read without its newline (and a CRLF).
    s.cli(&["user", "add", "crlf", "--password-stdin"], "windows password\r\n").await.unwrap();
    s.login(&c, "crlf", "windows password").await;
}

#[tokio::test]
async fn set_roles_takes_effect_at_once_and_publishes_user_changed() {
    let s = TestServer::start().await;
    let c = http_client();
    let login = s.signed_in(&c, "worker").await;
    let at = login.str("access_token");
    s.cli(&["user", "set-roles", "worker", "manager"], "").await.unwrap();
    let me = s.get_auth(&c, "/auth/me", at).await;
    assert_eq!(me.json["roles"], json!(["manager"]));
    let r = s.refresh(&c, login.str("refresh_token")).await;
    let claims = crate::tokens::claims(r.str("access_token"));
    assert_eq!(claims["roles"], json!(["manager"]));
    assert_eq!(claims["authz_ver"], 2);
    let feed = s.store().list_feed_events(0, latchkey_core::Clock::now(&*s.clock), 10).await.unwrap();
    assert!(feed.iter().any(|e| matches!(
        &e.event,
        latchkey_proto::events::RevocationEvent::UserChanged { authz_ver: 2, .. }
    )));
    // --database-url works anywhere on the line.
    let out = {
        let mut input = std::io::Cursor::new(Vec::new());
        let mut out = Vec::new();
        latchkey::cli::run_args(
            &["latchkey", "user", "list", "--database-url", &s.database_url],
            &mut input,
            &mut out,
        )
        .await
        .unwrap();
        String::from_utf8(out).unwrap()
    };
    assert!(out.contains("\"roles\":[\"manager\"]"));
    assert!(s.cli(&["user", "set-roles", "ghost", "x"], "").await.is_err());
}

#[tokio::test]
async fn disable_revokes_every_session_and_blocks_login() {
    let s = TestServer::start().await;
    let c = http_client();
    let a = s.signed_in(&c, "leaver").await;
    let b = s.login(&c, "leaver", "correct horse battery").await;
    let sub = latchkey_core::UserId::from(s.get_auth(&c, "/auth/me", a.str("access_token")).await.str("sub"));
    s.cli(&["user", "disable", "leaver"], "").await.unwrap();
    let user = s.store().find_user(&sub).await.unwrap().unwrap();
    assert_eq!(user.authz_ver, 2, "disable bumps authz_ver");
    let feed = s.store().list_feed_events(0, latchkey_core::Clock::now(&*s.clock), 100).await.unwrap();
    assert!(feed.iter().any(|e| matches!(&e.event, latchkey_proto::events::RevocationEvent::UserChanged { sub: x, authz_ver: 2, .. } if sub == x.as_str())));
    let revoked = feed
        .iter()
        .filter(|e| matches!(&e.event, latchkey_proto::events::RevocationEvent::SessionRevoked { .. }))
        .count();
    assert_eq!(revoked, 2, "one session_revoked per session");
    for login in [&a, &b] {
        assert_eq!(s.refresh(&c, login.str("refresh_token")).await.json["error_reason"], "user_disabled");
        assert_eq!(s.get_auth(&c, "/auth/me", login.str("access_token")).await.status, 401);
    }
    let denied =
        s.post(&c, "/auth/login", json!({"username": "leaver", "password": "correct horse battery"})).await;
    assert_eq!(denied.status, 401);
    assert_eq!(denied.json["error"], "invalid_credentials");
}

#[tokio::test]
async fn admin_revoke_and_set_password() {
    let s = TestServer::start().await;
    let c = http_client();
    let a = s.signed_in(&c, "ops").await;
    let out = s.cli(&["user", "revoke-sessions", "ops"], "").await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(out.trim()).unwrap()["revoked"], 1);
    assert_eq!(s.refresh(&c, a.str("refresh_token")).await.json["error_reason"], "revoked_by_admin");
    let b = s.login(&c, "ops", "correct horse battery").await;
    s.cli(&["user", "set-password", "ops", "--password-stdin"], "reset by admin\n").await.unwrap();
    assert_eq!(s.refresh(&c, b.str("refresh_token")).await.json["error_reason"], "password_changed");
    s.login(&c, "ops", "reset by admin").await;
    let events = s.cli(&["events", "--limit", "100"], "").await.unwrap();
    assert!(events.contains("\"kind\":\"password_changed\""), "{events}");
}
