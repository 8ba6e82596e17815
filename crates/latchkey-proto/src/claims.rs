//! Access-token claims (SPEC 3, RFC 9068 profile) and the JOSE header values Latchkey uses.

use serde::{Deserialize, Serialize};

use crate::TokenErrorReason;

/// The `typ` header of every access token (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// The `client_id` of the tokens Latchkey issues to its own clients through the
/// first-party session API (`/auth/login`, `/auth/refresh`, SPEC 5.1); an app's tokens carry
/// the app's own id (SPEC 13). The server and `latchkey-verify` share this one constant.
pub const FIRST_PARTY_CLIENT_ID: &str = "latchkey";

/// The longest access token anyone checks: longer ones are `malformed` before any parsing
/// (Latchkey's are well under 2 KiB).
pub const MAX_ACCESS_TOKEN_LEN: usize = 16 * 1024;

/// Whether a JOSE `typ` header names an access token (RFC 9068 §2.1: `at+jwt`, also with
/// the `application/` prefix, case-insensitively).
pub fn is_access_token_typ(typ: Option<&str>) -> bool {
    typ.is_some_and(|t| {
        t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt")
    })
}

/// What a verifier expects of an access token's claims, once the signature is good.
#[derive(Debug, Clone, Copy)]
pub struct ClaimsCheck<'a> {
    /// The issuer URL.
    pub issuer: &'a str,
    /// The audience.
    pub audience: &'a str,
    /// Now, seconds since the epoch.
    pub now: i64,
    /// Clock skew tolerated on `iat`, `nbf` and `exp`, in seconds.
    pub skew: i64,
    /// Whether an expired token is still acceptable (logout proves the session with it).
    pub allow_expired: bool,
}

/// The claims of a Latchkey access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// Issuer URL.
    pub iss: String,
    /// User id (or client id for client_credentials).
    pub sub: String,
    /// Audience.
    pub aud: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Not before, seconds since the epoch (Latchkey does not set it; verifiers honour it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Unique token id.
    pub jti: String,
    /// Session id; absent for client_credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Space-separated scopes.
    pub scope: String,
    /// The user's roles when the token was minted.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The user's authorisation version when the token was minted.
    #[serde(default)]
    pub authz_ver: i64,
    /// Confirmation (DPoP key thumbprint), when bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// How the user signed in (RFC 8176 values: `pwd`, `otp`, `mfa`; SPEC 11); absent for
    /// `client_credentials`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// The assurance level of that sign-in (`urn:latchkey:acr:pwd` or `…:mfa`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
}

impl AccessTokenClaims {
    /// The claim checks of SPEC 8, shared by the server and `latchkey-verify`: `iss`, `aud`,
    /// `iat` not in the future, `nbf` reached and `exp` not passed, each with the skew.
    ///
    /// # Errors
    /// The [`TokenErrorReason`] of SPEC 5.5 (a token issued or valid only in the future is
    /// `malformed`).
    pub fn check(&self, expect: &ClaimsCheck<'_>) -> Result<(), TokenErrorReason> {
        if self.iss != expect.issuer {
            return Err(TokenErrorReason::WrongIssuer);
        }
        if self.aud != expect.audience {
            return Err(TokenErrorReason::WrongAudience);
        }
        let latest = expect.now.saturating_add(expect.skew);
        if self.iat > latest || self.nbf.is_some_and(|nbf| nbf > latest) {
            return Err(TokenErrorReason::Malformed);
        }
        if !expect.allow_expired && self.exp.saturating_add(expect.skew) <= expect.now {
            return Err(TokenErrorReason::Expired);
        }
        Ok(())
    }
}

/// The `cnf` claim (RFC 9449 §6.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// JWK SHA-256 thumbprint of the client's DPoP key.
    pub jkt: String,
}
