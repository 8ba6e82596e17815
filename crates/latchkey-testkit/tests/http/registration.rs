//! Dynamic client registration over HTTP (RFC 7591, 7592; SPEC 13): closed by default;
//! `open`; `token` with single-use initial access tokens from the CLI; the registration
//! access token reading, replacing and deleting the client; the stricter rules for
//! self-registered clients; and a registered app completing the code flow.

use latchkey_core::settings::DynamicRegistration;
use serde_json::{Value, json};

use crate::oauth::{App, browser, consent, exchange, location, param, sign_in};
use crate::{TestServer, http_client, send};

async fn register(s: &TestServer, token: Option<&str>, body: Value) -> latchkey_testkit::Answer {
    let mut req = http_client().post(s.url("/oauth/register")).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    send(req).await
}

fn app_metadata() -> Value {
    json!({
        "client_name": "Self-made App",
        "redirect_uris": [crate::oauth::REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "scope": "openid profile offline_access",
        "token_endpoint_auth_method": "client_secret_basic",
        "software_id": "ignored-extension",
    })
}

#[tokio::test]
async fn registration_is_closed_by_default() {
    let s = TestServer::start().await;
    let r = register(&s, None, app_metadata()).await;
    assert_eq!((r.status, r.json["error"].as_str()), (403, Some("access_denied")), "{}", r.text);
    let d = send(http_client().get(s.url("/.well-known/openid-configuration"))).await;
    assert!(d.json.get("registration_endpoint").is_none());
}

#[tokio::test]
async fn an_open_server_registers_manages_and_deletes_an_app_that_then_signs_in() {
    let s = TestServer::start_with(|c| c.settings.dynamic_registration = DynamicRegistration::Open).await;
    s.register(&http_client(), "dora", "correct horse battery").await;
    let d = send(http_client().get(s.url("/.well-known/openid-configuration"))).await;
    assert_eq!(d.json["registration_endpoint"], format!("{}/oauth/register", latchkey_testkit::ISSUER));

    let r = register(&s, None, app_metadata()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let id = r.str("client_id").to_owned();
    let access = r.str("registration_access_token").to_owned();
    let uri = r.str("registration_client_uri").to_owned();
    assert_eq!(uri, format!("{}/oauth/register/{id}", latchkey_testkit::ISSUER));
    assert!(r.str("client_secret").starts_with("lks_"));
    assert_eq!(r.json["client_secret_expires_at"], 0);
    assert_eq!(r.json["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(r.json["scope"], "offline_access openid profile");

    // The app works: code flow with its secret.
    let app = App { id: id.clone(), secret: Some(r.str("client_secret").to_owned()) };
    let b = browser();
    let start = send(b.get(crate::oauth::authorize_url(&s, &app, &[]))).await;
    let back = sign_in(&s, &b, &location(&start), "dora").await;
    let to_app = consent(&s, &b, &back, "allow").await;
    assert!(exchange(&s, &app, &param(&to_app, "code").unwrap()).await.status == 200);

    // Read and replace with the registration access token.
    let path = format!("/oauth/register/{id}");
    let read = send(http_client().get(s.url(&path)).bearer_auth(&access)).await;
    assert_eq!(read.status, 200, "{}", read.text);
    assert_eq!(read.json["client_name"], "Self-made App");
    assert!(read.json.get("client_secret").is_none() && read.json.get("registration_access_token").is_none());
    let mut changed = app_metadata();
    changed["client_id"] = json!(id);
    changed["client_name"] = json!("Renamed App");
    let put = send(http_client().put(s.url(&path)).bearer_auth(&access).json(&changed)).await;
    assert_eq!(put.status, 200, "{}", put.text);
    assert_eq!(put.json["client_name"], "Renamed App");
    changed["token_endpoint_auth_method"] = json!("none");
    let switch = send(http_client().put(s.url(&path)).bearer_auth(&access).json(&changed)).await;
    assert_eq!(switch.json["error"], "invalid_client_metadata", "{}", switch.text);
    for wrong in [None, Some("lkg_wrong"), Some(r.str("client_secret"))] {
        let mut req = http_client().get(s.url(&path));
        if let Some(t) = wrong {
            req = req.bearer_auth(t);
        }
        let r = send(req).await;
        assert_eq!((r.status, r.json["error"].as_str()), (401, Some("invalid_token")), "{wrong:?}");
    }

    // Delete: the client is gone, with what it held.
    let gone = send(http_client().delete(s.url(&path)).bearer_auth(&access)).await;
    assert_eq!(gone.status, 204, "{}", gone.text);
    assert_eq!(send(http_client().get(s.url(&path)).bearer_auth(&access)).await.status, 401);
    let refused =
        crate::oauth::token(&s, &app, &[("grant_type", "refresh_token"), ("refresh_token", "lkr_x")]).await;
    assert_eq!(refused.status, 401);
}

#[tokio::test]
async fn self_registered_apps_get_only_safe_metadata() {
    let s = TestServer::start_with(|c| c.settings.dynamic_registration = DynamicRegistration::Open).await;
    for (change, error) in [
        (json!({"redirect_uris": ["http://app.example/cb"]}), "invalid_redirect_uri"),
        (json!({"redirect_uris": ["https://app.example/cb#frag"]}), "invalid_redirect_uri"),
        (json!({"post_logout_redirect_uris": ["http://evil.example/"]}), "invalid_redirect_uri"),
        (json!({"scope": "openid revocations:read"}), "invalid_client_metadata"),
        (json!({"scope": "introspect"}), "invalid_client_metadata"),
        (json!({"response_types": ["token"]}), "invalid_client_metadata"),
        (json!({"token_endpoint_auth_method": "client_secret_jwt"}), "invalid_client_metadata"),
        (json!({"backchannel_logout_uri": "http://127.0.0.1:9/bcl"}), "invalid_client_metadata"),
        (json!({"token_endpoint_auth_method": "private_key_jwt"}), "invalid_client_metadata"),
        (json!({"grant_types": ["password"]}), "invalid_client_metadata"),
        (json!({"grant_types": ["client_credentials"]}), "invalid_client_metadata"),
        (json!({"redirect_uris": []}), "invalid_client_metadata"),
    ] {
        let mut body = app_metadata();
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = register(&s, None, body).await;
        assert_eq!((r.status, r.json["error"].as_str()), (400, Some(error)), "{change}: {}", r.text);
    }
    let not_json = send(
        http_client().post(s.url("/oauth/register")).header("content-type", "application/json").body("[1]"),
    )
    .await;
    assert_eq!(not_json.json["error"], "invalid_client_metadata");
    // A native app: loopback redirect, public.
    let native = register(
        &s,
        None,
        json!({"redirect_uris": ["http://127.0.0.1:53682/cb"], "token_endpoint_auth_method": "none"}),
    )
    .await;
    assert_eq!(native.status, 201, "{}", native.text);
    assert!(native.json.get("client_secret").is_none());
    assert_eq!(native.json["token_endpoint_auth_method"], "none");
}

#[tokio::test]
async fn token_mode_needs_a_fresh_initial_access_token_each_time() {
    let s = TestServer::start_with(|c| c.settings.dynamic_registration = DynamicRegistration::Token).await;
    assert_eq!(register(&s, None, app_metadata()).await.status, 401);
    assert_eq!(register(&s, Some("lki_made_up"), app_metadata()).await.status, 401);
    let out = s.cli(&["client", "registration-token"], "").await.unwrap();
    let token =
        serde_json::from_str::<Value>(out.trim()).unwrap()["registration_token"].as_str().unwrap().to_owned();
    // A bad request does not spend the token.
    let bad = register(&s, Some(&token), json!({"redirect_uris": ["http://app.example/cb"]})).await;
    assert_eq!(bad.json["error"], "invalid_redirect_uri");
    let ok = register(&s, Some(&token), app_metadata()).await;
    assert_eq!(ok.status, 201, "{}", ok.text);
    let again = register(&s, Some(&token), app_metadata()).await;
    assert_eq!((again.status, again.json["error"].as_str()), (401, Some("invalid_token")), "single use");
}
