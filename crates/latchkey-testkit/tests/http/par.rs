//! Pushed authorization requests over HTTP (RFC 9126, SPEC 13): the push is checked and
//! answered `201`, the browser goes through sign-in and consent with `client_id` and
//! `request_uri` only, the code it gets spends the request (a replay, or another browser,
//! gets an error page), `require_par` refuses requests sent the old way, and the push
//! refuses what `/oauth/authorize` would.

use std::time::Duration;

use crate::oauth::{
    App, REDIRECT, VERIFIER, browser, challenge, consent, exchange, location, param, register_app, sign_in,
};
use crate::{TestServer, http_client, send};

const PASSWORD: &str = "correct horse battery";

/// `POST /oauth/par` for `app` with the usual code-flow parameters, changed by `extra`.
async fn push(s: &TestServer, app: &App, extra: &[(&str, &str)]) -> latchkey_testkit::Answer {
    let challenge = challenge(VERIFIER);
    let mut form = vec![
        ("response_type", "code"),
        ("redirect_uri", REDIRECT),
        ("scope", "openid profile"),
        ("state", "par-state"),
        ("nonce", "par-nonce"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    for (k, v) in extra {
        form.retain(|(name, _)| name != k);
        if !v.is_empty() {
            form.push((k, v));
        }
    }
    let mut req = http_client().post(s.url("/oauth/par"));
    match &app.secret {
        Some(secret) => req = req.basic_auth(&app.id, Some(secret)),
        None => form.push(("client_id", &app.id)),
    }
    send(req.form(&form)).await
}

fn authorize_with(s: &TestServer, app: &App, request_uri: &str) -> String {
    reqwest::Url::parse_with_params(
        &s.url("/oauth/authorize"),
        &[("client_id", app.id.as_str()), ("request_uri", request_uri)],
    )
    .unwrap()
    .to_string()
}

#[tokio::test]
async fn a_pushed_request_signs_in_once_in_one_browser() {
    let s = TestServer::start().await;
    s.register(&http_client(), "paula", PASSWORD).await;
    let app = register_app(&s, &["--require-par"]).await;
    let pushed = push(&s, &app, &[]).await;
    assert_eq!(pushed.status, 201, "{}", pushed.text);
    assert_eq!(pushed.header("cache-control"), Some("no-store"));
    assert_eq!(pushed.json["expires_in"], 60);
    let request_uri = pushed.str("request_uri").to_owned();
    assert!(request_uri.starts_with("urn:ietf:params:oauth:request_uri:"), "{request_uri}");

    let b = browser();
    let start = send(b.get(authorize_with(&s, &app, &request_uri))).await;
    assert_eq!(start.status, 303, "{}", start.text);
    let login = location(&start);
    assert!(
        login.contains("request_uri") && !login.contains("code_challenge"),
        "only the reference travels: {login}"
    );
    // Another browser cannot use it once this one has.
    let thief = send(browser().get(authorize_with(&s, &app, &request_uri))).await;
    assert_eq!(thief.status, 400, "{}", thief.text);
    assert!(thief.header("location").is_none());

    // Sign-in takes longer than the 60 s a request waits for its first browser: fine.
    s.clock.advance(Duration::from_secs(120));
    let back = sign_in(&s, &b, &login, "paula").await;
    let to_app = consent(&s, &b, &back, "allow").await;
    assert!(to_app.starts_with(REDIRECT), "{to_app}");
    assert_eq!(param(&to_app, "state").as_deref(), Some("par-state"), "the pushed state comes back");
    let tokens = exchange(&s, &app, &param(&to_app, "code").unwrap()).await;
    assert_eq!(tokens.status, 200, "{}", tokens.text);

    // Spent: the same request_uri again is an error page, even in the same browser.
    let again = send(b.get(authorize_with(&s, &app, &request_uri))).await;
    assert_eq!(again.status, 400, "{}", again.text);
    assert!(again.header("location").is_none());

    // require_par: the old way is refused with a page, never a redirect.
    let plain = send(b.get(crate::oauth::authorize_url(&s, &app, &[]))).await;
    assert_eq!(plain.status, 400, "{}", plain.text);
    assert!(plain.text.contains("must push"), "{}", plain.text);
    assert!(plain.header("location").is_none());
}

#[tokio::test]
async fn pushes_are_checked_authenticated_and_expire() {
    let s = TestServer::start().await;
    let app = register_app(&s, &[]).await;
    let public = register_app(&s, &["--public"]).await;
    let other = register_app(&s, &[]).await;
    for (extra, error) in [
        (vec![("redirect_uri", "http://127.0.0.1:9/elsewhere")], "invalid_request"),
        (vec![("code_challenge", "")], "invalid_request"),
        (vec![("scope", "openid admin")], "invalid_scope"),
        (vec![("response_type", "token")], "invalid_request"),
        (vec![("request_uri", "urn:ietf:params:oauth:request_uri:x")], "invalid_request"),
        (vec![("client_id", other.id.as_str())], "invalid_request"),
    ] {
        let r = push(&s, &app, &extra).await;
        assert_eq!((r.status, r.json["error"].as_str()), (400, Some(error)), "{extra:?}: {}", r.text);
    }
    let unauthenticated =
        send(http_client().post(s.url("/oauth/par")).form(&[("client_id", app.id.as_str())])).await;
    assert_eq!(unauthenticated.status, 401, "{}", unauthenticated.text);
    let wrong = send(
        http_client()
            .post(s.url("/oauth/par"))
            .basic_auth(&app.id, Some("lks_wrong"))
            .form(&[("response_type", "code")]),
    )
    .await;
    assert_eq!(wrong.status, 401);
    let twice = send(
        http_client()
            .post(s.url("/oauth/par"))
            .basic_auth(&app.id, app.secret.as_deref())
            .body("response_type=code&response_type=code")
            .header("content-type", "application/x-www-form-urlencoded"),
    )
    .await;
    assert_eq!(twice.json["error"], "invalid_request");
    // A public client pushes too (RFC 9126 §2: with its client_id).
    assert_eq!(push(&s, &public, &[]).await.status, 201);

    // Unused for 60 s: gone. With another client's id: unknown.
    let pushed = push(&s, &app, &[]).await;
    let uri = pushed.str("request_uri").to_owned();
    let wrong_client = send(browser().get(authorize_with(&s, &other, &uri))).await;
    assert_eq!(wrong_client.status, 400, "{}", wrong_client.text);
    s.clock.advance(Duration::from_secs(61));
    let late = send(browser().get(authorize_with(&s, &app, &uri))).await;
    assert_eq!(late.status, 400, "{}", late.text);
    let d = send(http_client().get(s.url("/.well-known/openid-configuration"))).await;
    assert_eq!(
        d.json["pushed_authorization_request_endpoint"],
        format!("{}/oauth/par", latchkey_testkit::ISSUER)
    );
}

/// RFC 9449 §10.1: a DPoP proof with the push binds the code to its key, as `dpop_jkt`
/// would; a `dpop_jkt` naming another key is refused, and so is a bad proof.
#[tokio::test]
async fn a_dpop_proof_with_the_push_binds_the_code() {
    use latchkey_dpop::ProofKey;
    let s = TestServer::start().await;
    s.register(&http_client(), "pia", PASSWORD).await;
    let app = register_app(&s, &["--public"]).await;
    let key = ProofKey::generate_es256().unwrap();
    let other = ProofKey::generate_es256().unwrap();
    let now = || latchkey_core::Clock::now(s.clock.as_ref()).0;
    let proof = |k: &ProofKey, path: &str| {
        k.proof("POST", &format!("{}{path}", latchkey_testkit::ISSUER), now(), None, None).unwrap()
    };
    let pushed_with = |dpop: String, extra: Vec<(&'static str, String)>| {
        let s = &s;
        let app = &app;
        async move {
            let challenge = challenge(VERIFIER);
            let mut form: Vec<(&str, String)> = vec![
                ("client_id", app.id.clone()),
                ("response_type", "code".into()),
                ("redirect_uri", REDIRECT.into()),
                ("scope", "openid".into()),
                ("code_challenge", challenge),
                ("code_challenge_method", "S256".into()),
            ];
            form.extend(extra);
            send(http_client().post(s.url("/oauth/par")).header("dpop", dpop).form(&form)).await
        }
    };
    let garbage = pushed_with("garbage".into(), vec![]).await;
    assert_eq!(
        (garbage.status, garbage.json["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "{}",
        garbage.text
    );
    let mismatch =
        pushed_with(proof(&key, "/oauth/par"), vec![("dpop_jkt", other.thumbprint().as_str().to_owned())])
            .await;
    assert_eq!(mismatch.json["error"], "invalid_request", "{}", mismatch.text);
    let pushed = pushed_with(proof(&key, "/oauth/par"), vec![]).await;
    assert_eq!(pushed.status, 201, "{}", pushed.text);

    let b = browser();
    let start = send(b.get(authorize_with(&s, &app, pushed.str("request_uri")))).await;
    let back = sign_in(&s, &b, &location(&start), "pia").await;
    let code = param(&consent(&s, &b, &back, "allow").await, "code").unwrap();
    let redeem = |k: &ProofKey| {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("client_id", app.id.as_str()),
        ];
        http_client().post(s.url("/oauth/token")).header("dpop", proof(k, "/oauth/token")).form(&form)
    };
    let stolen = send(redeem(&other)).await;
    assert_eq!(stolen.json["error"], "invalid_grant", "another key: {}", stolen.text);
}

/// The push answers with the authorization endpoint's error codes (RFC 9126 §2.3).
#[tokio::test]
async fn a_pushed_unregistered_resource_is_invalid_target() {
    let s = TestServer::start().await;
    let app = register_app(&s, &["--resource", "https://api.example/notes"]).await;
    let r = push(&s, &app, &[("resource", "https://api.example/files")]).await;
    assert_eq!((r.status, r.json["error"].as_str()), (400, Some("invalid_target")), "{}", r.text);
    assert_eq!(push(&s, &app, &[("resource", "https://api.example/notes")]).await.status, 201);
}

/// The browser cannot weaken a pushed request (a probe's finding): a `prompt` it adds is
/// ignored, so a pushed `prompt=login` still asks for the password, met by a sign-in
/// after the push; a repeated parameter or a request object is refused.
#[tokio::test]
async fn the_browser_cannot_weaken_a_pushed_request() {
    let s = TestServer::start().await;
    s.register(&http_client(), "wes", PASSWORD).await;
    let app = register_app(&s, &["--require-par"]).await;
    // Signed in and consented once already.
    let b = browser();
    let first = push(&s, &app, &[]).await;
    let start = send(b.get(authorize_with(&s, &app, first.str("request_uri")))).await;
    let back = sign_in(&s, &b, &location(&start), "wes").await;
    consent(&s, &b, &back, "allow").await;

    s.clock.advance(Duration::from_secs(5));
    let pushed = push(&s, &app, &[("prompt", "login")]).await;
    let uri = pushed.str("request_uri").to_owned();
    for extra in ["", "none", "select_account"] {
        let url = format!("{}&prompt={extra}", authorize_with(&s, &app, &uri));
        let r = send(b.get(&url)).await;
        assert_eq!(r.status, 303, "prompt={extra}: {}", r.text);
        assert!(location(&r).starts_with("/login"), "the pushed prompt=login stands: {}", location(&r));
    }
    let start = send(b.get(authorize_with(&s, &app, &uri))).await;
    let back = sign_in(&s, &b, &location(&start), "wes").await;
    let to_app = send(b.get(s.url(&back))).await;
    assert_eq!(to_app.status, 302, "a sign-in since the push meets it: {}", to_app.text);
    assert!(param(&location(&to_app), "code").is_some());

    let twice = format!(
        "{}&request_uri=urn%3Aietf%3Aparams%3Aoauth%3Arequest_uri%3Ax",
        authorize_with(&s, &app, &uri)
    );
    assert_eq!(send(b.get(&twice)).await.status, 400, "a repeated parameter");
    let plain_app = register_app(&s, &[]).await;
    let with_object =
        send(b.get(crate::oauth::authorize_url(&s, &plain_app, &[("request", "eyJhbGciOiJub25lIn0.e30.")])))
            .await;
    let to = location(&with_object);
    assert_eq!(param(&to, "error").as_deref(), Some("request_not_supported"), "{to}");
}
