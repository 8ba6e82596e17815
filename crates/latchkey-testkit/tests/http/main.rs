//! The HTTP suite: every behaviour of SPEC 5.1, 6, 7 and 8 over real HTTP against the real
//! server on a free port with a real SQLite file. One test binary for all of it.

// Helpers in an integration-test crate are not `#[test]` functions, so clippy's
// allow-*-in-tests settings do not reach them; a failing index is a failing test here.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod abuse;
mod account;
mod browser;
mod cli;
mod client;
mod client_js;
mod delays;
mod device_grant;
mod dpop;
mod email;
mod feed;
mod fuzz;
mod hardening;
mod input;
mod interop;
mod interop_node;
mod logout;
mod mail;
mod master_key;
mod mfa;
mod mfa_policy;
mod nodes;
mod notes;
mod oauth;
mod pages;
mod par;
mod passkey;
mod private_key_jwt;
mod processes;
mod recovery;
mod registration;
mod resources;
mod risk;
mod rotation;
mod security;
mod soak;
mod step_up;
mod tidy;
mod tokens;
mod verification;

pub(crate) use latchkey_testkit::{TestServer, http_client, send};

/// Repeats `attempt` (up to `tries` times) until it answers `429`; the last answer.
pub(crate) async fn until_throttled<F, Fut>(tries: usize, mut attempt: F) -> latchkey_testkit::Answer
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = latchkey_testkit::Answer>,
{
    let mut last = attempt().await;
    for _ in 1..tries {
        if last.status == 429 {
            break;
        }
        last = attempt().await;
    }
    last
}
