//! Signing keys (SPEC 3): generation, encryption at rest, the in-memory key ring with parsed
//! key pairs (signing is on the token endpoint's hot path), JWKS, and rotation with overlap:
//! a new key is published `key_publish_ahead` before it signs, and a superseded key stays
//! published until every token it signed has expired.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair,
};
use jsonwebtoken::DecodingKey;
use serde_json::json;

use crate::clock::Timestamp;
use crate::crypto::{b64, new_id};
use crate::master_key::MasterKey;
use crate::store::{Store, StoreError, StoredKey};

/// A JOSE signature algorithm Latchkey signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Ed25519 (the access-token default).
    EdDSA,
    /// ECDSA P-256 SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 SHA-256 (the ID-token default).
    RS256,
}

impl Algorithm {
    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
        }
    }

    /// Parses a JOSE name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "EdDSA" => Some(Self::EdDSA),
            "ES256" => Some(Self::ES256),
            "RS256" => Some(Self::RS256),
            _ => None,
        }
    }

    /// The `jsonwebtoken` algorithm used to verify.
    pub fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Self::ES256 => jsonwebtoken::Algorithm::ES256,
            Self::RS256 => jsonwebtoken::Algorithm::RS256,
        }
    }
}

/// Errors of key handling.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The crypto library refused to generate or parse a key.
    #[error("key material rejected: {0}")]
    Rejected(String),
    /// A key is encrypted and no (or another) master key is configured.
    #[error("signing key {kid} is encrypted with master key {key_id}; set the same LATCHKEY_MASTER_KEY")]
    MasterKeyMismatch {
        /// The key.
        kid: String,
        /// The master key id it is sealed under.
        key_id: String,
    },
    /// A key is stored unencrypted while a master key is configured: it could have been
    /// written by anyone with access to the database, so it is not used.
    #[error(
        "signing key {kid} is stored unencrypted but LATCHKEY_MASTER_KEY is set; \
         run `latchkey keys seal` (with the master key set) to encrypt the existing keys"
    )]
    PlaintextKey {
        /// The key.
        kid: String,
    },
    /// This process has no master key, and the database holds sealed keys: it must not
    /// create keys that it could only store unencrypted.
    #[error(
        "the database's signing keys are encrypted, and this process has no LATCHKEY_MASTER_KEY; \
         set it to create or use keys"
    )]
    MasterKeyRequired,
    /// No key can sign with this algorithm.
    #[error("no active signing key for {0}")]
    NoActiveKey(&'static str),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A private key stored as it is (no master key configured).
const PLAIN_PREFIX: &[u8] = b"LKP1";
/// A private key sealed by an earlier version (see `master_key.rs`): opened, never written.
const LEGACY_SEALED_PREFIX: &[u8] = b"LKE1";
/// A private key sealed under the master key's HKDF-derived key: `LKE2` id `:` sealed.
const SEALED_PREFIX: &[u8] = b"LKE2";

/// Whether a stored key is sealed (in any version's form).
fn is_sealed(stored: &StoredKey) -> bool {
    !stored.private_key.starts_with(PLAIN_PREFIX)
}

/// Wraps a PKCS#8 document for storage: sealed under the master key when there is one.
fn wrap_private(pkcs8: &[u8], master: Option<&MasterKey>) -> Result<Vec<u8>, KeyError> {
    match master {
        Some(mk) => {
            let sealed = mk.encrypt(pkcs8).ok_or_else(|| KeyError::Rejected("encryption failed".into()))?;
            let mut out = SEALED_PREFIX.to_vec();
            out.extend_from_slice(mk.id().as_bytes());
            out.push(b':');
            out.extend_from_slice(&sealed);
            Ok(out)
        }
        None => {
            let mut out = PLAIN_PREFIX.to_vec();
            out.extend_from_slice(pkcs8);
            Ok(out)
        }
    }
}

/// Recovers the PKCS#8 document of a stored key. With a master key configured, only sealed
/// keys are accepted (SPEC 3: no plaintext key is used while a master key is set).
fn unwrap_private(
    stored: &StoredKey,
    master: Option<&MasterKey>,
) -> Result<zeroize::Zeroizing<Vec<u8>>, KeyError> {
    if let Some(plain) = stored.private_key.strip_prefix(PLAIN_PREFIX) {
        if master.is_some() {
            return Err(KeyError::PlaintextKey { kid: stored.kid.clone() });
        }
        return Ok(zeroize::Zeroizing::new(plain.to_vec()));
    }
    let (rest, is_legacy) = match stored.private_key.strip_prefix(SEALED_PREFIX) {
        Some(rest) => (rest, false),
        None => match stored.private_key.strip_prefix(LEGACY_SEALED_PREFIX) {
            Some(rest) => (rest, true),
            None => return Err(KeyError::Rejected(format!("key {} has an unknown format", stored.kid))),
        },
    };
    let colon = rest.iter().position(|b| *b == b':').unwrap_or(rest.len());
    let (key_id, sealed) = rest.split_at(colon);
    let key_id = String::from_utf8_lossy(key_id).into_owned();
    let sealed = sealed.get(1..).unwrap_or_default();
    let mismatch = || KeyError::MasterKeyMismatch { kid: stored.kid.clone(), key_id: key_id.clone() };
    let mk = master.ok_or_else(mismatch)?;
    let opened = match is_legacy {
        false if mk.id() == key_id => mk.decrypt(sealed),
        true if mk.legacy_id() == key_id => mk.decrypt_legacy(sealed),
        _ => None,
    };
    opened.ok_or_else(mismatch)
}

/// Generates a new PKCS#8 key pair.
fn generate_pkcs8(alg: Algorithm) -> Result<Vec<u8>, KeyError> {
    let rng = SystemRandom::new();
    let rejected = |e: aws_lc_rs::error::Unspecified| KeyError::Rejected(e.to_string());
    Ok(match alg {
        Algorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng).map_err(rejected)?.as_ref().to_vec(),
        Algorithm::ES256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(rejected)?
            .as_ref()
            .to_vec(),
        Algorithm::RS256 => {
            let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(rejected)?;
            pair.as_der().map_err(rejected)?.as_ref().to_vec()
        }
    })
}

