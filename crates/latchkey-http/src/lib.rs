//! Latchkey's HTTP layer (axum). [`router`] lists every route. Handlers extract, call one
//! domain function and map the result; `error.rs` maps every domain error to a status, a
//! JSON body and headers. No business decisions here, and no SQL.

mod error;
mod extract;
mod feed;
mod oauth;
mod ops;
mod pages;
mod registration;
mod session;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{delete, get, post};
use latchkey_core::Latchkey;

pub use error::ApiError;
pub use extract::caller::TrustedProxies;

/// The largest request body, in bytes (SPEC 5: 64 KiB by default).
pub const BODY_LIMIT: usize = 64 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The domain service.
    pub service: Arc<Latchkey>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<TrustedProxies>,
}

/// How long a client may take to send a whole request body; a slower one is answered
/// `408 invalid_request` and its connection closed (a slow body holds nothing for long).
pub const REQUEST_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Every route of the server.
pub fn router(state: AppState) -> Router {
    // The endpoints that take DPoP proofs (SPEC 12) hand out the next nonce with every
    // answer when nonces are on, so a client needs no failed request to learn it.
    let offers_nonce = middleware::map_response_with_state(state.clone(), offer_dpop_nonce);
    Router::new()
        .route("/auth/register", post(session::register))
        .route("/auth/login", post(session::login).layer(offers_nonce.clone()))
        .route("/auth/login/mfa", post(session::mfa::login).layer(offers_nonce.clone()))
        .route("/auth/mfa", get(session::mfa::list))
        .route("/auth/mfa/totp", post(session::mfa::begin_totp))
        .route("/auth/mfa/totp/confirm", post(session::mfa::confirm_totp).layer(offers_nonce.clone()))
        .route("/auth/mfa/recovery-codes", post(session::mfa::replace_recovery_codes))
        .route("/auth/mfa/{id}", delete(session::mfa::remove))
        .route("/auth/passkeys/register/start", post(session::passkey::begin_registration))
        .route("/auth/passkeys/register/finish", post(session::passkey::finish_registration))
        .route("/auth/passkeys/login/start", post(session::passkey::begin_login))
        .route(
            "/auth/passkeys/login/finish",
            post(session::passkey::finish_login).layer(offers_nonce.clone()),
        )
        .route("/auth/refresh", post(session::refresh).layer(offers_nonce.clone()))
        .route("/auth/step-up", post(session::step_up).layer(offers_nonce.clone()))
        .route("/auth/logout", post(session::logout))
        .route("/auth/logout-all", post(session::logout_all))
        .route("/auth/sessions", get(session::list_sessions))
        .route("/auth/sessions/{id}", delete(session::revoke_session))
        .route("/auth/me", get(session::me))
        .route("/auth/password", post(session::change_password))
        .route("/auth/email", post(session::change_email))
        .route("/auth/email/verify/send", post(session::send_verification))
        .route("/auth/email/verify", post(session::verify_email))
        .route("/auth/password/forgot", post(session::forgot_password))
        .route("/auth/password/reset", post(session::reset_password))
        .route("/revocations", get(feed::revocations))
        .route("/revocations/stream", get(feed::stream))
        .route("/.well-known/openid-configuration", get(oauth::discovery))
        .route("/.well-known/oauth-authorization-server", get(oauth::discovery))
        .route("/oauth/authorize", get(pages::authorize).post(pages::consent))
        .route("/oauth/token", post(oauth::token).layer(offers_nonce.clone()))
        .route("/oauth/device_authorization", post(oauth::device_authorization))
        .route("/oauth/par", post(oauth::par).layer(offers_nonce.clone()))
        .route("/oauth/register", post(registration::register))
        .route(
            "/oauth/register/{client_id}",
            get(registration::read).put(registration::update).delete(registration::delete),
        )
        .route("/oauth/revoke", post(oauth::revoke))
        .route("/oauth/introspect", post(oauth::introspect))
        .route("/oauth/userinfo", get(oauth::userinfo).post(oauth::userinfo))
        .route("/login", get(pages::login_page).post(pages::login))
        .route("/login/mfa", post(pages::login_mfa))
        .route("/login/enrol", post(pages::enrol))
        .route("/login/passkey", post(pages::login_passkey))
        .route("/logout", post(pages::logout))
        .route("/oauth/logout", get(pages::end_session).post(pages::end_session))
        .route("/device", get(pages::device_page).post(pages::device_post))
        .route("/account", get(pages::account))
        .route("/account/sessions/{id}/revoke", post(pages::revoke_device))
        .route("/account/apps/{client_id}/revoke", post(pages::revoke_app))
        .route("/account/email", post(pages::account_change_email))
        .route("/account/email/verify", post(pages::account_send_verification))
        .route("/account/mfa/totp", post(pages::set_up_totp))
        .route("/account/mfa/totp/confirm", post(pages::confirm_totp))
        .route("/account/mfa/recovery-codes", post(pages::new_recovery_codes))
        .route("/account/mfa/{id}/remove", post(pages::remove_factor))
        .route("/account/passkeys/{step}", post(pages::register_passkey))
        .route("/forgot-password", get(pages::forgot_page).post(pages::forgot))
        .route("/reset-password", get(pages::reset_page).post(pages::reset))
        .route("/verify-email", get(pages::verify_page).post(pages::verify))
        .route("/static/latchkey.css", get(pages::stylesheet))
        .route("/static/passkey.js", get(pages::passkey_script))
        .route("/jwks.json", get(ops::jwks))
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(error::panic_response))
        .layer(middleware::from_fn(read_body_in_time))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Reads the whole request body (at most [`BODY_LIMIT`] bytes) within
