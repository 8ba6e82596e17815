//! `GET` and `POST /oauth/logout`, RP-initiated logout (SPEC 13): checks the request
//! (errors are a page, never a redirect), asks **Sign out** unless the hint names this
//! browser's own session, then ends the browser session with its app sessions and sends
//! the browser to the registered `post_logout_redirect_uri` (with `state`) or to the
//! signed-out page. The decisions are `Latchkey::check_end_session` and
//! `end_session_needs_confirmation`'s.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use latchkey_core::oauth::{EndSession, EndSessionError, EndSessionParams};

use super::templates::{LogoutConfirmPage, SignedOutPage};
use super::{Browser, Page, SESSION_COOKIE, check_csrf, csp_source, form_value, signed_in};
use crate::AppState;
use crate::extract::caller::RequestCaller;
use crate::oauth::{form, parse_pairs};
use askama::Template as _;

fn params_of(pairs: &[(String, String)]) -> EndSessionParams {
    let get = |name: &str| form_value(pairs, name).filter(|v| !v.is_empty()).map(str::to_owned);
    EndSessionParams {
        id_token_hint: get("id_token_hint"),
        client_id: get("client_id"),
        post_logout_redirect_uri: get("post_logout_redirect_uri"),
        state: get("state"),
    }
}

fn refused(b: &Browser, e: &EndSessionError) -> Response {
    let message = match e {
        EndSessionError::Store(err) => {
            tracing::warn!(error = %err, "end-session request failed");
            return b.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again shortly",
                "Signing out is not possible right now.",
            );
        }
        EndSessionError::InvalidHint => "The app sent an ID token that was not issued here.",
        EndSessionError::UnknownClient => "The app that sent you here is not registered.",
        EndSessionError::ClientMismatch => "The app's client_id does not match its ID token.",
        EndSessionError::RedirectWithoutClient => {
            "The app asked to send you back without saying which app it is."
        }
        EndSessionError::UnregisteredRedirect => {
            "The app asked to send you back to an address it did not register."
        }
        EndSessionError::TooLong => "The sign-out request is too long.",
    };
    b.error(StatusCode::BAD_REQUEST, "Invalid sign-out request", message)
}

/// `GET /oauth/logout` (parameters in the query) and `POST /oauth/logout` (in the form:
/// an app's own post, or the confirmation form's, which carries `confirm` and the CSRF
/// token).
pub(crate) async fn end_session(
    State(s): State<AppState>,
    RequestCaller(ctx): RequestCaller,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let b = Browser::of(&s, &headers);
    let pairs = if method == Method::POST {
        form(&headers, &body)
    } else {
        parse_pairs(q.as_deref().unwrap_or_default())
    };
    let Some(pairs) = pairs else {
        return b.error(
            StatusCode::BAD_REQUEST,
            "Invalid sign-out request",
            "The request could not be read.",
        );
    };
    if crate::oauth::has_repeats(&pairs, &[]) {
        return b.error(
            StatusCode::BAD_REQUEST,
            "Invalid sign-out request",
            "A parameter was given more than once.",
        );
    }
    let req = match s.service.check_end_session(params_of(&pairs)).await {
        Ok(req) => req,
        Err(e) => return refused(&b, &e),
    };
    let who = signed_in(&s, &headers, &ctx).await;
    let confirmed = method == Method::POST && form_value(&pairs, "confirm") == Some("yes");
    if confirmed && !check_csrf(&s, &headers, form_value(&pairs, "csrf")) {
        return b.error(
            StatusCode::FORBIDDEN,
            "Request refused",
            "This form expired or came from another site. Go back, reload the page and try again.",
        );
    }
    if !confirmed {
        match s.service.end_session_needs_confirmation(&req, who.as_ref()).await {
            Ok(false) => {}
            Ok(true) => return confirmation(&b, &req),
            Err(e) => return refused(&b, &EndSessionError::Store(e)),
        }
    }
    if let Err(e) = s.service.end_session(&req, who.as_ref(), &ctx).await {
        return refused(&b, &EndSessionError::Store(e));
    }
    let mut res = match &req.redirect {
        Some(to) => b.redirect(StatusCode::SEE_OTHER, to),
        None => b.page(Page { status: StatusCode::OK, html: SignedOutPage.render(), form_action: None }),
    };
    if who.is_some() {
        if let Ok(v) = HeaderValue::from_str(&format!("{SESSION_COOKIE}=; Max-Age=0{}", b.cookie_attrs())) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
        // SPEC 5.1: a browser's logout clears what the site left in it.
        res.headers_mut().insert("clear-site-data", HeaderValue::from_static("\"cookies\", \"storage\""));
    }
    res
}

fn confirmation(b: &Browser, req: &EndSession) -> Response {
    let html = LogoutConfirmPage {
        csrf: b.csrf.clone(),
        app_name: req.client.as_ref().map(|c| c.name.clone()),
        params: req.params.to_pairs(),
    }
    .render();
    // The form's answer redirects to the app: `form-action` must allow its origin.
    let form_action = req.redirect.as_deref().and_then(csp_source);
    super::security::no_store(b.page(Page { status: StatusCode::OK, html, form_action }))
}
