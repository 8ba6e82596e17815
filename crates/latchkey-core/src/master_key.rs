//! The operator's master key (SPEC 3, `LATCHKEY_MASTER_KEY`), which seals signing keys at
//! rest. It must be 32 random bytes in base64 (`openssl rand -base64 32`); anything else
//! is refused when the process starts, so a guessable passphrase can never protect keys.
//!
//! The sealing key and the key id are both derived with HKDF-SHA256 under different
//! labels: the id stored beside each sealed key tells which master key sealed it and says
//! nothing that helps to guess the key. Keys sealed by earlier versions (`LKE1`, whose
//! sealing key was one SHA-256 of the configured text) are still opened, and
//! `latchkey keys seal` re-seals them in the current form.

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

use crate::crypto::{b64, open, open_bound, seal, seal_bound};

/// Why a configured master key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MasterKeyError {
    /// Not base64, or not 32 bytes once decoded.
    #[error(
        "LATCHKEY_MASTER_KEY must be 32 random bytes in base64 (generate one with `openssl rand -base64 32`)"
    )]
    NotThirtyTwoBytes,
    /// 32 bytes, but plainly not random (a repeated pattern).
    #[error("LATCHKEY_MASTER_KEY is not random; generate one with `openssl rand -base64 32`")]
    NotRandom,
}

/// The fewest distinct byte values accepted in a key. 32 random bytes have about 30; a key
/// like `AAAA…` or a short repeated pattern has a handful.
const MIN_DISTINCT_BYTES: usize = 12;

/// The HKDF salt: fixed, names the scheme.
const HKDF_SALT: &[u8] = b"latchkey master key v2";
/// The HKDF label of the AES-256-GCM key that seals signing keys.
const SEAL_INFO: &[u8] = b"seal signing keys";
/// The HKDF label of the AES-256-GCM key that seals queued mail (see `mail_seal.rs`): its
/// own key, so a sealed signing key copied into the outbox opens as nothing.
const MAIL_INFO: &[u8] = b"seal queued mail";
/// The HKDF label of the AES-256-GCM key that seals TOTP secrets (SPEC 11: "encrypted at
/// rest like signing keys"), each bound to its factor's id.
const TOTP_INFO: &[u8] = b"seal totp secrets";
/// The HKDF label of the HMAC key that makes DPoP nonces (see `dpop.rs`): every node with
/// the master key makes and accepts the same nonces.
const DPOP_NONCE_INFO: &[u8] = b"dpop nonces";
/// The HKDF label of the key id.
const ID_INFO: &[u8] = b"key id";

/// Whether 32 bytes are plainly not random: few distinct values, all printable ASCII (a
/// passphrase, or hex or base64 text encoded again: a random key is that with a chance of
/// about 1.6e-14), a repeated block of up to 16 bytes, or a constant step (`00 01 02 …`).
/// A guard against mistakes, not a randomness test: a key that passes is not thereby good.
fn looks_made_up(key: &[u8; 32]) -> bool {
    let mut seen = [false; 256];
    for b in key {
        if let Some(slot) = seen.get_mut(usize::from(*b)) {
            *slot = true;
        }
    }
    let is_few_values = seen.iter().filter(|s| **s).count() < MIN_DISTINCT_BYTES;
    let is_text = key.iter().all(|b| (0x20..=0x7e).contains(b));
    let is_periodic = (1..=16).any(|period| key.iter().zip(key.iter().skip(period)).all(|(a, b)| a == b));
    let steps: Vec<u8> = key.iter().zip(key.iter().skip(1)).map(|(a, b)| b.wrapping_sub(*a)).collect();
    let is_constant_step = steps.iter().all(|step| Some(step) == steps.first());
    is_few_values || is_text || is_periodic || is_constant_step
}

struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn hkdf<const N: usize>(ikm: &[u8], info: &[u8]) -> Option<Zeroizing<[u8; N]>> {
    let prk = Salt::new(HKDF_SHA256, HKDF_SALT).extract(ikm);
    let info = [info];
    let okm = prk.expand(&info, Len(N)).ok()?;
    let mut out = Zeroizing::new([0u8; N]);
    okm.fill(out.as_mut()).ok()?;
    Some(out)
}

/// The operator's key for sealing signing keys at rest.
#[derive(Clone)]
pub struct MasterKey {
    key: Zeroizing<[u8; 32]>,
    mail_key: Zeroizing<[u8; 32]>,
    totp_key: Zeroizing<[u8; 32]>,
    dpop_nonce_key: Zeroizing<[u8; 32]>,
    id: String,
    /// The sealing key of earlier versions (SHA-256 of the configured text), to open keys
    /// sealed as `LKE1` until they are re-sealed.
    legacy_key: Zeroizing<[u8; 32]>,
    legacy_id: String,
}

