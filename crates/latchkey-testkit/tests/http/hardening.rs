//! Regression tests for issue 12 (what an outside review and attack found), each over real
//! HTTP against the real server: the item number is in each test's name.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::feed::feed_client;
use crate::oauth::{App, browser, exchange, first_code, refresh_app, register_app, token};
use crate::{TestServer, http_client, send};

fn claims(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// A server that believes `X-Forwarded-For` from loopback, so one test plays many callers.
async fn behind_proxy() -> TestServer {
    TestServer::start_with(|c| c.trusted_proxies = vec!["127.0.0.1".into()]).await
}

/// `POST /auth/refresh` from `ip` with `agent`.
async fn refresh_as(s: &TestServer, ip: &str, agent: &str, token: &str) -> latchkey_testkit::Answer {
    let c = http_client();
    send(
        c.post(s.url("/auth/refresh"))
            .header("x-forwarded-for", ip)
            .header("user-agent", agent)
            .json(&json!({"refresh_token": token})),
    )
    .await
}

/// Feed events of the server so far.
async fn feed(s: &TestServer) -> Vec<latchkey_proto::events::RevocationEvent> {
    let now = latchkey_core::Clock::now(&*s.clock);
    s.store().list_feed_events(0, now, 10_000).await.unwrap().into_iter().map(|e| e.event).collect()
}

async fn security_events(s: &TestServer) -> Vec<String> {
    s.store().list_security_events(1000).await.unwrap().into_iter().map(|e| e.kind).collect()
}

/// Item 1: with a copy of the refresh token, a thief who presents it inside the grace
/// window right after the victim rotated gets no successor: another network or another
/// user agent than the rotation's is reuse, and the session ends for both.
#[tokio::test]
async fn issue_12_1_a_thief_cannot_follow_a_session_through_the_grace_window() {
    let s = behind_proxy().await;
    let c = http_client();
    s.register(&c, "victim", "correct horse battery").await;
    for (round, (thief_ip, thief_agent)) in
        [("198.51.100.7", "victim-app/1"), ("203.0.113.77", "curl/8"), ("2001:db8::1", "victim-app/1")]
            .into_iter()
            .enumerate()
    {
        let login = send(
            c.post(s.url("/auth/login"))
                .header("x-forwarded-for", "203.0.113.5")
                .header("user-agent", "victim-app/1")
                .json(&json!({"username": "victim", "password": "correct horse battery"})),
        )
        .await;
        let copied = login.str("refresh_token").to_owned();
        let rotated = refresh_as(&s, "203.0.113.5", "victim-app/1", &copied).await;
        assert_eq!(rotated.status, 200, "{}", rotated.text);
        // A benign duplicate from the rotation's caller (same /24, same agent) gets the
        // same successor...
        let duplicate = refresh_as(&s, "203.0.113.9", "victim-app/1", &copied).await;
        assert_eq!(duplicate.str("refresh_token"), rotated.str("refresh_token"), "round {round}");
        // ...the thief, one second later, is reuse.
        s.clock.advance(Duration::from_secs(1));
        let thief = refresh_as(&s, thief_ip, thief_agent, &copied).await;
        assert_eq!(thief.status, 400, "round {round}: {}", thief.text);
        assert_eq!(thief.json["error_reason"], "reuse_detected");
        let victim = refresh_as(&s, "203.0.113.5", "victim-app/1", rotated.str("refresh_token")).await;
        assert_eq!(victim.json["error_reason"], "reuse_detected", "round {round}");
    }
    assert!(security_events(&s).await.iter().filter(|k| *k == "refresh_token_reuse").count() >= 3);
}

/// Item 1, raced: the victim and the thief present the same token at once, many times. In
/// every interleaving the thief never keeps a live token: when the victim rotates first the
/// thief's copy is reuse and the session ends; when the thief comes first, its refresh from
/// another network moments after the sign-in is risky (SPEC 12), nothing rotates, and the
/// session waits for its user to sign in again (`step_up_required` for both).
#[tokio::test]
async fn issue_12_1_a_thief_racing_the_victim_always_ends_the_session() {
    let s = behind_proxy().await;
    let c = http_client();
    s.register(&c, "raced", "correct horse battery").await;
    for round in 0..20 {
        let login = send(
            c.post(s.url("/auth/login"))
                .header("x-forwarded-for", "203.0.113.5")
                .header("user-agent", "victim-app/1")
                .json(&json!({"username": "raced", "password": "correct horse battery"})),
        )
        .await;
        let token = login.str("refresh_token").to_owned();
        let (victim, thief) = tokio::join!(
            refresh_as(&s, "203.0.113.5", "victim-app/1", &token),
            refresh_as(&s, "198.51.100.7", "victim-app/1", &token),
        );
        // Whoever came second was refused; whatever the first got is dead now.
        assert!(victim.status == 400 || thief.status == 400, "round {round}: one of them is reuse");
        for answer in [&victim, &thief] {
            if answer.status == 200 {
                let after = refresh_as(&s, "203.0.113.5", "victim-app/1", answer.str("refresh_token")).await;
                assert_eq!(after.json["error_reason"], "reuse_detected", "round {round}");
            } else {
                let reason = answer.json["error_reason"].as_str();
                assert!(
                    matches!(reason, Some("reuse_detected" | "step_up_required")),
                    "round {round}: {}",
                    answer.text
                );
            }
        }
        // Whatever happened, the thief's network holds nothing that works.
        let again = refresh_as(&s, "198.51.100.7", "victim-app/1", &token).await;
        assert_eq!(again.status, 400, "round {round}: {}", again.text);
    }
}

/// An app registered with `scopes`, and a user `user` with role manager who authorized it
/// for `scope`; returns the app and its first token answer.
async fn app_token(s: &TestServer, user: &str, scopes: &str, scope: &str) -> (App, latchkey_testkit::Answer) {
    let c = http_client();
    s.register(&c, user, "correct horse battery").await;
    s.cli(&["user", "set-roles", user, "manager"], "").await.unwrap();
    let app = register_app(s, &["--scopes", scopes]).await;
    let b = browser();
    let start = send(b.get(crate::oauth::authorize_url(s, &app, &[("scope", scope)]))).await;
    let back = crate::oauth::sign_in(s, &b, &crate::oauth::location(&start), user).await;
    let to_app = crate::oauth::consent(s, &b, &back, "allow").await;
    let code = crate::oauth::param(&to_app, "code").unwrap();
    let t = exchange(s, &app, &code).await;
    assert_eq!(t.status, 200, "{}", t.text);
    (app, t)
}

/// Item 2: an app's access token carries the user's roles only when the app was granted
/// the scope `roles`; first-party tokens always do.
#[tokio::test]
async fn issue_12_2_app_tokens_carry_roles_only_with_the_roles_scope() {
    let s = TestServer::start().await;
    let (app, t) = app_token(&s, "mgr", "openid profile roles", "openid profile").await;
    assert_eq!(claims(t.str("access_token"))["roles"], json!([]), "no roles without the scope");
    // A refresh does not widen it.
    let r = refresh_app(&s, &app, t.str("refresh_token")).await;
    assert_eq!(claims(r.str("access_token"))["roles"], json!([]));
    let (_, with_roles) = app_token(&s, "mgr2", "openid profile roles", "openid roles").await;
    assert_eq!(claims(with_roles.str("access_token"))["roles"], json!(["manager"]));
    // First-party: always.
    let c = http_client();
    let own = s.login(&c, "mgr", "correct horse battery").await;
    assert_eq!(claims(own.str("access_token"))["roles"], json!(["manager"]));
    // The consent page names the scope in plain words, and discovery lists it.
    let d = send(c.get(s.url("/.well-known/openid-configuration"))).await;
    assert!(d.json["scopes_supported"].as_array().unwrap().contains(&json!("roles")));
}

/// Item 3: a code presented by another client (a public client needs only an id) is
/// `invalid_grant`, is not spent, and its replay by that client revokes nothing; the app it
/// was issued to still redeems it, and the attempt is a security event.
#[tokio::test]
async fn issue_12_3_another_client_can_neither_burn_nor_revoke_a_code() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "erin", "correct horse battery").await;
    let app = register_app(&s, &[]).await;
    let other = register_app(&s, &["--public"]).await;
    let code = first_code(&s, &browser(), &app, "erin").await;
    for _ in 0..3 {
        let stolen = exchange(&s, &other, &code).await;
        assert_eq!(stolen.status, 400, "{}", stolen.text);
        assert_eq!(stolen.json["error"], "invalid_grant");
    }
    let t = exchange(&s, &app, &code).await;
    assert_eq!(t.status, 200, "the code is still the app's: {}", t.text);
    // The other client's replay after the redemption still revokes nothing.
    assert_eq!(exchange(&s, &other, &code).await.json["error"], "invalid_grant");
    let r = refresh_app(&s, &app, t.str("refresh_token")).await;
    assert_eq!(r.status, 200, "the app's session is alive: {}", r.text);
    assert!(security_events(&s).await.iter().any(|k| k == "authorization_code_wrong_client"));
    // The app's own replay still revokes what the code produced (RFC 6749 §4.1.2).
    assert_eq!(exchange(&s, &app, &code).await.json["error"], "invalid_grant");
    let dead = refresh_app(&s, &app, r.str("refresh_token")).await;
    assert_eq!(dead.json["error_reason"], "reuse_detected", "{}", dead.text);
}

