//! The storage port for pushed authorization requests (RFC 9126, SPEC 13):
//! [`PushedRequestStore`]. A request is used by one browser only (the first to open it is
//! bound to it) and spent by the code it produces.

use async_trait::async_trait;

use super::StoreError;
use crate::clock::Timestamp;
use crate::crypto::TokenHash;
use crate::ids::ClientId;

/// A pushed request as stored: the hash of its `request_uri`, never the URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedRequestRecord {
    /// SHA-256 of the `request_uri`.
    pub hash: TokenHash,
    /// The client that pushed it.
    pub client_id: ClientId,
    /// The checked authorization parameters, a JSON list of `[name, value]` pairs.
    pub params: String,
    /// When it was pushed.
    pub created_at: Timestamp,
    /// Until when a browser may first open it.
    pub expires_at: Timestamp,
}

/// Pushed authorization requests.
#[async_trait]
pub trait PushedRequestStore {
    /// Stores a pushed request.
    async fn insert_pushed_request(&self, request: &PushedRequestRecord) -> Result<(), StoreError>;
    /// The parameters of an unspent, unexpired request of `client_id` and when it was
    /// pushed, for the browser whose key is `browser`: the first browser to ask is bound to
    /// it and gets until `extend_until`; any other browser gets `None`, as for an unknown
    /// request.
    async fn use_pushed_request(
        &self,
        hash: &TokenHash,
        client_id: &ClientId,
        browser: &TokenHash,
        now: Timestamp,
        extend_until: Timestamp,
    ) -> Result<Option<(String, Timestamp)>, StoreError>;
    /// Spends a request (its code was issued); `false` when it was spent already.
    async fn spend_pushed_request(&self, hash: &TokenHash, now: Timestamp) -> Result<bool, StoreError>;
}
