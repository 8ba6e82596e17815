//! Store tests, written once against `&dyn Store` (STYLE: `store_test!`). Each runs twice:
//! on a fresh SQLite file and on a fresh PostgreSQL database.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::sync::Arc;

use latchkey_core::clock::Timestamp;
use latchkey_core::crypto::{RefreshTokenKey, TokenHash, new_refresh_token, seal_successor};
use latchkey_core::refresh::{RefreshContext, RotationPolicy, decide};
use latchkey_core::store::ports::*;
use latchkey_core::store::{
    AuthCodeRecord, CodeDecision, CodeIssuer, CodeRedemption, NewSecurityEvent, RevocationTarget,
    RotationDecision, SessionRecord, SessionRevocation, Store, StoreError, UserChange, UserChangeKind,
    UserRecord, UserStatus,
};
use latchkey_core::{Caller, SessionId, Settings};
use latchkey_proto::events::RevocationEvent;
use latchkey_proto::{ErrorReason, RefreshToken};

/// Defines a test that runs its body against every backend.
macro_rules! store_test {
    ($name:ident, |$store:ident| $body:block) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("store.db").display());
                let $store: Arc<dyn Store> = Arc::new(latchkey_store::SqliteStore::open(&url).await.unwrap());
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let db = FreshPgDatabase::create().await;
                let $store: Arc<dyn Store> =
                    Arc::new(latchkey_store::PgStore::open(&db.url, 8).await.unwrap());
                $body
                drop($store);
                db.drop_database().await;
            }
        }
    };
}

/// Where the PostgreSQL store tests connect (`.ci/run` starts PostgreSQL): the database
/// `test` of the local server unless `LATCHKEY_TEST_POSTGRES` names another.
fn pg_admin_url() -> String {
    std::env::var("LATCHKEY_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A new, empty database for one test, so tests run in parallel without seeing each other.
struct FreshPgDatabase {
    name: String,
    url: String,
}

impl FreshPgDatabase {
    async fn create() -> Self {
        use sqlx::Connection as _;
        let admin = pg_admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("PostgreSQL must be running for the store tests (see .ci/run)");
        let name = format!("latchkey_t_{}", latchkey_core::crypto::new_id().to_lowercase().replace('-', "_"));
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b).to_owned();
        Self { url: format!("{base}/{name}"), name }
    }

    async fn drop_database(self) {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&pg_admin_url()).await.unwrap();
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .execute(&mut conn)
            .await;
    }
}

const T0: i64 = 1_800_000_000;

fn user(id: &str) -> UserRecord {
    UserRecord {
        id: id.into(),
        username: format!("name-{id}"),
        password_hash: String::new(),
        roles: vec!["a".into()],
        authz_ver: 1,
        status: UserStatus::Active,
        created_at: Timestamp(T0),
        email: None,
    }
}

fn session(id: &str, user_id: &str, expires_at: i64) -> SessionRecord {
    SessionRecord {
        id: id.into(),
        user_id: user_id.into(),
        client_id: "latchkey".into(),
        scope: "profile".into(),
        created_at: Timestamp(T0),
        last_used_at: Timestamp(T0),
        idle_expires_at: Timestamp(expires_at),
        expires_at: Timestamp(expires_at),
        ip: Some("127.0.0.1".into()),
        user_agent: Some("ua".into()),
        revoked_at: None,
        revoke_reason: None,
        amr: "pwd".to_owned(),
        dpop_jkt: None,
        step_up_at: None,
        browser_session_id: None,
        resources: Vec::new(),
    }
}

fn event(kind: &'static str) -> NewSecurityEvent {
    NewSecurityEvent { at: Timestamp(T0), kind, user_id: None, session_id: None, ip: None, detail: None }
}

async fn rotate(store: &dyn Store, presented: &RefreshToken, now: i64) -> Option<RotationDecision> {
    let successor = new_refresh_token();
    let ctx = RefreshContext {
        client_id: "latchkey".into(),
        now: Timestamp(now),
        policy: RotationPolicy::from(&Settings::new("http://issuer")),
        caller: Caller { ip: None, user_agent: Some("ua".into()), dpop: None },
        requested_scope: None,
        requested_resources: Vec::new(),
        successor: RefreshTokenKey::of(successor.expose_secret()),
        successor_sealed: seal_successor(presented, &successor).unwrap(),
        is_stepped_up: false,
    };
    let key = RefreshTokenKey::of(presented.expose_secret());
    store.rotate_refresh_token(&key, Box::new(move |snap| decide(snap, &ctx))).await.unwrap().map(|(_, d)| d)
}

