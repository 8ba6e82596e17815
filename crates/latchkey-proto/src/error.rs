//! Error codes (RFC 6749 §5.2, RFC 6750 §3.1, plus Latchkey's own) and the JSON error body
//! `{"error", "error_description", "error_reason"?}` every endpoint answers with (SPEC 5).

use serde::{Deserialize, Serialize};

/// The `error` field of an error response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// RFC 6749: the request is malformed.
    InvalidRequest,
    /// RFC 6749: client authentication failed.
    InvalidClient,
    /// RFC 6749: the grant (refresh token, code) is invalid, expired or revoked.
    InvalidGrant,
    /// RFC 6749: the client may not use this grant type.
    UnauthorizedClient,
    /// RFC 6749: the grant type is not supported.
    UnsupportedGrantType,
    /// RFC 6749: the scope is invalid.
    InvalidScope,
    /// RFC 6749: the resource owner denied the request.
    AccessDenied,
    /// RFC 6749 §4.1.2.1: the response type is not supported (only `code` is).
    UnsupportedResponseType,
    /// OpenID Connect: `prompt=none` but nobody is signed in.
    LoginRequired,
    /// OpenID Connect: `prompt=none` but the user has not consented.
    ConsentRequired,
    /// RFC 6750: the access token is invalid.
    InvalidToken,
    /// RFC 6750: the token lacks a scope or role.
    InsufficientScope,
    /// Wrong username or password.
    InvalidCredentials,
    /// The password was right; a second factor must follow (SPEC 11), with the `mfa_token`
    /// and `methods` in the body.
    MfaRequired,
    /// The password was right, but the user must set up a second factor first (SPEC 11
    /// policy), with the `mfa_token` that `POST /auth/mfa/totp` and its `/confirm` accept.
    MfaEnrolmentRequired,
    /// RFC 9449: the `DPoP` proof is missing where required, malformed, replayed, or does
    /// not match the request.
    InvalidDpopProof,
    /// RFC 9449 §8: the proof must carry the nonce in the `DPoP-Nonce` response header.
    UseDpopNonce,
    /// The username is taken.
    UsernameTaken,
    /// The email address belongs to another account (SPEC 10).
    EmailTaken,
    /// Registration is closed on this server.
    RegistrationClosed,
    /// Too many attempts; see `Retry-After`.
    TooManyRequests,
    /// No such resource.
    NotFound,
    /// The method is not allowed on this path.
    MethodNotAllowed,
    /// The request body is larger than the limit.
    PayloadTooLarge,
    /// The content type is not the one the endpoint takes.
    UnsupportedMediaType,
    /// The server failed; the body carries a request id.
    ServerError,
    /// The server cannot serve now (database unreachable, overloaded).
    TemporarilyUnavailable,
    /// Device flow (RFC 8628 §3.5): the user has not decided yet; poll again.
    AuthorizationPending,
    /// Device flow: polled sooner than the interval; wait 5 s longer from now on.
    SlowDown,
    /// Device flow: the device code expired before the user allowed it.
    ExpiredToken,
    /// A `resource` (RFC 8707) that is not registered for the client, or not granted.
    InvalidTarget,
    /// Dynamic registration (RFC 7591 §3.2.2): a redirect URI that cannot be registered.
    InvalidRedirectUri,
    /// Dynamic registration: other metadata that cannot be registered.
    InvalidClientMetadata,
    /// A request object (`request`, OpenID Connect Core §6.1), which Latchkey does not take.
    RequestNotSupported,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::AccessDenied => "access_denied",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::LoginRequired => "login_required",
            Self::ConsentRequired => "consent_required",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::InvalidCredentials => "invalid_credentials",
            Self::MfaRequired => "mfa_required",
            Self::MfaEnrolmentRequired => "mfa_enrolment_required",
            Self::InvalidDpopProof => "invalid_dpop_proof",
            Self::UseDpopNonce => "use_dpop_nonce",
            Self::UsernameTaken => "username_taken",
            Self::EmailTaken => "email_taken",
            Self::RegistrationClosed => "registration_closed",
            Self::TooManyRequests => "too_many_requests",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::AuthorizationPending => "authorization_pending",
            Self::SlowDown => "slow_down",
            Self::ExpiredToken => "expired_token",
            Self::InvalidTarget => "invalid_target",
            Self::InvalidRedirectUri => "invalid_redirect_uri",
            Self::InvalidClientMetadata => "invalid_client_metadata",
            Self::RequestNotSupported => "request_not_supported",
        }
    }
}

