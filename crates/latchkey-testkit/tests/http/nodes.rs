//! Two server nodes on one PostgreSQL database (issue: PostgreSQL and several nodes): a
//! session continues from node to node, concurrent refreshes of one token split across
//! the nodes give one successor, logout on one node reaches the other and an API fed by
//! it, throttling counts failures from both, and a feed consumer on either node sees every
//! event once. These always run on PostgreSQL.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::notes::{api, notes_api_with, wait_for};
use crate::{TestServer, http_client, send};

/// Two nodes on one fresh PostgreSQL database.
async fn two_nodes() -> (TestServer, TestServer) {
    let url = latchkey_testkit::fresh_pg_database().await;
    let a = TestServer::start_on(Some(&url), |_| {}).await;
    let b = TestServer::start_on(Some(&url), |_| {}).await;
    (a, b)
}

#[tokio::test]
async fn a_session_moves_between_nodes_and_logout_on_one_reaches_the_other() {
    let (a, b) = two_nodes().await;
    let c = http_client();
    let login = a.signed_in(&c, "roaming").await;
    // Rotated on B, then on A, then on B again.
    let r1 = b.refresh(&c, login.str("refresh_token")).await;
    assert_eq!(r1.status, 200, "{}", r1.text);
    let r2 = a.refresh(&c, r1.str("refresh_token")).await;
    assert_eq!(r2.status, 200, "{}", r2.text);
    // Tokens signed on one node are accepted by the other (one key ring).
    assert_eq!(b.get_auth(&c, "/auth/me", r2.str("access_token")).await.status, 200);
    // An API fed by node B.
    let notes = notes_api_with(&b, |v| v.poll_every(Duration::from_secs(3600))).await;
    let at = r2.str("access_token").to_owned();
    wait_for(|| async { api(&notes, reqwest::Method::GET, "/whoami", &at, None).await.status == 200 }).await;
    // Logout on A: B refuses the refresh, and the API fed by B refuses the access token.
    assert_eq!(send(c.post(a.url("/auth/logout")).bearer_auth(&at)).await.status, 204);
    let refused = b.refresh(&c, r2.str("refresh_token")).await;
    assert_eq!(refused.json["error_reason"], "logged_out", "{}", refused.text);
    wait_for(|| async {
        api(&notes, reqwest::Method::GET, "/whoami", &at, None).await.json["error_reason"] == "revoked"
    })
    .await;
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_split_across_nodes_give_one_successor() {
    let (a, b) = two_nodes().await;
    let c = http_client();
    let mut token = a.signed_in(&c, "split").await.str("refresh_token").to_owned();
    let mut session = String::new();
    for round in 0..10 {
        let calls = (0..64).map(|i| {
            let node = if i % 2 == 0 { &a } else { &b };
            node.refresh(&c, &token)
        });
        let answers = futures::future::join_all(calls).await;
        assert!(
            answers.iter().all(|r| r.status == 200),
            "round {round}: {:?}",
            answers.iter().map(|r| r.status).collect::<Vec<_>>()
        );
        let successors: BTreeSet<&str> = answers.iter().map(|r| r.str("refresh_token")).collect();
        assert_eq!(successors.len(), 1, "round {round}: one successor across both nodes");
        session = answers[0].str("session_id").to_owned();
        assert_eq!(a.live_refresh_tokens(&session).await, 1);
        token = successors.into_iter().next().unwrap().to_owned();
    }
    assert_eq!(b.refresh(&c, &token).await.status, 200, "{session}: the chain goes on");
}

#[tokio::test]
async fn throttling_counts_failures_from_both_nodes() {
    let (a, b) = two_nodes().await;
    let c = http_client();
    a.register(&c, "guarded", "correct horse battery").await;
    let mut statuses = Vec::new();
    for i in 0..10 {
        let node = if i % 2 == 0 { &a } else { &b };
        let body = json!({"username": "guarded", "password": "wrong password!"});
        statuses.push(node.post(&c, "/auth/login", body).await.status);
    }
    assert_eq!(statuses[..9], [401; 9]);
    assert_eq!(statuses[9], 429, "the 10th failure, counted across both nodes, locks the account");
    let right = json!({"username": "guarded", "password": "correct horse battery"});
    assert_eq!(a.post(&c, "/auth/login", right.clone()).await.status, 429);
    assert_eq!(b.post(&c, "/auth/login", right).await.status, 429);
}

/// Reads an SSE stream until `count` events arrived; returns their seqs in order.
async fn read_events(res: reqwest::Response, count: usize) -> Vec<i64> {
    let mut res = res;
    let mut buf = String::new();
    let mut seqs = Vec::new();
    while seqs.len() < count {
        let chunk = tokio::time::timeout(Duration::from_secs(10), res.chunk())
            .await
            .expect("events keep coming")
            .unwrap()
            .expect("the stream stays open");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            if let Some(id) = block.lines().find_map(|l| l.strip_prefix("id:")) {
                seqs.push(id.trim().parse().unwrap());
            }
        }
    }
    seqs
}

