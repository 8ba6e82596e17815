//! The pages over HTTP (SPEC 5.3): the account page's device names, CSRF on every form
//! (token, `Origin`, `Sec-Fetch-Site`), the pages' security headers and malformed forms, and
//! the sign-in page's throttling and cookie attributes; the pages behind SPEC 10's mailed
//! links (forgot password, reset password, verify email) and the account page's email
//! forms. The OAuth flows that pass through the pages are in `oauth.rs`, whose helpers
//! these tests share.

use std::time::Duration;

use serde_json::{Value, json};

use crate::oauth::{browser, exchange, first_code, hidden_fields, location, register_app, sign_in};
use crate::verification::{forgot_token, link_token_mailed_to, outbox, reset_queue_drained, with_address};
use crate::{TestServer, http_client, send};

/// Issue 13: the account page names a device as people do, keeps the raw `User-Agent` in
/// a `title`, and the API still answers the raw string.
#[tokio::test]
async fn the_account_page_names_devices_readably() {
    const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                          Chrome/156.0.0.0 Safari/537.36";
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "hana", "correct horse battery").await;
    let b = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(CHROME)
        .build()
        .unwrap();
    assert_eq!(sign_in(&s, &b, "/login", "hana").await, "/account");
    let api = s.login(&c, "hana", "correct horse battery").await;
    let page = send(b.get(s.url("/account"))).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let this = format!(
        "<span title=\"{CHROME}\">Chrome 156 on Linux</span> <span class=\"badge\">This device</span>"
    );
    assert!(page.text.contains(&this), "{}", page.text);
    // An agent uap-core does not know is shown as itself.
    assert!(page.text.contains("<span title=\"latchkey-tests/1\">latchkey-tests/1</span>"), "{}", page.text);
    let sessions = s.get_auth(&c, "/auth/sessions", api.str("access_token")).await;
    let agents: Vec<&Value> =
        sessions.json["sessions"].as_array().unwrap().iter().map(|x| &x["user_agent"]).collect();
    assert!(agents.contains(&&json!(CHROME)), "{}", sessions.text);
}

