//! The OAuth 2.1 / OpenID Connect endpoints that apps call directly (SPEC 5.2): discovery,
//! token, revocation, introspection and userinfo. Bodies are
//! `application/x-www-form-urlencoded`; a parameter given twice is an `invalid_request`
//! (RFC 6749 §3.1). Client authentication is Basic, form fields, or `client_id` alone for
//! public clients; mixing two methods is refused (RFC 6749 §2.3).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use latchkey_core::oauth::{ClientCredentials, TokenGrant, TokenRequestError};
use latchkey_proto::RefreshToken;
use latchkey_proto::secret::ClientSecret;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::bearer::Bearer;
use crate::extract::caller::RequestCaller;
use crate::extract::client_auth::{credentials, form_decode};
use crate::extract::dpop::ProvingCaller;

type ApiResult = Result<Response, ApiError>;

/// `GET /.well-known/openid-configuration` and `/.well-known/oauth-authorization-server`.
pub(crate) async fn discovery(State(s): State<AppState>) -> Response {
    let mut res = Json(s.service.discovery()).into_response();
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    res
}

/// A form body's parameters; `None` when it is not one (wrong type, bad encoding).
pub(crate) fn form(headers: &HeaderMap, body: &[u8]) -> Option<Vec<(String, String)>> {
    let ctype = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = ctype.split(';').next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return None;
    }
    parse_pairs(std::str::from_utf8(body).ok()?)
}

/// `a=b&c=d` pairs, form-decoded; `None` on a bad escape or invalid UTF-8.
pub(crate) fn parse_pairs(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.push((form_decode(k)?, form_decode(v)?));
    }
    Some(out)
}

/// The parameters of a token-endpoint style request, each at most once; empty values
/// count as absent (RFC 6749 §3.1).
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Self, ApiError> {
        let pairs = form(headers, body).ok_or(ApiError::Token(TokenRequestError::InvalidRequest(
            "The body must be application/x-www-form-urlencoded.",
        )))?;
        // `resource` may repeat (RFC 8707 §2); nothing else may (RFC 6749 §3.2).
        if has_repeats(&pairs, &["resource"]) {
            return Err(ApiError::Token(TokenRequestError::InvalidRequest(
                "A parameter was given more than once.",
            )));
        }
        Ok(Self(pairs))
    }

    fn get(&self, name: &str) -> Option<String> {
        self.0.iter().find(|(k, v)| k == name && !v.is_empty()).map(|(_, v)| v.clone())
    }

    /// Every non-empty value of a parameter that may repeat.
    fn all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(k, v)| k == name && !v.is_empty()).map(|(_, v)| v.clone()).collect()
    }

    fn require(&self, name: &str, why: &'static str) -> Result<String, ApiError> {
        self.get(name).ok_or(ApiError::Token(TokenRequestError::InvalidRequest(why)))
    }
}

/// Whether a parameter other than those in `may_repeat` is given more than once.
pub(crate) fn has_repeats(pairs: &[(String, String)], may_repeat: &[&str]) -> bool {
    pairs.iter().enumerate().any(|(i, (k, _))| {
        !may_repeat.contains(&k.as_str()) && pairs.iter().skip(i + 1).any(|(other, _)| other == k)
    })
}

/// A JSON answer that must not be cached (it carries credentials or codes).
pub(crate) fn no_store_json(status: StatusCode, answer: impl serde::Serialize) -> Response {
    let mut res = (status, Json(answer)).into_response();
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}

/// How the client authenticated: Basic, form fields, a `private_key_jwt` assertion, or a
/// public `client_id`. Two methods at once are `invalid_request`.
fn client_credentials(parts: &HeaderMap, params: &Params) -> Result<ClientCredentials, ApiError> {
    let has_basic = parts.get(header::AUTHORIZATION).is_some();
    let (form_id, form_secret) = (params.get("client_id"), params.get("client_secret"));
    let (assertion_type, assertion) = (params.get("client_assertion_type"), params.get("client_assertion"));
    if assertion_type.is_some() || assertion.is_some() {
        if has_basic || form_secret.is_some() {
            return Err(ApiError::Token(TokenRequestError::InvalidRequest(
                "Use one client authentication method only.",
            )));
        }
        return match (assertion_type.as_deref(), assertion) {
            (Some(latchkey_core::client_assertion::ASSERTION_TYPE), Some(assertion)) => {
                Ok(ClientCredentials::Assertion { id: form_id.map(Into::into), assertion })
            }
            _ => Err(ApiError::Token(TokenRequestError::InvalidClient { basic: false })),
        };
    }
    if has_basic {
        let (id, secret) =
            credentials(parts).ok_or(ApiError::Token(TokenRequestError::InvalidClient { basic: true }))?;
        if form_secret.is_some() || form_id.as_ref().is_some_and(|f| *f != id) {
            return Err(ApiError::Token(TokenRequestError::InvalidRequest(
                "Use one client authentication method only.",
            )));
        }
        return Ok(ClientCredentials::Basic { id: id.into(), secret });
    }
    match (form_id, form_secret) {
        (Some(id), Some(secret)) => {
            Ok(ClientCredentials::Post { id: id.into(), secret: ClientSecret::new(secret) })
        }
        (Some(id), None) => Ok(ClientCredentials::Public { id: id.into() }),
        _ => Err(ApiError::Token(TokenRequestError::InvalidClient { basic: false })),
    }
}

