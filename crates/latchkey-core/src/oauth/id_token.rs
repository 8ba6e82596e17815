//! ID tokens (OpenID Connect Core §2, §3.1.3.6): signed with the ID-token key (RS256 by
//! default), `aud` the client, with `auth_time`, `nonce`, `at_hash` and `sid`.

use aws_lc_rs::digest::{SHA256, SHA512, digest};
use latchkey_proto::oauth::IdTokenClaims;

use crate::clock::Timestamp;
use crate::crypto::b64;
use crate::keys::{Algorithm, KeyError};
use crate::service::Latchkey;
use crate::store::{SessionRecord, UserRecord};

/// `at_hash`: the left half of the access token's hash, with the hash of the ID token's
/// algorithm (SHA-256 for RS256 and ES256; SHA-512 for EdDSA over Ed25519).
pub(crate) fn at_hash(alg: Algorithm, access_token: &str) -> String {
    let d = match alg {
        Algorithm::RS256 | Algorithm::ES256 => digest(&SHA256, access_token.as_bytes()),
        Algorithm::EdDSA => digest(&SHA512, access_token.as_bytes()),
    };
    let bytes = d.as_ref();
    b64(bytes.get(..bytes.len() / 2).unwrap_or_default())
}

impl Latchkey {
    /// Mints the ID token of an app's session.
    ///
    /// # Errors
    /// When no key can sign.
    pub(crate) fn mint_id_token(
        &self,
        user: &UserRecord,
        session: &SessionRecord,
        auth_time: Timestamp,
        nonce: Option<&str>,
        access_token: &str,
        now: Timestamp,
    ) -> Result<String, KeyError> {
        let s = &self.settings;
        let alg = s.id_token_alg;
        let has_profile = session.scope.contains("profile");
        let claims = IdTokenClaims {
            iss: s.issuer.clone(),
            sub: user.id.to_string(),
            aud: session.client_id.to_string(),
            azp: session.client_id.to_string(),
            exp: now.plus(s.access_token_ttl).min(session.expires_at).0,
            iat: now.0,
            auth_time: auth_time.0,
            nonce: nonce.map(str::to_owned),
            at_hash: at_hash(alg, access_token),
            sid: session.id.to_string(),
            preferred_username: has_profile.then(|| user.username.clone()),
            amr: crate::mfa::amr_values(&session.amr),
            acr: crate::mfa::acr_of(&session.amr).to_owned(),
        };
        let set = self.keys.current();
        let key = set.signer(alg, now).ok_or(KeyError::NoActiveKey(alg.as_str()))?;
        key.sign_jwt("JWT", &claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_matches_the_openid_example() {
        // OpenID Connect Core, appendix A.3 (RS256).
        assert_eq!(
            at_hash(Algorithm::RS256, "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }
}
