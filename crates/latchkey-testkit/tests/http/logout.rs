//! OpenID Connect logout (SPEC 13) over HTTP: RP-initiated logout at `/oauth/logout`
//! (the hint, exact post-logout redirect URIs, `state`, the confirmation page) and
//! back-channel logout tokens, checked by a receiver that validates each with a JOSE
//! library against the server's JWKS: every way an app's session ends sends exactly one,
//! a receiver that is down gets it later, and a refusal is given up.

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header, jwk::JwkSet};
use latchkey_testkit::logout_receiver::LogoutReceiver;
use serde_json::{Value, json};

use crate::oauth::{
    App, authorize_url, browser, consent, exchange, hidden_fields, location, param, refresh_app,
    register_app, sign_in,
};
use crate::{TestServer, http_client, send};

const PASSWORD: &str = "correct horse battery";
const BYE: &str = "http://127.0.0.1:9/bye";
const WAIT: Duration = Duration::from_secs(30);

/// An app that listens for logout tokens at `receiver` and may be sent back to [`BYE`].
async fn listening_app(s: &TestServer, receiver: &LogoutReceiver) -> App {
    let uri = receiver.uri();
    register_app(
        s,
        &[
            "--post-logout-redirect-uri",
            BYE,
            "--backchannel-logout-uri",
            &uri,
            "--backchannel-logout-session-required",
        ],
    )
    .await
}

fn claims(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Validates a logout token as an app must (Back-Channel Logout §2.6): signature by a key
/// of the issuer's JWKS, `typ` `logout+jwt`, `iss`, `aud`, `iat`, `exp`, `jti`, `sub`,
/// `sid`, the event, and no `nonce`. Returns the claims.
async fn validated(s: &TestServer, app: &App, token: &str) -> Value {
    let header = decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("logout+jwt"));
    let jwks: JwkSet = http_client().get(s.url("/jwks.json")).send().await.unwrap().json().await.unwrap();
    let jwk = jwks.find(header.kid.as_deref().unwrap()).expect("the token's key is published");
    let mut v = Validation::new(header.alg);
    v.set_issuer(&[latchkey_testkit::ISSUER]);
    v.set_audience(&[&app.id]);
    v.set_required_spec_claims(&["iss", "aud", "iat", "exp", "sub"]);
    v.validate_exp = false; // the server's clock is the test's; checked below against it
    let c = decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &v).unwrap().claims;
    let now = latchkey_core::Clock::now(s.clock.as_ref()).0;
    let (iat, exp) = (c["iat"].as_i64().unwrap(), c["exp"].as_i64().unwrap());
    // Signed when sent (the test's clock may have moved on since), for a short life.
    assert!(iat <= now && exp > iat && exp - iat <= 300, "{c}");
    assert!(c["jti"].as_str().is_some_and(|j| j.len() >= 16), "{c}");
    assert!(c["sid"].is_string() && c["sub"].is_string(), "{c}");
    assert_eq!(c["events"], json!({"http://schemas.openid.net/event/backchannel-logout": {}}));
    assert!(c.get("nonce").is_none(), "{c}");
    c
}

/// A code for `app` from browser `b`, signing `user` in and consenting when asked.
async fn code(s: &TestServer, b: &reqwest::Client, app: &App, user: &str) -> String {
    let mut at = authorize_url(s, app, &[]);
    loop {
        let r = send(b.get(&at)).await;
        match r.status {
            302 => return param(&location(&r), "code").expect("a code"),
            303 => at = s.url(&sign_in(s, b, &location(&r), user).await),
            200 => {
                let path = at.strip_prefix(&s.url("")).unwrap_or(&at).to_owned();
                return param(&consent(s, b, &path, "allow").await, "code").unwrap();
            }
            _ => panic!("{}: {}", r.status, r.text),
        }
    }
}

/// An app session for `user` in browser `b`.
async fn app_session_in(
    s: &TestServer,
    b: &reqwest::Client,
    app: &App,
    user: &str,
) -> latchkey_testkit::Answer {
    let t = exchange(s, app, &code(s, b, app, user).await).await;
    assert_eq!(t.status, 200, "{}", t.text);
    t
}

/// An app session for `user` in a fresh browser: (browser, token response).
async fn app_session(s: &TestServer, app: &App, user: &str) -> (reqwest::Client, latchkey_testkit::Answer) {
    let b = browser();
    let t = app_session_in(s, &b, app, user).await;
    (b, t)
}