/// Item 4: a retired refresh token presented with a scope outside the grant is reuse (the
/// session ends), not an `invalid_scope` that leaves it alive.
#[tokio::test]
async fn issue_12_4_a_bad_scope_does_not_shield_a_retired_token() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "gina", "correct horse battery").await;
    let app = register_app(&s, &[]).await;
    let t = exchange(&s, &app, &first_code(&s, &browser(), &app, "gina").await).await;
    let r1 = t.str("refresh_token").to_owned();
    let live = refresh_app(&s, &app, &r1).await;
    // The live token with a wider scope: invalid_scope, nothing rotates.
    let wide =
        [("grant_type", "refresh_token"), ("refresh_token", live.str("refresh_token")), ("scope", "admin")];
    assert_eq!(token(&s, &app, &wide).await.json["error"], "invalid_scope");
    // The retired one, after the window, with the same wide scope: reuse.
    s.clock.advance(Duration::from_secs(30));
    let probe =
        token(&s, &app, &[("grant_type", "refresh_token"), ("refresh_token", &r1), ("scope", "admin")]).await;
    assert_eq!(probe.json["error_reason"], "reuse_detected", "{}", probe.text);
    let after = refresh_app(&s, &app, live.str("refresh_token")).await;
    assert_eq!(after.json["error_reason"], "reuse_detected", "{}", after.text);
}