/// A parsed key pair, ready to sign.
enum Signer {
    Ed25519(Ed25519KeyPair),
    P256(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A key loaded into memory.
pub struct LoadedKey {
    /// `kid`.
    pub kid: String,
    /// Algorithm.
    pub alg: Algorithm,
    /// From when it signs.
    pub activates_at: Timestamp,
    signer: Signer,
    decoding: DecodingKey,
    jwk: serde_json::Value,
}

impl LoadedKey {
    fn load(stored: &StoredKey, master: Option<&MasterKey>) -> Result<Self, KeyError> {
        let alg = Algorithm::parse(&stored.alg)
            .ok_or_else(|| KeyError::Rejected(format!("unknown algorithm {}", stored.alg)))?;
        let pkcs8 = unwrap_private(stored, master)?;
        let rejected = |e: aws_lc_rs::error::KeyRejected| KeyError::Rejected(e.to_string());
        let jwt_err = |e: jsonwebtoken::errors::Error| KeyError::Rejected(e.to_string());
        let kid = stored.kid.clone();
        let (signer, decoding, jwk) = match alg {
            Algorithm::EdDSA => {
                let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(rejected)?;
                let x = b64(pair.public_key().as_ref());
                let decoding = DecodingKey::from_ed_components(&x).map_err(jwt_err)?;
                let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": x});
                (Signer::Ed25519(pair), decoding, jwk)
            }
            Algorithm::ES256 => {
                let pair =
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8).map_err(rejected)?;
                // Uncompressed SEC1 point: 0x04 || x || y.
                let point = pair.public_key().as_ref();
                let (x, y) = match (point.get(1..33), point.get(33..65)) {
                    (Some(x), Some(y)) => (b64(x), b64(y)),
                    _ => return Err(KeyError::Rejected("bad P-256 public key".into())),
                };
                let decoding = DecodingKey::from_ec_components(&x, &y).map_err(jwt_err)?;
                let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y});
                (Signer::P256(pair), decoding, jwk)
            }
            Algorithm::RS256 => {
                let pair = RsaKeyPair::from_pkcs8(&pkcs8).map_err(rejected)?;
                let parts = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
                let (n, e) = (b64(&parts.n), b64(&parts.e));
                let decoding = DecodingKey::from_rsa_components(&n, &e).map_err(jwt_err)?;
                let jwk = json!({"kty": "RSA", "n": n, "e": e});
                (Signer::Rsa(pair), decoding, jwk)
            }
        };
        let mut jwk = jwk;
        if let Some(obj) = jwk.as_object_mut() {
            obj.insert("kid".into(), json!(kid));
            obj.insert("alg".into(), json!(alg.as_str()));
            obj.insert("use".into(), json!("sig"));
        }
        Ok(Self { kid, alg, activates_at: stored.activates_at, signer, decoding, jwk })
    }

    /// Signs a JWS signing input.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rejected = |e: aws_lc_rs::error::Unspecified| KeyError::Rejected(e.to_string());
        match &self.signer {
            Signer::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            Signer::P256(pair) => {
                Ok(pair.sign(&SystemRandom::new(), message).map_err(rejected)?.as_ref().to_vec())
            }
            Signer::Rsa(pair) => {
                let mut sig = vec![0u8; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message, &mut sig).map_err(rejected)?;
                Ok(sig)
            }
        }
    }

    /// The key that verifies this key's signatures.
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// Signs a JWT with this key: `typ` and the payload are the caller's; `alg` and `kid`
    /// always come from the key.
    ///
    /// # Errors
    /// When the crypto library fails.
    pub fn sign_jwt(&self, typ: &str, payload: &impl serde::Serialize) -> Result<String, KeyError> {
        let header = json!({"alg": self.alg.as_str(), "typ": typ, "kid": self.kid});
        let header = serde_json::to_vec(&header).map_err(|e| KeyError::Rejected(e.to_string()))?;
        let payload = serde_json::to_vec(payload).map_err(|e| KeyError::Rejected(e.to_string()))?;
        let mut jwt = b64(&header);
        jwt.push('.');
        jwt.push_str(&b64(&payload));
        let sig = self.sign(jwt.as_bytes())?;
        jwt.push('.');
        jwt.push_str(&b64(&sig));
        Ok(jwt)
    }
}

