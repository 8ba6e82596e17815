//! The time a verifier judges tokens by: the system clock unless a test injects another
//! through `VerifierBuilder::time_fn` (as openidconnect-rs does with `set_time_fn`).

use std::sync::Arc;
use std::time::SystemTime;

/// The clock a verifier judges tokens by; see `VerifierBuilder::time_fn`.
pub(crate) type TimeFn = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The system clock: the default [`TimeFn`].
#[expect(clippy::disallowed_methods, reason = "the resource server's own clock decides expiry")]
pub(crate) fn system_time() -> SystemTime {
    SystemTime::now()
}

/// Seconds since the epoch (0 before it), as tokens count time.
pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