/// Item 5: `POST /auth/logout` with an app's refresh token (live or retired) or access
/// token answers 204 and leaves the app's session alone.
#[tokio::test]
async fn issue_12_5_first_party_logout_leaves_app_sessions_alone() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "hank", "correct horse battery").await;
    let app = register_app(&s, &[]).await;
    let t = exchange(&s, &app, &first_code(&s, &browser(), &app, "hank").await).await;
    let r1 = t.str("refresh_token").to_owned();
    let t2 = refresh_app(&s, &app, &r1).await;
    for body in [json!({"refresh_token": r1}), json!({"refresh_token": t2.str("refresh_token")})] {
        assert_eq!(s.post(&c, "/auth/logout", body).await.status, 204);
    }
    let bearer = send(c.post(s.url("/auth/logout")).bearer_auth(t2.str("access_token"))).await;
    assert_eq!(bearer.status, 204);
    let alive = refresh_app(&s, &app, t2.str("refresh_token")).await;
    assert_eq!(alive.status, 200, "{}", alive.text);
    // First-party logout by refresh token still works.
    let own = s.signed_in(&c, "hank-own").await;
    assert_eq!(
        s.post(&c, "/auth/logout", json!({"refresh_token": own.str("refresh_token")})).await.status,
        204
    );
    assert_eq!(s.refresh(&c, own.str("refresh_token")).await.json["error_reason"], "logged_out");
}

