//! The revocation feed over HTTP (SPEC 5.4) and client registration (SPEC 6): Basic client
//! authentication, the `revocations:read` scope, `after` paging, and the events logout,
//! reuse and role changes publish.

use serde_json::{Value, json};

use crate::{TestServer, http_client, send};

/// Registers a client through the CLI; returns (client_id, client_secret).
async fn feed_client(s: &TestServer, scopes: &str) -> (String, String) {
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
