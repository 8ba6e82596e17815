//! Criterion benchmark of the rotation store operation (issue: core benchmarks): one
//! `rotate_refresh_token` on SQLite (WAL, synchronous=NORMAL), each committed, with the real
//! rotation policy deciding inside the transaction. Each iteration rotates the chain's live
//! token, so every token is used once.

#![allow(clippy::expect_used, reason = "benchmark setup fails loudly")]
#![allow(missing_docs, reason = "criterion's macros generate undocumented functions")]

use std::sync::Mutex;

use criterion::{Criterion, criterion_group, criterion_main};
use latchkey_core::clock::Timestamp;
use latchkey_core::crypto::{RefreshTokenKey, new_refresh_token, seal_successor};
use latchkey_core::refresh::{RefreshContext, RotationPolicy, decide};
use latchkey_core::store::ports::{SessionStore, UserStore};
use latchkey_core::store::{SessionRecord, UserRecord, UserStatus};
use latchkey_core::{Caller, Settings};
use latchkey_proto::RefreshToken;
use latchkey_store::SqliteStore;

fn rotate(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let now = Timestamp(1_800_000_000);
    let (store, first) = rt.block_on(async {
        let store = SqliteStore::open(&url).await.expect("open");
        let user = UserRecord {
            id: "u".into(),
            username: "bench".into(),
            password_hash: String::new(),
            roles: vec![],
            authz_ver: 1,
            status: UserStatus::Active,
            created_at: now,
            email: None,
        };
        store.insert_user(&user).await.expect("user");
        let session = SessionRecord {
            id: "s".into(),
            user_id: "u".into(),
            client_id: "latchkey".into(),
            scope: "profile".into(),
            created_at: now,
            last_used_at: now,
            idle_expires_at: Timestamp(now.0 + 10_000_000),
            expires_at: Timestamp(now.0 + 10_000_000),
            ip: None,
            user_agent: None,
            revoked_at: None,
            revoke_reason: None,
            amr: "pwd".to_owned(),
            dpop_jkt: None,
            step_up_at: None,
            browser_session_id: None,
            resources: Vec::new(),
        };
        let first = new_refresh_token();
        store.insert_session(&session, &RefreshTokenKey::of(first.expose_secret())).await.expect("session");
        (store, first)
    });
    let settings = Settings::new("http://bench");
    let client = Caller::default();
    let live: Mutex<RefreshToken> = Mutex::new(first);
    c.bench_function("sqlite rotate_refresh_token (committed)", |b| {
        b.to_async(&rt).iter(|| async {
            let presented = live.lock().expect("lock").clone();
            let successor = new_refresh_token();
            let sealed = seal_successor(&presented, &successor).expect("seal");
            let ctx = RefreshContext {
                client_id: "latchkey".into(),
                now,
                policy: RotationPolicy::from(&settings),
                caller: client.clone(),
                requested_scope: None,
                requested_resources: Vec::new(),
                successor: RefreshTokenKey::of(successor.expose_secret()),
                successor_sealed: sealed,
                is_stepped_up: false,
            };
            let out = store
                .rotate_refresh_token(
                    &RefreshTokenKey::of(presented.expose_secret()),
                    Box::new(move |snap| decide(snap, &ctx)),
                )
                .await
                .expect("rotate");
            assert!(matches!(out, Some((_, latchkey_core::store::RotationDecision::Rotate { .. }))));
            *live.lock().expect("lock") = successor;
        });
    });
}

criterion_group!(benches, rotate);
criterion_main!(benches);
