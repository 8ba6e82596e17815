//! Latchkey wire types: the JSON bodies, error codes, token claims and revocation events
//! of SPEC.md sections 3, 5 and 5.4. Shared by the server, `latchkey-verify` and
//! `latchkey-client`. This crate owns parsing at the edge; it must not do I/O.

pub mod auth;
pub mod claims;
pub mod email;
pub mod error;
pub mod events;
pub mod oauth;
pub mod secret;
pub mod username;

pub use email::EmailAddress;
pub use error::{ErrorBody, ErrorCode, ErrorReason, LinkTokenReason, TokenErrorReason};
pub use secret::{LinkKind, LinkToken, MfaToken, OneTimeCode, Password, RefreshToken};
pub use username::Username;
