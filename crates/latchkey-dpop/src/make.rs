//! Making proofs: a key pair the client holds, and a proof per request.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use crate::{PROOF_TYP, Thumbprint, ath_of};

enum Pair {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

/// A DPoP key pair. The private half never leaves it; `Debug` shows the thumbprint only.
pub struct ProofKey {
    pair: Pair,
    jwk: serde_json::Value,
    jkt: Thumbprint,
}

impl std::fmt::Debug for ProofKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProofKey").field("jkt", &self.jkt).finish_non_exhaustive()
    }
}

/// Why no key could be made.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the DPoP key could not be generated or used")]
pub struct ProofKeyError;

impl ProofKey {
    /// A new P-256 key (ES256), what browsers' WebCrypto and most libraries use.
    ///
    /// # Errors
    /// When the system's random source fails.
    pub fn generate_es256() -> Result<Self, ProofKeyError> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| ProofKeyError)?;
        let point = pair.public_key().as_ref();
        let (x, y) = (point.get(1..33).ok_or(ProofKeyError)?, point.get(33..65).ok_or(ProofKeyError)?);
        let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
        let jkt = Thumbprint::of_members(&format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#));
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y});
        Ok(Self { pair: Pair::Es256(pair), jwk, jkt })
    }

    /// A new Ed25519 key (EdDSA).
    ///
    /// # Errors
    /// When the system's random source fails.
    pub fn generate_ed25519() -> Result<Self, ProofKeyError> {
        let pair = Ed25519KeyPair::generate().map_err(|_| ProofKeyError)?;
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let jkt = Thumbprint::of_members(&format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#));
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": x});
        Ok(Self { pair: Pair::EdDsa(pair), jwk, jkt })
    }

    /// The key's thumbprint, as `cnf.jkt` will carry it.
    pub fn thumbprint(&self) -> &Thumbprint {
        &self.jkt
    }

    /// The public key as a JWK.
    pub fn public_jwk(&self) -> &serde_json::Value {
        &self.jwk
    }

    /// The `alg` its proofs carry.
    pub fn algorithm(&self) -> &'static str {
        match self.pair {
            Pair::Es256(_) => "ES256",
            Pair::EdDsa(_) => "EdDSA",
        }
    }

    /// A proof for one request: `method` and `url` as sent (the query is left out of
    /// `htu`), `now` in seconds since the epoch, the access token it accompanies (for
    /// `ath`), and the server's latest nonce.
    ///
    /// # Errors
    /// When the system's random source or the signature fails.
    pub fn proof(
        &self,
        method: &str,
        url: &str,
        now: i64,
        access_token: Option<&str>,
        nonce: Option<&str>,
    ) -> Result<String, ProofKeyError> {
        let mut jti = [0u8; 16];
        SystemRandom::new().fill(&mut jti).map_err(|_| ProofKeyError)?;
        let htu = url.split(['?', '#']).next().unwrap_or(url);
        let mut claims = serde_json::Map::new();
        claims.insert("jti".into(), json!(URL_SAFE_NO_PAD.encode(jti)));
        claims.insert("htm".into(), json!(method));
        claims.insert("htu".into(), json!(htu));
        claims.insert("iat".into(), json!(now));
        if let Some(token) = access_token {
            claims.insert("ath".into(), json!(ath_of(token)));
        }
        if let Some(nonce) = nonce {
            claims.insert("nonce".into(), json!(nonce));
        }
        let header = json!({"typ": PROOF_TYP, "alg": self.algorithm(), "jwk": self.jwk});
        self.sign(&header, &serde_json::Value::Object(claims))
    }

    /// Signs any header and claims with this key, as a compact JWS. For tests that need a
    /// proof no honest client would make.
    ///
    /// # Errors
    /// When the signature fails.
    pub fn sign(
        &self,
        header: &serde_json::Value,
        claims: &serde_json::Value,
    ) -> Result<String, ProofKeyError> {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = match &self.pair {
            Pair::Es256(pair) => pair
                .sign(&SystemRandom::new(), input.as_bytes())
                .map_err(|_| ProofKeyError)?
                .as_ref()
                .to_vec(),
            Pair::EdDsa(pair) => pair.sign(input.as_bytes()).as_ref().to_vec(),
        };
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}
