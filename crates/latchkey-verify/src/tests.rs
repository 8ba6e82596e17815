//! Unit tests of what a verifier refuses to be built without, the clock it judges tokens by,
//! and the role and scope guards (SPEC 5.4, 5.5, 13). Tokens are signed here with a key of
//! the test's own, handed to the verifier with `jwks_json`, so no server is needed. The
//! behaviour against the real server is in `latchkey-testkit`'s `tests/http/notes.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use latchkey_proto::TokenErrorReason;
use latchkey_proto::claims::AccessTokenClaims;

use crate::axum::{AccessToken, Missing, Rejection};
use crate::{BuildError, FIRST_PARTY_CLIENT_ID, Verified, Verifier, VerifierBuilder, VerifyError};

const ISSUER: &str = "http://verify.test";
/// 2026-01-01: the tokens below are long expired by the system clock, so a verifier that
/// accepts them is reading the injected one.
const T0: i64 = 1_767_225_600;

/// A signing key and the JWKS that publishes it.
struct Keys {
    jwks: String,
    encoding: EncodingKey,
}

fn keys() -> Keys {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    let jwks = serde_json::json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1", "alg": "EdDSA", "use": "sig"}
    ]});
    Keys { jwks: jwks.to_string(), encoding: EncodingKey::from_ed_der(pkcs8.as_ref()) }
}

/// Claims of a user's token issued at `T0` for five minutes.
fn claims(client_id: &str, scope: &str, roles: &[&str]) -> AccessTokenClaims {
    AccessTokenClaims {
        iss: ISSUER.into(),
        sub: "user-1".into(),
        aud: ISSUER.into(),
        client_id: client_id.into(),
        exp: T0 + 300,
        iat: T0,
        nbf: None,
        jti: "jti-1".into(),
        sid: Some("sid-1".into()),
        scope: scope.into(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        authz_ver: 1,
        cnf: None,
        amr: Vec::new(),
        acr: None,
    }
}

fn sign(keys: &Keys, claims: &AccessTokenClaims) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("k1".into());
    header.typ = Some("at+jwt".into());
    jsonwebtoken::encode(&header, claims, &keys.encoding).unwrap()
}

fn builder(keys: &Keys) -> VerifierBuilder {
    Verifier::builder(ISSUER).jwks_json(keys.jwks.clone())
}

/// A clock the test moves: seconds since the epoch.
fn manual_clock(start: i64) -> (Arc<AtomicI64>, impl Fn() -> SystemTime + Send + Sync + 'static) {
    let secs = Arc::new(AtomicI64::new(start));
    let read = Arc::clone(&secs);
    (secs, move || UNIX_EPOCH + Duration::from_secs(read.load(Ordering::SeqCst).unsigned_abs()))
}

#[tokio::test]
async fn build_without_feed_credentials_is_refused() {
    let k = keys();
    assert!(matches!(builder(&k).build().await, Err(BuildError::NoRevocationFeed)));
    // The message tells the developer both ways out.
    let message = BuildError::NoRevocationFeed.to_string();
    assert!(message.contains("feed_credentials()") && message.contains("insecure_without_revocation()"));
    // Both choices at once are refused too: neither silently wins.
    let both = builder(&k).feed_credentials("id", "secret").insecure_without_revocation().build().await;
    assert!(matches!(both, Err(BuildError::ConflictingRevocationChoice)));
}

#[tokio::test]
async fn insecure_without_revocation_is_the_only_way_to_skip_the_feed() {
    let k = keys();
    let (_, clock) = manual_clock(T0 + 10);
    let token = sign(&k, &claims(FIRST_PARTY_CLIENT_ID, "profile", &[]));
    // With feed credentials revocation is checked: the feed (nothing listens on port 9)
    // never delivers its snapshot, so the default fail-closed policy refuses the token.
    let followed = builder(&k)
        .endpoint("http://127.0.0.1:9")
        .feed_credentials("id", "secret")
        .poll_every(Duration::from_secs(3600))
        .time_fn(clock)
        .build()
        .await
        .unwrap();
    assert_eq!(followed.verify(&token).await, Err(VerifyError::FeedUnavailable));
    // Opted out: the same token is accepted on signature and claims alone.
    let (_, clock) = manual_clock(T0 + 10);
    let unchecked = builder(&k).insecure_without_revocation().time_fn(clock).build().await.unwrap();
    assert_eq!(unchecked.verify(&token).await.unwrap().claims.sub, "user-1");
}

