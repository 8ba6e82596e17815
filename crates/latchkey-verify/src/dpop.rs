//! DPoP at a resource server (SPEC 12, RFC 9449 §7): a bound token comes as
//! `Authorization: DPoP <token>` with a proof whose key is the token's `cnf.jkt`, whose
//! `ath` is the token's hash, and whose `htm`/`htu` name this request. Each proof is
//! accepted once: the replay cache remembers proofs for as long as their `iat` could still
//! pass, in bounded memory.

use std::collections::{HashMap, HashSet};

use aws_lc_rs::digest::{SHA256, digest};
use latchkey_dpop::{Expected, IAT_WINDOW_SECS};
use latchkey_proto::TokenErrorReason;

use crate::clock::unix_secs;
use crate::verifier::{Verified, Verifier, VerifyError, lock};

/// The replay cache's default size.
pub(crate) const DEFAULT_REPLAY_CAPACITY: usize = 1_000_000;

/// How long a generation of the cache lasts. A proof passes while its `iat` is within
/// [`IAT_WINDOW_SECS`] of now, so for at most twice that; a proof seen in one generation
/// is still known through the next, so it is remembered at least this long.
const GENERATION_SECS: i64 = 2 * IAT_WINDOW_SECS;

/// One key's proofs may take a quarter of the cache (of the default, about 1,000 DPoP
/// requests a second from one key), so that one holder of a bound token cannot fill it and
/// lock every other client out.
const PER_KEY_SHARE: usize = 4;

/// One generation: the proofs seen (16 bytes of SHA-256 over the key's thumbprint and
/// `jti`) and how many of them each key made (by 8 bytes of its thumbprint's hash).
#[derive(Default)]
struct Generation {
    proofs: HashSet<[u8; 16]>,
    per_key: HashMap<[u8; 8], usize>,
}

/// Proofs seen, in two generations: the current one and the one before. When the current
/// generation is older than [`GENERATION_SECS`] the older one is dropped whole, which keeps
/// the bookkeeping to two map updates per proof.
pub(crate) struct ReplayCache {
    capacity: usize,
    started_at: i64,
    current: Generation,
    previous: Generation,
}

impl ReplayCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            started_at: i64::MIN,
            current: Generation::default(),
            previous: Generation::default(),
        }
    }

    /// Remembers a proof of `key`; `Ok(false)` when it was seen before.
    fn remember(&mut self, id: [u8; 16], key: [u8; 8], now: i64) -> Result<bool, VerifyError> {
        if now.saturating_sub(self.started_at) >= GENERATION_SECS {
            let is_previous_stale = now.saturating_sub(self.started_at) >= 2 * GENERATION_SECS;
            let current = std::mem::take(&mut self.current);
            self.previous = if is_previous_stale { Generation::default() } else { current };
            self.started_at = now;
        }
        if self.previous.proofs.contains(&id) || self.current.proofs.contains(&id) {
            return Ok(false);
        }
        let of_key = |g: &Generation| g.per_key.get(&key).copied().unwrap_or(0);
        let is_key_over_share =
            of_key(&self.previous) + of_key(&self.current) >= (self.capacity / PER_KEY_SHARE).max(1);
        if is_key_over_share || self.previous.proofs.len() + self.current.proofs.len() >= self.capacity {
            return Err(VerifyError::ProofCacheFull);
        }
        *self.current.per_key.entry(key).or_default() += 1;
        Ok(self.current.proofs.insert(id))
    }
}

impl Verifier {
    /// Verifies a token that came as `Authorization: DPoP` with `proof` (the request's
    /// `DPoP` header), on a request with `method` to `url` (the URL the client used, query
    /// left out): the token as [`Self::verify`] does, then the proof (SPEC 12).
    ///
    /// # Errors
    /// [`VerifyError::Proof`] and [`VerifyError::ProofReplayed`] for the proof;
    /// [`TokenErrorReason::DpopKeyMismatch`] when the proof's key is not the token's (or
    /// the token is not bound); what [`Self::verify`] answers for the token.
    pub async fn verify_dpop(
        &self,
        token: &str,
        proof: &str,
        method: &str,
        url: &str,
    ) -> Result<Verified, VerifyError> {
        let now = unix_secs((self.now)());
        // The proof first: it is cheap to refuse, and a token without its proof is not
        // worth a signature check.
        let checked = latchkey_dpop::check(proof, &Expected { method, url, now, access_token: Some(token) })?;
        let verified = self.verify_token(token).await?;
        let is_bound_to_proof = verified
            .claims
            .cnf
            .as_ref()
            .is_some_and(|cnf| cnf.jkt.as_bytes() == checked.jkt.as_str().as_bytes());
        if !is_bound_to_proof {
            return Err(VerifyError::Invalid(TokenErrorReason::DpopKeyMismatch));
        }
        let hash = digest(&SHA256, format!("{}\n{}", checked.jkt.as_str(), checked.jti).as_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(hash.as_ref().get(..16).unwrap_or(&[0; 16]));
        let mut key = [0u8; 8];
        key.copy_from_slice(
            digest(&SHA256, checked.jkt.as_str().as_bytes()).as_ref().get(..8).unwrap_or(&[0; 8]),
        );
        if !lock(&self.proofs).remember(id, key, now)? {
            return Err(VerifyError::ProofReplayed);
        }
        Ok(verified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_is_remembered_through_its_window_and_memory_stays_bounded() {
        let mut cache = ReplayCache::new(3);
        let t = 1_000_000;
        // Keys 1, 2, 3, 4: one proof each (a quarter of a 3-proof cache is at least 1).
        let key = |n: u8| [n; 8];
        assert!(cache.remember([1; 16], key(1), t).unwrap());
        assert!(!cache.remember([1; 16], key(1), t + 1).unwrap());
        // Into the next generation: still known.
        assert!(!cache.remember([1; 16], key(1), t + GENERATION_SECS + 5).unwrap());
        assert!(cache.remember([2; 16], key(2), t + GENERATION_SECS + 5).unwrap());
        assert!(cache.remember([3; 16], key(3), t + GENERATION_SECS + 6).unwrap());
        // Full of live proofs: refused, not forgotten.
        let full = cache.remember([4; 16], key(4), t + GENERATION_SECS + 7);
        assert!(matches!(full, Err(VerifyError::ProofCacheFull)));
        // Two generations later the first proof is gone, and there is room again.
        assert!(cache.remember([1; 16], key(1), t + 2 * GENERATION_SECS + 10).unwrap());
        assert!(!cache.remember([2; 16], key(2), t + 2 * GENERATION_SECS + 10).unwrap());
        // After a long quiet spell everything is forgotten at once.
        assert!(cache.remember([2; 16], key(2), t + 10 * GENERATION_SECS).unwrap());
    }

    #[test]
    fn one_key_cannot_take_more_than_its_share() {
        let mut cache = ReplayCache::new(16);
        let t = 1_000_000;
        for n in 0..4u8 {
            assert!(cache.remember([n; 16], [9; 8], t).unwrap());
        }
        // A quarter of 16 is 4: the fifth proof of that key is refused, another key's not.
        assert!(matches!(cache.remember([5; 16], [9; 8], t), Err(VerifyError::ProofCacheFull)));
        assert!(cache.remember([5; 16], [7; 8], t).unwrap());
    }
}
