//! The server-rendered pages (SPEC 5.3): sign-in, consent (the browser side of
//! `/oauth/authorize`), the account page, sign-out and error pages. They work without
//! JavaScript, except the passkey buttons (SPEC 11), whose one script is
//! `/static/passkey.js`. Every answer carries a strict Content-Security-Policy (no inline
//! script or style, scripts from this origin only, `frame-ancestors 'none'`); every form is
//! protected against cross-site requests twice: a CSRF token bound to the browser by a
//! cookie, and the `Origin` / `Sec-Fetch-Site` headers. The browser session cookie is
//! `HttpOnly`, `SameSite=Lax`, and `Secure` whenever the issuer is https.
//!
//! Also here: `recovery.rs` (the pages behind SPEC 10's mailed links), `mfa.rs` (the
//! second step after the password), `security.rs` (the account page's Security section
//! and the set-up step a policy asks for) and `passkey.rs` (the passkey buttons' JSON
//! requests).

mod device_grant;
mod logout;
mod mfa;
mod passkey;
mod recovery;
mod security;
mod templates;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use latchkey_core::crypto::{TokenHash, b64, random_bytes};
use latchkey_core::device;
use latchkey_core::email_verification::EmailError;
use latchkey_core::login::LoginError;
use latchkey_core::oauth::{
    AuthorizeError, AuthorizeParams, AuthorizeRequest, AuthorizeStep, ConsentOutcome, form_encode,
};
use latchkey_core::web::SignedIn;
use latchkey_core::{Caller, ClientId, SessionId};
use latchkey_proto::auth::Credentials;
use latchkey_proto::auth::EmailChangeRequest;
use latchkey_proto::{EmailAddress, Password, Username};

use self::templates::{
    AccountPage, AppRow, ConsentPage, DeviceRow, ErrorPage, LoginPage, ScopeLine, SignedOutPage,
};
use crate::AppState;
use crate::extract::caller::RequestCaller;
use crate::oauth::{form, parse_pairs};

pub(crate) use self::device_grant::{device_page, device_post};
pub(crate) use self::logout::end_session;
pub(crate) use self::mfa::login_mfa;
pub(crate) use self::passkey::{login_passkey, register_passkey};
pub(crate) use self::recovery::{forgot, forgot_page, reset, reset_page, verify, verify_page};
pub(crate) use self::security::{confirm_totp, enrol, new_recovery_codes, remove_factor, set_up_totp};

const CSS: &str = include_str!("../../static/latchkey.css");
const PASSKEY_JS: &str = include_str!("../../static/passkey.js");
const CSRF_COOKIE: &str = "lk_csrf";
const SESSION_COOKIE: &str = "lk_session";

/// `GET /static/latchkey.css`.
pub(crate) async fn stylesheet() -> Response {
    let mut res = CSS.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    res
}

/// `GET /static/passkey.js`: the pages' only script (SPEC 11 passkey buttons).
pub(crate) async fn passkey_script() -> Response {
    let mut res = PASSKEY_JS.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    res
}

/// A cookie's value from the request.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// What a page answer is built from.
struct Page {
    status: StatusCode,
    html: Result<String, askama::Error>,
    /// Extra `form-action` sources (the app's redirect URI on sign-in and consent pages).
    form_action: Option<String>,
}

/// The browser context of a page request: its CSRF token (new when absent) and whether
/// the cookie must be set.
struct Browser {
    csrf: String,
    set_csrf: bool,
    secure: bool,
}

impl Browser {
    fn of(s: &AppState, headers: &HeaderMap) -> Self {
        let existing = cookie(headers, CSRF_COOKIE).filter(|c| c.len() == 43 && c.bytes().all(is_b64url));
        let secure = s.service.settings().issuer.starts_with("https://");
        match existing {
            Some(csrf) => Self { csrf, set_csrf: false, secure },
            None => Self { csrf: b64(&random_bytes::<32>()), set_csrf: true, secure },
        }
    }

