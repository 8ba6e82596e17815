//! `latchkey-verify`: what a resource server (an API) needs to accept Latchkey access tokens
//! without asking the server or a database on each request (SPEC 1.3, 5.4, 5.5, 8).
//!
//! - [`Verifier`] checks tokens locally against the published keys (JWKS, cached, refreshed
//!   on an unknown `kid` at most once every few seconds): the algorithm comes from the key,
//!   never the header; `typ` must be `at+jwt`; `iss`, `aud`, `exp` and `iat` are checked
//!   with a small skew.
//! - It follows the server's revocation feed in the background (snapshot, then the SSE
//!   stream with resume, paging `GET /revocations?after=SEQ` while the stream is down), so
//!   logout, theft and role changes take effect at once:
//!   a token whose `sid` or `jti` is revoked is `revoked`; one whose `authz_ver` is below the
//!   user's latest is `claims_stale`. When the feed has been unreachable longer than the
//!   configured limit, tokens are refused (fail closed) unless fail-open was chosen, which
//!   keeps applying the revocations already known.
//! - [`axum`] adapts it: an extractor and a tower layer answering exactly as SPEC 5.5 says.
//!
//! No request I/O happens on the request path for a known key.

pub mod axum;
mod feed;
mod jwks;
mod verifier;

#[doc(hidden)]
pub use feed::Revocations;
pub use verifier::{FeedPolicy, Verified, Verifier, VerifierBuilder, VerifyError};
