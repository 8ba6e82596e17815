//! `/device`, the device flow's page (RFC 8628 §3.3, SPEC 13): in a signed-in browser the
//! user types the code (**Code**, **Continue**), sees what the app on the device asks for,
//! and allows or denies it. Not signed in: to the sign-in page and back, the code kept.
//! Wrong codes are throttled by `Latchkey::find_device_request`.

use askama::Template as _;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use latchkey_core::oauth::{DeviceError, form_encode};
use latchkey_core::web::SignedIn;

use super::templates::{ConsentPage, DevicePage, MessagePage, ScopeLine};
use super::{Browser, Page, checked_form, form_value, signed_in};
use crate::AppState;
use crate::extract::caller::RequestCaller;
use crate::oauth::parse_pairs;

/// The longest code echoed back into the form.
const MAX_TYPED: usize = 20;

fn code_form(b: &Browser, who: &SignedIn, status: StatusCode, typed: &str, error: Option<&str>) -> Response {
    let html = DevicePage {
        csrf: b.csrf.clone(),
        username: who.user().username.clone(),
        user_code: typed.chars().filter(|c| !c.is_control()).take(MAX_TYPED).collect(),
        error: error.map(str::to_owned),
    }
    .render();
    b.page(Page { status, html, form_action: None })
}

fn to_sign_in(b: &Browser, typed: Option<&str>) -> Response {
    let back = match typed {
        Some(code) => format!("/device?user_code={}", form_encode(code)),
        None => "/device".to_owned(),
    };
    b.redirect(StatusCode::SEE_OTHER, &format!("/login?return_to={}", form_encode(&back)))
}

/// `GET /device[?user_code=…]`.
pub(crate) async fn device_page(
    State(s): State<AppState>,
    RequestCaller(ctx): RequestCaller,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let b = Browser::of(&s, &headers);
    let pairs = parse_pairs(q.as_deref().unwrap_or_default()).unwrap_or_default();
    let typed = form_value(&pairs, "user_code").filter(|c| c.len() <= MAX_TYPED);
    match signed_in(&s, &headers, &ctx).await {
        Some(who) => code_form(&b, &who, StatusCode::OK, typed.unwrap_or_default(), None),
        None => to_sign_in(&b, typed),
    }
}

/// `POST /device`: the code (then the consent page), or the consent's Allow or Deny.
pub(crate) async fn device_post(
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
    let typed = form_value(&pairs, "user_code").unwrap_or_default();
    let Some(who) = signed_in(&s, &headers, &ctx).await else {
        return to_sign_in(&b, Some(typed).filter(|t| t.len() <= MAX_TYPED));
    };
    let result = match form_value(&pairs, "decision") {
        None => match s.service.find_device_request(&who, typed, &ctx).await {
            Ok(req) => {
                let html = ConsentPage {
                    action: "/device",
                    csrf: b.csrf.clone(),
                    app_name: req.client.name.clone(),
                    username: who.user().username.clone(),
                    scopes: req
                        .scopes
                        .into_iter()
                        .map(|x| ScopeLine { name: x.name, description: x.description })
                        .collect(),
                    params: vec![("user_code".to_owned(), req.user_code)],
                }
                .render();
                return b.page(Page { status: StatusCode::OK, html, form_action: None });
            }
            Err(e) => Err(e),
        },
        Some(decision) => {
            let allow = decision == "allow";
            s.service.decide_device_request(&who, typed, allow).await.map(|()| allow)
        }
    };
    match result {
        Ok(allowed) => {
            let (title, message) = if allowed {
                ("Device connected", "The device is signed in. You can return to it now.")
            } else {
                ("Request denied", "The device was not given access. You can close this page.")
            };
            let html = MessagePage {
                title: title.to_owned(),
                message: message.to_owned(),
                link_href: "/account".to_owned(),
                link_text: "Your account".to_owned(),
            }
            .render();
            b.page(Page { status: StatusCode::OK, html, form_action: None })
        }
        Err(DeviceError::WrongCode) => code_form(
            &b,
            &who,
            StatusCode::BAD_REQUEST,
            typed,
            Some("That code is not valid, or it has expired. Check the code on your device and try again."),
        ),
        Err(DeviceError::Throttled { retry_after }) => {
            let message = format!("Too many wrong codes. Try again in {retry_after} seconds.");
            let mut res = b.error(StatusCode::TOO_MANY_REQUESTS, "Try again later", &message);
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
            res
        }
        Err(DeviceError::Store(e)) => {
            tracing::warn!(error = %e, "device page failed");
            b.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again shortly",
                "The code cannot be checked right now.",
            )
        }
    }
}
