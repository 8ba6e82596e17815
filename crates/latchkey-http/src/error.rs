//! The one place where domain errors become HTTP answers: status, `{error,
//! error_description[, error_reason]}` body, and headers (`WWW-Authenticate`,
//! `Retry-After`). Every domain error enum is matched exhaustively, so a new variant cannot
//! silently become a 500. A 500 says only `server_error` and a request id; the detail goes
//! to the log.

use std::any::Any;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use latchkey_core::StoreError;
use latchkey_core::account::{AccountError, AuthError};
use latchkey_core::clients::ClientError;
use latchkey_core::crypto::new_id;
use latchkey_core::dpop::DpopError;
use latchkey_core::email_verification::EmailError;
use latchkey_core::feed::FeedError;
use latchkey_core::keys::KeyError;
use latchkey_core::login::{LoginError, RegisterError};
use latchkey_core::mfa::MfaError;
use latchkey_core::oauth::{RegistrationError, TokenRequestError, UserinfoError};
use latchkey_core::password::PasswordError;
use latchkey_core::password_reset::ResetError;
use latchkey_core::refresh::RefreshError;
use latchkey_core::step_up::StepUpError;
use latchkey_proto::{ErrorBody, ErrorCode, TokenErrorReason};

/// Every failure a handler can answer with.
#[derive(Debug)]
pub enum ApiError {
    /// Registration.
    Register(RegisterError),
    /// Login.
    Login(LoginError),
    /// Refresh.
    Refresh(RefreshError),
    /// Bearer authentication.
    Auth(AuthError),
    /// Account operations.
    Account(AccountError),
    /// A request rejected before reaching the domain (bad JSON, content type, size).
    Rejected(StatusCode, ErrorCode, String),
    /// A fixed answer.
    Status(StatusCode, ErrorCode, &'static str),
    /// The server cannot serve now.
    Unavailable(String),
    /// No usable Bearer token.
    MissingToken,
    /// Missing or unusable client credentials.
    InvalidClient,
    /// Client registration or authentication.
    Client(ClientError),
    /// The revocation feed.
    Feed(FeedError),
    /// The token, revocation and introspection endpoints.
    Token(TokenRequestError),
    /// Userinfo.
    Userinfo(UserinfoError),
    /// Email verification (SPEC 10).
    Email(EmailError),
    /// Password recovery (SPEC 10).
    Reset(ResetError),
    /// Second factors (SPEC 11).
    Mfa(MfaError),
    /// Step-up (SPEC 12).
    StepUp(StepUpError),
    /// A `DPoP` proof at a token endpoint (SPEC 12): `400`.
    Dpop(DpopError),
    /// A `DPoP` proof that came with an access token (userinfo, the account API): `401`
    /// with a `DPoP` challenge (RFC 9449 §7.1).
    DpopResource(DpopError),
    /// Dynamic client registration (RFC 7591, 7592).
    Registration(RegistrationError),
}

impl ApiError {
    /// `413`: a body over [`crate::BODY_LIMIT`], whoever noticed it first.
    pub(crate) fn body_too_large() -> Self {
        Self::Rejected(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!("The request body is larger than {} bytes.", crate::BODY_LIMIT),
        )
    }
}

macro_rules! from_domain {
    ($($variant:ident($ty:ty)),*) => {$(
        impl From<$ty> for ApiError {
            fn from(e: $ty) -> Self {
                Self::$variant(e)
            }
        }
    )*};
}
from_domain!(Client(ClientError), Feed(FeedError), Token(TokenRequestError), Userinfo(UserinfoError));
from_domain!(
    Register(RegisterError),
    Login(LoginError),
    Refresh(RefreshError),
    Auth(AuthError),
    Account(AccountError),
    Email(EmailError),
    Reset(ResetError),
    Mfa(MfaError),
    Dpop(DpopError),
    StepUp(StepUpError),
    Registration(RegistrationError)
);

fn body(status: StatusCode, body: ErrorBody) -> Response {
    (status, Json(body)).into_response()
}

fn plain(status: StatusCode, code: ErrorCode, description: impl Into<String>) -> Response {
    body(status, ErrorBody::new(code, description))
}

/// `401` with the `DPoP` challenge (RFC 9449 §7.1) for `b`'s error, with `algs`.
fn dpop_refused(b: ErrorBody) -> Response {
    // The body is ours: its error code and description hold no quotes.
    let challenge = format!(
        "DPoP error=\"{}\", error_description=\"{}\", algs=\"{}\"",
        b.error.as_str(),
        b.error_description,
        latchkey_core::dpop::ALGORITHMS.join(" ")
    );
    let mut res = body(StatusCode::UNAUTHORIZED, b);
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

/// 401 `invalid_token` with the RFC 6750 challenge, or RFC 9449's for a token whose DPoP
/// binding failed.
fn invalid_token(reason: TokenErrorReason) -> Response {
    if matches!(reason, TokenErrorReason::DpopRequired | TokenErrorReason::DpopKeyMismatch) {
        return dpop_refused(ErrorBody::invalid_token(reason));
    }
    let b = ErrorBody::invalid_token(reason);
    let challenge = format!("Bearer error=\"invalid_token\", error_description=\"{}\"", b.error_description);
    let mut res = body(StatusCode::UNAUTHORIZED, b);
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

/// 401 for a request without a Bearer token (RFC 6750 §3.1: no error code in the challenge).
fn missing_token() -> Response {
    let mut res =
        plain(StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken, "A Bearer access token is required.");
    res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"latchkey\""));
    res
}

/// A refresh refused (`invalid_grant` with its reason), or failed.
fn refresh(e: &RefreshError) -> Response {
    match e {
        RefreshError::Refused(reason) => {
            body(StatusCode::BAD_REQUEST, ErrorBody::with_reason(ErrorCode::InvalidGrant, *reason))
        }
        RefreshError::ScopeExceeded => {
            plain(StatusCode::BAD_REQUEST, ErrorCode::InvalidScope, "The scope exceeds what was granted.")
        }
        RefreshError::TargetExceeded => plain(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidTarget,
            "The resource was not granted to this session.",
        ),
        RefreshError::Keys(k) => keys(k),
        RefreshError::Store(s) => store(s),
        RefreshError::Sealing => internal(e),
    }
}

/// The `DPoP-Nonce` response header (RFC 9449 §8).
pub(crate) const DPOP_NONCE: &str = "dpop-nonce";

/// A proof refused (`400 invalid_dpop_proof`), or a nonce asked for (`400 use_dpop_nonce`
/// with the nonce to use, RFC 9449 §8).
fn dpop(e: &DpopError) -> Response {
    match e {
        DpopError::Invalid(why) => {
            plain(StatusCode::BAD_REQUEST, ErrorCode::InvalidDpopProof, why.to_string())
        }
        DpopError::Replayed => plain(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidDpopProof,
            "The DPoP proof was used before; make a new one for each request.",
        ),
        DpopError::UseNonce { nonce } => {
            with_nonce(plain(StatusCode::BAD_REQUEST, ErrorCode::UseDpopNonce, USE_NONCE), nonce)
        }
        DpopError::Store(s) => store(s),
    }
}

const USE_NONCE: &str = "Sign the DPoP proof with the nonce in the DPoP-Nonce header.";

/// The answer with the nonce the next proof must carry.
fn with_nonce(mut res: Response, nonce: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(nonce) {
        res.headers_mut().insert(DPOP_NONCE, v);
    }
    res
}

/// `429` for mails asked for too often (SPEC 10).
fn mail_throttled(retry_after: u64) -> Response {
    with_retry_after(
        plain(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooManyRequests,
            format!("Too many emails requested; try again in {retry_after} seconds."),
        ),
        retry_after,
    )
}

/// A sign-in refused, or a second factor asked for.
fn login_error(e: &LoginError) -> Response {
    match e {
        LoginError::InvalidCredentials => {
            plain(StatusCode::UNAUTHORIZED, ErrorCode::InvalidCredentials, "Invalid username or password.")
        }
        LoginError::Throttled { retry_after } => throttled(*retry_after),
        LoginError::MfaRequired { mfa_token, methods } => mfa_required(mfa_token, methods),
        LoginError::MfaEnrolmentRequired { mfa_token } => {
            let answer = latchkey_proto::auth::MfaEnrolmentRequired {
                error: ErrorCode::MfaEnrolmentRequired,
                error_description: "Set up a second factor to sign in: POST /auth/mfa/totp with this mfa_token.",
                mfa_token: latchkey_proto::auth::MfaTokenOut(mfa_token.clone()),
            };
            (StatusCode::FORBIDDEN, Json(answer)).into_response()
        }
        LoginError::Password(p) => password(p),
        LoginError::Keys(k) => keys(k),
        LoginError::Store(s) => store(s),
    }
}

/// `401 mfa_required` with the token and methods (SPEC 11).
fn mfa_required(token: &latchkey_proto::MfaToken, methods: &[latchkey_proto::auth::MfaMethod]) -> Response {
    let answer = latchkey_proto::auth::MfaRequired {
        error: ErrorCode::MfaRequired,
        error_description: "A second factor is required to finish signing in.",
        mfa_token: latchkey_proto::auth::MfaTokenOut(token.clone()),
        methods: methods.to_vec(),
    };
    (StatusCode::UNAUTHORIZED, Json(answer)).into_response()
}

fn with_retry_after(mut res: Response, secs: u64) -> Response {
    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    res
}

/// 401 `invalid_client` with a Basic challenge (RFC 6749 §5.2).
fn invalid_client() -> Response {
    let mut res = plain(StatusCode::UNAUTHORIZED, ErrorCode::InvalidClient, "Client authentication failed.");
    res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"latchkey\""));
    res
}

