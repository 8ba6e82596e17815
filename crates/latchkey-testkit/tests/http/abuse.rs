//! Abuse (issue: performance and reliability): slow and idle connections, slow bodies,
//! oversized requests, a wrong-password login flood from many addresses, and a storm of
//! garbage tokens at an API. Each leaves the server answering legitimate traffic, which
//! these tests check request by request; the latency of that traffic during the abuse is
//! printed next to its idle value (figures, not assertions: timing depends on the machine).

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::notes::{api, notes_api_with, wait_for};
use crate::{TestServer, http_client, send};

/// How long the server gives a client to send a request head (and keeps an idle connection).
const HEAD_TIMEOUT: Duration = latchkey::server::REQUEST_HEAD_TIMEOUT;

/// Latency figures of a run of legitimate requests.
struct Figures(Vec<Duration>);

impl Figures {
    fn pct(&self, p: f64) -> Duration {
        let mut v = self.0.clone();
        v.sort();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v.get(i).copied().unwrap_or_default()
    }

    fn line(&self) -> String {
        format!("p50 {:?}, p99 {:?} over {} requests", self.pct(0.5), self.pct(0.99), self.0.len())
    }
}

/// A legitimate client: rotates its own chain `n` times, one refresh after another; every
/// one must succeed.
async fn legit_refreshes(s: &TestServer, token: &mut String, n: usize) -> Figures {
    let c = http_client();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let r = s.refresh(&c, token).await;
        out.push(t.elapsed());
        assert_eq!(r.status, 200, "legitimate refresh {i}: {}", r.text);
        r.str("refresh_token").clone_into(token);
    }
    Figures(out)
}

