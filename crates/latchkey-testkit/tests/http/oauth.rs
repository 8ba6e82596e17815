//! The OAuth 2.1 / OpenID Connect provider over HTTP (SPEC 5.2): the code flow through the
//! pages with PKCE, remembered consent, `prompt`, every protocol error path (no redirect to
//! an unregistered URI), code reuse, the three grants, revocation, introspection,
//! userinfo, discovery, and an app's grant as a session. The pages themselves (CSRF,
//! headers, the account page) are tested in `pages.rs`.

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::{TestServer, http_client, send};
pub(crate) use latchkey_testkit::html::hidden_fields;

pub(crate) const REDIRECT: &str = "http://127.0.0.1:9/cb";
pub(crate) const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/// A registered app.
pub(crate) struct App {
    pub(crate) id: String,
    pub(crate) secret: Option<String>,
}

/// Registers an app through the CLI.
pub(crate) async fn register_app(s: &TestServer, extra: &[&str]) -> App {
    let mut args = vec!["client", "add", "--name", "Test App", "--redirect-uri", REDIRECT];
    args.extend_from_slice(extra);
    let out = s.cli(&args, "").await.unwrap();
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    App {
        id: v["client_id"].as_str().unwrap().to_owned(),
        secret: v["client_secret"].as_str().map(str::to_owned),
    }
}

/// A browser: keeps cookies, does not follow redirects.
pub(crate) fn browser() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

pub(crate) fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes()).as_ref())
}

/// The authorize URL for `app` with PKCE S256 and these extra parameters.
pub(crate) fn authorize_url(s: &TestServer, app: &App, extra: &[(&str, &str)]) -> String {
    let mut params = vec![
        ("response_type", "code".to_owned()),
        ("client_id", app.id.clone()),
        ("redirect_uri", REDIRECT.to_owned()),
        ("scope", "openid profile".to_owned()),
        ("state", "st-1".to_owned()),
        ("nonce", "n-1".to_owned()),
        ("code_challenge", challenge(VERIFIER)),
        ("code_challenge_method", "S256".to_owned()),
    ];
    for (k, v) in extra {
        params.retain(|(name, _)| name != k);
        if !v.is_empty() {
            params.push((k, (*v).to_owned()));
        }
    }
    let url = reqwest::Url::parse_with_params(&s.url("/oauth/authorize"), &params).unwrap();
    url.to_string()
}

pub(crate) fn location(a: &latchkey_testkit::Answer) -> String {
    a.header("location").unwrap_or_else(|| panic!("no Location: {} {}", a.status, a.text)).to_owned()
}

/// The query parameters of a redirect to the app.
pub(crate) fn query(url: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(url).unwrap().query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

pub(crate) fn param(url: &str, name: &str) -> Option<String> {
    query(url).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// Signs the browser in on the page it was sent to; returns where sign-in redirects.
pub(crate) async fn sign_in(s: &TestServer, b: &reqwest::Client, login_location: &str, user: &str) -> String {
    let page = send(b.get(s.url(login_location))).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("<label for=\"username\">Username</label>"));
    let mut form = hidden_fields(&page.text);
    form.push(("username".into(), user.into()));
    form.push(("password".into(), "correct horse battery".into()));
    let done = send(b.post(s.url("/login")).form(&form)).await;
    assert_eq!(done.status, 303, "{}", done.text);
    location(&done)
}

/// Answers the consent page at `url` with `decision`; returns the redirect to the app.
pub(crate) async fn consent(s: &TestServer, b: &reqwest::Client, url: &str, decision: &str) -> String {
    let page = send(b.get(s.url(url))).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains(">Allow</button>") && page.text.contains(">Deny</button>"));
    let mut form = hidden_fields(&page.text);
    form.push(("decision".into(), decision.into()));
    let done = send(b.post(s.url("/oauth/authorize")).form(&form)).await;
    assert_eq!(done.status, 303, "{}", done.text);
    location(&done)
}

