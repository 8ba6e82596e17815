//! `ApiJson<T>`: a JSON body with the content type, size limit, UTF-8 and shape checked,
//! every failure a JSON 4xx (`invalid_request`, 413 `payload_too_large`, 415
//! `unsupported_media_type`). `OptionalJson<T>` also accepts an empty body.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use latchkey_proto::ErrorCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A parsed JSON body.
pub(crate) struct ApiJson<T>(pub(crate) T);

/// A parsed JSON body, or `T::default()` when the body is empty.
pub(crate) struct OptionalJson<T>(pub(crate) T);

fn is_json(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case("application/json")
                || (mime.len() > 5
                    && mime.get(mime.len() - 5..).is_some_and(|s| s.eq_ignore_ascii_case("+json")))
        })
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::body_too_large()
        } else {
            ApiError::Rejected(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                "The request body could not be read.".into(),
            )
        }
    })
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Validate the whole body as UTF-8 first: serde skips ignored fields without checking
    // them, and a body that is not text is malformed wherever the bad bytes are.
    let text = std::str::from_utf8(bytes).map_err(|_| {
        ApiError::Rejected(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "The request body is not valid UTF-8.".into(),
        )
    })?;
    // SPEC 5: a body is an object. serde would map a JSON array onto a struct's fields in
    // order (`["alice","password"]` as credentials) and an empty array onto a struct of
    // optional fields, so anything but an object is refused before it is read.
    if !text.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{') {
        return Err(ApiError::Rejected(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "The request body must be a JSON object.".into(),
        ));
    }
    serde_json::from_str(text).map_err(|e| {
        use serde_json::error::Category;
        let what = match e.classify() {
            // serde's own wording quotes the offending value (`invalid type: integer
            // \`12345678\``), which may be a password: only messages that carry no value
            // are passed on.
            Category::Data if is_value_free(&e.to_string()) => format!("Invalid request body: {e}."),
            Category::Data => format!(
                "Invalid request body: a field has the wrong type or value (line {}, column {}).",
                e.line(),
                e.column()
            ),
            Category::Syntax | Category::Eof | Category::Io => {
                "The request body is not valid JSON.".to_owned()
            }
        };
        ApiError::Rejected(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, what)
    })
}

/// Messages that name a field or a rule, never a value.
fn is_value_free(message: &str) -> bool {
    ["missing field", "username must", "login must"].iter().any(|start| message.starts_with(start))
}

fn wrong_type() -> ApiError {
    ApiError::Rejected(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::UnsupportedMediaType,
        "Expected Content-Type: application/json.".into(),
    )
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(&req) {
            return Err(wrong_type());
        }
        let bytes = read_body(req, state).await?;
        parse(&bytes).map(Self)
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let has_type = req.headers().contains_key(header::CONTENT_TYPE);
        let is_json = is_json(&req);
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        if has_type && !is_json {
            return Err(wrong_type());
        }
        if !has_type {
            return Err(wrong_type());
        }
        parse(&bytes).map(Self)
    }
}
