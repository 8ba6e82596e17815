//! The revocation feed (SPEC 5.4): events resource servers hold in memory so logout, theft
//! and role changes reach them at once. Events are written by the store in the same
//! transaction as the change that causes them; this module serves them to authenticated
//! clients holding the scope `revocations:read`.
//!
//! Ordering: seq order is commit order, so a reader can never see seq N+1 before N. On SQLite
//! every write goes through the one writer thread; on PostgreSQL every feed writer holds an
//! advisory lock from its first feed insert to its commit (see that store's module doc).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use latchkey_proto::events::FeedPage;
use tokio::sync::{Notify, broadcast, watch};

use crate::clients::AuthenticatedClient;
use crate::service::Latchkey;
use crate::store::{FeedEventRecord, StoreError};

/// The scope that grants the feed.
pub const FEED_SCOPE: &str = "revocations:read";
/// The most events in one page.
pub const PAGE_SIZE: i64 = 1000;
/// The most Server-Sent Event streams one feed client may hold open on one server process.
/// A resource server needs one per process; this leaves room for many replicas and
/// reconnects overlapping their predecessors, while a leaked or stolen credential cannot
/// hold thousands of connections (and their memory) open.
pub const MAX_STREAMS_PER_CLIENT: usize = 32;

/// Feed failures.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The client lacks `revocations:read`.
    #[error("the client lacks the scope revocations:read")]
    InsufficientScope,
    /// The client already holds [`MAX_STREAMS_PER_CLIENT`] open streams.
    #[error("the client holds too many open feed streams")]
    TooManyStreams,
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Latchkey {
    /// `GET /revocations?after=SEQ`: events after `after` that are still in force, up to
    /// [`PAGE_SIZE`]; `after = 0` is the snapshot a new resource server loads. `next` is the
    /// seq to ask after next (unchanged when there is nothing new).
    ///
    /// # Errors
    /// [`FeedError::InsufficientScope`], storage.
    pub async fn revocations(&self, client: &AuthenticatedClient, after: i64) -> Result<FeedPage, FeedError> {
        self.authorize_feed(client)?;
        let events = self.feed_events_after(after).await?;
        let next = events.last().map_or(after.max(0), |e| e.seq);
        Ok(FeedPage { events: events.into_iter().map(|e| e.event).collect(), next })
    }
}

/// How often the hub looks for events written by other processes (the CLI, other nodes).
/// Events written by this process are pushed at once.
pub const POLL_EVERY: Duration = Duration::from_millis(25);

/// Fans new feed events out to every open stream: one store query per change (or per poll)
/// however many streams are open.
pub struct FeedHub {
    sender: broadcast::Sender<FeedEventRecord>,
    changed: Notify,
    last_seq: AtomicI64,
    closing: watch::Sender<bool>,
    open_streams: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open stream of a feed client, counted against [`MAX_STREAMS_PER_CLIENT`] until it
/// is dropped (when the stream ends, however it ends).
pub struct StreamSlot {
    client_id: String,
    open_streams: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        // A poisoned lock means a panic while counting; the count is then lost either way.
        if let Ok(mut open) = self.open_streams.lock()
            && let Some(count) = open.get_mut(&self.client_id)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.client_id);
            }
        }
    }
}

impl FeedHub {
    pub(crate) fn new() -> Self {
        let (sender, _) = broadcast::channel(4096);
        let (closing, _) = watch::channel(false);
        Self {
            sender,
            changed: Notify::new(),
            last_seq: AtomicI64::new(0),
            closing,
            open_streams: Arc::default(),
        }
    }

    /// Counts a new stream of `client_id`, or `None` when it holds the most already.
    fn open_stream(&self, client_id: &str) -> Option<StreamSlot> {
        let mut open = self.open_streams.lock().ok()?;
        let count = open.entry(client_id.to_owned()).or_default();
        if *count >= MAX_STREAMS_PER_CLIENT {
            return None;
        }
        *count += 1;
        Some(StreamSlot { client_id: client_id.to_owned(), open_streams: Arc::clone(&self.open_streams) })
    }

    /// Ends every open stream (graceful shutdown: streams never end by themselves).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Changes to `true` when the server shuts down.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Tells the hub that this process wrote feed events.
    pub(crate) fn changed(&self) {
        self.changed.notify_one();
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<FeedEventRecord> {
        self.sender.subscribe()
    }
}

impl Latchkey {
    /// Checks the caller may read the feed (for the stream, which then reads on its own).
    ///
    /// # Errors
    /// [`FeedError::InsufficientScope`].
    fn authorize_feed(&self, client: &AuthenticatedClient) -> Result<(), FeedError> {
        if client.has_scope(FEED_SCOPE) { Ok(()) } else { Err(FeedError::InsufficientScope) }
    }

    /// Checks the caller may open a stream: the feed scope, and fewer than
    /// [`MAX_STREAMS_PER_CLIENT`] streams open already. The slot must live as long as the
    /// stream.
    ///
    /// # Errors
    /// [`FeedError::InsufficientScope`], [`FeedError::TooManyStreams`].
    pub fn open_feed_stream(&self, client: &AuthenticatedClient) -> Result<StreamSlot, FeedError> {
        self.authorize_feed(client)?;
        self.feed.open_stream(&client.record().client_id).ok_or(FeedError::TooManyStreams)
    }

    /// The feed hub.
    pub fn feed_hub(&self) -> &FeedHub {
        &self.feed
    }

    /// Events after `after` still in force, one page, for streams catching up.
    ///
    /// # Errors
    /// Storage.
    pub async fn feed_events_after(&self, after: i64) -> Result<Vec<FeedEventRecord>, StoreError> {
        self.store.list_feed_events(after.max(0), self.clock.now(), PAGE_SIZE).await
    }

    /// Runs the hub until the process ends: on every local change, and every
    /// [`POLL_EVERY`], reads the events after the last one seen and broadcasts them in seq
    /// order. Starts at the newest event, so streams catch up on older ones themselves.
    pub async fn run_feed_hub(&self) {
        let hub = &self.feed;
        match self.store.last_feed_seq().await {
            Ok(seq) => hub.last_seq.store(seq, Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "feed hub could not read the last seq"),
        }
        loop {
            tokio::select! {
                () = hub.changed.notified() => {}
                () = tokio::time::sleep(POLL_EVERY) => {}
            }
            loop {
                let after = hub.last_seq.load(Ordering::Relaxed);
                // Events already past their `until` are broadcast too: a stream must see
                // every seq to keep its position, and holders simply forget them.
                let page =
                    self.store.list_feed_events(after, crate::clock::Timestamp(i64::MIN), PAGE_SIZE).await;
                let events = match page {
                    Ok(events) => events,
                    Err(e) => {
                        tracing::warn!(error = %e, "feed hub could not read events; will retry");
                        break;
                    }
                };
                let Some(last) = events.last().map(|e| e.seq) else { break };
                for event in events {
                    // No receivers is fine: nobody is streaming.
                    let _ = hub.sender.send(event);
                }
                hub.last_seq.store(last, Ordering::Relaxed);
            }
        }
    }
}