/// The app revokes its refresh token (RFC 7009), which ends its session.
async fn revoke_refresh_token(s: &TestServer, app: &App, token: &str) {
    let req = http_client().post(s.url("/oauth/revoke")).basic_auth(&app.id, app.secret.as_deref());
    let r = send(req.form(&[("token", token)])).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

fn sid_of(t: &latchkey_testkit::Answer) -> String {
    claims(t.str("id_token"))["sid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_way_an_apps_session_ends_sends_exactly_one_logout_token() {
    let s = TestServer::start().await;
    let receiver = LogoutReceiver::start().await;
    let app = listening_app(&s, &receiver).await;
    let quiet = register_app(&s, &[]).await;
    let c = http_client();
    for user in ["u-revoke", "u-reuse", "u-disconnect", "u-all", "u-disable", "u-password", "u-admin", "u-rp"]
    {
        s.register(&c, user, PASSWORD).await;
    }
    let mut ended = BTreeSet::new();

    // The app revokes its own refresh token (RFC 7009).
    let (_, t) = app_session(&s, &app, "u-revoke").await;
    revoke_refresh_token(&s, &app, t.str("refresh_token")).await;
    ended.insert(sid_of(&t));

    // Reuse detection: a retired refresh token replayed after the grace window.
    let (_, t) = app_session(&s, &app, "u-reuse").await;
    assert_eq!(refresh_app(&s, &app, t.str("refresh_token")).await.status, 200);
    s.clock.advance(Duration::from_secs(120));
    let replay = refresh_app(&s, &app, t.str("refresh_token")).await;
    assert_eq!(replay.json["error_reason"], "reuse_detected", "{}", replay.text);
    ended.insert(sid_of(&t));

    // The user disconnects the app on the account page.
    let (b, t) = app_session(&s, &app, "u-disconnect").await;
    let page = send(b.get(s.url("/account"))).await;
    let csrf = hidden_fields(&page.text).into_iter().find(|(k, _)| k == "csrf").unwrap().1;
    let done =
        send(b.post(s.url(&format!("/account/apps/{}/revoke", app.id))).form(&[("csrf", &csrf)])).await;
    assert_eq!(done.status, 303, "{}", done.text);
    ended.insert(sid_of(&t));

    // Logout everywhere from a first-party session.
    let (_, t) = app_session(&s, &app, "u-all").await;
    let at = s.login(&c, "u-all", PASSWORD).await.str("access_token").to_owned();
    assert_eq!(s.post_auth(&c, "/auth/logout-all", &at, json!({})).await.status, 204);
    ended.insert(sid_of(&t));

    // An operator disables a user, sets a password, revokes sessions.
    for (user, args) in [
        ("u-disable", vec!["user", "disable", "u-disable"]),
        ("u-password", vec!["user", "set-password", "u-password", "--password-stdin"]),
        ("u-admin", vec!["user", "revoke-sessions", "u-admin"]),
    ] {
        let (_, t) = app_session(&s, &app, user).await;
        s.cli(&args, "another long password\n").await.unwrap();
        ended.insert(sid_of(&t));
    }

    // RP-initiated logout.
    let (b, t) = app_session(&s, &app, "u-rp").await;
    let url =
        reqwest::Url::parse_with_params(&s.url("/oauth/logout"), &[("id_token_hint", t.str("id_token"))])
            .unwrap();
    let out = send(b.get(url)).await;
    assert_eq!(out.status, 200, "{}", out.text);
    ended.insert(sid_of(&t));

    // A session of an app without a back-channel URI sends nothing.
    let (_, t) = app_session(&s, &quiet, "u-rp").await;
    revoke_refresh_token(&s, &quiet, t.str("refresh_token")).await;

    let tokens = receiver.wait_for(ended.len(), WAIT).await;
    // Whatever was due has gone out; give a duplicate the chance to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tokens = if receiver.tokens().len() > tokens.len() { receiver.tokens() } else { tokens };
    let mut sids = BTreeSet::new();
    let mut jtis = BTreeSet::new();
    for token in &tokens {
        let c = validated(&s, &app, token).await;
        sids.insert(c["sid"].as_str().unwrap().to_owned());
        jtis.insert(c["jti"].as_str().unwrap().to_owned());
    }
    assert_eq!(tokens.len(), ended.len(), "one token per ended session");
    assert_eq!(sids, ended);
    assert_eq!(jtis.len(), tokens.len());
    let metrics = send(c.get(s.url("/metrics"))).await.text;
    assert!(
        metrics.contains(&format!("latchkey_backchannel_logout_sent_total {}", ended.len())),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_its_token_later_and_a_refusal_is_given_up() {
    let s = TestServer::start().await;
    let mut receiver = LogoutReceiver::reserve();
    let app = listening_app(&s, &receiver).await;
    let c = http_client();
    s.register(&c, "dora", PASSWORD).await;
    let (_, t) = app_session(&s, &app, "dora").await;
    let started = std::time::Instant::now();
    revoke_refresh_token(&s, &app, t.str("refresh_token")).await;
    let metric = |name: &'static str| {
        let c = c.clone();
        let url = s.url("/metrics");
        async move {
            let text = send(c.get(url)).await.text;
            text.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok()))
                .unwrap_or(0.0)
        }
    };
    while metric("latchkey_backchannel_logout_retried_total").await < 1.0 {
        assert!(started.elapsed() < WAIT, "the sender never tried");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric("latchkey_backchannel_logout_pending").await, 1.0);
    receiver.launch().await;
    // Nothing is due before the backoff has passed on the server's clock.
    s.clock.advance(Duration::from_secs(60));
    let tokens = receiver.wait_for(1, WAIT).await;
    let claims = validated(&s, &app, &tokens[0]).await;
    assert_eq!(claims["sid"], sid_of(&t));

    // A 400 is the app refusing the token: given up at once, not retried for a day.
    receiver.answer_with(400);
    let (_, t) = app_session(&s, &app, "dora").await;
    revoke_refresh_token(&s, &app, t.str("refresh_token")).await;
    while metric("latchkey_backchannel_logout_failed_total").await < 1.0 {
        assert!(started.elapsed() < WAIT * 2, "the refusal was never recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = s.cli(&["logout-deliveries", "list"], "").await.unwrap();
    assert!(rows.contains("\"state\":\"failed\"") && rows.contains("HTTP 400"), "{rows}");
    assert!(rows.contains("\"state\":\"sent\""), "{rows}");
    assert!(!rows.contains(t.str("refresh_token")) && !rows.contains("eyJ"), "no token is listed: {rows}");
}

#[tokio::test]
async fn rp_initiated_logout_with_the_browsers_own_hint_ends_its_sessions_and_goes_back() {
    let s = TestServer::start().await;
    let receiver = LogoutReceiver::start().await;
    let app = listening_app(&s, &receiver).await;
    let other = register_app(&s, &[]).await;
    let c = http_client();
    s.register(&c, "rita", PASSWORD).await;
    let (b, t) = app_session(&s, &app, "rita").await;
    // A second app signed in from the same browser ends too; one from another browser lives.
    let t_other = app_session_in(&s, &b, &other, "rita").await;
    let (_, t_elsewhere) = app_session(&s, &app, "rita").await;
    let url = reqwest::Url::parse_with_params(
        &s.url("/oauth/logout"),
        &[("id_token_hint", t.str("id_token")), ("post_logout_redirect_uri", BYE), ("state", "s 1&x")],
    )
    .unwrap();
    let out = send(b.get(url)).await;
    assert_eq!(out.status, 303, "{}", out.text);
    let to = location(&out);
    assert!(to.starts_with(BYE), "{to}");
    assert_eq!(param(&to, "state").as_deref(), Some("s 1&x"));
    assert!(out.header("set-cookie").is_some_and(|c| c.contains("lk_session=;")), "the cookie is cleared");
    assert_eq!(out.header("clear-site-data"), Some("\"cookies\", \"storage\""));
    for (app, t) in [(&app, &t), (&other, &t_other)] {
        let refused = refresh_app(&s, app, t.str("refresh_token")).await;
        assert_eq!(refused.json["error_reason"], "logged_out", "{}", refused.text);
    }
    assert_eq!(refresh_app(&s, &app, t_elsewhere.str("refresh_token")).await.status, 200);
    assert_eq!(send(b.get(s.url("/account"))).await.status, 303, "the browser is signed out");
    let tokens = receiver.wait_for(1, WAIT).await;
    assert_eq!(validated(&s, &app, &tokens[0]).await["sid"], sid_of(&t));
    // An expired hint still names its session: the browser is signed out already, the
    // session is over, so there is nothing to confirm.
    s.clock.advance(Duration::from_secs(3600));
    let again = reqwest::Url::parse_with_params(
        &s.url("/oauth/logout"),
        &[("id_token_hint", t.str("id_token")), ("post_logout_redirect_uri", BYE)],
    )
    .unwrap();
    let out = send(b.get(again)).await;
    assert_eq!(out.status, 303, "{}", out.text);
    assert_eq!(location(&out), BYE);
}

#[tokio::test]
async fn rp_initiated_logout_asks_before_ending_what_the_hint_does_not_name() {
    let s = TestServer::start().await;
    let receiver = LogoutReceiver::start().await;
    let app = listening_app(&s, &receiver).await;
    let c = http_client();
    s.register(&c, "sam", PASSWORD).await;
    let (b, t) = app_session(&s, &app, "sam").await;
    // No hint: the user is asked, and nothing ends until **Sign out**.
    let url = reqwest::Url::parse_with_params(
        &s.url("/oauth/logout"),
        &[("client_id", app.id.as_str()), ("post_logout_redirect_uri", BYE), ("state", "st")],
    )
    .unwrap();
    let page = send(b.get(url.clone())).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains(">Sign out</button>"), "{}", page.text);
    assert!(
        page.header("content-security-policy").unwrap().contains("form-action 'self' http://127.0.0.1:9")
    );
    assert_eq!(refresh_app(&s, &app, t.str("refresh_token")).await.status, 200, "nothing ended yet");
    // A post from another site is refused.
    let mut form = hidden_fields(&page.text);
    let forged =
        send(b.post(s.url("/oauth/logout")).header("origin", "https://evil.example").form(&form)).await;
    assert_eq!(forged.status, 403, "{}", forged.text);
    // The user's own click ends the browser session and the app's, and goes back.
    let t = refresh_app(&s, &app, t.str("refresh_token")).await;
    form.retain(|(k, _)| k != "state");
    form.push(("state".into(), "st".into()));
    let done = send(b.post(s.url("/oauth/logout")).form(&form)).await;
    assert_eq!(done.status, 303, "{}", done.text);
    assert_eq!(location(&done), format!("{BYE}?state=st"));
    let refused = refresh_app(&s, &app, t.str("refresh_token")).await;
    assert_eq!(refused.json["error_reason"], "logged_out", "{}", refused.text);
    receiver.wait_for(1, WAIT).await;

    // A hint from another browser's session: this browser's user is asked.
    let (_, t2) = app_session(&s, &app, "sam").await;
    let (b3, _) = app_session(&s, &app, "sam").await;
    let url =
        reqwest::Url::parse_with_params(&s.url("/oauth/logout"), &[("id_token_hint", t2.str("id_token"))])
            .unwrap();
    let page = send(b3.get(url)).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains(">Sign out</button>"));
    assert_eq!(refresh_app(&s, &app, t2.str("refresh_token")).await.status, 200);
    // A leaked ID token signs no one out (a probe's finding): a browser without a session
    // ends nothing, and one signed in as someone else ends only its own session.
    let stranger = send(
        browser().get(
            reqwest::Url::parse_with_params(
                &s.url("/oauth/logout"),
                &[("id_token_hint", t2.str("id_token"))],
            )
            .unwrap(),
        ),
    )
    .await;
    assert_eq!(stranger.status, 200, "{}", stranger.text);
    assert!(stranger.text.contains("You are signed out"));
    s.register(&c, "other", PASSWORD).await;
    let (ob, _) = app_session(&s, &app, "other").await;
    let url =
        reqwest::Url::parse_with_params(&s.url("/oauth/logout"), &[("id_token_hint", t2.str("id_token"))])
            .unwrap();
    let page = send(ob.get(url)).await;
    let done = send(ob.post(s.url("/oauth/logout")).form(&hidden_fields(&page.text))).await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert!(done.header("clear-site-data").is_some());
    assert_eq!(send(ob.get(s.url("/account"))).await.status, 303, "its own session ended");
    let t2 = refresh_app(&s, &app, t2.str("refresh_token")).await;
    assert_eq!(t2.status, 200, "sam's session lives: {}", t2.text);
    let repeated = send(b3.get(format!("{}?state=a&state=b", s.url("/oauth/logout")))).await;
    assert_eq!(repeated.status, 400);
    // Without a browser session, no redirect and no hint: just the signed-out page.
    let plain = send(browser().get(s.url("/oauth/logout"))).await;
    assert_eq!(plain.status, 200);
    assert!(plain.text.contains("You are signed out"), "{}", plain.text);
}

#[tokio::test]
async fn bad_end_session_requests_get_a_page_and_never_a_redirect() {
    let s = TestServer::start().await;
    let receiver = LogoutReceiver::start().await;
    let app = listening_app(&s, &receiver).await;
    let other = register_app(&s, &["--post-logout-redirect-uri", "http://127.0.0.1:9/other-bye"]).await;
    let c = http_client();
    s.register(&c, "bad", PASSWORD).await;
    let (b, t) = app_session(&s, &app, "bad").await;
    let hint = t.str("id_token");
    let access = t.str("access_token");
    let tampered = format!("{}x", &hint[..hint.len() - 1]);
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("id_token_hint", "not a jwt")],
        vec![("id_token_hint", &tampered)],
        vec![("id_token_hint", access)],
        vec![("post_logout_redirect_uri", BYE)],
        vec![("client_id", "nobody"), ("post_logout_redirect_uri", BYE)],
        vec![("client_id", &app.id), ("post_logout_redirect_uri", "http://127.0.0.1:9/bye/")],
        vec![("client_id", &app.id), ("post_logout_redirect_uri", "http://127.0.0.1:9/other-bye")],
        vec![("id_token_hint", hint), ("client_id", &other.id)],
        vec![("id_token_hint", hint), ("post_logout_redirect_uri", "https://evil.example/")],
    ];
    for params in cases {
        let url = reqwest::Url::parse_with_params(&s.url("/oauth/logout"), &params).unwrap();
        let out = send(b.get(url)).await;
        assert_eq!(out.status, 400, "{params:?}: {}", out.text);
        assert!(out.header("location").is_none());
        assert!(out.text.contains("Invalid sign-out request"), "{}", out.text);
        let out = send(b.post(s.url("/oauth/logout")).form(&params)).await;
        assert_eq!(out.status, 400, "{params:?} posted: {}", out.text);
    }
    let long = "x".repeat(20_000);
    let out = send(b.get(format!("{}?state={long}", s.url("/oauth/logout")))).await;
    assert_eq!(out.status, 400);
    let out = send(b.get(format!("{}?client_id=%zz", s.url("/oauth/logout")))).await;
    assert_eq!(out.status, 400);
    // Nothing ended.
    assert_eq!(refresh_app(&s, &app, t.str("refresh_token")).await.status, 200);
    assert!(receiver.tokens().is_empty());
}