/// The whole first authorization: sign-in page, consent Allow; returns the code.
pub(crate) async fn first_code(s: &TestServer, b: &reqwest::Client, app: &App, user: &str) -> String {
    let start = send(b.get(authorize_url(s, app, &[]))).await;
    assert_eq!(start.status, 303, "{}", start.text);
    let back = sign_in(s, b, &location(&start), user).await;
    assert!(back.starts_with("/oauth/authorize?"), "{back}");
    let to_app = consent(s, b, &back, "allow").await;
    assert!(to_app.starts_with(REDIRECT), "{to_app}");
    assert_eq!(param(&to_app, "state").as_deref(), Some("st-1"));
    assert_eq!(param(&to_app, "iss").as_deref(), Some(latchkey_testkit::ISSUER));
    param(&to_app, "code").unwrap()
}

/// `POST /oauth/token` with Basic client authentication when the app has a secret.
pub(crate) async fn token(s: &TestServer, app: &App, form: &[(&str, &str)]) -> latchkey_testkit::Answer {
    let mut req = http_client().post(s.url("/oauth/token"));
    let mut form: Vec<(&str, &str)> = form.to_vec();
    match &app.secret {
        Some(secret) => req = req.basic_auth(&app.id, Some(secret)),
        None => form.push(("client_id", &app.id)),
    }
    send(req.form(&form)).await
}

/// `POST /oauth/token` with `grant_type=refresh_token` for `app`.
pub(crate) async fn refresh_app(s: &TestServer, app: &App, refresh_token: &str) -> latchkey_testkit::Answer {
    token(s, app, &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)]).await
}

