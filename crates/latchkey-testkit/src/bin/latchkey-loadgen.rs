//! A small load generator for `POST /auth/refresh` where each client rotates its own chain
//! (every refresh token is used exactly once), optionally under a concurrent login flood.
//! Prints rotations/s and latency percentiles. Used by `bench/refresh.sh`.
//!
//! ```text
//! latchkey-loadgen --url http://127.0.0.1:8080 --connections 64 --seconds 10 [--login-flood 4]
//! ```

#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a benchmark tool fails loudly"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Args {
    url: String,
    connections: usize,
    seconds: u64,
    login_flood: usize,
}

fn parse_args() -> Args {
    let mut a = Args { url: "http://127.0.0.1:8080".into(), connections: 16, seconds: 10, login_flood: 0 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value(),
            "--connections" => a.connections = value().parse().expect("--connections N"),
            "--seconds" => a.seconds = value().parse().expect("--seconds N"),
            "--login-flood" => a.login_flood = value().parse().expect("--login-flood N"),
            other => panic!("unknown flag {other}; see the file's doc comment"),
        }
    }
    a
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    match client.post(url).json(body).send().await {
        Ok(res) => {
            let status = res.status().as_u16();
            (status, res.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[idx]) / 1000.0
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let client = reqwest::Client::builder().pool_max_idle_per_host(1024).build().expect("client");
    let user = format!("load-{}", std::process::id());
    let password = "load test password";
    let (status, body) = post(
        &client,
        &format!("{}/auth/register", args.url),
        &json!({"username": user, "password": password}),
    )
    .await;
    assert!(status == 201, "register failed: {status} {body}");
    let login_url = format!("{}/auth/login", args.url);
    let refresh_url = format!("{}/auth/refresh", args.url);
    let mut chains = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let (status, body) =
            post(&client, &login_url, &json!({"username": user, "password": password})).await;
        assert!(status == 200, "login failed: {status} {body}");
        chains.push(body["refresh_token"].as_str().expect("refresh_token").to_owned());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let logins = Arc::new(AtomicU64::new(0));
    let mut flood = Vec::new();
    for _ in 0..args.login_flood {
        let (client, url, stop, logins, user) =
            (client.clone(), login_url.clone(), Arc::clone(&stop), Arc::clone(&logins), user.clone());
        flood.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (status, _) = post(&client, &url, &json!({"username": user, "password": password})).await;
                if status == 200 {
                    logins.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for token in chains {
        let (client, url, errors) = (client.clone(), refresh_url.clone(), Arc::clone(&errors));
        tasks.push(tokio::spawn(async move {
            let mut token = token;
            let mut latencies = Vec::with_capacity(65_536);
            while Instant::now() < deadline {
                let t = Instant::now();
                let (status, body) = post(&client, &url, &json!({"refresh_token": token})).await;
                let micros = u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX);
                match body["refresh_token"].as_str() {
                    Some(next) if status == 200 => {
                        latencies.push(micros);
                        next.clone_into(&mut token);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("refresh failed: {status} {body}");
                        break;
                    }
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        let _ = f.await;
    }
    all.sort_unstable();
    println!(
        "connections={} login_flood={} rotations={} rotations_per_s={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2} errors={} logins_per_s={:.1}",
        args.connections,
        args.login_flood,
        all.len(),
        all.len() as f64 / elapsed,
        percentile(&all, 0.50),
        percentile(&all, 0.90),
        percentile(&all, 0.99),
        percentile(&all, 1.0),
        errors.load(Ordering::Relaxed),
        logins.load(Ordering::Relaxed) as f64 / elapsed,
    );
}