#[tokio::test]
async fn cross_site_posts_are_refused_on_every_form() {
    let s = TestServer::start().await;
    let c = http_client();
    s.register(&c, "frank", "correct horse battery").await;
    let app = register_app(&s, &[]).await;
    let b = browser();
    let code = first_code(&s, &b, &app, "frank").await;
    assert_eq!(exchange(&s, &app, &code).await.status, 200);
    let page = send(b.get(s.url("/account"))).await;
    let csrf = hidden_fields(&page.text).into_iter().find(|(k, _)| k == "csrf").unwrap().1;
    let sid = page.text.split("/account/sessions/").nth(1).unwrap().split('/').next().unwrap().to_owned();
    let forms: Vec<(String, Vec<(&str, String)>)> = vec![
        ("/login".into(), vec![("username", "frank".into()), ("password", "correct horse battery".into())]),
        ("/oauth/authorize".into(), vec![("decision", "allow".into()), ("client_id", app.id.clone())]),
        (format!("/account/sessions/{sid}/revoke"), vec![]),
        (format!("/account/apps/{}/revoke", app.id), vec![]),
        ("/logout".into(), vec![]),
        ("/account/email/verify".into(), vec![]),
        (
            "/account/email".into(),
            vec![("email", "frank@example.com".into()), ("current_password", "correct horse battery".into())],
        ),
        ("/forgot-password".into(), vec![("login", "frank".into())]),
        (
            "/reset-password".into(),
            vec![("token", "lkp_x".into()), ("new_password", "a new passphrase".into())],
        ),
        ("/verify-email".into(), vec![("token", "lkv_x".into())]),
        ("/login/enrol".into(), vec![("mfa_token", "lke_x".into()), ("code", "123456".into())]),
        ("/login/mfa".into(), vec![("mfa_token", "lkm_x".into()), ("code", "123456".into())]),
        ("/account/mfa/totp".into(), vec![]),
        ("/account/mfa/totp/confirm".into(), vec![("code", "123456".into())]),
        ("/account/mfa/recovery-codes".into(), vec![]),
        ("/account/mfa/x/remove".into(), vec![]),
    ];
    for (path, fields) in &forms {
        // No token, a wrong token, a right token from another site (Origin / Fetch-Metadata).
        let attempts = [
            (None, None, None),
            (Some("wrong".to_owned()), None, None),
            (Some(csrf.clone()), Some("http://evil.example"), None),
            (Some(csrf.clone()), None, Some("cross-site")),
            (Some(csrf.clone()), None, Some("same-site")),
        ];
        for (token, origin, site) in attempts {
            let mut form: Vec<(&str, String)> = fields.clone();
            if let Some(t) = &token {
                form.push(("csrf", t.clone()));
            }
            let mut req = b.post(s.url(path)).form(&form);
            if let Some(o) = origin {
                req = req.header("origin", o);
            }
            if let Some(site) = site {
                req = req.header("sec-fetch-site", site);
            }
            let a = send(req).await;
            assert_eq!(a.status, 403, "{path} {token:?} {origin:?} {site:?}: {}", a.text);
        }
    }
    // The passkey requests are JSON with the token in the body: refused the same ways.
    for path in ["/login/passkey", "/account/passkeys/start", "/account/passkeys/finish"] {
        let attempts = [
            (json!({"csrf": "wrong"}), None, None),
            (json!({"csrf": csrf}), Some("http://evil.example"), None),
            (json!({"csrf": csrf}), None, Some("cross-site")),
        ];
        for (body, origin, site) in attempts {
            let mut req = b.post(s.url(path)).json(&body);
            if let Some(o) = origin {
                req = req.header("origin", o);
            }
            if let Some(site) = site {
                req = req.header("sec-fetch-site", site);
            }
            let a = send(req).await;
            assert_eq!(a.status, 403, "{path} {body} {origin:?} {site:?}: {}", a.text);
        }
    }
    // Nothing happened: still signed in, the app still connected.
    let page = send(b.get(s.url("/account"))).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("Test App"));
    // A cookie-less attacker page cannot sign anyone in either (no CSRF cookie at all).
    let fresh = send(browser().post(s.url("/login")).form(&[
        ("username", "frank"),
        ("password", "correct horse battery"),
        ("csrf", "x"),
    ]))
    .await;
    assert_eq!(fresh.status, 403);
}

#[tokio::test]
async fn pages_send_strict_headers_and_survive_malformed_forms() {
    let s = TestServer::start().await;
    let b = browser();
    let login = send(b.get(s.url("/login"))).await;
    assert_eq!(login.status, 200);
    let csp = login.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(login.header("x-frame-options"), Some("DENY"));
    let css = send(b.get(s.url("/static/latchkey.css"))).await;
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").unwrap().starts_with("text/css"));
    // The session cookie's attributes.
    let c = http_client();
    s.register(&c, "gina", "correct horse battery").await;
    let csrf = hidden_fields(&login.text).into_iter().find(|(k, _)| k == "csrf").unwrap().1;
    let signed = send(b.post(s.url("/login")).form(&[
        ("csrf", csrf.as_str()),
        ("username", "gina"),
        ("password", "correct horse battery"),
    ]))
    .await;
    assert_eq!(signed.status, 303);
    assert_eq!(location(&signed), "/account");
    // Wrong password: the page again, with an alert, no session.
    let wrong = send(b.post(s.url("/login")).form(&[
        ("csrf", csrf.as_str()),
        ("username", "gina"),
        ("password", "wrong password!"),
    ]))
    .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.text.contains("role=\"alert\""));
    // Open redirects are not possible through return_to.
    let sneaky = send(b.post(s.url("/login")).form(&[
        ("csrf", csrf.as_str()),
        ("username", "gina"),
        ("password", "correct horse battery"),
        ("return_to", "https://evil.example/"),
    ]))
    .await;
    assert_eq!(location(&sneaky), "/account");
    // Malformed forms and queries: 4xx or a page, never a 5xx.
    for (path, body) in [
        ("/login", "%"),
        ("/login", "username=%FF&password=x"),
        ("/login", &format!("csrf={csrf}&username=&password=")),
        ("/login", &format!("csrf={csrf}&username={}&password=x", "a".repeat(5000))),
        ("/oauth/authorize", &format!("csrf={csrf}&decision=maybe")),
        ("/oauth/authorize", &format!("csrf={csrf}&decision=allow")),
        ("/logout", "%%%"),
        ("/account/sessions/%FF/revoke", &format!("csrf={csrf}")),
    ] {
        let a = send(
            b.post(s.url(path))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.to_owned()),
        )
        .await;
        assert!(a.status < 500, "{path} {body}: {} {}", a.status, a.text);
        assert!(a.header("location").is_none_or(|l| !l.contains("code=")));
    }
    for q in ["return_to=%FF", "return_to=javascript:alert(1)", "%"] {
        let a = send(b.get(s.url(&format!("/login?{q}")))).await;
        assert!(a.status < 500, "{q}");
    }
}

