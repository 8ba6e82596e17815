//! The pages behind SPEC 10's mails: asking for a reset link (`/forgot-password`), using it
//! (`/reset-password`) and verifying an address (`/verify-email`). They build on the page
//! machinery of `mod.rs` (CSRF, security headers) and call one domain function each.
//!
//! A link token arrives in a query string, so these pages must not leak it: every answer
//! is `Cache-Control: no-store` (set by the router for every page) and
//! `Referrer-Policy: same-origin` (set for every page), and nothing here logs a query, a
//! form field or a token. Opening a link only reads it ([`Latchkey::peek_link`]) so that a
//! mail scanner following the link changes nothing; the form post uses it. The forgot-password
//! confirmation is one fixed page, the same bytes whether or not the login names an account.
//!
//! [`Latchkey::peek_link`]: latchkey_core::Latchkey::peek_link

use askama::Template;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use latchkey_core::email_verification::EmailError;
use latchkey_core::password::{MIN_PASSWORD_BYTES, PasswordError};
use latchkey_core::password_reset::ResetError;
use latchkey_proto::auth::PasswordResetRequest;
use latchkey_proto::{LinkKind, LinkToken, LinkTokenReason, Password, Username};

use super::templates::{ForgotPasswordPage, MessagePage, ResetPasswordPage, VerifyEmailPage};
use super::{Browser, Page, checked_form, form_value};
use crate::AppState;
use crate::extract::caller::RequestCaller;
use crate::oauth::parse_pairs;

/// A page that says what happened, with one link onwards.
fn message(b: &Browser, status: StatusCode, title: &str, message: &str, link: (&str, &str)) -> Response {
    let html = MessagePage {
        title: title.to_owned(),
        message: message.to_owned(),
        link_href: link.0.to_owned(),
        link_text: link.1.to_owned(),
    }
    .render();
    b.page(Page { status, html, form_action: None })
}

/// A link that cannot be used (`400`): why, and where to get a new one.
fn refused_link(b: &Browser, kind: LinkKind, reason: LinkTokenReason) -> Response {
    let onwards = match kind {
        LinkKind::Reset => ("/forgot-password", "Ask for a new reset link"),
        LinkKind::Verify => ("/account", "Go to your account to send a new link"),
    };
    message(b, StatusCode::BAD_REQUEST, "This link cannot be used", reason.description(), onwards)
}

/// The storage or hashing failed: `503`, and the detail in the log (never the token).
fn unavailable(b: &Browser, what: &str, e: &dyn std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "{what} failed");
    b.error(StatusCode::SERVICE_UNAVAILABLE, "Try again shortly", "This is not possible right now.")
}

/// The `token` of a link's query string.
fn query_token(q: Option<&str>) -> Option<String> {
    let pairs = parse_pairs(q.unwrap_or_default())?;
    form_value(&pairs, "token").map(str::to_owned)
}

fn forgot_form(b: &Browser, status: StatusCode, login: String, error: Option<String>) -> Response {
    let html = ForgotPasswordPage { csrf: b.csrf.clone(), login, error }.render();
    b.page(Page { status, html, form_action: None })
}

/// `GET /forgot-password`.
pub(crate) async fn forgot_page(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let b = Browser::of(&s, &headers);
    forgot_form(&b, StatusCode::OK, String::new(), None)
}

/// `POST /forgot-password`: mails a reset link if the login names an account, and answers
/// the same page either way.
pub(crate) async fn forgot(
    State(s): State<AppState>,
    RequestCaller(ctx): RequestCaller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let b = Browser::of(&s, &headers);
    let pairs = match checked_form(&s, &b, &headers, &body) {
        Ok(p) => p,
        Err(res) => return *res,
    };
    let raw = form_value(&pairs, "login").unwrap_or_default().trim();
    let shown = raw.chars().take(Username::MAX_CHARS).collect::<String>();
    let Ok(login) = Username::parse(raw) else {
        let error = "Enter the email address or username of your account.".to_owned();
        return forgot_form(&b, StatusCode::BAD_REQUEST, shown, Some(error));
    };
    match s.service.forgot_password(&login, &ctx).await {
        Ok(()) => message(
            &b,
            StatusCode::OK,
            "Check your email",
            "If an account matches, we sent a link to its email address. The link is valid for \
             30 minutes.",
            ("/login", "Back to sign in"),
        ),
        Err(ResetError::Throttled { retry_after }) => {
            let error = format!("Too many reset links were asked for. Try again in {retry_after} seconds.");
            let mut res = forgot_form(&b, StatusCode::TOO_MANY_REQUESTS, shown, Some(error));
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
            res
        }
        Err(e) => unavailable(&b, "forgot-password page", &e),
    }
}