/// 429 with `Retry-After`.
fn throttled(retry_after: u64) -> Response {
    with_retry_after(
        plain(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooManyRequests,
            format!("Too many failed password attempts; try again in {retry_after} seconds."),
        ),
        retry_after,
    )
}

/// A server fault: log the detail under a request id; answer only the id.
fn internal(detail: &dyn std::fmt::Display) -> Response {
    let request_id = new_id();
    tracing::error!(%request_id, error = %detail, "request failed");
    plain(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::ServerError,
        format!("Internal error; request id {request_id}."),
    )
}

fn unavailable(detail: &dyn std::fmt::Display) -> Response {
    tracing::warn!(error = %detail, "service unavailable");
    with_retry_after(
        plain(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::TemporarilyUnavailable,
            "The service is temporarily unavailable; retry shortly.",
        ),
        1,
    )
}

/// A device's poll without tokens (RFC 8628 §3.5): all `400`.
fn device_wait(why: latchkey_core::store::DeviceWait) -> Response {
    use latchkey_core::store::DeviceWait;
    let (code, description) = match why {
        DeviceWait::Pending => (ErrorCode::AuthorizationPending, "The user has not decided yet; poll again."),
        DeviceWait::SlowDown => {
            (ErrorCode::SlowDown, "Polled too soon; wait 5 seconds longer between polls from now on.")
        }
        DeviceWait::Denied => (ErrorCode::AccessDenied, "The user denied the request."),
        DeviceWait::Expired => (ErrorCode::ExpiredToken, "The device code expired; start again."),
        DeviceWait::Spent => (ErrorCode::InvalidGrant, "The device code was already used."),
        DeviceWait::SignInEnded => {
            (ErrorCode::InvalidGrant, "The sign-in that approved the device has ended.")
        }
    };
    plain(StatusCode::BAD_REQUEST, code, description)
}

