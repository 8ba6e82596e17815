//! The caller of an endpoint that issues tokens (SPEC 12): its address and user agent, and
//! the key its `DPoP` proof shows it holds, checked (replay and nonce included) before the
//! handler runs. Without a `DPoP` header the caller is a Bearer caller.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use latchkey_core::Caller;
use latchkey_proto::ErrorCode;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::caller::RequestCaller;

/// The `DPoP` request header.
pub(crate) const DPOP: &str = "dpop";

/// A caller whose `DPoP` proof, if it sent one, passed.
pub(crate) struct ProvingCaller(pub(crate) Caller);

impl<S> FromRequestParts<S> for ProvingCaller
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Ok(RequestCaller(mut caller)) = RequestCaller::from_request_parts(parts, state).await;
        // With `Authorization: DPoP`, the proof belongs to the access token (and carries its
        // `ath`): the token's extractor checks it, once (`/auth/mfa/totp/confirm` takes both).
        let is_token_proof = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.get(..5).is_some_and(|scheme| scheme.eq_ignore_ascii_case("dpop ")));
        if is_token_proof {
            return Ok(Self(caller));
        }
        let mut proofs = parts.headers.get_all(DPOP).iter();
        let proof = match (proofs.next(), proofs.next()) {
            (None, _) => return Ok(Self(caller)),
            (Some(_), Some(_)) => return Err(rejected("A request carries one DPoP header.")),
            (Some(v), None) => v.to_str().map_err(|_| rejected("The DPoP header is not ASCII."))?,
        };
        let state = AppState::from_ref(state);
        let key =
            state.service.check_dpop_proof(proof, parts.method.as_str(), parts.uri.path(), None).await?;
        caller.dpop = Some(key);
        Ok(Self(caller))
    }
}

fn rejected(why: &'static str) -> ApiError {
    ApiError::Status(StatusCode::BAD_REQUEST, ErrorCode::InvalidDpopProof, why)
}
