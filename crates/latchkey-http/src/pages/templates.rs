//! The page templates (askama, compiled into the binary): one struct per template in
//! `templates/`, fields as the templates use them (SPEC 5.3). Values are HTML-escaped by
//! askama, attributes included. This module holds no logic: handlers fill these structs
//! with display-ready strings and render them; it must not reach the domain or the store.
//!
//! Every template extends `base.html`, which links `/static/latchkey.css` and carries no
//! inline style or script, so the pages satisfy the strict Content-Security-Policy and
//! work with JavaScript disabled.

use askama::Template;

/// `GET /login` and a failed `POST /login` (SPEC 5.3).
#[derive(Template)]
#[template(path = "login.html")]
pub(crate) struct LoginPage {
    /// The CSRF token echoed in the form.
    pub(crate) csrf: String,
    /// Where to go after signing in (a local path, already checked by the handler).
    pub(crate) return_to: String,
    /// The username to prefill (empty on a first visit).
    pub(crate) username: String,
    /// Why the last attempt failed, shown with `role="alert"`.
    pub(crate) error: Option<String>,
    /// The app the user is signing in for, when the login interrupts an authorization.
    pub(crate) app_name: Option<String>,
    /// Whether **Sign in with a passkey** is offered (the issuer has a domain name).
    pub(crate) passkeys: bool,
}

/// The second step of a sign-in (SPEC 11): **Authentication code**, **Verify**, and a
/// recovery code instead.
#[derive(Template)]
#[template(path = "mfa.html")]
pub(crate) struct MfaPage {
    /// The CSRF token echoed in the forms.
    pub(crate) csrf: String,
    /// Where to go after signing in (a local path, already checked by the handler).
    pub(crate) return_to: String,
    /// The sign-in's `mfa_token` (it proves only the password, and lives 5 minutes).
    pub(crate) mfa_token: String,
    /// Why the last attempt failed, shown with `role="alert"`.
    pub(crate) error: Option<String>,
    /// The app the user is signing in for, when the sign-in interrupts an authorization.
    pub(crate) app_name: Option<String>,
    /// Whether the user has an authenticator app (the code form).
    pub(crate) has_totp: bool,
    /// Whether the user has a passkey (**Sign in with a passkey**).
    pub(crate) has_passkey: bool,
    /// Whether the user has recovery codes left (**Use a recovery code**).
    pub(crate) has_recovery_codes: bool,
}

/// Setting up an authenticator app (SPEC 11): the QR code and the key as text, and the
/// form for the first code. Used after the password by users who must set one up, and
/// from the account page.
#[derive(Template)]
#[template(path = "totp_setup.html")]
pub(crate) struct TotpSetupPage {
    /// The CSRF token echoed in the form.
    pub(crate) csrf: String,
    /// Where the form posts.
    pub(crate) action: &'static str,
    /// The `otpauth://` URI as an inline SVG QR code (generated here, never user text).
    pub(crate) qr_svg: String,
    /// The key in base32, to type in.
    pub(crate) secret: String,
    /// Hidden fields the form carries back (the key and URI to show again after a wrong
    /// code; `mfa_token` and `return_to` after the password).
    pub(crate) hidden: Vec<(String, String)>,
    /// Why the last attempt failed, shown with `role="alert"`.
    pub(crate) error: Option<String>,
}

/// New recovery codes, shown once.
#[derive(Template)]
#[template(path = "recovery_codes.html")]
pub(crate) struct RecoveryCodesPage {
    /// The codes.
    pub(crate) codes: Vec<String>,
    /// Where **Continue** goes (a local path, already checked by the handler).
    pub(crate) continue_to: String,
}

/// One factor in the account page's Security section.
#[derive(Debug, Clone)]
pub(crate) struct FactorRow {
    /// Its id, for the Remove form.
    pub(crate) id: String,
    /// Its name.
    pub(crate) name: String,
    /// "Authenticator app" or "Passkey".
    pub(crate) kind: &'static str,
    /// When it was added, for display.
    pub(crate) created_at: String,
}

/// One requested scope on the consent page.
#[derive(Debug, Clone)]
pub(crate) struct ScopeLine {
    /// The scope as the protocol names it (`profile`, `notes:read`).
    pub(crate) name: String,
    /// What the scope allows, in plain words.
    pub(crate) description: String,
}

/// `/device` (RFC 8628, SPEC 13): field **Code**, button **Continue**.
#[derive(Template)]
#[template(path = "device.html")]
pub(crate) struct DevicePage {
    /// The CSRF token echoed in the form.
    pub(crate) csrf: String,
    /// The signed-in user's username.
    pub(crate) username: String,
    /// The code to prefill (from `verification_uri_complete`, or the last attempt).
    pub(crate) user_code: String,
    /// Why the last code was not accepted, shown with `role="alert"`.
    pub(crate) error: Option<String>,
}

/// The consent page of `GET /oauth/authorize` (SPEC 5.2, 5.3), and of a device's request.
#[derive(Template)]
#[template(path = "consent.html")]
pub(crate) struct ConsentPage {
    /// Where the form posts: `/oauth/authorize`, or `/device` for a device's request.
    pub(crate) action: &'static str,
    /// The CSRF token echoed in the form.
    pub(crate) csrf: String,
    /// The client's display name.
    pub(crate) app_name: String,
    /// The signed-in user's username.
    pub(crate) username: String,
    /// The scopes the client asks for.
    pub(crate) scopes: Vec<ScopeLine>,
    /// The authorization request's parameters, resubmitted as hidden fields.
    pub(crate) params: Vec<(String, String)>,
}