#[tokio::test]
async fn discovery_and_the_cli_describe_logout() {
    let s = TestServer::start().await;
    let d = send(http_client().get(s.url("/.well-known/openid-configuration"))).await;
    assert_eq!(d.json["end_session_endpoint"], format!("{}/oauth/logout", latchkey_testkit::ISSUER));
    assert_eq!(d.json["backchannel_logout_supported"], true);
    assert_eq!(d.json["backchannel_logout_session_supported"], true);
    for bad in [
        vec!["--backchannel-logout-uri", "http://app.example.com/bcl"],
        vec!["--backchannel-logout-uri", "https://app.example.com/bcl#x"],
        vec!["--post-logout-redirect-uri", "not a uri"],
        vec!["--backchannel-logout-session-required"],
    ] {
        let mut args = vec!["client", "add", "--name", "Bad"];
        args.extend(bad.iter());
        assert!(s.cli(&args, "").await.is_err(), "{bad:?}");
    }
    let receiver = LogoutReceiver::reserve();
    let app = listening_app(&s, &receiver).await;
    let list = s.cli(&["client", "list"], "").await.unwrap();
    let row: Value = list
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["client_id"] == app.id.as_str())
        .unwrap();
    assert_eq!(row["post_logout_redirect_uris"], json!([BYE]));
    assert_eq!(row["backchannel_logout_uri"], receiver.uri());
    assert_eq!(row["backchannel_logout_session_required"], true);
}