async fn seeded(store: &dyn Store) -> RefreshToken {
    store.insert_user(&user("u")).await.unwrap();
    let first = new_refresh_token();
    store
        .insert_session(&session("s", "u", T0 + 100_000), &RefreshTokenKey::of(first.expose_secret()))
        .await
        .unwrap();
    first
}

store_test!(concurrent_rotations_yield_one_successor, |store| {
    let first = seeded(store.as_ref()).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (store, first) = (Arc::clone(&store), first.clone());
        tasks.spawn(async move { rotate(store.as_ref(), &first, T0 + 1).await });
    }
    let mut rotated = 0;
    let mut replayed = 0;
    while let Some(d) = tasks.join_next().await {
        match d.unwrap() {
            Some(RotationDecision::Rotate { .. }) => rotated += 1,
            Some(RotationDecision::Replay { .. }) => replayed += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((rotated, replayed), (1, 31));
});

store_test!(reuse_revokes_and_publishes, |store| {
    let first = seeded(store.as_ref()).await;
    let first_key = RefreshTokenKey::of(first.expose_secret());
    assert_eq!(
        store.find_session_by_live_refresh_token(&first_key).await.unwrap().unwrap().id,
        SessionId::from("s")
    );
    assert!(matches!(rotate(store.as_ref(), &first, T0 + 1).await, Some(RotationDecision::Rotate { .. })));
    // Retired: its session is still found, but not as a live token's.
    assert!(store.find_session_by_refresh_token(&first_key).await.unwrap().is_some());
    assert!(store.find_session_by_live_refresh_token(&first_key).await.unwrap().is_none());
    // Outside the grace window: reuse.
    let d = rotate(store.as_ref(), &first, T0 + 100).await.unwrap();
    assert!(
        matches!(d, RotationDecision::Revoke { revocation } if revocation.reason == ErrorReason::ReuseDetected)
    );
    let s = store.find_session(&"s".into()).await.unwrap().unwrap();
    assert_eq!(s.revoke_reason, Some(ErrorReason::ReuseDetected));
    let feed = store.list_feed_events(0, Timestamp(T0), 10).await.unwrap();
    assert!(matches!(&feed[0].event, RevocationEvent::SessionRevoked { sid, .. } if sid == "s"));
    let events = store.list_security_events(10).await.unwrap();
    assert_eq!(events[0].kind, "refresh_token_reuse");
    // Unknown tokens are None.
    assert!(rotate(store.as_ref(), &new_refresh_token(), T0).await.is_none());
});

store_test!(a_failing_write_does_not_spoil_its_group, |store| {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            // Half the inserts share one username.
            let mut u = user(&format!("id{i}"));
            if i % 2 == 0 {
                u.username = "same".into();
            }
            store.insert_user(&u).await
        });
    }
    let (mut ok, mut conflict) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::Conflict(_)) => conflict += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((ok, conflict), (13, 11));
    assert_eq!(store.list_users().await.unwrap().len(), 13);
});

store_test!(revocation_checks_the_owner_and_is_final, |store| {
    seeded(store.as_ref()).await;
    let rev = SessionRevocation {
        reason: ErrorReason::RevokedByUser,
        now: Timestamp(T0 + 5),
        until: Timestamp(T0 + 400),
        event: event("session_revoked"),
    };
    let wrong_owner = RevocationTarget::Session { id: "s".into(), user_id: Some("other".into()) };
    assert!(store.revoke_sessions(&wrong_owner, &rev).await.unwrap().is_empty());
    let right = RevocationTarget::Session { id: "s".into(), user_id: Some("u".into()) };
    assert_eq!(store.revoke_sessions(&right, &rev).await.unwrap(), vec![SessionId::from("s")]);
    // Again: nothing more to revoke, the first reason stays.
    let mut again = rev.clone();
    again.reason = ErrorReason::LoggedOut;
    assert!(store.revoke_sessions(&right, &again).await.unwrap().is_empty());
    assert_eq!(
        store.find_session(&"s".into()).await.unwrap().unwrap().revoke_reason,
        Some(ErrorReason::RevokedByUser)
    );
});

