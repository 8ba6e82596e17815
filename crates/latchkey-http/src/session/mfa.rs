//! Second factors on the API (SPEC 11): setting up an authenticator app, listing and
//! removing factors (Bearer), and the second step of a sign-in.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use latchkey_proto::auth::{MfaLoginRequest, TotpConfirmRequest};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::bearer::Bearer;
use crate::extract::caller::RequestCaller;
use crate::extract::json::ApiJson;

type ApiResult = Result<Response, ApiError>;

/// `POST /auth/mfa/totp`: starts setting up an authenticator app (`200 {secret,
/// otpauth_uri}`); needs a sign-in within 5 minutes.
pub(crate) async fn begin_totp(State(s): State<AppState>, Bearer(token): Bearer) -> ApiResult {
    let auth = s.service.authenticate(&token).await?;
    Ok(Json(s.service.begin_totp(&auth).await?).into_response())
}

/// `POST /auth/mfa/totp/confirm`: confirms it with a code (`200 {recovery_codes}`).
pub(crate) async fn confirm_totp(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    RequestCaller(caller): RequestCaller,
    ApiJson(req): ApiJson<TotpConfirmRequest>,
) -> ApiResult {
    let auth = s.service.authenticate(&token).await?;
    Ok(Json(s.service.confirm_totp(&auth, &req.code, &caller).await?).into_response())
}

/// `GET /auth/mfa`: the confirmed factors and how many recovery codes are left.
pub(crate) async fn list(State(s): State<AppState>, Bearer(token): Bearer) -> ApiResult {
    let auth = s.service.authenticate(&token).await?;
    Ok(Json(s.service.list_mfa(&auth).await?).into_response())
}

/// `DELETE /auth/mfa/{id}`: removes a factor (`204`); needs a sign-in within 5 minutes.
pub(crate) async fn remove(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    RequestCaller(caller): RequestCaller,
    Path(id): Path<String>,
) -> ApiResult {
    let auth = s.service.authenticate(&token).await?;
    s.service.remove_factor(&auth, &id, &caller).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /auth/login/mfa`: the second step of a sign-in; the token response.
pub(crate) async fn login(
    State(s): State<AppState>,
    RequestCaller(caller): RequestCaller,
    ApiJson(req): ApiJson<MfaLoginRequest>,
) -> ApiResult {
    Ok(Json(s.service.login_mfa(req, &caller).await?).into_response())
}
