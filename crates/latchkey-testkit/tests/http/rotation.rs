//! Refresh-token rotation under concurrency and theft (SPEC 4): one successor for any
//! number of simultaneous refreshes, the grace window bounded by time and by first use of
//! the successor, reuse detection, logout racing refreshes, sliding and absolute expiry,
//! and the binding policy.

use std::collections::HashSet;
use std::time::Duration;

use futures::future::join_all;
use latchkey_core::settings::BindingPolicy;
use serde_json::json;

use crate::{TestServer, http_client, send};

#[tokio::test]
async fn parallel_refreshes_yield_one_successor() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "par", "correct horse battery").await;
    for round in 0..20 {
        let login = s.login(&c, "par", "correct horse battery").await;
        let rt = login.str("refresh_token").to_owned();
        let sid = login.str("session_id").to_owned();
        let answers = join_all((0..64).map(|_| s.refresh(&c, &rt))).await;
        let mut successors = HashSet::new();
        for a in &answers {
            assert_eq!(a.status, 200, "round {round}: {}", a.text);
            successors.insert(a.str("refresh_token").to_owned());
            assert_eq!(a.str("session_id"), sid);
        }
        assert_eq!(successors.len(), 1, "round {round}: {} successors", successors.len());
        assert_eq!(s.live_refresh_tokens(&sid).await, 1, "round {round}");
        let successor = successors.into_iter().next().unwrap();
        assert_ne!(successor, rt);
        let next = s.refresh(&c, &successor).await;
        assert_eq!(next.status, 200, "round {round}: the successor works: {}", next.text);
    }
    let metrics = send(c.get(s.url("/metrics"))).await.text;
    assert!(metrics.contains("latchkey_refresh_reuse_detections_total 0"), "{metrics}");
}

#[tokio::test]
async fn grace_retry_before_successor_use_gets_the_same_successor() {
    let s = TestServer::start().await;
    let c = http_client();
    let login = s.signed_in(&c, "g1").await;
    let rt0 = login.str("refresh_token");
    let first = s.refresh(&c, rt0).await;
    assert_eq!(first.status, 200);
    s.clock.advance(Duration::from_secs(10));
    let retry = s.refresh(&c, rt0).await;
    assert_eq!(retry.status, 200, "{}", retry.text);
    assert_eq!(retry.str("refresh_token"), first.str("refresh_token"));
    assert_ne!(retry.str("access_token"), first.str("access_token"));
    // The one live token still works.
    assert_eq!(s.refresh(&c, first.str("refresh_token")).await.status, 200);
    assert!(send(c.get(s.url("/metrics"))).await.text.contains("latchkey_refresh_grace_hits_total 1"));
}

/// Presents `stale` and expects the session to be revoked for reuse, killing `live` too.
async fn assert_reuse(s: &TestServer, c: &reqwest::Client, stale: &str, live: &str) {
    let r = s.refresh(c, stale).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json["error"], "invalid_grant");
    assert_eq!(r.json["error_reason"], "reuse_detected");
    let r = s.refresh(c, live).await;
    assert_eq!(r.json["error_reason"], "reuse_detected", "the successor dies too: {}", r.text);
}

#[tokio::test]
async fn retry_after_successor_was_used_is_reuse() {
    let s = TestServer::start().await;
    let c = http_client();
    let login = s.signed_in(&c, "g2").await;
    let rt0 = login.str("refresh_token");
    let rt1 = s.refresh(&c, rt0).await.str("refresh_token").to_owned();
    let rt2 = s.refresh(&c, &rt1).await.str("refresh_token").to_owned();
    assert_reuse(&s, &c, rt0, &rt2).await;
}

#[tokio::test]
async fn retry_after_the_window_is_reuse() {
    let s = TestServer::start().await;
    let c = http_client();
    let login = s.signed_in(&c, "g3").await;
    let rt0 = login.str("refresh_token");
    let rt1 = s.refresh(&c, rt0).await.str("refresh_token").to_owned();
    s.clock.advance(Duration::from_secs(11));
    assert_reuse(&s, &c, rt0, &rt1).await;
}

