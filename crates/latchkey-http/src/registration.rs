//! Dynamic client registration over HTTP (RFC 7591, 7592; SPEC 13): `POST /oauth/register`
//! and `GET`/`PUT`/`DELETE /oauth/register/{client_id}`, JSON in and out, the Bearer
//! token (initial or registration access token) from `Authorization`. The decisions are
//! `Latchkey::register_client` and its siblings'.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use latchkey_core::ClientId;
use latchkey_core::oauth::{ClientMetadata, RegistrationError};
use serde_json::Value;

use crate::AppState;
use crate::error::ApiError;
use crate::oauth::no_store_json;

type ApiResult = Result<Response, ApiError>;

/// The Bearer token of `Authorization`, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The JSON object of a registration request; anything else is `invalid_client_metadata`.
fn metadata(headers: &HeaderMap, body: &[u8]) -> Result<ClientMetadata, ApiError> {
    let invalid = |why: String| ApiError::Registration(RegistrationError::InvalidMetadata(why));
    let is_json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case("application/json")
    });
    if !is_json {
        return Err(invalid("The body must be application/json.".into()));
    }
    let value: Value = serde_json::from_slice(body).map_err(|_| invalid("The body is not JSON.".into()))?;
    if !value.is_object() {
        return Err(invalid("The body must be a JSON object.".into()));
    }
    serde_json::from_value(value).map_err(|e| invalid(format!("Unreadable metadata: {e}.")))
}

/// `POST /oauth/register`: `201` with the client, its secret and its registration access
/// token.
pub(crate) async fn register(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let m = metadata(&headers, &body)?;
    let answer = s.service.register_client(m, bearer(&headers)).await?;
    Ok(no_store_json(StatusCode::CREATED, answer))
}

/// `GET /oauth/register/{client_id}`.
pub(crate) async fn read(
    State(s): State<AppState>,
    Path(id): Path<ClientId>,
    headers: HeaderMap,
) -> ApiResult {
    let answer = s.service.read_registration(&id, bearer(&headers)).await?;
    Ok(no_store_json(StatusCode::OK, answer))
}

/// `PUT /oauth/register/{client_id}`: the whole metadata, replaced.
pub(crate) async fn update(
    State(s): State<AppState>,
    Path(id): Path<ClientId>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let token = bearer(&headers).map(str::to_owned);
    let m = metadata(&headers, &body)?;
    let answer = s.service.update_registration(&id, token.as_deref(), m).await?;
    Ok(no_store_json(StatusCode::OK, answer))
}

/// `DELETE /oauth/register/{client_id}`: `204`.
pub(crate) async fn delete(
    State(s): State<AppState>,
    Path(id): Path<ClientId>,
    headers: HeaderMap,
) -> ApiResult {
    s.service.delete_registration(&id, bearer(&headers)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
