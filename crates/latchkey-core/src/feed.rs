//! The revocation feed (SPEC 5.4): events resource servers hold in memory so logout, theft
//! and role changes reach them at once. Events are written by the store in the same
//! transaction as the change that causes them; this module serves them to authenticated
//! clients holding the scope `revocations:read`.
//!
//! Ordering: on SQLite every write goes through the one writer thread, so seq order is
//! commit order and a reader can never see seq N+1 before N. (Several writers on PostgreSQL
//! will need more care; that store must keep this guarantee.)

use latchkey_proto::events::FeedPage;

use crate::clients::AuthenticatedClient;
use crate::service::Latchkey;
use crate::store::StoreError;

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
        if !client.has_scope(FEED_SCOPE) {
            return Err(FeedError::InsufficientScope);
        }
        let now = self.clock.now();
        let events = self.store.list_feed_events(after.max(0), now, PAGE_SIZE).await?;
        let next = events.last().map_or(after.max(0), |e| e.seq);
        Ok(FeedPage { events: events.into_iter().map(|e| e.event).collect(), next })
    }
}