#[test]
fn build_outside_a_tokio_runtime_is_refused_before_any_request() {
    use std::future::Future as _;
    use std::task::{Context, Poll, Waker};

    let k = keys();
    // Polled once, by hand, outside any runtime: `build` must answer at once, not panic
    // in `tokio::spawn` or in reqwest.
    let mut build = std::pin::pin!(Verifier::builder(ISSUER).insecure_without_revocation().build());
    match build.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Err(BuildError::NoTokioRuntime)) => {}
        other => panic!("expected NoTokioRuntime, got {:?}", other.map(|r| r.map(|_| ()))),
    }
    // The revocation choice is judged first: it needs no runtime either.
    let mut build = std::pin::pin!(builder(&k).build());
    assert!(matches!(
        build.as_mut().poll(&mut Context::from_waker(Waker::noop())),
        Poll::Ready(Err(BuildError::NoRevocationFeed))
    ));
}

#[tokio::test]
async fn tokens_are_judged_by_the_injected_clock() {
    let k = keys();
    let (now, clock) = manual_clock(T0 + 10);
    let verifier = builder(&k).insecure_without_revocation().time_fn(clock).build().await.unwrap();
    let token = sign(&k, &claims(FIRST_PARTY_CLIENT_ID, "profile", &[]));
    // Valid by the injected clock (long expired by the system's).
    assert!(verifier.verify(&token).await.is_ok());
    // Still inside the 30 s skew after `exp`.
    now.store(T0 + 300 + 29, Ordering::SeqCst);
    assert!(verifier.verify(&token).await.is_ok());
    // Past it: expired, although the token sits in the cache of verified tokens.
    now.store(T0 + 300 + 30, Ordering::SeqCst);
    assert_eq!(verifier.verify(&token).await, Err(VerifyError::Invalid(TokenErrorReason::Expired)));
    // Before `iat` (beyond the skew): issued in the future, so refused as malformed.
    now.store(T0 - 31, Ordering::SeqCst);
    assert_eq!(verifier.verify(&token).await, Err(VerifyError::Invalid(TokenErrorReason::Malformed)));
    // A verifier that never saw the token judges it by its clock too.
    let (_, late) = manual_clock(T0 + 400);
    let fresh = builder(&k).insecure_without_revocation().time_fn(late).build().await.unwrap();
    assert_eq!(fresh.verify(&token).await, Err(VerifyError::Invalid(TokenErrorReason::Expired)));
}

fn token(client_id: &str, scope: &str, roles: &[&str]) -> AccessToken {
    AccessToken(Verified { claims: claims(client_id, scope, roles) })
}

