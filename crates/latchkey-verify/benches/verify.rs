//! Criterion benchmarks of `latchkey-verify` (issue: resource servers): uncached
//! verification against the raw signature check of the same algorithm (`jsonwebtoken`'s
//! `decode` with the same key), and cached verification of a token seen before.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "benchmark setup fails loudly"
)]
#![allow(missing_docs, reason = "criterion's macros generate undocumented functions")]

use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use latchkey_proto::claims::AccessTokenClaims;
use latchkey_verify::Verifier;

const ISSUER: &str = "http://bench.invalid";
const TOKENS: usize = 20_000;

fn tokens() -> (String, DecodingKey, Vec<String>) {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    let jwks = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1", "alg": "EdDSA", "use": "sig"}]});
    let encoding = EncodingKey::from_ed_der(pkcs8.as_ref());
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("k1".into());
    header.typ = Some("at+jwt".into());
    let exp = 4_000_000_000;
    let tokens = (0..TOKENS)
        .map(|i| {
            let claims = AccessTokenClaims {
                iss: ISSUER.into(),
                sub: format!("user{i}"),
                aud: ISSUER.into(),
                client_id: "latchkey".into(),
                exp,
                iat: 1_700_000_000,
                nbf: None,
                jti: format!("jti{i}"),
                sid: Some(format!("sid{i}")),
                scope: "profile".into(),
                roles: vec!["manager".into()],
                authz_ver: 1,
                cnf: None,
                amr: Vec::new(),
                acr: None,
            };
            jsonwebtoken::encode(&header, &claims, &encoding).unwrap()
        })
        .collect();
    (jwks.to_string(), DecodingKey::from_ed_components(&x).unwrap(), tokens)
}

fn verify(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (jwks, key, tokens) = tokens();
    // Signature and claims only: the feed's lookups are measured by the memory benchmark.
    let verifier =
        rt.block_on(Verifier::builder(ISSUER).jwks_json(jwks).insecure_without_revocation().build()).unwrap();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[ISSUER]);
    let next = AtomicUsize::new(0);
    c.bench_function("raw EdDSA decode (jsonwebtoken)", |b| {
        b.iter(|| {
            let t = &tokens[next.fetch_add(1, Ordering::Relaxed) % TOKENS];
            jsonwebtoken::decode::<AccessTokenClaims>(t, &key, &validation).unwrap()
        });
    });
    // Every iteration a token not seen before (the cache is bounded and cleared when full,
    // and 20,000 distinct tokens cycle through it).
    let next = AtomicUsize::new(0);
    c.bench_function("verify uncached (EdDSA)", |b| {
        b.to_async(&rt).iter(|| async {
            let t = &tokens[next.fetch_add(1, Ordering::Relaxed) % TOKENS];
            verifier.verify(t).await.unwrap()
        });
    });
    let hot = tokens[0].clone();
    rt.block_on(verifier.verify(&hot)).unwrap();
    c.bench_function("verify cached", |b| {
        b.to_async(&rt).iter(|| async { verifier.verify(&hot).await.unwrap() });
    });
}

criterion_group!(benches, verify);
criterion_main!(benches);
