//! The revocation feed over HTTP (SPEC 5.4) and client registration (SPEC 6): Basic client
//! authentication, the `revocations:read` scope, `after` paging, and the events logout,
//! reuse and role changes publish.

use serde_json::{Value, json};

use crate::{TestServer, http_client, send};

/// Registers a client through the CLI; returns (client_id, client_secret).
pub(crate) async fn feed_client(s: &TestServer, scopes: &str) -> (String, String) {
    let out = s
        .cli(
            &[
                "client",
                "add",
                "--name",
                "notes-api",
                "--grant-types",
                "client_credentials",
                "--scopes",
                scopes,
            ],
            "",
        )
        .await
        .unwrap();
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    (v["client_id"].as_str().unwrap().to_owned(), v["client_secret"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn feed_serves_events_to_authenticated_readers_only() {
    let s = TestServer::start().await;
    let c = http_client();
    let (id, secret) = feed_client(&s, "revocations:read").await;
    assert!(secret.starts_with("lks_"));
    let feed = |after: i64| {
        send(c.get(s.url(&format!("/revocations?after={after}"))).basic_auth(&id, Some(&secret)))
    };

    let empty = feed(0).await;
    assert_eq!(empty.status, 200, "{}", empty.text);
    assert_eq!(empty.json, json!({"events": [], "next": 0}));

    // A logout, a role change and a reuse detection each publish their event.
    let a = s.signed_in(&c, "reader-a").await;
    assert_eq!(send(c.post(s.url("/auth/logout")).bearer_auth(a.str("access_token"))).await.status, 204);
    s.cli(&["user", "set-roles", "reader-a", "manager"], "").await.unwrap();
    let b = s.login(&c, "reader-a", "correct horse battery").await;
    let b2 = s.refresh(&c, b.str("refresh_token")).await;
    s.clock.advance(std::time::Duration::from_secs(20));
    assert_eq!(s.refresh(&c, b.str("refresh_token")).await.json["error_reason"], "reuse_detected");
    drop(b2);

    let page = feed(0).await;
    let events = page.json["events"].as_array().unwrap();
    assert_eq!(events.len(), 3, "{}", page.text);
    assert_eq!(events[0]["type"], "session_revoked");
    assert_eq!(events[0]["sid"], a.json["session_id"]);
    assert_eq!(events[1]["type"], "user_changed");
    assert_eq!(events[1]["authz_ver"], 2);
    assert_eq!(events[2]["type"], "session_revoked");
    assert_eq!(events[2]["sid"], b.json["session_id"]);
    for e in events {
        assert!(e["seq"].as_i64().unwrap() > 0 && e["until"].as_i64().unwrap() > 0);
    }
    let next = page.json["next"].as_i64().unwrap();
    assert_eq!(next, events[2]["seq"].as_i64().unwrap());
    // Asking after a seq gives only what follows; after the last, nothing, same next.
    let after_first = feed(events[0]["seq"].as_i64().unwrap()).await;
    assert_eq!(after_first.json["events"].as_array().unwrap().len(), 2);
    assert_eq!(feed(next).await.json, json!({"events": [], "next": next}));
    // Once an event's `until` has passed, it is no longer in force.
    s.clock.advance(std::time::Duration::from_secs(400));
    assert_eq!(feed(0).await.json["events"], json!([]));
}

#[tokio::test]
async fn feed_refuses_bad_clients() {
    let s = TestServer::start().await;
    let c = http_client();
    let (id, secret) = feed_client(&s, "revocations:read").await;
    let (other, other_secret) = feed_client(&s, "profile").await;
    let url = s.url("/revocations?after=0");
    for (what, req) in [
        ("no credentials", c.get(&url)),
        ("wrong secret", c.get(&url).basic_auth(&id, Some("lks_wrong"))),
        ("unknown client", c.get(&url).basic_auth("nobody", Some(&secret))),
        ("bearer instead of basic", c.get(&url).bearer_auth(&secret)),
        ("garbage basic", c.get(&url).header("authorization", "Basic !!!")),
    ] {
        let a = send(req).await;
        assert_eq!(a.status, 401, "{what}: {}", a.text);
        assert_eq!(a.json["error"], "invalid_client", "{what}");
        assert_eq!(a.header("www-authenticate"), Some("Basic realm=\"latchkey\""), "{what}");
    }
    let no_scope = send(c.get(&url).basic_auth(&other, Some(&other_secret))).await;
    assert_eq!(no_scope.status, 403);
    assert_eq!(no_scope.json["error"], "insufficient_scope");
    for bad in ["-1", "x", "1.5"] {
        let a = send(c.get(s.url(&format!("/revocations?after={bad}"))).basic_auth(&id, Some(&secret))).await;
        assert_eq!(a.status, 400, "after={bad}: {}", a.text);
        assert_eq!(a.json["error"], "invalid_request");
    }
    // A removed client can no longer read.
    s.cli(&["client", "remove", &id], "").await.unwrap();
    assert_eq!(send(c.get(&url).basic_auth(&id, Some(&secret))).await.status, 401);
    assert!(s.cli(&["client", "remove", &id], "").await.is_err());
    // An id that starts with a dash is an id, not an option.
    let err = s.cli(&["client", "remove", "-starts-with-dash"], "").await.unwrap_err();
    assert!(format!("{err:#}").contains("no client"), "{err:#}");
}

#[tokio::test]
async fn client_registration_rules() {
    let s = TestServer::start().await;
    let public = s
        .cli(&["client", "add", "--name", "spa", "--public", "--redirect-uri", "https://app.example/cb"], "")
        .await
        .unwrap();
    let v: Value = serde_json::from_str(public.trim()).unwrap();
    assert!(v["client_id"].is_string());
    assert!(v.get("client_secret").is_none(), "public clients have no secret");
    for bad in [
        vec!["client", "add", "--name", "x", "--redirect-uri", "/relative"],
        vec!["client", "add", "--name", "x", "--redirect-uri", "https://a.example/cb#frag"],
        vec!["client", "add", "--name", "x"],
        vec!["client", "add", "--name", "x", "--grant-types", "password"],
        vec!["client", "add", "--name", "x", "--public", "--grant-types", "client_credentials"],
        vec!["client", "add", "--name", " ", "--grant-types", "client_credentials"],
    ] {
        assert!(s.cli(&bad, "").await.is_err(), "{bad:?} should be refused");
    }
    let list = s.cli(&["client", "list"], "").await.unwrap();
    assert_eq!(list.lines().count(), 1);
    assert!(list.contains("\"public\":true") && !list.contains("lks_"), "{list}");
}

/// Reads Server-Sent Events from a response, one event at a time, skipping comments.
struct SseReader {
    res: reqwest::Response,
    buf: String,
}

impl SseReader {
    async fn open(s: &TestServer, id: &str, secret: &str, last_event_id: Option<i64>) -> reqwest::Response {
        let mut req = http_client().get(s.url("/revocations/stream")).basic_auth(id, Some(secret));
        if let Some(last) = last_event_id {
            req = req.header("last-event-id", last.to_string());
        }
        req.send().await.unwrap()
    }

    /// The next event's `(id, data)`; panics after 10 s without one.
    async fn next(&mut self) -> (i64, Value) {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().parse::<i64>().unwrap());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if let Some(id) = id {
                    return (id, serde_json::from_str(&data).unwrap());
                }
                continue; // a keep-alive comment
            }
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), self.res.chunk())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .expect("the stream stays open");
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

#[tokio::test]
async fn stream_sends_the_snapshot_then_live_events_and_resumes() {
    let s = TestServer::start().await;
    let c = http_client();
    let (id, secret) = feed_client(&s, "revocations:read").await;
    let first = s.signed_in(&c, "streamer").await;
    assert_eq!(send(c.post(s.url("/auth/logout")).bearer_auth(first.str("access_token"))).await.status, 204);

    let res = SseReader::open(&s, &id, &secret, None).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut stream = SseReader { res, buf: String::new() };
    let (seq1, e1) = stream.next().await;
    assert_eq!(e1["type"], "session_revoked");
    assert_eq!(e1["sid"], first.json["session_id"]);
    assert_eq!(e1["seq"], seq1);

    // A logout on this server is pushed at once.
    let second = s.login(&c, "streamer", "correct horse battery").await;
    assert_eq!(send(c.post(s.url("/auth/logout")).bearer_auth(second.str("access_token"))).await.status, 204);
    let (seq2, e2) = stream.next().await;
    assert!(seq2 > seq1);
    assert_eq!(e2["sid"], second.json["session_id"]);

    // A change written by another process (the CLI) arrives by polling.
    s.cli(&["user", "set-roles", "streamer", "manager"], "").await.unwrap();
    let (seq3, e3) = stream.next().await;
    assert!(seq3 > seq2);
    assert_eq!(e3["type"], "user_changed");

    // Resuming after the first event gives the rest, in order.
    let res = SseReader::open(&s, &id, &secret, Some(seq1)).await;
    let mut resumed = SseReader { res, buf: String::new() };
    assert_eq!(resumed.next().await.0, seq2);
    assert_eq!(resumed.next().await.0, seq3);
}

#[tokio::test]
async fn stream_misses_nothing_under_concurrent_revocations() {
    let s = TestServer::start().await;
    let c = http_client();
    let (id, secret) = feed_client(&s, "revocations:read").await;
    s.register(&c, "many", "correct horse battery").await;
    let mut logins = Vec::new();
    for _ in 0..30 {
        logins.push(s.login(&c, "many", "correct horse battery").await);
    }
    let res = SseReader::open(&s, &id, &secret, None).await;
    let mut stream = SseReader { res, buf: String::new() };
    let logouts =
        logins.iter().map(|l| send(c.post(s.url("/auth/logout")).bearer_auth(l.str("access_token"))));
    for a in futures::future::join_all(logouts).await {
        assert_eq!(a.status, 204);
    }
    let mut seen = Vec::new();
    for _ in 0..30 {
        seen.push(stream.next().await);
    }
    let seqs: Vec<i64> = seen.iter().map(|(seq, _)| *seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in seq order: {seqs:?}");
    let mut sids: Vec<&str> = seen.iter().map(|(_, e)| e["sid"].as_str().unwrap()).collect();
    sids.sort_unstable();
    sids.dedup();
    assert_eq!(sids.len(), 30, "every session exactly once");
    // The stream and the page agree.
    let page = send(c.get(s.url("/revocations?after=0")).basic_auth(&id, Some(&secret))).await;
    let listed: Vec<i64> =
        page.json["events"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(listed, seqs);
}

#[tokio::test]
async fn stream_refuses_bad_clients_and_positions() {
    let s = TestServer::start().await;
    let c = http_client();
    let (id, secret) = feed_client(&s, "revocations:read").await;
    let (other, other_secret) = feed_client(&s, "profile").await;
    let url = s.url("/revocations/stream");
    assert_eq!(send(c.get(&url)).await.status, 401);
    assert_eq!(send(c.get(&url).basic_auth(&other, Some(&other_secret))).await.status, 403);
    let bad = send(c.get(&url).basic_auth(&id, Some(&secret)).header("last-event-id", "x")).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json["error"], "invalid_request");
}

#[tokio::test]
async fn graceful_shutdown_ends_open_streams() {
    let s = TestServer::start().await;
    let (id, secret) = feed_client(&s, "revocations:read").await;
    let mut res = SseReader::open(&s, &id, &secret, None).await;
    assert_eq!(res.status(), 200);
    tokio::time::timeout(std::time::Duration::from_secs(10), s.stop()).await.expect("shutdown does not hang");
    // The stream ended cleanly.
    let end =
        tokio::time::timeout(std::time::Duration::from_secs(10), res.chunk()).await.expect("stream closes");
    assert!(matches!(end, Ok(None) | Err(_)));
}

#[tokio::test]
async fn a_consumer_restarted_with_its_last_seq_misses_nothing() {
    let s = TestServer::start().await;
    let c = http_client();
    let (id, secret) = feed_client(&s, "revocations:read").await;
    s.register(&c, "restart", "correct horse battery").await;
    let mut logins = Vec::new();
    for _ in 0..20 {
        logins.push(s.login(&c, "restart", "correct horse battery").await);
    }
    let logout_all = |batch: &[latchkey_testkit::Answer]| {
        let calls: Vec<_> = batch
            .iter()
            .map(|l| send(c.post(s.url("/auth/logout")).bearer_auth(l.str("access_token"))))
            .collect();
        async move {
            for a in futures::future::join_all(calls).await {
                assert_eq!(a.status, 204);
            }
        }
    };
    // The consumer reads part of a burst of concurrent logouts, then stops (a restart).
    let res = SseReader::open(&s, &id, &secret, None).await;
    let mut before = SseReader { res, buf: String::new() };
    logout_all(&logins[..10]).await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(before.next().await);
    }
    drop(before);
    let last = seen.last().unwrap().0;
    // While it is down: more concurrent logouts and another process's change.
    logout_all(&logins[10..]).await;
    s.cli(&["user", "set-roles", "restart", "manager"], "").await.unwrap();
    // It comes back with its last seq, over the stream; a paging consumer does the same.
    let res = SseReader::open(&s, &id, &secret, Some(last)).await;
    let mut after = SseReader { res, buf: String::new() };
    for _ in 0..15 {
        seen.push(after.next().await);
    }
    let paged =
        send(c.get(s.url(&format!("/revocations?after={last}"))).basic_auth(&id, Some(&secret))).await;
    let paged: Vec<i64> =
        paged.json["events"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    let resumed: Vec<i64> = seen[6..].iter().map(|(seq, _)| *seq).collect();
    assert_eq!(paged, resumed, "the stream and the page resume alike");
    // Every event exactly once, in order: the same as a fresh snapshot.
    let seqs: Vec<i64> = seen.iter().map(|(seq, _)| *seq).collect();
    let all = send(c.get(s.url("/revocations?after=0")).basic_auth(&id, Some(&secret))).await;
    let all: Vec<i64> =
        all.json["events"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, all);
    let mut sids: Vec<&str> = seen.iter().filter_map(|(_, e)| e["sid"].as_str()).collect();
    sids.sort_unstable();
    sids.dedup();
    assert_eq!(sids.len(), 20, "every session once");
    assert_eq!(seen.last().unwrap().1["type"], "user_changed");
}
