//! Access tokens exactly as SPEC 3 (RFC 9068), verified by an independent JOSE library
//! against the published JWKS, for every signing algorithm; expiry; key rotation with
//! overlap; signing keys encrypted at rest.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use latchkey_core::keys::Algorithm;
use serde_json::Value;

use crate::{TestServer, http_client, send};

/// The claims of a JWT, without verifying it.
pub(crate) fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("json")
}

fn header(jwt: &str) -> Value {
    let h = jwt.split('.').next().expect("header");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).expect("base64")).expect("json")
}

/// Verifies a token with `jsonwebtoken` and the server's JWKS, as a resource server would.
async fn verify(s: &TestServer, jwt: &str) -> Value {
    let jwks: JwkSet =
        serde_json::from_str(&send(http_client().get(s.url("/jwks.json"))).await.text).expect("jwks");
    let h = jsonwebtoken::decode_header(jwt).expect("header");
    let jwk = jwks.find(h.kid.as_deref().expect("kid")).expect("kid published");
    let key = DecodingKey::from_jwk(jwk).expect("key");
    let mut v = Validation::new(h.alg);
    v.set_issuer(&[latchkey_testkit::ISSUER]);
    v.set_audience(&[latchkey_testkit::ISSUER]);
    jsonwebtoken::decode::<Value>(jwt, &key, &v).expect("verifies").claims
}

#[tokio::test]
async fn access_token_is_rfc9068_for_every_algorithm() {
    for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
        let s = TestServer::start_with(|c| c.settings.access_token_alg = alg).await;
        let c = http_client();
        let login = s.signed_in(&c, "jwt").await;
        let at = login.str("access_token");
        let h = header(at);
        assert_eq!(h["typ"], "at+jwt");
        assert_eq!(h["alg"], alg.as_str());
        assert!(h["kid"].is_string());
        let claims = verify(&s, at).await;
        let sub = s.get_auth(&c, "/auth/me", at).await.str("sub").to_owned();
        assert_eq!(claims["iss"], latchkey_testkit::ISSUER);
        assert_eq!(claims["aud"], latchkey_testkit::ISSUER);
        assert_eq!(claims["sub"], sub);
        assert_eq!(claims["client_id"], "latchkey");
        assert_eq!(claims["sid"], login.json["session_id"]);
        assert_eq!(claims["scope"], "profile");
        assert_eq!(claims["roles"], serde_json::json!([]));
        assert_eq!(claims["authz_ver"], 1);
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 300);
        assert!(claims["jti"].as_str().unwrap().len() >= 16);
        assert!(claims.get("cnf").is_none());
        // Each token has its own jti.
        let again = s.refresh(&c, login.str("refresh_token")).await;
        assert_ne!(self::claims(again.str("access_token"))["jti"], claims["jti"]);
    }
}

#[tokio::test]
async fn jwks_publishes_access_and_id_token_keys_without_private_parts() {
    let s = TestServer::start().await;
    let a = send(http_client().get(s.url("/jwks.json"))).await;
    assert_eq!(a.status, 200);
    let keys = a.json["keys"].as_array().unwrap();
    let algs: Vec<&str> = keys.iter().map(|k| k["alg"].as_str().unwrap()).collect();
    assert!(algs.contains(&"EdDSA") && algs.contains(&"RS256"), "{algs:?}");
    for k in keys {
        assert_eq!(k["use"], "sig");
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(k.get(private).is_none(), "private part {private} published");
        }
    }
}

#[tokio::test]
async fn expired_access_token_is_refused_with_reason() {
    let s = TestServer::start().await;
    let c = http_client();
    let login = s.signed_in(&c, "exp").await;
    s.clock.advance(Duration::from_secs(300 + 29));
    assert_eq!(s.get_auth(&c, "/auth/me", login.str("access_token")).await.status, 200, "inside the skew");
    s.clock.advance(Duration::from_secs(2));
    let a = s.get_auth(&c, "/auth/me", login.str("access_token")).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.json["error_reason"], "expired");
}

#[tokio::test]
async fn key_rotation_publishes_first_then_signs_and_keeps_old_tokens_valid() {
    let s = TestServer::start().await;
    let c = http_client();
    let login = s.signed_in(&c, "rot").await;
    let old_kid = header(login.str("access_token"))["kid"].as_str().unwrap().to_owned();
    let out = s.cli(&["keys", "rotate"], "").await.unwrap();
    let created: Value = serde_json::from_str(out.trim()).unwrap();
    let new_kids: Vec<String> =
        created["created"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_owned()).collect();
    assert_eq!(new_kids.len(), 2);
    let listed = s.cli(&["keys", "list"], "").await.unwrap();
    assert_eq!(listed.lines().count(), 4);
    assert_eq!(listed.matches("\"state\":\"pending\"").count(), 2, "{listed}");
    // The running server publishes the new keys within its reload interval.
    let mut published = false;
    for _ in 0..100 {
        let jwks = send(c.get(s.url("/jwks.json"))).await.text;
        if new_kids.iter().all(|k| jwks.contains(k.as_str())) {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(published, "new keys published");
    // They do not sign yet.
    let r = s.refresh(&c, login.str("refresh_token")).await;
    assert_eq!(header(r.str("access_token"))["kid"], old_kid.as_str());
    // After the pre-publication period they do; the old token still verifies.
    s.clock.advance(Duration::from_secs(601));
    let r2 = s.refresh(&c, r.str("refresh_token")).await;
    let kid = header(r2.str("access_token"))["kid"].as_str().unwrap().to_owned();
    assert!(new_kids.contains(&kid), "signed with a new key");
    // A token signed with the old key still verifies against the published JWKS.
    verify(&s, r.str("access_token")).await;
    let states: Vec<&str> = s.app.admin_list_keys().await.unwrap().iter().map(|k| k.state).collect();
    assert_eq!(states.iter().filter(|s| **s == "retiring").count(), 2, "{states:?}");
    // Once every token of the old key has expired, it leaves the JWKS.
    s.clock.advance(Duration::from_secs(2 * 3600));
    s.app.maintain().await.unwrap();
    let jwks = send(c.get(s.url("/jwks.json"))).await.text;
    assert!(!jwks.contains(&old_kid), "old key unpublished");
}

#[tokio::test]
async fn signing_keys_are_encrypted_at_rest_with_the_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("k.db").display());
    let load = |key: Option<&str>| {
        let flags = latchkey::config::Flags { database_url: Some(url.clone()), ..Default::default() };
        let key = key.map(str::to_owned);
        latchkey::config::Config::load_with(None, &flags, &move |k| {
            (k == "LATCHKEY_MASTER_KEY").then(|| key.clone()).flatten()
        })
        .unwrap()
    };
    let clock = std::sync::Arc::new(latchkey_core::SystemClock);
    let app = latchkey::server::start_service(&load(Some("first master key")), clock.clone()).await.unwrap();
    for key in app.store().list_signing_keys().await.unwrap() {
        assert!(key.private_key.starts_with(b"LKE1"), "stored encrypted");
    }
    drop(app);
    let wrong = latchkey::server::start_service(&load(Some("another key")), clock.clone()).await;
    assert!(format!("{:#}", wrong.err().unwrap()).contains("LATCHKEY_MASTER_KEY"));
    assert!(latchkey::server::start_service(&load(None), clock.clone()).await.is_err());
    assert!(latchkey::server::start_service(&load(Some("first master key")), clock).await.is_ok());
}
