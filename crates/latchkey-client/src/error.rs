//! [`Error`]: why a call of the client failed, typed (the server's `error_reason` and
//! `error` codes), and never carrying a token, a secret or a request URL.

use latchkey_proto::{ErrorCode, ErrorReason};

/// Why a call failed. Never carries a token, a secret or a request URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No session: never signed in, signed out, or ended (after the re-auth callback).
    #[error("not signed in")]
    NotSignedIn,
    /// The session ended on the server; the re-auth callback was called with this reason.
    ///
    /// The reason is the server's `error_reason` (SPEC 5.1). Two cases have none, and map to
    /// the nearest one: a refusal whose reason is missing or newer than this client is
    /// [`ErrorReason::UnknownToken`] (the server would not take the refresh token), and a
    /// session without a refresh token (an OAuth grant without `refresh_token`) whose
    /// access token ran out is [`ErrorReason::SessionExpired`] (such a session lives only as
    /// long as its access token).
    #[error("the session ended ({}); sign in again", .0.as_str())]
    Reauth(ErrorReason),
    /// The server found the refresh unusual and waits for the user to sign in again
    /// (`step_up_required`, SPEC 12). The session is kept: call
    /// [`Client::step_up`](crate::Client::step_up) with the password.
    #[error("the server asks the user to sign in again to continue the session")]
    StepUpRequired,
    /// Wrong username or password.
    #[error("wrong username or password")]
    InvalidCredentials,
    /// Too many failed sign-ins; retry after this many seconds.
    #[error("too many attempts; retry after {0} s")]
    Throttled(u64),
    /// Another error answer from the server.
    #[error("the server answered {status} {}", error.map_or("(no error code)", ErrorCode::as_str))]
    Server {
        /// HTTP status.
        status: u16,
        /// The `error` code; `None` when the body had none this client knows (a proxy's
        /// error page, or a code newer than this client).
        error: Option<ErrorCode>,
    },
    /// The URL's origin is neither the issuer's nor one given to
    /// [`ClientBuilder::api_origin`](crate::ClientBuilder::api_origin), so the token was not sent. Nothing was sent at all.
    #[error(
        "refused to send the access token to {origin}: not the issuer's origin nor a configured API origin"
    )]
    OriginNotAllowed {
        /// The refused origin, `scheme://host[:port]` (for a URL that is not http(s), only
        /// `scheme:`). Never the path or query, which are the app's.
        origin: String,
    },
    /// A URL did not parse, or is not one this client can use: the issuer or an API origin
    /// at [`ClientBuilder::build`](crate::ClientBuilder::build), a request URL at [`Client::request`](crate::Client::request) (which is left
    /// out of the message). Nothing was sent.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// A DPoP key could not be made or used.
    #[error("the DPoP key could not be generated or used")]
    Dpop,
    /// The request did not complete (network, timeout, unreadable answer).
    #[error("request failed: {0}")]
    Transport(String),
}

impl Error {
    /// A transport error, without the URL (which is the app's, but need not be logged).
    pub fn transport(e: reqwest::Error) -> Self {
        Self::Transport(e.without_url().to_string())
    }
}
