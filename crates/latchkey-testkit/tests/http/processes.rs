//! Tests with real `latchkey serve` processes: two processes on one PostgreSQL database, a
//! node that lives through PostgreSQL restarts under load, and `kill -9` of the server
//! under load followed by a restart (SQLite and PostgreSQL). Clients here are a fleet that
//! each rotate their own refresh-token chain, always holding the token of their last 200,
//! which is what a real client does.
//!
//! `LATCHKEY_CRASH_ROUNDS` sets how many times the crash tests kill the server (default 5;
//! `scripts/reliability` runs many more).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use latchkey_testkit::process::{NodeProcess, PrivatePostgres};
use latchkey_testkit::{login_at, refresh_at, register_at};
use serde_json::{Value, json};

use crate::{http_client, send};

/// The `latchkey` binary (built in the testkit under another name; see its source).
fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_latchkey-node"))
}

fn crash_rounds() -> u32 {
    std::env::var("LATCHKEY_CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5)
}

/// A session's tokens.
#[derive(Debug, Clone)]
struct Tokens {
    refresh: String,
    access: String,
}

/// Registers `username` on `base` and logs in `sessions` times.
async fn sign_in(base: &str, username: &str, sessions: usize) -> Vec<Tokens> {
    let c = http_client();
    register_at(base, &c, username, PASSWORD).await;
    let mut out = Vec::new();
    for _ in 0..sessions {
        let login = login_at(base, &c, username, PASSWORD).await;
        out.push(Tokens {
            refresh: login.str("refresh_token").into(),
            access: login.str("access_token").into(),
        });
    }
    out
}

const PASSWORD: &str = "correct horse battery";

async fn refresh(base: &str, token: &str) -> latchkey_testkit::Answer {
    refresh_at(base, &http_client(), token).await
}

/// What one client of the fleet saw.
#[derive(Debug, Default)]
struct Chain {
    tokens: Option<Tokens>,
    rotations: u64,
    /// 503 answers (each with a JSON error body, or it would be unexpected).
    unavailable: u64,
    /// Requests that got no HTTP answer (the server was dead or restarting).
    unanswered: u64,
    /// Anything else: a 5xx other than 503, a refused token, a 503 without a JSON body.
    unexpected: Vec<String>,
}

/// Clients that each rotate their own chain as fast as they can against a node whose
/// address may change (a restarted process listens on a new port).
struct Fleet {
    base: Arc<RwLock<String>>,
    stop: Arc<AtomicBool>,
    rotations: Vec<Arc<AtomicU64>>,
    unavailable: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Chain>>,
}

impl Fleet {
    fn start(base: &str, sessions: Vec<Tokens>) -> Self {
        let base = Arc::new(RwLock::new(base.to_owned()));
        let stop = Arc::new(AtomicBool::new(false));
        let unavailable = Arc::new(AtomicU64::new(0));
        let mut rotations = Vec::new();
        let mut tasks = Vec::new();
        for tokens in sessions {
            let counter = Arc::new(AtomicU64::new(0));
            rotations.push(Arc::clone(&counter));
            let (base, stop, unavailable) = (Arc::clone(&base), Arc::clone(&stop), Arc::clone(&unavailable));
            tasks.push(tokio::spawn(async move {
                let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
                let mut chain = Chain { tokens: Some(tokens), ..Chain::default() };
                while !stop.load(Ordering::Relaxed) {
                    let Some(held) = chain.tokens.clone() else { break };
                    let url = format!("{}/auth/refresh", base.read().unwrap());
                    let answer =
                        match client.post(url).json(&json!({"refresh_token": held.refresh})).send().await {
                            Ok(res) => {
                                let status = res.status().as_u16();
                                res.text().await.ok().map(|text| (status, text))
                            }
                            Err(_) => None,
                        };
                    let Some((status, text)) = answer else {
                        chain.unanswered += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    match status {
                        200 => {
                            chain.tokens = Some(Tokens {
                                refresh: body["refresh_token"].as_str().unwrap().into(),
                                access: body["access_token"].as_str().unwrap().into(),
                            });
                            chain.rotations += 1;
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                        503 if body["error"].is_string() => {
                            chain.unavailable += 1;
                            unavailable.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        _ => {
                            // The chain is broken (or the answer is wrong): stop it here.
                            chain.unexpected.push(format!("{status} {text}"));
                            chain.tokens = None;
                        }
                    }
                }
                chain
            }));
        }
        Self { base, stop, rotations, unavailable, tasks }
    }

    /// Sends every client to a new address.
    fn point_at(&self, base: &str) {
        base.clone_into(&mut self.base.write().unwrap());
    }

    /// Waits until every chain has rotated `n` more times than now.
    async fn progress_by(&self, n: u64, what: &str) {
        let goal: Vec<u64> = self.rotations.iter().map(|c| c.load(Ordering::Relaxed) + n).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.rotations.iter().zip(&goal).any(|(c, g)| c.load(Ordering::Relaxed) < *g) {
            assert!(Instant::now() < deadline, "{what}: the fleet stopped rotating");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the fleet has seen `n` more 503s than now.
    async fn unavailable_by(&self, n: u64) {
        let goal = self.unavailable.load(Ordering::Relaxed) + n;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.unavailable.load(Ordering::Relaxed) < goal {
            assert!(Instant::now() < deadline, "no 503s while the database was down");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops every client; checks that no chain saw anything unexpected and that each one
    /// still rotates and its access token works on `base`. Returns the chains.
    async fn finish(self, base: &str) -> Vec<Chain> {
        self.stop.store(true, Ordering::Relaxed);
        let chains =
            futures::future::join_all(self.tasks).await.into_iter().map(Result::unwrap).collect::<Vec<_>>();
        let c = http_client();
        for (i, chain) in chains.iter().enumerate() {
            assert!(chain.unexpected.is_empty(), "chain {i}: {:?}", chain.unexpected);
            let tokens = chain.tokens.as_ref().unwrap();
            let me = send(c.get(format!("{base}/auth/me")).bearer_auth(&tokens.access)).await;
            assert_eq!(me.status, 200, "chain {i}: {}", me.text);
            let next = refresh(base, &tokens.refresh).await;
            assert_eq!(next.status, 200, "chain {i}: the token of its last 200 continues: {}", next.text);
        }
        chains
    }
}

/// A counter from `/metrics` (0 when absent).
async fn metric(base: &str, name: &str) -> f64 {
    let text = send(http_client().get(format!("{base}/metrics"))).await.text;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_on_one_postgresql_database_act_as_one() {
    let url = latchkey_testkit::fresh_pg_database().await;
    let a = NodeProcess::spawn(bin(), &url, &[]).await;
    let b = NodeProcess::spawn(bin(), &url, &[]).await;
    let c = http_client();
    let login = sign_in(&a.base, "two-processes", 1).await.remove(0);
    // Rotated on A, continued on B.
    let r1 = refresh(&a.base, &login.refresh).await;
    assert_eq!(r1.status, 200, "{}", r1.text);
    let r2 = refresh(&b.base, r1.str("refresh_token")).await;
    assert_eq!(r2.status, 200, "{}", r2.text);
    // 64 concurrent refreshes of one token, split across the processes: one successor.
    let mut token = r2.str("refresh_token").to_owned();
    for round in 0..5 {
        let calls = (0..64).map(|i| refresh(if i % 2 == 0 { &a.base } else { &b.base }, &token));
        let answers = futures::future::join_all(calls).await;
        let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
        assert!(statuses.iter().all(|s| *s == 200), "round {round}: {statuses:?}");
        let successors: BTreeSet<&str> = answers.iter().map(|r| r.str("refresh_token")).collect();
        assert_eq!(successors.len(), 1, "round {round}");
        token = successors.into_iter().next().unwrap().to_owned();
    }
    // Logout on A: B refuses the refresh.
    let last = refresh(&b.base, &token).await;
    assert_eq!(send(c.post(a.url("/auth/logout")).bearer_auth(last.str("access_token"))).await.status, 204);
    let refused = refresh(&b.base, last.str("refresh_token")).await;
    assert_eq!(refused.json["error_reason"], "logged_out", "{}", refused.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_lives_through_postgresql_restarts_under_load() {
    let pg = PrivatePostgres::start().await;
    let node = NodeProcess::spawn(bin(), &pg.url(), &[]).await;
    let c = http_client();
    let fleet = Fleet::start(&node.base, sign_in(&node.base, "outage", 16).await);
    fleet.progress_by(3, "before the outage").await;
    for mode in ["fast", "immediate"] {
        pg.stop_server(mode).await;
        // Down: every chain's refreshes are answered 503 with a JSON body (checked by the
        // fleet), and so are logins and the health check.
        fleet.unavailable_by(32).await;
        let started = Instant::now();
        let health = send(c.get(node.url("/healthz"))).await;
        assert_eq!(health.status, 503, "{mode}: {}", health.text);
        assert_eq!(health.json["error"], "temporarily_unavailable", "{}", health.text);
        assert!(health.header("retry-after").is_some(), "503 with Retry-After");
        let login = send(
            c.post(node.url("/auth/login"))
                .json(&json!({"username": "outage", "password": "correct horse battery"})),
        )
        .await;
        assert_eq!(login.status, 503, "{mode}: {}", login.text);
        assert!(login.json["error"].is_string(), "{}", login.text);
        eprintln!("PostgreSQL stopped ({mode}): two 503s answered in {:?}", started.elapsed());
        // Up again: the node recovers by itself and every chain goes on.
        pg.start_server().await;
        fleet.progress_by(3, mode).await;
        assert_eq!(send(c.get(node.url("/healthz"))).await.status, 200);
    }
    let chains = fleet.finish(&node.base).await;
    assert!(chains.iter().all(|ch| ch.unanswered == 0), "the node itself never went away");
    assert_eq!(
        metric(&node.base, "latchkey_refresh_reuse_detections_total").await,
        0.0,
        "no rotation was lost"
    );
    let (rotations, unavailable) =
        chains.iter().fold((0, 0), |(r, u), ch| (r + ch.rotations, u + ch.unavailable));
    eprintln!(
        "PostgreSQL restarts: {rotations} rotations, {unavailable} answers 503, {} grace hits",
        metric(&node.base, "latchkey_refresh_grace_hits_total").await
    );
}

/// Rotating chains against a `latchkey serve` process on `database_url` that is killed with
/// SIGKILL and restarted `rounds` times. Before each kill a session is logged out; after
/// the restart it stays dead, while every chain continues with the token of its last 200.
async fn kill_9_under_load(database_url: &str, rounds: u32) {
    let mut node = NodeProcess::spawn(bin(), database_url, &[]).await;
    let rounds_usize = usize::try_from(rounds).unwrap();
    let mut doomed = sign_in(&node.base, "doomed", rounds_usize).await;
    let fleet = Fleet::start(&node.base, sign_in(&node.base, "crash", 16).await);
    let c = http_client();
    for round in 0..rounds {
        fleet.progress_by(2, "before the kill").await;
        let gone = doomed.pop().unwrap();
        let out = send(c.post(node.url("/auth/logout")).bearer_auth(&gone.access)).await;
        assert_eq!(out.status, 204, "{}", out.text);
        node.kill_9().await;
        node = NodeProcess::spawn(bin(), database_url, &[]).await;
        fleet.point_at(&node.base);
        let refused = refresh(&node.base, &gone.refresh).await;
        assert_eq!(
            refused.status, 400,
            "round {round}: a session logged out before the crash: {}",
            refused.text
        );
        assert_eq!(refused.json["error_reason"], "logged_out", "{}", refused.text);
        let me = send(c.get(node.url("/auth/me")).bearer_auth(&gone.access)).await;
        assert_eq!(me.status, 401, "round {round}: its access token: {}", me.text);
        fleet.progress_by(2, "after the restart").await;
    }
    let chains = fleet.finish(&node.base).await;
    let unanswered: u64 = chains.iter().map(|ch| ch.unanswered).sum();
    let rotations: u64 = chains.iter().map(|ch| ch.rotations).sum();
    eprintln!(
        "kill -9 x{rounds}: {rotations} rotations, {unanswered} requests unanswered while the process was down, none refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_refresh_load_on_sqlite_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("latchkey.db").display());
    kill_9_under_load(&url, crash_rounds()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_refresh_load_on_postgresql_loses_nothing() {
    let url = latchkey_testkit::fresh_pg_database().await;
    kill_9_under_load(&url, crash_rounds()).await;
}

/// SPEC 10: mail written to the outbox is never lost across a crash. A node queues
/// verification mail while its SMTP server is down, is killed with `kill -9`, and the
/// restarted node delivers every message exactly once when the SMTP server comes up.
#[tokio::test]
async fn kill_9_with_mail_in_the_outbox_delivers_it_once_after_restart() {
    use latchkey_testkit::smtp::{SinkOptions, SmtpSink};
    const USERS: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}/mail.db", dir.path().display());
    let mut sink = SmtpSink::reserve();
    let smtp_url = sink.url();
    let env = [("LATCHKEY_SMTP_URL", smtp_url.as_str()), ("LATCHKEY_MAIL_FROM", latchkey_testkit::MAIL_FROM)];
    let node = NodeProcess::spawn(bin(), &database_url, &env).await;
    let c = http_client();
    for i in 0..USERS {
        let body = json!({"username": format!("k9-{i}"), "password": PASSWORD, "email": format!("k9-{i}@example.com")});
        let r = send(c.post(node.url("/auth/register")).json(&body)).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let at = login_at(&node.base, &c, &format!("k9-{i}"), PASSWORD).await.str("access_token").to_owned();
        let r = send(c.post(node.url("/auth/email/verify/send")).bearer_auth(&at)).await;
        assert_eq!(r.status, 202, "{}", r.text);
    }
    // Aim the kill between two delivery passes, when no mail is claimed: once every mail
    // has failed once, the next attempt is 10 s of backoff away. On a loaded machine the
    // sender may still hold a claim at the kill (a mail whose retry came due while later
    // users registered); that mail waits out its lease before the new node sends it, so
    // the wait below covers the lease: the mail must still arrive, and only once.
    let waited = Instant::now();
    while metric(&node.base, "latchkey_mail_retried_total").await < USERS as f64 {
        assert!(waited.elapsed() < Duration::from_secs(120), "the sender never tried");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.kill_9().await;
    sink.launch(&SinkOptions::new()).await;
    let node = NodeProcess::spawn(bin(), &database_url, &env).await;
    let mails = sink.wait_for(USERS, latchkey_core::outbox::LEASE + Duration::from_secs(180)).await;
    // Whatever was due has gone out by now; give a duplicate the chance to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mails = if sink.messages().len() > mails.len() { sink.messages() } else { mails };
    let ids: BTreeSet<String> =
        mails.iter().filter_map(|m| m.header("Message-ID").map(str::to_owned)).collect();
    assert_eq!(
        (mails.len(), ids.len()),
        (USERS, USERS),
        "each mail once: {:?}",
        node.log.lock().map(|l| l.clone())
    );
    let to: BTreeSet<String> = mails.iter().flat_map(|m| m.rcpt_tos.clone()).collect();
    assert_eq!(to.len(), USERS);
}
