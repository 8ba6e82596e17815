//! Login throttling policy (SPEC 5.1, 8): per account (consecutive failures from any
//! address, with a doubling lockout) and per client address (failures within a minute).
//! The counters live in the store so several nodes count once; this file decides.

use std::net::IpAddr;

use crate::clock::Timestamp;
use crate::settings::ThrottlePolicy;
use crate::store::ThrottleRecord;

/// The counter key of an account. Usernames that do not exist are counted too, so the
/// answer never tells whether an account exists.
pub fn account_key(username: &str) -> String {
    format!("acct:{username}")
}

/// The counter key of a client address. IPv6 clients are counted per /64, since one
/// subscriber usually holds a whole /64.
pub fn address_key(ip: &str) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("addr:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        _ => format!("addr:{ip}"),
    }
}

/// The counter key of registration attempts from a client address (per /64 for IPv6, as
/// [`address_key`]) in the clock minute of `now`: a fixed window, so steady traffic under
/// the limit (a carrier-grade NAT registering every few seconds) is never refused.
pub fn registration_key(ip: &str, now: Timestamp) -> String {
    format!("reg:{}:{}", address_key(ip), now.0.div_euclid(60))
}

/// The counter of passkey sign-in ceremonies started from one client address (IPv6: its
/// /64) in the current clock minute: each start stores state until it is answered.
pub fn passkey_start_key(ip: &str, now: Timestamp) -> String {
    format!("pks:{}:{}", address_key(ip), now.0.div_euclid(60))
}

/// Seconds until the next clock minute, when a per-minute `count` is over `limit`.
pub fn minute_retry_after(count: i64, limit: i64, now: Timestamp) -> Option<u64> {
    if count <= limit {
        return None;
    }
    u64::try_from(60 - now.0.rem_euclid(60)).ok()
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Seconds the account must wait, if it is locked: from its `account_failures`th
/// consecutive failure, for a lockout that doubles with each further failure.
pub fn account_retry_after(
    rec: Option<&ThrottleRecord>,
    policy: &ThrottlePolicy,
    now: Timestamp,
) -> Option<u64> {
    let rec = rec?;
    if rec.count < policy.account_failures
        || now.seconds_since(rec.last_failure_at) >= secs(policy.account_window)
    {
        return None;
    }
    let doublings = u32::try_from(rec.count - policy.account_failures).unwrap_or(u32::MAX).min(16);
    let lockout =
        secs(policy.account_lockout).saturating_mul(1_i64 << doublings).min(secs(policy.account_lockout_max));
    let wait = rec.last_failure_at.0.saturating_add(lockout) - now.0;
    u64::try_from(wait).ok().filter(|w| *w > 0)
}

/// Seconds the address must wait, if it is locked: from its `address_failures`th failure
/// (each within a window of the previous), until a window after the last one.
pub fn address_retry_after(
    rec: Option<&ThrottleRecord>,
    policy: &ThrottlePolicy,
    now: Timestamp,
) -> Option<u64> {
    let rec = rec?;
    if rec.count < policy.address_failures {
        return None;
    }
    let wait = rec.last_failure_at.0.saturating_add(secs(policy.address_window)) - now.0;
    u64::try_from(wait).ok().filter(|w| *w > 0)
}

/// Seconds the address must wait before registering again, if its attempts in this clock
/// minute (the counter of [`registration_key`]) passed `registration_attempts`: until the
/// next minute.
pub fn registration_retry_after(
    rec: &ThrottleRecord,
    policy: &ThrottlePolicy,
    now: Timestamp,
) -> Option<u64> {
    minute_retry_after(rec.count, policy.registration_attempts, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(count: i64, start: i64, last: i64) -> ThrottleRecord {
        ThrottleRecord { count, window_start: Timestamp(start), last_failure_at: Timestamp(last) }
    }

    #[test]
    fn account_locks_at_the_tenth_failure_and_doubles() {
        let p = ThrottlePolicy::default();
        assert_eq!(account_retry_after(None, &p, Timestamp(0)), None);
        assert_eq!(account_retry_after(Some(&rec(9, 0, 100)), &p, Timestamp(100)), None);
        assert_eq!(account_retry_after(Some(&rec(10, 0, 100)), &p, Timestamp(100)), Some(30));
        assert_eq!(account_retry_after(Some(&rec(11, 0, 100)), &p, Timestamp(100)), Some(60));
        assert_eq!(account_retry_after(Some(&rec(10, 0, 100)), &p, Timestamp(130)), None);
        assert_eq!(account_retry_after(Some(&rec(40, 0, 100)), &p, Timestamp(100)), Some(900));
        // Failures spread over many hours still count while they keep coming...
        assert_eq!(account_retry_after(Some(&rec(10, 0, 20_000)), &p, Timestamp(20_000)), Some(30));
        // ...and are forgotten a day after the last one.
        assert_eq!(account_retry_after(Some(&rec(40, 0, 100)), &p, Timestamp(100 + 86_400)), None);
    }

    #[test]
    fn address_locks_at_the_twentieth_failure_and_the_window_slides() {
        let p = ThrottlePolicy::default();
        assert_eq!(address_retry_after(Some(&rec(19, 0, 5)), &p, Timestamp(5)), None);
        assert_eq!(address_retry_after(Some(&rec(20, 0, 5)), &p, Timestamp(5)), Some(60));
        assert_eq!(address_retry_after(Some(&rec(20, 0, 5)), &p, Timestamp(64)), Some(1));
        assert_eq!(address_retry_after(Some(&rec(20, 0, 5)), &p, Timestamp(65)), None);
        // Failures straddling a minute boundary still count (the window slides).
        assert_eq!(address_retry_after(Some(&rec(20, 0, 95)), &p, Timestamp(95)), Some(60));
    }

    #[test]
    fn registration_allows_twenty_attempts_a_minute() {
        let p = ThrottlePolicy::default();
        assert_eq!(registration_retry_after(&rec(20, 0, 5), &p, Timestamp(5)), None);
        assert_eq!(registration_retry_after(&rec(21, 0, 5), &p, Timestamp(5)), Some(55));
        let t = Timestamp(125);
        assert_eq!(registration_key("2001:db8:1:2::1", t), registration_key("2001:db8:1:2::9", t));
        assert_ne!(registration_key("10.0.0.1", t), address_key("10.0.0.1"));
        // A new minute is a new counter.
        assert_ne!(
            registration_key("10.0.0.1", Timestamp(119)),
            registration_key("10.0.0.1", Timestamp(120))
        );
    }

    #[test]
    fn ipv6_is_counted_per_64() {
        assert_eq!(address_key("2001:db8:1:2:3:4:5:6"), address_key("2001:db8:1:2:ffff::1"));
        assert_ne!(address_key("2001:db8:1:2::1"), address_key("2001:db8:1:3::1"));
        assert_eq!(address_key("10.0.0.1"), "addr:10.0.0.1");
    }
}