/// Item 6: a confidential client introspects its own tokens; others only with the scope
/// `introspect`; any other client learns `{"active": false}` and nothing else.
#[tokio::test]
async fn issue_12_6_introspection_shows_a_client_only_its_own_tokens() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "ivy", "correct horse battery").await;
    let app = register_app(&s, &[]).await;
    let t = exchange(&s, &app, &first_code(&s, &browser(), &app, "ivy").await).await;
    let (feed_id, feed_secret) = feed_client(&s, "revocations:read").await;
    let (rs_id, rs_secret) = feed_client(&s, "introspect").await;
    let own = s.signed_in(&c, "ivy-first-party").await;
    let introspect = |id: String, secret: String, token: String| {
        let req = http_client().post(s.url("/oauth/introspect")).basic_auth(id, Some(secret));
        async move { send(req.form(&[("token", token)])).await }
    };
    for tok in
        [t.str("access_token"), t.str("refresh_token"), own.str("access_token"), own.str("refresh_token")]
    {
        let seen = introspect(feed_id.clone(), feed_secret.clone(), tok.to_owned()).await;
        assert_eq!(seen.json, json!({"active": false}), "a feed-only client sees nothing");
        let by_rs = introspect(rs_id.clone(), rs_secret.clone(), tok.to_owned()).await;
        assert_eq!(by_rs.json["active"], true, "a resource server with `introspect`: {}", by_rs.text);
    }
    let (app_id, app_secret) = (app.id.clone(), app.secret.clone().unwrap());
    let mine = introspect(app_id.clone(), app_secret.clone(), t.str("access_token").to_owned()).await;
    assert_eq!(mine.json["active"], true);
    assert_eq!(mine.json["username"], "ivy");
    let theirs = introspect(app_id, app_secret, own.str("access_token").to_owned()).await;
    assert_eq!(theirs.json, json!({"active": false}));
}

/// Item 7: a user looping refresh + revoke of the new access token writes at most
/// `MAX_TOKEN_REVOCATIONS` `token_revoked` events for the session; past that the session
/// itself is revoked (one event covers all its tokens) and nothing more is written.
#[tokio::test]
async fn issue_12_7_revoking_access_tokens_cannot_flood_the_feed() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "flood", "correct horse battery").await;
    let app = register_app(&s, &["--public"]).await;
    let t = exchange(&s, &app, &first_code(&s, &browser(), &app, "flood").await).await;
    let mut refresh = t.str("refresh_token").to_owned();
    let mut revoked_tokens = Vec::new();
    for _ in 0..60 {
        let r = refresh_app(&s, &app, &refresh).await;
        if r.status != 200 {
            assert_eq!(r.json["error_reason"], "logged_out", "{}", r.text);
            break;
        }
        refresh = r.str("refresh_token").to_owned();
        let revoke = send(
            http_client()
                .post(s.url("/oauth/revoke"))
                .form(&[("token", r.str("access_token")), ("client_id", app.id.as_str())]),
        )
        .await;
        assert_eq!(revoke.status, 200, "{}", revoke.text);
        revoked_tokens.push(r.str("access_token").to_owned());
    }
    let events = feed(&s).await;
    let token_revoked = events
        .iter()
        .filter(|e| matches!(e, latchkey_proto::events::RevocationEvent::TokenRevoked { .. }))
        .count();
    let session_revoked = events
        .iter()
        .filter(|e| matches!(e, latchkey_proto::events::RevocationEvent::SessionRevoked { .. }))
        .count();
    let cap = usize::try_from(latchkey_core::oauth::MAX_TOKEN_REVOCATIONS).unwrap();
    assert_eq!((token_revoked, session_revoked), (cap, 1), "the cap, then one session revocation");
    assert!(security_events(&s).await.iter().any(|k| k == "token_revocation_flood"));
    // Every revoked token is dead: the first ones by their own event, the last by its session.
    for at in &revoked_tokens {
        assert_eq!(s.get_auth(&c, "/oauth/userinfo", at).await.status, 401);
    }
}