#[tokio::test]
async fn the_sign_in_page_is_throttled_like_the_api_and_its_cookie_is_secure_on_https() {
    let s = TestServer::start_with(|c| c.settings.issuer = "https://login.example".into()).await;
    let c = http_client();
    s.register(&c, "kim", "correct horse battery").await;
    let b = browser();
    let page = send(b.get(s.url("/login"))).await;
    assert!(page.header("set-cookie").unwrap().contains("; Secure"), "{:?}", page.header("set-cookie"));
    let csrf = hidden_fields(&page.text).into_iter().find(|(k, _)| k == "csrf").unwrap().1;
    // The issuer's origin is the expected Origin of form posts behind a TLS proxy.
    let post = |password: &'static str| {
        let form =
            vec![("csrf", csrf.clone()), ("username", "kim".to_owned()), ("password", password.to_owned())];
        let req = b.post(s.url("/login")).header("origin", "https://login.example").form(&form);
        async move { send(req).await }
    };
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(post("wrong password!").await.status);
    }
    assert_eq!(statuses[..9], [401; 9]);
    assert_eq!(statuses[9], 429, "the 10th failure locks the account, as on the API");
    let locked = post("correct horse battery").await;
    assert_eq!(locked.status, 429);
    assert!(locked.header("retry-after").is_some());
    assert!(locked.text.contains("Too many failed attempts"));
    // The API sees the same lock.
    let api =
        s.post(&c, "/auth/login", json!({"username": "kim", "password": "correct horse battery"})).await;
    assert_eq!(api.status, 429);
    // Once the lock is over, the right password signs in, with a Secure session cookie.
    s.clock.advance(std::time::Duration::from_secs(3600));
    let ok = post("correct horse battery").await;
    assert_eq!(ok.status, 303, "{}", ok.text);
    let cookies: Vec<&str> =
        ok.headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).collect();
    let session = cookies.iter().find(|c| c.starts_with("lk_session=")).unwrap();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax") && session.contains("Secure"),
        "{session}"
    );
}

const PASSWORD: &str = "correct horse battery";

/// The CSRF token of a page's forms.
fn csrf_of(page: &latchkey_testkit::Answer) -> String {
    hidden_fields(&page.text).into_iter().find(|(k, _)| k == "csrf").unwrap().1
}

/// The headers that keep a link token from leaking (SPEC 10): no caching, and no
/// `Referer` to other sites.
fn assert_keeps_token(a: &latchkey_testkit::Answer) {
    assert_eq!(a.header("cache-control"), Some("no-store"), "{:?}", a.headers);
    assert_eq!(a.header("referrer-policy"), Some("same-origin"), "{:?}", a.headers);
    assert!(a.header("content-security-policy").unwrap().contains("frame-ancestors 'none'"));
}

