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

/// The bytes of a refresh token after its prefix: its key id, then the secret.
const REFRESH_TOKEN_BYTES: usize = 16 + 32;
/// Their length in base64url without padding.
const REFRESH_TOKEN_B64_LEN: usize = REFRESH_TOKEN_BYTES * 4 / 3;

/// A new refresh token (SPEC 3): `lkr_` + base64url of a 16-byte key id and 256 random
/// bits. The key id is 6 bytes of the current Unix time in milliseconds (big-endian) and
/// 10 random bytes, so tokens sort by issue time in the store (see [`RefreshTokenKey`]).
pub fn new_refresh_token() -> RefreshToken {
    refresh_token_at(crate::clock::ordering_millis())
}

/// A new refresh token whose key id starts with `millis`.
fn refresh_token_at(millis: u64) -> RefreshToken {
    let mut bytes = [0u8; REFRESH_TOKEN_BYTES];
    let (id, secret) = bytes.split_at_mut(16);
    let (time, random) = id.split_at_mut(6);
    time.copy_from_slice(&millis.to_be_bytes()[2..]);
    random.copy_from_slice(&random_bytes::<10>());
    secret.copy_from_slice(&random_bytes::<32>());
    let mut s = String::with_capacity(RefreshToken::PREFIX.len() + REFRESH_TOKEN_B64_LEN);
    s.push_str(RefreshToken::PREFIX);
    s.push_str(&b64(&bytes));
    RefreshToken::new(s)
}

/// How the store finds a refresh token and proves it was presented: the key of its row
/// and the hash of the whole token.
///
/// The key is the id a token carries in its first 16 bytes, which sorts by issue time, so
/// a rotation appends its successor next to the rows of other recent rotations instead of
/// on a random page of an index. Tokens issued before ids existed (43 characters after the
/// prefix) carry none: their key is the first 16 bytes of their hash, as the migration
/// that introduced keys stored it. A key alone proves nothing (anyone can forge an id);
/// every lookup also matches the hash.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RefreshTokenKey {
    /// The row's key.
    pub id: [u8; 16],
    /// SHA-256 of the whole token.
    pub hash: TokenHash,
}

impl RefreshTokenKey {
    /// The key of a presented token (any string: a malformed one gets a key that matches
    /// no row).
    pub fn of(token: &str) -> Self {
        let hash = TokenHash::of(token);
        let carried = token
            .strip_prefix(RefreshToken::PREFIX)
            .filter(|b64| b64.len() == REFRESH_TOKEN_B64_LEN)
            .and_then(|b64| URL_SAFE_NO_PAD.decode(b64).ok())
            .and_then(|bytes| bytes.get(..16).and_then(|id| <[u8; 16]>::try_from(id).ok()));
        let id = carried.unwrap_or_else(|| {
            let mut id = [0u8; 16];
            id.copy_from_slice(&hash.0[..16]);
            id
        });
        Self { id, hash }
    }
}

impl std::fmt::Debug for RefreshTokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RefreshTokenKey({:?})", self.hash)
    }
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
    seal_bound(key, b"", plaintext)
}

/// [`seal`], bound to `context` (authenticated, not stored): it opens only with the same
/// context, so a sealed value cannot be moved to where another context applies.
pub(crate) fn seal_bound(key: &[u8; 32], context: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).ok()?);
    let nonce_bytes = random_bytes::<NONCE_LEN>();
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce_bytes), Aad::from(context), &mut buf)
        .ok()?;
    let mut out = nonce_bytes.to_vec();
    out.extend_from_slice(&buf);
    Some(out)
}

/// Decrypts what [`seal`] produced.
pub(crate) fn open(key: &[u8; 32], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    open_bound(key, b"", sealed)
}

/// Decrypts what [`seal_bound`] produced under the same `context`.
pub(crate) fn open_bound(key: &[u8; 32], context: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).ok()?);
    let (nonce, ct) = sealed.split_at_checked(NONCE_LEN)?;
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = Zeroizing::new(ct.to_vec());
    let plain_len = key.open_in_place(nonce, Aad::from(context), &mut buf).ok()?.len();
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
    fn refresh_tokens_have_prefix_key_id_and_256_random_bits() {
        let t = new_refresh_token();
        let s = t.expose_secret();
        assert!(s.starts_with("lkr_"));
        let bytes = URL_SAFE_NO_PAD.decode(&s[4..]).unwrap();
        assert_eq!(bytes.len(), 48);
        let key = RefreshTokenKey::of(s);
        assert_eq!(key.id[..], bytes[..16]);
        assert_eq!(key.hash, TokenHash::of(s));
        let other = new_refresh_token();
        assert_ne!(other.expose_secret(), s);
        assert_ne!(RefreshTokenKey::of(other.expose_secret()).id, key.id);
    }

    #[test]
    fn refresh_token_keys_sort_by_issue_time() {
        for millis in [0, 1_000, 1_800_000_000_000, (1 << 48) - 2] {
            let first = RefreshTokenKey::of(refresh_token_at(millis).expose_secret());
            let second = RefreshTokenKey::of(refresh_token_at(millis + 1).expose_secret());
            assert!(first.id < second.id, "{millis}");
        }
    }

    #[test]
    fn tokens_without_a_key_id_are_found_by_their_hash() {
        // A token of the earlier format: 32 bytes after the prefix.
        let legacy = format!("lkr_{}", b64(&[7u8; 32]));
        let key = RefreshTokenKey::of(&legacy);
        assert_eq!(key.id[..], TokenHash::of(&legacy).0[..16]);
        for junk in
            ["lkr_", "lkr_!!!!", "", "lkr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]
        {
            assert_eq!(RefreshTokenKey::of(junk).id[..], TokenHash::of(junk).0[..16]);
        }
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