/// Item 7, for tokens without a session (`client_credentials`): past the cap the client
/// gets 503 with `Retry-After` (RFC 7009 §2.2: the token still exists, retry later), and
/// the feed gets nothing more.
#[tokio::test]
async fn issue_12_7_a_clients_own_tokens_past_the_cap_answer_503() {
    let s = TestServer::start().await;
    let (id, secret) = feed_client(&s, "notes:read").await;
    let mut statuses = Vec::new();
    for _ in 0..15 {
        let cc = send(
            http_client()
                .post(s.url("/oauth/token"))
                .basic_auth(&id, Some(&secret))
                .form(&[("grant_type", "client_credentials")]),
        )
        .await;
        let revoke = send(
            http_client()
                .post(s.url("/oauth/revoke"))
                .basic_auth(&id, Some(&secret))
                .form(&[("token", cc.str("access_token"))]),
        )
        .await;
        if revoke.status == 503 {
            assert!(revoke.header("retry-after").is_some());
            assert_eq!(revoke.json["error"], "temporarily_unavailable");
        }
        statuses.push(revoke.status);
    }
    let cap = usize::try_from(latchkey_core::oauth::MAX_TOKEN_REVOCATIONS).unwrap();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), cap, "{statuses:?}");
    assert_eq!(feed(&s).await.len(), cap);
}

/// Item 11: a JSON body must be an object; arrays and scalars are a 400 everywhere and
/// change nothing.
#[tokio::test]
async fn issue_12_11_json_bodies_must_be_objects() {
    let s = TestServer::start().await;
    let c = http_client();
    let login = s.signed_in(&c, "jay").await;
    let at = login.str("access_token");
    for body in ["[\"jay\",\"correct horse battery\"]", "[]", "\"text\"", "42", "true", "null", " [ ] "] {
        for path in ["/auth/register", "/auth/login", "/auth/refresh", "/auth/logout"] {
            let a = send(c.post(s.url(path)).header("content-type", "application/json").body(body)).await;
            assert_eq!(a.status, 400, "{path} {body}: {}", a.text);
            assert_eq!(a.json["error"], "invalid_request");
        }
        for path in ["/auth/logout-all", "/auth/password", "/auth/logout"] {
            let a = send(
                c.post(s.url(path)).bearer_auth(at).header("content-type", "application/json").body(body),
            )
            .await;
            assert_eq!(a.status, 400, "{path} {body}: {}", a.text);
        }
    }
    // Nothing happened: the session is alive.
    assert_eq!(s.get_auth(&c, "/auth/me", at).await.status, 200);
    assert_eq!(s.refresh(&c, login.str("refresh_token")).await.status, 200);
}