#[tokio::test]
async fn a_feed_consumer_on_either_node_sees_every_event_once() {
    let (a, b) = two_nodes().await;
    let c = http_client();
    a.register(&c, "busy", "correct horse battery").await;
    let mut logins = Vec::new();
    for i in 0..30 {
        let node = if i % 2 == 0 { &a } else { &b };
        logins.push(node.login(&c, "busy", "correct horse battery").await);
    }
    let (id, secret) = crate::feed::feed_client(&a, "revocations:read").await;
    let open = |node: &TestServer| {
        http_client().get(node.url("/revocations/stream")).basic_auth(&id, Some(&secret)).send()
    };
    let (on_a, on_b) = (open(&a).await.unwrap(), open(&b).await.unwrap());
    let readers = (tokio::spawn(read_events(on_a, 30)), tokio::spawn(read_events(on_b, 30)));
    // 30 logouts at once, spread over both nodes.
    let logouts = logins.iter().enumerate().map(|(i, l)| {
        let node = if i % 2 == 0 { &a } else { &b };
        send(c.post(node.url("/auth/logout")).bearer_auth(l.str("access_token")))
    });
    assert!(futures::future::join_all(logouts).await.iter().all(|r| r.status == 204));
    let (seen_a, seen_b) = (readers.0.await.unwrap(), readers.1.await.unwrap());
    let page = send(c.get(b.url("/revocations?after=0")).basic_auth(&id, Some(&secret))).await;
    let all: Vec<i64> =
        page.json["events"].as_array().unwrap().iter().map(|e: &Value| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(all.len(), 30);
    assert_eq!(seen_a, all, "node A's stream: every event once, in order");
    assert_eq!(seen_b, all, "node B's stream: every event once, in order");
}

#[tokio::test]
async fn a_key_rotated_through_one_node_is_published_and_used_by_both() {
    use crate::tokens::{header, rotate_keys, verify};
    let (a, b) = two_nodes().await;
    let c = http_client();
    let login = a.signed_in(&c, "keyring").await;
    let old_kid = header(login.str("access_token"))["kid"].as_str().unwrap().to_owned();
    let new_kids = rotate_keys(&a).await;
    // Both nodes publish the new keys (each reloads the shared ring), before signing with them.
    for node in [&a, &b] {
        wait_for(|| async {
            let jwks = send(c.get(node.url("/jwks.json"))).await.text;
            new_kids.iter().all(|k| jwks.contains(k.as_str()))
        })
        .await;
    }
    let r1 = b.refresh(&c, login.str("refresh_token")).await;
    assert_eq!(
        header(r1.str("access_token"))["kid"],
        old_kid.as_str(),
        "not before the pre-publication period"
    );
    // After it, both nodes sign with the new key, and each node's JWKS verifies the other's
    // tokens. The CLI dates the keys by the real clock, which has run on past the nodes'
    // manual clocks by however long the test took so far (seconds on a loaded machine).
    a.clock.advance(Duration::from_secs(660));
    b.clock.advance(Duration::from_secs(660));
    let r2 = a.refresh(&c, r1.str("refresh_token")).await;
    let r3 = b.refresh(&c, r2.str("refresh_token")).await;
    for (token, other) in [(r2.str("access_token"), &b), (r3.str("access_token"), &a)] {
        let kid = header(token)["kid"].as_str().unwrap().to_owned();
        assert!(new_kids.contains(&kid), "{kid} is one of {new_kids:?}");
        verify(other, token).await;
    }
    verify(&b, r1.str("access_token")).await;
}
