//! Memory held per revoked session (issue: resource servers; target 1 M in ≤ 100 MB): feeds
//! one million `session_revoked` events, in pages of 1,000 as the feed sends them, into the
//! revocation state a verifier keeps, and reports the growth of the process's resident
//! memory (Linux `/proc/self/statm`). Run: `cargo bench -p latchkey-verify --bench memory`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup fails loudly")]
#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_proto::events::{FeedPage, RevocationEvent};
use latchkey_verify::Revocations;

const SESSIONS: u64 = 1_000_000;
const PAGE: u64 = 1_000;

/// Resident memory in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("statm");
    pages * 4096
}

/// A session id shaped like Latchkey's (128 bits, base64url: 22 characters).
fn sid(i: u64) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&i.to_le_bytes());
    bytes[8..].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

fn main() {
    let until = 4_000_000_000;
    let mut state = Revocations::default();
    let before = rss();
    let start = Instant::now();
    for page in 0..SESSIONS / PAGE {
        let events = (page * PAGE..(page + 1) * PAGE)
            .map(|i| RevocationEvent::SessionRevoked {
                seq: i64::try_from(i + 1).unwrap(),
                sid: sid(i),
                until,
            })
            .collect();
        state.apply(FeedPage { events, next: i64::try_from((page + 1) * PAGE).unwrap() });
    }
    let elapsed = start.elapsed();
    let grown = rss().saturating_sub(before);
    assert_eq!(state.counts().0, usize::try_from(SESSIONS).unwrap());
    assert!(state.is_session_revoked(&sid(SESSIONS / 2)));
    assert!(!state.is_session_revoked(&sid(SESSIONS + 1)));
    let lookups = Instant::now();
    let hits = (0..SESSIONS).filter(|i| state.is_session_revoked(&sid(*i))).count();
    let per_lookup = lookups.elapsed() / u32::try_from(SESSIONS).unwrap();
    assert_eq!(hits, usize::try_from(SESSIONS).unwrap());
    println!(
        "{SESSIONS} revoked sessions held: {:.1} MB resident ({} bytes each); applied in {elapsed:?}; \
         lookup {per_lookup:?} each (incl. making the id)",
        grown as f64 / 1e6,
        grown / SESSIONS,
    );
}