/// The published and signing keys at one moment.
pub struct KeySet {
    keys: Vec<Arc<LoadedKey>>,
    jwks: String,
}

impl KeySet {
    /// The JWKS document (RFC 7517) of every published key.
    pub fn jwks_json(&self) -> &str {
        &self.jwks
    }

    /// The key to sign with now for `alg`: the newest one that has activated.
    pub fn signer(&self, alg: Algorithm, now: Timestamp) -> Option<&Arc<LoadedKey>> {
        self.keys.iter().filter(|k| k.alg == alg && k.activates_at <= now).max_by_key(|k| k.activates_at)
    }

    /// A published key by `kid`.
    pub fn find(&self, kid: &str) -> Option<&Arc<LoadedKey>> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// Every published key.
    pub fn keys(&self) -> &[Arc<LoadedKey>] {
        &self.keys
    }

    /// Checks a JWT this server signed: its header `typ` must satisfy `typ_ok`, its `kid`
    /// must name a published key and its `alg` that key's; then the signature. No claim
    /// is checked (times and audiences are each caller's): returns the `kid` and the
    /// payload.
    ///
    /// # Errors
    /// [`JwtRejection`]: unreadable or of the wrong type, an unknown key, a bad signature.
    pub fn verify_jwt<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        typ_ok: impl Fn(Option<&str>) -> bool,
    ) -> Result<(String, T), JwtRejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtRejection::Malformed)?;
        if !typ_ok(header.typ.as_deref()) {
            return Err(JwtRejection::Malformed);
        }
        let kid = header.kid.ok_or(JwtRejection::UnknownKey)?;
        let key = self.find(&kid).ok_or(JwtRejection::UnknownKey)?;
        if header.alg != key.alg.jwt() {
            return Err(JwtRejection::BadSignature);
        }
        let mut validation = jsonwebtoken::Validation::new(key.alg.jwt());
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<T>(token, key.decoding_key(), &validation).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => JwtRejection::BadSignature,
            _ => JwtRejection::Malformed,
        })?;
        Ok((kid, data.claims))
    }
}