pub(crate) async fn exchange(s: &TestServer, app: &App, code: &str) -> latchkey_testkit::Answer {
    token(
        s,
        app,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await
}

fn claims(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn discovery_documents_advertise_what_is_served() {
    let s = TestServer::start().await;
    let c = http_client();
    for path in ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"] {
        let d = send(c.get(s.url(path))).await;
        assert_eq!(d.status, 200);
        let iss = latchkey_testkit::ISSUER;
        assert_eq!(d.json["issuer"], iss);
        assert_eq!(d.json["authorization_endpoint"], format!("{iss}/oauth/authorize"));
        assert_eq!(d.json["token_endpoint"], format!("{iss}/oauth/token"));
        assert_eq!(d.json["jwks_uri"], format!("{iss}/jwks.json"));
        assert_eq!(d.json["userinfo_endpoint"], format!("{iss}/oauth/userinfo"));
        assert_eq!(d.json["revocation_endpoint"], format!("{iss}/oauth/revoke"));
        assert_eq!(d.json["introspection_endpoint"], format!("{iss}/oauth/introspect"));
        assert_eq!(d.json["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(d.json["response_types_supported"], json!(["code"]));
        assert_eq!(
            d.json["grant_types_supported"],
            json!([
                "authorization_code",
                "refresh_token",
                "client_credentials",
                "urn:ietf:params:oauth:grant-type:device_code"
            ])
        );
        assert_eq!(d.json["end_session_endpoint"], format!("{iss}/oauth/logout"));
        assert_eq!(d.json["device_authorization_endpoint"], format!("{iss}/oauth/device_authorization"));
        assert_eq!(d.json["pushed_authorization_request_endpoint"], format!("{iss}/oauth/par"));
        assert_eq!(
            d.json["token_endpoint_auth_methods_supported"],
            json!(["client_secret_basic", "client_secret_post", "private_key_jwt", "none"])
        );
        assert_eq!(d.json["id_token_signing_alg_values_supported"], json!(["RS256"]));
    }
}

#[tokio::test]
async fn code_flow_with_pkce_consent_once_then_straight_back() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "alice", "correct horse battery").await;
    let app = register_app(&s, &[]).await;
    let b = browser();
    let code = first_code(&s, &b, &app, "alice").await;
    let t = exchange(&s, &app, &code).await;
    assert_eq!(t.status, 200, "{}", t.text);
    assert_eq!(t.json["token_type"], "Bearer");
    assert_eq!(t.json["scope"], "openid profile");
    assert!(t.json["refresh_token"].as_str().unwrap().starts_with("lkr_"));
    assert!(t.json.get("session_id").is_none());
    assert_eq!(t.header("cache-control"), Some("no-store"));
    let id = claims(t.str("id_token"));
    assert_eq!(id["iss"], latchkey_testkit::ISSUER);
    assert_eq!((&id["amr"], &id["acr"]), (&json!(["pwd"]), &json!("urn:latchkey:acr:pwd")), "SPEC 11");
    assert_eq!(id["aud"], app.id.as_str());
    assert_eq!(id["nonce"], "n-1");
    assert_eq!(id["preferred_username"], "alice");
    assert!(id["auth_time"].is_i64() && id["at_hash"].is_string() && id["sid"].is_string());
    let at = claims(t.str("access_token"));
    assert_eq!(at["client_id"], app.id.as_str());
    assert_eq!(at["sid"], id["sid"]);
    // Userinfo with the app's token.
    let ui = s.get_auth(&c, "/oauth/userinfo", t.str("access_token")).await;
    assert_eq!(ui.status, 200, "{}", ui.text);
    assert_eq!(ui.json, json!({"sub": id["sub"], "preferred_username": "alice"}));
    // The app's token cannot manage the account.
    let sessions = s.get_auth(&c, "/auth/sessions", t.str("access_token")).await;
    assert_eq!(sessions.status, 403, "{}", sessions.text);
    // Consent is remembered: the second authorization goes straight back, no page.
    let again = send(b.get(authorize_url(&s, &app, &[("state", "st-2")]))).await;
    assert_eq!(again.status, 302, "{}", again.text);
    let to_app = location(&again);
    assert!(to_app.starts_with(REDIRECT));
    assert_eq!(param(&to_app, "state").as_deref(), Some("st-2"));
    assert_eq!(exchange(&s, &app, &param(&to_app, "code").unwrap()).await.status, 200);
    // A wider scope asks again.
    let wider = app_with_offline(&s, &app, &b).await;
    assert_eq!(wider.status, 200, "{}", wider.text);
    assert!(wider.text.contains(">Allow</button>"));
}

async fn bob_sub(s: &TestServer) -> latchkey_core::UserId {
    s.store().find_user_by_username("bob").await.unwrap().unwrap().id
}

async fn app_with_offline(s: &TestServer, app: &App, b: &reqwest::Client) -> latchkey_testkit::Answer {
    send(b.get(authorize_url(s, app, &[("scope", "openid profile offline_access")]))).await
}

#[tokio::test]
async fn deny_redirects_with_user_denied_and_prompt_values_behave() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "bob", "correct horse battery").await;
    let app = register_app(&s, &[]).await;
    let b = browser();
    // prompt=none without a session: login_required, no page.
    let none = send(b.get(authorize_url(&s, &app, &[("prompt", "none")]))).await;
    assert_eq!(none.status, 302);
    assert_eq!(param(&location(&none), "error").as_deref(), Some("login_required"));
    assert_eq!(param(&location(&none), "state").as_deref(), Some("st-1"));
    // Sign in, then Deny.
    let start = send(b.get(authorize_url(&s, &app, &[]))).await;
    let back = sign_in(&s, &b, &location(&start), "bob").await;
    let denied = consent(&s, &b, &back, "deny").await;
    assert!(
        denied.starts_with(&format!(
            "{REDIRECT}?error=access_denied&error_reason=user_denied&error_description=The+user+denied+your+request&state=st-1"
        )),
        "SPEC 5.2 to the letter: {denied}"
    );
    assert_eq!(param(&denied, "state").as_deref(), Some("st-1"));
    // Signed in without consent, prompt=none: consent_required.
    let none = send(b.get(authorize_url(&s, &app, &[("prompt", "none")]))).await;
    assert_eq!(param(&location(&none), "error").as_deref(), Some("consent_required"));
    // prompt=consent shows the page even after consent; prompt=login asks for the password.
    let to_app = consent(&s, &b, &authorize_url(&s, &app, &[]).replacen(&s.base, "", 1), "allow").await;
    assert!(param(&to_app, "code").is_some());
    let asked = send(b.get(authorize_url(&s, &app, &[("prompt", "consent")]))).await;
    assert_eq!(asked.status, 200);
    assert!(asked.text.contains(">Allow</button>"));
    let relogin = send(b.get(authorize_url(&s, &app, &[("prompt", "login")]))).await;
    assert_eq!(relogin.status, 303);
    let devices_before = s
        .store()
        .list_live_sessions(&bob_sub(&s).await, latchkey_core::Clock::now(&*s.clock))
        .await
        .unwrap()
        .len();
    let back = sign_in(&s, &b, &location(&relogin), "bob").await;
    assert!(!back.contains("prompt=login"), "{back}");
    let devices_after = s
        .store()
        .list_live_sessions(&bob_sub(&s).await, latchkey_core::Clock::now(&*s.clock))
        .await
        .unwrap()
        .len();
    assert_eq!(devices_before, devices_after, "signing in again replaces the browser's session");
    let straight = send(b.get(s.url(&back))).await;
    assert_eq!(straight.status, 302, "{}", straight.text);
    assert!(param(&location(&straight), "code").is_some());
}

