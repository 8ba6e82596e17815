//! OAuth 2.1 / OpenID Connect wire types (SPEC 5.2): the token endpoint's answer and the
//! ID token's claims.

use serde::{Deserialize, Serialize};

use crate::secret::RefreshToken;

/// `POST /oauth/token` answer (RFC 6749 §5.1, OpenID Connect Core §3.1.3.3).
#[derive(Serialize)]
pub struct OAuthTokenResponse {
    /// The signed JWT access token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// A refresh token, for clients allowed the `refresh_token` grant.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "serialize_optional_refresh_token")]
    pub refresh_token: Option<RefreshToken>,
    /// The ID token, when the scope has `openid` (not on refresh).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// The granted scope, space-separated.
    pub scope: String,
}

impl std::fmt::Debug for OAuthTokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthTokenResponse")
            .field("expires_in", &self.expires_in)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .field("has_id_token", &self.id_token.is_some())
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

fn serialize_optional_refresh_token<S: serde::Serializer>(
    token: &Option<RefreshToken>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match token {
        Some(t) => s.serialize_str(t.expose_secret()),
        None => s.serialize_none(),
    }
}

/// The answer of the device authorization endpoint (RFC 8628 §3.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceAuthorizationResponse {
    /// For the device's token requests (`lkd_`).
    pub device_code: String,
    /// For the user to type, `XXXX-XXXX`.
    pub user_code: String,
    /// Where the user types it.
    pub verification_uri: String,
    /// The same with the code filled in (for a QR code).
    pub verification_uri_complete: String,
    /// Seconds the codes live.
    pub expires_in: u64,
    /// Seconds to wait between polls.
    pub interval: u64,
}

/// The event a logout token carries (OpenID Connect Back-Channel Logout 1.0 §2.4).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// The `typ` header of a logout token (§2.4: explicit typing).
pub const LOGOUT_TOKEN_TYPE: &str = "logout+jwt";

/// The claims of a logout token (OpenID Connect Back-Channel Logout 1.0 §2.4): never a
/// `nonce`; `sid` and `sub` both, so an app may key its sessions either way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogoutTokenClaims {
    /// The issuer.
    pub iss: String,
    /// The user.
    pub sub: String,
    /// The app's client id.
    pub aud: String,
    /// Signing time (each attempt signs anew).
    pub iat: i64,
    /// Two minutes after `iat`.
    pub exp: i64,
    /// The same on every attempt of one delivery, so the app can drop a duplicate.
    pub jti: String,
    /// The session that ended: the `sid` of its ID tokens.
    pub sid: String,
    /// `{"http://schemas.openid.net/event/backchannel-logout": {}}`.
    pub events: LogoutEvents,
}

/// The `events` claim of a logout token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogoutEvents {
    /// An empty object under [`BACKCHANNEL_LOGOUT_EVENT`].
    #[serde(rename = "http://schemas.openid.net/event/backchannel-logout")]
    pub backchannel_logout: EmptyObject,
}

/// `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyObject {}

/// The claims of an ID token (OpenID Connect Core §2, §3.1.3.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdTokenClaims {
    /// Issuer URL.
    pub iss: String,
    /// The user.
    pub sub: String,
    /// The client.
    pub aud: String,
    /// Authorized party: the client.
    pub azp: String,
    /// Expiry.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// When the user authenticated.
    pub auth_time: i64,
    /// The authorization request's `nonce`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Left half of the hash of the access token, base64url.
    pub at_hash: String,
    /// The session (the app's grant).
    pub sid: String,
    /// The username, with the `profile` scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    /// How the user signed in (RFC 8176 values; SPEC 11).
    pub amr: Vec<String>,
    /// The assurance level of that sign-in (`urn:latchkey:acr:pwd` or `…:mfa`).
    pub acr: String,
}
