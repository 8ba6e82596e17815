//! The device authorization grant over HTTP (RFC 8628, SPEC 13): the endpoint's answer,
//! `/device` in a cookie-keeping client (the same pages in Chromium are in `browser.rs`),
//! every polling answer (`authorization_pending`, `slow_down`, `access_denied`,
//! `expired_token`, single use), throttled guessing, and which clients may use it.

use std::time::Duration;

use crate::oauth::{App, browser, hidden_fields, location, register_app, sign_in};
use crate::{TestServer, http_client, send};

pub(crate) const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const PASSWORD: &str = "correct horse battery";

/// A device app: public unless `confidential`.
pub(crate) async fn device_app(s: &TestServer, confidential: bool) -> App {
    let grants = format!("{DEVICE_GRANT},refresh_token");
    let mut args = vec!["--grant-types", grants.as_str(), "--scopes", "openid profile"];
    if !confidential {
        args.push("--public");
    }
    register_app(s, &args).await
}

/// `POST /oauth/device_authorization`.
pub(crate) async fn ask(s: &TestServer, app: &App, extra: &[(&str, &str)]) -> latchkey_testkit::Answer {
    let mut req = http_client().post(s.url("/oauth/device_authorization"));
    let mut form: Vec<(&str, &str)> = extra.to_vec();
    match &app.secret {
        Some(secret) => req = req.basic_auth(&app.id, Some(secret)),
        None => form.push(("client_id", &app.id)),
    }
    send(req.form(&form)).await
}

/// One poll of the token endpoint.
pub(crate) async fn poll(s: &TestServer, app: &App, device_code: &str) -> latchkey_testkit::Answer {
    crate::oauth::token(s, app, &[("grant_type", DEVICE_GRANT), ("device_code", device_code)]).await
}

/// Types `code` at `/device` in signed-in browser `b`; the answer (the consent page, or
/// the form again with an error).
async fn type_code(s: &TestServer, b: &reqwest::Client, code: &str) -> latchkey_testkit::Answer {
    let page = send(b.get(s.url("/device"))).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let mut form = hidden_fields(&page.text);
    form.push(("user_code".into(), code.into()));
    send(b.post(s.url("/device")).form(&form)).await
}

/// Answers the consent page with `decision`.
async fn decide(
    s: &TestServer,
    b: &reqwest::Client,
    consent: &latchkey_testkit::Answer,
    decision: &str,
) -> String {
    assert_eq!(consent.status, 200, "{}", consent.text);
    assert!(
        consent.text.contains(">Allow</button>") && consent.text.contains(">Deny</button>"),
        "{}",
        consent.text
    );
    let mut form = hidden_fields(&consent.text);
    form.push(("decision".into(), decision.into()));
    let done = send(b.post(s.url("/device")).form(&form)).await;
    assert_eq!(done.status, 200, "{}", done.text);
    done.text
}

/// A browser signed in as `user` (via the device page's own redirect to sign-in).
async fn signed_in_browser(s: &TestServer, user: &str) -> reqwest::Client {
    let b = browser();
    let start = send(b.get(s.url("/device?user_code=BCDF-GHJK"))).await;
    assert_eq!(start.status, 303, "{}", start.text);
    let login = location(&start);
    assert!(login.starts_with("/login?return_to=%2Fdevice%3Fuser_code%3DBCDF-GHJK"), "{login}");
    let back = sign_in(s, &b, &login, user).await;
    assert_eq!(back, "/device?user_code=BCDF-GHJK", "the code survives sign-in");
    let page = send(b.get(s.url(&back))).await;
    assert!(page.text.contains("value=\"BCDF-GHJK\""), "prefilled: {}", page.text);
    assert!(
        page.text.contains("<label for=\"user_code\">Code</label>")
            && page.text.contains(">Continue</button>")
    );
    b
}