#[tokio::test]
async fn bad_authorization_requests_never_redirect_to_unregistered_uris() {
    let s = TestServer::start().await;
    let app = register_app(&s, &[]).await;
    let b = browser();
    // An error page, never a redirect: unknown client, missing or near-miss redirect URIs.
    let unknown = App { id: "no-such-client".into(), secret: None };
    for url in [
        authorize_url(&s, &unknown, &[]),
        authorize_url(&s, &app, &[("redirect_uri", "")]),
        authorize_url(&s, &app, &[("redirect_uri", "http://127.0.0.1:9/cb/")]),
        authorize_url(&s, &app, &[("redirect_uri", "http://127.0.0.1:9/CB")]),
        authorize_url(&s, &app, &[("redirect_uri", "http://127.0.0.1:9/cb?x=1")]),
        authorize_url(&s, &app, &[("redirect_uri", "https://127.0.0.1:9/cb")]),
        authorize_url(&s, &app, &[("redirect_uri", "http://evil.example/cb")]),
        authorize_url(&s, &app, &[("client_id", "")]),
        format!("{}&client_id={}", authorize_url(&s, &app, &[]), app.id),
    ] {
        let a = send(b.get(&url)).await;
        assert_eq!(a.status, 400, "{url}: {}", a.text);
        assert!(a.header("location").is_none(), "{url}");
        assert!(a.header("content-type").unwrap().starts_with("text/html"));
        assert!(!a.text.contains("code="), "{url}");
    }
    // Errors after the redirect URI is trusted go back to it, with state.
    for (extra, error) in [
        (vec![("code_challenge", "")], "invalid_request"),
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("code_challenge_method", "")], "invalid_request"),
        (vec![("code_challenge", "short")], "invalid_request"),
        (vec![("response_type", "token")], "unsupported_response_type"),
        (vec![("response_type", "")], "invalid_request"),
        (vec![("scope", "openid admin")], "invalid_scope"),
        (vec![("prompt", "none login")], "invalid_request"),
        (vec![("max_age", "-1")], "invalid_request"),
    ] {
        let a = send(b.get(authorize_url(&s, &app, &extra))).await;
        assert_eq!(a.status, 302, "{extra:?}: {}", a.text);
        let to = location(&a);
        assert!(to.starts_with(REDIRECT), "{to}");
        assert_eq!(param(&to, "error").as_deref(), Some(error), "{extra:?}");
        assert_eq!(param(&to, "state").as_deref(), Some("st-1"));
        assert!(param(&to, "code").is_none());
    }
    let twice = send(b.get(format!("{}&scope=openid", authorize_url(&s, &app, &[])))).await;
    assert_eq!(param(&location(&twice), "error").as_deref(), Some("invalid_request"));
    // Malformed queries: 4xx, never 5xx, never a code.
    for q in ["%", "client_id=%FF", "a=%zz", "&&&", "client_id"] {
        let a = send(b.get(s.url(&format!("/oauth/authorize?{q}")))).await;
        assert!((400..500).contains(&a.status), "{q}: {}", a.status);
    }
}

