//! The pages over HTTP (SPEC 5.3): the account page's device names, CSRF on every form
//! (token, `Origin`, `Sec-Fetch-Site`), the pages' security headers and malformed forms, and
//! the sign-in page's throttling and cookie attributes. The OAuth flows that pass through
//! the pages are in `oauth.rs`, whose helpers these tests share.

use serde_json::{Value, json};

use crate::oauth::{browser, exchange, first_code, hidden_fields, location, register_app, sign_in};
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
