//! The revocation state a resource server holds in memory, and the task that keeps it
//! current from the server's feed (snapshot with `after=0`, then `after=next`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use latchkey_proto::events::{FeedPage, RevocationEvent};

/// What the feed has said so far, minus what has expired.
#[derive(Debug, Default)]
pub(crate) struct Revocations {
    /// Revoked sessions, with when they may be forgotten.
    sids: HashMap<String, i64>,
    /// Revoked tokens.
    jtis: HashMap<String, i64>,
    /// The latest `authz_ver` per user, with when it may be forgotten.
    authz: HashMap<String, (i64, i64)>,
    /// The seq to ask after next.
    pub(crate) next: i64,
    /// When the feed last answered.
    pub(crate) last_ok: Option<Instant>,
}

impl Revocations {
    pub(crate) fn apply(&mut self, page: FeedPage) {
        for event in page.events {
            match event {
                RevocationEvent::SessionRevoked { sid, until, .. } => {
                    self.sids.insert(sid, until);
                }
                RevocationEvent::TokenRevoked { jti, until, .. } => {
                    self.jtis.insert(jti, until);
                }
                RevocationEvent::UserChanged { sub, authz_ver, until, .. } => {
                    let entry = self.authz.entry(sub).or_insert((authz_ver, until));
                    if authz_ver >= entry.0 {
                        *entry = (authz_ver, until.max(entry.1));
                    }
                }
            }
        }
        self.next = self.next.max(page.next);
    }

    /// Forgets what can no longer matter.
    pub(crate) fn prune(&mut self, now: i64) {
        self.sids.retain(|_, until| *until > now);
        self.jtis.retain(|_, until| *until > now);
        self.authz.retain(|_, (_, until)| *until > now);
    }

    pub(crate) fn is_session_revoked(&self, sid: &str) -> bool {
        self.sids.contains_key(sid)
    }

    pub(crate) fn is_token_revoked(&self, jti: &str) -> bool {
        self.jtis.contains_key(jti)
    }

    pub(crate) fn latest_authz_ver(&self, sub: &str) -> Option<i64> {
        self.authz.get(sub).map(|(v, _)| *v)
    }
}

/// How the follower reaches the feed.
pub(crate) struct FeedSource {
    pub(crate) url: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) poll_every: Duration,
}

/// Reads one page after `after`.
async fn page(http: &reqwest::Client, src: &FeedSource, after: i64) -> Result<FeedPage, String> {
    let res = http
        .get(format!("{}?after={after}", src.url))
        .basic_auth(&src.client_id, Some(&src.client_secret))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !res.status().is_success() {
        return Err(format!("feed answered {}", res.status()));
    }
    res.json().await.map_err(|e| e.to_string())
}

/// Follows the feed until the state is dropped: pages until caught up, then waits
/// `poll_every` and asks again.
pub(crate) async fn follow(
    http: reqwest::Client,
    src: FeedSource,
    state: std::sync::Weak<RwLock<Revocations>>,
) {
    loop {
        let Some(strong) = state.upgrade() else { return };
        let after = read(&strong).next;
        match page(&http, &src, after).await {
            Ok(p) => {
                let is_full = !p.events.is_empty();
                let mut guard = write(&strong);
                guard.apply(p);
                guard.prune(crate::verifier::now_secs());
                guard.last_ok = Some(Instant::now());
                drop(guard);
                if is_full {
                    continue; // there may be more
                }
            }
            Err(e) => tracing::warn!(error = %e, "revocation feed unreachable; will retry"),
        }
        drop(strong);
        tokio::time::sleep(src.poll_every).await;
    }
}

pub(crate) fn read(state: &Arc<RwLock<Revocations>>) -> std::sync::RwLockReadGuard<'_, Revocations> {
    state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn write(state: &Arc<RwLock<Revocations>>) -> std::sync::RwLockWriteGuard<'_, Revocations> {
    state.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}