fn reset_form(b: &Browser, status: StatusCode, token: String, error: Option<String>) -> Response {
    let html =
        ResetPasswordPage { csrf: b.csrf.clone(), token, min_length: MIN_PASSWORD_BYTES, error }.render();
    b.page(Page { status, html, form_action: None })
}

/// `GET /reset-password?token=`: the form, or at once why the link cannot be used. Reads
/// the link only.
pub(crate) async fn reset_page(
    State(s): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let b = Browser::of(&s, &headers);
    let token = query_token(q.as_deref()).unwrap_or_default();
    match s.service.peek_link(&LinkToken::new(token.clone()), LinkKind::Reset).await {
        Ok(Ok(())) => reset_form(&b, StatusCode::OK, token, None),
        Ok(Err(reason)) => refused_link(&b, LinkKind::Reset, reason),
        Err(e) => unavailable(&b, "reset-password page", &e),
    }
}

/// `POST /reset-password`: sets the password with the link, which signs out every device.
pub(crate) async fn reset(
    State(s): State<AppState>,
    RequestCaller(ctx): RequestCaller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let b = Browser::of(&s, &headers);
    let pairs = match checked_form(&s, &b, &headers, &body) {
        Ok(p) => p,
        Err(res) => return *res,
    };
    let token = form_value(&pairs, "token").unwrap_or_default().to_owned();
    let req = PasswordResetRequest {
        token: LinkToken::new(token.clone()),
        new_password: Password::new(form_value(&pairs, "new_password").unwrap_or_default().to_owned()),
    };
    match s.service.reset_password(req, &ctx).await {
        Ok(()) => message(
            &b,
            StatusCode::OK,
            "Password set",
            "Your password has been set. Every device was signed out.",
            ("/login", "Sign in"),
        ),
        Err(ResetError::Password(PasswordError::TooShort)) => {
            let error = format!("Use at least {MIN_PASSWORD_BYTES} characters.");
            reset_form(&b, StatusCode::BAD_REQUEST, token, Some(error))
        }
        Err(ResetError::Password(PasswordError::TooLong)) => {
            let error = "That password is too long.".to_owned();
            reset_form(&b, StatusCode::BAD_REQUEST, token, Some(error))
        }
        Err(ResetError::Link(reason)) => refused_link(&b, LinkKind::Reset, reason),
        Err(e) => unavailable(&b, "reset-password page", &e),
    }
}

/// `GET /verify-email?token=`: a button that verifies, or at once why the link cannot be
/// used. Reads the link only.
pub(crate) async fn verify_page(
    State(s): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let b = Browser::of(&s, &headers);
    let token = query_token(q.as_deref()).unwrap_or_default();
    match s.service.peek_link(&LinkToken::new(token.clone()), LinkKind::Verify).await {
        Ok(Ok(())) => {
            let html = VerifyEmailPage { csrf: b.csrf.clone(), token }.render();
            b.page(Page { status: StatusCode::OK, html, form_action: None })
        }
        Ok(Err(reason)) => refused_link(&b, LinkKind::Verify, reason),
        Err(e) => unavailable(&b, "verify-email page", &e),
    }
}

/// `POST /verify-email`: verifies the address the link was mailed to.
pub(crate) async fn verify(
    State(s): State<AppState>,
    RequestCaller(ctx): RequestCaller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let b = Browser::of(&s, &headers);
    let pairs = match checked_form(&s, &b, &headers, &body) {
        Ok(p) => p,
        Err(res) => return *res,
    };
    let token = LinkToken::new(form_value(&pairs, "token").unwrap_or_default().to_owned());
    match s.service.verify_email(&token, &ctx).await {
        Ok(()) => message(
            &b,
            StatusCode::OK,
            "Email address verified",
            "Your email address is verified.",
            ("/account", "Go to your account"),
        ),
        Err(EmailError::Link(reason)) => refused_link(&b, LinkKind::Verify, reason),
        Err(EmailError::EmailTaken) => message(
            &b,
            StatusCode::CONFLICT,
            "Address in use",
            "This email address now belongs to another account, so it cannot be verified for yours.",
            ("/account", "Go to your account"),
        ),
        Err(e) => unavailable(&b, "verify-email page", &e),
    }
}