/// Why [`KeySet::verify_jwt`] refused a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtRejection {
    /// Not a JWT of the expected type, or claims that do not parse.
    Malformed,
    /// No `kid`, or one this server does not publish.
    UnknownKey,
    /// The signature (or `alg`) does not match the key.
    BadSignature,
}

/// When a key stops being published: when the next newer key of its algorithm activated,
/// plus the retention (the longest token lifetime plus skew). `None` while it is current.
pub fn unpublish_at(
    keys: &[StoredKey],
    key: &StoredKey,
    now: Timestamp,
    retention: Duration,
) -> Option<Timestamp> {
    keys.iter()
        .filter(|k| k.alg == key.alg && k.activates_at > key.activates_at && k.activates_at <= now)
        .map(|k| k.activates_at)
        .min()
        .map(|superseded| superseded.plus(retention))
}

/// The key ring: the database is the source of truth, this is its parsed in-memory copy,
/// reloaded periodically (so `latchkey keys rotate` on a running server takes effect) and
/// after every local change.
pub struct KeyRing {
    current: RwLock<Arc<KeySet>>,
    /// Serialises scheduled rotation within this process, so the periodic maintenance and
    /// an explicit call cannot both decide a rotation is due and create two keys.
    rotating: tokio::sync::Mutex<()>,
    master: Option<MasterKey>,
    retention: Duration,
}

