//! The pages' passkey requests (SPEC 11), made by `static/passkey.js`: **Sign in with a
//! passkey** (the ceremony starts at the API's `POST /auth/passkeys/login/start`; its
//! finish here opens a browser session) and **Add a passkey** on the account page (the
//! browser session stands in for the Bearer token). They are JSON, and checked against
//! cross-site requests like the forms: the page's CSRF token in the body, and the
//! `Origin` / `Sec-Fetch-Site` headers. Errors are the API's JSON errors.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use latchkey_proto::auth::PasskeyFinish;
use latchkey_proto::{ErrorCode, MfaToken};
use serde::Deserialize;
use serde_json::json;

use super::{Browser, check_csrf, replace_session, safe_return_to, signed_in};
use crate::AppState;
use crate::error::ApiError;
use crate::extract::caller::RequestCaller;
use crate::extract::json::ApiJson;

/// A page's passkey request: its CSRF token, and the ceremony's fields when it has them.
#[derive(Debug, Deserialize)]
pub(crate) struct PageRequest {
    csrf: String,
    #[serde(default)]
    return_to: Option<String>,
    #[serde(default)]
    challenge_id: Option<String>,
    #[serde(default)]
    credential: Option<serde_json::Value>,
    #[serde(default)]
    name: Option<String>,
    /// On the second step of a password sign-in: its `mfa_token`, which the passkey must
    /// finish (it must be that user's).
    #[serde(default)]
    mfa_token: Option<String>,
}

impl PageRequest {
    /// Fails unless the request came from this site's page (CSRF token and headers).
    fn check(&self, s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
        if check_csrf(s, headers, Some(&self.csrf)) {
            Ok(())
        } else {
            Err(ApiError::Status(
                StatusCode::FORBIDDEN,
                ErrorCode::InvalidRequest,
                "This page expired or came from another site. Reload it and try again.",
            ))
        }
    }

    /// The ceremony's finish.
    fn finish(self) -> Result<PasskeyFinish, ApiError> {
        match (self.challenge_id, self.credential) {
            (Some(challenge_id), Some(credential)) => {
                Ok(PasskeyFinish { challenge_id, credential, name: self.name })
            }
            _ => Err(ApiError::Status(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                "challenge_id and credential are required.",
            )),
        }
    }
}

/// `POST /login/passkey`: signs the browser in with a passkey, alone or (with `mfa_token`)
/// as the second step after the password; `{"redirect"}` says where to go next
/// (`return_to`, checked like the sign-in form's).
pub(crate) async fn login_passkey(
    State(s): State<AppState>,
    RequestCaller(ctx): RequestCaller,
    headers: HeaderMap,
    ApiJson(req): ApiJson<PageRequest>,
) -> Result<Response, ApiError> {
    req.check(&s, &headers)?;
    let b = Browser::of(&s, &headers);
    let return_to = safe_return_to(req.return_to.as_deref());
    let previous = signed_in(&s, &headers, &ctx).await;
    let (_, cookie) = match req.mfa_token.clone() {
        Some(token) => s.service.web_passkey_second_step(&MfaToken::new(token), req.finish()?, &ctx).await?,
        None => s.service.web_login_passkey(req.finish()?, &ctx).await?,
    };
    let res = Json(json!({"redirect": return_to})).into_response();
    Ok(replace_session(&s, &b, &ctx, previous, &cookie, res).await)
}

/// `POST /account/passkeys/{step}`: **Add a passkey**: `start` answers the options,
/// `finish` takes the new credential.
pub(crate) async fn register_passkey(
    State(s): State<AppState>,
    RequestCaller(ctx): RequestCaller,
    Path(step): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<PageRequest>,
) -> Result<Response, ApiError> {
    req.check(&s, &headers)?;
    let who = signed_in(&s, &headers, &ctx).await.ok_or(ApiError::MissingToken)?;
    match step.as_str() {
        "start" => Ok(Json(s.service.begin_passkey_registration(&who).await?).into_response()),
        "finish" => {
            Ok(Json(s.service.finish_passkey_registration(&who, req.finish()?, &ctx).await?).into_response())
        }
        _ => Err(ApiError::Status(StatusCode::NOT_FOUND, ErrorCode::NotFound, "No such step.")),
    }
}
