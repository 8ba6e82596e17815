//! DPoP proofs (RFC 9449): a JWT the client signs with a key it holds, per request, that
//! names the request's method and URL. A token bound to the key's thumbprint (`cnf.jkt`)
//! is useless to whoever copies it without the key.
//!
//! [`check`] is what a receiver does with a proof (SPEC 12): ES256 or EdDSA only, the key
//! in the header (public parts only), the signature, `typ`, `htm`, `htu`, `iat` within a
//! window, and `ath` when an access token came with it. What needs memory or policy is
//! left to the caller: the `jti` replay cache (the server's is shared by every node through
//! PostgreSQL, or in memory for SQLite's single process; `latchkey-verify` keeps one in
//! memory) and server nonces.
//!
//! [`ProofKey`] makes proofs, for `latchkey-client` and the tests.

mod check;
mod make;

pub use check::{CheckedProof, Expected, ProofError, check};
pub use make::{ProofKey, ProofKeyError};

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The `typ` every proof carries.
pub const PROOF_TYP: &str = "dpop+jwt";

/// Proofs longer than this are refused before any parsing: an ES256 proof with an access
/// token hash and a nonce is under 700 bytes.
pub const MAX_PROOF_LEN: usize = 2048;

/// How far a proof's `iat` may be from now, either way, in seconds (SPEC 12).
pub const IAT_WINDOW_SECS: i64 = 60;

/// The algorithms a proof may use (SPEC 12), as `dpop_signing_alg_values_supported` and
/// `WWW-Authenticate: DPoP algs` list them: ES256, and Ed25519 under both its JOSE names
/// (`EdDSA`, and RFC 9864's `Ed25519`).
pub const ALGORITHMS: [&str; 3] = ["ES256", "EdDSA", "Ed25519"];

/// A proof key's RFC 7638 thumbprint: SHA-256 over the key's required members, base64url.
/// What `cnf.jkt` carries and a session is bound to.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Thumbprint(String);

impl Thumbprint {
    /// A thumbprint as carried in `cnf.jkt` or stored. Only its form is checked (43
    /// base64url characters, a SHA-256).
    pub fn parse(s: &str) -> Option<Self> {
        let is_form = s.len() == 43 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        is_form.then(|| Self(s.to_owned()))
    }

    /// As text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn of_members(canonical_json: &str) -> Self {
        Self(URL_SAFE_NO_PAD.encode(digest(&SHA256, canonical_json.as_bytes())))
    }

    /// Constant-time equality, for comparing a presented key with a stored one.
    pub fn ct_eq(&self, other: &Self) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(self.0.as_bytes(), other.0.as_bytes()).is_ok()
    }
}

impl std::fmt::Debug for Thumbprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Thumbprint({})", self.0)
    }
}

impl std::fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `ath` of an access token: base64url SHA-256 of its ASCII.
pub fn ath_of(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, access_token.as_bytes()))
}