/// Reads until the server closes the connection; panics unless that happens in time.
async fn closed_within(stream: &mut tokio::net::tcp::OwnedReadHalf, limit: Duration, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "{what}: the server kept the connection open past {limit:?}");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_cut_off_without_slowing_anyone_else() {
    let s = TestServer::start().await;
    let c = http_client();
    let mut token = s.signed_in(&c, "steady").await.str("refresh_token").to_owned();
    let idle = legit_refreshes(&s, &mut token, 100).await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    // 600 connections: a third send nothing, a third trickle a request head one byte per
    // 200 ms (slowloris), a third send a head and then trickle the body.
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for i in 0..600 {
        let (r, mut w) = TcpStream::connect(&addr).await.unwrap().into_split();
        match i % 3 {
            0 => {}
            1 => w.write_all(b"GET /healthz HTTP/1.1\r\nHost: latchkey.test\r\nX-Slow: ").await.unwrap(),
            _ => w
                .write_all(
                    b"POST /auth/login HTTP/1.1\r\nHost: latchkey.test\r\nContent-Type: application/json\r\n\
                      Content-Length: 1000\r\n\r\n{\"username\": \"",
                )
                .await
                .unwrap(),
        }
        readers.push((i % 3, r));
        writers.push((i % 3, w));
    }
    let trickle = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            for (kind, w) in &mut writers {
                if *kind != 0 {
                    let _ = w.write_all(b"a").await;
                }
            }
        }
    });
    let started = Instant::now();
    let during = legit_refreshes(&s, &mut token, 300).await;
    // Every slow connection is closed once its head or body is overdue; a slow body gets an
    // answer first (a JSON 4xx).
    let mut answered = 0;
    for (kind, r) in &mut readers {
        let got = closed_within(r, HEAD_TIMEOUT * 3, &format!("slow connection of kind {kind}")).await;
        let text = String::from_utf8_lossy(&got);
        assert!(!text.contains("HTTP/1.1 5"), "no 5xx: {text}");
        if *kind == 2 {
            assert!(text.starts_with("HTTP/1.1 4"), "a slow body is answered 4xx: {text:?}");
            assert!(text.contains("\"error\""), "with a JSON error: {text}");
            answered += 1;
        }
    }
    trickle.abort();
    eprintln!(
        "600 slow/idle connections: all closed within {:?}; {answered} slow bodies answered 4xx; \
         legitimate refreshes idle {} / during {}",
        started.elapsed(),
        idle.line(),
        during.line()
    );
    assert_eq!(send(c.get(s.url("/healthz"))).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_refused_without_slowing_anyone_else() {
    let s = TestServer::start().await;
    let c = http_client();
    let mut token = s.signed_in(&c, "steady").await.str("refresh_token").to_owned();
    let idle = legit_refreshes(&s, &mut token, 100).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut attackers = Vec::new();
    for i in 0..8 {
        let (url, stop) = (s.url("/auth/login"), std::sync::Arc::clone(&stop));
        attackers.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let req = if i % 2 == 0 {
                    c.post(&url).header("content-type", "application/json").body(vec![b'x'; 4 * 1024 * 1024])
                } else {
                    c.post(&url).header("x-huge", "h".repeat(1024 * 1024)).json(&json!({}))
                };
                // A server may close the connection on a request it refuses early.
                if let Ok(res) = req.send().await {
                    statuses.push(res.status().as_u16());
                }
            }
            statuses
        }));
    }
    let during = legit_refreshes(&s, &mut token, 300).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut statuses: Vec<u16> = Vec::new();
    for a in attackers {
        statuses.extend(a.await.unwrap());
    }
    assert!(statuses.iter().all(|s| matches!(s, 413 | 431 | 400)), "{statuses:?}");
    eprintln!(
        "{} oversized requests (4 MiB bodies, 1 MiB headers) refused; legitimate refreshes idle {} / during {}",
        statuses.len(),
        idle.line(),
        during.line()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_flood_from_many_addresses_leaves_others_served() {
    let s = TestServer::start_with(|c| c.trusted_proxies = vec!["127.0.0.1".into()]).await;
    let c = http_client();
    let mut token = s.signed_in(&c, "steady").await.str("refresh_token").to_owned();
    s.register(&c, "victim", "correct horse battery").await;
    s.register(&c, "bystander", "correct horse battery").await;
    let idle = legit_refreshes(&s, &mut token, 100).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut attackers = Vec::new();
    for worker in 0..32u32 {
        let (url, stop) = (s.url("/auth/login"), std::sync::Arc::clone(&stop));
        attackers.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            let mut statuses = Vec::new();
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let user =
                    if n.is_multiple_of(2) { "victim".to_owned() } else { format!("nobody-{worker}-{n}") };
                let ip = format!("10.{}.{}.{}", worker, (n >> 8) & 255, n & 255);
                let res = c
                    .post(&url)
                    .header("x-forwarded-for", ip)
                    .json(&json!({"username": user, "password": "wrong guess"}))
                    .send()
                    .await
                    .unwrap();
                statuses.push(res.status().as_u16());
            }
            statuses
        }));
    }
    let during = legit_refreshes(&s, &mut token, 300).await;
    // A legitimate login of another account during the flood: it may have to wait for the
    // hashing queue, or be told to retry (503), but never fails otherwise.
    let t = Instant::now();
    let mut login = s
        .post(&c, "/auth/login", json!({"username": "bystander", "password": "correct horse battery"}))
        .await;
    while login.status == 503 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        login = s
            .post(&c, "/auth/login", json!({"username": "bystander", "password": "correct horse battery"}))
            .await;
    }
    assert_eq!(login.status, 200, "{}", login.text);
    let login_took = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut statuses: Vec<u16> = Vec::new();
    for a in attackers {
        statuses.extend(a.await.unwrap());
    }
    assert!(
        statuses.iter().all(|s| matches!(s, 401 | 429 | 503)),
        "{:?}",
        statuses.iter().filter(|s| !matches!(s, 401 | 429 | 503)).collect::<Vec<_>>()
    );
    assert!(statuses.contains(&429), "the victim account is locked by the flood");
    eprintln!(
        "login flood: {} wrong-password logins from {} addresses ({} 401, {} 429, {} 503); a bystander's login took {login_took:?}; \
         legitimate refreshes idle {} / during {}",
        statuses.len(),
        statuses.len(),
        statuses.iter().filter(|s| **s == 401).count(),
        statuses.iter().filter(|s| **s == 429).count(),
        statuses.iter().filter(|s| **s == 503).count(),
        idle.line(),
        during.line()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_garbage_tokens_at_an_api_leaves_valid_tokens_served() {
    let s = TestServer::start().await;
    let c = http_client();
    let notes = notes_api_with(&s, |v| v).await;
    let at = s.signed_in(&c, "steady").await.str("access_token").to_owned();
    wait_for(|| async { api(&notes, reqwest::Method::GET, "/whoami", &at, None).await.status == 200 }).await;
    let legit = |n: usize| {
        let (notes, at) = (&notes, &at);
        async move {
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                let t = Instant::now();
                let r = api(notes, reqwest::Method::GET, "/whoami", at, None).await;
                out.push(t.elapsed());
                assert_eq!(r.status, 200, "legitimate call {i}: {}", r.text);
            }
            Figures(out)
        }
    };
    let idle = legit(200).await;
    let header = latchkey_core::crypto::b64(br#"{"alg":"EdDSA","typ":"at+jwt","kid":"nope"}"#);
    let none = latchkey_core::crypto::b64(br#"{"alg":"none","typ":"at+jwt"}"#);
    let garbage: Vec<String> = vec![
        "x".into(),
        "a.b.c".into(),
        format!("{header}.e30.AAAA"),
        format!("{none}.e30."),
        format!("{header}.{}.{}", "A".repeat(8000), "B".repeat(86)),
        "z".repeat(20_000),
        at.replace('.', ""),
        format!("{}x", &at[..at.len() - 1]),
    ];
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut attackers = Vec::new();
    for worker in 0..16usize {
        let (url, stop, garbage) =
            (format!("{}/whoami", notes.base), std::sync::Arc::clone(&stop), garbage.clone());
        attackers.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            let mut statuses = Vec::new();
            let mut n = worker;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let token = &garbage[n % garbage.len()];
                if let Ok(res) = c.get(&url).header("authorization", format!("Bearer {token}")).send().await {
                    statuses.push(res.status().as_u16());
                }
            }
            statuses
        }));
    }
    let during = legit(600).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut statuses: Vec<u16> = Vec::new();
    for a in attackers {
        statuses.extend(a.await.unwrap());
    }
    assert!(
        statuses.iter().all(|s| *s == 401),
        "{:?}",
        statuses.iter().filter(|s| **s != 401).collect::<Vec<_>>()
    );
    eprintln!(
        "garbage-token storm: {} refused with 401; legitimate GET /whoami idle {} / during {}",
        statuses.len(),
        idle.line(),
        during.line()
    );
}
