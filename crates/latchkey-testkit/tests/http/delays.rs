//! How fast each kind of revocation reaches an API built on `latchkey-verify`: logout,
//! logout-all, session delete, password change, `user disable` (the CLI, another process's
//! write) and refresh-token reuse, over the SSE stream and over the poll fallback. Each run
//! asserts that the affected token is refused; the delays are printed (`--nocapture`), not
//! asserted: timing is for benchmarks.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::notes::{Notes, api, notes_api_with, wait_for};
use crate::{TestServer, http_client, send};

#[derive(Debug, Clone, Copy)]
enum Kind {
    Logout,
    LogoutAll,
    SessionDelete,
    PasswordChange,
    Disable,
    Reuse,
}

const KINDS: [Kind; 6] =
    [Kind::Logout, Kind::LogoutAll, Kind::SessionDelete, Kind::PasswordChange, Kind::Disable, Kind::Reuse];

const PASSWORD: &str = "correct horse battery";

/// Signs a fresh user in twice, waits until the API accepts the victim token, revokes the
/// way `kind` says and returns how long after the revoking request was answered (the
/// change is committed by then) the API refused that token.
async fn one_revocation(s: &TestServer, n: &Notes, kind: Kind, user: &str) -> Duration {
    let c = http_client();
    let first = s.signed_in(&c, user).await;
    let second = s.login(&c, user, PASSWORD).await;
    // The token that must die, and the request that kills it.
    let (victim, start) = match kind {
        Kind::Reuse => {
            // The thief refreshes with the stolen token, then uses the successor; the victim's
            // late use of the old token is reuse and ends the session.
            let stolen = first.str("refresh_token").to_owned();
            let thief = s.refresh(&c, &stolen).await;
            let thief_next = s.refresh(&c, thief.str("refresh_token")).await;
            assert_eq!(thief_next.status, 200);
            let victim = thief_next.str("access_token").to_owned();
            accepted(n, &victim).await;
            let reuse = s.refresh(&c, &stolen).await;
            assert_eq!(reuse.json["error_reason"], "reuse_detected", "{}", reuse.text);
            (victim, Instant::now())
        }
        _ => {
            let victim = first.str("access_token").to_owned();
            let other = second.str("access_token");
            accepted(n, &victim).await;
            let status = match kind {
                Kind::Logout => send(c.post(s.url("/auth/logout")).bearer_auth(&victim)).await.status,
                Kind::LogoutAll => s.post_auth(&c, "/auth/logout-all", other, json!({})).await.status,
                Kind::SessionDelete => {
                    let sid = first.str("session_id");
                    send(c.delete(s.url(&format!("/auth/sessions/{sid}"))).bearer_auth(other)).await.status
                }
                Kind::PasswordChange => {
                    let body = json!({"current_password": PASSWORD, "new_password": "another horse battery"});
                    s.post_auth(&c, "/auth/password", other, body).await.status
                }
                Kind::Disable => {
                    s.cli(&["user", "disable", user], "").await.unwrap();
                    204
                }
                Kind::Reuse => unreachable!("handled above"),
            };
            assert_eq!(status, 204, "{kind:?}");
            (victim, Instant::now())
        }
    };
    loop {
        let a = api(n, reqwest::Method::GET, "/whoami", &victim, None).await;
        if a.status == 401 {
            assert!(
                a.json["error_reason"] == "revoked" || a.json["error_reason"] == "claims_stale",
                "{kind:?}: {}",
                a.text
            );
            return start.elapsed();
        }
        assert_eq!(a.status, 200, "{kind:?}: {}", a.text);
        assert!(start.elapsed() < Duration::from_secs(10), "{kind:?}: the revocation never arrived");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn accepted(n: &Notes, token: &str) {
    wait_for(|| async { api(n, reqwest::Method::GET, "/whoami", token, None).await.status == 200 }).await;
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let i = (sorted.len() * p).div_ceil(100).saturating_sub(1);
    sorted.get(i).copied().unwrap_or_default()
}

/// Runs every kind `rounds` times against one API and prints p50/p99 per kind and overall.
async fn measure(
    mode: &str,
    configure: fn(latchkey_verify::VerifierBuilder) -> latchkey_verify::VerifierBuilder,
    rounds: usize,
) {
    let s = TestServer::start().await;
    let n = notes_api_with(&s, configure).await;
    let mut all = Vec::new();
    for kind in KINDS {
        let mut delays = Vec::new();
        for round in 0..rounds {
            delays.push(one_revocation(&s, &n, kind, &format!("{kind:?}-{round}")).await);
        }
        delays.sort();
        eprintln!(
            "{mode}: {kind:?} -> API refusal: p50 {:?}, p99 {:?} ({rounds} runs)",
            percentile(&delays, 50),
            percentile(&delays, 99)
        );
        all.extend(delays);
    }
    all.sort();
    eprintln!(
        "{mode}: every kind -> API refusal: p50 {:?}, p99 {:?} ({} runs)",
        percentile(&all, 50),
        percentile(&all, 99),
        all.len()
    );
}

#[tokio::test]
async fn every_revocation_reaches_the_api_over_sse() {
    // Polling once an hour: only the stream can deliver in time.
    measure("SSE", |b| b.poll_every(Duration::from_secs(3600)), 5).await;
}

#[tokio::test]
async fn every_revocation_reaches_the_api_by_polling() {
    // No stream, the default poll interval.
    measure("poll", |b| b.use_stream(false), 3).await;
}