store_test!(user_changes_bump_authz_ver_and_revoke, |store| {
    seeded(store.as_ref()).await;
    store.insert_session(&session("s2", "u", T0 + 100_000), &RefreshTokenKey::of("lkr_two")).await.unwrap();
    let change = |kind| UserChange {
        user_id: "u".into(),
        kind,
        now: Timestamp(T0),
        until: Timestamp(T0 + 400),
        event: event("x"),
    };
    let (v, revoked) =
        store.apply_user_change(&change(UserChangeKind::SetRoles(vec!["b".into()]))).await.unwrap().unwrap();
    assert_eq!((v, revoked.len()), (2, 0));
    assert_eq!(store.find_user(&"u".into()).await.unwrap().unwrap().roles, vec!["b".to_owned()]);
    let kind = UserChangeKind::SetPassword { password_hash: "h2".into(), keep_session: Some("s".into()) };
    let (v, revoked) = store.apply_user_change(&change(kind)).await.unwrap().unwrap();
    assert_eq!((v, revoked), (3, vec![SessionId::from("s2")]));
    let (v, revoked) = store.apply_user_change(&change(UserChangeKind::Disable)).await.unwrap().unwrap();
    assert_eq!((v, revoked), (4, vec![SessionId::from("s")]));
    assert_eq!(store.find_user(&"u".into()).await.unwrap().unwrap().status, UserStatus::Disabled);
    let mut unknown = change(UserChangeKind::Disable);
    unknown.user_id = "nobody".into();
    assert!(store.apply_user_change(&unknown).await.unwrap().is_none());
    let feed = store.list_feed_events(0, Timestamp(T0), 100).await.unwrap();
    let changed = feed.iter().filter(|e| matches!(e.event, RevocationEvent::UserChanged { .. })).count();
    assert_eq!(changed, 3);
});

store_test!(throttle_window_slides, |store| {
    let count = |t: i64| {
        let store = Arc::clone(&store);
        async move { store.record_throttle_failure("k", Timestamp(t), 60).await.unwrap().count }
    };
    assert_eq!(count(T0).await, 1);
    assert_eq!(count(T0 + 50).await, 2);
    assert_eq!(count(T0 + 100).await, 3, "within 60 s of the previous failure");
    assert_eq!(count(T0 + 160).await, 1, "60 s after the last failure it starts again");
    store.delete_throttle("k").await.unwrap();
    assert!(store.find_throttle("k").await.unwrap().is_none());
});

store_test!(prune_forgets_only_what_is_over, |store| {
    seeded(store.as_ref()).await;
    store.insert_session(&session("old", "u", T0 + 10), &RefreshTokenKey::of("lkr_old")).await.unwrap();
    let rev = SessionRevocation {
        reason: ErrorReason::LoggedOut,
        now: Timestamp(T0),
        until: Timestamp(T0 + 300),
        event: event("session_revoked"),
    };
    store
        .revoke_sessions(&RevocationTarget::Session { id: "old".into(), user_id: None }, &rev)
        .await
        .unwrap();
    store.prune(Timestamp(T0 + 301), Timestamp(T0 + 20)).await.unwrap();
    assert!(store.find_session(&"old".into()).await.unwrap().is_none());
    assert!(store.find_session_by_refresh_token(&RefreshTokenKey::of("lkr_old")).await.unwrap().is_none());
    assert!(store.find_session(&"s".into()).await.unwrap().is_some());
    assert!(store.list_feed_events(0, Timestamp(T0), 10).await.unwrap().is_empty());
});

#[tokio::test]
async fn data_survives_reopening_and_migrations_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?synchronous=full", dir.path().join("re.db").display());
    {
        let store = latchkey_store::SqliteStore::open(&url).await.unwrap();
        store.insert_user(&user("u")).await.unwrap();
    }
    let store = latchkey_store::SqliteStore::open(&url).await.unwrap();
    assert_eq!(store.find_user(&"u".into()).await.unwrap().unwrap().username, "name-u");
    assert!(latchkey_store::open("mysql://x").await.is_err());
}

