//! axum adapter: the [`AccessToken`] extractor, the [`VerifyLayer`] tower layer, and
//! role/scope guards, answering exactly as SPEC 5.5 says: `401` +
//! `WWW-Authenticate: Bearer error="invalid_token"` with the JSON body
//! `{error, error_description, error_reason, error_type}` (a `DPoP` challenge with `algs`
//! for a token that came as `Authorization: DPoP`, for its proof's failures, and for a
//! bound token that came as `Bearer`, SPEC 12); `403 insufficient_scope` for a
//! missing role or scope (a missing scope named in the challenge's `scope` attribute,
//! RFC 6750 §3); `400 invalid_request` for two `Authorization` headers. Tokens are taken
//! from the `Authorization` header only: one offered in the query string is refused.
//!
//! Guards are methods on [`AccessToken`] that a handler calls before acting:
//! [`AccessToken::require_role`], [`AccessToken::require_scope`], and
//! [`AccessToken::require_app_scope`] for a scope that only third-party apps need.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Json;
use axum::extract::{FromRef, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use latchkey_dpop::ProofError;
use latchkey_proto::{ErrorBody, ErrorCode, TokenErrorReason};

use crate::verifier::{ResourceUrl, Verified, Verifier, VerifyError};

/// The `DPoP` request header.
const DPOP: &str = "dpop";

/// A verified access token, extracted from `Authorization: Bearer` (or left in the request
/// extensions by [`VerifyLayer`], where `Extension<AccessToken>` finds it too). It
/// dereferences to [`Verified`], so `token.has_scope("notes")` and `token.claims` work.
#[derive(Debug, Clone)]
pub struct AccessToken(pub Verified);

impl Deref for AccessToken {
    type Target = Verified;

    fn deref(&self) -> &Verified {
        &self.0
    }
}

/// What a token lacks for a route (`403 insufficient_scope`, SPEC 5.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// A role.
    Role(String),
    /// A scope: the challenge names it (`scope="..."`, RFC 6750 §3), so the client knows
    /// what to ask the user for.
    Scope(String),
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// No Bearer token.
    Missing,
    /// A token offered in the query string (never accepted, RFC 6750 §2.3 is not supported).
    TokenInQuery,
    /// More than one `Authorization` header.
    TwoAuthorizationHeaders,
    /// The token was refused.
    Verify(VerifyError),
    /// A token that came as `Authorization: DPoP` was refused, or its proof (SPEC 12): the
    /// challenge is `DPoP`.
    VerifyDpop(VerifyError),
    /// A role or scope is missing.
    InsufficientScope(Missing),
}

