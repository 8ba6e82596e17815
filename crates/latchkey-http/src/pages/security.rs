//! The account page's Security section and the set-up step after the password (SPEC 11):
//! setting up an authenticator app (QR code as inline SVG, the key as text, the first
//! code), new recovery codes (shown once), removing a factor. Every change needs a
//! sign-in within the last 5 minutes; an older one is sent to sign in again.
//!
//! A wrong first code shows the same key again: the form carries it back (it was just
//! shown on this page anyway), and the server checks the code against the key it stored.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use latchkey_core::mfa::MfaError;
use latchkey_core::web::SignedIn;
use latchkey_proto::auth::{RecoveryCodes, TotpEnrolment};
use latchkey_proto::{MfaToken, OneTimeCode};

use super::templates::{FactorRow, RecoveryCodesPage, TotpSetupPage};
use super::{
    Browser, Page, account_post, checked_form, form_value, render_login, replace_session, safe_return_to,
    signed_in,
};
use crate::AppState;
use crate::extract::caller::RequestCaller;

/// The otpauth URI as an inline SVG QR code (no XML prologue; labelled for screen readers).
fn qr_svg(uri: &str) -> String {
    let Ok(code) = qrcode::QrCode::new(uri.as_bytes()) else {
        return String::new();
    };
    let svg = code.render::<qrcode::render::svg::Color>().min_dimensions(200, 200).build();
    let svg = svg.find("<svg").and_then(|at| svg.get(at..)).unwrap_or_default();
    svg.replacen("<svg ", "<svg role=\"img\" aria-label=\"QR code for your authenticator app\" ", 1)
}

/// The set-up page for a new key, posting to `action` with `extra` hidden fields.
fn setup_page(
    b: &Browser,
    status: StatusCode,
    action: &'static str,
    secret: &str,
    otpauth_uri: &str,
    mut extra: Vec<(String, String)>,
    error: Option<String>,
) -> Response {
    extra.push(("secret".into(), secret.to_owned()));
    extra.push(("otpauth_uri".into(), otpauth_uri.to_owned()));
    let html = TotpSetupPage {
        csrf: b.csrf.clone(),
        action,
        qr_svg: qr_svg(otpauth_uri),
        secret: secret.to_owned(),
        hidden: extra,
        error,
    }
    .render();
    no_store(b.page(Page { status, html, form_action: None }))
}

