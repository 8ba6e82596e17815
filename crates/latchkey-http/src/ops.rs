//! Operational endpoints: `/healthz`, `/metrics` (Prometheus text), `/jwks.json`, and the
//! JSON answers for unknown paths and methods.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use latchkey_proto::ErrorCode;

use crate::AppState;
use crate::error::ApiError;

/// `GET /healthz`: 200 when the database answers, 503 otherwise.
pub(crate) async fn healthz(State(state): State<AppState>) -> Response {
    if state.service.is_healthy().await {
        (StatusCode::OK, axum::Json(serde_json::json!({"status": "ok"}))).into_response()
    } else {
        ApiError::Unavailable("database unreachable".into()).into_response()
    }
}

/// `GET /metrics`, in the Prometheus text format 0.0.4 (`text/plain; version=0.0.4`): every
/// Prometheus-compatible scraper reads it, and it keeps the `# TYPE …_total counter` lines
/// dashboards were written against (OpenMetrics would name the counter family without
/// `_total` and end with `# EOF`).
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let mut res = state.service.metrics().render().into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(latchkey_core::metrics::CONTENT_TYPE));
    res
}

/// `GET /jwks.json` (RFC 7517). Cacheable briefly: verifiers refetch on an unknown `kid`.
pub(crate) async fn jwks(State(state): State<AppState>) -> Response {
    let body = state.service.keys().current().jwks_json().to_owned();
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    res
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::Status(StatusCode::NOT_FOUND, ErrorCode::NotFound, "No such endpoint.")
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::Status(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "Method not allowed on this endpoint.",
    )
}
