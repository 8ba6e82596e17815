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
    /// Whether the SSE stream is connected (and so the state current, events or not).
    pub(crate) is_streaming: bool,
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

/// Applies one page and records that the feed answered.
fn absorb(state: &Arc<RwLock<Revocations>>, page: FeedPage) {
    let mut guard = write(state);
    guard.apply(page);
    guard.prune(crate::verifier::now_secs());
    guard.last_ok = Some(Instant::now());
}

/// Pages until caught up. `Err` when the feed cannot be read.
async fn catch_up(
    http: &reqwest::Client,
    src: &FeedSource,
    state: &Arc<RwLock<Revocations>>,
) -> Result<(), String> {
    loop {
        let after = read(state).next;
        let p = page(http, src, after).await?;
        let is_done = p.events.is_empty();
        absorb(state, p);
        if is_done {
            return Ok(());
        }
    }
}

/// Reads the SSE stream from `next` until it ends or fails, applying each event as it
/// arrives; any chunk (a keep-alive comment too) proves the feed is alive.
async fn stream(
    http: &reqwest::Client,
    src: &FeedSource,
    state: &std::sync::Weak<RwLock<Revocations>>,
) -> Result<(), String> {
    let after = match state.upgrade() {
        Some(s) => read(&s).next,
        None => return Ok(()),
    };
    let mut res = http
        .get(format!("{}/stream", src.url))
        .basic_auth(&src.client_id, Some(&src.client_secret))
        .header("last-event-id", after.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !res.status().is_success() {
        return Err(format!("feed stream answered {}", res.status()));
    }
    if let Some(strong) = state.upgrade() {
        write(&strong).is_streaming = true;
    }
    let result = read_stream(&mut res, state).await;
    if let Some(strong) = state.upgrade() {
        write(&strong).is_streaming = false;
    }
    result
}

/// The server sends a keep-alive every 15 s: a stream silent for longer is dead.
const STREAM_SILENCE_LIMIT: Duration = Duration::from_secs(35);

async fn read_stream(
    res: &mut reqwest::Response,
    state: &std::sync::Weak<RwLock<Revocations>>,
) -> Result<(), String> {
    let mut buf = String::new();
    loop {
        let chunk = tokio::time::timeout(STREAM_SILENCE_LIMIT, res.chunk())
            .await
            .map_err(|_| "feed stream went silent".to_owned())?
            .map_err(|e| e.to_string())?;
        let Some(chunk) = chunk else { return Ok(()) };
        let Some(strong) = state.upgrade() else { return Ok(()) };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        let mut events = Vec::new();
        let mut next = None;
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut id = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse::<i64>().ok();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if let (Some(id), Ok(event)) = (id, serde_json::from_str::<RevocationEvent>(&data)) {
                events.push(event);
                next = Some(id);
            }
        }
        let current = read(&strong).next;
        absorb(&strong, FeedPage { events, next: next.unwrap_or(current) });
    }
}

/// Follows the feed until the state is dropped: catches up by paging, then follows the SSE
/// stream (resuming from the last seq); when the stream fails or ends, it falls back to
/// paging every `poll_every` and tries the stream again.
pub(crate) async fn follow(
    http: reqwest::Client,
    src: FeedSource,
    state: std::sync::Weak<RwLock<Revocations>>,
) {
    loop {
        let Some(strong) = state.upgrade() else { return };
        if let Err(e) = catch_up(&http, &src, &strong).await {
            tracing::warn!(error = %e, "revocation feed unreachable; will retry");
        }
        drop(strong);
        if let Err(e) = stream(&http, &src, &state).await {
            tracing::debug!(error = %e, "revocation stream unavailable; polling");
        }
        if state.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(src.poll_every).await;
    }
}

pub(crate) fn read(state: &Arc<RwLock<Revocations>>) -> std::sync::RwLockReadGuard<'_, Revocations> {
    state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn write(state: &Arc<RwLock<Revocations>>) -> std::sync::RwLockWriteGuard<'_, Revocations> {
    state.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}
