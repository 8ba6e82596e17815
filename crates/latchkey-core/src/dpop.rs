//! DPoP at the token-issuing endpoints (SPEC 12, RFC 9449): a checked proof becomes the
//! caller's key ([`crate::caller::Caller::dpop`]), which binds the session it opens and the
//! access tokens it gets. What `latchkey_dpop::check` leaves to its caller is done here:
//! the `jti` replay cache (on PostgreSQL in the database, so one proof is accepted once by
//! all nodes; on SQLite, whose file serves one process, in that process's memory) and server
//! nonces.
//!
//! Nonces are stateless: an HMAC of the current five-minute window under a key derived
//! from the master key, so every node that shares the master key makes and accepts the same
//! ones. Without a master key each process draws its own key, which is right for one node;
//! the binary refuses `dpop_nonce` on PostgreSQL without a master key.

use aws_lc_rs::hmac;
use latchkey_dpop::{CheckedProof, Expected, IAT_WINDOW_SECS, ProofError};

pub use latchkey_dpop::{ALGORITHMS, Thumbprint};

use crate::crypto::{TokenHash, b64};
use crate::service::Latchkey;
use crate::store::StoreError;

/// How long one nonce is current; the one before it is still accepted.
const NONCE_WINDOW_SECS: i64 = 300;

/// Why a request's proof was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum DpopError {
    /// `400 invalid_dpop_proof`.
    #[error(transparent)]
    Invalid(#[from] ProofError),
    /// The proof's `jti` was seen before: `400 invalid_dpop_proof`.
    #[error("the DPoP proof was used before")]
    Replayed,
    /// `400 use_dpop_nonce` with this fresh `DPoP-Nonce` (the proof had none, or an old
    /// one).
    #[error("a DPoP nonce from this server is required")]
    UseNonce {
        /// The nonce to sign the next proof with.
        nonce: String,
    },
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The key DPoP nonces are made with.
pub(crate) struct NonceKey(hmac::Key);

impl NonceKey {
    /// From the master key's derived bytes, or random bytes for one process.
    pub(crate) fn new(master_key: Option<&crate::master_key::MasterKey>) -> Self {
        let bytes = match master_key {
            Some(m) => *m.dpop_nonce_key(),
            None => crate::crypto::random_bytes::<32>(),
        };
        Self(hmac::Key::new(hmac::HMAC_SHA256, &bytes))
    }

    fn for_window(&self, window: i64) -> String {
        let tag = hmac::sign(&self.0, &window.to_be_bytes());
        b64(tag.as_ref().get(..18).unwrap_or_default())
    }
}

/// The replay cache's key for a proof: a `jti` is unique per key, not across keys.
fn replay_key(proof: &CheckedProof) -> TokenHash {
    TokenHash::of(&format!("{}\n{}", proof.jkt.as_str(), proof.jti))
}

impl Latchkey {
    /// The nonce clients should put in their next proof, when `dpop_nonce` is on.
    pub fn dpop_nonce(&self) -> Option<String> {
        self.settings
            .dpop_nonce
            .then(|| self.nonces.for_window(self.clock.now().0.div_euclid(NONCE_WINDOW_SECS)))
    }

    fn is_current_nonce(&self, nonce: &str) -> bool {
        let window = self.clock.now().0.div_euclid(NONCE_WINDOW_SECS);
        [window, window - 1].into_iter().any(|w| {
            aws_lc_rs::constant_time::verify_slices_are_equal(
                self.nonces.for_window(w).as_bytes(),
                nonce.as_bytes(),
            )
            .is_ok()
        })
    }

    /// Checks the `DPoP` header of a request to one of this server's endpoints: `method`,
    /// and `path` under the issuer (the URL clients sign, whatever proxy is in between).
    /// Returns the key the caller proved it holds. Each proof is accepted once.
    ///
    /// # Errors
    /// See [`DpopError`].
    pub async fn check_dpop_proof(
        &self,
        proof: &str,
        method: &str,
        path: &str,
        access_token: Option<&str>,
    ) -> Result<Thumbprint, DpopError> {
        let now = self.clock.now();
        let url = format!("{}{path}", self.settings.issuer.trim_end_matches('/'));
        let checked = latchkey_dpop::check(proof, &Expected { method, url: &url, now: now.0, access_token })?;
        if let Some(nonce) = self.dpop_nonce()
            && !checked.nonce.as_deref().is_some_and(|n| self.is_current_nonce(n))
        {
            return Err(DpopError::UseNonce { nonce });
        }
        // Remembered past the latest moment its `iat` is accepted: a proof dated `now + 60`
        // passes until `now + 120` inclusive, and rows go when `expires_at <= now`.
        let until = now.plus(std::time::Duration::from_secs(2 * IAT_WINDOW_SECS.unsigned_abs() + 1));
        if !self.store.remember_dpop_proof(&replay_key(&checked), until).await? {
            return Err(DpopError::Replayed);
        }
        Ok(checked.jkt)
    }
}
