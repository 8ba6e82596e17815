//! Passkeys on the API (SPEC 11): registration (Bearer, a recent sign-in) and
//! username-less sign-in, each a `start` that answers WebAuthn's options with a
//! `challenge_id` and a `finish` that takes the browser's `PublicKeyCredential` JSON.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use latchkey_proto::auth::PasskeyFinish;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::bearer::Bearer;
use crate::extract::caller::RequestCaller;
use crate::extract::dpop::ProvingCaller;
use crate::extract::json::ApiJson;

type ApiResult = Result<Response, ApiError>;

/// `POST /auth/passkeys/register/start`: `{challenge_id, publicKey}` for
/// `navigator.credentials.create`.
pub(crate) async fn begin_registration(State(s): State<AppState>, Bearer(token): Bearer) -> ApiResult {
    let auth = s.service.authenticate(&token).await?;
    Ok(Json(s.service.begin_passkey_registration(&auth).await?).into_response())
}

/// `POST /auth/passkeys/register/finish`: `{id, name}` of the new factor.
pub(crate) async fn finish_registration(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    RequestCaller(caller): RequestCaller,
    ApiJson(req): ApiJson<PasskeyFinish>,
) -> ApiResult {
    let auth = s.service.authenticate(&token).await?;
    Ok(Json(s.service.finish_passkey_registration(&auth, req, &caller).await?).into_response())
}

/// `POST /auth/passkeys/login/start`: `{challenge_id, publicKey}` for
/// `navigator.credentials.get`.
pub(crate) async fn begin_login(
    State(s): State<AppState>,
    RequestCaller(caller): RequestCaller,
) -> ApiResult {
    Ok(Json(s.service.begin_passkey_login(&caller).await?).into_response())
}

/// `POST /auth/passkeys/login/finish`: the token response.
pub(crate) async fn finish_login(
    State(s): State<AppState>,
    ProvingCaller(caller): ProvingCaller,
    ApiJson(req): ApiJson<PasskeyFinish>,
) -> ApiResult {
    Ok(Json(s.service.login_passkey(req, &caller).await?).into_response())
}
