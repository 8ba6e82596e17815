//! axum adapter: the [`AccessToken`] extractor and role/scope guards, answering exactly as
//! SPEC 5.5 says: `401` + `WWW-Authenticate: Bearer error="invalid_token"` with the JSON
//! body `{error, error_description, error_reason, error_type}`; `403 insufficient_scope`
//! for a missing role or scope; `400` for two `Authorization` headers. Tokens are taken
//! from the `Authorization` header only, never from the query string.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use latchkey_proto::{ErrorBody, ErrorCode};

use crate::verifier::{Verified, Verifier, VerifyError};

/// A verified access token, extracted from `Authorization: Bearer`.
#[derive(Debug, Clone)]
pub struct AccessToken(pub Verified);

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// No Bearer token.
    Missing,
    /// More than one `Authorization` header.
    TwoAuthorizationHeaders,
    /// The token was refused.
    Verify(VerifyError),
    /// A role or scope is missing.
    InsufficientScope(String),
}

fn with_challenge(mut res: Response, challenge: String) -> Response {
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        match self {
            Self::Missing => with_challenge(
                (
                    StatusCode::UNAUTHORIZED,
                    Json(ErrorBody::new(ErrorCode::InvalidToken, "A Bearer access token is required.")),
                )
                    .into_response(),
                "Bearer".to_owned(),
            ),
            Self::TwoAuthorizationHeaders => (
                StatusCode::BAD_REQUEST,
                Json(ErrorBody::new(ErrorCode::InvalidRequest, "Only one Authorization header is allowed.")),
            )
                .into_response(),
            Self::Verify(VerifyError::Invalid(reason)) => {
                let body = ErrorBody::invalid_token(reason);
                let challenge = format!(
                    "Bearer error=\"invalid_token\", error_description=\"{}\"",
                    body.error_description
                );
                with_challenge((StatusCode::UNAUTHORIZED, Json(body)).into_response(), challenge)
            }
            Self::Verify(VerifyError::FeedUnavailable) => {
                let mut res = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(ErrorBody::new(
                        ErrorCode::TemporarilyUnavailable,
                        "Token revocations cannot be checked right now; retry shortly.",
                    )),
                )
                    .into_response();
                res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                res
            }
            Self::InsufficientScope(what) => {
                let description = format!("The access token lacks {what}.");
                let challenge =
                    format!("Bearer error=\"insufficient_scope\", error_description=\"{description}\"");
                let body = ErrorBody::new(ErrorCode::InsufficientScope, description);
                with_challenge((StatusCode::FORBIDDEN, Json(body)).into_response(), challenge)
            }
        }
    }
}

impl AccessToken {
    /// Requires a role (`403 insufficient_scope` without it).
    ///
    /// # Errors
    /// [`Rejection::InsufficientScope`].
    pub fn require_role(&self, role: &str) -> Result<(), Rejection> {
        if self.0.has_role(role) {
            Ok(())
        } else {
            Err(Rejection::InsufficientScope(format!("the role {role}")))
        }
    }

    /// Requires a scope (`403 insufficient_scope` without it).
    ///
    /// # Errors
    /// [`Rejection::InsufficientScope`].
    pub fn require_scope(&self, scope: &str) -> Result<(), Rejection> {
        if self.0.has_scope(scope) {
            Ok(())
        } else {
            Err(Rejection::InsufficientScope(format!("the scope {scope}")))
        }
    }
}

impl<S> FromRequestParts<S> for AccessToken
where
    S: Send + Sync,
    Arc<Verifier>: FromRef<S>,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
        let value = values.next().ok_or(Rejection::Missing)?;
        if values.next().is_some() {
            return Err(Rejection::TwoAuthorizationHeaders);
        }
        let (scheme, token) =
            value.to_str().ok().and_then(|v| v.split_once(' ')).ok_or(Rejection::Missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(Rejection::Missing);
        }
        let verifier = Arc::<Verifier>::from_ref(state);
        verifier.verify(token.trim()).await.map(Self).map_err(Rejection::Verify)
    }
}
