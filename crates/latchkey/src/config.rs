//! Configuration (SPEC 7): a TOML file, overridden by `LATCHKEY_*` environment variables,
//! overridden by flags. The raw form (`deny_unknown_fields`, so a typo is an error, not a
//! silently ignored setting) becomes typed settings once, at startup. Secrets
//! (`master_key`, the password in `smtp_url`) come from the environment or `*_FILE`, and are
//! never printed.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use latchkey_core::Settings;
use latchkey_core::keys::Algorithm;
use latchkey_core::master_key::MasterKey;
use latchkey_core::risk::RiskPolicy;
use latchkey_core::settings::{
    BindingPolicy, DynamicRegistration, MfaPolicy, Registration, RegistrationEmail,
};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::smtp::{SmtpUrl, check_mail_from};

/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The default database.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://latchkey.db";

/// A duration or number as written in TOML: `"5m"` or `300`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Seconds(u64),
    Text(String),
}

/// A list as written in TOML (`["a", "b"]`) or in the environment (`"a,b"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawList {
    List(Vec<String>),
    Text(String),
}

impl RawList {
    /// The items, trimmed, without empty ones.
    fn items(self) -> Vec<String> {
        let items = match self {
            Self::List(v) => v,
            Self::Text(t) => t.split(',').map(str::to_owned).collect(),
        };
        items.iter().map(|x| x.trim()).filter(|x| !x.is_empty()).map(str::to_owned).collect()
    }
}

/// The file's keys (SPEC 7). Every key is optional; defaults are applied when typing.
// No `Debug`: it holds `master_key`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    issuer: Option<String>,
    database_url: Option<String>,
    audience: Option<String>,
    access_token_ttl: Option<RawDuration>,
    session_idle_ttl: Option<RawDuration>,
    session_max_ttl: Option<RawDuration>,
    refresh_grace: Option<RawDuration>,
    binding: Option<String>,
    dpop_nonce: Option<bool>,
    risk_policy: Option<String>,
    registration: Option<String>,
    registration_email: Option<String>,
    dynamic_registration: Option<String>,
    mfa: Option<String>,
    mfa_required_roles: Option<RawList>,
    access_token_alg: Option<String>,
    id_token_alg: Option<String>,
    key_rotation: Option<RawDuration>,
    key_publish_ahead: Option<RawDuration>,
    trusted_proxies: Option<RawList>,
    master_key: Option<String>,
    log: Option<String>,
    password_hash_concurrency: Option<usize>,
    database_pool_size: Option<u32>,
    registration_per_minute: Option<i64>,
    legacy_master_key: Option<String>,
    smtp_url: Option<String>,
    mail_from: Option<String>,
    smtp_ca_file: Option<String>,
}

/// Overrides from flags.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--issuer`.
    pub issuer: Option<String>,
    /// `--database-url`.
    pub database_url: Option<String>,
}

/// Where mail goes (SPEC 10): set when `smtp_url` is.
#[derive(Clone)]
pub struct MailConfig {
    /// `smtp_url` (its `Debug` and `Display` hide the password).
    pub smtp: SmtpUrl,
    /// `mail_from`, a valid mailbox.
    pub from: String,
    /// `smtp_ca_file`'s PEM, trusted besides the system's roots.
    pub ca_pem: Option<Vec<u8>>,
}

impl MailConfig {
    /// Checks `smtp_url` and `mail_from` (for the configuration loader and tests).
    ///
    /// # Errors
    /// An invalid `smtp_url` or `mail_from`, named without quoting the URL.
    pub fn new(smtp_url: &str, from: &str, ca_pem: Option<Vec<u8>>) -> anyhow::Result<Self> {
        let smtp = SmtpUrl::parse(smtp_url).map_err(|e| anyhow::anyhow!("setting smtp_url: {e}"))?;
        check_mail_from(from).map_err(|e| anyhow::anyhow!("setting mail_from: {e}"))?;
        Ok(Self { smtp, from: from.to_owned(), ca_pem })
    }
}