#[tokio::test]
async fn an_older_token_is_reuse_even_inside_the_window() {
    let s = TestServer::start().await;
    let c = http_client();
    let login = s.signed_in(&c, "g4").await;
    let rt0 = login.str("refresh_token");
    let rt1 = s.refresh(&c, rt0).await.str("refresh_token").to_owned();
    let rt2 = s.refresh(&c, &rt1).await.str("refresh_token").to_owned();
    // rt1 is the newest retired token and rt2 is unused: a benign retry.
    assert_eq!(s.refresh(&c, &rt1).await.str("refresh_token"), rt2);
    // rt0 is older: theft.
    assert_reuse(&s, &c, rt0, &rt2).await;
}

#[tokio::test]
async fn zero_grace_makes_any_replay_reuse() {
    let s = TestServer::start_with(|c| c.settings.refresh_grace = Duration::ZERO).await;
    let c = http_client();
    let login = s.signed_in(&c, "g5").await;
    let rt0 = login.str("refresh_token");
    let rt1 = s.refresh(&c, rt0).await.str("refresh_token").to_owned();
    assert_reuse(&s, &c, rt0, &rt1).await;
}

#[tokio::test]
async fn theft_story_attacker_first_then_victim() {
    let s = TestServer::start().await;
    let victim = http_client();
    let attacker = http_client();
    let login = s.signed_in(&victim, "victim").await;
    let copied = login.str("refresh_token").to_owned();
    // The attacker refreshes first and holds the live token.
    let stolen = s.refresh(&attacker, &copied).await;
    assert_eq!(stolen.status, 200);
    // Later, the victim's app refreshes with the token it holds.
    s.clock.advance(Duration::from_secs(60));
    let r = s.refresh(&victim, &copied).await;
    assert_eq!(r.json["error_reason"], "reuse_detected");
    // The session is dead for both.
    assert_eq!(
        s.refresh(&attacker, stolen.str("refresh_token")).await.json["error_reason"],
        "reuse_detected"
    );
    assert_eq!(s.get_auth(&attacker, "/auth/me", stolen.str("access_token")).await.status, 401);
    // A security event names the session; the feed publishes its revocation.
    let sid = login.str("session_id");
    let events = s.store().list_security_events(100).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "refresh_token_reuse" && e.session_id.as_ref().is_some_and(|id| id == sid)),
        "{events:?}"
    );
    let feed = s.store().list_feed_events(0, latchkey_core::Clock::now(&*s.clock), 100).await.unwrap();
    assert!(feed.iter().any(|e| matches!(&e.event, latchkey_proto::events::RevocationEvent::SessionRevoked { sid: x, .. } if x == sid)));
}

#[tokio::test]
async fn logout_racing_refreshes_leaves_nothing_alive() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "racer", "correct horse battery").await;
    for round in 0..30 {
        let login = s.login(&c, "racer", "correct horse battery").await;
        let rt = login.str("refresh_token").to_owned();
        let at = login.str("access_token").to_owned();
        let refreshes = join_all((0..8).map(|_| s.refresh(&c, &rt)));
        let logout = async {
            // Vary who goes first.
            for _ in 0..(round % 4) {
                tokio::task::yield_now().await;
            }
            send(c.post(s.url("/auth/logout")).bearer_auth(&at)).await
        };
        let (answers, out) = tokio::join!(refreshes, logout);
        assert_eq!(out.status, 204);
        for a in answers {
            assert!(a.status == 200 || a.json["error_reason"] == "logged_out", "round {round}: {}", a.text);
            if a.status == 200 {
                // Whatever the racing refresh returned is dead now.
                let again = s.refresh(&c, a.str("refresh_token")).await;
                assert_eq!(again.json["error_reason"], "logged_out", "round {round}: {}", again.text);
                assert_eq!(s.get_auth(&c, "/auth/me", a.str("access_token")).await.status, 401);
            }
        }
        assert_eq!(s.refresh(&c, &rt).await.json["error_reason"], "logged_out");
    }
}

