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

/// A token's `aud` (RFC 7519 §4.1.3): one audience as a string, or several as an array
/// (an app that asked for several resources, RFC 8707).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Audience {
    /// The audience of a token for `resources`: `default` when there are none.
    pub fn of(resources: &[String], default: &str) -> Self {
        match resources {
            [] => Self::One(default.to_owned()),
            [one] => Self::One(one.clone()),
            many => Self::Many(many.to_vec()),
        }
    }

    /// Whether `audience` is one of them.
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Self::One(a) => a == audience,
            Self::Many(all) => all.iter().any(|a| a == audience),
        }
    }
}

impl From<String> for Audience {
    fn from(a: String) -> Self {
        Self::One(a)
    }
}

impl From<&str> for Audience {
    fn from(a: &str) -> Self {
        Self::One(a.to_owned())
    }
}

/// The claims of a Latchkey access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// Issuer URL.
    pub iss: String,
    /// User id (or client id for client_credentials).
    pub sub: String,
    /// Audience: Latchkey's `audience` setting, or the resources an app asked for
    /// (RFC 8707).
    pub aud: Audience,
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
        if !self.aud.contains(expect.audience) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_audience_is_one_string_or_several() {
        let one: Audience = serde_json::from_str("\"https://a\"").unwrap();
        let many: Audience = serde_json::from_str("[\"https://a\",\"https://b\"]").unwrap();
        assert!(one.contains("https://a") && !one.contains("https://b"));
        assert!(many.contains("https://a") && many.contains("https://b") && !many.contains("https://c"));
        assert_eq!(Audience::of(&[], "d"), Audience::One("d".into()));
        assert_eq!(serde_json::to_string(&Audience::of(&["x".into()], "d")).unwrap(), "\"x\"");
        assert_eq!(serde_json::to_string(&many).unwrap(), "[\"https://a\",\"https://b\"]");
    }
}
