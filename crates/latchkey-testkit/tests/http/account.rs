//! Register, login, logout (both ways, idempotent), logout-all, the device list, `me`,
//! password change, and the headers every answer must carry.

use serde_json::json;

use crate::{TestServer, http_client, send};

#[tokio::test]
async fn register_and_login_success_and_errors() {
    let s = TestServer::start().await;
    let c = http_client();
    let a = s.register(&c, "alice", "correct horse battery").await;
    assert_eq!(a.str("username"), "alice");
    assert!(!a.str("sub").is_empty());

    let dup =
        s.post(&c, "/auth/register", json!({"username": "alice", "password": "another password"})).await;
    assert_eq!(dup.status, 409);
    assert_eq!(dup.json["error"], "username_taken");

    let short = s.post(&c, "/auth/register", json!({"username": "bob", "password": "short"})).await;
    assert_eq!(short.status, 400);
    assert_eq!(short.json["error"], "invalid_request");

    let login = s.login(&c, "alice", "correct horse battery").await;
    assert_eq!(login.json["token_type"], "Bearer");
    assert_eq!(login.json["expires_in"], 300);
    assert!(login.str("refresh_token").starts_with("lkr_"));
    assert_eq!(login.json["scope"], "profile");
    assert!(!login.str("session_id").is_empty());
    assert_eq!(login.header("cache-control"), Some("no-store"));

    let me = s.get_auth(&c, "/auth/me", login.str("access_token")).await;
    assert_eq!(me.status, 200);
    assert_eq!(
        me.json,
        json!({"sub": a.str("sub"), "username": "alice", "roles": [], "email": null, "email_verified": false})
    );
}

#[tokio::test]
async fn closed_registration_is_refused() {
    let s =
        TestServer::start_with(|c| c.settings.registration = latchkey_core::settings::Registration::Closed)
            .await;
    let r =
        s.post(&http_client(), "/auth/register", json!({"username": "x", "password": "long enough"})).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json["error"], "registration_closed");
    assert!(s.store().list_users().await.unwrap().is_empty());
}

#[tokio::test]
async fn logout_with_bearer_is_idempotent_and_kills_the_session() {
    let s = TestServer::start().await;
    let c = http_client();
    let login = s.signed_in(&c, "carol").await;
    let at = login.str("access_token");
    let out = send(c.post(s.url("/auth/logout")).bearer_auth(at)).await;
    assert_eq!(out.status, 204);
    assert_eq!(out.header("clear-site-data"), Some("\"cookies\", \"storage\""));
    // Again: still 204.
    assert_eq!(send(c.post(s.url("/auth/logout")).bearer_auth(at)).await.status, 204);
    // The session is dead everywhere.
    let r = s.refresh(&c, login.str("refresh_token")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json["error"], "invalid_grant");
    assert_eq!(r.json["error_reason"], "logged_out");
    let me = s.get_auth(&c, "/auth/me", at).await;
    assert_eq!(me.status, 401);
    assert_eq!(me.json["error_reason"], "revoked");
    assert!(me.header("www-authenticate").unwrap().starts_with("Bearer error=\"invalid_token\""));
}

#[tokio::test]
async fn logout_with_refresh_token_and_error_paths() {
    let s = TestServer::start().await;
    let c = http_client();
    let login = s.signed_in(&c, "dave").await;
    let rt = login.str("refresh_token");
    let out = s.post(&c, "/auth/logout", json!({"refresh_token": rt})).await;
    assert_eq!(out.status, 204, "{}", out.text);
    assert_eq!(s.post(&c, "/auth/logout", json!({"refresh_token": rt})).await.status, 204);
    assert_eq!(s.refresh(&c, rt).await.json["error_reason"], "logged_out");
    // An unknown token is not an oracle.
    assert_eq!(s.post(&c, "/auth/logout", json!({"refresh_token": "lkr_unknown"})).await.status, 204);
    // Neither credential.
    let none = send(c.post(s.url("/auth/logout"))).await;
    assert_eq!(none.status, 400);
    assert_eq!(none.json["error"], "invalid_request");
    // A Bearer that is not ours.
    let bad = send(c.post(s.url("/auth/logout")).bearer_auth("not.a.jwt")).await;
    assert_eq!(bad.status, 401);
    assert_eq!(bad.json["error"], "invalid_token");
}

#[tokio::test]
async fn logout_accepts_an_expired_access_token() {
    let s = TestServer::start().await;
    let c = http_client();
    let login = s.signed_in(&c, "erin").await;
    s.clock.advance(std::time::Duration::from_secs(600));
    assert_eq!(s.get_auth(&c, "/auth/me", login.str("access_token")).await.json["error_reason"], "expired");
    assert_eq!(send(c.post(s.url("/auth/logout")).bearer_auth(login.str("access_token"))).await.status, 204);
    assert_eq!(s.refresh(&c, login.str("refresh_token")).await.json["error_reason"], "logged_out");
}