/// Why a refresh (or a Bearer token) was refused: the machine-readable `error_reason` of
/// SPEC 5.1, so a client knows whether to sign in again quietly or to tell the user why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorReason {
    /// The session was ended by logout.
    LoggedOut,
    /// The user revoked the session from the device list or disconnected the app.
    RevokedByUser,
    /// An administrator revoked the session.
    RevokedByAdmin,
    /// A retired refresh token was presented: the session was revoked as stolen.
    ReuseDetected,
    /// The session was idle longer than its idle timeout.
    IdleExpired,
    /// The session reached its absolute lifetime.
    SessionExpired,
    /// The password was changed; other sessions were ended.
    PasswordChanged,
    /// The user was disabled.
    UserDisabled,
    /// The refresh token is not one this server issued.
    UnknownToken,
    /// Latchkey extension: binding policy `deny` refused a refresh from another device.
    BindingMismatch,
    /// The refresh looked risky (`risk_policy`'s `step_up`, SPEC 12): the session stays, and
    /// continues after the user signs in again (`POST /auth/step-up`, or `prompt=login`).
    StepUpRequired,
    /// The refresh looked too risky (`risk_policy`'s `revoke`, SPEC 12): the session was
    /// revoked.
    SuspiciousRefresh,
}

impl ErrorReason {
    /// The reason as it appears on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoggedOut => "logged_out",
            Self::RevokedByUser => "revoked_by_user",
            Self::RevokedByAdmin => "revoked_by_admin",
            Self::ReuseDetected => "reuse_detected",
            Self::IdleExpired => "idle_expired",
            Self::SessionExpired => "session_expired",
            Self::PasswordChanged => "password_changed",
            Self::UserDisabled => "user_disabled",
            Self::UnknownToken => "unknown_token",
            Self::BindingMismatch => "binding_mismatch",
            Self::StepUpRequired => "step_up_required",
            Self::SuspiciousRefresh => "suspicious_refresh",
        }
    }

    /// Parses a stored reason.
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "logged_out" => Self::LoggedOut,
            "revoked_by_user" => Self::RevokedByUser,
            "revoked_by_admin" => Self::RevokedByAdmin,
            "reuse_detected" => Self::ReuseDetected,
            "idle_expired" => Self::IdleExpired,
            "session_expired" => Self::SessionExpired,
            "password_changed" => Self::PasswordChanged,
            "user_disabled" => Self::UserDisabled,
            "unknown_token" => Self::UnknownToken,
            "binding_mismatch" => Self::BindingMismatch,
            "step_up_required" => Self::StepUpRequired,
            "suspicious_refresh" => Self::SuspiciousRefresh,
            _ => return None,
        })
    }

    /// A sentence for `error_description`.
    pub fn description(self) -> &'static str {
        match self {
            Self::LoggedOut => "The session was logged out.",
            Self::RevokedByUser => "The session was revoked by the user.",
            Self::RevokedByAdmin => "The session was revoked by an administrator.",
            Self::ReuseDetected => "A refresh token was used twice; the session was revoked for safety.",
            Self::IdleExpired => "The session expired after inactivity.",
            Self::SessionExpired => "The session reached its maximum lifetime.",
            Self::PasswordChanged => "The password was changed; please sign in again.",
            Self::UserDisabled => "The account is disabled.",
            Self::UnknownToken => "The refresh token is not recognised.",
            Self::BindingMismatch => {
                "The refresh came from a different device than the session's; it was revoked."
            }
            Self::StepUpRequired => "The refresh looked unusual; sign in again to continue the session.",
            Self::SuspiciousRefresh => {
                "The refresh looked like someone else's; the session was revoked for safety."
            }
        }
    }
}

/// Why an access token was refused (SPEC 5.5): the `error_reason` of an `invalid_token`
/// answer, shared by the server's own Bearer checks and `latchkey-verify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenErrorReason {
    /// Past `exp` (plus the skew allowance).
    Expired,
    /// The session or the token was revoked.
    Revoked,
    /// A newer `authz_ver` exists for the user: refresh and retry.
    ClaimsStale,
    /// Not a well-formed access token (also: wrong `typ`, missing claims, not yet valid).
    Malformed,
    /// The signature does not verify.
    BadSignature,
    /// `aud` is not this API.
    WrongAudience,
    /// `iss` is not the expected issuer.
    WrongIssuer,
    /// `kid` names no published key.
    UnknownKey,
    /// The token is bound to a DPoP key (`cnf.jkt`) and came as `Bearer`: it must come as
    /// `Authorization: DPoP` with a proof (SPEC 12).
    DpopRequired,
    /// The DPoP proof's key is not the one the token is bound to, or the token is not bound
    /// and came as `DPoP`.
    DpopKeyMismatch,
}