/// `POST /oauth/token`.
pub(crate) async fn token(
    State(s): State<AppState>,
    ProvingCaller(ctx): ProvingCaller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let params = Params::parse(&headers, &body)?;
    let creds = client_credentials(&headers, &params)?;
    let grant = match params.get("grant_type").as_deref() {
        None => return Err(ApiError::Token(TokenRequestError::InvalidRequest("grant_type is required."))),
        Some("authorization_code") => TokenGrant::AuthorizationCode {
            code: params.require("code", "code is required.")?,
            redirect_uri: params.get("redirect_uri").map(Into::into),
            code_verifier: params.get("code_verifier"),
            resources: params.all("resource"),
        },
        Some("refresh_token") => TokenGrant::RefreshToken {
            refresh_token: RefreshToken::new(params.require("refresh_token", "refresh_token is required.")?),
            scope: params.get("scope").map(Into::into),
            resources: params.all("resource"),
        },
        Some("client_credentials") => TokenGrant::ClientCredentials {
            scope: params.get("scope").map(Into::into),
            resources: params.all("resource"),
        },
        Some(latchkey_core::oauth::DEVICE_CODE_GRANT) => {
            TokenGrant::DeviceCode { device_code: params.require("device_code", "device_code is required.")? }
        }
        Some(_) => {
            // Authenticate first, so an unknown grant does not reveal whether the client exists.
            s.service.authenticate_token_client(&creds).await?;
            return Err(ApiError::Status(
                StatusCode::BAD_REQUEST,
                latchkey_proto::ErrorCode::UnsupportedGrantType,
                "Supported grant types: authorization_code, refresh_token, client_credentials, \
                 urn:ietf:params:oauth:grant-type:device_code.",
            ));
        }
    };
    let answer = s.service.token(&creds, grant, &ctx).await?;
    let mut res = Json(answer).into_response();
    res.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(res)
}

/// `POST /oauth/device_authorization` (RFC 8628 §3.1): codes for a device, with the same
/// client authentication as the token endpoint.
pub(crate) async fn device_authorization(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let params = Params::parse(&headers, &body)?;
    let creds = client_credentials(&headers, &params)?;
    let answer = s.service.device_authorization(&creds, params.get("scope").map(Into::into)).await?;
    Ok(no_store_json(StatusCode::OK, answer))
}

/// `POST /oauth/par` (RFC 9126): `201` with a `request_uri` for the authorization request
/// in the body, which is checked now; token-endpoint client authentication.
pub(crate) async fn par(
    State(s): State<AppState>,
    ProvingCaller(ctx): ProvingCaller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let params = Params::parse(&headers, &body)?;
    let creds = client_credentials(&headers, &params)?;
    let request = latchkey_core::oauth::AuthorizeParams::from_pairs(params.0.iter().cloned());
    let answer = s.service.push_authorization_request(&creds, request, ctx.dpop.as_ref()).await?;
    Ok(no_store_json(StatusCode::CREATED, answer))
}

/// `POST /oauth/revoke` (RFC 7009): 200 whatever the token was.
pub(crate) async fn revoke(
    State(s): State<AppState>,
    RequestCaller(ctx): RequestCaller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let params = Params::parse(&headers, &body)?;
    let creds = client_credentials(&headers, &params)?;
    let client = s.service.authenticate_token_client(&creds).await?;
    let token = params.require("token", "token is required.")?;
    s.service.revoke_oauth_token(&client, &token, &ctx).await?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /oauth/introspect` (RFC 7662).
pub(crate) async fn introspect(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let params = Params::parse(&headers, &body)?;
    let creds = client_credentials(&headers, &params)?;
    if matches!(creds, ClientCredentials::Public { .. }) {
        return Err(ApiError::Token(TokenRequestError::InvalidClient { basic: false }));
    }
    let client = s.service.authenticate_token_client(&creds).await?;
    let token = params.require("token", "token is required.")?;
    Ok(Json(s.service.introspect(&client, &token).await?).into_response())
}

/// `GET/POST /oauth/userinfo` with a Bearer token.
pub(crate) async fn userinfo(State(s): State<AppState>, Bearer(token): Bearer) -> ApiResult {
    Ok(Json(s.service.userinfo(&token).await?).into_response())
}
