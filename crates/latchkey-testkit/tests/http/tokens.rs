//! Access tokens exactly as SPEC 3 (RFC 9068), verified by an independent JOSE library
//! against the published JWKS, for every signing algorithm; expiry; key rotation with
//! overlap; signing keys encrypted at rest.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use latchkey_core::keys::Algorithm;
use serde_json::{Value, json};

use crate::{TestServer, http_client, send};

/// The claims of a JWT, without verifying it.
pub(crate) fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("json")
}

/// `latchkey keys rotate` on the server's database; returns the new key ids.
pub(crate) async fn rotate_keys(s: &TestServer) -> Vec<String> {
    let out = s.cli(&["keys", "rotate"], "").await.unwrap();
    let created: Value = serde_json::from_str(out.trim()).unwrap();
    created["created"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_owned()).collect()
}

pub(crate) fn header(jwt: &str) -> Value {
    let h = jwt.split('.').next().expect("header");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).expect("base64")).expect("json")
}

/// Verifies a token with `jsonwebtoken` and the server's JWKS, as a resource server would.
pub(crate) async fn verify(s: &TestServer, jwt: &str) -> Value {
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
    let new_kids = rotate_keys(&s).await;
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
    // After the pre-publication period they do; the old token still verifies. The CLI
    // dated the keys by the real clock, which ran on since the server's clock started: a
    // minute of margin keeps a slow machine from reading "not active yet".
    s.clock.advance(Duration::from_secs(660));
    let r2 = s.refresh(&c, r.str("refresh_token")).await;
    let kid = header(r2.str("access_token"))["kid"].as_str().unwrap().to_owned();
    assert!(new_kids.contains(&kid), "signed with a new key");
    // A token signed with the old key still verifies against the published JWKS.
    verify(&s, r.str("access_token")).await;
    let states: Vec<&str> = s.service.admin_list_keys().await.unwrap().iter().map(|k| k.state).collect();
    assert_eq!(states.iter().filter(|s| **s == "retiring").count(), 2, "{states:?}");
    // Once every token of the old key has expired, it leaves the JWKS.
    s.clock.advance(Duration::from_secs(2 * 3600));
    s.service.maintain().await.unwrap();
    let jwks = send(c.get(s.url("/jwks.json"))).await.text;
    assert!(!jwks.contains(&old_kid), "old key unpublished");
}