/// Item 12: registration is throttled per client address (20 attempts within a minute of
/// each other), counting taken usernames too; the 409 stays, and the limit is per address.
#[tokio::test]
async fn issue_12_12_registration_is_throttled_per_address() {
    let s = TestServer::start_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1".into()];
        c.settings.throttle.registration_attempts =
            latchkey_core::settings::ThrottlePolicy::default().registration_attempts;
    })
    .await;
    let c = http_client();
    let attempt = |ip: &'static str, name: String| {
        let req = c
            .post(s.url("/auth/register"))
            .header("x-forwarded-for", ip)
            .json(&json!({"username": name, "password": "correct horse battery"}));
        async move { send(req).await }
    };
    assert_eq!(attempt("203.0.113.1", "taken".into()).await.status, 201);
    let mut statuses = Vec::new();
    for i in 0..25 {
        let name = if i % 2 == 0 { "taken".to_owned() } else { format!("probe{i}") };
        statuses.push(attempt("203.0.113.1", name).await.status);
    }
    assert!(statuses[..19].iter().all(|s| *s == 409 || *s == 201), "{statuses:?}");
    assert!(statuses[19..].iter().all(|s| *s == 429), "{statuses:?}");
    let throttled = attempt("203.0.113.1", "another".into()).await;
    assert_eq!(throttled.json["error"], "too_many_requests");
    assert!(throttled.header("retry-after").is_some());
    // Another address is not affected; a minute after the last attempt the first may again.
    assert_eq!(attempt("198.51.100.1", "elsewhere".into()).await.status, 201);
    s.clock.advance(Duration::from_secs(61));
    assert_eq!(attempt("203.0.113.1", "later".into()).await.status, 201);
    assert!(security_events(&s).await.iter().any(|k| k == "registration_throttled"));
}

/// Item 13: the CSRF `Origin` check compares the scheme too: an `https://` page of the same
/// host cannot post into an `http://` issuer.
#[tokio::test]
async fn issue_12_13_the_origin_check_compares_the_scheme() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "kim", "correct horse battery").await;
    let b = browser();
    let page = send(b.get(s.url("/login"))).await;
    let form = crate::oauth::hidden_fields(&page.text);
    let host = s.base.trim_start_matches("http://").to_owned();
    let post = |origin: String| {
        let mut f = form.clone();
        f.push(("username".into(), "kim".into()));
        f.push(("password".into(), "correct horse battery".into()));
        let req = b.post(s.url("/login")).header("origin", origin).form(&f);
        async move { send(req).await }
    };
    assert_eq!(post(format!("https://{host}")).await.status, 403);
    assert_eq!(post(format!("ws://{host}")).await.status, 403);
    assert_eq!(post(format!("http://{host}")).await.status, 303, "the issuer's own origin");
}

/// Item 13: a feed client may hold a bounded number of open streams; the next is a 429
/// with `Retry-After`, and closing one frees a slot.
#[tokio::test]
async fn issue_12_13_feed_streams_are_capped_per_client() {
    let s = TestServer::start().await;
    let (id, secret) = feed_client(&s, "revocations:read").await;
    let (other_id, other_secret) = feed_client(&s, "revocations:read").await;
    let open = |id: String, secret: String| {
        let req = http_client().get(s.url("/revocations/stream")).basic_auth(id, Some(secret));
        async move { req.send().await.unwrap() }
    };
    let mut streams = Vec::new();
    for _ in 0..latchkey_core::feed::MAX_STREAMS_PER_CLIENT {
        let r = open(id.clone(), secret.clone()).await;
        assert_eq!(r.status(), 200);
        streams.push(r);
    }
    let refused = open(id.clone(), secret.clone()).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "too_many_requests");
    // Another client is not affected.
    assert_eq!(open(other_id, other_secret).await.status(), 200);
    // Closing one frees its slot (the server notices the closed connection).
    drop(streams.pop());
    let mut reopened = None;
    for _ in 0..100 {
        let r = open(id.clone(), secret.clone()).await;
        if r.status() == 200 {
            reopened = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reopened.is_some(), "a slot was freed");
}

/// Sends `head` and then `body` on one connection, as a client that writes the whole
/// request before reading (no `Expect: 100-continue`); returns the status line and body.
async fn raw_exchange(s: &TestServer, head: &str, body: &[u8]) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(16 * 1024) {
        stream.write_all(chunk).await.expect("the server reads the whole body (no reset)");
    }
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("the answer arrives (no reset)");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.lines().next().unwrap_or_default().to_owned();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

