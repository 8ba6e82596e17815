//! Access tokens from the `Authorization` header (RFC 6750 §2.1) only: never from the query
//! string or the body. Two `Authorization` headers are a 400 (SPEC 5.5).
//!
//! A DPoP-bound token (SPEC 12) is accepted only as `Authorization: DPoP` with a proof
//! from its key whose `ath` is the token's hash; as `Bearer` it is refused
//! (`dpop_required`). Both checks happen here, at the edge, so every handler that takes a
//! token gets one its caller has proved it may use. A token that fails its own checks is
//! passed on: the handler answers for it as for any invalid token.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use latchkey_core::account::AuthError;
use latchkey_core::dpop::{DpopError, Thumbprint};
use latchkey_proto::{ErrorCode, TokenErrorReason};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::dpop::DPOP;

/// An access token that must be present.
pub(crate) struct Bearer(pub(crate) String);

/// An access token that may be absent.
pub(crate) struct MaybeBearer(pub(crate) Option<String>);

/// An access token that must be present, and the DPoP key its proof showed (`None` for
/// `Bearer`): for `POST /auth/step-up`, whose refresh must prove the session's key.
pub(crate) struct KeyedBearer {
    pub(crate) token: String,
    pub(crate) key: Option<Thumbprint>,
}

/// The token of a request and, for the `DPoP` scheme, its proof.
fn presented(parts: &Parts) -> Result<Option<(&str, Option<&str>)>, ApiError> {
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
    if token.is_empty() {
        return Err(ApiError::MissingToken);
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Some((token, None)));
    }
    if !scheme.eq_ignore_ascii_case("dpop") {
        return Err(ApiError::MissingToken);
    }
    let malformed =
        |why| ApiError::DpopResource(DpopError::Invalid(latchkey_dpop::ProofError::Malformed(why)));
    let mut proofs = parts.headers.get_all(DPOP).iter();
    match (proofs.next(), proofs.next()) {
        (None, _) => Err(malformed("no DPoP header")),
        (Some(_), Some(_)) => Err(malformed("more than one DPoP header")),
        (Some(v), None) => Ok(Some((token, Some(v.to_str().map_err(|_| malformed("not ASCII"))?)))),
    }
}

async fn extract(parts: &Parts, state: &AppState) -> Result<Option<KeyedBearer>, ApiError> {
    let Some((token, proof)) = presented(parts)? else {
        return Ok(None);
    };
    let service = &state.service;
    let unchecked = KeyedBearer { token: token.to_owned(), key: None };
    // Expired tokens too: logout and step-up take them, and the binding holds for them too.
    let bound_to = match service.verify_access_token(token, true) {
        Ok(claims) => claims.cnf.map(|c| c.jkt),
        Err(_) => return Ok(Some(unchecked)),
    };
    let refused = |reason| ApiError::Auth(AuthError::InvalidToken(reason));
    match (proof, bound_to) {
        (None, None) => Ok(Some(unchecked)),
        (None, Some(_)) => Err(refused(TokenErrorReason::DpopRequired)),
        (Some(proof), bound_to) => {
            let key = service
                .check_dpop_proof(proof, parts.method.as_str(), parts.uri.path(), Some(token))
                .await
                .map_err(ApiError::DpopResource)?;
            if bound_to.as_deref() != Some(key.as_str()) {
                return Err(refused(TokenErrorReason::DpopKeyMismatch));
            }
            Ok(Some(KeyedBearer { token: token.to_owned(), key: Some(key) }))
        }
    }
}

impl<S> FromRequestParts<S> for Bearer
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let found = extract(parts, &AppState::from_ref(state)).await?;
        found.map(|b| Self(b.token)).ok_or(ApiError::MissingToken)
    }
}

impl<S> FromRequestParts<S> for KeyedBearer
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        extract(parts, &AppState::from_ref(state)).await?.ok_or(ApiError::MissingToken)
    }
}

impl<S> FromRequestParts<S> for MaybeBearer
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(extract(parts, &AppState::from_ref(state)).await?.map(|b| b.token)))
    }
}
