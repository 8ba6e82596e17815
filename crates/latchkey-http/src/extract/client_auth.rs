//! Client authentication with HTTP Basic (RFC 6749 §2.3.1: `client_id:client_secret`, each
//! form-urlencoded, then base64). Anything else is `invalid_client` with a Basic challenge.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use latchkey_core::clients::AuthenticatedClient;
use latchkey_proto::secret::ClientSecret;

use crate::AppState;
use crate::error::ApiError;

/// A client whose credentials checked out.
pub(crate) struct BasicClient(pub(crate) AuthenticatedClient);

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space, `%XX` a byte).
pub(crate) fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The `(client_id, client_secret)` of a Basic `Authorization` header.
pub(crate) fn credentials(headers: &axum::http::HeaderMap) -> Option<(String, ClientSecret)> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, encoded) = value.to_str().ok()?.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id)?, ClientSecret::new(form_decode(secret)?)))
}

impl<S> FromRequestParts<S> for BasicClient
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let (id, secret) = credentials(&parts.headers).ok_or(ApiError::InvalidClient)?;
        let state = AppState::from_ref(state);
        Ok(Self(state.service.authenticate_client(&id.into(), &secret).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode("a%3Ab+c").as_deref(), Some("a:b c"));
        assert_eq!(form_decode("plain").as_deref(), Some("plain"));
        assert_eq!(form_decode("bad%zz"), None);
        assert_eq!(form_decode("cut%4"), None);
    }
}