impl std::fmt::Debug for MailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailConfig")
            .field("smtp", &self.smtp)
            .field("from", &self.from)
            .field("has_ca", &self.ca_pem.is_some())
            .finish()
    }
}

/// Typed configuration.
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// Database URL.
    pub database_url: String,
    /// Connections in the PostgreSQL pool (SQLite has its own fixed threads).
    pub database_pool_size: u32,
    /// Domain settings.
    pub settings: Settings,
    /// Trusted proxies (addresses and CIDR networks).
    pub trusted_proxies: Vec<String>,
    /// The master key, when set; parsed (and a weak one refused) when the configuration
    /// is loaded, so every command refuses it before touching the database.
    pub master_key: Option<MasterKey>,
    /// Log filter.
    pub log: String,
    /// Mail delivery; `None` keeps mail in the outbox (`latchkey mail list`).
    pub mail: Option<MailConfig>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &self.database_url)
            .field("database_pool_size", &self.database_pool_size)
            .field("settings", &self.settings)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("master_key", &self.master_key.as_ref().map(|_| "[redacted]"))
            .field("log", &self.log)
            .field("mail", &self.mail)
            .finish()
    }
}

/// The master key (refused unless it is 32 random bytes in base64), able to open keys an
/// earlier version sealed under `legacy` (that version's configured text, any passphrase).
fn master_key(configured: Option<String>, legacy: Option<String>) -> anyhow::Result<Option<MasterKey>> {
    let configured = configured.map(Zeroizing::new).filter(|k| !k.is_empty());
    let legacy = legacy.map(Zeroizing::new).filter(|k| !k.is_empty());
    match (configured, legacy) {
        (None, None) => Ok(None),
        (None, Some(_)) => {
            bail!("LATCHKEY_LEGACY_MASTER_KEY needs LATCHKEY_MASTER_KEY, the key to seal under")
        }
        (Some(key), legacy) => {
            let key = MasterKey::parse(&key)?;
            Ok(Some(match legacy {
                Some(old) => key.with_legacy_secret(&old),
                None => key,
            }))
        }
    }
}

/// `smtp_url`, `mail_from` and `smtp_ca_file`, checked together: `mail_from` is required with
/// `smtp_url`, and neither of the others means anything without it.
fn mail_config(
    smtp_url: Option<String>,
    from: Option<String>,
    ca_file: Option<String>,
) -> anyhow::Result<Option<MailConfig>> {
    let smtp_url = smtp_url.map(Zeroizing::new).filter(|u| !u.is_empty());
    let Some(smtp_url) = smtp_url else {
        if ca_file.is_some() {
            bail!("setting smtp_ca_file: needs smtp_url");
        }
        return Ok(None);
    };
    let Some(from) = from.filter(|f| !f.trim().is_empty()) else {
        bail!("setting mail_from: required when smtp_url is set (e.g. \"Latchkey <no-reply@example.com>\")");
    };
    let ca_pem = ca_file
        .map(|path| std::fs::read(&path).with_context(|| format!("setting smtp_ca_file: reading {path}")))
        .transpose()?;
    MailConfig::new(&smtp_url, &from, ca_pem).map(Some)
}

/// Parses `300s`, `5m`, `2h`, `14d` or a bare number of seconds.
///
/// # Errors
/// Anything else.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 =
        digits.parse().with_context(|| format!("invalid duration {text:?}: expected e.g. 300s, 5m, 14d"))?;
    let mult = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => bail!("invalid duration unit {other:?} in {text:?}: use s, m, h or d"),
    };
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

fn duration(raw: Option<RawDuration>, key: &str) -> anyhow::Result<Option<Duration>> {
    raw.map(|r| match r {
        RawDuration::Seconds(s) => Ok(Duration::from_secs(s)),
        RawDuration::Text(t) => parse_duration(&t).with_context(|| format!("setting {key}")),
    })
    .transpose()
}

fn algorithm(raw: Option<String>, key: &str, default: Algorithm) -> anyhow::Result<Algorithm> {
    match raw {
        None => Ok(default),
        Some(s) => Algorithm::parse(&s)
            .with_context(|| format!("setting {key}: expected EdDSA, ES256 or RS256, got {s:?}")),
    }
}

