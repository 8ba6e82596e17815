//! The first-party session API (SPEC 5.1). Each handler extracts, calls one domain
//! function and maps the result.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use latchkey_core::SessionId;
use latchkey_proto::auth::{
    Credentials, EmailChangeRequest, ForgotPasswordRequest, LogoutAllRequest, LogoutRequest,
    PasswordChangeRequest, PasswordResetRequest, RefreshRequest, RegisterRequest, StepUpRequest,
    VerifyEmailRequest,
};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::bearer::{Bearer, KeyedBearer, MaybeBearer};
use crate::extract::caller::RequestCaller;
use crate::extract::dpop::ProvingCaller;
use crate::extract::json::{ApiJson, OptionalJson};

pub(crate) mod mfa;
pub(crate) mod passkey;

type ApiResult = Result<Response, ApiError>;

/// 204 that also tells browsers to drop cookies and storage for this origin.
fn logged_out() -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut().insert("clear-site-data", HeaderValue::from_static("\"cookies\", \"storage\""));
    res
}

pub(crate) async fn register(
    State(s): State<AppState>,
    RequestCaller(ctx): RequestCaller,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> ApiResult {
    let created = s.service.register(req, &ctx).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

pub(crate) async fn login(
    State(s): State<AppState>,
    ProvingCaller(caller): ProvingCaller,
    ApiJson(creds): ApiJson<Credentials>,
) -> ApiResult {
    Ok(Json(s.service.login(creds, &caller).await?).into_response())
}

pub(crate) async fn refresh(
    State(s): State<AppState>,
    ProvingCaller(caller): ProvingCaller,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> ApiResult {
    Ok(Json(s.service.refresh(&req.refresh_token, &caller).await?).into_response())
}

pub(crate) async fn step_up(
    State(s): State<AppState>,
    KeyedBearer { token, key }: KeyedBearer,
    RequestCaller(mut caller): RequestCaller,
    ApiJson(req): ApiJson<StepUpRequest>,
) -> ApiResult {
    caller.dpop = key;
    Ok(Json(s.service.step_up(&token, req, &caller).await?).into_response())
}

pub(crate) async fn logout(
    State(s): State<AppState>,
    MaybeBearer(bearer): MaybeBearer,
    RequestCaller(caller): RequestCaller,
    OptionalJson(req): OptionalJson<LogoutRequest>,
) -> ApiResult {
    s.service.logout(bearer.as_deref(), req.refresh_token.as_ref(), &caller).await?;
    Ok(logged_out())
}

pub(crate) async fn logout_all(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    RequestCaller(caller): RequestCaller,
    OptionalJson(req): OptionalJson<LogoutAllRequest>,
) -> ApiResult {
    let auth = s.service.authenticate(&token).await?;
    s.service.logout_all(&auth, req.keep_current, &caller).await?;
    Ok(logged_out())
}

pub(crate) async fn list_sessions(State(s): State<AppState>, Bearer(token): Bearer) -> ApiResult {
    let auth = s.service.authenticate(&token).await?;
    Ok(Json(s.service.sessions(&auth).await?).into_response())
}

pub(crate) async fn revoke_session(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    RequestCaller(caller): RequestCaller,
    id: Result<Path<SessionId>, axum::extract::rejection::PathRejection>,
) -> ApiResult {
    let Path(id) = id.map_err(|_| {
        ApiError::Status(
            StatusCode::BAD_REQUEST,
            latchkey_proto::ErrorCode::InvalidRequest,
            "Invalid session id.",
        )
    })?;
    let auth = s.service.authenticate(&token).await?;
    s.service.revoke_own_session(&auth, &id, &caller).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn me(State(s): State<AppState>, Bearer(token): Bearer) -> ApiResult {
    let auth = s.service.authenticate(&token).await?;
    Ok(Json(s.service.me(&auth)).into_response())
}

/// `POST /auth/email/verify/send`: mails a verification link (`202 {}`).
pub(crate) async fn send_verification(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    RequestCaller(caller): RequestCaller,
) -> ApiResult {
    let auth = s.service.authenticate(&token).await?;
    s.service.send_verification(&auth, &caller).await?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({}))).into_response())
}

/// `POST /auth/email`: asks to change the address (`202 {}`); it changes when the link
/// mailed to the new address is used.
pub(crate) async fn change_email(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    RequestCaller(caller): RequestCaller,
    ApiJson(req): ApiJson<EmailChangeRequest>,
) -> ApiResult {
    let auth = s.service.authenticate(&token).await?;
    s.service.change_email(&auth, req, &caller).await?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({}))).into_response())
}

/// `POST /auth/email/verify`: uses a verification link (`204`).
pub(crate) async fn verify_email(
    State(s): State<AppState>,
    RequestCaller(caller): RequestCaller,
    ApiJson(req): ApiJson<VerifyEmailRequest>,
) -> ApiResult {
    s.service.verify_email(&req.token, &caller).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /auth/password/forgot`: `202 {}` whether or not the login names an account.
pub(crate) async fn forgot_password(
    State(s): State<AppState>,
    RequestCaller(caller): RequestCaller,
    ApiJson(req): ApiJson<ForgotPasswordRequest>,
) -> ApiResult {
    s.service.forgot_password(&req.login, &caller).await?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({}))).into_response())
}

/// `POST /auth/password/reset`: sets a new password with a reset link (`204`).
pub(crate) async fn reset_password(
    State(s): State<AppState>,
    RequestCaller(caller): RequestCaller,
    ApiJson(req): ApiJson<PasswordResetRequest>,
) -> ApiResult {
    s.service.reset_password(req, &caller).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn change_password(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    RequestCaller(caller): RequestCaller,
    ApiJson(req): ApiJson<PasswordChangeRequest>,
) -> ApiResult {
    let auth = s.service.authenticate(&token).await?;
    s.service.change_password(&auth, req, &caller).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
