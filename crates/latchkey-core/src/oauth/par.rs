//! Pushed authorization requests (RFC 9126, SPEC 13): an app sends its authorization
//! request to `/oauth/par` over the back channel, authenticated, and gets a `request_uri`
//! to send the browser with instead of the parameters. The request is checked when pushed
//! (so the app learns of a mistake as a JSON error, not on a page), lives
//! [`PUSHED_REQUEST_TTL`] until a browser opens it, is bound to that browser and spent by
//! the code it produces: single use. A client registered with `require_par` cannot send
//! its requests any other way.

use std::time::Duration;

use latchkey_proto::ErrorCode;
use serde::Serialize;

use super::authorize::{AuthorizeError, AuthorizeParams};
use super::token::{ClientCredentials, TokenRequestError};
use crate::crypto::{TokenHash, b64, random_bytes};
use crate::ids::ClientId;
use crate::service::Latchkey;
use crate::store::PushedRequestRecord;

/// How long a pushed request waits for a browser (RFC 9126 §2.2: `expires_in`).
pub const PUSHED_REQUEST_TTL: Duration = Duration::from_secs(60);
/// How long the browser that opened it has to sign in and consent.
pub const PUSHED_REQUEST_FLOW_TTL: Duration = Duration::from_secs(600);
/// The prefix of every `request_uri` (RFC 9126 §2.2).
pub const REQUEST_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";

/// The answer of `/oauth/par` (`201`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushedRequestResponse {
    /// For the authorization request, with `client_id`.
    pub request_uri: String,
    /// Seconds it waits for a browser.
    pub expires_in: u64,
}

/// A pushed request's check failing, as the token endpoint's errors say it.
fn as_token_error(e: AuthorizeError) -> TokenRequestError {
    match e {
        AuthorizeError::Page { message, .. } => TokenRequestError::InvalidRequest(message),
        AuthorizeError::Redirect(r) => match r.error {
            ErrorCode::InvalidScope => TokenRequestError::InvalidScope(r.description),
            ErrorCode::UnauthorizedClient => TokenRequestError::UnauthorizedClient(r.description),
            ErrorCode::InvalidTarget => TokenRequestError::InvalidTarget(r.description),
            _ => TokenRequestError::InvalidRequest(r.description),
        },
        AuthorizeError::Store(s) => TokenRequestError::Store(s),
    }
}

impl Latchkey {
    /// `POST /oauth/par`: checks the request as `/oauth/authorize` would and keeps it.
    ///
    /// # Errors
    /// Client authentication; `invalid_request` (with what `/oauth/authorize` would have
    /// said), `invalid_scope`, `unauthorized_client`.
    ///
    /// A DPoP proof with the push (`key`, checked by the caller) binds the code to its key,
    /// as `dpop_jkt` would (RFC 9449 §10.1); both must then name the same key.
    pub async fn push_authorization_request(
        &self,
        creds: &ClientCredentials,
        mut params: AuthorizeParams,
        key: Option<&crate::dpop::Thumbprint>,
    ) -> Result<PushedRequestResponse, TokenRequestError> {
        let client = self.authenticate_token_client(creds).await?;
        if params.request_uri.is_some() {
            return Err(TokenRequestError::InvalidRequest("request_uri cannot itself be pushed."));
        }
        if let Some(key) = key {
            match &params.dpop_jkt {
                Some(named) if named.as_str() != key.as_str() => {
                    return Err(TokenRequestError::InvalidRequest(
                        "dpop_jkt is not the key of the request's DPoP proof.",
                    ));
                }
                _ => params.dpop_jkt = Some(key.as_str().to_owned()),
            }
        }
        if params.client_id.as_deref().is_some_and(|id| id != client.client_id.as_str()) {
            return Err(TokenRequestError::InvalidRequest("client_id is not the authenticated client."));
        }
        params.client_id = Some(client.client_id.to_string());
        let checked = self.check_authorize_params(params, true).await.map_err(as_token_error)?;
        let pairs = checked.params.to_pairs(false);
        let json = serde_json::to_string(&pairs).map_err(|_| TokenRequestError::Internal)?;
        let now = self.clock.now();
        let request_uri = format!("{REQUEST_URI_PREFIX}{}", b64(&random_bytes::<32>()));
        let record = PushedRequestRecord {
            hash: TokenHash::of(&request_uri),
            client_id: client.client_id,
            params: json,
            created_at: now,
            expires_at: now.plus(PUSHED_REQUEST_TTL),
        };
        self.store.insert_pushed_request(&record).await?;
        Ok(PushedRequestResponse { request_uri, expires_in: PUSHED_REQUEST_TTL.as_secs() })
    }

    /// The parameters a `request_uri` stands for, for this browser (bound to it on first
    /// use), and when it was pushed. Every front-channel parameter but `client_id` is
    /// ignored (RFC 9126 §4), and a repeated one is refused: the browser cannot weaken what
    /// the app pushed. (A pushed `prompt=login` is met by a sign-in after the push; see
    /// `authorize_step`.)
    pub(super) async fn resolve_pushed_request(
        &self,
        front: AuthorizeParams,
        browser: &str,
    ) -> Result<(AuthorizeParams, crate::clock::Timestamp), AuthorizeError> {
        if !front.repeated.is_empty() {
            return Err(AuthorizeError::Page {
                title: "Invalid request",
                message: "A parameter was given more than once.",
            });
        }
        let gone = AuthorizeError::Page {
            title: "Invalid request",
            message: "The app's pushed request is unknown, expired or used. Start again from the app.",
        };
        let (Some(uri), Some(client_id)) = (front.request_uri.clone(), front.client_id.clone()) else {
            return Err(AuthorizeError::Page {
                title: "Invalid request",
                message: "A request_uri must come with the app's client_id.",
            });
        };
        if !uri.starts_with(REQUEST_URI_PREFIX) || browser.is_empty() {
            return Err(gone);
        }
        let now = self.clock.now();
        let (stored, pushed_at) = self
            .store
            .use_pushed_request(
                &TokenHash::of(&uri),
                &ClientId::from(client_id.as_str()),
                &TokenHash::of(browser),
                now,
                now.plus(PUSHED_REQUEST_FLOW_TTL),
            )
            .await?
            .ok_or(gone)?;
        let pairs: Vec<(String, String)> = serde_json::from_str(&stored).map_err(|e| {
            AuthorizeError::Store(crate::store::StoreError::Backend(format!("pushed_requests.params: {e}")))
        })?;
        let mut params = AuthorizeParams::from_pairs(pairs);
        params.request_uri = Some(uri);
        Ok((params, pushed_at))
    }
}