/// `risk_policy`: `off`, or the scores from which actions apply, `shorten=3,step_up=5,revoke=7`
/// (an action left out never applies).
fn risk_policy(text: &str) -> anyhow::Result<RiskPolicy> {
    let text = text.trim();
    if text == "off" {
        return Ok(RiskPolicy::OFF);
    }
    if text.is_empty() {
        bail!(
            "setting risk_policy: expected off, or ACTION=SCORE pairs such as shorten=3,step_up=5,revoke=7"
        );
    }
    let mut policy = RiskPolicy::OFF;
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (action, score) = part
            .split_once('=')
            .with_context(|| format!("setting risk_policy: expected ACTION=SCORE, got {part:?}"))?;
        let score: u32 = score
            .trim()
            .parse()
            .ok()
            .filter(|s| *s > 0)
            .with_context(|| format!("setting risk_policy: {part:?} needs a positive score"))?;
        match action.trim() {
            "shorten" => policy.shorten = Some(score),
            "step_up" => policy.step_up = Some(score),
            "revoke" => policy.revoke = Some(score),
            other => bail!("setting risk_policy: expected shorten, step_up or revoke, got {other:?}"),
        }
    }
    // Milder actions from lower scores: a policy that revoked below where it steps up would
    // never step up.
    let set: Vec<u32> = [policy.shorten, policy.step_up, policy.revoke].into_iter().flatten().collect();
    if set.windows(2).any(|w| w.first() >= w.get(1)) {
        bail!("setting risk_policy: scores must rise from shorten to step_up to revoke, got {text:?}");
    }
    Ok(policy)
}

