//! Second factors on the API (SPEC 11): setting up an authenticator app, listing and
//! removing factors (Bearer), and the second step of a sign-in.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use latchkey_proto::auth::{MfaLoginRequest, TotpConfirmRequest, TotpStartRequest};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::bearer::{Bearer, MaybeBearer};
use crate::extract::caller::RequestCaller;
use crate::extract::dpop::ProvingCaller;
use crate::extract::json::{ApiJson, OptionalJson};

type ApiResult = Result<Response, ApiError>;

/// `POST /auth/mfa/totp`: starts setting up an authenticator app (`200 {secret,
/// otpauth_uri}`); needs a sign-in within 5 minutes, or, for a user who must set one up
/// before signing in, the `mfa_token` of `mfa_enrolment_required` in the body.
pub(crate) async fn begin_totp(
    State(s): State<AppState>,
    MaybeBearer(token): MaybeBearer,
    OptionalJson(req): OptionalJson<TotpStartRequest>,
) -> ApiResult {
    let enrolment = match (token, req.mfa_token) {
        (Some(token), _) => {
            let auth = s.service.authenticate(&token).await?;
            s.service.begin_totp(&auth).await?
        }
        (None, Some(mfa_token)) => s.service.begin_totp_enrolment(&mfa_token).await?,
        (None, None) => return Err(ApiError::MissingToken),
    };
    Ok(Json(enrolment).into_response())
}

/// `POST /auth/mfa/totp/confirm`: confirms it with a code (`200 {recovery_codes}`); with
/// an `mfa_token` instead of a Bearer token, the confirmation is the sign-in (the token
/// response with `recovery_codes` added).
pub(crate) async fn confirm_totp(
    State(s): State<AppState>,
    MaybeBearer(token): MaybeBearer,
    ProvingCaller(caller): ProvingCaller,
    ApiJson(req): ApiJson<TotpConfirmRequest>,
) -> ApiResult {
    match (token, req.mfa_token) {
        (Some(token), _) => {
            let auth = s.service.authenticate(&token).await?;
            Ok(Json(s.service.confirm_totp(&auth, &req.code, &caller).await?).into_response())
        }
        (None, Some(mfa_token)) => {
            let done = s.service.confirm_totp_enrolment(&mfa_token, &req.code, &caller).await?;
            Ok(Json(done).into_response())
        }
        (None, None) => Err(ApiError::MissingToken),
    }
}

/// `POST /auth/mfa/recovery-codes`: a new set of recovery codes, voiding the old (`200
/// {recovery_codes}`); needs a sign-in within 5 minutes.
pub(crate) async fn replace_recovery_codes(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    RequestCaller(caller): RequestCaller,
) -> ApiResult {
    let auth = s.service.authenticate(&token).await?;
    Ok(Json(s.service.replace_recovery_codes(&auth, &caller).await?).into_response())
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
    ProvingCaller(caller): ProvingCaller,
    ApiJson(req): ApiJson<MfaLoginRequest>,
) -> ApiResult {
    Ok(Json(s.service.login_mfa(req, &caller).await?).into_response())
}
