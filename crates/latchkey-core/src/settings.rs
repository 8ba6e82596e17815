//! Typed settings the domain runs with. The binary builds them once, at startup, from the
//! TOML file, `LATCHKEY_*` variables and flags (SPEC 7); defaults are the safe ones.

use std::time::Duration;

use crate::keys::Algorithm;

/// What to do when a refresh comes from another user agent than the login (SPEC 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingPolicy {
    /// Ignore.
    Off,
    /// Record a `binding_anomaly` security event and continue.
    Log,
    /// Refuse and revoke the session (`binding_mismatch`).
    Deny,
}

/// Who may create users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// `POST /auth/register` is open.
    Open,
    /// Only the CLI creates users.
    Closed,
}

/// Who may register OAuth clients over HTTP (RFC 7591, SPEC 13 `dynamic_registration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DynamicRegistration {
    /// Only the CLI registers clients (the default).
    Closed,
    /// Whoever holds an initial access token from `latchkey client registration-token`.
    Token,
    /// Anyone.
    Open,
}

/// Whether registration asks for an email address (SPEC 10 `registration_email`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationEmail {
    /// An address may be given.
    Optional,
    /// `POST /auth/register` without an address is refused (the CLI may still omit it).
    Required,
}

/// Who must have a second factor (SPEC 11 `mfa`, `mfa_required_roles`). Such a user
/// without one gets no session until they set one up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MfaPolicy {
    /// `mfa = "required"`: every user.
    pub required: bool,
    /// Users with any of these roles, whatever `required` says.
    pub required_roles: Vec<String>,
}

impl MfaPolicy {
    /// Whether a user with these roles must have a second factor.
    pub fn applies_to(&self, roles: &[String]) -> bool {
        self.required || roles.iter().any(|r| self.required_roles.contains(r))
    }
}

/// Login throttling limits (SPEC 5.1, 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Consecutive failures for one account after which it is throttled.
    pub account_failures: i64,
    /// How long after its last failure an account's count is forgotten (a success resets it
    /// at once): failures are "consecutive" until then.
    pub account_window: Duration,
    /// First lockout; doubles with each further failure.
    pub account_lockout: Duration,
    /// Longest lockout.
    pub account_lockout_max: Duration,
    /// Failures from one address, each within `address_window` of the previous one, after
    /// which it is throttled (so any `address_failures` failures within one window are).
    pub address_failures: i64,
    /// The per-address window; the lock lasts this long after the last failure.
    pub address_window: Duration,
    /// Registration attempts from one address (successful or not) in one clock minute,
    /// after which it is throttled until the next (SPEC 10: by default at most 20 a minute).
    /// A taken username answers 409, so without this limit registration is a fast oracle
    /// for which usernames exist.
    pub registration_attempts: i64,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            account_failures: 10,
            account_window: Duration::from_secs(86_400),
            account_lockout: Duration::from_secs(30),
            account_lockout_max: Duration::from_secs(900),
            address_failures: 20,
            address_window: Duration::from_secs(60),
            registration_attempts: 20,
        }
    }
}

/// The domain's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Issuer URL (`iss`).
    pub issuer: String,
    /// Audience (`aud`).
    pub audience: String,
    /// Access-token lifetime.
    pub access_token_ttl: Duration,
    /// Idle timeout; every refresh extends it.
    pub session_idle_ttl: Duration,
    /// Absolute session lifetime.
    pub session_max_ttl: Duration,
    /// The grace window for idempotent rotation; zero disables it.
    pub refresh_grace: Duration,
    /// Binding policy.
    pub binding: BindingPolicy,
    /// Whether DPoP proofs must carry a nonce this server issued (`DPoP-Nonce`, RFC 9449
    /// §8), which bounds a proof made ahead of time to the nonce's few minutes.
    pub dpop_nonce: bool,
    /// What risky refreshes get (SPEC 12, `risk.rs`).
    pub risk: crate::risk::RiskPolicy,
    /// Registration.
    pub registration: Registration,
    /// Whether registration asks for an email address.
    pub registration_email: RegistrationEmail,
    /// Who may register OAuth clients at `/oauth/register`.
    pub dynamic_registration: DynamicRegistration,
    /// Who must have a second factor.
    pub mfa: MfaPolicy,
    /// Access-token signing algorithm.
    pub access_token_alg: Algorithm,
    /// ID-token signing algorithm.
    pub id_token_alg: Algorithm,
    /// How often signing keys rotate.
    pub key_rotation: Duration,
    /// How long a new key is published before it signs.
    pub key_publish_ahead: Duration,
    /// Throttling.
    pub throttle: ThrottlePolicy,
    /// Argon2 hashes in flight at once (default: the number of cores).
    pub password_hash_concurrency: usize,
    /// Allowed clock skew when checking token times.
    pub clock_skew: Duration,
}

impl Settings {
    /// Defaults for an issuer (SPEC 7).
    pub fn new(issuer: impl Into<String>) -> Self {
        let issuer = issuer.into();
        Self {
            audience: issuer.clone(),
            issuer,
            access_token_ttl: Duration::from_secs(300),
            session_idle_ttl: Duration::from_secs(14 * 86_400),
            session_max_ttl: Duration::from_secs(90 * 86_400),
            refresh_grace: Duration::from_secs(10),
            binding: BindingPolicy::Log,
            dpop_nonce: false,
            risk: crate::risk::RiskPolicy::default(),
            registration: Registration::Open,
            registration_email: RegistrationEmail::Optional,
            dynamic_registration: DynamicRegistration::Closed,
            mfa: MfaPolicy::default(),
            access_token_alg: Algorithm::EdDSA,
            id_token_alg: Algorithm::RS256,
            key_rotation: Duration::from_secs(30 * 86_400),
            key_publish_ahead: Duration::from_secs(600),
            throttle: ThrottlePolicy::default(),
            password_hash_concurrency: std::thread::available_parallelism()
                .map(std::num::NonZeroUsize::get)
                .unwrap_or(1),
            clock_skew: Duration::from_secs(30),
        }
    }

    /// How long after a revocation a token it concerns can still be valid: the feed
    /// event's `until` is now plus this.
    pub fn revocation_horizon(&self) -> Duration {
        self.access_token_ttl + self.clock_skew
    }
}