/// Item 10: a 2 MB body sent whole, without `Expect: 100-continue` (Python's http.client,
/// Node's fetch), gets the 413 with its JSON body instead of a reset, on the API, the OAuth
/// endpoints and the pages; with `Expect: 100-continue` the 413 comes before the body.
#[tokio::test]
async fn issue_12_10_an_oversized_body_sent_whole_gets_its_413() {
    let s = TestServer::start().await;
    let host = s.base.trim_start_matches("http://").to_owned();
    let body = vec![b'x'; 2 * 1024 * 1024];
    for (path, kind) in [
        ("/auth/login", "application/json"),
        ("/oauth/token", "application/x-www-form-urlencoded"),
        ("/login", "application/x-www-form-urlencoded"),
    ] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let (status, answer) = raw_exchange(&s, &head, &body).await;
        assert!(status.starts_with("HTTP/1.1 413"), "{path}: {status}");
        assert!(answer.contains("payload_too_large"), "{path}: {answer}");
        // Chunked, no length announced: the same.
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {kind}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        let mut chunked = Vec::new();
        for chunk in body.chunks(64 * 1024) {
            chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            chunked.extend_from_slice(chunk);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let (status, _) = raw_exchange(&s, &head, &chunked).await;
        assert!(status.starts_with("HTTP/1.1 413"), "{path} chunked: {status}");
    }
    // Expect: 100-continue: answered at once, the body is never asked for.
    let head = format!(
        "POST /auth/login HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    let (status, answer) = raw_exchange(&s, &head, &[]).await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    // The server is healthy and a normal request on a new connection works.
    let c = http_client();
    assert_eq!(send(c.get(s.url("/healthz"))).await.status, 200);
}

/// Posts the account page's form at `action` (with its CSRF token) in browser `b`.
async fn account_form(s: &TestServer, b: &reqwest::Client, action: &str) -> u16 {
    let page = send(b.get(s.url("/account"))).await;
    let form = crate::oauth::hidden_fields(&page.text);
    send(b.post(s.url(action)).form(&form)).await.status
}

/// Outside review (probe F1): a code issued before the sign-in behind it ended, or before
/// the user disconnected the app, opens no session afterwards: logout-all, a password
/// change, the page's Sign out, revoking the browser's own device, and disconnecting the
/// app each leave an unredeemed code worthless.
#[tokio::test]
async fn issue_12_probe_codes_die_with_the_sign_in_and_consent_behind_them() {
    let s = TestServer::start().await;
    let c = http_client();
    let app = register_app(&s, &[]).await;
    for (i, event) in ["logout-all", "password", "sign-out", "device", "disconnect"].into_iter().enumerate() {
        let user = format!("coder{i}");
        s.register(&c, &user, "correct horse battery").await;
        let b = browser();
        let code = first_code(&s, &b, &app, &user).await;
        match event {
            "logout-all" => {
                let own = s.login(&c, &user, "correct horse battery").await;
                let a = send(c.post(s.url("/auth/logout-all")).bearer_auth(own.str("access_token"))).await;
                assert_eq!(a.status, 204);
            }
            "password" => {
                let own = s.login(&c, &user, "correct horse battery").await;
                let body = json!({"current_password": "correct horse battery", "new_password": "another horse battery"});
                assert_eq!(
                    s.post_auth(&c, "/auth/password", own.str("access_token"), body).await.status,
                    204
                );
            }
            "sign-out" => assert_eq!(account_form(&s, &b, "/logout").await, 200),
            "device" => {
                let page = send(b.get(s.url("/account"))).await;
                let sid = page
                    .text
                    .split("/account/sessions/")
                    .nth(1)
                    .unwrap()
                    .split('/')
                    .next()
                    .unwrap()
                    .to_owned();
                assert_eq!(account_form(&s, &b, &format!("/account/sessions/{sid}/revoke")).await, 303);
            }
            "disconnect" => {
                assert_eq!(account_form(&s, &b, &format!("/account/apps/{}/revoke", app.id)).await, 303);
            }
            _ => unreachable!(),
        }
        let t = exchange(&s, &app, &code).await;
        assert_eq!(t.status, 400, "{event}: {}", t.text);
        assert_eq!(t.json["error"], "invalid_grant", "{event}");
        let sub = s.store().find_user_by_username(&user).await.unwrap().unwrap().id;
        let now = latchkey_core::Clock::now(&*s.clock);
        let apps = s.store().list_live_sessions(&sub, now).await.unwrap();
        assert!(apps.iter().all(|x| x.client_id != *app.id), "{event}: no app session was opened");
    }
    // A code whose sign-in and consent stand still redeems.
    s.register(&c, "still", "correct horse battery").await;
    let code = first_code(&s, &browser(), &app, "still").await;
    assert_eq!(exchange(&s, &app, &code).await.status, 200);
}

/// Outside review (probe F2): revoking the same access token again and again is idempotent
/// (RFC 7009) and counts once against the flood cap: the session stays alive.
#[tokio::test]
async fn issue_12_probe_repeating_one_revocation_does_not_end_the_session() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "repeat", "correct horse battery").await;
    let app = register_app(&s, &[]).await;
    let t = exchange(&s, &app, &first_code(&s, &browser(), &app, "repeat").await).await;
    for _ in 0..20 {
        let revoke = send(
            http_client()
                .post(s.url("/oauth/revoke"))
                .basic_auth(&app.id, app.secret.as_deref())
                .form(&[("token", t.str("access_token"))]),
        )
        .await;
        assert_eq!(revoke.status, 200);
    }
    let r = refresh_app(&s, &app, t.str("refresh_token")).await;
    assert_eq!(r.status, 200, "the session is alive: {}", r.text);
    let token_revoked = feed(&s)
        .await
        .iter()
        .filter(|e| matches!(e, latchkey_proto::events::RevocationEvent::TokenRevoked { .. }))
        .count();
    assert_eq!(token_revoked, 1);
}