/// Asks for a reset link over the API; its token, read from the outbox.
async fn mailed_reset_token(s: &TestServer, login: &str, to: &str) -> String {
    forgot_token(s, &http_client(), login, to).await
}

#[tokio::test]
async fn the_sign_in_page_links_to_a_forgot_password_form() {
    let s = TestServer::start().await;
    let b = browser();
    let login = send(b.get(s.url("/login"))).await;
    assert!(login.text.contains("<a href=\"/forgot-password\">Forgot your password?</a>"), "{}", login.text);
    let page = send(b.get(s.url("/forgot-password"))).await;
    assert_eq!(page.status, 200);
    assert_keeps_token(&page);
    assert!(page.text.contains("<label for=\"login\">Email or username</label>"), "{}", page.text);
    assert!(page.text.contains("name=\"login\" type=\"text\" autocomplete=\"username\""), "{}", page.text);
    assert!(page.text.contains("<button type=\"submit\">Send reset link</button>"), "{}", page.text);
}

#[tokio::test]
async fn the_forgot_password_form_answers_the_same_for_every_login() {
    let s = TestServer::start().await;
    let c = http_client();
    with_address(&s, &c, "ann", "ann@example.com").await;
    let b = browser();
    let csrf = csrf_of(&send(b.get(s.url("/forgot-password"))).await);
    // Without a CSRF token: refused, nothing queued.
    let forged = send(b.post(s.url("/forgot-password")).form(&[("login", "ann")])).await;
    assert_eq!(forged.status, 403);
    assert!(outbox(&s).await.is_empty());
    let post = |login: &'static str| {
        let req = b.post(s.url("/forgot-password")).form(&[("csrf", csrf.as_str()), ("login", login)]);
        async move { send(req).await }
    };
    let known = post("ann").await;
    let by_address = post("ANN@example.com").await;
    let unknown = post("nobody").await;
    assert_eq!(known.status, 200, "{}", known.text);
    assert!(known.text.contains("If an account matches, we sent a link"), "{}", known.text);
    assert!(known.text.contains("valid for 30 minutes"), "{}", known.text);
    assert_eq!(known.text, unknown.text, "the page must not tell whether the account exists");
    assert_eq!(known.text, by_address.text);
    assert_eq!(unknown.status, 200);
    assert_keeps_token(&known);
    reset_queue_drained(&s, &c).await;
    let mails: Vec<_> = outbox(&s).await.into_iter().filter(|m| m["to"] == "ann@example.com").collect();
    assert_eq!(mails.len(), 2, "{mails:?}");
    assert!(mails.iter().all(|m| m["kind"] == "password_reset"), "{mails:?}");
    let others = outbox(&s).await.into_iter().filter(|m| m["to"] != "ann@example.com").count();
    assert_eq!(others, 1, "the sentinel's mail alone");
    // A blank login re-renders the form.
    let blank = post("   ").await;
    assert_eq!(blank.status, 400);
    assert!(blank.text.contains("role=\"alert\""));
}

#[tokio::test]
async fn the_forgot_password_form_is_throttled_with_retry_after() {
    let s = TestServer::start().await;
    let b = browser();
    let csrf = csrf_of(&send(b.get(s.url("/forgot-password"))).await);
    let mut last = None;
    for _ in 0..6 {
        last = Some(
            send(b.post(s.url("/forgot-password")).form(&[("csrf", csrf.as_str()), ("login", "zoe")])).await,
        );
    }
    let last = last.unwrap();
    assert_eq!(last.status, 429, "{}", last.text);
    assert!(last.header("retry-after").is_some());
    assert!(last.text.contains("role=\"alert\"") && last.text.contains("Send reset link"), "{}", last.text);
}