#[tokio::test]
async fn token_endpoint_errors() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "carol", "correct horse battery").await;
    let app = register_app(&s, &[]).await;
    let other = register_app(&s, &[]).await;
    let b = browser();
    let code = first_code(&s, &b, &app, "carol").await;
    let grant = |code: &str, verifier: &str, redirect: &str| {
        vec![
            ("grant_type".to_owned(), "authorization_code".to_owned()),
            ("code".to_owned(), code.to_owned()),
            ("redirect_uri".to_owned(), redirect.to_owned()),
            ("code_verifier".to_owned(), verifier.to_owned()),
        ]
    };
    let post = |app: &App, form: Vec<(String, String)>| {
        let req = http_client().post(s.url("/oauth/token")).basic_auth(&app.id, app.secret.as_deref());
        async move { send(req.form(&form)).await }
    };
    // Wrong secret: invalid_client with a Basic challenge.
    let wrong = App { id: app.id.clone(), secret: Some("lks_wrong".into()) };
    let a = post(&wrong, grant(&code, VERIFIER, REDIRECT)).await;
    assert_eq!((a.status, a.json["error"].as_str()), (401, Some("invalid_client")));
    assert!(a.header("www-authenticate").unwrap().starts_with("Basic"));
    // Unsupported grant type, missing grant type.
    let a = post(&app, vec![("grant_type".into(), "password".into())]).await;
    assert_eq!((a.status, a.json["error"].as_str()), (400, Some("unsupported_grant_type")));
    let a = post(&app, vec![]).await;
    assert_eq!((a.status, a.json["error"].as_str()), (400, Some("invalid_request")));
    // Not a form.
    let a = send(
        http_client()
            .post(s.url("/oauth/token"))
            .basic_auth(&app.id, app.secret.as_deref())
            .json(&json!({"grant_type": "client_credentials"})),
    )
    .await;
    assert_eq!((a.status, a.json["error"].as_str()), (400, Some("invalid_request")));
    // A code spent by a failed redemption (verifier mismatch) cannot be used again.
    let bad = post(&app, grant(&code, &VERIFIER.replace('d', "e"), REDIRECT)).await;
    assert_eq!((bad.status, bad.json["error"].as_str()), (400, Some("invalid_grant")), "{}", bad.text);
    let after = post(&app, grant(&code, VERIFIER, REDIRECT)).await;
    assert_eq!(after.json["error"], "invalid_grant");
    // Each failure on a fresh code: redirect_uri mismatch, another client, no verifier.
    let next_code = || async {
        let a = send(b.get(authorize_url(&s, &app, &[]))).await;
        param(&location(&a), "code").unwrap()
    };
    let a = post(&app, grant(&next_code().await, VERIFIER, "http://127.0.0.1:9/other")).await;
    assert_eq!(a.json["error"], "invalid_grant", "{}", a.text);
    let a = post(&other, grant(&next_code().await, VERIFIER, REDIRECT)).await;
    assert_eq!(a.json["error"], "invalid_grant", "{}", a.text);
    let mut no_verifier = grant(&next_code().await, VERIFIER, REDIRECT);
    no_verifier.retain(|(k, _)| k != "code_verifier");
    assert_eq!(post(&app, no_verifier).await.json["error"], "invalid_request");
    // Duplicate parameters.
    let mut dup = grant(&next_code().await, VERIFIER, REDIRECT);
    dup.push(("code".into(), "lkc_x".into()));
    assert_eq!(post(&app, dup).await.json["error"], "invalid_request");
    // Code reuse: the second use fails and revokes what the first produced.
    let reused = next_code().await;
    let first = post(&app, grant(&reused, VERIFIER, REDIRECT)).await;
    assert_eq!(first.status, 200);
    let second = post(&app, grant(&reused, VERIFIER, REDIRECT)).await;
    assert_eq!(second.json["error"], "invalid_grant");
    let refresh = refresh_app(&s, &app, first.str("refresh_token")).await;
    assert_eq!(refresh.json["error_reason"], "reuse_detected", "{}", refresh.text);
    assert_eq!(s.get_auth(&c, "/oauth/userinfo", first.str("access_token")).await.status, 401);
    // Code expiry (60 s).
    let late = next_code().await;
    s.clock.advance(std::time::Duration::from_secs(61));
    assert_eq!(post(&app, grant(&late, VERIFIER, REDIRECT)).await.json["error"], "invalid_grant");
    // Malformed bodies never 5xx, on every endpoint apps post to.
    for path in ["/oauth/token", "/oauth/revoke", "/oauth/introspect"] {
        for body in ["%", "grant_type=%FF", "a", "=&=", "grant_type=authorization_code&code=%00", "token=%"] {
            let a = send(
                http_client()
                    .post(s.url(path))
                    .basic_auth(&app.id, app.secret.as_deref())
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body),
            )
            .await;
            assert!((400..500).contains(&a.status), "{path} {body}: {} {}", a.status, a.text);
            assert!(a.json["error"].is_string(), "{path} {body}: a JSON error");
        }
    }
}