#[tokio::test]
async fn idle_expiry_slides_inside_the_absolute_lifetime() {
    let s = TestServer::start().await;
    let c = http_client();
    let login = s.signed_in(&c, "idle").await;
    let sessions = s.get_auth(&c, "/auth/sessions", login.str("access_token")).await;
    let expires_at = sessions.json["sessions"][0]["expires_at"].clone();
    let idle0 = sessions.json["sessions"][0]["idle_expires_at"].clone();
    let mut rt = login.str("refresh_token").to_owned();
    // Refresh every 13 days: the idle expiry slides, the absolute one does not.
    let mut last = None;
    for _ in 0..6 {
        s.clock.advance(Duration::from_secs(13 * 86_400));
        let r = s.refresh(&c, &rt).await;
        assert_eq!(r.status, 200, "{}", r.text);
        rt = r.str("refresh_token").to_owned();
        last = Some(r);
    }
    let at = last.unwrap().str("access_token").to_owned();
    let sessions = s.get_auth(&c, "/auth/sessions", &at).await;
    assert_eq!(sessions.json["sessions"][0]["expires_at"], expires_at);
    assert_ne!(sessions.json["sessions"][0]["idle_expires_at"], idle0);
    // Day 78 now; at day 91 the absolute lifetime is over.
    s.clock.advance(Duration::from_secs(13 * 86_400));
    assert_eq!(s.refresh(&c, &rt).await.json["error_reason"], "session_expired");
}

