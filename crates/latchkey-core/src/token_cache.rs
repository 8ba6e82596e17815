//! A bounded cache of access tokens whose signature this process has verified, so that a
//! token presented again (introspection by a resource server, the Bearer endpoints, each
//! request of one client) costs a hash lookup instead of a signature check (EdDSA ~60 µs,
//! PERF-FACTS). Only the signature and the parsing are skipped: the claims, expiry
//! included, are checked against the clock at every use, and revocation is the caller's
//! business as before.
//!
//! Only tokens that verified get in, so filling it takes valid tokens; when it is full it
//! is emptied and fills again (a bound on memory, not an eviction policy worth tuning). The
//! key that signed a token must still be in the key ring when the token is used again, so
//! a key taken out of the ring takes its tokens with it, cached or not.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use latchkey_proto::claims::AccessTokenClaims;

use crate::crypto::TokenHash;

/// The most tokens kept.
pub const MAX_CACHED_TOKENS: usize = 10_000;

/// A token that verified: the key that signed it (which must still be in the ring when the
/// token is used again) and its claims.
pub(crate) struct VerifiedToken {
    /// The signing key's `kid`.
    pub(crate) kid: String,
    /// The claims.
    pub(crate) claims: AccessTokenClaims,
}

/// Verified access tokens by the SHA-256 of their text.
#[derive(Default)]
pub(crate) struct VerifiedTokens {
    map: Mutex<HashMap<TokenHash, Arc<VerifiedToken>>>,
}

impl VerifiedTokens {
    /// A token verified before. The lock is held only for the lookup.
    pub(crate) fn get(&self, token: &TokenHash) -> Option<Arc<VerifiedToken>> {
        self.map.lock().ok()?.get(token).cloned()
    }

    /// Remembers a token that verified.
    pub(crate) fn insert(&self, token: TokenHash, verified: Arc<VerifiedToken>) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= MAX_CACHED_TOKENS {
                map.clear();
            }
            map.insert(token, verified);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(jti: &str) -> AccessTokenClaims {
        serde_json::from_value(serde_json::json!({
            "iss": "i", "sub": "s", "aud": "a", "client_id": "c", "exp": 10, "iat": 1, "jti": jti,
            "scope": "", "roles": [], "authz_ver": 1
        }))
        .unwrap()
    }

    #[test]
    fn remembers_verified_tokens_and_stays_bounded() {
        let cache = VerifiedTokens::default();
        assert!(cache.get(&TokenHash::of("t0")).is_none());
        let verified = |jti: &str| Arc::new(VerifiedToken { kid: "k".into(), claims: claims(jti) });
        cache.insert(TokenHash::of("t0"), verified("j0"));
        assert_eq!(cache.get(&TokenHash::of("t0")).map(|c| c.claims.jti.clone()), Some("j0".to_owned()));
        for i in 1..=MAX_CACHED_TOKENS {
            cache.insert(TokenHash::of(&format!("t{i}")), verified("j"));
        }
        let len = cache.map.lock().unwrap().len();
        assert!(len <= MAX_CACHED_TOKENS, "{len}");
    }
}
