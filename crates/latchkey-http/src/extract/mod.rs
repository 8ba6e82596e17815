//! Extractors that parse requests once, at the edge, and reject malformed ones with the
//! JSON errors of SPEC 5 (never axum's plain-text rejections).

pub(crate) mod bearer;
pub(crate) mod caller;
pub(crate) mod client_auth;
pub(crate) mod dpop;
pub(crate) mod json;