    fn cookie_attrs(&self) -> &'static str {
        if self.secure {
            "; Path=/; HttpOnly; SameSite=Lax; Secure"
        } else {
            "; Path=/; HttpOnly; SameSite=Lax"
        }
    }

    /// Finishes a response: security headers, and the CSRF cookie when new.
    fn finish(&self, mut res: Response, form_action: Option<&str>) -> Response {
        let csp = format!(
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; \
             form-action 'self'{}; frame-ancestors 'none'; base-uri 'none'",
            form_action.map(|f| format!(" {f}")).unwrap_or_default()
        );
        let h = res.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&csp) {
            h.insert(header::CONTENT_SECURITY_POLICY, v);
        }
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        // `same-origin`, not `no-referrer`: with `no-referrer` browsers send `Origin: null` on
        // the forms' own posts, which the CSRF check refuses.
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
        if self.set_csrf
            && let Ok(v) =
                HeaderValue::from_str(&format!("{CSRF_COOKIE}={}{}", self.csrf, self.cookie_attrs()))
        {
            h.append(header::SET_COOKIE, v);
        }
        res
    }

    fn page(&self, page: Page) -> Response {
        let res = match page.html {
            Ok(html) => (page.status, axum::response::Html(html)).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "page rendering failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "Internal error").into_response()
            }
        };
        self.finish(res, page.form_action.as_deref())
    }

    fn redirect(&self, status: StatusCode, to: &str) -> Response {
        let mut res = status.into_response();
        if let Ok(v) = HeaderValue::from_str(to) {
            res.headers_mut().insert(header::LOCATION, v);
        }
        self.finish(res, None)
    }

    fn error(&self, status: StatusCode, title: &str, message: &str) -> Response {
        let html = ErrorPage { title: title.to_owned(), message: message.to_owned() }.render();
        self.page(Page { status, html, form_action: None })
    }
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// The CSP source that lets a form's redirect chain end at `redirect_uri`: its origin for
/// http(s), its scheme for an app's custom scheme.
fn csp_source(redirect_uri: &str) -> Option<String> {
    let (scheme, rest) = redirect_uri.split_once("://")?;
    if scheme.is_empty()
        || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return None;
    }
    if scheme != "http" && scheme != "https" {
        return Some(format!("{scheme}:"));
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    let is_clean = !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    is_clean.then(|| format!("{scheme}://{authority}"))
}

/// Refuses cross-site form posts: the `Origin` must be this server (the issuer's origin,
/// or the host the browser addressed), and `Sec-Fetch-Site` must not be cross-site; then
/// the form's `csrf` must equal the browser's CSRF cookie.
fn check_csrf(s: &AppState, headers: &HeaderMap, form_token: Option<&str>) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let issuer = &s.service.settings().issuer;
        let issuer_origin = csp_source(issuer).unwrap_or_default();
        // The host the browser addressed counts too (an issuer configured by IP reached by
        // name), but only under the issuer's scheme: SPEC 5.3 compares scheme, host and
        // port, and an `https://` page must not post into an `http://` issuer or back.
        let issuer_scheme = issuer.split_once("://").map(|(scheme, _)| scheme);
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let same_host = origin
            .split_once("://")
            .is_some_and(|(scheme, h)| Some(scheme) == issuer_scheme && !host.is_empty() && h == host);
        if origin != issuer_origin && !same_host {
            return false;
        }
    }
    let Some(cookie) = cookie(headers, CSRF_COOKIE) else { return false };
    form_token.is_some_and(|t| TokenHash::of(t).ct_eq(&TokenHash::of(&cookie)))
}

/// A form post's fields, once its CSRF checks passed; the error page otherwise.
fn checked_form(
    s: &AppState,
    b: &Browser,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<(String, String)>, Box<Response>> {
    let pairs = form(headers, body).ok_or_else(|| {
        Box::new(b.error(StatusCode::BAD_REQUEST, "Invalid request", "The form could not be read."))
    })?;
    if !check_csrf(s, headers, form_value(&pairs, "csrf")) {
        return Err(Box::new(b.error(
            StatusCode::FORBIDDEN,
            "Request refused",
            "This form expired or came from another site. Go back, reload the page and try again.",
        )));
    }
    Ok(pairs)
}

async fn signed_in(s: &AppState, headers: &HeaderMap, ctx: &Caller) -> Option<SignedIn> {
    let value = cookie(headers, SESSION_COOKIE)?;
    match s.service.web_session(&value, ctx).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "browser session lookup failed");
            None
        }
    }
}

fn form_value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Where sign-in may send the browser afterwards: the authorization endpoint or the
/// account page, nothing else (no open redirect).
fn safe_return_to(value: Option<&str>) -> String {
    match value {
        Some(v)
            if (v.starts_with("/oauth/authorize?") || v == "/device" || v.starts_with("/device?"))
                && !v.contains(['\r', '\n']) =>
        {
            v.to_owned()
        }
        _ => "/account".to_owned(),
    }
}

