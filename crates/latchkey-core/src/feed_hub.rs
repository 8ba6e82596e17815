//! The feed hub: fans each new revocation-feed event out to every open stream of this
//! process, with one store query per change (or per poll) however many streams are open,
//! and counts each feed client's open streams. It holds no reference to the service: the
//! service owns one, and `feed.rs` drives it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, broadcast, watch};

use crate::ids::ClientId;
use crate::store::FeedEventRecord;

/// The most Server-Sent Event streams one feed client may hold open on one server process.
/// A resource server needs one per process; this leaves room for many replicas and
/// reconnects overlapping their predecessors, while a leaked or stolen credential cannot
/// hold thousands of connections (and their memory) open.
pub const MAX_STREAMS_PER_CLIENT: usize = 32;

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
    open_streams: Arc<Mutex<HashMap<ClientId, usize>>>,
}

/// One open stream of a feed client, counted against [`MAX_STREAMS_PER_CLIENT`] until it
/// is dropped (when the stream ends, however it ends).
pub struct StreamSlot {
    client_id: ClientId,
    open_streams: Arc<Mutex<HashMap<ClientId, usize>>>,
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
    pub(crate) fn open_stream(&self, client_id: &ClientId) -> Option<StreamSlot> {
        let mut open = self.open_streams.lock().ok()?;
        let count = open.entry(client_id.clone()).or_default();
        if *count >= MAX_STREAMS_PER_CLIENT {
            return None;
        }
        *count += 1;
        Some(StreamSlot { client_id: client_id.clone(), open_streams: Arc::clone(&self.open_streams) })
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

    /// Waits until this process wrote feed events, or [`POLL_EVERY`] passed.
    pub(crate) async fn wait_for_change(&self) {
        tokio::select! {
            () = self.changed.notified() => {}
            () = tokio::time::sleep(POLL_EVERY) => {}
        }
    }

    /// The last seq broadcast.
    pub(crate) fn last_seq(&self) -> i64 {
        self.last_seq.load(Ordering::Relaxed)
    }

    /// Broadcasts events read after [`Self::last_seq`], in seq order, and moves past them.
    pub(crate) fn broadcast(&self, events: Vec<FeedEventRecord>) {
        let Some(last) = events.last().map(|e| e.seq) else { return };
        for event in events {
            // No receivers is fine: nobody is streaming.
            let _ = self.sender.send(event);
        }
        self.last_seq.store(last, Ordering::Relaxed);
    }

    /// Starts from `seq` (the newest event when the hub starts).
    pub(crate) fn start_at(&self, seq: i64) {
        self.last_seq.store(seq, Ordering::Relaxed);
    }
}