fn code(hash: &TokenHash) -> AuthCodeRecord {
    AuthCodeRecord {
        hash: *hash,
        client_id: "app".into(),
        user_id: "u".into(),
        redirect_uri: "https://app.example/cb".into(),
        scope: "openid".into(),
        nonce: Some("n".into()),
        code_challenge: "c".repeat(43),
        auth_time: Timestamp(T0),
        created_at: Timestamp(T0),
        expires_at: Timestamp(T0 + 60),
        used_at: None,
        session_id: None,
        browser_session_id: Some("web".into()),
        dpop_jkt: None,
        resources: vec!["https://api.example/notes".to_owned()],
    }
}

fn code_reuse() -> SessionRevocation {
    SessionRevocation {
        reason: ErrorReason::ReuseDetected,
        now: Timestamp(T0 + 2),
        until: Timestamp(T0 + 1000),
        event: event("authorization_code_reuse"),
    }
}

store_test!(a_code_is_redeemed_once_and_reuse_revokes_its_session, |store| {
    store.insert_user(&user("u")).await.unwrap();
    let hash = TokenHash::of("lkc_code");
    store.insert_auth_code(&code(&hash)).await.unwrap();
    // Another client's redemption changes nothing: no decision runs, the code stays unspent.
    let other = store
        .redeem_auth_code(
            &hash,
            &"other-app".into(),
            Timestamp(T0 + 1),
            &code_reuse(),
            Box::new(|_, _| unreachable!()),
        )
        .await
        .unwrap();
    assert!(matches!(other, CodeRedemption::OtherClient { .. }), "{other:?}");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let decide = Box::new(move |c: &AuthCodeRecord, _: &CodeIssuer| {
                let mut s = session(&format!("app-session-{i}"), c.user_id.as_str(), T0 + 100_000);
                s.client_id = c.client_id.clone();
                CodeDecision::Issue {
                    session: Box::new(s),
                    refresh_token: Some(RefreshTokenKey::of(&format!("lkr_{i}"))),
                }
            });
            store
                .redeem_auth_code(&hash, &"app".into(), Timestamp(T0 + 1), &code_reuse(), decide)
                .await
                .unwrap()
        });
    }
    let mut issued = Vec::new();
    let mut reused = 0;
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            CodeRedemption::Redeemed { decision: CodeDecision::Issue { session, .. }, code } => {
                assert_eq!(code.nonce.as_deref(), Some("n"));
                issued.push(session.id);
            }
            CodeRedemption::Reused { .. } => reused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((issued.len(), reused), (1, 15));
    // The session exists, and the reuses revoked it (once), with its feed event.
    let s = store.find_session(&issued[0]).await.unwrap().unwrap();
    assert_eq!(s.revoke_reason, Some(ErrorReason::ReuseDetected));
    let feed = store.list_feed_events(0, Timestamp(T0), 10).await.unwrap();
    assert_eq!(feed.len(), 1);
    // An unknown code.
    let unknown = store
        .redeem_auth_code(
            &TokenHash::of("lkc_other"),
            &"app".into(),
            Timestamp(T0),
            &code_reuse(),
            Box::new(|_, _| CodeDecision::Refuse { why: "refused" }),
        )
        .await
        .unwrap();
    assert_eq!(unknown, CodeRedemption::Unknown);
});