#[tokio::test]
async fn refresh_rotation_revocation_and_introspection_for_apps() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "dave", "correct horse battery").await;
    let app = register_app(&s, &[]).await;
    let public = register_app(&s, &["--public"]).await;
    let resource = register_app(&s, &["--grant-types", "client_credentials", "--scopes", "notes:read"]).await;
    let inspector =
        register_app(&s, &["--grant-types", "client_credentials", "--scopes", "introspect"]).await;
    let b = browser();
    let t = exchange(&s, &app, &first_code(&s, &b, &app, "dave").await).await;
    let r1 = t.str("refresh_token").to_owned();
    let t2 = refresh_app(&s, &app, &r1).await;
    assert_eq!(t2.status, 200, "{}", t2.text);
    assert_ne!(t2.str("refresh_token"), r1);
    // Another client cannot use the app's refresh token.
    let stolen = refresh_app(&s, &resource, t2.str("refresh_token")).await;
    assert_eq!(stolen.json["error"], "unauthorized_client");
    // A public client authenticates with PKCE only.
    let pt = exchange(&s, &public, &first_code(&s, &browser(), &public, "dave").await).await;
    assert_eq!(pt.status, 200, "{}", pt.text);
    let cross = refresh_app(&s, &public, t2.str("refresh_token")).await;
    assert_eq!(cross.json["error_reason"], "unknown_token", "{}", cross.text);
    // Introspection: a confidential client with the scope `introspect` (others see only
    // their own tokens); unauthenticated is a 401.
    let introspect = |token: &str| {
        let req = http_client()
            .post(s.url("/oauth/introspect"))
            .basic_auth(&inspector.id, inspector.secret.as_deref());
        let form = vec![("token".to_owned(), token.to_owned())];
        async move { send(req.form(&form)).await }
    };
    let at = introspect(t2.str("access_token")).await;
    assert_eq!(at.json["active"], true, "{}", at.text);
    assert_eq!(at.json["client_id"], app.id.as_str());
    assert_eq!(at.json["username"], "dave");
    let rt = introspect(t2.str("refresh_token")).await;
    assert_eq!(rt.json["active"], true, "{}", rt.text);
    assert_eq!(introspect(&r1).await.json, json!({"active": false}), "a retired refresh token");
    assert_eq!(introspect("garbage").await.json, json!({"active": false}));
    let anon =
        send(http_client().post(s.url("/oauth/introspect")).form(&[("token", t2.str("access_token"))])).await;
    assert_eq!(anon.status, 401);
    let by_public = send(
        http_client()
            .post(s.url("/oauth/introspect"))
            .form(&[("token", t2.str("access_token")), ("client_id", &public.id)]),
    )
    .await;
    assert_eq!(by_public.status, 401);
    // Revoking an access token: introspection says inactive; the feed carries token_revoked.
    let revoke = |app: &App, token: &str| {
        let req = http_client().post(s.url("/oauth/revoke")).basic_auth(&app.id, app.secret.as_deref());
        let form = vec![("token".to_owned(), token.to_owned())];
        async move { send(req.form(&form)).await }
    };
    assert_eq!(revoke(&app, t2.str("access_token")).await.status, 200);
    assert_eq!(introspect(t2.str("access_token")).await.json["active"], false);
    // Revoking an unknown token, or another client's, is a 200 that changes nothing.
    assert_eq!(revoke(&app, "lkr_unknown").await.status, 200);
    assert_eq!(revoke(&resource, t2.str("refresh_token")).await.status, 200);
    assert_eq!(introspect(t2.str("refresh_token")).await.json["active"], true);
    // Revoking the refresh token revokes the session.
    assert_eq!(revoke(&app, t2.str("refresh_token")).await.status, 200);
    assert_eq!(introspect(t2.str("refresh_token")).await.json["active"], false);
    let dead = refresh_app(&s, &app, t2.str("refresh_token")).await;
    assert_eq!(dead.json["error_reason"], "logged_out", "{}", dead.text);
    // client_credentials: no refresh token, no session, scoped.
    let cc = token(&s, &resource, &[("grant_type", "client_credentials")]).await;
    assert_eq!(cc.status, 200, "{}", cc.text);
    assert!(cc.json.get("refresh_token").is_none() && cc.json.get("id_token").is_none());
    assert_eq!(cc.json["scope"], "notes:read");
    let cclaims = claims(cc.str("access_token"));
    assert_eq!(cclaims["sub"], resource.id.as_str());
    assert!(cclaims.get("sid").is_none());
    assert_eq!(
        token(&s, &resource, &[("grant_type", "client_credentials"), ("scope", "openid")]).await.json["error"],
        "invalid_scope"
    );
    assert_eq!(
        token(&s, &app, &[("grant_type", "client_credentials")]).await.json["error"],
        "unauthorized_client"
    );
    assert_eq!(introspect(cc.str("access_token")).await.json["active"], true);
    // Userinfo needs openid.
    assert_eq!(s.get_auth(&c, "/oauth/userinfo", cc.str("access_token")).await.status, 401);
    let feed =
        send(c.get(s.url("/revocations?after=0")).basic_auth(&resource.id, resource.secret.as_deref())).await;
    assert_eq!(feed.status, 403, "a client without revocations:read");
}