#[tokio::test]
async fn opening_a_reset_link_changes_nothing_and_its_form_sets_the_password() {
    let s = TestServer::start().await;
    let c = http_client();
    let at = with_address(&s, &c, "bea", "bea@example.com").await;
    let token = mailed_reset_token(&s, "bea", "bea@example.com").await;
    let b = browser();
    let link = s.url(&format!("/reset-password?token={token}"));
    // A mail scanner opens the link, twice: the form each time, nothing used.
    send(b.get(&link)).await;
    let page = send(b.get(&link)).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert_keeps_token(&page);
    assert!(page.text.contains("<label for=\"new_password\">New password</label>"), "{}", page.text);
    assert!(page.text.contains("autocomplete=\"new-password\""));
    assert!(page.text.contains("<button type=\"submit\">Set password</button>"));
    let csrf = csrf_of(&page);
    assert!(hidden_fields(&page.text).contains(&("token".to_owned(), token.clone())));
    // A post without the CSRF token is refused and uses nothing.
    let forged = send(
        b.post(s.url("/reset-password"))
            .form(&[("token", token.as_str()), ("new_password", "x".repeat(12).as_str())]),
    )
    .await;
    assert_eq!(forged.status, 403);
    assert_eq!(s.get_auth(&c, "/auth/me", &at).await.status, 200, "no session was revoked");
    // Too short: the form again, the token kept.
    let post = |password: &'static str| {
        let form = [("csrf", csrf.as_str()), ("token", token.as_str()), ("new_password", password)];
        let req = b.post(s.url("/reset-password")).form(&form);
        async move { send(req).await }
    };
    let short = post("short").await;
    assert_eq!(short.status, 400);
    assert!(short.text.contains("role=\"alert\""));
    assert!(hidden_fields(&short.text).contains(&("token".to_owned(), token.clone())));
    let done = post("a brand new passphrase").await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert!(done.text.contains("Your password has been set. Every device was signed out."), "{}", done.text);
    assert!(done.text.contains("<a href=\"/login\">"));
    assert_eq!(s.get_auth(&c, "/auth/me", &at).await.status, 401, "every session was revoked");
    assert_eq!(s.login(&c, "bea", "a brand new passphrase").await.status, 200);
    // Used now: the link and the form both say so.
    let used = send(b.get(&link)).await;
    assert_eq!(used.status, 400);
    assert!(
        used.text.contains("This link was already used.") && used.text.contains("href=\"/forgot-password\"")
    );
    assert_eq!(post("another new passphrase").await.status, 400);
    // The server logs at trace level in tests; the token is in no line of it.
    assert!(!latchkey_testkit::captured_logs().contains(&token[4..]), "the link token was logged");
}

#[tokio::test]
async fn used_expired_and_unknown_links_are_a_400_page() {
    let s = TestServer::start().await;
    let c = http_client();
    let at = with_address(&s, &c, "cai", "cai@example.com").await;
    let b = browser();
    let unknown_reset = format!("lkp_{}", "A".repeat(43));
    let unknown_verify = format!("lkv_{}", "A".repeat(43));
    for path in [
        format!("/reset-password?token={unknown_reset}"),
        "/reset-password?token=nonsense".to_owned(),
        "/reset-password".to_owned(),
        format!("/verify-email?token={unknown_verify}"),
        format!("/verify-email?token={unknown_reset}"),
        "/verify-email".to_owned(),
    ] {
        let a = send(b.get(s.url(&path))).await;
        assert_eq!(a.status, 400, "{path}");
        assert!(a.text.contains("This link is not valid."), "{path}: {}", a.text);
        assert_keeps_token(&a);
    }
    // Expired: a reset link lives 30 minutes, a verification link 24 hours.
    let reset = mailed_reset_token(&s, "cai", "cai@example.com").await;
    assert_eq!(s.post_auth(&c, "/auth/email/verify/send", &at, json!({})).await.status, 202);
    let verify = link_token_mailed_to(&s, "cai@example.com", "lkv_", "verify-email").await;
    s.clock.advance(Duration::from_secs(24 * 3600));
    for path in [format!("/reset-password?token={reset}"), format!("/verify-email?token={verify}")] {
        let a = send(b.get(s.url(&path))).await;
        assert_eq!(a.status, 400, "{path}");
        assert!(a.text.contains("This link has expired"), "{path}: {}", a.text);
    }
    let page = send(b.get(s.url("/forgot-password"))).await;
    let csrf = csrf_of(&page);
    let post = send(b.post(s.url("/reset-password")).form(&[
        ("csrf", csrf.as_str()),
        ("token", reset.as_str()),
        ("new_password", PASSWORD),
    ]))
    .await;
    assert_eq!(post.status, 400);
    assert!(post.text.contains("This link has expired") && post.text.contains("href=\"/forgot-password\""));
}