#[tokio::test]
async fn a_device_polls_while_the_user_allows_it_then_gets_tokens_once() {
    let s = TestServer::start().await;
    s.register(&http_client(), "tess", PASSWORD).await;
    let app = device_app(&s, false).await;
    let codes = ask(&s, &app, &[("scope", "openid profile offline_access")]).await;
    assert_eq!(codes.status, 200, "{}", codes.text);
    assert_eq!(codes.header("cache-control"), Some("no-store"));
    let user_code = codes.str("user_code").to_owned();
    assert!(
        user_code.len() == 9
            && user_code.chars().enumerate().all(|(i, c)| if i == 4 {
                c == '-'
            } else {
                "BCDFGHJKLMNPQRSTVWXZ".contains(c)
            }),
        "{user_code}"
    );
    assert_eq!(codes.json["verification_uri"], format!("{}/device", latchkey_testkit::ISSUER));
    assert_eq!(
        codes.json["verification_uri_complete"],
        format!("{}/device?user_code={user_code}", latchkey_testkit::ISSUER)
    );
    assert_eq!((codes.json["expires_in"].as_u64(), codes.json["interval"].as_u64()), (Some(600), Some(5)));
    let device_code = codes.str("device_code").to_owned();
    assert!(device_code.starts_with("lkd_"));

    let pending = poll(&s, &app, &device_code).await;
    assert_eq!(
        (pending.status, pending.json["error"].as_str()),
        (400, Some("authorization_pending")),
        "{}",
        pending.text
    );
    // Sooner than the interval: slow_down, and the interval grows by 5 s.
    let soon = poll(&s, &app, &device_code).await;
    assert_eq!(soon.json["error"], "slow_down", "{}", soon.text);
    s.clock.advance(Duration::from_secs(6));
    assert_eq!(poll(&s, &app, &device_code).await.json["error"], "slow_down", "the interval is 10 s now");
    // ... and 15 s after that second slow_down.
    s.clock.advance(Duration::from_secs(14));
    assert_eq!(poll(&s, &app, &device_code).await.json["error"], "slow_down");
    s.clock.advance(Duration::from_secs(20));
    assert_eq!(poll(&s, &app, &device_code).await.json["error"], "authorization_pending");

    let b = signed_in_browser(&s, "tess").await;
    let consent = type_code(&s, &b, &user_code.to_lowercase().replace('-', " ")).await;
    assert!(consent.text.contains("Test App wants to access your account"), "{}", consent.text);
    assert!(decide(&s, &b, &consent, "allow").await.contains("Device connected"));

    s.clock.advance(Duration::from_secs(30));
    let tokens = poll(&s, &app, &device_code).await;
    assert_eq!(tokens.status, 200, "{}", tokens.text);
    assert!(
        tokens.json["id_token"].is_string() && tokens.json["refresh_token"].is_string(),
        "{}",
        tokens.text
    );
    let refreshed = crate::oauth::refresh_app(&s, &app, tokens.str("refresh_token")).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    s.clock.advance(Duration::from_secs(30));
    let again = poll(&s, &app, &device_code).await;
    assert_eq!(again.json["error"], "invalid_grant", "single use: {}", again.text);
    // The code cannot be typed again either, and the app is among the user's connected apps.
    let twice = type_code(&s, &b, &user_code).await;
    assert_eq!(twice.status, 400);
    assert!(twice.text.contains("That code is not valid"), "{}", twice.text);
    let account = send(b.get(s.url("/account"))).await;
    assert!(account.text.contains("Test App"), "{}", account.text);
}