/// Noticed in an earlier stop: an app registered with no scopes skipped the consent page
/// (no consent read as an empty one), and its code still redeemed after the user
/// disconnected it. It is asked once like any app, and its code dies with the consent.
#[tokio::test]
async fn an_app_asking_for_no_scope_still_needs_and_keeps_consent() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "nia", "correct horse battery").await;
    let app = register_app(&s, &["--scopes", ""]).await;
    let b = browser();
    let start = send(b.get(authorize_url(&s, &app, &[("scope", ""), ("nonce", "")]))).await;
    assert_eq!(start.status, 303, "{}", start.text);
    let back = sign_in(&s, &b, &location(&start), "nia").await;
    assert!(back.starts_with("/oauth/authorize?"), "the consent page, not straight back: {back}");
    let to_app = consent(&s, &b, &back, "allow").await;
    let code = param(&to_app, "code").expect("a code after Allow");
    // The user disconnects the app before it redeems the code.
    let page = send(b.get(s.url("/account"))).await;
    let csrf = hidden_fields(&page.text).into_iter().find(|(k, _)| k == "csrf").unwrap().1;
    let done =
        send(b.post(s.url(&format!("/account/apps/{}/revoke", app.id))).form(&[("csrf", &csrf)])).await;
    assert_eq!(done.status, 303, "{}", done.text);
    let t = exchange(&s, &app, &code).await;
    assert_eq!((t.status, t.json["error"].as_str()), (400, Some("invalid_grant")), "{}", t.text);
    // Asked again, it is asked again.
    let again = send(b.get(authorize_url(&s, &app, &[("scope", ""), ("nonce", "")]))).await;
    assert_eq!(again.status, 200, "the consent page: {}", again.text);
    assert!(again.text.contains(">Allow</button>"));
}

#[tokio::test]
async fn an_apps_grant_is_a_session_the_user_can_revoke() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "erin", "correct horse battery").await;
    let app = register_app(&s, &[]).await;
    let b = browser();
    let t = exchange(&s, &app, &first_code(&s, &b, &app, "erin").await).await;
    // The account page lists the app (and the browser's own session as a device).
    let page = send(b.get(s.url("/account"))).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("Test App"), "{}", page.text);
    assert!(page.text.contains(&format!("/account/apps/{}/revoke", app.id)));
    let csrf = hidden_fields(&page.text).into_iter().find(|(k, _)| k == "csrf").unwrap().1;
    // Revoke it: the app's tokens die, the feed says so, consent is forgotten.
    let done =
        send(b.post(s.url(&format!("/account/apps/{}/revoke", app.id))).form(&[("csrf", &csrf)])).await;
    assert_eq!(done.status, 303, "{}", done.text);
    let refused = refresh_app(&s, &app, t.str("refresh_token")).await;
    assert_eq!(refused.json["error_reason"], "revoked_by_user", "{}", refused.text);
    let (fid, fsecret) = crate::feed::feed_client(&s, "revocations:read").await;
    let feed = send(c.get(s.url("/revocations?after=0")).basic_auth(&fid, Some(&fsecret))).await;
    let sid = claims(t.str("access_token"))["sid"].clone();
    assert!(feed.json["events"].as_array().unwrap().iter().any(|e| e["sid"] == sid), "{}", feed.text);
    let again = send(b.get(authorize_url(&s, &app, &[]))).await;
    assert_eq!(again.status, 200, "consent is asked again");
    // Sign out ends the browser session.
    let page = send(b.get(s.url("/account"))).await;
    let csrf = hidden_fields(&page.text).into_iter().find(|(k, _)| k == "csrf").unwrap().1;
    let out = send(b.post(s.url("/logout")).form(&[("csrf", &csrf)])).await;
    assert_eq!(out.status, 200);
    assert!(out.header("clear-site-data").is_some());
    assert_eq!(send(b.get(s.url("/account"))).await.status, 303);
}