/// RFC 7591 §3.2.2 errors; a bad access token is RFC 6750's `401` with its challenge.
fn registration(e: &RegistrationError) -> Response {
    match e {
        RegistrationError::Closed => {
            plain(StatusCode::FORBIDDEN, e.code(), "Dynamic client registration is closed on this server.")
        }
        RegistrationError::InvalidToken => {
            let mut res = plain(
                StatusCode::UNAUTHORIZED,
                e.code(),
                "The access token is missing, unknown, used or expired.",
            );
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
            res
        }
        RegistrationError::InvalidRedirectUri(why) | RegistrationError::InvalidMetadata(why) => {
            plain(StatusCode::BAD_REQUEST, e.code(), why.clone())
        }
        RegistrationError::Store(s) => store(s),
    }
}

fn store(e: &StoreError) -> Response {
    match e {
        StoreError::Unavailable(_) => unavailable(e),
        StoreError::Conflict(_) | StoreError::Backend(_) => internal(e),
    }
}

fn keys(e: &KeyError) -> Response {
    match e {
        KeyError::Store(s) => store(s),
        KeyError::Rejected(_)
        | KeyError::MasterKeyMismatch { .. }
        | KeyError::PlaintextKey { .. }
        | KeyError::MasterKeyRequired
        | KeyError::NoActiveKey(_) => internal(e),
    }
}

