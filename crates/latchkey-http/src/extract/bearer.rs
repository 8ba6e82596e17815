//! Bearer tokens from the `Authorization` header (RFC 6750 §2.1) only: never from the query
//! string or the body. Two `Authorization` headers are a 400 (SPEC 5.5).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use latchkey_proto::ErrorCode;

use crate::error::ApiError;

/// A Bearer token that must be present.
pub(crate) struct Bearer(pub(crate) String);

/// A Bearer token that may be absent.
pub(crate) struct MaybeBearer(pub(crate) Option<String>);

fn extract(parts: &Parts) -> Result<Option<String>, ApiError> {
    let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::Status(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "Only one Authorization header is allowed.",
        ));
    }
    let value = value.to_str().map_err(|_| ApiError::MissingToken)?;
    let (scheme, token) = value.split_once(' ').ok_or(ApiError::MissingToken)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::MissingToken);
    }
    Ok(Some(token.to_owned()))
}

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        extract(parts)?.map(Self).ok_or(ApiError::MissingToken)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for MaybeBearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        extract(parts).map(Self)
    }
}
