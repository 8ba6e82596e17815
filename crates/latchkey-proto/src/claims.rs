//! Access-token claims (SPEC 3, RFC 9068 profile) and the JOSE header values Latchkey uses.

use serde::{Deserialize, Serialize};

/// The `typ` header of every access token (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

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
}

/// The `cnf` claim (RFC 9449 §6.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// JWK SHA-256 thumbprint of the client's DPoP key.
    pub jkt: String,
}