#[tokio::test]
async fn opening_a_verification_link_changes_nothing_and_its_button_verifies() {
    let s = TestServer::start().await;
    let c = http_client();
    let at = with_address(&s, &c, "dee", "dee@example.com").await;
    assert_eq!(s.post_auth(&c, "/auth/email/verify/send", &at, json!({})).await.status, 202);
    let token = link_token_mailed_to(&s, "dee@example.com", "lkv_", "verify-email").await;
    let b = browser();
    let link = s.url(&format!("/verify-email?token={token}"));
    send(b.get(&link)).await;
    let page = send(b.get(&link)).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert_keeps_token(&page);
    assert!(page.text.contains("<button type=\"submit\">Verify email address</button>"), "{}", page.text);
    assert!(hidden_fields(&page.text).contains(&("token".to_owned(), token.clone())));
    let verified = || async { s.get_auth(&c, "/auth/me", &at).await.json["email_verified"].clone() };
    assert_eq!(verified().await, json!(false), "opening the link verifies nothing");
    let forged = send(b.post(s.url("/verify-email")).form(&[("token", token.as_str())])).await;
    assert_eq!(forged.status, 403);
    assert_eq!(verified().await, json!(false));
    let csrf = csrf_of(&page);
    let post = || {
        let req = b.post(s.url("/verify-email")).form(&[("csrf", csrf.as_str()), ("token", token.as_str())]);
        async move { send(req).await }
    };
    let done = post().await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert!(done.text.contains("Your email address is verified."));
    assert_eq!(verified().await, json!(true));
    let again = post().await;
    assert_eq!(again.status, 400);
    assert!(again.text.contains("This link was already used."));
    assert_eq!(send(b.get(&link)).await.status, 400);
}

#[tokio::test]
async fn the_account_page_shows_and_changes_the_email_address() {
    let s = TestServer::start().await;
    let c = http_client();
    with_address(&s, &c, "eve", "eve@example.com").await;
    s.register(&c, "fay", PASSWORD).await;
    let b = browser();
    assert_eq!(sign_in(&s, &b, "/login", "eve").await, "/account");
    let page = send(b.get(s.url("/account"))).await;
    assert!(page.text.contains("eve@example.com"), "{}", page.text);
    assert!(page.text.contains("Not verified") && page.text.contains("Send verification link"));
    assert!(page.text.contains("<label for=\"new_email\">New email address</label>"));
    assert!(page.text.contains("<label for=\"current_password\">Current password</label>"));
    assert!(page.text.contains("Change email address"));
    let csrf = csrf_of(&page);
    // Without CSRF: refused, nothing mailed.
    assert_eq!(send(b.post(s.url("/account/email/verify")).form(&[("csrf", "wrong")])).await.status, 403);
    assert!(outbox(&s).await.is_empty());
    let sent = send(b.post(s.url("/account/email/verify")).form(&[("csrf", csrf.as_str())])).await;
    assert_eq!(sent.status, 303);
    assert_eq!(location(&sent), "/account?notice=verification-sent");
    let token = link_token_mailed_to(&s, "eve@example.com", "lkv_", "verify-email").await;
    let shown = send(b.get(s.url("/account?notice=verification-sent"))).await;
    assert!(shown.text.contains("We sent a verification link"), "{}", shown.text);
    // The change form: a wrong password changes nothing; the right one mails the new address.
    let change = |password: &'static str| {
        let form = [("csrf", csrf.as_str()), ("email", "eve@new.example"), ("current_password", password)];
        let req = b.post(s.url("/account/email")).form(&form);
        async move { send(req).await }
    };
    let wrong = change("wrong password!").await;
    assert_eq!(location(&wrong), "/account?notice=wrong-password");
    let changed = change(PASSWORD).await;
    assert_eq!(location(&changed), "/account?notice=email-change-sent", "{}", changed.text);
    let new_token = link_token_mailed_to(&s, "eve@new.example", "lkv_", "verify-email").await;
    assert_ne!(token, new_token);
    // Verified through the page, the account page says so and offers no link.
    let verify_page = send(b.get(s.url(&format!("/verify-email?token={new_token}")))).await;
    let done = send(
        b.post(s.url("/verify-email"))
            .form(&[("csrf", csrf_of(&verify_page).as_str()), ("token", new_token.as_str())]),
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.text);
    let page = send(b.get(s.url("/account"))).await;
    assert!(page.text.contains("eve@new.example") && page.text.contains(">Verified<"), "{}", page.text);
    assert!(!page.text.contains("Send verification link"));
    // An account without an address says so.
    let b2 = browser();
    assert_eq!(sign_in(&s, &b2, "/login", "fay").await, "/account");
    let page = send(b2.get(s.url("/account"))).await;
    assert!(page.text.contains("No email address"), "{}", page.text);
}