fn password(e: &PasswordError) -> Response {
    match e {
        PasswordError::TooShort | PasswordError::TooLong => {
            plain(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, format!("{e}."))
        }
        PasswordError::Overloaded => unavailable(e),
        PasswordError::Hash(_) => internal(e),
    }
}

fn auth(e: &AuthError) -> Response {
    match e {
        AuthError::InvalidToken(reason) => invalid_token(*reason),
        AuthError::NotFirstParty => plain(
            StatusCode::FORBIDDEN,
            ErrorCode::InsufficientScope,
            "An app's access token cannot manage the account.",
        ),
        AuthError::Store(s) => store(s),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Register(e) => match e {
                RegisterError::RegistrationClosed => plain(
                    StatusCode::FORBIDDEN,
                    ErrorCode::RegistrationClosed,
                    "Registration is closed on this server.",
                ),
                RegisterError::UsernameTaken => {
                    plain(StatusCode::CONFLICT, ErrorCode::UsernameTaken, "That username is taken.")
                }
                RegisterError::EmailTaken => plain(
                    StatusCode::CONFLICT,
                    ErrorCode::EmailTaken,
                    "That email address is already in use.",
                ),
                RegisterError::EmailRequired => plain(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidRequest,
                    "Invalid request body: an email address is required.",
                ),
                RegisterError::Throttled { retry_after } => with_retry_after(
                    plain(
                        StatusCode::TOO_MANY_REQUESTS,
                        ErrorCode::TooManyRequests,
                        format!("Too many registration attempts; try again in {retry_after} seconds."),
                    ),
                    *retry_after,
                ),
                RegisterError::InvalidUsername(why) => plain(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidRequest,
                    format!("Invalid request body: {why}."),
                ),
                RegisterError::Password(p) => password(p),
                RegisterError::Store(s) => store(s),
            },
            Self::Login(e) => login_error(e),
            Self::Dpop(e) => dpop(e),
            Self::Registration(e) => registration(e),
            Self::StepUp(e) => match e {
                StepUpError::InvalidToken(reason) => invalid_token(*reason),
                StepUpError::MissingProof(why) => {
                    plain(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, *why)
                }
                StepUpError::InvalidCredentials => plain(
                    StatusCode::UNAUTHORIZED,
                    ErrorCode::InvalidCredentials,
                    "The password or code is wrong.",
                ),
                StepUpError::Throttled { retry_after } => throttled(*retry_after),
                StepUpError::Refresh(r) => refresh(r),
                StepUpError::Store(s) => store(s),
            },
            Self::DpopResource(e) => match e {
                DpopError::Invalid(_) | DpopError::Replayed => {
                    dpop_refused(ErrorBody::new(ErrorCode::InvalidDpopProof, e.to_string()))
                }
                // RFC 9449 §9: a resource asks for a nonce with a 401 and a DPoP challenge.
                DpopError::UseNonce { nonce } => {
                    with_nonce(dpop_refused(ErrorBody::new(ErrorCode::UseDpopNonce, USE_NONCE)), nonce)
                }
                DpopError::Store(s) => store(s),
            },
            Self::Refresh(e) => refresh(e),
            Self::Auth(e) => auth(e),
            Self::Email(e) => match e {
                EmailError::NoAddress => plain(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidRequest,
                    "The account has no email address.",
                ),
                EmailError::Throttled { retry_after } => mail_throttled(*retry_after),
                EmailError::PasswordThrottled { retry_after } => throttled(*retry_after),
                EmailError::Link(reason) => body(StatusCode::BAD_REQUEST, ErrorBody::invalid_link(*reason)),
                EmailError::WrongPassword => plain(
                    StatusCode::FORBIDDEN,
                    ErrorCode::InvalidCredentials,
                    "The current password is wrong.",
                ),
                EmailError::EmailTaken => plain(
                    StatusCode::CONFLICT,
                    ErrorCode::EmailTaken,
                    "That email address is already in use.",
                ),
                EmailError::Password(p) => password(p),
                EmailError::Template(_) => internal(e),
                EmailError::Store(s) => store(s),
            },
            Self::Reset(e) => match e {
                ResetError::Throttled { retry_after } => mail_throttled(*retry_after),
                ResetError::Link(reason) => body(StatusCode::BAD_REQUEST, ErrorBody::invalid_link(*reason)),
                ResetError::Password(p) => password(p),
                ResetError::Template(_) => internal(e),
                ResetError::Store(s) => store(s),
            },
            Self::Mfa(e) => match e {
                MfaError::RecentSignInRequired => plain(
                    StatusCode::FORBIDDEN,
                    ErrorCode::LoginRequired,
                    "Sign in again: changing second factors needs a sign-in within the last 5 minutes.",
                ),
                MfaError::NotEnrolling => plain(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidRequest,
                    "No authenticator app is being set up; start with POST /auth/mfa/totp.",
                ),
                MfaError::WrongCode => {
                    plain(StatusCode::UNAUTHORIZED, ErrorCode::InvalidCredentials, "The code is wrong.")
                }
                MfaError::InvalidMfaToken => plain(
                    StatusCode::UNAUTHORIZED,
                    ErrorCode::InvalidToken,
                    "The mfa_token is expired, used or unknown; sign in again.",
                ),
                MfaError::UnknownFactor => {
                    plain(StatusCode::NOT_FOUND, ErrorCode::NotFound, "No such factor.")
                }
                MfaError::Throttled { retry_after } => with_retry_after(
                    plain(
                        StatusCode::TOO_MANY_REQUESTS,
                        ErrorCode::TooManyRequests,
                        format!("Too many wrong codes; try again in {retry_after} seconds."),
                    ),
                    *retry_after,
                ),
                MfaError::FactorRequired => plain(
                    StatusCode::FORBIDDEN,
                    ErrorCode::InvalidRequest,
                    "Your account must keep a second factor: add another before removing this one.",
                ),
                MfaError::NoFactor => {
                    plain(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, "Set up a second factor first.")
                }
                MfaError::PasskeysUnavailable => plain(
                    StatusCode::NOT_FOUND,
                    ErrorCode::NotFound,
                    "Passkeys are not available here: the server's issuer has no domain name.",
                ),
                MfaError::UnknownChallenge => plain(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidRequest,
                    "The challenge_id is unknown, expired or answered already; start again.",
                ),
                MfaError::PasskeyRefused(why) => {
                    plain(StatusCode::UNAUTHORIZED, ErrorCode::InvalidCredentials, *why)
                }
                MfaError::PasskeyInvalid(why) | MfaError::MissingProof(why) => {
                    plain(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, *why)
                }
                MfaError::PasskeyTaken => plain(
                    StatusCode::CONFLICT,
                    ErrorCode::InvalidRequest,
                    "This passkey is registered already.",
                ),
                MfaError::Sealed | MfaError::Template(_) | MfaError::Internal(_) => internal(e),
                MfaError::Login(l) => login_error(l),
                MfaError::Store(s) => store(s),
            },
            Self::Account(e) => match e {
                AccountError::SessionNotFound => {
                    plain(StatusCode::NOT_FOUND, ErrorCode::NotFound, "No such session.")
                }
                AccountError::Throttled { retry_after } => throttled(*retry_after),
                AccountError::WrongPassword => plain(
                    StatusCode::FORBIDDEN,
                    ErrorCode::InvalidCredentials,
                    "The current password is wrong.",
                ),
                AccountError::Password(p) => password(p),
                AccountError::MissingCredential => plain(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidRequest,
                    "A Bearer access token or a refresh_token is required.",
                ),
                AccountError::Auth(a) => auth(a),
                AccountError::Store(s) => store(s),
            },
            Self::Rejected(status, code, description) => plain(*status, *code, description.clone()),
            Self::Status(status, code, description) => plain(*status, *code, *description),
            Self::Unavailable(detail) => unavailable(detail),
            Self::MissingToken => missing_token(),
            Self::InvalidClient => invalid_client(),
            Self::Client(e) => match e {
                ClientError::AuthenticationFailed | ClientError::UnknownClient(_) => invalid_client(),
                ClientError::Invalid(why) => {
                    plain(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, why.clone())
                }
                ClientError::Store(s) => store(s),
            },
            Self::Feed(e) => match e {
                FeedError::InsufficientScope => plain(
                    StatusCode::FORBIDDEN,
                    ErrorCode::InsufficientScope,
                    "The client lacks the scope revocations:read.",
                ),
                FeedError::TooManyStreams => with_retry_after(
                    plain(
                        StatusCode::TOO_MANY_REQUESTS,
                        ErrorCode::TooManyRequests,
                        "This client holds too many open feed streams; close one first.",
                    ),
                    5,
                ),
                FeedError::Store(s) => store(s),
            },
            Self::Token(e) => match e {
                TokenRequestError::InvalidRequest(why) => {
                    plain(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, *why)
                }
                TokenRequestError::InvalidClient { basic: true } => invalid_client(),
                TokenRequestError::InvalidClient { basic: false } => {
                    plain(StatusCode::UNAUTHORIZED, ErrorCode::InvalidClient, "Client authentication failed.")
                }
                TokenRequestError::InvalidGrant { description, reason } => match reason {
                    Some(r) => {
                        body(StatusCode::BAD_REQUEST, ErrorBody::with_reason(ErrorCode::InvalidGrant, *r))
                    }
                    None => plain(StatusCode::BAD_REQUEST, ErrorCode::InvalidGrant, *description),
                },
                TokenRequestError::UnauthorizedClient(why) => {
                    plain(StatusCode::BAD_REQUEST, ErrorCode::UnauthorizedClient, *why)
                }
                TokenRequestError::InvalidScope(why) => {
                    plain(StatusCode::BAD_REQUEST, ErrorCode::InvalidScope, *why)
                }
                TokenRequestError::InvalidTarget(why) => {
                    plain(StatusCode::BAD_REQUEST, ErrorCode::InvalidTarget, *why)
                }
                TokenRequestError::DeviceWait(why) => device_wait(*why),
                TokenRequestError::RevocationThrottled { retry_after } => with_retry_after(
                    plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        ErrorCode::TemporarilyUnavailable,
                        format!(
                            "Too many token revocations by this client; the token is still valid. \
                             Retry in {retry_after} seconds."
                        ),
                    ),
                    *retry_after,
                ),
                TokenRequestError::Keys(k) => keys(k),
                TokenRequestError::Store(s) => store(s),
                TokenRequestError::Internal => internal(e),
            },
            Self::Userinfo(e) => match e {
                UserinfoError::Auth(a) => auth(a),
                UserinfoError::InsufficientScope => {
                    let mut res = plain(
                        StatusCode::FORBIDDEN,
                        ErrorCode::InsufficientScope,
                        "The access token lacks the openid scope.",
                    );
                    res.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer error=\"insufficient_scope\", scope=\"openid\""),
                    );
                    res
                }
            },
        }
    }
}

/// Answers a panic (which the code is written never to cause) with a JSON 500.
pub(crate) fn panic_response(_err: Box<dyn Any + Send + 'static>) -> Response {
    internal(&"handler panicked")
}
