//! One DPoP proof check (`latchkey_dpop::check`: base64url, two JSON documents, the key,
//! the signature, the claims) against the raw signature check of its algorithm alone, with
//! the same libraries: aws-lc-rs for ES256, ed25519-dalek's strict verification for EdDSA.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    missing_docs,
    reason = "benchmark code"
)]

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use latchkey_dpop::{Expected, ProofKey, check};

const URL: &str = "https://id.example.com/oauth/token";
const NOW: i64 = 1_800_000_000;

/// The signing input, the signature and the public key bytes of a proof, for the raw check.
fn parts(proof: &str) -> (Vec<u8>, Vec<u8>) {
    let (input, sig) = proof.rsplit_once('.').unwrap();
    (input.as_bytes().to_vec(), URL_SAFE_NO_PAD.decode(sig).unwrap())
}

fn coordinate(key: &ProofKey, name: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(key.public_jwk()[name].as_str().unwrap()).unwrap()
}

fn bench(c: &mut Criterion) {
    let expected = Expected { method: "POST", url: URL, now: NOW, access_token: None };

    let es = ProofKey::generate_es256().unwrap();
    let proof = es.proof("POST", URL, NOW, None, None).unwrap();
    let (input, sig) = parts(&proof);
    let mut point = vec![0x04];
    point.extend(coordinate(&es, "x"));
    point.extend(coordinate(&es, "y"));
    c.bench_function("ES256 proof check", |b| b.iter(|| check(&proof, &expected).unwrap()));
    c.bench_function("ES256 raw signature check", |b| {
        b.iter(|| UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point).verify(&input, &sig).unwrap());
    });

    let ed = ProofKey::generate_ed25519().unwrap();
    let proof = ed.proof("POST", URL, NOW, None, None).unwrap();
    let (input, sig) = parts(&proof);
    let x: [u8; 32] = coordinate(&ed, "x").try_into().unwrap();
    c.bench_function("EdDSA proof check", |b| b.iter(|| check(&proof, &expected).unwrap()));
    c.bench_function("EdDSA raw signature check", |b| {
        b.iter(|| {
            let key = ed25519_dalek::VerifyingKey::from_bytes(&x).unwrap();
            let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
            key.verify_strict(&input, &sig).unwrap();
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
