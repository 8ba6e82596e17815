//! Abuse (issue: performance and reliability): slow and idle connections, slow bodies,
//! oversized requests, a wrong-password login flood from many addresses, and a storm of
//! garbage tokens at an API. Each leaves the server answering legitimate traffic, which
//! these tests check request by request; the latency of that traffic during the abuse is
//! printed next to its idle value (figures, not assertions: timing depends on the machine).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Attackers: `workers` tasks, each sending the request `make(client, worker, n)` builds
/// for its n-th attempt, again and again until stopped.
struct Attack {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(Vec<u16>, usize)>>,
}

impl Attack {
    fn start<F>(workers: usize, make: F) -> Self
    where
        F: Fn(&reqwest::Client, usize, usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let make = Arc::new(make);
        let tasks = (0..workers)
            .map(|worker| {
                let (stop, make) = (Arc::clone(&stop), Arc::clone(&make));
                tokio::spawn(async move {
                    let c = reqwest::Client::new();
                    let (mut statuses, mut unanswered) = (Vec::new(), 0);
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        match make(&c, worker, n).send().await {
                            Ok(res) => statuses.push(res.status().as_u16()),
                            Err(_) => unanswered += 1,
                        }
                    }
                    (statuses, unanswered)
                })
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stops the attackers; returns every status they were answered, and how many requests
    /// got no answer (the server may close a connection on a request it refuses early).
    async fn stop(self) -> (Vec<u16>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = (Vec::new(), 0);
        for task in self.tasks {
            let (statuses, unanswered) = task.await.unwrap();
            all.0.extend(statuses);
            all.1 += unanswered;
        }
        all
    }
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
    let url = s.url("/auth/login");
    let attack = Attack::start(8, move |c, worker, _| {
        if worker % 2 == 0 {
            c.post(&url).header("content-type", "application/json").body(vec![b'x'; 4 * 1024 * 1024])
        } else {
            c.post(&url).header("x-huge", "h".repeat(1024 * 1024)).json(&json!({}))
        }
    });
    let during = legit_refreshes(&s, &mut token, 300).await;
    let (statuses, _) = attack.stop().await;
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
    let url = s.url("/auth/login");
    let attack = Attack::start(32, move |c, worker, n| {
        let user = if n.is_multiple_of(2) { "victim".to_owned() } else { format!("nobody-{worker}-{n}") };
        let ip = format!("10.{}.{}.{}", worker, (n >> 8) & 255, n & 255);
        c.post(&url).header("x-forwarded-for", ip).json(&json!({"username": user, "password": "wrong guess"}))
    });
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
    let (statuses, unanswered) = attack.stop().await;
    assert_eq!(unanswered, 0, "every flood request is answered");
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
    let url = format!("{}/whoami", notes.base);
    let attack = Attack::start(16, move |c, worker, n| {
        let token = &garbage[(worker + n) % garbage.len()];
        c.get(&url).header("authorization", format!("Bearer {token}"))
    });
    let during = legit(600).await;
    let (statuses, _) = attack.stop().await;
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
