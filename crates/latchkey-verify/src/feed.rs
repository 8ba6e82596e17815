//! The revocation state a resource server holds in memory, and the task that keeps it
//! current from the server's feed (snapshot with `after=0`, then `after=next`).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use latchkey_proto::events::{FeedPage, RevocationEvent};

/// A session, token or user id as held in memory: a 128-bit keyed hash of the id (two
/// SipHash-1-3 runs under random keys chosen per process), so a million revoked sessions
/// fit in well under 100 MB whatever the ids look like. An id can only be mistaken for
/// another with probability about n / 2^128, and nobody outside the process knows the keys.
type IdKey = [u8; 16];

/// Seconds since the epoch, as held (until 2106; later values saturate).
fn compact_time(t: i64) -> u32 {
    u32::try_from(t.max(0)).unwrap_or(u32::MAX)
}

/// What the feed has said so far, minus what has expired. Public for benchmarks and for
/// callers that bring their own transport; a [`crate::Verifier`] keeps one current itself.
#[derive(Debug)]
pub struct Revocations {
    hashers: (RandomState, RandomState),
    /// Revoked sessions, with when they may be forgotten.
    sids: HashMap<IdKey, u32>,
    /// Revoked tokens.
    jtis: HashMap<IdKey, u32>,
    /// The latest `authz_ver` per user, with when it may be forgotten.
    authz: HashMap<IdKey, (i64, u32)>,
    /// The seq to ask after next.
    pub(crate) next: i64,
    /// When the feed last answered.
    pub(crate) last_ok: Option<Instant>,
    /// Whether the SSE stream is connected (and so the state current, events or not).
    pub(crate) is_streaming: bool,
    /// When expired entries were last forgotten (seconds since the epoch).
    pruned_at: i64,
}

impl Default for Revocations {
    fn default() -> Self {
        Self {
            hashers: (RandomState::new(), RandomState::new()),
            sids: HashMap::new(),
            jtis: HashMap::new(),
            authz: HashMap::new(),
            next: 0,
            last_ok: None,
            is_streaming: false,
            pruned_at: 0,
        }
    }
}

impl Revocations {
    fn key(&self, id: &str) -> IdKey {
        let (a, b) = (self.hashers.0.hash_one(id), self.hashers.1.hash_one(id));
        let mut key = [0; 16];
        key[..8].copy_from_slice(&a.to_le_bytes());
        key[8..].copy_from_slice(&b.to_le_bytes());
        key
    }

    /// Applies a page of the feed (events in seq order) and moves `next` forward.
    pub fn apply(&mut self, page: FeedPage) {
        for event in page.events {
            match event {
                RevocationEvent::SessionRevoked { sid, until, .. } => {
                    let key = self.key(&sid);
                    let entry = self.sids.entry(key).or_insert(0);
                    *entry = (*entry).max(compact_time(until));
                }
                RevocationEvent::TokenRevoked { jti, until, .. } => {
                    let key = self.key(&jti);
                    let entry = self.jtis.entry(key).or_insert(0);
                    *entry = (*entry).max(compact_time(until));
                }
                RevocationEvent::UserChanged { sub, authz_ver, until, .. } => {
                    let key = self.key(&sub);
                    let until = compact_time(until);
                    let entry = self.authz.entry(key).or_insert((authz_ver, until));
                    if authz_ver >= entry.0 {
                        *entry = (authz_ver, until.max(entry.1));
                    }
                }
            }
        }
        self.next = self.next.max(page.next);
    }

    /// Forgets what can no longer matter.
    pub fn prune(&mut self, now: i64) {
        self.pruned_at = now;
        let now = compact_time(now);
        self.sids.retain(|_, until| *until > now);
        self.jtis.retain(|_, until| *until > now);
        self.authz.retain(|_, (_, until)| *until > now);
    }

    /// [`Self::prune`]s at most once a minute: a scan of every entry is not paid per event.
    pub(crate) fn prune_if_due(&mut self, now: i64) {
        if now.saturating_sub(self.pruned_at) >= 60 {
            self.prune(now);
        }
    }

    /// Whether session `sid` is revoked.
    pub fn is_session_revoked(&self, sid: &str) -> bool {
        self.sids.contains_key(&self.key(sid))
    }