/// One of the user's sessions on the account page.
#[derive(Debug, Clone)]
pub(crate) struct DeviceRow {
    /// The session id (opaque), used in the revoke form's action.
    pub(crate) id: String,
    /// The device as people name it ("Chrome 156 on Linux"), or "Unknown device".
    pub(crate) description: String,
    /// The raw `User-Agent` the session signed in with (empty when none), for those who
    /// want the detail.
    pub(crate) user_agent: String,
    /// The client IP the session was last seen from.
    pub(crate) ip: String,
    /// When the session began, formatted for display.
    pub(crate) created_at: String,
    /// When the session was last used, formatted for display.
    pub(crate) last_used_at: String,
    /// Whether this is the session viewing the page.
    pub(crate) current: bool,
}

/// One connected app (an OAuth grant, which is a session) on the account page.
#[derive(Debug, Clone)]
pub(crate) struct AppRow {
    /// The client id, used in the revoke form's action.
    pub(crate) client_id: String,
    /// The client's display name.
    pub(crate) name: String,
    /// What the app may access, formatted for display.
    pub(crate) scopes: String,
    /// When the app was connected, formatted for display.
    pub(crate) connected_at: String,
}

/// `GET /account`: the user's devices and connected apps, each with a revoke button
/// (SPEC 5.3).
#[derive(Template)]
#[template(path = "account.html")]
pub(crate) struct AccountPage {
    /// The CSRF token echoed in every form.
    pub(crate) csrf: String,
    /// The signed-in user's username.
    pub(crate) username: String,
    /// The user's sessions.
    pub(crate) devices: Vec<DeviceRow>,
    /// The apps the user has connected.
    pub(crate) apps: Vec<AppRow>,
    /// The outcome of the last action (for example a revocation), shown with `role="status"`.
    pub(crate) notice: Option<String>,
    /// The account's email address as given, if it has one (SPEC 10).
    pub(crate) email: Option<String>,
    /// Whether that address is verified.
    pub(crate) is_email_verified: bool,
    /// The user's second factors (SPEC 11 Security section).
    pub(crate) factors: Vec<FactorRow>,
    /// How many recovery codes are left.
    pub(crate) recovery_codes_left: usize,
    /// Whether **Add a passkey** is offered (the issuer has a domain name).
    pub(crate) passkeys: bool,
}

/// An HTML error page, for example an unknown client or `redirect_uri` at
/// `/oauth/authorize`, which must never redirect (SPEC 5.2).
#[derive(Template)]
#[template(path = "error.html")]
pub(crate) struct ErrorPage {
    /// The heading and page title.
    pub(crate) title: String,
    /// What happened, in plain words.
    pub(crate) message: String,
}

/// The page shown after `POST /logout` (SPEC 5.3).
#[derive(Template)]
#[template(path = "signed_out.html")]
pub(crate) struct SignedOutPage;

/// RP-initiated logout's question (SPEC 13): button **Sign out**, with the request's
/// parameters carried in hidden fields.
#[derive(Template)]
#[template(path = "logout_confirm.html")]
pub(crate) struct LogoutConfirmPage {
    /// The CSRF token echoed in the form.
    pub(crate) csrf: String,
    /// The app asking, when known.
    pub(crate) app_name: Option<String>,
    /// The end-session parameters, as sent.
    pub(crate) params: Vec<(&'static str, String)>,
}

/// `GET /forgot-password`, and the form again after a throttled post (SPEC 10).
#[derive(Template)]
#[template(path = "forgot_password.html")]
pub(crate) struct ForgotPasswordPage {
    /// The CSRF token echoed in the form.
    pub(crate) csrf: String,
    /// The login to prefill (empty on a first visit).
    pub(crate) login: String,
    /// Why the last attempt failed, shown with `role="alert"`.
    pub(crate) error: Option<String>,
}

/// `GET /reset-password?token=`, and the form again after a refused password (SPEC 10).
#[derive(Template)]
#[template(path = "reset_password.html")]
pub(crate) struct ResetPasswordPage {
    /// The CSRF token echoed in the form.
    pub(crate) csrf: String,
    /// The link token, resubmitted as a hidden field.
    pub(crate) token: String,
    /// The shortest password accepted, as the field's `minlength`.
    pub(crate) min_length: usize,
    /// Why the last attempt failed, shown with `role="alert"`.
    pub(crate) error: Option<String>,
}

/// `GET /verify-email?token=`: one button, so that opening the link changes nothing
/// (SPEC 10).
#[derive(Template)]
#[template(path = "verify_email.html")]
pub(crate) struct VerifyEmailPage {
    /// The CSRF token echoed in the form.
    pub(crate) csrf: String,
    /// The link token, resubmitted as a hidden field.
    pub(crate) token: String,
}

/// A page that says what happened and where to go next: the outcomes of the recovery
/// and verification forms, and their refused links.
#[derive(Template)]
#[template(path = "message.html")]
pub(crate) struct MessagePage {
    /// The heading and page title.
    pub(crate) title: String,
    /// What happened, in plain words.
    pub(crate) message: String,
    /// Where to go next (a local path).
    pub(crate) link_href: String,
    /// The link's text.
    pub(crate) link_text: String,
}
