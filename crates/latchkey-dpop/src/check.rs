//! Checking a proof (RFC 9449 §4.3), everything that needs no memory: form, key,
//! signature, `typ`, `htm`, `htu`, `iat`, `ath`.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{IAT_WINDOW_SECS, MAX_PROOF_LEN, PROOF_TYP, Thumbprint, ath_of};

/// What the request a proof came with looks like.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The request's method (`POST`).
    pub method: &'a str,
    /// The request's URL as its clients reach it (the issuer's origin and the path), without
    /// query: behind a proxy the URL the server sees is not the one that was signed.
    pub url: &'a str,
    /// Now, in seconds since the epoch.
    pub now: i64,
    /// The access token the request carries, whose hash `ath` must be; `None` at the token
    /// endpoints, where the proof must not name one it could not know.
    pub access_token: Option<&'a str>,
}

/// A proof that passed [`check`]: what the caller still has to judge.
#[derive(Debug, Clone)]
pub struct CheckedProof {
    /// The key's thumbprint.
    pub jkt: Thumbprint,
    /// The proof's id, for the caller's replay cache.
    pub jti: String,
    /// When the client says it made the proof.
    pub iat: i64,
    /// The server nonce the proof carries, if any.
    pub nonce: Option<String>,
}

/// Why a proof was refused. Each answers `invalid_dpop_proof` (the server) or
/// `invalid_dpop_proof` in `WWW-Authenticate` (resource servers); the text is the
/// `error_description`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// Not a compact JWS of the expected parts, or a part that is not what RFC 9449 says.
    #[error("the DPoP proof is malformed: {0}")]
    Malformed(&'static str),
    /// `alg` is not ES256 or EdDSA, or does not fit the key.
    #[error("the DPoP proof's alg is not supported (ES256, EdDSA, Ed25519)")]
    UnsupportedAlgorithm,
    /// The `jwk` is not a public ES256 or Ed25519 key.
    #[error("the DPoP proof's jwk is not a public P-256 or Ed25519 key")]
    BadKey,
    /// The signature does not verify with the `jwk`.
    #[error("the DPoP proof's signature does not verify with its jwk")]
    BadSignature,
    /// `htm` is not the request's method.
    #[error("the DPoP proof's htm is not this request's method")]
    WrongMethod,
    /// `htu` is not the request's URL.
    #[error("the DPoP proof's htu is not this request's URL")]
    WrongUrl,
    /// `iat` is more than [`IAT_WINDOW_SECS`] away from now.
    #[error("the DPoP proof's iat is not within 60 seconds of now")]
    Stale,
    /// `ath` is missing, present where no access token came, or not the token's hash.
    #[error("the DPoP proof's ath does not match the access token")]
    AccessTokenMismatch,
}

#[derive(Deserialize)]
struct Header {
    typ: Option<String>,
    alg: String,
    jwk: Map<String, Value>,
    /// RFC 7515 §4.1.11: extensions the receiver must understand. None are understood here.
    crit: Option<Value>,
}

#[derive(Deserialize)]
struct Claims {
    jti: String,
    htm: String,
    htu: String,
    iat: serde_json::Number,
    ath: Option<String>,
    nonce: Option<String>,
}

/// The longest `jti` kept: a random id needs far less, and a cache must not hold essays.
const MAX_JTI_LEN: usize = 256;

/// Members that only a private JWK has; a proof that carries one is refused (RFC 9449
/// §4.3: "the jwk header parameter does not contain a private key").
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];

fn b64(part: &str, what: &'static str) -> Result<Vec<u8>, ProofError> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| ProofError::Malformed(what))
}

/// A proof's key, parsed for its signature check.
enum Verifying {
    /// The uncompressed P-256 point.
    Es256(Vec<u8>),
    /// Strict Ed25519 (RFC 8032 with small-order keys and `R` refused): with a key of small
    /// order anyone can make a signature that verifies, which would let a "key" nobody holds
    /// bind a session.
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl Verifying {
    fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), ProofError> {
        let is_valid = match self {
            Self::Es256(point) => {
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).verify(message, signature).is_ok()
            }
            Self::Ed25519(key) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify_strict(message, &sig).is_ok()),
        };
        if is_valid { Ok(()) } else { Err(ProofError::BadSignature) }
    }
}

/// A key as the signature check takes it, and its thumbprint.
struct PublicKey {
    verifying: Verifying,
    jkt: Thumbprint,
}

fn member<'a>(jwk: &'a Map<String, Value>, name: &str) -> Result<&'a str, ProofError> {
    jwk.get(name).and_then(Value::as_str).ok_or(ProofError::BadKey)
}

/// A base64url coordinate of exactly 32 bytes, kept as given (the thumbprint hashes the
/// text, which this check makes canonical: no padding, no other alphabet).
fn coordinate(jwk: &Map<String, Value>, name: &str) -> Result<(String, Vec<u8>), ProofError> {
    let text = member(jwk, name)?;
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| ProofError::BadKey)?;
    if bytes.len() != 32 {
        return Err(ProofError::BadKey);
    }
    Ok((text.to_owned(), bytes))
}