store_test!(consent_web_sessions_and_access_token_revocation, |store| {
    store.insert_user(&user("u")).await.unwrap();
    assert_eq!(store.find_consent(&"u".into(), &"app".into()).await.unwrap(), None);
    store.save_consent(&"u".into(), &"app".into(), &"openid".into(), Timestamp(T0)).await.unwrap();
    store.save_consent(&"u".into(), &"app".into(), &"openid profile".into(), Timestamp(T0)).await.unwrap();
    assert_eq!(store.find_consent(&"u".into(), &"app".into()).await.unwrap(), Some("openid profile".into()));
    // A web session is found by its cookie's hash.
    let cookie = TokenHash::of("lkw_cookie");
    store.insert_web_session(&session("w", "u", T0 + 1000), &cookie).await.unwrap();
    assert_eq!(store.find_web_session(&cookie).await.unwrap().map(|s| s.id), Some("w".into()));
    assert!(store.find_web_session(&TokenHash::of("lkw_other")).await.unwrap().is_none());
    // Revoking the app grant forgets the consent and revokes the app's sessions only.
    let mut app_session = session("a", "u", T0 + 1000);
    app_session.client_id = "app".into();
    store.insert_session(&app_session, &RefreshTokenKey::of("lkr_a")).await.unwrap();
    let rev = SessionRevocation {
        reason: ErrorReason::RevokedByUser,
        now: Timestamp(T0),
        until: Timestamp(T0 + 10),
        event: event("session_revoked"),
    };
    let target = RevocationTarget::AppGrant { user_id: "u".into(), client_id: "app".into() };
    assert_eq!(store.revoke_sessions(&target, &rev).await.unwrap(), vec![SessionId::from("a")]);
    assert_eq!(store.find_consent(&"u".into(), &"app".into()).await.unwrap(), None);
    assert!(store.find_session(&"w".into()).await.unwrap().unwrap().revoked_at.is_none());
    // Access-token revocation is published once and can be asked about.
    assert!(!store.is_access_token_revoked("jti-1").await.unwrap());
    store.revoke_access_token("jti-1", Timestamp(T0 + 300), Timestamp(T0)).await.unwrap();
    store.revoke_access_token("jti-1", Timestamp(T0 + 300), Timestamp(T0)).await.unwrap();
    assert!(store.is_access_token_revoked("jti-1").await.unwrap());
    let tokens = store
        .list_feed_events(0, Timestamp(T0), 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| matches!(&e.event, RevocationEvent::TokenRevoked { jti, .. } if jti == "jti-1"))
        .count();
    assert_eq!(tokens, 1);
    // Live refresh tokens.
    assert!(!store.is_live_refresh_token(&RefreshTokenKey::of("lkr_nope")).await.unwrap());
    assert!(store.is_live_refresh_token(&RefreshTokenKey::of("lkr_a")).await.unwrap());
});

// Review finding: a password change (user row, sessions, then the feed lock) raced against
// revocations of the same sessions (sessions, then the feed lock) must neither deadlock nor
// fail, whichever commits first: every transaction takes its row locks before the feed lock.
store_test!(user_changes_and_revocations_race_without_deadlock, |store| {
    seeded(store.as_ref()).await;
    for round in 0..20 {
        let ids: Vec<SessionId> = (0..4).map(|i| format!("race-{round}-{i}").into()).collect();
        for id in &ids {
            store
                .insert_session(
                    &session(id.as_str(), "u", T0 + 100_000),
                    &RefreshTokenKey::of(&format!("lkr_{id}")),
                )
                .await
                .unwrap();
        }
        let change = UserChange {
            user_id: "u".into(),
            kind: UserChangeKind::SetPassword { password_hash: format!("h{round}"), keep_session: None },
            now: Timestamp(T0),
            until: Timestamp(T0 + 400),
            event: event("password_changed"),
        };
        let revocation = SessionRevocation {
            reason: ErrorReason::LoggedOut,
            now: Timestamp(T0),
            until: Timestamp(T0 + 400),
            event: event("session_revoked"),
        };
        let all = RevocationTarget::UserSessions { user_id: "u".into(), except: None };
        let one = RevocationTarget::Session { id: ids[2].clone(), user_id: None };
        let (a, b, c) = tokio::join!(
            store.apply_user_change(&change),
            store.revoke_sessions(&all, &revocation),
            store.revoke_sessions(&one, &revocation),
        );
        let (_, by_change) = a.unwrap().unwrap();
        let (by_all, by_one) = (b.unwrap(), c.unwrap());
        // Each session was revoked exactly once, by one of the three.
        for id in &ids {
            let times = [&by_change, &by_all, &by_one].iter().filter(|r| r.contains(id)).count();
            assert_eq!(times, 1, "round {round}: {id} revoked {times} times");
        }
    }
});

fn mail(i: i64, expires_at: i64) -> latchkey_core::store::NewMail {
    latchkey_core::store::NewMail {
        kind: "verify_email",
        user_id: None,
        recipient: format!("u{i}@example.com"),
        subject: "Verify your email address".into(),
        text: format!("text {i}"),
        html: format!("<p>html {i}</p>"),
        created_at: Timestamp(T0),
        expires_at: Timestamp(expires_at),
    }
}

