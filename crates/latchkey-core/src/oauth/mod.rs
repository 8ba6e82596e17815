//! The OAuth 2.1 / OpenID Connect provider (SPEC 5.2): authorization requests, remembered
//! consent, codes, the token endpoint's grants, revocation (RFC 7009), introspection
//! (RFC 7662), userinfo, ID tokens and discovery. An app's grant is a session like any
//! other: it shares the refresh engine, the device list and the revocation feed.

mod authorize;
mod device_grant;
mod discovery;
mod endpoints;
mod id_token;
mod logout;
mod par;
mod registration;
mod token;

pub use authorize::{
    AuthorizeError, AuthorizeParams, AuthorizeRequest, AuthorizeStep, ConsentOutcome, Prompt, ScopeInfo,
};
pub use device_grant::{
    DEVICE_CODE_GRANT, DEVICE_CODE_TTL, DeviceError, DeviceRequest, POLL_INTERVAL_SECS, USER_CODE_ALPHABET,
    WRONG_CODE_WINDOW, WRONG_CODES, display_user_code, normalize_user_code, poll_decision,
};
pub use endpoints::{INTROSPECT_SCOPE, MAX_TOKEN_REVOCATIONS, TOKEN_REVOCATION_WINDOW, UserinfoError};
pub use logout::{EndSession, EndSessionError, EndSessionParams, HintedSession};
pub use par::{PUSHED_REQUEST_FLOW_TTL, PUSHED_REQUEST_TTL, PushedRequestResponse, REQUEST_URI_PREFIX};
pub use registration::{ClientMetadata, REGISTRABLE_SCOPES, REGISTRATION_TOKEN_TTL, RegistrationError};
pub use token::{ClientCredentials, TokenGrant, TokenRequestError};

use latchkey_proto::ErrorCode;

/// How long an authorization code lives (SPEC 5.2).
pub const CODE_TTL: std::time::Duration = std::time::Duration::from_secs(60);
/// The scope that asks for an ID token.
pub const OPENID: &str = "openid";
/// The scope that asks for a refresh token; accepted, never required (SPEC 5.2).
pub const OFFLINE_ACCESS: &str = "offline_access";
/// The scope that lets an app's access tokens carry the user's roles (SPEC 13). Without it
/// an app acts with its scopes only, never with the user's roles.
pub const ROLES: &str = "roles";

/// Plain words for a scope, for the consent page.
pub fn describe_scope(scope: &str) -> String {
    match scope {
        OPENID => "Confirm who you are (your account id)".to_owned(),
        "profile" => "See your username".to_owned(),
        OFFLINE_ACCESS => "Stay connected while you are away".to_owned(),
        ROLES => "Act with your roles (for example as a manager)".to_owned(),
        other => format!("Use the permission \u{201c}{other}\u{201d}"),
    }
}

/// Builds a redirect to a registered redirect URI with query parameters appended.
pub fn redirect_with(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    let mut url = redirect_uri.to_owned();
    let mut sep = if url.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        url.push(sep);
        url.push_str(&form_encode(k));
        url.push('=');
        url.push_str(&form_encode(v));
        sep = '&';
    }
    url
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// An error to send back to the client's redirect URI (RFC 6749 §4.1.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectError {
    /// The registered redirect URI.
    pub redirect_uri: crate::ids::RedirectUri,
    /// The request's `state`.
    pub state: Option<String>,
    /// The code.
    pub error: ErrorCode,
    /// A sentence.
    pub description: &'static str,
    /// Latchkey's `error_reason` (`user_denied`).
    pub reason: Option<&'static str>,
}

impl RedirectError {
    /// The URL to redirect to, with `iss` (RFC 9207).
    pub fn url(&self, issuer: &str) -> String {
        // SPEC 5.2's order: error, error_reason, error_description, then state.
        let mut params = vec![("error", self.error.as_str())];
        if let Some(r) = self.reason {
            params.push(("error_reason", r));
        }
        params.push(("error_description", self.description));
        if let Some(s) = &self.state {
            params.push(("state", s));
        }
        params.push(("iss", issuer));
        redirect_with(self.redirect_uri.as_str(), &params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_append_encoded_parameters() {
        assert_eq!(
            redirect_with("https://a.example/cb", &[("code", "x y"), ("state", "a&b")]),
            "https://a.example/cb?code=x+y&state=a%26b"
        );
        assert_eq!(
            redirect_with("https://a.example/cb?v=1", &[("code", "é")]),
            "https://a.example/cb?v=1&code=%C3%A9"
        );
    }

    #[test]
    fn denial_matches_spec_5_2_to_the_letter() {
        let e = RedirectError {
            redirect_uri: "https://a.example/cb".into(),
            state: Some("s1".into()),
            error: ErrorCode::AccessDenied,
            description: "The user denied your request",
            reason: Some("user_denied"),
        };
        assert_eq!(
            e.url("http://issuer"),
            "https://a.example/cb?error=access_denied&error_reason=user_denied&error_description=The+user+denied+your+request&state=s1&iss=http%3A%2F%2Fissuer"
        );
    }
}