#[tokio::test]
async fn idle_session_expires() {
    let s = TestServer::start().await;
    let c = http_client();
    let login = s.signed_in(&c, "idle2").await;
    s.clock.advance(Duration::from_secs(14 * 86_400 - 1));
    let r = s.refresh(&c, login.str("refresh_token")).await;
    assert_eq!(r.status, 200);
    s.clock.advance(Duration::from_secs(14 * 86_400));
    let r2 = s.refresh(&c, r.str("refresh_token")).await;
    assert_eq!(r2.status, 400);
    assert_eq!(r2.json["error_reason"], "idle_expired");
    // An expired session is no longer listed.
    let fresh = s.login(&c, "idle2", "correct horse battery").await;
    let list = s.get_auth(&c, "/auth/sessions", fresh.str("access_token")).await;
    assert_eq!(list.json["sessions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn binding_deny_revokes_on_a_new_user_agent() {
    let s = TestServer::start_with(|c| c.settings.binding = BindingPolicy::Deny).await;
    let c = http_client();
    let login = s.signed_in(&c, "bound").await;
    let rt = login.str("refresh_token");
    let other = send(
        c.post(s.url("/auth/refresh")).header("user-agent", "evil/9").json(&json!({"refresh_token": rt})),
    )
    .await;
    assert_eq!(other.status, 400);
    assert_eq!(other.json["error_reason"], "binding_mismatch");
    // Revoked for the owner too.
    assert_eq!(s.refresh(&c, rt).await.json["error_reason"], "binding_mismatch");
    let events = s.store().list_security_events(50).await.unwrap();
    assert!(events.iter().any(|e| e.kind == "binding_denied"));
}

#[tokio::test]
async fn binding_log_records_an_anomaly_and_continues() {
    let s = TestServer::start().await;
    let c = http_client();
    let login = s.signed_in(&c, "logged").await;
    let same = s.refresh(&c, login.str("refresh_token")).await;
    assert_eq!(same.status, 200);
    assert!(!s.store().list_security_events(50).await.unwrap().iter().any(|e| e.kind == "binding_anomaly"));
    let other = send(
        c.post(s.url("/auth/refresh"))
            .header("user-agent", "other/2")
            .json(&json!({"refresh_token": same.str("refresh_token")})),
    )
    .await;
    assert_eq!(other.status, 200);
    let anomalies = async || {
        let events = s.store().list_security_events(1000).await.unwrap();
        let of_session = |e: &&latchkey_core::store::SecurityEventRecord| {
            e.kind == "binding_anomaly"
                && e.session_id.as_ref().is_some_and(|id| id == login.str("session_id"))
        };
        events.iter().filter(of_session).count()
    };
    assert_eq!(anomalies().await, 1);
    // The same anomaly on every refresh (the browser updated since sign-in) is recorded
    // once an hour, not once per refresh.
    let mut rt = other.str("refresh_token").to_owned();
    for _ in 0..3 {
        s.clock.advance(std::time::Duration::from_secs(600));
        let next = send(
            c.post(s.url("/auth/refresh"))
                .header("user-agent", "other/2")
                .json(&json!({"refresh_token": rt})),
        )
        .await;
        assert_eq!(next.status, 200, "{}", next.text);
        rt = next.str("refresh_token").to_owned();
    }
    assert_eq!(anomalies().await, 1);
    s.clock.advance(std::time::Duration::from_secs(1801));
    let later = send(
        c.post(s.url("/auth/refresh")).header("user-agent", "other/2").json(&json!({"refresh_token": rt})),
    )
    .await;
    assert_eq!(later.status, 200, "{}", later.text);
    assert_eq!(anomalies().await, 2, "more than an hour after the first, the anomaly is recorded again");
}

#[tokio::test]
async fn unknown_and_malformed_refresh_tokens() {
    let s = TestServer::start().await;
    let c = http_client();
    for token in ["lkr_doesnotexist", "garbage", ""] {
        let r = s.refresh(&c, token).await;
        assert_eq!(r.status, 400);
        assert_eq!(r.json["error"], "invalid_grant");
        assert_eq!(r.json["error_reason"], "unknown_token");
    }
}

/// A refresh token carries its row's key in its first 16 bytes (SPEC 3), which is not a
/// secret: a token with a victim's key and any other secret is an unknown token, counts as
/// no use of the victim's token, and leaves the victim's session alone, for every place a
/// refresh token is presented.
#[tokio::test]
async fn a_token_with_a_stolen_key_id_and_another_secret_is_unknown() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let s = TestServer::start().await;
    let c = http_client();
    let victim = s.signed_in(&c, "keyed").await;
    let rt = victim.str("refresh_token").to_owned();
    let sid = victim.str("session_id").to_owned();
    let mut bytes = URL_SAFE_NO_PAD.decode(rt.trim_start_matches("lkr_")).unwrap();
    assert_eq!(bytes.len(), 48, "a key id and 256 random bits");
    for round in 0..20u8 {
        // The victim's key id, another secret.
        for b in &mut bytes[16..] {
            *b = b.wrapping_add(round + 1);
        }
        let forged = format!("lkr_{}", URL_SAFE_NO_PAD.encode(&bytes));
        let r = s.refresh(&c, &forged).await;
        assert_eq!((r.status, r.json["error_reason"].as_str()), (400, Some("unknown_token")), "{}", r.text);
        let r = send(c.post(s.url("/auth/logout")).json(&json!({"refresh_token": forged}))).await;
        assert!(r.status < 500, "{}", r.text);
    }
    assert_eq!(s.live_refresh_tokens(&sid).await, 1);
    let next = s.refresh(&c, &rt).await;
    assert_eq!(next.status, 200, "the victim's token still works: {}", next.text);
    assert_eq!(next.str("session_id"), sid);
    let metrics = send(c.get(s.url("/metrics"))).await.text;
    assert!(metrics.contains("latchkey_refresh_reuse_detections_total 0"), "{metrics}");
}

#[tokio::test]
async fn ended_sessions_are_pruned_after_the_retention() {
    let s = TestServer::start().await;
    let c = http_client();
    let ended = s.signed_in(&c, "pruned").await;
    let live = s.login(&c, "pruned", "correct horse battery").await;
    assert_eq!(send(c.post(s.url("/auth/logout")).bearer_auth(ended.str("access_token"))).await.status, 204);
    // Within the retention the old token still says why it is dead.
    s.clock.advance(Duration::from_secs(2 * 3600));
    s.service.maintain().await.unwrap();
    assert_eq!(s.refresh(&c, ended.str("refresh_token")).await.json["error_reason"], "logged_out");
    let live_rt = s.refresh(&c, live.str("refresh_token")).await.str("refresh_token").to_owned();
    // After 31 days the ended session is gone; the live one (kept alive) is not.
    let mut rt = live_rt;
    for _ in 0..3 {
        s.clock.advance(Duration::from_secs(11 * 86_400));
        rt = s.refresh(&c, &rt).await.str("refresh_token").to_owned();
    }
    s.service.maintain().await.unwrap();
    assert_eq!(s.refresh(&c, ended.str("refresh_token")).await.json["error_reason"], "unknown_token");
    assert!(s.store().find_session(&ended.str("session_id").into()).await.unwrap().is_none());
    assert_eq!(s.refresh(&c, &rt).await.status, 200);
}