store_test!(the_outbox_is_claimed_once_completed_by_its_claimer_and_expired, |store| {
    use latchkey_core::store::{DeliveryOutcome, DeliveryState};
    for i in 0..3 {
        store.queue_mail(&mail(i, T0 + 3600)).await.unwrap();
    }
    store.queue_mail(&mail(3, T0 + 30)).await.unwrap();
    assert_eq!(store.count_pending_mail().await.unwrap(), 4);
    let lease = Timestamp(T0 + 300);
    let a = store.claim_mail("a", Timestamp(T0), lease, 2).await.unwrap();
    assert_eq!(a.iter().map(|m| m.attempts).collect::<Vec<_>>(), [1, 1]);
    assert!(a[0].id < a[1].id && a[0].text.is_some(), "oldest first, with the bodies");
    let b = store.claim_mail("b", Timestamp(T0), lease, 10).await.unwrap();
    assert_eq!(b.len(), 2, "claimed mail is not claimed again while its lease holds");
    assert!(store.claim_mail("c", Timestamp(T0), lease, 10).await.unwrap().is_empty());

    // Only the claimer completes.
    let sent = DeliveryOutcome::Sent;
    assert!(!store.complete_mail(a[0].id, "b", Timestamp(T0 + 1), &sent).await.unwrap());
    assert!(store.complete_mail(a[0].id, "a", Timestamp(T0 + 1), &sent).await.unwrap());
    assert!(!store.complete_mail(a[0].id, "a", Timestamp(T0 + 1), &sent).await.unwrap(), "once");
    let failed = DeliveryOutcome::Failed { error: "550 5.1.1 no such user".into() };
    assert!(store.complete_mail(b[0].id, "b", Timestamp(T0 + 1), &failed).await.unwrap());
    let retry = DeliveryOutcome::Retry { at: Timestamp(T0 + 20), error: "connection refused".into() };
    assert!(store.complete_mail(b[1].id, "b", Timestamp(T0 + 1), &retry).await.unwrap());

    let listed = |state| {
        let store = Arc::clone(&store);
        async move { store.list_mail(Some(state), 10).await.unwrap() }
    };
    let s = listed(DeliveryState::Sent).await;
    assert_eq!((s.len(), s[0].sent_at, s[0].text.as_deref()), (1, Some(Timestamp(T0 + 1)), None));
    let f = listed(DeliveryState::Failed).await;
    assert_eq!((f[0].last_error.as_deref(), f[0].html.as_deref()), (Some("550 5.1.1 no such user"), None));
    // a[1] is still claimed by `a`; b[1] waits for its retry.
    assert!(store.claim_mail("c", Timestamp(T0 + 19), lease, 10).await.unwrap().is_empty());
    let again = store.claim_mail("c", Timestamp(T0 + 20), Timestamp(T0 + 320), 10).await.unwrap();
    assert_eq!(again.iter().map(|m| (m.id, m.attempts)).collect::<Vec<_>>(), [(b[1].id, 2)]);
    assert_eq!(again[0].last_error.as_deref(), Some("connection refused"));
    // A lapsed lease is claimed again, and the old claimer's completion changes nothing.
    let taken = store.claim_mail("d", Timestamp(T0 + 300), Timestamp(T0 + 600), 10).await.unwrap();
    assert_eq!(taken.iter().map(|m| m.id).collect::<Vec<_>>(), [a[1].id]);
    assert!(!store.complete_mail(a[1].id, "a", Timestamp(T0 + 301), &sent).await.unwrap());

    // Expiry: only unclaimed (or lapsed) pending mail past `expires_at`; the bodies go.
    assert_eq!(store.expire_mail(Timestamp(T0 + 310)).await.unwrap(), 0, "c's lease still holds");
    assert_eq!(store.expire_mail(Timestamp(T0 + 320)).await.unwrap(), 1);
    let e = listed(DeliveryState::Expired).await;
    assert_eq!((e.len(), e[0].id, e[0].text.as_deref()), (1, b[1].id, None));
    assert_eq!(store.count_pending_mail().await.unwrap(), 1);
    assert_eq!(store.expire_mail(Timestamp(T0 + 5000)).await.unwrap(), 1);
    assert_eq!(store.count_pending_mail().await.unwrap(), 0);
});
