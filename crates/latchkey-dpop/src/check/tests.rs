use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use super::*;
use crate::ProofKey;

const URL: &str = "https://id.example.com/oauth/token";
const NOW: i64 = 1_800_000_000;

fn expected() -> Expected<'static> {
    Expected { method: "POST", url: URL, now: NOW, access_token: None }
}

fn keys() -> [ProofKey; 2] {
    [ProofKey::generate_es256().unwrap(), ProofKey::generate_ed25519().unwrap()]
}

#[test]
fn an_honest_proof_passes_with_the_keys_thumbprint() {
    for key in keys() {
        let proof = key.proof("POST", URL, NOW, None, Some("n-1")).unwrap();
        let checked = check(&proof, &expected()).unwrap();
        assert_eq!(&checked.jkt, key.thumbprint());
        assert_eq!(checked.nonce.as_deref(), Some("n-1"));
        assert_eq!(checked.iat, NOW);
        assert!(!checked.jti.is_empty());
    }
}

#[test]
fn the_thumbprint_is_rfc_7638s() {
    // RFC 7638 §3.1 computes it for an RSA key; RFC 8037 §A.3 for this Ed25519 key.
    let jkt = Thumbprint::of_members(
        r#"{"crv":"Ed25519","kty":"OKP","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#,
    );
    assert_eq!(jkt.as_str(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
}

#[test]
fn an_ed25519_key_may_name_its_alg_ed25519_as_rfc_9864_does() {
    let key = ProofKey::generate_ed25519().unwrap();
    let claims = json!({"jti": "a", "htm": "POST", "htu": URL, "iat": NOW});
    let proof =
        key.sign(&json!({"typ": "dpop+jwt", "alg": "Ed25519", "jwk": key.public_jwk()}), &claims).unwrap();
    assert_eq!(&check(&proof, &expected()).unwrap().jkt, key.thumbprint());
    // Not for a P-256 key.
    let es = ProofKey::generate_es256().unwrap();
    let proof =
        es.sign(&json!({"typ": "dpop+jwt", "alg": "Ed25519", "jwk": es.public_jwk()}), &claims).unwrap();
    assert_eq!(check(&proof, &expected()).unwrap_err(), ProofError::BadKey);
}

#[test]
fn query_fragment_case_and_default_port_do_not_matter_in_htu() {
    let key = ProofKey::generate_es256().unwrap();
    for htu in ["https://ID.example.com:443/oauth/token", "https://id.example.com/oauth/token?x=1#f"] {
        let claims = json!({"jti": "a", "htm": "POST", "htu": htu, "iat": NOW});
        let proof =
            key.sign(&json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.public_jwk()}), &claims).unwrap();
        check(&proof, &expected()).unwrap();
    }
}

#[test]
fn each_mismatch_has_its_error() {
    let key = ProofKey::generate_es256().unwrap();
    let proof = |m: &str, u: &str, iat: i64, ath: Option<&str>| key.proof(m, u, iat, ath, None).unwrap();
    let e = expected();
    assert_eq!(check(&proof("GET", URL, NOW, None), &e).unwrap_err(), ProofError::WrongMethod);
    assert_eq!(
        check(&proof("POST", "https://id.example.com/auth/refresh", NOW, None), &e).unwrap_err(),
        ProofError::WrongUrl
    );
    assert_eq!(
        check(&proof("POST", "http://id.example.com/oauth/token", NOW, None), &e).unwrap_err(),
        ProofError::WrongUrl
    );
    assert_eq!(check(&proof("POST", URL, NOW - 61, None), &e).unwrap_err(), ProofError::Stale);
    assert_eq!(check(&proof("POST", URL, NOW + 61, None), &e).unwrap_err(), ProofError::Stale);
    check(&proof("POST", URL, NOW - 60, None), &e).unwrap();
    // ath: required with a token, refused without one, and must be the token's.
    let with_token = Expected { access_token: Some("tok"), ..e };
    assert_eq!(
        check(&proof("POST", URL, NOW, None), &with_token).unwrap_err(),
        ProofError::AccessTokenMismatch
    );
    assert_eq!(
        check(&proof("POST", URL, NOW, Some("other")), &with_token).unwrap_err(),
        ProofError::AccessTokenMismatch
    );
    assert_eq!(
        check(&proof("POST", URL, NOW, Some("tok")), &e).unwrap_err(),
        ProofError::AccessTokenMismatch
    );
    check(&proof("POST", URL, NOW, Some("tok")), &with_token).unwrap();
}