fn authorize_url(req: &AuthorizeRequest) -> String {
    let query: Vec<String> = req
        .params
        .to_pairs(true)
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect();
    format!("/oauth/authorize?{}", query.join("&"))
}

/// `GET /login`.
pub(crate) async fn login_page(
    State(s): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let b = Browser::of(&s, &headers);
    let pairs = q.as_deref().and_then(parse_pairs).unwrap_or_default();
    let return_to = safe_return_to(form_value(&pairs, "return_to"));
    render_login(&s, &b, StatusCode::OK, return_to, String::new(), None).await
}

async fn render_login(
    s: &AppState,
    b: &Browser,
    status: StatusCode,
    return_to: String,
    username: String,
    error: Option<String>,
) -> Response {
    let (app_name, form_action) = signing_in_for(s, &return_to, &b.csrf).await;
    let passkeys = s.service.passkeys_available();
    let html = LoginPage { csrf: b.csrf.clone(), return_to, username, error, app_name, passkeys }.render();
    b.page(Page { status, html, form_action })
}

/// Signing in for an app (`return_to` is an authorization): its name, and the CSP
/// `form-action` source that lets the redirect chain end at its redirect URI.
async fn signing_in_for(s: &AppState, return_to: &str, browser: &str) -> (Option<String>, Option<String>) {
    if let Some(query) = return_to.strip_prefix("/oauth/authorize?")
        && let Some(pairs) = parse_pairs(query)
        && let Ok(req) = s.service.check_authorize(AuthorizeParams::from_pairs(pairs), browser).await
    {
        return (Some(req.client.name.clone()), csp_source(req.redirect_uri.as_str()));
    }
    (None, None)
}

/// The answer to a sign-in that passed: the browser's earlier session (if any) ends, the
/// new cookie is set, and the browser goes on to `return_to`.
async fn signed_in_answer(
    s: &AppState,
    b: &Browser,
    ctx: &Caller,
    previous: Option<SignedIn>,
    return_to: &str,
    cookie: &str,
) -> Response {
    let res = b.redirect(StatusCode::SEE_OTHER, return_to);
    replace_session(s, b, ctx, previous, cookie, res).await
}

/// Ends the browser's earlier session (if any) and sets the new session's cookie on
/// `res`: how every sign-in that passed answers.
async fn replace_session(
    s: &AppState,
    b: &Browser,
    ctx: &Caller,
    previous: Option<SignedIn>,
    cookie: &str,
    mut res: Response,
) -> Response {
    if let Some(old) = previous
        && let Err(e) = s.service.web_sign_out(&old, ctx).await
    {
        tracing::warn!(error = %e, "the replaced browser session could not be ended");
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{SESSION_COOKIE}={cookie}{}", b.cookie_attrs())) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

/// `POST /login`.
pub(crate) async fn login(
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
    let raw_username = form_value(&pairs, "username").unwrap_or_default().to_owned();
    let shown = raw_username.chars().take(255).collect::<String>();
    let wrong = "Wrong username or password.".to_owned();
    let Ok(username) = Username::parse(&raw_username) else {
        return render_login(&s, &b, StatusCode::UNAUTHORIZED, return_to, shown, Some(wrong)).await;
    };
    let password = Password::new(form_value(&pairs, "password").unwrap_or_default().to_owned());
    // A sign-in over an existing one (another user, or `prompt=login`) replaces it.
    let previous = signed_in(&s, &headers, &ctx).await;
    match s.service.web_sign_in(Credentials { username, password }, &ctx).await {
        Ok((_, cookie)) => signed_in_answer(&s, &b, &ctx, previous, &return_to, &cookie).await,
        Err(LoginError::MfaRequired { mfa_token, methods }) => {
            mfa::step_page(&s, &b, StatusCode::OK, return_to, &mfa_token, &methods, None).await
        }
        Err(LoginError::MfaEnrolmentRequired { mfa_token }) => {
            security::enrolment_page(&s, &b, return_to, &mfa_token).await
        }
        Err(
            LoginError::InvalidCredentials
            | LoginError::Password(
                latchkey_core::password::PasswordError::TooShort
                | latchkey_core::password::PasswordError::TooLong,
            ),
        ) => render_login(&s, &b, StatusCode::UNAUTHORIZED, return_to, shown, Some(wrong)).await,
        Err(LoginError::Throttled { retry_after }) => {
            let msg = format!("Too many failed attempts. Try again in {retry_after} seconds.");
            let mut res =
                render_login(&s, &b, StatusCode::TOO_MANY_REQUESTS, return_to, shown, Some(msg)).await;
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
            res
        }
        Err(e) => {
            tracing::warn!(error = %e, "page sign-in failed");
            b.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again shortly",
                "Signing in is not possible right now.",
            )
        }
    }
}

fn authorize_error(b: &Browser, s: &AppState, e: AuthorizeError, get: bool) -> Response {
    match e {
        AuthorizeError::Page { title, message } => b.error(StatusCode::BAD_REQUEST, title, message),
        AuthorizeError::Redirect(r) => b.redirect(
            if get { StatusCode::FOUND } else { StatusCode::SEE_OTHER },
            &r.url(&s.service.settings().issuer),
        ),
        AuthorizeError::Store(e) => {
            tracing::warn!(error = %e, "authorization failed");
            b.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again shortly",
                "The request cannot be served right now.",
            )
        }
    }
}