#[tokio::test]
async fn denial_expiry_other_clients_and_the_sign_in_ending_first() {
    let s = TestServer::start().await;
    s.register(&http_client(), "dan", PASSWORD).await;
    let app = device_app(&s, true).await;
    let other = device_app(&s, false).await;
    let b = signed_in_browser(&s, "dan").await;

    // Denied.
    let codes = ask(&s, &app, &[]).await;
    let consent = type_code(&s, &b, codes.str("user_code")).await;
    assert!(decide(&s, &b, &consent, "deny").await.contains("Request denied"));
    assert_eq!(poll(&s, &app, codes.str("device_code")).await.json["error"], "access_denied");

    // Another client's device code is unknown to this one, and its poll changes nothing.
    let codes = ask(&s, &app, &[]).await;
    let stolen = poll(&s, &other, codes.str("device_code")).await;
    assert_eq!(stolen.json["error"], "invalid_grant", "{}", stolen.text);
    assert_eq!(poll(&s, &app, codes.str("device_code")).await.json["error"], "authorization_pending");

    // Expired: the codes live 10 minutes.
    s.clock.advance(Duration::from_secs(601));
    assert_eq!(poll(&s, &app, codes.str("device_code")).await.json["error"], "expired_token");
    assert_eq!(
        type_code(&s, &b, codes.str("user_code")).await.status,
        400,
        "an expired code cannot be typed"
    );

    // Allowed, but the browser signs out before the device polls: revoked is final.
    let codes = ask(&s, &app, &[]).await;
    let b = signed_in_browser(&s, "dan").await;
    let consent = type_code(&s, &b, codes.str("user_code")).await;
    decide(&s, &b, &consent, "allow").await;
    let page = send(b.get(s.url("/account"))).await;
    let csrf = hidden_fields(&page.text).into_iter().find(|(k, _)| k == "csrf").unwrap().1;
    assert_eq!(send(b.post(s.url("/logout")).form(&[("csrf", &csrf)])).await.status, 200);
    let late = poll(&s, &app, codes.str("device_code")).await;
    assert_eq!(late.json["error"], "invalid_grant", "{}", late.text);

    // Bad requests.
    let unknown = poll(&s, &app, "lkd_nothing").await;
    assert_eq!(unknown.json["error"], "invalid_grant");
    let missing = crate::oauth::token(&s, &app, &[("grant_type", DEVICE_GRANT)]).await;
    assert_eq!(missing.json["error"], "invalid_request");
    let web_app = register_app(&s, &[]).await;
    let refused = ask(&s, &web_app, &[]).await;
    assert_eq!(
        (refused.status, refused.json["error"].as_str()),
        (400, Some("unauthorized_client")),
        "{}",
        refused.text
    );
    let scope = ask(&s, &app, &[("scope", "openid admin")]).await;
    assert_eq!(scope.json["error"], "invalid_scope", "{}", scope.text);
    let nobody =
        send(http_client().post(s.url("/oauth/device_authorization")).form(&[("client_id", "nobody")])).await;
    assert_eq!(nobody.status, 401);
    let d = send(http_client().get(s.url("/.well-known/openid-configuration"))).await;
    assert_eq!(
        d.json["device_authorization_endpoint"],
        format!("{}/oauth/device_authorization", latchkey_testkit::ISSUER)
    );
    assert!(d.json["grant_types_supported"].as_array().unwrap().iter().any(|g| g == DEVICE_GRANT));
}

#[tokio::test]
async fn guessing_user_codes_is_throttled() {
    let s = TestServer::start().await;
    s.register(&http_client(), "gus", PASSWORD).await;
    let app = device_app(&s, false).await;
    let codes = ask(&s, &app, &[]).await;
    let b = signed_in_browser(&s, "gus").await;
    let mut statuses = Vec::new();
    for guess in [
        "BCDF-GHJK",
        "not a code",
        "ZZZZ-ZZZZ",
        "",
        "BCDF-GHJL",
        "XXXX-XXXX",
        "BBBB-BBBB",
        "CCCC-CCCC",
        "DDDD-DDDD",
        "FFFF-FFFF",
    ] {
        let r = type_code(&s, &b, guess).await;
        assert!(r.text.contains("That code is not valid"), "{guess}: {}", r.text);
        statuses.push(r.status);
    }
    assert!(statuses.iter().all(|s| *s == 400), "{statuses:?}");
    // The eleventh attempt is refused even with the right code, with Retry-After.
    let locked = type_code(&s, &b, codes.str("user_code")).await;
    assert_eq!(locked.status, 429, "{}", locked.text);
    assert!(locked.header("retry-after").is_some());
    s.clock.advance(Duration::from_secs(601));
    let consent = type_code(&s, &b, codes.str("user_code")).await;
    // The codes expired meanwhile; a new request goes through.
    assert_eq!(consent.status, 400);
    let fresh = ask(&s, &app, &[]).await;
    let consent = type_code(&s, &b, fresh.str("user_code")).await;
    assert_eq!(consent.status, 200, "{}", consent.text);
}