impl MasterKey {
    /// Parses the configured value: 32 bytes in base64 (standard or URL-safe alphabet,
    /// padded or not, surrounding whitespace ignored).
    ///
    /// # Errors
    /// [`MasterKeyError`] for anything else.
    pub fn parse(configured: &str) -> Result<Self, MasterKeyError> {
        let text = configured.trim();
        let bytes = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .map(Zeroizing::new)
            .ok_or(MasterKeyError::NotThirtyTwoBytes)?;
        let ikm: [u8; 32] = bytes.as_slice().try_into().map_err(|_| MasterKeyError::NotThirtyTwoBytes)?;
        let ikm = Zeroizing::new(ikm);
        if looks_made_up(&ikm) {
            return Err(MasterKeyError::NotRandom);
        }
        let key = hkdf::<32>(ikm.as_ref(), SEAL_INFO).ok_or(MasterKeyError::NotThirtyTwoBytes)?;
        let mail_key = hkdf::<32>(ikm.as_ref(), MAIL_INFO).ok_or(MasterKeyError::NotThirtyTwoBytes)?;
        let totp_key = hkdf::<32>(ikm.as_ref(), TOTP_INFO).ok_or(MasterKeyError::NotThirtyTwoBytes)?;
        let dpop_nonce_key =
            hkdf::<32>(ikm.as_ref(), DPOP_NONCE_INFO).ok_or(MasterKeyError::NotThirtyTwoBytes)?;
        let id_bytes = hkdf::<6>(ikm.as_ref(), ID_INFO).ok_or(MasterKeyError::NotThirtyTwoBytes)?;
        let (legacy_key, legacy_id) = legacy(configured);
        Ok(Self {
            key,
            mail_key,
            totp_key,
            dpop_nonce_key,
            id: b64(id_bytes.as_ref()),
            legacy_key,
            legacy_id,
        })
    }

    /// The same key, opening keys that an earlier version sealed under `old_secret`, the
    /// configured text of that version (which took any passphrase): for `latchkey keys
    /// seal`, given `LATCHKEY_LEGACY_MASTER_KEY`, to move them under this key.
    #[must_use]
    pub fn with_legacy_secret(mut self, old_secret: &str) -> Self {
        (self.legacy_key, self.legacy_id) = legacy(old_secret);
        self
    }

    /// The HMAC key for DPoP nonces, the same on every node.
    pub(crate) fn dpop_nonce_key(&self) -> &[u8; 32] {
        &self.dpop_nonce_key
    }

    /// The key's id, stored beside what it seals.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Encrypts (AES-256-GCM, random nonce).
    pub fn encrypt(&self, plaintext: &[u8]) -> Option<Vec<u8>> {
        seal(&self.key, plaintext)
    }

    /// Decrypts what [`Self::encrypt`] produced.
    pub fn decrypt(&self, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        open(&self.key, sealed)
    }

    /// Seals a queued mail's body, bound to its recipient.
    pub(crate) fn seal_mail(&self, recipient: &str, body: &[u8]) -> Option<Vec<u8>> {
        seal_bound(&self.mail_key, recipient.as_bytes(), body)
    }

    /// Opens what [`Self::seal_mail`] sealed for the same recipient.
    pub(crate) fn open_mail(&self, recipient: &str, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        open_bound(&self.mail_key, recipient.as_bytes(), sealed)
    }

    /// Seals a TOTP secret, bound to its factor's id.
    pub(crate) fn seal_totp(&self, factor_id: &str, secret: &[u8]) -> Option<Vec<u8>> {
        seal_bound(&self.totp_key, factor_id.as_bytes(), secret)
    }

    /// Opens what [`Self::seal_totp`] sealed for the same factor.
    pub(crate) fn open_totp(&self, factor_id: &str, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        open_bound(&self.totp_key, factor_id.as_bytes(), sealed)
    }

    /// The id under which earlier versions sealed with this key.
    pub(crate) fn legacy_id(&self) -> &str {
        &self.legacy_id
    }

    /// Decrypts what an earlier version sealed with this key.
    pub(crate) fn decrypt_legacy(&self, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        open(&self.legacy_key, sealed)
    }
}

