//! The storage port for the device authorization grant (RFC 8628, SPEC 13):
//! [`DeviceGrantStore`]. A poll is one transaction that locks the row, lets the domain
//! decide ([`DevicePollDecide`]) and applies the decision, so two polls of one device code
//! never both open a session.

use async_trait::async_trait;

use super::{SessionRecord, StoreError};
use crate::clock::Timestamp;
use crate::crypto::{RefreshTokenKey, TokenHash};
use crate::ids::{ClientId, Scope, SessionId, UserId};

/// Where a device authorization is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    /// Waiting for the user.
    Pending,
    /// The user allowed it; the next poll gets tokens.
    Approved,
    /// The user denied it.
    Denied,
    /// A poll got tokens: spent.
    Used,
}

impl DeviceState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Used => "used",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Approved, Self::Denied, Self::Used].into_iter().find(|d| d.as_str() == s)
    }
}

/// A device authorization as stored: the device code's hash, never the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAuthorizationRecord {
    /// SHA-256 of the device code.
    pub device_code_hash: TokenHash,
    /// The user code, 8 letters without the dash.
    pub user_code: String,
    /// The client (device) that asked.
    pub client_id: ClientId,
    /// The scope asked.
    pub scope: Scope,
    /// When it was asked.
    pub created_at: Timestamp,
    /// When the codes stop working.
    pub expires_at: Timestamp,
    /// The polling interval now, in seconds.
    pub interval_secs: i64,
    /// The last poll.
    pub last_polled_at: Option<Timestamp>,
    /// Where it is.
    pub state: DeviceState,
    /// Who decided.
    pub user_id: Option<UserId>,
    /// The browser session that approved it.
    pub browser_session_id: Option<SessionId>,
    /// When the user decided.
    pub decided_at: Option<Timestamp>,
    /// The session the approved poll opened.
    pub session_id: Option<SessionId>,
}

/// What the domain decided about one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevicePollDecision {
    /// Answer without tokens; [`DeviceWait::SlowDown`] raises the interval by 5 s.
    Wait(DeviceWait),
    /// Open this session and spend the authorization.
    Issue {
        /// The new session.
        session: Box<SessionRecord>,
        /// Its first refresh token.
        refresh_token: Option<RefreshTokenKey>,
    },
}

/// Why a poll gets no tokens (RFC 8628 §3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceWait {
    /// `authorization_pending`: the user has not decided yet.
    Pending,
    /// `slow_down`: the poll came sooner than the interval after the previous one.
    SlowDown,
    /// `access_denied`: the user said no.
    Denied,
    /// `expired_token`: the codes expired before the user allowed them.
    Expired,
    /// `invalid_grant`: the device code was used already.
    Spent,
    /// `invalid_grant`: the sign-in that approved it has ended since (revoked is final).
    SignInEnded,
}

/// The poll decision, run inside the store's transaction with the row and the approving
/// browser session (as it is now) read under lock.
pub type DevicePollDecide =
    Box<dyn FnOnce(&DeviceAuthorizationRecord, Option<&SessionRecord>) -> DevicePollDecision + Send>;

/// What a poll came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevicePoll {
    /// No such device code.
    Unknown,
    /// The decision was applied to the authorization as it was before this poll.
    Decided {
        /// The authorization before the poll.
        authorization: Box<DeviceAuthorizationRecord>,
        /// The decision.
        decision: DevicePollDecision,
    },
}

/// Device authorizations (RFC 8628).
#[async_trait]
pub trait DeviceGrantStore {
    /// Stores a new device authorization; a taken user code is [`StoreError::Conflict`].
    async fn insert_device_authorization(&self, auth: &DeviceAuthorizationRecord) -> Result<(), StoreError>;
    /// An authorization by its user code.
    async fn find_device_authorization(
        &self,
        user_code: &str,
    ) -> Result<Option<DeviceAuthorizationRecord>, StoreError>;
    /// Records the user's decision on a pending, unexpired authorization: approved (with the
    /// browser session) or denied. `false` when it was not pending or has expired.
    async fn decide_device_authorization(
        &self,
        user_code: &str,
        user_id: &UserId,
        approved_by: Option<&SessionId>,
        now: Timestamp,
    ) -> Result<bool, StoreError>;
    /// A poll by `client_id` with the device code hashed as `hash`: one transaction that
    /// locks the row, runs `decide` (unless the row belongs to another client: then
    /// [`DevicePoll::Unknown`], and nothing changes), records the poll, and on
    /// [`DevicePollDecision::Issue`] inserts the session and spends the row.
    async fn poll_device_authorization(
        &self,
        hash: &TokenHash,
        client_id: &ClientId,
        now: Timestamp,
        decide: DevicePollDecide,
    ) -> Result<DevicePoll, StoreError>;
}