/// The account page's email forms and the verify page answer what a notice cannot say with
/// a readable page: an address taken between the request and the link's use is `409`,
/// too many verification mails `429` with `Retry-After`. A change to an address another
/// account holds looks like any other change and mails nothing to that address.
#[tokio::test]
async fn email_pages_answer_a_taken_address_and_throttling_readably() {
    let s = TestServer::start().await;
    let c = http_client();
    with_address(&s, &c, "gus", "gus@example.com").await;
    with_address(&s, &c, "hal", "hal@example.com").await;
    let b = browser();
    assert_eq!(sign_in(&s, &b, "/login", "gus").await, "/account");
    let csrf = csrf_of(&send(b.get(s.url("/account"))).await);
    let change = |email: &'static str| {
        let form = [("csrf", csrf.as_str()), ("email", email), ("current_password", PASSWORD)];
        let req = b.post(s.url("/account/email")).form(&form);
        async move { send(req).await }
    };
    let to_taken = change("HAL@example.com").await;
    assert_eq!(location(&to_taken), "/account?notice=email-change-sent", "{}", to_taken.text);
    let to_free = change("gus@new.example").await;
    assert_eq!(location(&to_free), "/account?notice=email-change-sent");
    let token = link_token_mailed_to(&s, "gus@new.example", "lkv_", "verify-email").await;
    let mails = outbox(&s).await;
    assert!(mails.iter().all(|m| m["to"] != "HAL@example.com" && m["to"] != "hal@example.com"), "{mails:?}");

    // Another account takes the address before the link is used.
    s.cli(&["user", "set-email", "hal", "GUS@new.example"], "").await.unwrap();
    let page = send(b.get(s.url(&format!("/verify-email?token={token}")))).await;
    let form = [("csrf", csrf_of(&page)), ("token", token.clone())];
    let taken = send(b.post(s.url("/verify-email")).form(&form)).await;
    assert_eq!(taken.status, 409, "{}", taken.text);
    assert!(taken.text.contains("Address in use") && taken.text.contains("belongs to another account"));
    assert_keeps_token(&taken);

    // Verification mails past the hourly cap of 5 (the two changes used two): a page that
    // says when to retry.
    let send_link = || send(b.post(s.url("/account/email/verify")).form(&[("csrf", csrf.as_str())]));
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(send_link().await);
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [303, 303, 303, 429], "{}", answers[3].text);
    let throttled = &answers[3];
    assert!(throttled.header("retry-after").is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s > 0)));
    assert!(throttled.text.contains("Try again later") && throttled.text.contains("Try again in"));
}
