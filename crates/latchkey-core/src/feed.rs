//! The revocation feed (SPEC 5.4): events resource servers hold in memory so logout, theft
//! and role changes reach them at once. Events are written by the store in the same
//! transaction as the change that causes them; this module serves them to authenticated
//! clients holding the scope `revocations:read`.
//!
//! Ordering: seq order is commit order, so a reader can never see seq N+1 before N. On SQLite
//! every write goes through the one writer thread; on PostgreSQL every feed writer holds an
//! advisory lock from its first feed insert to its commit (see that store's module doc).

use latchkey_proto::events::FeedPage;

use crate::clients::AuthenticatedClient;
pub use crate::feed_hub::{FeedHub, MAX_STREAMS_PER_CLIENT, POLL_EVERY, StreamSlot};
use crate::service::Latchkey;
use crate::store::{FeedEventRecord, StoreError};

/// The scope that grants the feed.
pub const FEED_SCOPE: &str = "revocations:read";
/// The most events in one page.
pub const PAGE_SIZE: i64 = 1000;

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
            Ok(seq) => hub.start_at(seq),
            Err(e) => tracing::warn!(error = %e, "feed hub could not read the last seq"),
        }
        loop {
            hub.wait_for_change().await;
            loop {
                // Events already past their `until` are broadcast too: a stream must see
                // every seq to keep its position, and holders simply forget them.
                let page = self
                    .store
                    .list_feed_events(hub.last_seq(), crate::clock::Timestamp(i64::MIN), PAGE_SIZE)
                    .await;
                match page {
                    Ok(events) if events.is_empty() => break,
                    Ok(events) => hub.broadcast(events),
                    Err(e) => {
                        tracing::warn!(error = %e, "feed hub could not read events; will retry");
                        break;
                    }
                }
            }
        }
    }
}