#[tokio::test]
async fn parallel_redemptions_of_one_code_yield_one_answer_and_revoke_it() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "hana", "correct horse battery").await;
    let app = register_app(&s, &[]).await;
    let b = browser();
    let mut code = first_code(&s, &b, &app, "hana").await;
    for round in 0..20 {
        let answers = futures::future::join_all((0..8).map(|_| exchange(&s, &app, &code))).await;
        let winners: Vec<_> = answers.iter().filter(|a| a.status == 200).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one redemption succeeds");
        assert!(answers.iter().filter(|a| a.status != 200).all(|a| a.json["error"] == "invalid_grant"));
        // The other seven were reuse: what the winner got is revoked.
        let r = token(
            &s,
            &app,
            &[("grant_type", "refresh_token"), ("refresh_token", winners[0].str("refresh_token"))],
        )
        .await;
        assert_eq!(r.json["error_reason"], "reuse_detected", "round {round}: {}", r.text);
        let again = send(b.get(authorize_url(&s, &app, &[]))).await;
        code = param(&location(&again), "code").unwrap();
    }
}

#[tokio::test]
async fn removing_an_app_ends_what_it_held_and_revoked_access_tokens_stop_at_userinfo() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "lee", "correct horse battery").await;
    let app = register_app(&s, &[]).await;
    let b = browser();
    let t = exchange(&s, &app, &first_code(&s, &b, &app, "lee").await).await;
    // A revoked access token no longer answers at userinfo.
    let t2 = refresh_app(&s, &app, t.str("refresh_token")).await;
    assert_eq!(s.get_auth(&c, "/oauth/userinfo", t2.str("access_token")).await.status, 200);
    let revoke = send(
        http_client()
            .post(s.url("/oauth/revoke"))
            .basic_auth(&app.id, app.secret.as_deref())
            .form(&[("token", t2.str("access_token"))]),
    )
    .await;
    assert_eq!(revoke.status, 200);
    let ui = s.get_auth(&c, "/oauth/userinfo", t2.str("access_token")).await;
    assert_eq!((ui.status, ui.json["error_reason"].as_str()), (401, Some("revoked")));
    // A scope beyond the grant is refused before the refresh token rotates.
    let wide = token(
        &s,
        &app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", t2.str("refresh_token")),
            ("scope", "openid admin"),
        ],
    )
    .await;
    assert_eq!(wide.json["error"], "invalid_scope");
    let still = refresh_app(&s, &app, t2.str("refresh_token")).await;
    assert_eq!(still.status, 200, "the refused request rotated nothing: {}", still.text);
    // Removing the client revokes its sessions and forgets consent.
    s.cli(&["client", "remove", &app.id], "").await.unwrap();
    let account = send(b.get(s.url("/account"))).await;
    assert!(!account.text.contains("Test App"), "no longer connected");
    let me = s.get_auth(&c, "/oauth/userinfo", still.str("access_token")).await;
    assert_eq!(me.status, 401);
    let (fid, fsecret) = crate::feed::feed_client(&s, "revocations:read").await;
    let feed = send(c.get(s.url("/revocations?after=0")).basic_auth(&fid, Some(&fsecret))).await;
    let sid = claims(still.str("access_token"))["sid"].clone();
    assert!(feed.json["events"].as_array().unwrap().iter().any(|e| e["sid"] == sid));
}
