//! Soak (issue: performance and reliability): mixed load on a `latchkey serve` process and a
//! notes-api that follows it, for `LATCHKEY_SOAK_SECONDS` (default 20; `scripts/reliability`
//! runs 600): refresh chains, API calls, logins followed by logouts, role changes. Checked
//! throughout: no 5xx, every logout enforced (the refresh token refused at once, the access
//! token refused by the API once the feed delivers), every role change reaching the API and
//! the next token. Checked at the end: the server's memory and open files stayed flat
//! (compared with the first quarter of the run, with room for allocator noise).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use latchkey_testkit::process::NodeProcess;
use latchkey_testkit::{login_at, register_at};
use serde_json::{Value, json};

use crate::{http_client, send};

fn soak_seconds() -> u64 {
    std::env::var("LATCHKEY_SOAK_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

/// Resident memory (KiB) and open file descriptors of a process.
fn usage(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    (rss, fds)
}

/// Runs the `latchkey` CLI as its own process on the node's database; returns stdout.
async fn cli(database_url: &str, args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_latchkey-node"))
        .args(["--database-url", database_url])
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "latchkey {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Shared state of the workers.
struct Soak {
    node: String,
    notes: String,
    database_url: String,
    stop: AtomicBool,
    counts: [AtomicU64; 5],
}

const ROTATIONS: usize = 0;
const API_CALLS: usize = 1;
const LOGOUTS: usize = 2;
const ROLE_CHANGES: usize = 3;
const LOGINS: usize = 4;

impl Soak {
    fn count(&self, what: usize) {
        self.counts[what].fetch_add(1, Ordering::Relaxed);
    }

    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    async fn post(&self, path: &str, body: Value) -> latchkey_testkit::Answer {
        let a = send(http_client().post(format!("{}{path}", self.node)).json(&body)).await;
        assert!(a.status < 500, "{path}: {} {}", a.status, a.text);
        a
    }

    async fn login(&self, user: &str) -> latchkey_testkit::Answer {
        let a = login_at(&self.node, &http_client(), user, "correct horse battery").await;
        self.count(LOGINS);
        a
    }

    async fn whoami(&self, token: &str) -> latchkey_testkit::Answer {
        let a = send(http_client().get(format!("{}/whoami", self.notes)).bearer_auth(token)).await;
        assert!(a.status < 500, "notes-api: {} {}", a.status, a.text);
        a
    }

    /// Waits (bounded) until the API answers `status` for `token`.
    async fn api_answers(&self, token: &str, status: u16, what: &str) -> latchkey_testkit::Answer {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let a = self.whoami(token).await;
            if a.status == status {
                return a;
            }
            assert!(Instant::now() < deadline, "{what}: the API still answers {} {}", a.status, a.text);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn rotate_chain(soak: Arc<Soak>, mut refresh: String) {
    while soak.running() {
        let r = soak.post("/auth/refresh", json!({"refresh_token": refresh})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.str("refresh_token").clone_into(&mut refresh);
        soak.count(ROTATIONS);
        let me = soak.whoami(r.str("access_token")).await;
        assert_eq!(me.status, 200, "{}", me.text);
        soak.count(API_CALLS);
    }
}

async fn log_in_and_out(soak: Arc<Soak>, user: String) {
    while soak.running() {
        let login = soak.login(&user).await;
        let at = login.str("access_token");
        soak.api_answers(at, 200, "a fresh login").await;
        let out = send(http_client().post(format!("{}/auth/logout", soak.node)).bearer_auth(at)).await;
        assert_eq!(out.status, 204, "{}", out.text);
        // Enforced: the refresh token at once, the access token once the feed delivers.
        let refused = soak.post("/auth/refresh", json!({"refresh_token": login.str("refresh_token")})).await;
        assert_eq!(refused.json["error_reason"], "logged_out", "{}", refused.text);
        soak.api_answers(at, 401, "after logout").await;
        soak.count(LOGOUTS);
    }
}

async fn change_roles(soak: Arc<Soak>, user: String) {
    let mut round = 0u64;
    while soak.running() {
        round += 1;
        let login = soak.login(&user).await;
        let at = login.str("access_token");
        soak.api_answers(at, 200, "before the role change").await;
        let role = format!("role{}", round % 3);
        cli(&soak.database_url, &["user", "set-roles", &user, &role]).await;
        // The API refuses the token issued before the change; the next token has the role.
        soak.api_answers(at, 401, "after a role change").await;
        let next = soak.post("/auth/refresh", json!({"refresh_token": login.str("refresh_token")})).await;
        assert_eq!(next.status, 200, "{}", next.text);
        let me =
            send(http_client().get(format!("{}/auth/me", soak.node)).bearer_auth(next.str("access_token")))
                .await;
        assert_eq!(me.json["roles"], json!([role]), "{}", me.text);
        soak.api_answers(next.str("access_token"), 200, "the token after the change").await;
        let out = send(
            http_client().post(format!("{}/auth/logout", soak.node)).bearer_auth(next.str("access_token")),
        )
        .await;
        assert_eq!(out.status, 204);
        soak.count(ROLE_CHANGES);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_mixed_load_keeps_memory_and_files_flat_and_enforces_every_logout() {
    let seconds = soak_seconds();
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("latchkey.db").display());
    let node =
        NodeProcess::spawn(std::path::Path::new(env!("CARGO_BIN_EXE_latchkey-node")), &database_url, &[])
            .await;
    let feed = cli(
        &database_url,
        &[
            "client",
            "add",
            "--name",
            "notes",
            "--grant-types",
            "client_credentials",
            "--scopes",
            "revocations:read",
        ],
    )
    .await;
    let feed: Value = serde_json::from_str(feed.trim()).unwrap();
    let verifier = latchkey_verify::Verifier::builder(latchkey_testkit::ISSUER)
        .endpoint(&node.base)
        .feed_credentials(feed["client_id"].as_str().unwrap(), feed["client_secret"].as_str().unwrap())
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let notes = format!("http://{}", listener.local_addr().unwrap());
    let _api = tokio::spawn(notes_api::serve(listener, notes_api::app(verifier)));
    let soak = Arc::new(Soak {
        node: node.base.clone(),
        notes,
        database_url: database_url.clone(),
        stop: AtomicBool::new(false),
        counts: Default::default(),
    });
    let c = http_client();
    let mut workers = Vec::new();
    for i in 0..4 {
        let user = format!("chain{i}");
        register_at(&soak.node, &c, &user, "correct horse battery").await;
        let login = soak.login(&user).await;
        workers.push(tokio::spawn(rotate_chain(Arc::clone(&soak), login.str("refresh_token").to_owned())));
    }
    for i in 0..2 {
        let user = format!("visitor{i}");
        register_at(&soak.node, &c, &user, "correct horse battery").await;
        workers.push(tokio::spawn(log_in_and_out(Arc::clone(&soak), user)));
    }
    register_at(&soak.node, &c, "promoted", "correct horse battery").await;
    workers.push(tokio::spawn(change_roles(Arc::clone(&soak), "promoted".into())));

    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        samples.push((started.elapsed(), usage(node.pid())));
        assert!(workers.iter().all(|w| !w.is_finished()), "a worker stopped early (see its panic)");
    }
    soak.stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(send(c.get(node.url("/healthz"))).await.status, 200);
    // Flat: the last quarter's peak against the first quarter's, after warm-up.
    let quarter = samples.len() / 4;
    let early = samples.iter().skip(1).take(quarter.max(1));
    let late = samples.iter().skip(samples.len() - quarter.max(1));
    let peak = |it: &mut dyn Iterator<Item = &(Duration, (u64, usize))>| {
        it.fold((0, 0), |(r, f), (_, (rss, fds))| (r.max(*rss), f.max(*fds)))
    };
    let (early_rss, early_fds) = peak(&mut early.into_iter());
    let (late_rss, late_fds) = peak(&mut late.into_iter());
    let counts: Vec<u64> = soak.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    eprintln!(
        "soak {seconds} s: {} rotations, {} API calls, {} logins, {} logouts enforced, {} role changes; \
         server RSS {early_rss} KiB -> {late_rss} KiB, open files {early_fds} -> {late_fds}",
        counts[ROTATIONS], counts[API_CALLS], counts[LOGINS], counts[LOGOUTS], counts[ROLE_CHANGES]
    );
    assert!(counts[LOGOUTS] > 0 && counts[ROLE_CHANGES] > 0, "every kind of traffic ran");
    assert!(late_fds <= early_fds + 16, "open files grew: {early_fds} -> {late_fds}");
    assert!(
        late_rss <= early_rss + early_rss / 2 + 16 * 1024,
        "memory grew: {early_rss} KiB -> {late_rss} KiB"
    );
}