fn with_challenge(mut res: Response, challenge: String) -> Response {
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

/// `value` cut down to the characters a quoted `WWW-Authenticate` attribute may hold
/// (RFC 6750 §3: `%x20-21 / %x23-5B / %x5D-7E`), so a role or scope name with a quote,
/// backslash or control character cannot break the header or go missing with it.
fn quotable(value: &str) -> String {
    value.chars().filter(|c| matches!(c, ' '..='!' | '#'..='[' | ']'..='~')).collect()
}

/// The `algs` of every `DPoP` challenge (RFC 9449 §7.1).
fn dpop_algs() -> String {
    format!("algs=\"{}\"", latchkey_dpop::ALGORITHMS.join(" "))
}

fn invalid_token(body: ErrorBody) -> Response {
    let challenge =
        format!("Bearer error=\"invalid_token\", error_description=\"{}\"", body.error_description);
    with_challenge((StatusCode::UNAUTHORIZED, Json(body)).into_response(), challenge)
}

/// `401` with a `DPoP` challenge: `invalid_token` for the token, `invalid_dpop_proof` for
/// the proof.
fn dpop_refused(body: ErrorBody) -> Response {
    let challenge = format!(
        "DPoP error=\"{}\", error_description=\"{}\", {}",
        body.error.as_str(),
        quotable(&body.error_description),
        dpop_algs()
    );
    with_challenge((StatusCode::UNAUTHORIZED, Json(body)).into_response(), challenge)
}

fn feed_unavailable(message: &'static str) -> Response {
    let mut res =
        (StatusCode::SERVICE_UNAVAILABLE, Json(ErrorBody::new(ErrorCode::TemporarilyUnavailable, message)))
            .into_response();
    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    res
}

/// The answer to a refusal of a token that came as `DPoP`, or of a bound token that came
/// as `Bearer`.
fn dpop_rejection(e: VerifyError) -> Response {
    match e {
        VerifyError::Invalid(reason) => dpop_refused(ErrorBody::invalid_token(reason)),
        VerifyError::FeedUnavailable => {
            feed_unavailable("Token revocations cannot be checked right now; retry shortly.")
        }
        VerifyError::ProofCacheFull => feed_unavailable("Too many DPoP requests right now; retry shortly."),
        VerifyError::Proof(_) | VerifyError::ProofReplayed => {
            dpop_refused(ErrorBody::new(ErrorCode::InvalidDpopProof, e.to_string()))
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        match self {
            Self::Missing => {
                let mut res = with_challenge(
                    (
                        StatusCode::UNAUTHORIZED,
                        Json(ErrorBody::new(ErrorCode::InvalidToken, "An access token is required.")),
                    )
                        .into_response(),
                    "Bearer".to_owned(),
                );
                if let Ok(v) = HeaderValue::from_str(&format!("DPoP {}", dpop_algs())) {
                    res.headers_mut().append(header::WWW_AUTHENTICATE, v);
                }
                res
            }
            Self::TokenInQuery => {
                let mut body = ErrorBody::invalid_token(TokenErrorReason::Malformed);
                "Access tokens are accepted in the Authorization header only.".clone_into(&mut body.error_description);
                invalid_token(body)
            }
            Self::TwoAuthorizationHeaders => with_challenge(
                (
                    StatusCode::BAD_REQUEST,
                    Json(ErrorBody::new(
                        ErrorCode::InvalidRequest,
                        "Only one Authorization header is allowed.",
                    )),
                )
                    .into_response(),
                "Bearer error=\"invalid_request\", error_description=\"Only one Authorization header is allowed.\""
                    .to_owned(),
            ),
            Self::Verify(VerifyError::Invalid(reason)) if reason != TokenErrorReason::DpopRequired => {
                invalid_token(ErrorBody::invalid_token(reason))
            }
            Self::Verify(VerifyError::FeedUnavailable) => {
                feed_unavailable("Token revocations cannot be checked right now; retry shortly.")
            }
            Self::Verify(e) | Self::VerifyDpop(e) => dpop_rejection(e),
            Self::InsufficientScope(missing) => {
                let (description, scope) = match &missing {
                    Missing::Role(role) => (format!("The access token lacks the role {role}."), None),
                    Missing::Scope(scope) => (format!("The access token lacks the scope {scope}."), Some(scope)),
                };
                let mut challenge = format!(
                    "Bearer error=\"insufficient_scope\", error_description=\"{}\"",
                    quotable(&description)
                );
                if let Some(scope) = scope {
                    challenge.push_str(&format!(", scope=\"{}\"", quotable(scope)));
                }
                let body = ErrorBody::new(ErrorCode::InsufficientScope, description);
                with_challenge((StatusCode::FORBIDDEN, Json(body)).into_response(), challenge)
            }
        }
    }
}

impl AccessToken {
    /// Requires a role (`403 insufficient_scope` without it). An app's token carries roles
    /// only when the app was granted the scope `roles` (SPEC 13).
    ///
    /// # Errors
    /// [`Rejection::InsufficientScope`] with [`Missing::Role`].
    pub fn require_role(&self, role: &str) -> Result<(), Rejection> {
        if self.has_role(role) {
            Ok(())
        } else {
            Err(Rejection::InsufficientScope(Missing::Role(role.to_owned())))
        }
    }

    /// Requires a scope, of every token (`403 insufficient_scope` without it). First-party
    /// tokens carry only `profile`, so this refuses them for any other scope; see
    /// [`Self::require_app_scope`] for a scope only apps need.
    ///
    /// # Errors
    /// [`Rejection::InsufficientScope`] with [`Missing::Scope`].
    pub fn require_scope(&self, scope: &str) -> Result<(), Rejection> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(Rejection::InsufficientScope(Missing::Scope(scope.to_owned())))
        }
    }

    /// Requires a scope of third-party apps' tokens only: a first-party token
    /// ([`Verified::is_first_party`]) passes without it, since the user acts through
    /// Latchkey's own clients with their whole authority, while an app acts only within the
    /// scopes the user granted it (SPEC 13). Pair it with [`Self::require_role`]: notes-api's
    /// `DELETE /notes/{id}` requires the role `manager` of everyone and the scope `notes`
    /// of apps.
    ///
    /// # Errors
    /// [`Rejection::InsufficientScope`] with [`Missing::Scope`], for an app's token without
    /// the scope.
    pub fn require_app_scope(&self, scope: &str) -> Result<(), Rejection> {
        if self.is_first_party() { Ok(()) } else { self.require_scope(scope) }
    }
}

/// How a request presents its token.
enum Presented<'a> {
    /// `Authorization: Bearer`.
    Bearer(&'a str),
    /// `Authorization: DPoP`, with the `DPoP` header.
    Dpop { token: &'a str, proof: &'a str },
}

