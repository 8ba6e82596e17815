//! Revocation events of the feed resource servers hold in memory (SPEC 5.4).

use serde::{Deserialize, Serialize};

/// One event. `until` is the time (seconds since the epoch) after which no token the event
/// concerns can still be valid, so holders may forget it then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RevocationEvent {
    /// Every token of session `sid` is dead.
    SessionRevoked {
        /// Sequence number.
        seq: i64,
        /// Session id.
        sid: String,
        /// Forget after.
        until: i64,
    },
    /// Tokens of `sub` with a lower `authz_ver` are stale.
    UserChanged {
        /// Sequence number.
        seq: i64,
        /// User id.
        sub: String,
        /// The user's new authorisation version.
        authz_ver: i64,
        /// Forget after.
        until: i64,
    },
    /// The token with this `jti` is dead.
    TokenRevoked {
        /// Sequence number.
        seq: i64,
        /// Token id.
        jti: String,
        /// Forget after.
        until: i64,
    },
}

/// `GET /revocations?after=SEQ` answer (SPEC 5.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedPage {
    /// Events after the requested seq, in seq order.
    pub events: Vec<RevocationEvent>,
    /// The seq to ask after next time.
    pub next: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape_is_pinned() {
        let e = RevocationEvent::UserChanged { seq: 42, sub: "u".into(), authz_ver: 7, until: 1 };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"user_changed","seq":42,"sub":"u","authz_ver":7,"until":1}"#
        );
    }
}
