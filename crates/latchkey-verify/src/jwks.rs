//! The published keys, cached: fetched at start, on schedule, and when a token names a key
//! the cache does not know (rate-limited, so garbage `kid`s cannot make it hammer the
//! server).

use std::collections::HashMap;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};

/// One usable key: its algorithm is fixed by the key, never taken from a token.
pub(crate) struct Key {
    pub(crate) alg: Algorithm,
    pub(crate) decoding: DecodingKey,
}

/// Keys by `kid`.
#[derive(Default)]
pub(crate) struct KeySet(pub(crate) HashMap<String, std::sync::Arc<Key>>);

impl KeySet {
    /// Builds the set from a JWKS document, keeping only signature keys of the algorithms
    /// Latchkey uses (EdDSA, ES256, RS256) whose type matches their algorithm.
    pub(crate) fn from_jwks(set: &JwkSet) -> Self {
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else { continue };
            let alg = match (&jwk.common.key_algorithm, &jwk.algorithm) {
                (Some(KeyAlgorithm::EdDSA), AlgorithmParameters::OctetKeyPair(_)) => Algorithm::EdDSA,
                (Some(KeyAlgorithm::ES256), AlgorithmParameters::EllipticCurve(_)) => Algorithm::ES256,
                (Some(KeyAlgorithm::RS256), AlgorithmParameters::RSA(_)) => Algorithm::RS256,
                _ => continue,
            };
            if let Ok(decoding) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid, std::sync::Arc::new(Key { alg, decoding }));
            }
        }
        Self(keys)
    }
}

/// Why the keys could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// No answer: the server is down, unreachable, or the connection failed midway.
    #[error("could not fetch the JWKS at {url}")]
    Unreachable {
        /// The JWKS URL.
        url: String,
        /// What the HTTP client reported.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("the JWKS at {url} answered {status}")]
    Status {
        /// The JWKS URL.
        url: String,
        /// The status it answered.
        status: reqwest::StatusCode,
    },
    /// The answer is not a JWKS document (RFC 7517 §5).
    #[error("the JWKS at {url} is not a JWKS document")]
    Invalid {
        /// The JWKS URL.
        url: String,
        /// Why it could not be read.
        #[source]
        source: serde_json::Error,
    },
}

/// Fetches the JWKS.
pub(crate) async fn fetch(http: &reqwest::Client, url: &str) -> Result<KeySet, JwksError> {
    let unreachable = |source| JwksError::Unreachable { url: url.to_owned(), source };
    let res = http.get(url).send().await.map_err(unreachable)?;
    if !res.status().is_success() {
        return Err(JwksError::Status { url: url.to_owned(), status: res.status() });
    }
    let body = res.bytes().await.map_err(unreachable)?;
    let set: JwkSet =
        serde_json::from_slice(&body).map_err(|source| JwksError::Invalid { url: url.to_owned(), source })?;
    Ok(KeySet::from_jwks(&set))
}

/// The JWKS URL: `jwks_uri` from the issuer's discovery document (OpenID Connect
/// Discovery, else RFC 8414), reached at `base`; when the verifier talks to the server at
/// another address than the issuer's, the issuer prefix of `jwks_uri` is replaced with it.
/// Without a usable document, `{base}/jwks.json`.
pub(crate) async fn discover(http: &reqwest::Client, issuer: &str, base: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Discovery {
        issuer: String,
        jwks_uri: String,
    }
    for path in ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"] {
        let Ok(res) = http.get(format!("{base}{path}")).send().await else { continue };
        if !res.status().is_success() {
            continue;
        }
        let Ok(doc) = res.json::<Discovery>().await else { continue };
        if doc.issuer.trim_end_matches('/') != issuer {
            tracing::warn!(expected = issuer, found = %doc.issuer, "discovery names another issuer; ignored");
            continue;
        }
        return match doc.jwks_uri.strip_prefix(issuer) {
            Some(rest) => format!("{base}{rest}"),
            None => doc.jwks_uri,
        };
    }
    format!("{base}/jwks.json")
}
