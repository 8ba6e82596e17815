//! Access tokens (SPEC 3, RFC 9068): minting with the key ring's parsed keys, and the
//! strict verification the server applies to Bearer tokens on its own endpoints (SPEC 8):
//! the algorithm comes from the key, never the header; `typ`, `iss`, `aud`, `exp` and
//! `iat` are checked against the injected clock with a small skew. A token whose signature
//! verified before is served from `token_cache.rs` (its claims are still checked).

use std::sync::Arc;

use crate::keys::JwtRejection;
use latchkey_proto::TokenErrorReason;
use latchkey_proto::claims::{
    ACCESS_TOKEN_TYP, AccessTokenClaims, Audience, ClaimsCheck, Confirmation, MAX_ACCESS_TOKEN_LEN,
    is_access_token_typ,
};

use crate::clock::Timestamp;
use crate::crypto::{TokenHash, new_id};
use crate::dpop::Thumbprint;
use crate::ids::{ClientId, Scope};
use crate::keys::KeyError;
use crate::service::Latchkey;
use crate::store::{SessionRecord, UserRecord};
use crate::token_cache::VerifiedToken;

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Whether a session's access tokens carry the user's roles (SPEC 13): first-party
/// sessions always; an app's only when it was granted the scope `roles`, so that an app the
/// user allowed `openid profile` cannot act at an API with the user's roles.
pub(crate) fn carries_roles(session: &SessionRecord) -> bool {
    session.client_id == crate::login::FIRST_PARTY_CLIENT_ID || session.scope.contains(crate::oauth::ROLES)
}

/// The `token_type` of a token response: `DPoP` when its access token is bound to a key.
pub(crate) fn token_type(key: Option<&Thumbprint>) -> &'static str {
    if key.is_some() { "DPoP" } else { "Bearer" }
}

fn confirmation(key: Option<&Thumbprint>) -> Option<Confirmation> {
    key.map(|k| Confirmation { jkt: k.as_str().to_owned() })
}

impl Latchkey {
    /// Mints an access token for a session that lives `lifetime` (the configured one, or
    /// less when risk shortened it; never past the session's end), bound to `key` when the
    /// request proved one (`cnf.jkt`, SPEC 12), for `resources` (its `aud`, RFC 8707; the
    /// `audience` setting when none).
    ///
    /// # Errors
    /// When no key can sign.
    pub(crate) fn mint_access_token(
        &self,
        user: &UserRecord,
        session: &SessionRecord,
        key: Option<&Thumbprint>,
        resources: &[String],
        lifetime: std::time::Duration,
        now: Timestamp,
    ) -> Result<String, KeyError> {
        let s = &self.settings;
        let claims = AccessTokenClaims {
            iss: s.issuer.clone(),
            sub: user.id.to_string(),
            aud: Audience::of(resources, &s.audience),
            client_id: session.client_id.to_string(),
            // Never valid past the session's absolute end, even for verifiers that only look
            // at the token.
            exp: now.plus(lifetime).min(session.expires_at).0,
            iat: now.0,
            nbf: None,
            jti: new_id(),
            sid: Some(session.id.to_string()),
            scope: session.scope.to_string(),
            roles: if carries_roles(session) { user.roles.clone() } else { Vec::new() },
            authz_ver: user.authz_ver,
            cnf: confirmation(key),
            amr: crate::mfa::amr_values(&session.amr),
            acr: Some(crate::mfa::acr_of(&session.amr).to_owned()),
        };
        let set = self.keys.current();
        let key =
            set.signer(s.access_token_alg, now).ok_or(KeyError::NoActiveKey(s.access_token_alg.as_str()))?;
        key.sign_jwt(ACCESS_TOKEN_TYP, &claims)
    }

