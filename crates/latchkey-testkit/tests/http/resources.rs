//! Resource indicators over HTTP (RFC 8707, SPEC 13): `resource` at the authorization and
//! token requests sets the access token's `aud` to exactly the resources asked, within
//! those registered for the client and granted to the session; anything else is
//! `invalid_target`, and a refused refresh rotates nothing.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::oauth::{
    authorize_url, browser, consent, location, param, refresh_app, register_app, sign_in, token,
};
use crate::{TestServer, http_client, send};

const NOTES: &str = "https://api.example/notes";
const FILES: &str = "https://api.example/files";
const MAIL: &str = "https://api.example/mail";

fn aud(access_token: &str) -> Value {
    let part = access_token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap();
    claims["aud"].clone()
}

#[tokio::test]
async fn tokens_are_for_exactly_the_resources_asked() {
    let s = TestServer::start().await;
    s.register(&http_client(), "rex", "correct horse battery").await;
    let app = register_app(&s, &["--resource", NOTES, "--resource", FILES, "--resource", MAIL]).await;
    let b = browser();
    let url = authorize_url(&s, &app, &[])
        .replace("?", &format!("?resource={}&resource={}&", enc(NOTES), enc(FILES)));
    let start = send(b.get(&url)).await;
    let back = sign_in(&s, &b, &location(&start), "rex").await;
    let to_app = consent(&s, &b, &back, "allow").await;
    let code = param(&to_app, "code").expect("a code");

    // Naming one of the two at the code exchange: that one.
    let exchange = |code: String, resources: Vec<&'static str>| {
        let s = &s;
        let app = &app;
        async move {
            let mut form = vec![
                ("grant_type", "authorization_code".to_owned()),
                ("code", code),
                ("redirect_uri", crate::oauth::REDIRECT.to_owned()),
                ("code_verifier", crate::oauth::VERIFIER.to_owned()),
            ];
            form.extend(resources.into_iter().map(|r| ("resource", r.to_owned())));
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            token(s, app, &form).await
        }
    };
    let t = exchange(code, vec![NOTES]).await;
    assert_eq!(t.status, 200, "{}", t.text);
    assert_eq!(aud(t.str("access_token")), json!(NOTES));

    // A refresh may name any granted resource; none means all of them.
    let r = token(
        &s,
        &app,
        &[("grant_type", "refresh_token"), ("refresh_token", t.str("refresh_token")), ("resource", FILES)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(aud(r.str("access_token")), json!(FILES));
    let all = refresh_app(&s, &app, r.str("refresh_token")).await;
    assert_eq!(aud(all.str("access_token")), json!([FILES, NOTES]));

    // Registered for the client but not granted: invalid_target, and nothing rotates.
    let live = all.str("refresh_token");
    let refused =
        token(&s, &app, &[("grant_type", "refresh_token"), ("refresh_token", live), ("resource", MAIL)])
            .await;
    assert_eq!(
        (refused.status, refused.json["error"].as_str()),
        (400, Some("invalid_target")),
        "{}",
        refused.text
    );
    let unknown = token(
        &s,
        &app,
        &[("grant_type", "refresh_token"), ("refresh_token", live), ("resource", "https://evil.example/")],
    )
    .await;
    assert_eq!(unknown.json["error"], "invalid_target");
    assert_eq!(refresh_app(&s, &app, live).await.status, 200, "the live token still rotates");

    // A code exchange naming a resource the request did not: refused.
    let start = send(b.get(authorize_url(&s, &app, &[("resource", NOTES)]))).await;
    let code = param(&location(&start), "code").expect("consent is remembered");
    let wider = exchange(code, vec![FILES]).await;
    assert_eq!(wider.json["error"], "invalid_grant", "{}", wider.text);

    // Without resources, the configured audience, as before.
    let start = send(b.get(authorize_url(&s, &app, &[]))).await;
    let code = param(&location(&start), "code").unwrap();
    let plain = exchange(code, vec![]).await;
    assert_eq!(aud(plain.str("access_token")), json!(latchkey_testkit::ISSUER), "the default audience");
}

fn enc(v: &str) -> String {
    latchkey_core::oauth::form_encode(v)
}

#[tokio::test]
async fn unregistered_resources_are_invalid_target_everywhere() {
    let s = TestServer::start().await;
    s.register(&http_client(), "ria", "correct horse battery").await;
    let app = register_app(&s, &["--resource", NOTES]).await;
    let b = browser();
    let start = send(b.get(authorize_url(&s, &app, &[]))).await;
    sign_in(&s, &b, &location(&start), "ria").await;
    // At the authorization endpoint: an error sent back to the app, with state.
    let out = send(b.get(authorize_url(&s, &app, &[("resource", FILES)]))).await;
    let to = location(&out);
    assert_eq!(param(&to, "error").as_deref(), Some("invalid_target"), "{to}");
    assert_eq!(param(&to, "state").as_deref(), Some("st-1"));
    // client_credentials.
    let machine = register_app(
        &s,
        &["--grant-types", "client_credentials", "--scopes", "notes:read", "--resource", NOTES],
    )
    .await;
    let ok = token(&s, &machine, &[("grant_type", "client_credentials"), ("resource", NOTES)]).await;
    assert_eq!(aud(ok.str("access_token")), json!(NOTES));
    // Introspection knows a resource token as one of this server's (RFC 7662).
    let seen = send(
        http_client()
            .post(s.url("/oauth/introspect"))
            .basic_auth(&machine.id, machine.secret.as_deref())
            .form(&[("token", ok.str("access_token"))]),
    )
    .await;
    assert_eq!(seen.json["active"], true, "{}", seen.text);
    assert_eq!(seen.json["aud"], json!(NOTES));
    let bad = token(&s, &machine, &[("grant_type", "client_credentials"), ("resource", FILES)]).await;
    assert_eq!((bad.status, bad.json["error"].as_str()), (400, Some("invalid_target")));
    // Other parameters still may not repeat.
    let twice = token(
        &s,
        &machine,
        &[("grant_type", "client_credentials"), ("scope", "notes:read"), ("scope", "notes:read")],
    )
    .await;
    assert_eq!(twice.json["error"], "invalid_request");
    // The CLI refuses a resource that is not an absolute URI without a fragment.
    for bad in ["notes", "https://api.example/notes#x", ""] {
        assert!(
            s.cli(
                &[
                    "client",
                    "add",
                    "--name",
                    "Bad",
                    "--redirect-uri",
                    "http://127.0.0.1:9/cb",
                    "--resource",
                    bad
                ],
                ""
            )
            .await
            .is_err(),
            "{bad}"
        );
    }
}