/// The status, the `WWW-Authenticate` challenge and the JSON body of a refusal.
async fn answer(rejection: Rejection) -> (StatusCode, String, serde_json::Value) {
    let res = rejection.into_response();
    let status = res.status();
    let challenge = res
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = axum::body::to_bytes(res.into_body(), 64 * 1024).await.unwrap();
    (status, challenge, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn scope_checks_pass_with_the_scope_and_answer_403_insufficient_scope_without() {
    let t = token("app-1", "openid notes", &[]);
    assert!(t.has_scope("notes") && t.has_scope("openid"));
    assert!(!t.has_scope("note") && !t.has_scope("openid notes") && !t.has_scope(""));
    assert_eq!(t.require_scope("notes"), Ok(()));
    let refused = t.require_scope("admin").unwrap_err();
    assert_eq!(refused, Rejection::InsufficientScope(Missing::Scope("admin".into())));
    let (status, challenge, body) = answer(refused).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // RFC 6750 §3.1: the challenge names the scope the client should ask for.
    assert_eq!(
        challenge,
        "Bearer error=\"insufficient_scope\", error_description=\"The access token lacks the scope admin.\", \
         scope=\"admin\""
    );
    assert_eq!(body["error"], "insufficient_scope");
    assert_eq!(body["error_description"], "The access token lacks the scope admin.");
}

#[tokio::test]
async fn role_checks_pass_with_the_role_and_answer_403_insufficient_scope_without() {
    let t = token(FIRST_PARTY_CLIENT_ID, "profile", &["manager"]);
    assert_eq!(t.require_role("manager"), Ok(()));
    let refused = t.require_role("admin").unwrap_err();
    assert_eq!(refused, Rejection::InsufficientScope(Missing::Role("admin".into())));
    let (status, challenge, body) = answer(refused).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A role is no scope a client could ask for: no `scope` attribute.
    assert_eq!(
        challenge,
        "Bearer error=\"insufficient_scope\", error_description=\"The access token lacks the role admin.\""
    );
    assert_eq!(body["error"], "insufficient_scope");
}

#[test]
fn app_scopes_bind_apps_and_not_first_party_tokens() {
    let first_party = token(FIRST_PARTY_CLIENT_ID, "profile", &["manager"]);
    assert!(first_party.is_first_party());
    assert_eq!(first_party.require_app_scope("notes"), Ok(()));
    // `require_scope` binds every token, first-party ones included.
    assert!(first_party.require_scope("notes").is_err());
    // An app is held to the scopes the user granted it, whatever roles its token carries.
    let without = token("app-1", "openid profile", &["manager"]);
    assert!(!without.is_first_party());
    assert_eq!(
        without.require_app_scope("notes"),
        Err(Rejection::InsufficientScope(Missing::Scope("notes".into())))
    );
    assert_eq!(token("app-1", "notes roles", &["manager"]).require_app_scope("notes"), Ok(()));
    // A client_credentials token (the client's own id as `sub`) is an app's too.
    assert!(!token("latchkey-not", "profile", &[]).is_first_party());
}

#[tokio::test]
async fn a_name_that_cannot_be_quoted_does_not_break_the_challenge() {
    let refused = token("app-1", "", &[]).require_scope("no\"te\\s\n").unwrap_err();
    let (status, challenge, body) = answer(refused).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(challenge.ends_with(", scope=\"notes\""), "{challenge}");
    // The JSON body keeps the name as given.
    assert_eq!(body["error_description"], "The access token lacks the scope no\"te\\s\n.");
}

// DPoP (SPEC 12).

const API: &str = "https://api.verify.test/notes";

/// A token bound to `key`, and a verifier judging by `T0 + 10`.
async fn bound(key: &latchkey_dpop::ProofKey) -> (Arc<Verifier>, String) {
    let k = keys();
    let (_, clock) = manual_clock(T0 + 10);
    let verifier = builder(&k).insecure_without_revocation().time_fn(clock).build().await.unwrap();
    let mut c = claims(FIRST_PARTY_CLIENT_ID, "profile", &[]);
    c.cnf = Some(latchkey_proto::claims::Confirmation { jkt: key.thumbprint().as_str().to_owned() });
    (verifier, sign(&k, &c))
}

#[tokio::test]
async fn a_bound_token_needs_a_proof_from_its_key_naming_it_and_the_request() {
    let key = latchkey_dpop::ProofKey::generate_es256().unwrap();
    let (v, token) = bound(&key).await;
    let t = T0 + 10;
    // As Bearer: refused, the client must use DPoP.
    assert_eq!(v.verify(&token).await, Err(VerifyError::Invalid(TokenErrorReason::DpopRequired)));
    // With a right proof: accepted once.
    let proof = key.proof("GET", API, t, Some(&token), None).unwrap();
    assert!(v.verify_dpop(&token, &proof, "GET", API).await.is_ok());
    assert_eq!(v.verify_dpop(&token, &proof, "GET", API).await, Err(VerifyError::ProofReplayed));
    // Another key, or a proof without `ath`, or for another request: refused.
    let other = latchkey_dpop::ProofKey::generate_ed25519().unwrap();
    let p = other.proof("GET", API, t, Some(&token), None).unwrap();
    assert_eq!(
        v.verify_dpop(&token, &p, "GET", API).await,
        Err(VerifyError::Invalid(TokenErrorReason::DpopKeyMismatch))
    );
    let p = key.proof("GET", API, t, None, None).unwrap();
    assert!(matches!(v.verify_dpop(&token, &p, "GET", API).await, Err(VerifyError::Proof(_))));
    let p = key.proof("POST", API, t, Some(&token), None).unwrap();
    assert!(matches!(v.verify_dpop(&token, &p, "GET", API).await, Err(VerifyError::Proof(_))));
    let p = key.proof("GET", API, t - 3600, Some(&token), None).unwrap();
    assert!(matches!(v.verify_dpop(&token, &p, "GET", API).await, Err(VerifyError::Proof(_))));
    // An unbound token sent as DPoP is refused too: nothing ties it to the proof.
    let k = keys();
    let (_, clock) = manual_clock(T0 + 10);
    let plain_verifier = builder(&k).insecure_without_revocation().time_fn(clock).build().await.unwrap();
    let unbound = sign(&k, &claims(FIRST_PARTY_CLIENT_ID, "profile", &[]));
    let p = key.proof("GET", API, t, Some(&unbound), None).unwrap();
    assert_eq!(
        plain_verifier.verify_dpop(&unbound, &p, "GET", API).await,
        Err(VerifyError::Invalid(TokenErrorReason::DpopKeyMismatch))
    );
}

/// Without `resource_url` (or the insecure Host rule) the axum layer takes no DPoP at all.
#[tokio::test]
async fn without_a_resource_url_the_extractor_takes_no_dpop() {
    use axum::extract::FromRequestParts as _;
    let key = latchkey_dpop::ProofKey::generate_es256().unwrap();
    let (v, token) = bound(&key).await;
    let proof = key.proof("GET", API, T0 + 10, Some(&token), None).unwrap();
    let req = axum::http::Request::get("/notes")
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", proof)
        .header("host", "api.verify.test")
        .body(())
        .unwrap();
    let (mut parts, ()) = req.into_parts();
    let refused = AccessToken::from_request_parts(&mut parts, &v).await.unwrap_err();
    assert!(matches!(refused, Rejection::VerifyDpop(VerifyError::Proof(_))), "{refused:?}");
}

#[tokio::test]
async fn dpop_refusals_carry_a_dpop_challenge_with_algs() {
    let (status, challenge, body) =
        answer(Rejection::Verify(VerifyError::Invalid(TokenErrorReason::DpopRequired))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.starts_with("DPoP error=\"invalid_token\""), "{challenge}");
    assert!(challenge.contains("algs=\"ES256 EdDSA Ed25519\""), "{challenge}");
    assert_eq!(body["error_reason"], "dpop_required");
    let (status, challenge, body) = answer(Rejection::VerifyDpop(VerifyError::ProofReplayed)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.starts_with("DPoP error=\"invalid_dpop_proof\""), "{challenge}");
    assert_eq!(body["error"], "invalid_dpop_proof");
    let (status, _, body) = answer(Rejection::VerifyDpop(VerifyError::ProofCacheFull)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "temporarily_unavailable");
    // Without a token, both schemes are offered.
    let res = Rejection::Missing.into_response();
    let offered: Vec<_> = res
        .headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(offered, ["Bearer", "DPoP algs=\"ES256 EdDSA Ed25519\""]);
}