/// Signs `claims` with the server's own current EdDSA key, under a header of our choosing:
/// what an attacker cannot do, used here to prove each claim check works on its own.
fn forge(s: &TestServer, typ: &str, claims: &Value) -> String {
    let now = latchkey_core::Clock::now(&*s.clock);
    let set = s.service.keys().current();
    let key = set.signer(Algorithm::EdDSA, now).expect("signer");
    key.sign_jwt(typ, claims).expect("sign")
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn bearer_verification_rejects_every_forgery() {
    let s = TestServer::start().await;
    let c = http_client();
    let login = s.signed_in(&c, "target").await;
    let at = login.str("access_token");
    let good = claims(at);
    let kid = header(at)["kid"].as_str().unwrap().to_owned();
    let me = |token: String| {
        let c = c.clone();
        let url = s.url("/auth/me");
        async move { send(c.get(url).bearer_auth(token)).await }
    };
    let expect = |a: &latchkey_testkit::Answer, reason: &str| {
        assert_eq!(a.status, 401, "{reason}: {}", a.text);
        assert_eq!(a.json["error_reason"], reason, "{}", a.text);
        assert!(a.header("www-authenticate").unwrap().contains("invalid_token"));
    };
    // Sanity: the untouched token and a re-signed copy of its claims pass.
    assert_eq!(me(at.to_owned()).await.status, 200);
    assert_eq!(me(forge(&s, "at+jwt", &good)).await.status, 200);

    // alg none, in any case, with and without a signature part.
    for alg in ["none", "None", "NONE"] {
        let h = json!({"alg": alg, "typ": "at+jwt", "kid": kid});
        let token = format!("{}.{}.", b64(&h), b64(&good));
        assert_eq!(me(token).await.status, 401, "alg {alg}");
    }
    // HS256 keyed with the public key (algorithm confusion).
    let jwks: Value = serde_json::from_str(&send(c.get(s.url("/jwks.json"))).await.text).unwrap();
    let x = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid.as_str()).unwrap()["x"]
        .as_str()
        .unwrap()
        .to_owned();
    let raw = URL_SAFE_NO_PAD.decode(&x).unwrap();
    for secret in [raw.clone(), x.as_bytes().to_vec()] {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some(kid.clone());
        h.typ = Some("at+jwt".into());
        let token =
            jsonwebtoken::encode(&h, &good, &jsonwebtoken::EncodingKey::from_secret(&secret)).unwrap();
        let a = me(token).await;
        assert_eq!(a.status, 401);
        assert_eq!(a.json["error_reason"], "bad_signature", "{}", a.text);
    }
    // Unknown and missing kid.
    let parts: Vec<&str> = at.split('.').collect();
    let h = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "no-such-key"});
    expect(&me(format!("{}.{}.{}", b64(&h), parts[1], parts[2])).await, "unknown_key");
    let h = json!({"alg": "EdDSA", "typ": "at+jwt"});
    expect(&me(format!("{}.{}.{}", b64(&h), parts[1], parts[2])).await, "unknown_key");
    // Properly signed, but wrong typ, iss, aud, or issued in the future.
    expect(&me(forge(&s, "JWT", &good)).await, "malformed");
    let mut bad = good.clone();
    bad["iss"] = json!("https://evil.example");
    expect(&me(forge(&s, "at+jwt", &bad)).await, "wrong_issuer");
    let mut bad = good.clone();
    bad["aud"] = json!("https://other-api.example");
    expect(&me(forge(&s, "at+jwt", &bad)).await, "wrong_audience");
    let mut bad = good.clone();
    bad["iat"] = json!(good["iat"].as_i64().unwrap() + 3600);
    expect(&me(forge(&s, "at+jwt", &bad)).await, "malformed");
    let mut bad = good.clone();
    bad["exp"] = json!(good["iat"].as_i64().unwrap() - 60);
    expect(&me(forge(&s, "at+jwt", &bad)).await, "expired");
    let mut bad = good.clone();
    bad.as_object_mut().unwrap().remove("sid");
    expect(&me(forge(&s, "at+jwt", &bad)).await, "malformed");
    // Signature of another token grafted on.
    let other = s.login(&c, "target", "correct horse battery").await;
    let other_sig = other.str("access_token").rsplit('.').next().unwrap().to_owned();
    expect(&me(format!("{}.{}.{}", parts[0], parts[1], other_sig)).await, "bad_signature");
}

#[tokio::test]
async fn keys_rotate_on_schedule() {
    let s = TestServer::start().await;
    let c = http_client();
    let login = s.signed_in(&c, "sched").await;
    let first_kid = header(login.str("access_token"))["kid"].as_str().unwrap().to_owned();
    s.clock.advance(Duration::from_secs(31 * 86_400));
    s.service.maintain().await.unwrap();
    let listed = s.service.admin_list_keys().await.unwrap();
    assert_eq!(listed.iter().filter(|k| k.state == "pending").count(), 2, "{listed:?}");
    // Still signing with the old key until the new one activates.
    let l2 = s.login(&c, "sched", "correct horse battery").await;
    assert_eq!(header(l2.str("access_token"))["kid"], first_kid.as_str());
    s.clock.advance(Duration::from_secs(601));
    s.service.maintain().await.unwrap();
    let l3 = s.login(&c, "sched", "correct horse battery").await;
    assert_ne!(header(l3.str("access_token"))["kid"], first_kid.as_str());
}

#[tokio::test]
async fn access_tokens_never_outlive_their_session() {
    let s = TestServer::start_with(|c| c.settings.session_max_ttl = Duration::from_secs(100)).await;
    let c = http_client();
    let login = s.signed_in(&c, "short").await;
    let cl = claims(login.str("access_token"));
    assert_eq!(cl["exp"].as_i64().unwrap() - cl["iat"].as_i64().unwrap(), 100);
    assert_eq!(login.json["expires_in"], 100);
}