/// `GET /oauth/authorize`.
pub(crate) async fn authorize(
    State(s): State<AppState>,
    RequestCaller(ctx): RequestCaller,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let b = Browser::of(&s, &headers);
    let Some(pairs) = parse_pairs(q.as_deref().unwrap_or_default()) else {
        return b.error(StatusCode::BAD_REQUEST, "Invalid request", "The request could not be read.");
    };
    let req = match s.service.check_authorize(AuthorizeParams::from_pairs(pairs), &b.csrf).await {
        Ok(r) => r,
        Err(e) => return authorize_error(&b, &s, e, true),
    };
    let who = signed_in(&s, &headers, &ctx).await;
    match s.service.authorize_step(&req, who.as_ref()).await {
        Ok(AuthorizeStep::Login) => {
            let to = format!("/login?return_to={}", form_encode(&authorize_url(&req)));
            b.redirect(StatusCode::SEE_OTHER, &to)
        }
        Ok(AuthorizeStep::Redirect(url)) => b.redirect(StatusCode::FOUND, &url),
        Ok(AuthorizeStep::Consent { scopes }) => {
            let Some(user) = who.as_ref().map(SignedIn::user) else {
                return b.error(StatusCode::BAD_REQUEST, "Invalid request", "Sign in first.");
            };
            let html = ConsentPage {
                action: "/oauth/authorize",
                csrf: b.csrf.clone(),
                app_name: req.client.name.clone(),
                username: user.username.clone(),
                scopes: scopes
                    .into_iter()
                    .map(|x| ScopeLine { name: x.name, description: x.description })
                    .collect(),
                params: req.params.to_pairs(false),
            }
            .render();
            b.page(Page { status: StatusCode::OK, html, form_action: csp_source(req.redirect_uri.as_str()) })
        }
        Err(e) => authorize_error(&b, &s, e, true),
    }
}

/// `POST /oauth/authorize`: the consent form's Allow or Deny.
pub(crate) async fn consent(
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
    let allow = match form_value(&pairs, "decision") {
        Some("allow") => true,
        Some("deny") => false,
        _ => return b.error(StatusCode::BAD_REQUEST, "Invalid request", "Choose Allow or Deny."),
    };
    let params =
        AuthorizeParams::from_pairs(pairs.iter().filter(|(k, _)| k != "csrf" && k != "decision").cloned());
    let req = match s.service.check_authorize(params, &b.csrf).await {
        Ok(r) => r,
        Err(e) => return authorize_error(&b, &s, e, false),
    };
    let Some(who) = signed_in(&s, &headers, &ctx).await else {
        let to = format!("/login?return_to={}", form_encode(&authorize_url(&req)));
        return b.redirect(StatusCode::SEE_OTHER, &to);
    };
    match s.service.decide_consent(&req, &who, allow).await {
        Ok(ConsentOutcome::Redirect(url)) => b.redirect(StatusCode::SEE_OTHER, &url),
        Ok(ConsentOutcome::SignInAgain) => {
            let to = format!("/login?return_to={}", form_encode(&authorize_url(&req)));
            b.redirect(StatusCode::SEE_OTHER, &to)
        }
        Err(e) => authorize_error(&b, &s, e, false),
    }
}