    /// Whether the token `jti` is revoked.
    pub fn is_token_revoked(&self, jti: &str) -> bool {
        self.jtis.contains_key(&self.key(jti))
    }

    /// The latest `authz_ver` announced for user `sub`.
    pub fn latest_authz_ver(&self, sub: &str) -> Option<i64> {
        self.authz.get(&self.key(sub)).map(|(v, _)| *v)
    }

    /// How many revoked sessions, revoked tokens and changed users are held.
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.sids.len(), self.jtis.len(), self.authz.len())
    }

    /// The seq to ask after next.
    pub fn next(&self) -> i64 {
        self.next
    }
}

/// How the follower reaches the feed.
pub(crate) struct FeedSource {
    pub(crate) url: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) poll_every: Duration,
    /// Whether to follow the SSE stream (else only page every `poll_every`).
    pub(crate) use_stream: bool,
    /// The verifier's clock, which decides when revocations may be forgotten.
    pub(crate) now: crate::clock::TimeFn,
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
fn absorb(state: &Arc<RwLock<Revocations>>, src: &FeedSource, page: FeedPage) {
    let now = crate::clock::unix_secs((src.now)());
    let mut guard = write(state);
    guard.apply(page);
    guard.prune_if_due(now);
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
        absorb(state, src, p);
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
    let result = read_stream(&mut res, src, state).await;
    if let Some(strong) = state.upgrade() {
        write(&strong).is_streaming = false;
    }
    result
}

/// The server sends a keep-alive every 15 s: a stream silent for longer is dead.
const STREAM_SILENCE_LIMIT: Duration = Duration::from_secs(35);

async fn read_stream(
    res: &mut reqwest::Response,
    src: &FeedSource,
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
        absorb(&strong, src, FeedPage { events, next: next.unwrap_or(current) });
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
        if src.use_stream
            && let Err(e) = stream(&http, &src, &state).await
        {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn page(events: Vec<RevocationEvent>, next: i64) -> FeedPage {
        FeedPage { events, next }
    }

    #[test]
    fn holds_revocations_until_they_can_no_longer_matter() {
        let mut r = Revocations::default();
        r.apply(page(
            vec![
                RevocationEvent::SessionRevoked { seq: 1, sid: "s1".into(), until: 100 },
                RevocationEvent::TokenRevoked { seq: 2, jti: "j1".into(), until: 200 },
                RevocationEvent::UserChanged { seq: 3, sub: "u1".into(), authz_ver: 3, until: 300 },
            ],
            3,
        ));
        assert!(r.is_session_revoked("s1") && !r.is_session_revoked("s2") && !r.is_session_revoked("j1"));
        assert!(r.is_token_revoked("j1") && !r.is_token_revoked("s1"));
        assert_eq!((r.latest_authz_ver("u1"), r.latest_authz_ver("u2")), (Some(3), None));
        assert_eq!((r.next(), r.counts()), (3, (1, 1, 1)));
        // An older version arriving late never lowers the latest one.
        r.apply(page(
            vec![RevocationEvent::UserChanged { seq: 4, sub: "u1".into(), authz_ver: 2, until: 50 }],
            4,
        ));
        assert_eq!(r.latest_authz_ver("u1"), Some(3));
        // A page never moves the position back.
        r.apply(page(Vec::new(), 1));
        assert_eq!(r.next(), 4);
        r.prune(150);
        assert!(!r.is_session_revoked("s1") && r.is_token_revoked("j1"));
        r.prune(300);
        assert_eq!(r.counts(), (0, 0, 0));
    }

    #[test]
    fn pruning_waits_a_minute_between_scans() {
        let mut r = Revocations::default();
        r.apply(page(vec![RevocationEvent::SessionRevoked { seq: 1, sid: "s".into(), until: 10 }], 1));
        r.prune_if_due(5);
        assert_eq!(r.counts().0, 1, "not expired yet");
        r.prune_if_due(20);
        assert_eq!(r.counts().0, 1, "less than a minute since the last scan");
        r.prune_if_due(65);
        assert_eq!(r.counts().0, 0);
    }

    #[test]
    fn times_beyond_2106_and_before_1970_saturate() {
        assert_eq!(compact_time(-5), 0);
        assert_eq!(compact_time(i64::MAX), u32::MAX);
        assert_eq!(compact_time(1_767_225_600), 1_767_225_600);
    }
}