impl KeyRing {
    /// An empty ring; call [`KeyRing::reload`] before use.
    pub fn new(master: Option<MasterKey>, retention: Duration) -> Self {
        let empty = KeySet { keys: Vec::new(), jwks: r#"{"keys":[]}"#.to_owned() };
        Self {
            current: RwLock::new(Arc::new(empty)),
            rotating: tokio::sync::Mutex::new(()),
            master,
            retention,
        }
    }

    /// The operator's master key, if one is configured (it also seals queued mail).
    pub(crate) fn master_key(&self) -> Option<&MasterKey> {
        self.master.as_ref()
    }

    /// The current key set.
    pub fn current(&self) -> Arc<KeySet> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Reloads the keys from the store, dropping those no longer published.
    ///
    /// # Errors
    /// Storage errors, or a key that cannot be decrypted or parsed.
    pub async fn reload(&self, store: &dyn Store, now: Timestamp) -> Result<(), KeyError> {
        let stored = store.list_signing_keys().await?;
        let mut keys = Vec::with_capacity(stored.len());
        for key in &stored {
            if unpublish_at(&stored, key, now, self.retention).is_some_and(|t| t <= now) {
                continue;
            }
            keys.push(Arc::new(LoadedKey::load(key, self.master.as_ref())?));
        }
        let jwks = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
        let set = KeySet { keys, jwks: jwks.to_string() };
        match self.current.write() {
            Ok(mut guard) => *guard = Arc::new(set),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(set),
        }
        Ok(())
    }

    /// Makes sure every algorithm in `algs` has a key that signs now (first start), and
    /// starts a rotation for any whose newest key is older than `rotate_after`. Returns the
    /// kids it created.
    ///
    /// # Errors
    /// Storage or key-generation errors.
    pub async fn ensure_keys(
        &self,
        store: &dyn Store,
        algs: &[Algorithm],
        now: Timestamp,
        rotate_after: Duration,
        publish_ahead: Duration,
    ) -> Result<Vec<String>, KeyError> {
        let _rotating = self.rotating.lock().await;
        let stored = store.list_signing_keys().await?;
        let due: Vec<(Algorithm, Timestamp)> = algs
            .iter()
            .filter_map(|alg| {
                let newest = stored.iter().filter(|k| k.alg == alg.as_str()).max_by_key(|k| k.created_at);
                match newest {
                    None => Some((*alg, now)),
                    Some(k) if k.created_at.plus(rotate_after) <= now => {
                        Some((*alg, now.plus(publish_ahead)))
                    }
                    Some(_) => None,
                }
            })
            .collect();
        if due.is_empty() {
            // The common case, every few seconds: nothing to create, so nothing to check.
            return Ok(Vec::new());
        }
        self.check_may_create(&stored)?;
        let mut created = Vec::new();
        for (alg, activates_at) in due {
            created.push(self.generate_key(store, alg, now, activates_at).await?);
        }
        self.reload(store, now).await?;
        Ok(created)
    }

    /// Refuses to create keys in a process that could not open the keys already stored: one
    /// without a master key beside sealed keys (its key could only be stored unencrypted,
    /// SPEC 3), or one with another master key (its key would stop every other node).
    fn check_may_create(&self, stored: &[StoredKey]) -> Result<(), KeyError> {
        if self.master.is_none() && stored.iter().any(is_sealed) {
            return Err(KeyError::MasterKeyRequired);
        }
        for key in stored {
            unwrap_private(key, self.master.as_ref())?;
        }
        Ok(())
    }

    /// Creates a key now that activates at `activates_at` (`latchkey keys rotate`).
    ///
    /// # Errors
    /// [`KeyError::MasterKeyRequired`], storage or key-generation errors.
    pub async fn create_key(
        &self,
        store: &dyn Store,
        alg: Algorithm,
        now: Timestamp,
        activates_at: Timestamp,
    ) -> Result<String, KeyError> {
        self.check_may_create(&store.list_signing_keys().await?)?;
        self.generate_key(store, alg, now, activates_at).await
    }

    /// Generates and stores a key; the caller checked [`Self::check_may_create`].
    async fn generate_key(
        &self,
        store: &dyn Store,
        alg: Algorithm,
        now: Timestamp,
        activates_at: Timestamp,
    ) -> Result<String, KeyError> {
        // RSA generation takes a good fraction of a second: off the async runtime.
        let pkcs8 = tokio::task::spawn_blocking(move || generate_pkcs8(alg))
            .await
            .map_err(|e| KeyError::Rejected(format!("key generation failed: {e}")))??;
        let pkcs8 = zeroize::Zeroizing::new(pkcs8);
        let key = StoredKey {
            kid: new_id(),
            alg: alg.as_str().to_owned(),
            private_key: wrap_private(&pkcs8, self.master.as_ref())?,
            created_at: now,
            activates_at,
        };
        store.insert_signing_key(&key).await?;
        Ok(key.kid)
    }

    /// Seals every stored key that is unencrypted or sealed in an earlier version's form
    /// under `master` (`latchkey keys seal`, the migration of an existing database to a
    /// master key). Returns the kids it sealed. Works on the store alone, since a ring with
    /// a master key refuses to load the plaintext keys this is for.
    ///
    /// # Errors
    /// A key sealed under another master key, storage errors.
    pub async fn seal_stored_keys(store: &dyn Store, master: &MasterKey) -> Result<Vec<String>, KeyError> {
        let mut sealed = Vec::new();
        for key in store.list_signing_keys().await? {
            if key.private_key.starts_with(SEALED_PREFIX) {
                // Already current; opening it proves it is ours.
                unwrap_private(&key, Some(master))?;
                continue;
            }
            let pkcs8 = match key.private_key.strip_prefix(PLAIN_PREFIX) {
                Some(plain) => zeroize::Zeroizing::new(plain.to_vec()),
                None => unwrap_private(&key, Some(master))?,
            };
            let resealed = StoredKey { private_key: wrap_private(&pkcs8, Some(master))?, ..key };
            store.update_signing_key(&resealed).await?;
            sealed.push(resealed.kid);
        }
        Ok(sealed)
    }

    /// Deletes stored keys that are no longer published.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn prune(&self, store: &dyn Store, now: Timestamp) -> Result<usize, KeyError> {
        let stored = store.list_signing_keys().await?;
        let mut pruned = 0;
        for key in &stored {
            if unpublish_at(&stored, key, now, self.retention).is_some_and(|t| t <= now) {
                store.delete_signing_key(&key.kid).await?;
                pruned += 1;
            }
        }
        Ok(pruned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(alg: Algorithm, master: Option<&MasterKey>, activates_at: i64) -> StoredKey {
        StoredKey {
            kid: new_id(),
            alg: alg.as_str().into(),
            private_key: wrap_private(&generate_pkcs8(alg).unwrap(), master).unwrap(),
            created_at: Timestamp(activates_at),
            activates_at: Timestamp(activates_at),
        }
    }

    #[test]
    fn every_algorithm_signs_and_verifies() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
            let key = LoadedKey::load(&stored(alg, None, 0), None).unwrap();
            let jwt = key.sign_jwt("at+jwt", &json!({"sub": "u", "exp": 4_000_000_000_i64})).unwrap();
            let mut v = jsonwebtoken::Validation::new(alg.jwt());
            v.required_spec_claims.clear();
            let data = jsonwebtoken::decode::<serde_json::Value>(&jwt, key.decoding_key(), &v).unwrap();
            assert_eq!(data.claims["sub"], "u");
            assert_eq!(data.header.kid.as_deref(), Some(key.kid.as_str()));
            // A key of the same algorithm but another pair does not verify it.
            let other = LoadedKey::load(&stored(alg, None, 0), None).unwrap();
            assert!(jsonwebtoken::decode::<serde_json::Value>(&jwt, other.decoding_key(), &v).is_err());
        }
    }

