//! `private_key_jwt` client authentication over HTTP (RFC 7523, SPEC 13): clients with
//! registered `jwks` and with a `jwks_uri` Latchkey fetches (served here by a small HTTP
//! server whose keys rotate), assertions refused for every claim that does not fit, and
//! each `jti` accepted once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::{TestServer, http_client, send};

const TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A client's P-256 signing key.
struct ClientKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl ClientKey {
    fn new(kid: &str) -> Self {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref();
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        Self { kid: kid.to_owned(), encoding: EncodingKey::from_ec_der(pkcs8.as_ref()), jwk }
    }

    /// An assertion for `client_id`, with `claims` changed or removed (`null`).
    fn assertion(&self, s: &TestServer, client_id: &str, changes: Value) -> String {
        let now = latchkey_core::Clock::now(s.clock.as_ref()).0;
        let mut claims = json!({
            "iss": client_id, "sub": client_id, "aud": latchkey_testkit::ISSUER,
            "iat": now, "exp": now + 60, "jti": latchkey_core::crypto::new_id(),
        });
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        encode(&header, &claims, &self.encoding).unwrap()
    }
}

fn jwks(keys: &[&ClientKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

async fn machine(s: &TestServer, key_flag: &str, keys: &str) -> String {
    let args = [
        "client",
        "add",
        "--name",
        "Signed job",
        "--grant-types",
        "client_credentials",
        "--scopes",
        "notes:read",
        key_flag,
        keys,
    ];
    let out = s.cli(&args, "").await.unwrap();
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["client_secret"].is_null(), "a key-holding client gets no secret: {v}");
    v["client_id"].as_str().unwrap().to_owned()
}

async fn token_with(s: &TestServer, form: &[(&str, &str)]) -> latchkey_testkit::Answer {
    let mut all = vec![("grant_type", "client_credentials")];
    all.extend_from_slice(form);
    send(http_client().post(s.url("/oauth/token")).form(&all)).await
}

#[tokio::test]
async fn registered_keys_sign_assertions_that_work_once() {
    let s = TestServer::start().await;
    let key = ClientKey::new("k1");
    let stranger = ClientKey::new("k1");
    let id = machine(&s, "--jwks", &jwks(&[&key])).await;

    let good = key.assertion(&s, &id, json!({}));
    let ok = token_with(&s, &[("client_assertion_type", TYPE), ("client_assertion", &good)]).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let replay = token_with(&s, &[("client_assertion_type", TYPE), ("client_assertion", &good)]).await;
    assert_eq!(
        (replay.status, replay.json["error"].as_str()),
        (401, Some("invalid_client")),
        "each jti once"
    );
    // The token endpoint's URL is an audience too, and client_id may come along.
    let to_endpoint =
        key.assertion(&s, &id, json!({"aud": format!("{}/oauth/token", latchkey_testkit::ISSUER)}));
    let ok = token_with(
        &s,
        &[("client_id", &id), ("client_assertion_type", TYPE), ("client_assertion", &to_endpoint)],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text);

    let now = latchkey_core::Clock::now(s.clock.as_ref()).0;
    for (what, assertion) in [
        ("another audience", key.assertion(&s, &id, json!({"aud": "https://elsewhere.example"}))),
        ("expired", key.assertion(&s, &id, json!({"exp": now - 120}))),
        ("two hours long", key.assertion(&s, &id, json!({"exp": now + 7200}))),
        ("no jti", key.assertion(&s, &id, json!({"jti": null}))),
        ("no exp", key.assertion(&s, &id, json!({"exp": null}))),
        ("sub is another", key.assertion(&s, &id, json!({"sub": "someone"}))),
        ("issued in the future", key.assertion(&s, &id, json!({"iat": now + 3600}))),
        ("another key", stranger.assertion(&s, &id, json!({}))),
        ("not a JWT", "eyJ.nope.x".to_owned()),
    ] {
        let r = token_with(&s, &[("client_assertion_type", TYPE), ("client_assertion", &assertion)]).await;
        assert_eq!((r.status, r.json["error"].as_str()), (401, Some("invalid_client")), "{what}: {}", r.text);
    }
    let fresh = key.assertion(&s, &id, json!({}));
    let mismatch = token_with(
        &s,
        &[("client_id", "other"), ("client_assertion_type", TYPE), ("client_assertion", &fresh)],
    )
    .await;
    assert_eq!(mismatch.status, 401);
    let wrong_type =
        token_with(&s, &[("client_assertion_type", "urn:x"), ("client_assertion", &fresh)]).await;
    assert_eq!(wrong_type.status, 401);
    let by_id_alone = token_with(&s, &[("client_id", &id)]).await;
    assert_eq!(by_id_alone.status, 401, "a key-holding client is not public");
    let two_methods = send(http_client().post(s.url("/oauth/token")).basic_auth(&id, Some("lks_x")).form(&[
        ("grant_type", "client_credentials"),
        ("client_assertion_type", TYPE),
        ("client_assertion", &fresh),
    ]))
    .await;
    assert_eq!(two_methods.json["error"], "invalid_request");
    let d = send(http_client().get(s.url("/.well-known/openid-configuration"))).await;
    assert!(
        d.json["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "private_key_jwt")
    );
    for bad in ["{}", "not json", "{\"keys\": 5}"] {
        let args = ["client", "add", "--name", "Bad", "--grant-types", "client_credentials", "--jwks", bad];
        assert!(s.cli(&args, "").await.is_err(), "{bad}");
    }
}

/// A `jwks_uri` served by the test: Latchkey fetches it, caches it, and fetches it again
/// when an assertion names a key it has not seen (a rotation).
#[tokio::test]
async fn keys_from_a_jwks_uri_are_fetched_cached_and_refetched_for_a_new_kid() {
    let s = TestServer::start().await;
    let old = ClientKey::new("old");
    let new = ClientKey::new("new");
    let served = Arc::new(Mutex::new(jwks(&[&old])));
    let fetches = Arc::new(Mutex::new(0usize));
    let (doc, count) = (Arc::clone(&served), Arc::clone(&fetches));
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let (doc, count) = (Arc::clone(&doc), Arc::clone(&count));
            async move {
                *count.lock().unwrap() += 1;
                doc.lock().unwrap().clone()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}/jwks", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let id = machine(&s, "--jwks-uri", &uri).await;
    for _ in 0..3 {
        let r = token_with(
            &s,
            &[("client_assertion_type", TYPE), ("client_assertion", &old.assertion(&s, &id, json!({})))],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    assert_eq!(*fetches.lock().unwrap(), 1, "cached");

    // Rotation: the new kid is fetched (not sooner than 10 s after the last fetch).
    *served.lock().unwrap() = jwks(&[&old, &new]);
    s.clock.advance(Duration::from_secs(11));
    let r = token_with(
        &s,
        &[("client_assertion_type", TYPE), ("client_assertion", &new.assertion(&s, &id, json!({})))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(*fetches.lock().unwrap(), 2);
    // An unknown kid right after does not make it fetch again.
    let stranger = ClientKey::new("stranger");
    let r = token_with(
        &s,
        &[("client_assertion_type", TYPE), ("client_assertion", &stranger.assertion(&s, &id, json!({})))],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(*fetches.lock().unwrap(), 2, "refetches are rate-limited");

    // The key server goes away: the cached keys still work until they are stale.
    server.abort();
    let r = token_with(
        &s,
        &[("client_assertion_type", TYPE), ("client_assertion", &new.assertion(&s, &id, json!({})))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        s.cli(
            &[
                "client",
                "add",
                "--name",
                "Bad",
                "--grant-types",
                "client_credentials",
                "--jwks-uri",
                "http://keys.example/jwks"
            ],
            ""
        )
        .await
        .is_err(),
        "http only on loopback"
    );
}
