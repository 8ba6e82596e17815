//! The second step of a browser sign-in (SPEC 11): after a right password, a user with a
//! second factor gets this page instead of a session. Its forms carry the sign-in's
//! `mfa_token` (it proves only the password and lives 5 minutes); a code from the
//! authenticator app or a recovery code completes the sign-in exactly as a password
//! alone does for other users (the cookie, then `return_to`, an authorization included).

use askama::Template;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use latchkey_core::mfa::{CodeMethod, MfaError};
use latchkey_proto::auth::MfaMethod;
use latchkey_proto::{MfaToken, OneTimeCode};

use super::templates::MfaPage;
use super::{
    Browser, Page, checked_form, form_value, render_login, safe_return_to, signed_in, signed_in_answer,
    signing_in_for,
};
use crate::AppState;
use crate::extract::caller::RequestCaller;

/// The page that asks for the second factor.
pub(super) async fn step_page(
    s: &AppState,
    b: &Browser,
    status: StatusCode,
    return_to: String,
    mfa_token: &MfaToken,
    methods: &[MfaMethod],
    error: Option<String>,
) -> Response {
    let (app_name, form_action) = signing_in_for(s, &return_to, &b.csrf).await;
    let html = MfaPage {
        csrf: b.csrf.clone(),
        return_to,
        mfa_token: mfa_token.expose_secret().to_owned(),
        error,
        app_name,
        has_totp: methods.contains(&MfaMethod::Totp),
        has_passkey: methods.contains(&MfaMethod::Passkey),
        has_recovery_codes: methods.contains(&MfaMethod::RecoveryCode),
    }
    .render();
    super::security::no_store(b.page(Page { status, html, form_action }))
}

/// `POST /login/mfa`: the code (`method` `totp` or `recovery_code`) for a sign-in's
/// `mfa_token`.
pub(crate) async fn login_mfa(
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
    let return_to = safe_return_to(form_value(&pairs, "return_to"));
    let token = MfaToken::new(form_value(&pairs, "mfa_token").unwrap_or_default().to_owned());
    let method = match form_value(&pairs, "method") {
        Some("recovery_code") => CodeMethod::RecoveryCode,
        _ => CodeMethod::Totp,
    };
    let code = OneTimeCode::new(form_value(&pairs, "code").unwrap_or_default().to_owned());
    let previous = signed_in(&s, &headers, &ctx).await;
    match s.service.web_sign_in_mfa(&token, method, &code, &ctx).await {
        Ok((_, cookie)) => signed_in_answer(&s, &b, &ctx, previous, &return_to, &cookie).await,
        Err(MfaError::WrongCode) => {
            let error = Some("That code is not right. Try again.".to_owned());
            let methods = s.service.mfa_methods(&token).await.unwrap_or_default();
            step_page(&s, &b, StatusCode::UNAUTHORIZED, return_to, &token, &methods, error).await
        }
        Err(MfaError::Throttled { retry_after }) => {
            // The throttle ended this sign-in (SPEC 11): the password comes first again.
            let error = Some(format!("Too many wrong codes. Sign in again in {retry_after} seconds."));
            let mut res =
                render_login(&s, &b, StatusCode::TOO_MANY_REQUESTS, return_to, String::new(), error).await;
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
            res
        }
        Err(MfaError::InvalidMfaToken) => {
            let error = Some("That sign-in has expired. Sign in again.".to_owned());
            render_login(&s, &b, StatusCode::UNAUTHORIZED, return_to, String::new(), error).await
        }
        Err(e) => {
            tracing::warn!(error = %e, "second sign-in step failed");
            b.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again shortly",
                "Signing in is not possible right now.",
            )
        }
    }
}