    fn master(b64_key: &str) -> MasterKey {
        MasterKey::parse(b64_key).unwrap()
    }

    const OTHER_KEY: &str = "Zt0e5r3Yv3b7a9o1mK8sQ2wE4rT6yU8iO0pA1sD3fG4=";

    #[test]
    fn encrypted_keys_need_the_same_master_key() {
        let mk = master(crate::master_key::tests::KEY_A);
        let key = stored(Algorithm::EdDSA, Some(&mk), 0);
        assert!(key.private_key.starts_with(SEALED_PREFIX));
        assert!(LoadedKey::load(&key, Some(&mk)).is_ok());
        assert!(matches!(LoadedKey::load(&key, None), Err(KeyError::MasterKeyMismatch { .. })));
        let other = master(OTHER_KEY);
        assert!(matches!(LoadedKey::load(&key, Some(&other)), Err(KeyError::MasterKeyMismatch { .. })));
    }

    /// Issue 12 (8): a plaintext key is not used while a master key is set.
    #[test]
    fn plaintext_keys_are_refused_with_a_master_key() {
        let plain = stored(Algorithm::EdDSA, None, 0);
        assert!(LoadedKey::load(&plain, None).is_ok());
        let mk = master(crate::master_key::tests::KEY_A);
        assert!(matches!(LoadedKey::load(&plain, Some(&mk)), Err(KeyError::PlaintextKey { .. })));
    }

    #[test]
    fn only_a_ring_with_a_master_key_creates_keys_beside_sealed_ones() {
        let mk = master(crate::master_key::tests::KEY_A);
        let sealed = vec![stored(Algorithm::EdDSA, Some(&mk), 0)];
        let plain = vec![stored(Algorithm::EdDSA, None, 0)];
        let without = KeyRing::new(None, Duration::from_secs(60));
        assert!(matches!(without.check_may_create(&sealed), Err(KeyError::MasterKeyRequired)));
        assert!(without.check_may_create(&plain).is_ok());
        assert!(without.check_may_create(&[]).is_ok());
        let with = KeyRing::new(Some(mk), Duration::from_secs(60));
        assert!(with.check_may_create(&sealed).is_ok());
        let another = KeyRing::new(Some(master(OTHER_KEY)), Duration::from_secs(60));
        assert!(matches!(another.check_may_create(&sealed), Err(KeyError::MasterKeyMismatch { .. })));
    }

    #[test]
    fn superseded_keys_stay_published_for_the_retention() {
        let old = stored(Algorithm::EdDSA, None, 100);
        let new = stored(Algorithm::EdDSA, None, 200);
        let keys = vec![old.clone(), new.clone()];
        let retention = Duration::from_secs(50);
        // Before the new key activates, the old one is current.
        assert_eq!(unpublish_at(&keys, &old, Timestamp(150), retention), None);
        // After, the old one is published until activation + retention.
        assert_eq!(unpublish_at(&keys, &old, Timestamp(210), retention), Some(Timestamp(250)));
        assert_eq!(unpublish_at(&keys, &new, Timestamp(210), retention), None);
    }
}