fn public_key(alg: &str, jwk: &Map<String, Value>) -> Result<PublicKey, ProofError> {
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err(ProofError::BadKey);
    }
    let (kty, crv) = (member(jwk, "kty")?, member(jwk, "crv")?);
    match (alg, kty, crv) {
        ("ES256", "EC", "P-256") => {
            let (x, xb) = coordinate(jwk, "x")?;
            let (y, yb) = coordinate(jwk, "y")?;
            let mut bytes = Vec::with_capacity(65);
            bytes.push(0x04);
            bytes.extend_from_slice(&xb);
            bytes.extend_from_slice(&yb);
            // RFC 7638 §3.2: the required members in lexicographic order, no whitespace.
            let jkt = Thumbprint::of_members(&format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#));
            Ok(PublicKey { verifying: Verifying::Es256(bytes), jkt })
        }
        // "Ed25519" is RFC 9864's fully specified name for what JOSE called "EdDSA" with this
        // curve; current libraries (oauth4webapi, so openid-client) sign proofs with it.
        ("EdDSA" | "Ed25519", "OKP", "Ed25519") => {
            let (x, bytes) = coordinate(jwk, "x")?;
            let bytes: [u8; 32] = bytes.try_into().map_err(|_| ProofError::BadKey)?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| ProofError::BadKey)?;
            if key.is_weak() {
                return Err(ProofError::BadKey);
            }
            let jkt = Thumbprint::of_members(&format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#));
            Ok(PublicKey { verifying: Verifying::Ed25519(key), jkt })
        }
        ("ES256" | "EdDSA" | "Ed25519", _, _) => Err(ProofError::BadKey),
        _ => Err(ProofError::UnsupportedAlgorithm),
    }
}

/// Whether `htu` names the same resource as `url`: scheme, host, port (with defaults) and
/// path compared after RFC 3986 normalisation; query and fragment ignored (RFC 9449 §4.3).
fn same_url(htu: &str, url: &str) -> bool {
    let (Ok(a), Ok(b)) = (url::Url::parse(htu), url::Url::parse(url)) else {
        return false;
    };
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
        && a.path() == b.path()
}

/// Checks a proof against the request it came with. See the crate docs for what is left to
/// the caller.
///
/// # Errors
/// The first [`ProofError`] found.
pub fn check(proof: &str, expected: &Expected<'_>) -> Result<CheckedProof, ProofError> {
    if proof.len() > MAX_PROOF_LEN {
        return Err(ProofError::Malformed("longer than 2048 bytes"));
    }
    let mut parts = proof.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(ProofError::Malformed("not a JWS in compact form"));
    };
    let header: Header =
        serde_json::from_slice(&b64(h, "header")?).map_err(|_| ProofError::Malformed("header"))?;
    if header.typ.as_deref() != Some(PROOF_TYP) {
        return Err(ProofError::Malformed("typ is not dpop+jwt"));
    }
    if header.crit.is_some() {
        return Err(ProofError::Malformed("crit names extensions this server does not understand"));
    }
    let key = public_key(&header.alg, &header.jwk)?;
    let signature = b64(s, "signature")?;
    let signing_input = proof.get(..h.len() + 1 + p.len()).ok_or(ProofError::Malformed("parts"))?;
    key.verifying.verify(signing_input.as_bytes(), &signature)?;

    let claims: Claims =
        serde_json::from_slice(&b64(p, "payload")?).map_err(|_| ProofError::Malformed("claims"))?;
    if claims.jti.is_empty() || claims.jti.len() > MAX_JTI_LEN {
        return Err(ProofError::Malformed("jti"));
    }
    if claims.htm != expected.method {
        return Err(ProofError::WrongMethod);
    }
    if !same_url(&claims.htu, expected.url) {
        return Err(ProofError::WrongUrl);
    }
    let iat = claims
        .iat
        .as_i64()
        .or_else(|| claims.iat.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
        .ok_or(ProofError::Malformed("iat"))?;
    if (expected.now.saturating_sub(iat)).abs() > IAT_WINDOW_SECS {
        return Err(ProofError::Stale);
    }
    let is_ath_right = match (expected.access_token, claims.ath.as_deref()) {
        (None, None) => true,
        (Some(token), Some(ath)) => {
            aws_lc_rs::constant_time::verify_slices_are_equal(ath_of(token).as_bytes(), ath.as_bytes())
                .is_ok()
        }
        _ => false,
    };
    if !is_ath_right {
        return Err(ProofError::AccessTokenMismatch);
    }
    Ok(CheckedProof { jkt: key.jkt, jti: claims.jti, iat, nonce: claims.nonce })
}

#[cfg(test)]
mod tests;
