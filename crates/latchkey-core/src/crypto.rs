//! Randomness, hashing and sealing for the secrets Latchkey generates. Primitives come from
//! the OS (`getrandom`) and aws-lc-rs; nothing here implements cryptography itself.
//!
//! Refresh tokens, codes and client secrets are high-entropy, so a fast SHA-256 is the right
//! hash for them (PERF-FACTS: argon2 would cost 22 ms per check). Passwords live in
//! `password.rs`.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_proto::RefreshToken;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Fills a buffer from the OS CSPRNG. A machine whose OS cannot give randomness cannot
/// issue secrets safely, so the process stops rather than continue with weak values.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if getrandom::fill(&mut buf).is_err() {
        tracing::error!("the operating system's random number generator failed; stopping");
        std::process::abort();
    }
    buf
}

/// base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A new opaque identifier (128 random bits, base64url): user, session and token ids.
pub fn new_id() -> String {
    b64(&random_bytes::<16>())
}

/// A new refresh token: `lkr_` + base64url of 256 random bits (SPEC 3).
pub fn new_refresh_token() -> RefreshToken {
    let mut s = String::with_capacity(48);
    s.push_str(RefreshToken::PREFIX);
    s.push_str(&b64(&random_bytes::<32>()));
    RefreshToken::new(s)
}

/// The SHA-256 of a generated secret: what the database stores instead of the secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Hashes a secret.
    pub fn of(secret: &str) -> Self {
        let d = digest(&SHA256, secret.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A hash prefix is enough to correlate log lines and reveals nothing useful.
        write!(f, "TokenHash({:02x}{:02x}{:02x}{:02x}…)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

/// Encrypts with AES-256-GCM under `key`; output is nonce || ciphertext || tag.
pub(crate) fn seal(key: &[u8; 32], plaintext: &[u8]) -> Option<Vec<u8>> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).ok()?);
    let nonce_bytes = random_bytes::<NONCE_LEN>();
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce_bytes), Aad::empty(), &mut buf).ok()?;
    let mut out = nonce_bytes.to_vec();
    out.extend_from_slice(&buf);
    Some(out)
}

/// Decrypts what [`seal`] produced.
pub(crate) fn open(key: &[u8; 32], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).ok()?);
    let (nonce, ct) = sealed.split_at_checked(NONCE_LEN)?;
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = Zeroizing::new(ct.to_vec());
    let plain_len = key.open_in_place(nonce, Aad::empty(), &mut buf).ok()?.len();
    buf.truncate(plain_len);
    Some(buf)
}

/// The key that seals a token's successor. It is derived from the *presented* token with a
/// domain separator, so it differs from [`TokenHash`] (which the database stores): only a
/// caller holding the retired token can recover its successor.
fn successor_key(presented: &RefreshToken) -> Zeroizing<[u8; 32]> {
    let mut input = Zeroizing::new(b"latchkey successor v1\0".to_vec());
    input.extend_from_slice(presented.expose_secret().as_bytes());
    let d = digest(&SHA256, &input);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(d.as_ref());
    out
}

/// Seals `successor` so that the grace window (SPEC 4) can hand the same successor to a
/// benign concurrent refresh, without the database ever holding a usable token.
pub fn seal_successor(presented: &RefreshToken, successor: &RefreshToken) -> Option<Vec<u8>> {
    seal(&successor_key(presented), successor.expose_secret().as_bytes())
}

/// Recovers a successor sealed by [`seal_successor`].
pub fn open_successor(presented: &RefreshToken, sealed: &[u8]) -> Option<RefreshToken> {
    let plain = open(&successor_key(presented), sealed)?;
    let s = std::str::from_utf8(&plain).ok()?.to_owned();
    Some(RefreshToken::new(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_have_prefix_and_256_bits() {
        let t = new_refresh_token();
        let s = t.expose_secret();
        assert!(s.starts_with("lkr_"));
        assert_eq!(URL_SAFE_NO_PAD.decode(&s[4..]).unwrap().len(), 32);
        assert_ne!(new_refresh_token().expose_secret(), s);
    }

    #[test]
    fn successor_opens_only_with_the_presented_token() {
        let old = new_refresh_token();
        let next = new_refresh_token();
        let sealed = seal_successor(&old, &next).unwrap();
        assert_eq!(open_successor(&old, &sealed).unwrap(), next);
        assert!(open_successor(&new_refresh_token(), &sealed).is_none());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(open_successor(&old, &tampered).is_none());
    }

    #[test]
    fn successor_key_is_not_the_stored_hash() {
        let t = new_refresh_token();
        assert_ne!(successor_key(&t).as_ref(), &TokenHash::of(t.expose_secret()).0);
    }
}