    /// Mints an access token for a client acting on its own behalf (`client_credentials`):
    /// `sub` is the client, no session, no roles; `aud` as for a session's.
    ///
    /// # Errors
    /// When no key can sign.
    pub(crate) fn mint_client_token(
        &self,
        client_id: &ClientId,
        scope: &Scope,
        key: Option<&Thumbprint>,
        resources: &[String],
        now: Timestamp,
    ) -> Result<String, KeyError> {
        let s = &self.settings;
        let claims = AccessTokenClaims {
            iss: s.issuer.clone(),
            sub: client_id.to_string(),
            aud: Audience::of(resources, &s.audience),
            client_id: client_id.to_string(),
            exp: now.plus(s.access_token_ttl).0,
            iat: now.0,
            nbf: None,
            jti: new_id(),
            sid: None,
            scope: scope.to_string(),
            roles: Vec::new(),
            authz_ver: 0,
            cnf: confirmation(key),
            amr: Vec::new(),
            acr: None,
        };
        let set = self.keys.current();
        let key =
            set.signer(s.access_token_alg, now).ok_or(KeyError::NoActiveKey(s.access_token_alg.as_str()))?;
        key.sign_jwt(ACCESS_TOKEN_TYP, &claims)
    }

    /// Seconds a token minted now for `session` with `lifetime` lives (`expires_in`): that,
    /// or less when the session ends sooner.
    pub(crate) fn access_token_lifetime(
        &self,
        session: &SessionRecord,
        lifetime: std::time::Duration,
        now: Timestamp,
    ) -> u64 {
        let exp = now.plus(lifetime).min(session.expires_at);
        u64::try_from(exp.seconds_since(now)).unwrap_or(0)
    }

    /// Verifies an access token's signature and claims; `allow_expired` is for logout,
    /// where a token past `exp` still proves which session to end.
    ///
    /// # Errors
    /// The [`TokenErrorReason`] of SPEC 5.5.
    pub fn verify_access_token(
        &self,
        token: &str,
        allow_expired: bool,
    ) -> Result<AccessTokenClaims, TokenErrorReason> {
        self.verify_with(token, allow_expired, false)
    }

    /// As [`Latchkey::verify_access_token`], for the endpoints that speak of any token this
    /// server issued (introspection, revocation): its `aud` may also be the resources an
    /// app asked for (RFC 8707), not only the `audience` setting.
    ///
    /// # Errors
    /// The [`TokenErrorReason`] of SPEC 5.5.
    pub fn verify_issued_access_token(
        &self,
        token: &str,
        allow_expired: bool,
    ) -> Result<AccessTokenClaims, TokenErrorReason> {
        self.verify_with(token, allow_expired, true)
    }

    fn verify_with(
        &self,
        token: &str,
        allow_expired: bool,
        any_audience: bool,
    ) -> Result<AccessTokenClaims, TokenErrorReason> {
        if token.len() > MAX_ACCESS_TOKEN_LEN {
            return Err(TokenErrorReason::Malformed);
        }
        let hash = TokenHash::of(token);
        let verified = match self.verified.get(&hash) {
            Some(v) if self.keys.current().find(&v.kid).is_some() => v,
            Some(_) => return Err(TokenErrorReason::UnknownKey),
            None => {
                let v = Arc::new(self.verify_signature(token)?);
                self.verified.insert(hash, Arc::clone(&v));
                v
            }
        };
        let claims = verified.claims.clone();
        let s = &self.settings;
        let own = match &claims.aud {
            Audience::One(a) => a.clone(),
            Audience::Many(all) => all.first().cloned().unwrap_or_default(),
        };
        claims.check(&ClaimsCheck {
            issuer: &s.issuer,
            audience: if any_audience { &own } else { &s.audience },
            now: self.clock.now().0,
            skew: secs(s.clock_skew),
            allow_expired,
        })?;
        Ok(claims)
    }

    /// Parses an access token and checks its header and signature against the key ring.
    /// Times and audience are checked by the caller, against the injected clock and with
    /// specific reasons.
    fn verify_signature(&self, token: &str) -> Result<VerifiedToken, TokenErrorReason> {
        let (kid, claims) =
            self.keys.current().verify_jwt::<AccessTokenClaims>(token, is_access_token_typ).map_err(|e| {
                match e {
                    JwtRejection::Malformed => TokenErrorReason::Malformed,
                    JwtRejection::UnknownKey => TokenErrorReason::UnknownKey,
                    JwtRejection::BadSignature => TokenErrorReason::BadSignature,
                }
            })?;
        Ok(VerifiedToken { kid, claims })
    }
}