#[test]
fn forged_and_malformed_proofs_are_refused() {
    let [es, ed] = keys();
    let claims = json!({"jti": "a", "htm": "POST", "htu": URL, "iat": NOW});
    let header = |alg: &str, jwk: &serde_json::Value| json!({"typ": "dpop+jwt", "alg": alg, "jwk": jwk});
    let e = expected();
    // Signed by one key, naming another.
    let forged =
        es.sign(&header("ES256", ProofKey::generate_es256().unwrap().public_jwk()), &claims).unwrap();
    assert_eq!(check(&forged, &e).unwrap_err(), ProofError::BadSignature);
    // alg none, HS256, RS256; alg that does not fit the key.
    for alg in ["none", "HS256", "RS256"] {
        let p = es.sign(&header(alg, es.public_jwk()), &claims).unwrap();
        assert_eq!(check(&p, &e).unwrap_err(), ProofError::UnsupportedAlgorithm, "{alg}");
    }
    let p = ed.sign(&header("ES256", ed.public_jwk()), &claims).unwrap();
    assert_eq!(check(&p, &e).unwrap_err(), ProofError::BadKey);
    let unsigned = format!("{}.", forged.rsplit_once('.').unwrap().0);
    assert_eq!(check(&unsigned, &e).unwrap_err(), ProofError::BadSignature);
    // A private key in the header.
    let mut private = es.public_jwk().clone();
    private["d"] = json!("AAAA");
    let p = es.sign(&header("ES256", &private), &claims).unwrap();
    assert_eq!(check(&p, &e).unwrap_err(), ProofError::BadKey);
    // typ.
    let p = es.sign(&json!({"typ": "JWT", "alg": "ES256", "jwk": es.public_jwk()}), &claims).unwrap();
    assert!(matches!(check(&p, &e).unwrap_err(), ProofError::Malformed(_)));
    // A critical extension nobody here understands.
    let p = es
        .sign(&json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": es.public_jwk(), "crit": ["b64"], "b64": false}), &claims)
        .unwrap();
    assert!(matches!(check(&p, &e).unwrap_err(), ProofError::Malformed(_)));
    // Missing claims, empty jti, garbage.
    for bad in [
        json!({"htm": "POST", "htu": URL, "iat": NOW}),
        json!({"jti": "", "htm": "POST", "htu": URL, "iat": NOW}),
    ] {
        let p = es.sign(&header("ES256", es.public_jwk()), &bad).unwrap();
        assert!(matches!(check(&p, &e).unwrap_err(), ProofError::Malformed(_)));
    }
    for garbage in ["", "a.b", "a.b.c.d", "!!.??.**", &"A".repeat(3000)] {
        assert!(matches!(check(garbage, &e).unwrap_err(), ProofError::Malformed(_)), "{garbage:.20}");
    }
}

#[test]
fn an_ed25519_key_of_small_order_is_refused_so_nobody_can_forge_for_it() {
    // The identity point, and a point of order 8: with either, R = identity and S = 0 is a
    // signature of every message.
    let forged_sig = {
        let mut s = [0u8; 64];
        s[0] = 1;
        URL_SAFE_NO_PAD.encode(s)
    };
    for x in ["AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "JuiVj8KyJ7BFw_SJ8u-Y8NXfrAXTxjM5sTgCiG1T_AU"] {
        let header =
            json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": x}});
        let claims = json!({"jti": "a", "htm": "POST", "htu": URL, "iat": NOW});
        let proof = format!(
            "{}.{}.{forged_sig}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        assert_eq!(check(&proof, &expected()).unwrap_err(), ProofError::BadKey, "{x}");
    }
}