/// The sealing key and id of versions before HKDF: SHA-256 of the configured text, and a
/// SHA-256 of that under a label.
fn legacy(configured: &str) -> (Zeroizing<[u8; 32]>, String) {
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(digest(&SHA256, configured.as_bytes()).as_ref());
    let mut id_input = Zeroizing::new(b"latchkey master key id\0".to_vec());
    id_input.extend_from_slice(key.as_ref());
    let id = b64(digest(&SHA256, &id_input).as_ref().get(..6).unwrap_or_default());
    (key, id)
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(id={}, [redacted])", self.id)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `openssl rand -base64 32` output, twice.
    pub(crate) const KEY_A: &str = "q3Jb6Xl0tL2S9p+0w6b0Gm1yZk2m3JxM3d8h2Qd0p1U=";
    const KEY_B: &str = "Zt0e5r3Yv3b7a9o1mK8sQ2wE4rT6yU8iO0pA1sD3fG4=";

    #[test]
    fn round_trip_and_a_wrong_key_fails() {
        let mk = MasterKey::parse(KEY_A).unwrap();
        let sealed = mk.encrypt(b"pkcs8").unwrap();
        assert_eq!(mk.decrypt(&sealed).unwrap().as_slice(), b"pkcs8");
        let other = MasterKey::parse(KEY_B).unwrap();
        assert!(other.decrypt(&sealed).is_none());
        assert_ne!(mk.id(), other.id());
        assert_eq!(mk.id(), MasterKey::parse(&format!("  {KEY_A}\n")).unwrap().id());
    }

    #[test]
    fn weak_keys_are_refused() {
        for weak in ["a", "", "correct horse battery staple", "AAAA", "not base64 at all!!"] {
            assert_eq!(MasterKey::parse(weak).err(), Some(MasterKeyError::NotThirtyTwoBytes), "{weak}");
        }
        // 31 and 33 bytes.
        assert!(MasterKey::parse(&STANDARD.encode([7u8; 31])).is_err());
        assert!(MasterKey::parse(&STANDARD.encode([7u8; 33])).is_err());
        // 32 bytes that are not random (probe F3: passphrases, hex text, counting bytes).
        assert_eq!(MasterKey::parse(&STANDARD.encode([0u8; 32])).err(), Some(MasterKeyError::NotRandom));
        for made_up in
            [
                b"correcthorsebatterystaple1234567".to_vec(),
                b"MyCompanySecretMasterKey2026!!!!".to_vec(),
                b"0123456789abcdef0123456789abcdef".to_vec(),
                b"9f86d081884c7d659a2feaa0c55ad015".to_vec(),
                (0u8..32).collect(),
                (0u8..32).map(|i| i.wrapping_mul(7).wrapping_add(200)).collect(),
                [[
                    0xde, 0xad, 0xbe, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x10, 0x32, 0x54,
                    0x76,
                ]; 2]
                    .concat(),
            ]
        {
            assert_eq!(
                MasterKey::parse(&STANDARD.encode(&made_up)).err(),
                Some(MasterKeyError::NotRandom),
                "{made_up:?}"
            );
        }
        let pattern: Vec<u8> = (0..32).map(|i| b"abcd"[i % 4]).collect();
        assert_eq!(MasterKey::parse(&STANDARD.encode(pattern)).err(), Some(MasterKeyError::NotRandom));
        // The URL-safe alphabet and no padding are accepted.
        let raw = STANDARD.decode(KEY_A).unwrap();
        assert_eq!(
            MasterKey::parse(&URL_SAFE_NO_PAD.encode(&raw)).unwrap().id(),
            MasterKey::parse(KEY_A).unwrap().id()
        );
    }

    #[test]
    fn the_id_is_not_a_hash_of_the_key() {
        let raw = STANDARD.decode(KEY_A).unwrap();
        let mk = MasterKey::parse(KEY_A).unwrap();
        assert_ne!(mk.id(), b64(digest(&SHA256, &raw).as_ref().get(..6).unwrap()));
        assert_ne!(mk.id(), mk.legacy_id());
    }

    #[test]
    fn legacy_sealed_blobs_still_open() {
        let mk = MasterKey::parse(KEY_A).unwrap();
        let (legacy_key, _) = legacy(KEY_A);
        let sealed = seal(&legacy_key, b"old pkcs8").unwrap();
        assert_eq!(mk.decrypt_legacy(&sealed).unwrap().as_slice(), b"old pkcs8");
        assert!(mk.decrypt(&sealed).is_none());
        // A key sealed under an old passphrase opens with that passphrase given as legacy.
        let (old_key, old_id) = legacy("an old passphrase");
        let sealed = seal(&old_key, b"older pkcs8").unwrap();
        assert!(mk.decrypt_legacy(&sealed).is_none());
        let mk = mk.with_legacy_secret("an old passphrase");
        assert_eq!(mk.legacy_id(), old_id);
        assert_eq!(mk.decrypt_legacy(&sealed).unwrap().as_slice(), b"older pkcs8");
    }
}