/// Marks a page that carries a secret (a TOTP key, recovery codes, an `mfa_token`) as not
/// to be kept in any cache.
pub(super) fn no_store(mut res: Response) -> Response {
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The set-up page again after a wrong code, from the fields the form carried back.
fn setup_again(
    b: &Browser,
    action: &'static str,
    pairs: &[(String, String)],
    extra: Vec<(String, String)>,
) -> Response {
    let secret = form_value(pairs, "secret").unwrap_or_default();
    let uri = form_value(pairs, "otpauth_uri").filter(|u| u.starts_with("otpauth://")).unwrap_or_default();
    let error = Some("That code is not right. Check the app's clock and try the newest code.".to_owned());
    setup_page(b, StatusCode::UNAUTHORIZED, action, secret, uri, extra, error)
}

/// Recovery codes, shown once, then **Continue** to `continue_to`.
fn codes_page(b: &Browser, codes: RecoveryCodes, continue_to: String) -> Response {
    let html = RecoveryCodesPage { codes: codes.recovery_codes, continue_to }.render();
    no_store(b.page(Page { status: StatusCode::OK, html, form_action: None }))
}

/// The page for what a factor change could not do.
fn failure(b: &Browser, e: &MfaError) -> Response {
    match e {
        MfaError::RecentSignInRequired => b.error(
            StatusCode::FORBIDDEN,
            "Sign in again",
            "Changing your security settings needs a sign-in within the last 5 minutes. Sign out, sign in again, and come back.",
        ),
        MfaError::FactorRequired => b.error(
            StatusCode::FORBIDDEN,
            "A second factor is required",
            "Your account must keep a second factor. Add another one before removing this one.",
        ),
        MfaError::NoFactor => {
            b.error(StatusCode::BAD_REQUEST, "No second factor", "Set up an authenticator app or a passkey first.")
        }
        MfaError::NotEnrolling => b.error(
            StatusCode::BAD_REQUEST,
            "Start again",
            "This set-up was finished or replaced. Start again from your account page.",
        ),
        e => {
            tracing::warn!(error = %e, "security settings change failed");
            b.error(StatusCode::SERVICE_UNAVAILABLE, "Try again shortly", "Your settings cannot be changed right now.")
        }
    }
}

/// The Security section's rows: the confirmed factors and the recovery codes left
/// (empty, with a warning logged, when they cannot be read).
pub(super) async fn overview(s: &AppState, who: &SignedIn) -> (Vec<FactorRow>, usize) {
    match s.service.list_mfa(who).await {
        Ok(list) => {
            let rows = list
                .factors
                .into_iter()
                .map(|f| FactorRow {
                    kind: if f.kind == latchkey_core::passkey::PASSKEY {
                        "Passkey"
                    } else {
                        "Authenticator app"
                    },
                    id: f.id,
                    name: f.name,
                    created_at: f.created_at.replace('T', " ").replace('Z', " UTC"),
                })
                .collect();
            (rows, list.recovery_codes_left)
        }
        Err(e) => {
            tracing::warn!(error = %e, "second factors could not be listed");
            (Vec::new(), 0)
        }
    }
}

/// After the password, for a user who must set up a factor: the set-up page, whose form
/// carries the enrolment `mfa_token` to `POST /login/enrol`.
pub(super) async fn enrolment_page(
    s: &AppState,
    b: &Browser,
    return_to: String,
    token: &MfaToken,
) -> Response {
    match s.service.begin_totp_enrolment(token).await {
        Ok(TotpEnrolment { secret, otpauth_uri }) => {
            let extra =
                vec![("return_to".into(), return_to), ("mfa_token".into(), token.expose_secret().to_owned())];
            setup_page(b, StatusCode::OK, "/login/enrol", &secret, &otpauth_uri, extra, None)
        }
        Err(e) => failure(b, &e),
    }
}

/// `POST /login/enrol`: the first code for the key set up after the password; signs the
/// browser in and shows the recovery codes.
pub(crate) async fn enrol(
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
    let code = OneTimeCode::new(form_value(&pairs, "code").unwrap_or_default().to_owned());
    let previous = signed_in(&s, &headers, &ctx).await;
    match s.service.web_confirm_totp_enrolment(&token, &code, &ctx).await {
        Ok((_, cookie, codes)) => {
            let res = codes_page(&b, codes, return_to);
            replace_session(&s, &b, &ctx, previous, &cookie, res).await
        }
        Err(MfaError::WrongCode) => {
            let extra =
                vec![("return_to".into(), return_to), ("mfa_token".into(), token.expose_secret().to_owned())];
            setup_again(&b, "/login/enrol", &pairs, extra)
        }
        Err(MfaError::InvalidMfaToken | MfaError::NotEnrolling) => {
            let error = Some("That sign-in has expired. Sign in again.".to_owned());
            render_login(&s, &b, StatusCode::UNAUTHORIZED, return_to, String::new(), error).await
        }
        Err(e) => failure(&b, &e),
    }
}

/// `POST /account/mfa/totp`: **Set up authenticator app**.
pub(crate) async fn set_up_totp(
    State(s): State<AppState>,
    RequestCaller(ctx): RequestCaller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let b = Browser::of(&s, &headers);
    let (who, _) = match account_post(&s, &b, &headers, &body, &ctx).await {
        Ok(v) => v,
        Err(res) => return res,
    };
    match s.service.begin_totp(&who).await {
        Ok(TotpEnrolment { secret, otpauth_uri }) => setup_page(
            &b,
            StatusCode::OK,
            "/account/mfa/totp/confirm",
            &secret,
            &otpauth_uri,
            Vec::new(),
            None,
        ),
        Err(e) => failure(&b, &e),
    }
}

/// `POST /account/mfa/totp/confirm`: the first code; shows the recovery codes.
pub(crate) async fn confirm_totp(
    State(s): State<AppState>,
    RequestCaller(ctx): RequestCaller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let b = Browser::of(&s, &headers);
    let (who, pairs) = match account_post(&s, &b, &headers, &body, &ctx).await {
        Ok(v) => v,
        Err(res) => return res,
    };
    let code = OneTimeCode::new(form_value(&pairs, "code").unwrap_or_default().to_owned());
    match s.service.confirm_totp(&who, &code, &ctx).await {
        Ok(codes) => codes_page(&b, codes, "/account".to_owned()),
        Err(MfaError::WrongCode) => setup_again(&b, "/account/mfa/totp/confirm", &pairs, Vec::new()),
        Err(e) => failure(&b, &e),
    }
}

/// `POST /account/mfa/recovery-codes`: **New recovery codes**.
pub(crate) async fn new_recovery_codes(
    State(s): State<AppState>,
    RequestCaller(ctx): RequestCaller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let b = Browser::of(&s, &headers);
    let (who, _) = match account_post(&s, &b, &headers, &body, &ctx).await {
        Ok(v) => v,
        Err(res) => return res,
    };
    match s.service.replace_recovery_codes(&who, &ctx).await {
        Ok(codes) => codes_page(&b, codes, "/account".to_owned()),
        Err(e) => failure(&b, &e),
    }
}

/// `POST /account/mfa/{id}/remove`: **Remove**.
pub(crate) async fn remove_factor(
    State(s): State<AppState>,
    RequestCaller(ctx): RequestCaller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let b = Browser::of(&s, &headers);
    let (who, _) = match account_post(&s, &b, &headers, &body, &ctx).await {
        Ok(v) => v,
        Err(res) => return res,
    };
    match s.service.remove_factor(&who, &id, &ctx).await {
        Ok(()) => b.redirect(StatusCode::SEE_OTHER, "/account?notice=factor-removed"),
        Err(MfaError::UnknownFactor) => b.redirect(StatusCode::SEE_OTHER, "/account?notice=no-such-factor"),
        Err(e) => failure(&b, &e),
    }
}