fn time(t: latchkey_core::Timestamp) -> String {
    t.rfc3339().replace('T', " ").replace('Z', " UTC")
}

/// The short notices the account page shows after its own forms, by the `notice` its
/// redirect carries. Only these fixed sentences are shown: nothing from the query is echoed.
fn account_notice(q: Option<&str>) -> Option<String> {
    let pairs = parse_pairs(q.unwrap_or_default())?;
    let text = match form_value(&pairs, "notice")? {
        "verification-sent" => "We sent a verification link to your email address.",
        "email-change-sent" => {
            "We sent a link to the new address. It becomes your address when you open the link."
        }
        "wrong-password" => "The current password was wrong. Your email address was not changed.",
        "invalid-email" => "That is not a valid email address. Your email address was not changed.",
        "no-address" => "Your account has no email address to verify.",
        "factor-removed" => "The factor was removed. Your other devices were signed out.",
        "no-such-factor" => "That factor was removed already.",
        _ => return None,
    };
    Some(text.to_owned())
}

/// `GET /account`.
pub(crate) async fn account(
    State(s): State<AppState>,
    RequestCaller(ctx): RequestCaller,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let b = Browser::of(&s, &headers);
    let Some(who) = signed_in(&s, &headers, &ctx).await else {
        return b.redirect(StatusCode::SEE_OTHER, "/login");
    };
    let (session, user) = (who.session(), who.user());
    let (devices, apps) = match s.service.account_overview(user).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "account page failed");
            return b.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again shortly",
                "Your account cannot be shown right now.",
            );
        }
    };
    let (factors, recovery_codes_left) = security::overview(&s, &who).await;
    let html = AccountPage {
        csrf: b.csrf.clone(),
        username: user.username.clone(),
        devices: devices
            .iter()
            .map(|d| DeviceRow {
                id: d.id.to_string(),
                description: device::display_name(d.user_agent.as_deref().unwrap_or_default()),
                user_agent: d.user_agent.clone().unwrap_or_default(),
                ip: d.ip.clone().unwrap_or_default(),
                created_at: time(d.created_at),
                last_used_at: time(d.last_used_at),
                current: d.id == session.id,
            })
            .collect(),
        apps: apps
            .iter()
            .map(|a| AppRow {
                client_id: a.client_id.to_string(),
                name: a.client.as_ref().map_or_else(|| a.client_id.to_string(), |c| c.name.clone()),
                scopes: a.scope.to_string(),
                connected_at: time(a.connected_at),
            })
            .collect(),
        notice: account_notice(q.as_deref()),
        email: user.email.as_ref().map(|e| e.address.clone()),
        is_email_verified: user.email.as_ref().is_some_and(|e| e.verified_at.is_some()),
        factors,
        recovery_codes_left,
        passkeys: s.service.passkeys_available(),
    }
    .render();
    b.page(Page { status: StatusCode::OK, html, form_action: None })
}

/// Checks a form post from the account page; the signed-in browser and the form's fields
/// on success.
async fn account_post(
    s: &AppState,
    b: &Browser,
    headers: &HeaderMap,
    body: &[u8],
    ctx: &Caller,
) -> Result<(SignedIn, Vec<(String, String)>), Response> {
    let pairs = checked_form(s, b, headers, body).map_err(|res| *res)?;
    let who = signed_in(s, headers, ctx).await.ok_or_else(|| b.redirect(StatusCode::SEE_OTHER, "/login"))?;
    Ok((who, pairs))
}

/// The answer to an account-page email form: back to the account page with a notice, or a
/// page for what a notice cannot say.
fn email_outcome(b: &Browser, result: Result<&str, EmailError>) -> Response {
    let notice = match result {
        Ok(notice) => notice,
        Err(EmailError::WrongPassword) => "wrong-password",
        Err(EmailError::NoAddress) => "no-address",
        Err(EmailError::Throttled { retry_after } | EmailError::PasswordThrottled { retry_after }) => {
            let message = format!("Too many attempts. Try again in {retry_after} seconds.");
            let mut res = b.error(StatusCode::TOO_MANY_REQUESTS, "Try again later", &message);
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
            return res;
        }
        Err(e) => {
            tracing::warn!(error = %e, "account email form failed");
            return b.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again shortly",
                "Your email address cannot be changed right now.",
            );
        }
    };
    b.redirect(StatusCode::SEE_OTHER, &format!("/account?notice={notice}"))
}