/// `n` sessions of `app` for `user`, all from one browser (consent is asked once).
async fn app_sessions(s: &TestServer, app: &App, user: &str, n: usize) -> Vec<latchkey_testkit::Answer> {
    let b = browser();
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        sessions.push(app_session_in(s, &b, app, user).await);
    }
    sessions
}

/// Two nodes on one PostgreSQL database race for every delivery: each token arrives once.
#[tokio::test]
async fn two_nodes_on_postgres_deliver_each_logout_token_once() {
    const SESSIONS: usize = 24;
    let db = latchkey_testkit::fresh_pg_database().await;
    let a = TestServer::start_on(Some(&db), |_| {}).await;
    let b = TestServer::start_on(Some(&db), |_| {}).await;
    let receiver = LogoutReceiver::start().await;
    let app = listening_app(&a, &receiver).await;
    a.register(&http_client(), "pat", PASSWORD).await;
    let sessions = app_sessions(&a, &app, "pat", SESSIONS).await;
    a.cli(&["user", "revoke-sessions", "pat"], "").await.unwrap();
    // The CLI's clock is the wall clock; the nodes' test clocks started earlier.
    a.clock.advance(Duration::from_secs(60));
    b.clock.advance(Duration::from_secs(60));
    let tokens = receiver.wait_for(SESSIONS, WAIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tokens = if receiver.tokens().len() > tokens.len() { receiver.tokens() } else { tokens };
    assert_eq!(tokens.len(), SESSIONS, "each delivery once");
    let sids: BTreeSet<String> =
        tokens.iter().map(|t| claims(t)["sid"].as_str().unwrap().to_owned()).collect();
    let expected: BTreeSet<String> = sessions.iter().map(sid_of).collect();
    assert_eq!(sids, expected);
    let sent = |s: &TestServer| {
        let url = s.url("/metrics");
        async move {
            let text = send(http_client().get(url)).await.text;
            text.lines()
                .find_map(|l| l.strip_prefix("latchkey_backchannel_logout_sent_total ")?.parse::<f64>().ok())
                .unwrap_or(0.0)
        }
    };
    assert_eq!(sent(&a).await + sent(&b).await, SESSIONS as f64);
}

/// Deliveries survive `kill -9`: a node killed while its tokens wait for a receiver that
/// is down sends each of them, once, after it restarts and the receiver is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_logout_tokens_queued_delivers_them_once_after_restart() {
    use latchkey_testkit::process::NodeProcess;
    const SESSIONS: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/bcl.db", dir.path().display());
    let mut receiver = LogoutReceiver::reserve();
    let s = TestServer::start_on(Some(&url), |_| {}).await;
    let app = listening_app(&s, &receiver).await;
    s.register(&http_client(), "kim", PASSWORD).await;
    let sessions = app_sessions(&s, &app, "kim", SESSIONS).await;
    s.stop().await;
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_latchkey-node"));
    let node = NodeProcess::spawn(bin, &url, &[]).await;
    // The CLI revokes while the node runs; the node's sender tries and fails each.
    let argv = ["latchkey", "--database-url", &url, "user", "revoke-sessions", "kim"];
    latchkey::cli::run_args(&argv, &mut std::io::empty(), &mut Vec::new()).await.unwrap();
    let started = std::time::Instant::now();
    loop {
        let text = send(http_client().get(node.url("/metrics"))).await.text;
        let retried = text
            .lines()
            .find_map(|l| l.strip_prefix("latchkey_backchannel_logout_retried_total ")?.parse::<f64>().ok())
            .unwrap_or(0.0);
        if retried >= SESSIONS as f64 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the node never tried");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.kill_9().await;
    receiver.launch().await;
    let node = NodeProcess::spawn(bin, &url, &[]).await;
    let tokens = receiver.wait_for(SESSIONS, Duration::from_secs(180)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tokens = if receiver.tokens().len() > tokens.len() { receiver.tokens() } else { tokens };
    let sids: BTreeSet<String> =
        tokens.iter().map(|t| claims(t)["sid"].as_str().unwrap().to_owned()).collect();
    assert_eq!(tokens.len(), SESSIONS, "each once: {:?}", node.log.lock().map(|l| l.clone()));
    assert_eq!(sids, sessions.iter().map(sid_of).collect::<BTreeSet<_>>());
}