#[tokio::test]
async fn sessions_list_delete_and_logout_all() {
    let s = TestServer::start().await;
    let c = http_client();
    let first = s.signed_in(&c, "frank").await;
    let second = s.login(&c, "frank", "correct horse battery").await;
    let third = s.login(&c, "frank", "correct horse battery").await;
    let at = first.str("access_token");

    let list = s.get_auth(&c, "/auth/sessions", at).await;
    assert_eq!(list.status, 200);
    let sessions = list.json["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3);
    for sess in sessions {
        for field in [
            "id",
            "client_id",
            "created_at",
            "last_used_at",
            "idle_expires_at",
            "expires_at",
            "ip",
            "user_agent",
        ] {
            assert!(sess.get(field).is_some(), "missing {field} in {sess}");
        }
        assert_eq!(sess["current"], sess["id"] == first.json["session_id"]);
        assert!(sess["created_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(sess["ip"], "127.0.0.1");
        assert_eq!(sess["user_agent"], "latchkey-tests/1");
    }

    // Another user's session id is not found; nothing changes.
    let other = s.signed_in(&c, "grace").await;
    let del =
        send(c.delete(s.url(&format!("/auth/sessions/{}", other.str("session_id")))).bearer_auth(at)).await;
    assert_eq!(del.status, 404);
    assert_eq!(del.json["error"], "not_found");
    assert_eq!(s.refresh(&c, other.str("refresh_token")).await.status, 200);

    // Own session: revoked by the user.
    let del =
        send(c.delete(s.url(&format!("/auth/sessions/{}", second.str("session_id")))).bearer_auth(at)).await;
    assert_eq!(del.status, 204);
    assert_eq!(s.refresh(&c, second.str("refresh_token")).await.json["error_reason"], "revoked_by_user");

    // logout-all keeping the current one.
    let out = s.post_auth(&c, "/auth/logout-all", at, json!({"keep_current": true})).await;
    assert_eq!(out.status, 204);
    assert_eq!(s.refresh(&c, third.str("refresh_token")).await.json["error_reason"], "logged_out");
    let list = s.get_auth(&c, "/auth/sessions", at).await;
    assert_eq!(list.json["sessions"].as_array().unwrap().len(), 1);

    // logout-all without a body ends the current one too.
    assert_eq!(send(c.post(s.url("/auth/logout-all")).bearer_auth(at)).await.status, 204);
    assert_eq!(s.refresh(&c, first.str("refresh_token")).await.json["error_reason"], "logged_out");
}

#[tokio::test]
async fn password_change_revokes_other_sessions_and_bumps_authz_ver() {
    let s = TestServer::start().await;
    let c = http_client();
    let keep = s.signed_in(&c, "heidi").await;
    let other = s.login(&c, "heidi", "correct horse battery").await;
    let at = keep.str("access_token");
    let sub = latchkey_core::UserId::from(s.get_auth(&c, "/auth/me", at).await.str("sub"));
    let before = s.store().find_user(&sub).await.unwrap().unwrap().authz_ver;

    let wrong = s
        .post_auth(
            &c,
            "/auth/password",
            at,
            json!({"current_password": "nope nope nope", "new_password": "brand new secret"}),
        )
        .await;
    assert_eq!(wrong.status, 403);
    assert_eq!(wrong.json["error"], "invalid_credentials");
    let weak = s
        .post_auth(
            &c,
            "/auth/password",
            at,
            json!({"current_password": "correct horse battery", "new_password": "short"}),
        )
        .await;
    assert_eq!(weak.status, 400);

    let ok = s
        .post_auth(
            &c,
            "/auth/password",
            at,
            json!({"current_password": "correct horse battery", "new_password": "brand new secret"}),
        )
        .await;
    assert_eq!(ok.status, 204, "{}", ok.text);
    assert_eq!(s.refresh(&c, other.str("refresh_token")).await.json["error_reason"], "password_changed");
    let kept = s.refresh(&c, keep.str("refresh_token")).await;
    assert_eq!(kept.status, 200);
    let after = s.store().find_user(&sub).await.unwrap().unwrap().authz_ver;
    assert_eq!(after, before + 1);
    // New tokens carry the new authz_ver; the feed says so.
    let claims = crate::tokens::claims(kept.str("access_token"));
    assert_eq!(claims["authz_ver"], after);
    let feed = s.store().list_feed_events(0, latchkey_core::Clock::now(&*s.clock), 100).await.unwrap();
    assert!(feed.iter().any(|e| matches!(&e.event, latchkey_proto::events::RevocationEvent::UserChanged { sub: x, authz_ver, .. } if sub == x.as_str() && *authz_ver == after)));
    // Old password no longer works; the new one does.
    let old =
        s.post(&c, "/auth/login", json!({"username": "heidi", "password": "correct horse battery"})).await;
    assert_eq!(old.status, 401);
    s.login(&c, "heidi", "brand new secret").await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let s = TestServer::start().await;
    let c = http_client();
    let nf = send(c.get(s.url("/nope"))).await;
    assert_eq!(nf.status, 404);
    assert_eq!(nf.json["error"], "not_found");
    let m = send(c.get(s.url("/auth/login"))).await;
    assert_eq!(m.status, 405);
    assert_eq!(m.json["error"], "method_not_allowed");
    let h = send(c.get(s.url("/healthz"))).await;
    assert_eq!(h.status, 200);
}

#[tokio::test]
async fn concurrent_registrations_one_name_one_winner() {
    // Writes are committed in groups; a job that fails (a taken name) must roll back alone.
    let s = TestServer::start().await;
    let c = http_client();
    let same = (0..12).map(|_| {
        s.post(&c, "/auth/register", json!({"username": "contested", "password": "long enough pw"}))
    });
    let distinct = (0..12).map(|i| {
        s.post(
            &c,
            "/auth/register",
            json!({"username": format!("distinct{i}"), "password": "long enough pw"}),
        )
    });
    let (same, distinct) = tokio::join!(futures::future::join_all(same), futures::future::join_all(distinct));
    assert_eq!(same.iter().filter(|a| a.status == 201).count(), 1);
    assert!(same.iter().all(|a| a.status == 201 || (a.status == 409 && a.json["error"] == "username_taken")));
    assert!(
        distinct.iter().all(|a| a.status == 201),
        "{:?}",
        distinct.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    assert_eq!(s.store().list_users().await.unwrap().len(), 13);
}
