//! The storage port for what leaves the server on its own schedule: the states and outcomes
//! that the mail outbox (SPEC 10) and the back-channel logout queue (SPEC 13) share, and
//! the logout queue itself ([`LogoutDeliveryStore`]). Both work the same way: a row is
//! written in the transaction of its cause, a sender claims due rows for a lease kept in
//! the database, and completes each with a [`DeliveryOutcome`].

use async_trait::async_trait;

use super::StoreError;
use crate::clock::Timestamp;
use crate::ids::{ClientId, SessionId, UserId};

/// Where a queued mail or logout delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Waiting to be sent (or retried).
    Pending,
    /// Accepted by the receiver (the mail server, or the app's logout endpoint).
    Sent,
    /// Refused for good.
    Failed,
    /// Not sent before `expires_at`.
    Expired,
}

impl DeliveryState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Expired => "expired",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Sent, Self::Failed, Self::Expired].into_iter().find(|m| m.as_str() == s)
    }
}

/// How one delivery attempt of a claimed row ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The receiver accepted it: `sent` (a mail's bodies are dropped).
    Sent,
    /// A transient failure: due again at `at`, still `pending`.
    Retry {
        /// When it is due again.
        at: Timestamp,
        /// The receiver's or the transport's error (never a body or a token).
        error: String,
    },
    /// Refused for good: `failed`.
    Failed {
        /// The refusal (never a body or a token).
        error: String,
    },
}

/// A back-channel logout token waiting to be delivered (SPEC 13): what it will say, not the
/// token (which is signed at each attempt, with the same `jti`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutDeliveryRecord {
    /// Queue order; the token's `jti` is derived from it.
    pub id: i64,
    /// The app (the token's `aud`).
    pub client_id: ClientId,
    /// The app's `backchannel_logout_uri` when the session ended.
    pub uri: String,
    /// The user (`sub`).
    pub user_id: UserId,
    /// The session that ended (`sid`).
    pub session_id: SessionId,
    /// When the session ended.
    pub created_at: Timestamp,
    /// Not delivered after this.
    pub expires_at: Timestamp,
    /// Where it is.
    pub state: DeliveryState,
    /// Attempts so far.
    pub attempts: i64,
    /// When it is due (again).
    pub next_attempt_at: Timestamp,
    /// The receiver's last refusal, in a line.
    pub last_error: Option<String>,
    /// When the receiver accepted it.
    pub sent_at: Option<Timestamp>,
}

/// The back-channel logout queue. Rows are queued by the revocations themselves (every
/// ended session of a client with a `backchannel_logout_uri` gets one, in the revoking
/// transaction); this trait is the sender's side, with the outbox's claim semantics: a
/// claim is a lease, two senders never claim one row at once, and completion checks the
/// claim.
#[async_trait]
pub trait LogoutDeliveryStore {
    /// Claims up to `limit` due deliveries for `claimer` until `lease_until`, oldest first.
    /// Each claim counts an attempt.
    async fn claim_logout_deliveries(
        &self,
        claimer: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: i64,
    ) -> Result<Vec<LogoutDeliveryRecord>, StoreError>;
    /// Records how an attempt ended and releases the claim; `false` when the row is no
    /// longer claimed by `claimer`.
    async fn complete_logout_delivery(
        &self,
        id: i64,
        claimer: &str,
        now: Timestamp,
        outcome: &DeliveryOutcome,
    ) -> Result<bool, StoreError>;
    /// Marks pending deliveries past `expires_at` (and not under a live lease) `expired`;
    /// how many.
    async fn expire_logout_deliveries(&self, now: Timestamp) -> Result<u64, StoreError>;
    /// How many deliveries are pending, and when the oldest of them was queued.
    async fn logout_delivery_backlog(&self) -> Result<(i64, Option<Timestamp>), StoreError>;
    /// Deliveries, newest first, in one state or all (for `latchkey logout-deliveries`).
    async fn list_logout_deliveries(
        &self,
        state: Option<DeliveryState>,
        limit: i64,
    ) -> Result<Vec<LogoutDeliveryRecord>, StoreError>;
}