/// Reads `LATCHKEY_<KEY>` for every key, over the file's values.
fn apply_env(raw: &mut RawConfig, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<()> {
    let get = |k: &str| env(&format!("LATCHKEY_{}", k.to_ascii_uppercase()));
    let dur = |k: &str| get(k).map(RawDuration::Text);
    macro_rules! text {
        ($($field:ident),*) => {$(
            if let Some(v) = get(stringify!($field)) { raw.$field = Some(v); }
        )*};
    }
    macro_rules! durations {
        ($($field:ident),*) => {$(
            if let Some(v) = dur(stringify!($field)) { raw.$field = Some(v); }
        )*};
    }
    text!(
        listen,
        issuer,
        database_url,
        audience,
        binding,
        risk_policy,
        registration,
        registration_email,
        dynamic_registration,
        mfa,
        access_token_alg,
        id_token_alg,
        master_key,
        log,
        smtp_url,
        mail_from,
        smtp_ca_file
    );
    durations!(
        access_token_ttl,
        session_idle_ttl,
        session_max_ttl,
        refresh_grace,
        key_rotation,
        key_publish_ahead
    );
    if let Some(v) = get("trusted_proxies") {
        raw.trusted_proxies = Some(RawList::Text(v));
    }
    if let Some(v) = get("mfa_required_roles") {
        raw.mfa_required_roles = Some(RawList::Text(v));
    }
    if let Some(v) = get("dpop_nonce") {
        raw.dpop_nonce = Some(v.parse().context("LATCHKEY_DPOP_NONCE: expected true or false")?);
    }
    if let Some(v) = get("password_hash_concurrency") {
        raw.password_hash_concurrency = Some(v.parse().context("LATCHKEY_PASSWORD_HASH_CONCURRENCY")?);
    }
    if let Some(v) = get("database_pool_size") {
        raw.database_pool_size = Some(v.parse().context("LATCHKEY_DATABASE_POOL_SIZE")?);
    }
    if let Some(v) = get("legacy_master_key") {
        raw.legacy_master_key = Some(v);
    }
    if let Some(v) = get("registration_per_minute") {
        raw.registration_per_minute = Some(v.parse().context("LATCHKEY_REGISTRATION_PER_MINUTE")?);
    }
    if raw.smtp_url.is_none()
        && let Some(path) = get("smtp_url_file")
    {
        let url = std::fs::read_to_string(&path)
            .with_context(|| format!("reading LATCHKEY_SMTP_URL_FILE {path}"))?;
        raw.smtp_url = Some(url.trim_end_matches(['\r', '\n']).to_owned());
    }
    if raw.master_key.is_none()
        && let Some(path) = get("master_key_file")
    {
        let secret = std::fs::read_to_string(&path)
            .with_context(|| format!("reading LATCHKEY_MASTER_KEY_FILE {path}"))?;
        raw.master_key = Some(secret.trim_end_matches(['\r', '\n']).to_owned());
    }
    Ok(())
}

impl Config {
    /// Loads the configuration from an optional file, the process environment and flags.
    ///
    /// # Errors
    /// An unreadable file, an unknown key, or an invalid value (naming the key).
    pub fn load(file: Option<&Path>, flags: &Flags) -> anyhow::Result<Self> {
        Self::load_with(file, flags, &|k| std::env::var(k).ok())
    }

    /// As [`Config::load`], with the environment given (for tests).
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn load_with(
        file: Option<&Path>,
        flags: &Flags,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Self> {
        let mut raw = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                // The error's message and line only: its default form quotes the source line,
                // which could hold the master key.
                toml::from_str::<RawConfig>(&text).map_err(|e| {
                    let line =
                        e.span().map(|s| text.get(..s.start).unwrap_or_default().lines().count().max(1));
                    anyhow::anyhow!(
                        "parsing config file {} (line {}): {}",
                        path.display(),
                        line.map_or_else(|| "?".to_owned(), |l| l.to_string()),
                        e.message()
                    )
                })?
            }
            None => RawConfig::default(),
        };
        apply_env(&mut raw, env)?;
        if let Some(v) = &flags.listen {
            raw.listen = Some(v.clone());
        }
        if let Some(v) = &flags.issuer {
            raw.issuer = Some(v.clone());
        }
        if let Some(v) = &flags.database_url {
            raw.database_url = Some(v.clone());
        }
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawConfig) -> anyhow::Result<Self> {
        let listen_text = raw.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen_text
            .parse()
            .with_context(|| format!("setting listen: {listen_text:?} is not an address:port"))?;
        let issuer = raw.issuer.unwrap_or_else(|| format!("http://{listen}"));
        let issuer = issuer.trim_end_matches('/').to_owned();
        if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
            bail!("setting issuer: {issuer:?} must be an http(s) URL");
        }
        let mut s = Settings::new(issuer);
        if let Some(a) = raw.audience {
            s.audience = a;
        }
        if let Some(d) = duration(raw.access_token_ttl, "access_token_ttl")? {
            s.access_token_ttl = d;
        }
        if let Some(d) = duration(raw.session_idle_ttl, "session_idle_ttl")? {
            s.session_idle_ttl = d;
        }
        if let Some(d) = duration(raw.session_max_ttl, "session_max_ttl")? {
            s.session_max_ttl = d;
        }
        if let Some(d) = duration(raw.refresh_grace, "refresh_grace")? {
            s.refresh_grace = d;
        }
        if let Some(d) = duration(raw.key_rotation, "key_rotation")? {
            s.key_rotation = d;
        }
        if let Some(d) = duration(raw.key_publish_ahead, "key_publish_ahead")? {
            s.key_publish_ahead = d;
        }
        if s.access_token_ttl.is_zero() || s.session_idle_ttl.is_zero() || s.session_max_ttl.is_zero() {
            bail!("access_token_ttl, session_idle_ttl and session_max_ttl must be positive");
        }
        s.binding = match raw.binding.as_deref() {
            None | Some("log") => BindingPolicy::Log,
            Some("off") => BindingPolicy::Off,
            Some("deny") => BindingPolicy::Deny,
            Some(other) => bail!("setting binding: expected off, log or deny, got {other:?}"),
        };
        s.dpop_nonce = raw.dpop_nonce.unwrap_or(false);
        if let Some(text) = raw.risk_policy.as_deref() {
            s.risk = risk_policy(text)?;
        }
        s.registration = match raw.registration.as_deref() {
            None | Some("open") => Registration::Open,
            Some("closed") => Registration::Closed,
            Some(other) => bail!("setting registration: expected open or closed, got {other:?}"),
        };
        s.dynamic_registration = match raw.dynamic_registration.as_deref() {
            None | Some("closed") => DynamicRegistration::Closed,
            Some("token") => DynamicRegistration::Token,
            Some("open") => DynamicRegistration::Open,
            Some(other) => {
                bail!("setting dynamic_registration: expected closed, token or open, got {other:?}")
            }
        };
        s.registration_email = match raw.registration_email.as_deref() {
            None | Some("optional") => RegistrationEmail::Optional,
            Some("required") => RegistrationEmail::Required,
            Some(other) => bail!("setting registration_email: expected optional or required, got {other:?}"),
        };
        s.mfa = MfaPolicy {
            required: match raw.mfa.as_deref() {
                None | Some("optional") => false,
                Some("required") => true,
                Some(other) => bail!("setting mfa: expected optional or required, got {other:?}"),
            },
            required_roles: raw.mfa_required_roles.map(RawList::items).unwrap_or_default(),
        };
        s.access_token_alg = algorithm(raw.access_token_alg, "access_token_alg", Algorithm::EdDSA)?;
        s.id_token_alg = algorithm(raw.id_token_alg, "id_token_alg", Algorithm::RS256)?;
        if let Some(n) = raw.password_hash_concurrency {
            s.password_hash_concurrency = n.max(1);
        }
        if let Some(n) = raw.registration_per_minute {
            if n < 1 {
                bail!("setting registration_per_minute: expected a positive number, got {n}");
            }
            s.throttle.registration_attempts = n;
        }
        let trusted_proxies = raw.trusted_proxies.map(RawList::items).unwrap_or_default();
        latchkey_http::TrustedProxies::parse(&trusted_proxies).map_err(|bad| {
            anyhow::anyhow!("setting trusted_proxies: {bad:?} is not an address or CIDR network")
        })?;
        let mail = mail_config(raw.smtp_url, raw.mail_from, raw.smtp_ca_file)?;
        let database_url = raw.database_url.unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        let master_key = master_key(raw.master_key, raw.legacy_master_key)?;
        // Nonces are an HMAC under a key derived from the master key; without one each node
        // draws its own, and nodes behind one load balancer would refuse each other's.
        if s.dpop_nonce && master_key.is_none() && !database_url.starts_with("sqlite:") {
            bail!("setting dpop_nonce: several nodes need LATCHKEY_MASTER_KEY to share DPoP nonces");
        }
        Ok(Self {
            listen,
            database_url,
            database_pool_size: match raw.database_pool_size {
                None => latchkey_store::DEFAULT_PG_POOL,
                Some(0) => bail!("setting database_pool_size: must be at least 1"),
                Some(n) => n,
            },
            settings: s,
            trusted_proxies,
            master_key,
            log: raw.log.unwrap_or_else(|| "info".to_owned()),
            mail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300s").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("14d").unwrap(), Duration::from_secs(14 * 86_400));
        assert_eq!(parse_duration("42").unwrap(), Duration::from_secs(42));
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn the_risk_policy_reads_thresholds_or_off() {
        let c = Config::load_with(None, &Flags::default(), &no_env).unwrap();
        assert_eq!(c.settings.risk, RiskPolicy::default());
        let env = |k: &str| (k == "LATCHKEY_RISK_POLICY").then(|| "shorten=2, revoke=9".to_owned());
        let c = Config::load_with(None, &Flags::default(), &env).unwrap();
        assert_eq!(c.settings.risk, RiskPolicy { shorten: Some(2), step_up: None, revoke: Some(9) });
        let off = |k: &str| (k == "LATCHKEY_RISK_POLICY").then(|| "off".to_owned());
        assert_eq!(Config::load_with(None, &Flags::default(), &off).unwrap().settings.risk, RiskPolicy::OFF);
        for bad in
            ["shorten", "shorten=0", "panic=3", "revoke=x", "", "shorten=7,revoke=3", "step_up=5,revoke=5"]
        {
            let env = |k: &str| (k == "LATCHKEY_RISK_POLICY").then(|| bad.to_owned());
            assert!(Config::load_with(None, &Flags::default(), &env).is_err(), "{bad}");
        }
    }

    #[test]
    fn dpop_nonces_on_postgresql_need_the_master_key() {
        let env = |k: &str| (k == "LATCHKEY_DPOP_NONCE").then(|| "true".to_owned());
        assert!(Config::load_with(None, &Flags::default(), &env).unwrap().settings.dpop_nonce);
        let pg = Flags { database_url: Some("postgres://127.0.0.1/x".into()), ..Flags::default() };
        let err = Config::load_with(None, &pg, &env).err().unwrap();
        assert!(format!("{err:#}").contains("dpop_nonce"), "{err:#}");
        let bad = |k: &str| (k == "LATCHKEY_DPOP_NONCE").then(|| "yes".to_owned());
        assert!(Config::load_with(None, &Flags::default(), &bad).is_err());
    }

    #[test]
    fn the_mfa_policy_reads_from_the_file_and_the_environment() {
        let c = Config::load_with(None, &Flags::default(), &no_env).unwrap();
        assert_eq!(c.settings.mfa, MfaPolicy::default());
        let env = |k: &str| match k {
            "LATCHKEY_MFA" => Some("required".to_owned()),
            "LATCHKEY_MFA_REQUIRED_ROLES" => Some("admin, ops,".to_owned()),
            _ => None,
        };
        let c = Config::load_with(None, &Flags::default(), &env).unwrap();
        assert!(c.settings.mfa.required);
        assert_eq!(c.settings.mfa.required_roles, ["admin", "ops"]);
        let bad = |k: &str| (k == "LATCHKEY_MFA").then(|| "always".to_owned());
        assert!(Config::load_with(None, &Flags::default(), &bad).is_err());
    }

    #[test]
    fn defaults() {
        let c = Config::load_with(None, &Flags::default(), &no_env).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.settings.issuer, "http://127.0.0.1:8080");
        assert_eq!(c.settings.audience, "http://127.0.0.1:8080");
        assert_eq!(c.database_url, "sqlite://latchkey.db");
        assert_eq!(c.database_pool_size, 16);
        assert_eq!(c.settings.refresh_grace, Duration::from_secs(10));
        assert_eq!(c.settings.binding, BindingPolicy::Log);
        assert!(c.master_key.is_none());
    }

    #[test]
    fn database_pool_size() {
        let env = |v: &'static str| move |k: &str| (k == "LATCHKEY_DATABASE_POOL_SIZE").then(|| v.to_owned());
        assert_eq!(Config::load_with(None, &Flags::default(), &env("4")).unwrap().database_pool_size, 4);
        assert!(Config::load_with(None, &Flags::default(), &env("0")).is_err());
        assert!(Config::load_with(None, &Flags::default(), &env("many")).is_err());
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = std::env::temp_dir().join(format!("latchkey-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("latchkey.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nrefresh_grace = \"3s\"\naccess_token_ttl = 60\nbinding = \"deny\"\ntrusted_proxies = [\"10.0.0.0/8\"]\n").unwrap();
        let env = |k: &str| match k {
            "LATCHKEY_REFRESH_GRACE" => Some("0".to_owned()),
            "LATCHKEY_LISTEN" => Some("127.0.0.1:9001".to_owned()),
            _ => None,
        };
        let flags = Flags { listen: Some("127.0.0.1:9002".into()), ..Flags::default() };
        let c = Config::load_with(Some(&path), &flags, &env).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9002");
        assert_eq!(c.settings.refresh_grace, Duration::ZERO);
        assert_eq!(c.settings.access_token_ttl, Duration::from_secs(60));
        assert_eq!(c.settings.binding, BindingPolicy::Deny);
        assert_eq!(c.trusted_proxies, vec!["10.0.0.0/8".to_owned()]);
        std::fs::write(&path, "lisen = \"typo\"\n").unwrap();
        assert!(Config::load_with(Some(&path), &Flags::default(), &no_env).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn invalid_values_name_the_key() {
        let env = |k: &str| (k == "LATCHKEY_BINDING").then(|| "maybe".to_owned());
        let err = Config::load_with(None, &Flags::default(), &env).unwrap_err();
        assert!(format!("{err:#}").contains("binding"));
        let env = |k: &str| (k == "LATCHKEY_SESSION_IDLE_TTL").then(|| "3 weeks".to_owned());
        assert!(
            format!("{:#}", Config::load_with(None, &Flags::default(), &env).unwrap_err())
                .contains("session_idle_ttl")
        );
    }

    #[test]
    fn mail_settings_come_from_the_environment_and_hide_the_password() {
        let url = "smtp+starttls://mailer:pa%24%24word@mail.example.com:2587";
        let env = |k: &str| match k {
            "LATCHKEY_SMTP_URL" => Some(url.to_owned()),
            "LATCHKEY_MAIL_FROM" => Some("Latchkey <no-reply@example.com>".to_owned()),
            _ => None,
        };
        let c = Config::load_with(None, &Flags::default(), &env).unwrap();
        let mail = c.mail.as_ref().unwrap();
        assert_eq!(mail.smtp.to_string(), "smtp+starttls://mail.example.com:2587");
        assert_eq!(mail.from, "Latchkey <no-reply@example.com>");
        let debug = format!("{c:?}");
        assert!(!debug.contains("pa%24") && !debug.contains("pa$$"), "{debug}");
        assert!(Config::load_with(None, &Flags::default(), &no_env).unwrap().mail.is_none());
    }

    #[test]
    fn smtp_url_needs_mail_from_and_errors_do_not_echo_it() {
        let env =
            |k: &str| (k == "LATCHKEY_SMTP_URL").then(|| "smtp://u:hunter2@mail.example.com".to_owned());
        let err = format!("{:#}", Config::load_with(None, &Flags::default(), &env).unwrap_err());
        assert!(err.contains("mail_from"), "{err}");
        let env = |k: &str| match k {
            "LATCHKEY_SMTP_URL" => Some("smtpx://u:hunter2@mail.example.com".to_owned()),
            "LATCHKEY_MAIL_FROM" => Some("no-reply@example.com".to_owned()),
            _ => None,
        };
        let err = format!("{:#}", Config::load_with(None, &Flags::default(), &env).unwrap_err());
        assert!(err.contains("smtp_url") && !err.contains("hunter2"), "{err}");
        let env = |k: &str| match k {
            "LATCHKEY_SMTP_URL" => Some("smtp://mail.example.com".to_owned()),
            "LATCHKEY_MAIL_FROM" => Some("not a mailbox".to_owned()),
            _ => None,
        };
        let err = format!("{:#}", Config::load_with(None, &Flags::default(), &env).unwrap_err());
        assert!(err.contains("mail_from"), "{err}");
    }

    const KEY: &str = "q3Jb6Xl0tL2S9p+0w6b0Gm1yZk2m3JxM3d8h2Qd0p1U=";

    #[test]
    fn master_key_is_redacted_in_debug() {
        let env = |k: &str| (k == "LATCHKEY_MASTER_KEY").then(|| KEY.to_owned());
        let c = Config::load_with(None, &Flags::default(), &env).unwrap();
        assert!(c.master_key.is_some());
        assert!(!format!("{c:?}").contains(KEY));
    }

    /// Issue 12 (9): anything but 32 random bytes in base64 is refused at start.
    #[test]
    fn weak_master_keys_are_refused() {
        for weak in ["a", "super-secret-value", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="] {
            let env = move |k: &str| (k == "LATCHKEY_MASTER_KEY").then(|| weak.to_owned());
            let err = Config::load_with(None, &Flags::default(), &env).expect_err(weak);
            let message = format!("{err:#}");
            assert!(message.contains("openssl rand -base64 32"), "{message}");
            assert!(!message.contains(weak) || weak == "a", "the key is not echoed: {message}");
        }
    }
}