/// The verified-token cache skips only the signature: a token used once (and so cached) is
/// refused like any other once it expires, and once its session ends.
#[tokio::test]
async fn a_cached_access_token_still_expires_and_still_dies_with_its_session() {
    let s = TestServer::start().await;
    let c = http_client();
    let login = s.signed_in(&c, "cached").await;
    let at = login.str("access_token").to_owned();
    assert_eq!(s.get_auth(&c, "/auth/me", &at).await.status, 200);
    assert_eq!(s.get_auth(&c, "/auth/me", &at).await.status, 200, "served from the cache");
    s.clock.advance(Duration::from_secs(6 * 60));
    let expired = s.get_auth(&c, "/auth/me", &at).await;
    assert_eq!(expired.status, 401);
    assert_eq!(expired.json["error_reason"], "expired");
    // Another cached token dies with its session.
    let again = s.login(&c, "cached", "correct horse battery").await;
    let at = again.str("access_token").to_owned();
    assert_eq!(s.get_auth(&c, "/auth/me", &at).await.status, 200);
    assert_eq!(send(c.post(s.url("/auth/logout")).bearer_auth(&at)).await.status, 204);
    assert_eq!(s.get_auth(&c, "/auth/me", &at).await.status, 401);
}

/// Outside review (probe F4): a new username cannot pass for another (white space at an
/// end, a variation selector), and the answer is a 400 that changes nothing.
#[tokio::test]
async fn issue_12_probe_look_alike_usernames_are_refused_at_registration() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "alice", "correct horse battery").await;
    for name in ["alice ", " alice", "alice\u{FE0F}", "alice\u{E0041}", "\u{3164}"] {
        let a = s
            .post(&c, "/auth/register", json!({"username": name, "password": "correct horse battery"}))
            .await;
        assert_eq!(a.status, 400, "{name:?}: {}", a.text);
        assert_eq!(a.json["error"], "invalid_request");
    }
    assert_eq!(s.store().list_users().await.unwrap().len(), 1);
}
