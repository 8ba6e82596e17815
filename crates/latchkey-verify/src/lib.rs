//! `latchkey-verify`: what a resource server (an API) needs to accept Latchkey access tokens
//! without asking the server or a database on each request (SPEC 1.3, 5.4, 5.5, 8).
//!
//! - [`Verifier`] checks tokens locally against the published keys (JWKS, cached, refreshed
//!   on an unknown `kid` at most once every few seconds): the algorithm comes from the key,
//!   never the header; `typ` must be `at+jwt`; `iss`, `aud`, `exp` and `iat` are checked
//!   with a small skew against the verifier's clock (the system clock, or one a test
//!   injects with [`VerifierBuilder::time_fn`]).
//! - It follows the server's revocation feed in the background (snapshot, then the SSE
//!   stream with resume, paging `GET /revocations?after=SEQ` while the stream is down), so
//!   logout, theft and role changes take effect at once:
//!   a token whose `sid` or `jti` is revoked is `revoked`; one whose `authz_ver` is below the
//!   user's latest is `claims_stale`. When the feed has been unreachable longer than the
//!   configured limit, tokens are refused (fail closed) unless fail-open was chosen, which
//!   keeps applying the revocations already known.
//! - Going without the feed is a choice the code must spell out:
//!   [`VerifierBuilder::build`] refuses ([`BuildError::NoRevocationFeed`]) unless it got
//!   [`VerifierBuilder::feed_credentials`] or [`VerifierBuilder::insecure_without_revocation`].
//! - [`axum`] adapts it: an extractor and a tower layer answering exactly as SPEC 5.5 says,
//!   and guards for roles, scopes, and scopes that only third-party apps need (SPEC 13;
//!   [`Verified::is_first_party`] tells Latchkey's own clients' tokens from apps').
//!
//! **A Tokio runtime is required**, with I/O and time enabled (`#[tokio::main]` has both):
//! `build` fetches the keys with `reqwest` and spawns the feed follower and the scheduled
//! key refresh as Tokio tasks, which end when the [`Verifier`] is dropped. Outside a
//! runtime `build` answers [`BuildError::NoTokioRuntime`].
//!
//! ```no_run
//! # async fn run() -> Result<(), latchkey_verify::BuildError> {
//! use latchkey_verify::Verifier;
//! use latchkey_verify::axum::{AccessToken, Rejection};
//!
//! let verifier = Verifier::builder("https://auth.example.com")
//!     .feed_credentials("feed-client-id", "feed-client-secret") // a client with revocations:read
//!     .build()
//!     .await?;
//! let app: axum::Router = axum::Router::new()
//!     .route("/notes/{id}", axum::routing::delete(|token: AccessToken| async move {
//!         token.require_role("manager")?; // everyone needs the role
//!         token.require_app_scope("notes")?; // apps also need the user's consent
//!         Ok::<_, Rejection>("deleted")
//!     }))
//!     .with_state(verifier);
//! # Ok(()) }
//! ```
//!
//! No request I/O happens on the request path for a known key.

pub mod axum;
mod clock;
mod dpop;
mod feed;
mod jwks;
mod verifier;

#[cfg(test)]
mod tests;

#[doc(hidden)]
pub use feed::Revocations;
pub use jwks::JwksError;
pub use verifier::{
    BuildError, FIRST_PARTY_CLIENT_ID, FeedPolicy, Verified, Verifier, VerifierBuilder, VerifyError,
};