/// [`REQUEST_BODY_TIMEOUT`] before any handler runs, so that a client trickling a body holds
/// no handler, lock or database connection, and is cut off at a deadline rather than per
/// byte. Bodies here are small JSON or forms; nothing streams a request body.
///
/// A body over the limit is answered `413`, and the client must be able to read that
/// answer (SPEC 5). A client that sent `Expect: 100-continue` is answered at once and never
/// sends the body. Most clients (Python's `http.client`, Node's `fetch`, many mobile stacks)
/// send the whole body before they read: closing the connection under them resets it, and
/// they see `EPIPE` instead of the 413. So, as nginx's lingering close does, the rest of the
/// body is read and discarded first, up to [`LINGER_BYTES`] and [`LINGER_TIME`]; a body
/// larger than that is cut off at once, since waiting for it would only feed the attacker.
/// A body whose `Content-Length` is already over the limit is not collected at all: it is
/// only drained, so its sender is answered `413` within [`LINGER_TIME`] however little it
/// sends (not `408` after [`REQUEST_BODY_TIMEOUT`]).
async fn read_body_in_time(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let expects_continue = parts
        .headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    let limit = u64::try_from(BODY_LIMIT).unwrap_or(u64::MAX);
    let linger = u64::try_from(LINGER_BYTES).unwrap_or(u64::MAX);
    if let Some(declared) = declared.filter(|&n| n > limit) {
        if expects_continue || declared > linger {
            return too_large(true);
        }
        let linger_until = tokio::time::Instant::now() + LINGER_TIME;
        return drain_then_too_large(body.into_data_stream(), linger_until).await;
    }
    let deadline = tokio::time::Instant::now() + REQUEST_BODY_TIMEOUT;
    match tokio::time::timeout_at(deadline, collect_body(body)).await {
        Ok(Collected::Whole(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await
        }
        Ok(Collected::TooLarge(rest)) => {
            let linger_until = deadline.min(tokio::time::Instant::now() + LINGER_TIME);
            drain_then_too_large(rest, linger_until).await
        }
        Ok(Collected::Unreadable) => error::ApiError::Rejected(
            axum::http::StatusCode::BAD_REQUEST,
            latchkey_proto::ErrorCode::InvalidRequest,
            "The request body could not be read.".into(),
        )
        .into_response(),
        Err(_) => {
            let mut res = error::ApiError::Rejected(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                latchkey_proto::ErrorCode::InvalidRequest,
                format!("The request body did not arrive within {} s.", REQUEST_BODY_TIMEOUT.as_secs()),
            )
            .into_response();
            res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            res
        }
    }
}

/// The most of an oversized body read and discarded so that its sender can read the 413.
pub const LINGER_BYTES: usize = 8 * 1024 * 1024;
/// The longest time spent reading an oversized body before answering.
pub const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(3);

/// A request body as far as it was read.
enum Collected {
    /// All of it, within the limit.
    Whole(Vec<u8>),
    /// Over the limit: the rest, unread.
    TooLarge(axum::body::BodyDataStream),
    /// The client broke off or sent a malformed body.
    Unreadable,
}

async fn collect_body(body: axum::body::Body) -> Collected {
    use futures_util::StreamExt as _;
    let mut stream = body.into_data_stream();
    let mut whole = Vec::new();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { return Collected::Unreadable };
        if whole.len() + chunk.len() > BODY_LIMIT {
            return Collected::TooLarge(stream);
        }
        whole.extend_from_slice(&chunk);
    }
    Collected::Whole(whole)
}

/// Reads and discards the rest of a body, at most [`LINGER_BYTES`]; whether it ended.
async fn drain(mut rest: axum::body::BodyDataStream) -> bool {
    use futures_util::StreamExt as _;
    let mut read = 0usize;
    while let Some(chunk) = rest.next().await {
        let Ok(chunk) = chunk else { return false };
        read = read.saturating_add(chunk.len());
        if read > LINGER_BYTES {
            return false;
        }
    }
    true
}

/// Reads and discards the rest of an oversized body until `until` at the latest, then
/// answers `413`.
async fn drain_then_too_large(rest: axum::body::BodyDataStream, until: tokio::time::Instant) -> Response {
    let is_drained = tokio::time::timeout_at(until, drain(rest)).await.unwrap_or(false);
    too_large(!is_drained)
}

/// `413`; `Connection: close` when the body was not read to its end (the connection cannot
/// carry another request then).
fn too_large(is_body_unread: bool) -> Response {
    let mut res = error::ApiError::body_too_large().into_response();
    if is_body_unread {
        res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

/// Adds `DPoP-Nonce` with the current nonce, when `dpop_nonce` is on.
async fn offer_dpop_nonce(State(state): State<AppState>, mut res: Response) -> Response {
    if let Some(v) = state.service.dpop_nonce().and_then(|n| HeaderValue::from_str(&n).ok()) {
        res.headers_mut().insert(error::DPOP_NONCE, v);
    }
    res
}

/// Records latency per route and makes every answer `Cache-Control: no-store` unless the
/// handler chose otherwise (token responses must never be cached; SPEC 5).
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    // Only known methods become labels: any token is a valid method, and each label value
    // would be a new series kept forever.
    let method = match *req.method() {
        axum::http::Method::GET => "GET",
        axum::http::Method::POST => "POST",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::DELETE => "DELETE",
        axum::http::Method::PATCH => "PATCH",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let mut res = next.run(req).await;
    let headers = res.headers_mut();
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    }
    state.service.metrics().http_request(
        method,
        &route,
        res.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    res
}