/// `POST /account/email/verify`: mails a verification link to the account's address.
pub(crate) async fn account_send_verification(
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
    let result = s.service.send_verification(&who, &ctx).await.map(|()| "verification-sent");
    email_outcome(&b, result)
}

/// `POST /account/email`: asks to change the address; the new one is mailed a link.
pub(crate) async fn account_change_email(
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
    let Ok(email) = EmailAddress::parse(form_value(&pairs, "email").unwrap_or_default().trim()) else {
        return b.redirect(StatusCode::SEE_OTHER, "/account?notice=invalid-email");
    };
    let current_password =
        Password::new(form_value(&pairs, "current_password").unwrap_or_default().to_owned());
    let req = EmailChangeRequest { email, current_password };
    let result = s.service.change_email(&who, req, &ctx).await.map(|()| "email-change-sent");
    email_outcome(&b, result)
}

/// `POST /account/sessions/{id}/revoke`.
pub(crate) async fn revoke_device(
    State(s): State<AppState>,
    RequestCaller(ctx): RequestCaller,
    Path(id): Path<SessionId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let b = Browser::of(&s, &headers);
    let (who, _) = match account_post(&s, &b, &headers, &body, &ctx).await {
        Ok(v) => v,
        Err(res) => return res,
    };
    match s.service.revoke_device(who.user(), &id, &ctx).await {
        Ok(_) if id == who.session().id => b.redirect(StatusCode::SEE_OTHER, "/login"),
        Ok(_) => b.redirect(StatusCode::SEE_OTHER, "/account"),
        Err(e) => {
            tracing::warn!(error = %e, "device revocation failed");
            b.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again shortly",
                "The device could not be signed out.",
            )
        }
    }
}

/// `POST /account/apps/{client_id}/revoke`.
pub(crate) async fn revoke_app(
    State(s): State<AppState>,
    RequestCaller(ctx): RequestCaller,
    Path(client_id): Path<ClientId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let b = Browser::of(&s, &headers);
    let (who, _) = match account_post(&s, &b, &headers, &body, &ctx).await {
        Ok(v) => v,
        Err(res) => return res,
    };
    match s.service.revoke_app(who.user(), &client_id, &ctx).await {
        Ok(_) => b.redirect(StatusCode::SEE_OTHER, "/account"),
        Err(e) => {
            tracing::warn!(error = %e, "app revocation failed");
            b.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again shortly",
                "The app could not be disconnected.",
            )
        }
    }
}

/// `POST /logout`: ends the browser's session; the cookie is cleared either way.
pub(crate) async fn logout(
    State(s): State<AppState>,
    RequestCaller(ctx): RequestCaller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let b = Browser::of(&s, &headers);
    if let Err(res) = checked_form(&s, &b, &headers, &body) {
        return *res;
    }
    if let Some(who) = signed_in(&s, &headers, &ctx).await
        && let Err(e) = s.service.web_sign_out(&who, &ctx).await
    {
        tracing::warn!(error = %e, "sign-out failed");
        return b.error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again shortly",
            "Signing out is not possible right now.",
        );
    }
    let mut res = b.page(Page { status: StatusCode::OK, html: SignedOutPage.render(), form_action: None });
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("{SESSION_COOKIE}=; Max-Age=0{}", b.cookie_attrs())) {
        h.append(header::SET_COOKIE, v);
    }
    h.insert("clear-site-data", HeaderValue::from_static("\"cookies\", \"storage\""));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csp_sources_of_redirect_uris() {
        assert_eq!(
            csp_source("https://app.example:8443/cb?x=1").as_deref(),
            Some("https://app.example:8443")
        );
        assert_eq!(csp_source("http://127.0.0.1:9000/cb").as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(csp_source("com.example.app://oauth").as_deref(), Some("com.example.app:"));
        assert_eq!(csp_source("https://a b/cb"), None);
        assert_eq!(csp_source("https://a;script-src *"), None);
    }

    #[test]
    fn sign_in_returns_only_to_the_authorization_endpoint_or_the_account() {
        assert_eq!(safe_return_to(Some("/oauth/authorize?client_id=x")), "/oauth/authorize?client_id=x");
        assert_eq!(safe_return_to(Some("https://evil.example/")), "/account");
        assert_eq!(safe_return_to(Some("//evil.example/oauth/authorize?")), "/account");
        assert_eq!(safe_return_to(None), "/account");
    }
}
