//! Latchkey's domain: users, sessions, refresh-token rotation with reuse detection and a
//! grace window, signing keys, login throttling and password hashing (SPEC 3, 4, 5.1, 8).
//!
//! It talks to the world only through its ports, [`store::Store`], [`clock::Clock`] and (for
//! mail going out) [`outbox::MailTransport`].
//! It must not know about HTTP, SQL or the process it runs in.

pub mod account;
pub mod admin;
pub mod backchannel;
pub mod caller;
pub mod client_assertion;
pub mod clients;
pub mod clock;
pub mod crypto;
pub mod device;
pub mod dpop;
pub mod email_verification;
pub mod feed;
pub mod feed_hub;
pub mod ids;
pub mod keys;
pub mod link;
pub mod login;
pub mod mail;
pub mod mail_seal;
pub mod master_key;
pub mod metrics;
pub mod mfa;
pub mod mfa_enrolment;
pub mod oauth;
pub mod outbox;
pub mod passkey;
pub mod password;
pub mod password_reset;
pub mod refresh;
pub mod risk;
pub mod service;
pub mod settings;
pub mod step_up;
pub mod store;
pub mod throttle;
pub mod token_cache;
pub mod tokens;
pub mod totp;
pub mod web;

pub use caller::Caller;
pub use clock::{Clock, SystemClock, Timestamp};
pub use ids::{ClientId, RedirectUri, Scope, SessionId, UserId};
pub use service::Latchkey;
pub use settings::Settings;
pub use store::{Store, StoreError};