impl TokenErrorReason {
    /// The reason as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::ClaimsStale => "claims_stale",
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::WrongAudience => "wrong_audience",
            Self::WrongIssuer => "wrong_issuer",
            Self::UnknownKey => "unknown_key",
            Self::DpopRequired => "dpop_required",
            Self::DpopKeyMismatch => "dpop_key_mismatch",
        }
    }

    /// A sentence for `error_description`.
    pub fn description(self) -> &'static str {
        match self {
            Self::Expired => "The access token expired.",
            Self::Revoked => "The access token was revoked.",
            Self::ClaimsStale => "The access token carries outdated claims; refresh it.",
            Self::Malformed => "The access token is malformed.",
            Self::BadSignature => "The access token signature is invalid.",
            Self::WrongAudience => "The access token is not meant for this audience.",
            Self::WrongIssuer => "The access token was issued by another issuer.",
            Self::UnknownKey => "The access token was signed with an unknown key.",
            Self::DpopRequired => {
                "The access token is DPoP-bound; send it as Authorization: DPoP with a proof."
            }
            Self::DpopKeyMismatch => "The DPoP proof is not from the key the access token is bound to.",
        }
    }
}

/// Why a link token from a mail was refused (SPEC 10): the `error_reason` of its
/// `400 invalid_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkTokenReason {
    /// The link was used before.
    Used,
    /// The link is past its lifetime, or a newer link replaced it.
    Expired,
    /// No such link.
    Unknown,
}

impl LinkTokenReason {
    /// The reason as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Used => "used",
            Self::Expired => "expired",
            Self::Unknown => "unknown",
        }
    }

    /// A sentence for `error_description` and for the page that shows it.
    pub fn description(self) -> &'static str {
        match self {
            Self::Used => "This link was already used.",
            Self::Expired => "This link has expired or was replaced by a newer one.",
            Self::Unknown => "This link is not valid.",
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error code.
    pub error: ErrorCode,
    /// A human-readable sentence. Never contains a secret.
    pub error_description: String,
    /// Why, when the code alone does not say: an [`ErrorReason`] for refresh failures, a
    /// [`TokenErrorReason`] for access-token failures. Text, so clients tolerate new values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    /// `OAuthAccessTokenError` on resource-server errors (SPEC 5.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
}

impl ErrorBody {
    /// An error without a reason.
    pub fn new(error: ErrorCode, description: impl Into<String>) -> Self {
        Self { error, error_description: description.into(), error_reason: None, error_type: None }
    }

    /// An error with a machine-readable reason.
    pub fn with_reason(error: ErrorCode, reason: ErrorReason) -> Self {
        Self {
            error,
            error_description: reason.description().to_owned(),
            error_reason: Some(reason.as_str().to_owned()),
            error_type: None,
        }
    }

    /// The answer to a used, expired or unknown link token (SPEC 10): a `400`, so no
    /// `error_type` (that marks resource-server answers).
    pub fn invalid_link(reason: LinkTokenReason) -> Self {
        Self {
            error: ErrorCode::InvalidToken,
            error_description: reason.description().to_owned(),
            error_reason: Some(reason.as_str().to_owned()),
            error_type: None,
        }
    }

    /// An `invalid_token` answer (SPEC 5.5).
    pub fn invalid_token(reason: TokenErrorReason) -> Self {
        Self {
            error: ErrorCode::InvalidToken,
            error_description: reason.description().to_owned(),
            error_reason: Some(reason.as_str().to_owned()),
            error_type: Some("OAuthAccessTokenError".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_token_answers_are_pinned() {
        let body = serde_json::to_value(ErrorBody::invalid_link(LinkTokenReason::Used)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": "invalid_token", "error_description": "This link was already used.", "error_reason": "used"})
        );
        for reason in [LinkTokenReason::Used, LinkTokenReason::Expired, LinkTokenReason::Unknown] {
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.as_str());
        }
        assert_eq!(ErrorCode::EmailTaken.as_str(), "email_taken");
        assert_eq!(serde_json::to_value(ErrorCode::EmailTaken).unwrap(), "email_taken");
    }

    #[test]
    fn wire_names_match_serde() {
        for code in [ErrorCode::InvalidGrant, ErrorCode::InvalidCredentials, ErrorCode::TooManyRequests] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
        for reason in [ErrorReason::LoggedOut, ErrorReason::ReuseDetected, ErrorReason::UnknownToken] {
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.as_str());
            assert_eq!(ErrorReason::parse(reason.as_str()), Some(reason));
        }
    }

    #[test]
    fn invalid_token_body_pinned() {
        let body = ErrorBody::invalid_token(TokenErrorReason::ClaimsStale);
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"error":"invalid_token","error_description":"The access token carries outdated claims; refresh it.","error_reason":"claims_stale","error_type":"OAuthAccessTokenError"}"#
        );
        assert_eq!(serde_json::to_value(TokenErrorReason::WrongAudience).unwrap(), "wrong_audience");
    }

    #[test]
    fn body_pinned() {
        let body = ErrorBody::with_reason(ErrorCode::InvalidGrant, ErrorReason::LoggedOut);
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"error":"invalid_grant","error_description":"The session was logged out.","error_reason":"logged_out"}"#
        );
        let body = ErrorBody::new(ErrorCode::InvalidCredentials, "Invalid username or password.");
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"error":"invalid_credentials","error_description":"Invalid username or password."}"#
        );
    }
}
