//! `GET /revocations?after=SEQ` (SPEC 5.4), for resource servers authenticated as clients
//! with the scope `revocations:read`.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use latchkey_proto::ErrorCode;
use serde::Deserialize;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::client_auth::BasicClient;

#[derive(Deserialize)]
pub(crate) struct After {
    #[serde(default)]
    after: i64,
}

pub(crate) async fn revocations(
    State(s): State<AppState>,
    BasicClient(client): BasicClient,
    after: Result<Query<After>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(After { after }) = after.map_err(|_| {
        ApiError::Status(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "after must be a non-negative integer.",
        )
    })?;
    if after < 0 {
        return Err(ApiError::Status(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "after must be a non-negative integer.",
        ));
    }
    Ok(Json(s.app.revocations(&client, after).await?).into_response())
}