/// The token of a request: from exactly one `Authorization` header, never the query; with
/// the `DPoP` scheme, exactly one `DPoP` header too.
fn presented(parts: &Parts) -> Result<Presented<'_>, Rejection> {
    let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        let in_query = parts.uri.query().is_some_and(|q| {
            q.split('&').any(|pair| pair.split('=').next().is_some_and(|k| k == "access_token"))
        });
        return Err(if in_query { Rejection::TokenInQuery } else { Rejection::Missing });
    };
    if values.next().is_some() {
        return Err(Rejection::TwoAuthorizationHeaders);
    }
    let (scheme, token) = value.to_str().ok().and_then(|v| v.split_once(' ')).ok_or(Rejection::Missing)?;
    let token = token.trim();
    if token.is_empty() {
        return Err(Rejection::Missing);
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Presented::Bearer(token));
    }
    if !scheme.eq_ignore_ascii_case("dpop") {
        return Err(Rejection::Missing);
    }
    let proof_error = |why| Rejection::VerifyDpop(VerifyError::Proof(ProofError::Malformed(why)));
    let mut proofs = parts.headers.get_all(DPOP).iter();
    let proof = match (proofs.next(), proofs.next()) {
        (None, _) => return Err(proof_error("no DPoP header")),
        (Some(_), Some(_)) => return Err(proof_error("more than one DPoP header")),
        (Some(v), None) => v.to_str().map_err(|_| proof_error("not ASCII"))?,
    };
    Ok(Presented::Dpop { token, proof })
}

/// The URL a client sent this request to, as its proof names it: the configured
/// `resource_url` and the request's path (the original one, before any `nest` stripped a
/// prefix); or, only with `insecure_htu_from_host`, `http://` and the `Host` the client
/// chose. `None`: this verifier takes no DPoP (neither was configured).
fn request_url(parts: &Parts, verifier: &Verifier) -> Option<String> {
    let path = parts.extensions.get::<axum::extract::OriginalUri>().map_or(parts.uri.path(), |o| o.0.path());
    match &verifier.resource_url {
        ResourceUrl::Configured(base) => Some(format!("{base}{path}")),
        ResourceUrl::InsecureFromHost => {
            let host = parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
            Some(format!("http://{host}{path}"))
        }
        ResourceUrl::Unset => None,
    }
}

async fn authenticate(parts: &Parts, verifier: &Verifier) -> Result<AccessToken, Rejection> {
    if let Some(done) = parts.extensions.get::<AccessToken>() {
        return Ok(done.clone());
    }
    match presented(parts)? {
        Presented::Bearer(token) => verifier.verify(token).await.map(AccessToken).map_err(Rejection::Verify),
        Presented::Dpop { token, proof } => {
            let Some(url) = request_url(parts, verifier) else {
                return Err(Rejection::VerifyDpop(VerifyError::Proof(ProofError::Malformed(
                    "this API takes no DPoP proofs: its resource_url is not set",
                ))));
            };
            verifier
                .verify_dpop(token, proof, parts.method.as_str(), &url)
                .await
                .map(AccessToken)
                .map_err(Rejection::VerifyDpop)
        }
    }
}

impl<S> FromRequestParts<S> for AccessToken
where
    S: Send + Sync,
    Arc<Verifier>: FromRef<S>,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        authenticate(parts, &Arc::<Verifier>::from_ref(state)).await
    }
}

/// A tower layer that lets only requests with a valid access token through, and leaves the
/// [`AccessToken`] in the request extensions (`Extension<AccessToken>` or the
/// [`AccessToken`] extractor read it without verifying again). Refusals are SPEC 5.5's.
///
/// ```no_run
/// # async fn run(verifier: std::sync::Arc<latchkey_verify::Verifier>) {
/// use axum::{Extension, Router, routing::get};
/// use latchkey_verify::axum::{AccessToken, VerifyLayer};
///
/// let app: Router = Router::new()
///     .route("/me", get(|Extension(AccessToken(t)): Extension<AccessToken>| async move { t.claims.sub }))
///     .layer(VerifyLayer::new(verifier));
/// # }
/// ```
#[derive(Clone)]
pub struct VerifyLayer {
    verifier: Arc<Verifier>,
}

impl VerifyLayer {
    /// A layer checking tokens with `verifier`.
    pub fn new(verifier: Arc<Verifier>) -> Self {
        Self { verifier }
    }
}

impl<S> tower::Layer<S> for VerifyLayer {
    type Service = VerifyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        VerifyService { verifier: Arc::clone(&self.verifier), inner }
    }
}

/// The service [`VerifyLayer`] wraps around an inner service.
#[derive(Clone)]
pub struct VerifyService<S> {
    verifier: Arc<Verifier>,
    inner: S,
}

impl<S> tower::Service<Request> for VerifyService<S>
where
    S: tower::Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let verifier = Arc::clone(&self.verifier);
        // The clone that was made ready serves this request; the fresh clone stays behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            match authenticate(&parts, &verifier).await {
                Ok(token) => {
                    parts.extensions.insert(token);
                    inner.call(Request::from_parts(parts, body)).await
                }
                Err(rejection) => Ok(rejection.into_response()),
            }
        })
    }
}
