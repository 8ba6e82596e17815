//! Mail delivery over SMTP (SPEC 10): [`SmtpUrl`] parses `smtp_url`, and [`SmtpMailer`] sends
//! one message (a plain-text and an HTML part) through lettre, sorting failures into
//! [`DeliveryError::Transient`] (try again later) and [`DeliveryError::Permanent`].
//!
//! This is the only file that may use `lettre`. It must not read the wall clock (the caller
//! passes the `Date`), log, or let the SMTP password reach an error text or a `Debug` output.
//! The schemes mean exactly one thing each: `smtp://` is plain text, `smtp+starttls://`
//! requires STARTTLS (a server that does not offer it fails the delivery; there is no
//! fallback to plain text), and `smtps://` is TLS from the first byte. Certificates are
//! checked against the system's roots plus an optional extra CA (`smtp_ca_file`).
//! [`SmtpMailer`] is the outbox sender's transport (`latchkey_core::outbox::MailTransport`).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use latchkey_core::outbox::{MailTransport, OutgoingMail};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::{Category, Severity};
use lettre::transport::smtp::{Error as SmtpError, PoolConfig};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use zeroize::Zeroizing;

/// How long one SMTP command may take before the delivery counts as a transient failure.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// At most this many connections to the mail server are kept open (the outbox sender is a
/// single worker, so a few suffice).
const POOL_SIZE: u32 = 4;

/// How the connection to the mail server is secured, one per scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtp://`: plain text, no TLS at all.
    Plain,
    /// `smtp+starttls://`: plain text upgraded with STARTTLS, which the server must offer.
    StartTls,
    /// `smtps://`: TLS from the first byte.
    ImplicitTls,
}

impl SmtpSecurity {
    /// The URL scheme.
    pub fn scheme(self) -> &'static str {
        match self {
            Self::Plain => "smtp",
            Self::StartTls => "smtp+starttls",
            Self::ImplicitTls => "smtps",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Self::Plain => 25,
            Self::StartTls => 587,
            Self::ImplicitTls => 465,
        }
    }
}

/// `smtp_url`, parsed: `SCHEME://[USER:PASSWORD@]HOST[:PORT]` with the schemes of
/// [`SmtpSecurity`], an IPv6 host in brackets, and the user and password percent-encoded.
/// `Debug` and `Display` never show the password.
#[derive(Clone)]
pub struct SmtpUrl {
    security: SmtpSecurity,
    /// The host name or IP address, without the brackets of an IPv6 literal.
    host: String,
    port: u16,
    credentials: Option<(String, Zeroizing<String>)>,
}

/// Why `smtp_url` was refused. The texts never quote the URL, since it may hold a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpUrlError {
    /// Not `smtp://`, `smtp+starttls://` or `smtps://`.
    Scheme,
    /// The host is missing or is not a host name or IP address.
    Host,
    /// The port is not a number from 1 to 65535.
    Port,
    /// There is a path, a query or a fragment.
    PathQueryOrFragment,
    /// A user without a password, a password without a user, or bad percent-encoding.
    Credentials,
}

impl fmt::Display for SmtpUrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Scheme => "smtp_url must start with smtp://, smtp+starttls:// or smtps://",
            Self::Host => "smtp_url has no valid host (an IPv6 address goes in brackets)",
            Self::Port => "smtp_url has an invalid port (1 to 65535)",
            Self::PathQueryOrFragment => {
                "smtp_url must not have a path, query or fragment (percent-encode `/`, `?` and `#` \
                 in the user and password)"
            }
            Self::Credentials => {
                "smtp_url's credentials must be USER:PASSWORD@, both non-empty and validly \
                 percent-encoded UTF-8"
            }
        })
    }
}

impl std::error::Error for SmtpUrlError {}

impl SmtpUrl {
    /// Parses `smtp_url` (SPEC 10).
    ///
    /// # Errors
    /// [`SmtpUrlError`] naming what is wrong, without quoting the input.
    pub fn parse(url: &str) -> Result<Self, SmtpUrlError> {
        let (scheme, rest) = url.split_once("://").ok_or(SmtpUrlError::Scheme)?;
        let security = match scheme.to_ascii_lowercase().as_str() {
            "smtp" => SmtpSecurity::Plain,
            "smtp+starttls" => SmtpSecurity::StartTls,
            "smtps" => SmtpSecurity::ImplicitTls,
            _ => return Err(SmtpUrlError::Scheme),
        };
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        // A lone trailing `/` is an empty path, which is harmless; anything more is refused.
        if !tail.is_empty() && tail != "/" {
            return Err(SmtpUrlError::PathQueryOrFragment);
        }
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        let credentials = userinfo.map(parse_credentials).transpose()?;
        let (host, port) = parse_host_port(host_port)?;
        Ok(Self { security, host, port: port.unwrap_or(security.default_port()), credentials })
    }

    /// How the connection is secured.
    pub fn security(&self) -> SmtpSecurity {
        self.security
    }

    /// The host name or IP address (an IPv6 address without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, the scheme's default (25, 587, 465) when the URL gave none.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The SMTP user, if the URL has credentials.
    pub fn user(&self) -> Option<&str> {
        self.credentials.as_ref().map(|(user, _)| user.as_str())
    }

    /// Whether the URL has credentials.
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// Whether the host is a loopback address or `localhost` (plain SMTP with credentials
    /// to anything else deserves a warning at start).
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// `SCHEME://HOST:PORT`, without the credentials: what a log line may show.
impl fmt::Display for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.security.scheme();
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpUrl")
            .field("security", &self.security)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user())
            .field("password", &self.credentials.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

fn parse_credentials(userinfo: &str) -> Result<(String, Zeroizing<String>), SmtpUrlError> {
    let (user, password) = userinfo.split_once(':').ok_or(SmtpUrlError::Credentials)?;
    let user = percent_decode(user).ok_or(SmtpUrlError::Credentials)?;
    let password = percent_decode(password).ok_or(SmtpUrlError::Credentials)?;
    if user.is_empty() || password.is_empty() {
        return Err(SmtpUrlError::Credentials);
    }
    Ok((user.to_string(), password))
}

/// Decodes `%XX` escapes; `None` for a bad escape or bytes that are not UTF-8. The result is
/// zeroized on drop, since it may be the password.
fn percent_decode(s: &str) -> Option<Zeroizing<String>> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(s.len()));
    let mut input = s.bytes();
    while let Some(b) = input.next() {
        if b == b'%' {
            let hex = |c: Option<u8>| char::from(c?).to_digit(16);
            let (hi, lo) = (hex(input.next())?, hex(input.next())?);
            bytes.push(u8::try_from(hi * 16 + lo).ok()?);
        } else {
            bytes.push(b);
        }
    }
    let text = std::str::from_utf8(&bytes).ok()?;
    Some(Zeroizing::new(text.to_owned()))
}

fn parse_host_port(host_port: &str) -> Result<(String, Option<u16>), SmtpUrlError> {
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (v6, after) = bracketed.split_once(']').ok_or(SmtpUrlError::Host)?;
        let v6: Ipv6Addr = v6.parse().map_err(|_| SmtpUrlError::Host)?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(SmtpUrlError::Port)?),
        };
        (v6.to_string(), port)
    } else {
        let (host, port) = match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        };
        let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
        if host.is_empty() || !host.chars().all(is_name_char) {
            return Err(SmtpUrlError::Host);
        }
        (host.to_owned(), port)
    };
    let port = match port {
        None => None,
        Some(digits) => {
            let valid = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
            let port = digits.parse::<u16>().ok().filter(|&p| valid && p != 0);
            Some(port.ok_or(SmtpUrlError::Port)?)
        }
    };
    Ok((host, port))
}

/// Why a mailer could not be built from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailConfigError {
    /// `smtp_url` is invalid.
    Url(SmtpUrlError),
    /// `mail_from` is not a valid mailbox (`addr@host` or `Name <addr@host>`).
    MailFrom,
    /// The extra CA is not a PEM certificate.
    CaCertificate,
    /// The TLS settings could not be built (the text is lettre's, which holds no secret).
    Tls(String),
}

impl fmt::Display for MailConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Url(e) => e.fmt(f),
            Self::MailFrom => f.write_str("mail_from must be an address like `Name <user@example.com>`"),
            Self::CaCertificate => f.write_str("smtp_ca_file must hold a PEM certificate"),
            Self::Tls(e) => write!(f, "the SMTP TLS settings cannot be built: {e}"),
        }
    }
}

impl std::error::Error for MailConfigError {}

impl From<SmtpUrlError> for MailConfigError {
    fn from(e: SmtpUrlError) -> Self {
        Self::Url(e)
    }
}

pub use latchkey_core::outbox::DeliveryError;

/// Checks `mail_from` (`addr@host` or `Name <addr@host>`) when the configuration is loaded.
///
/// # Errors
/// [`MailConfigError::MailFrom`].
pub fn check_mail_from(from: &str) -> Result<(), MailConfigError> {
    from.parse::<Mailbox>().map(|_| ()).map_err(|_| MailConfigError::MailFrom)
}

/// Sends mail through one SMTP server, keeping a small pool of connections.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// To scrub from error texts, in case a server echoes what it was sent.
    password: Option<Zeroizing<String>>,
    /// For `Debug`: the URL without credentials.
    endpoint: String,
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpMailer").field("endpoint", &self.endpoint).field("from", &self.from).finish()
    }
}

impl SmtpMailer {
    /// A mailer for `url`, sending as `from` (`mail_from`), trusting the system's roots plus
    /// `extra_root_ca_pem` (`smtp_ca_file`), and greeting the server as `hello_name` (the
    /// issuer's host). No connection is made until the first message.
    ///
    /// Call it inside the Tokio runtime: lettre's connection pool starts its cleanup task here
    /// (outside a runtime, lettre panics).
    ///
    /// # Errors
    /// [`MailConfigError`] when `from` is not a mailbox or the CA is not a PEM certificate.
    pub fn new(
        url: &SmtpUrl,
        from: &str,
        extra_root_ca_pem: Option<&[u8]>,
        hello_name: &str,
    ) -> Result<Self, MailConfigError> {
        let from: Mailbox = from.parse().map_err(|_| MailConfigError::MailFrom)?;
        let tls = match url.security {
            SmtpSecurity::Plain => Tls::None,
            SmtpSecurity::StartTls => Tls::Required(tls_parameters(&url.host, extra_root_ca_pem)?),
            SmtpSecurity::ImplicitTls => Tls::Wrapper(tls_parameters(&url.host, extra_root_ca_pem)?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(url.host.as_str())
            .port(url.port)
            .tls(tls)
            .timeout(Some(COMMAND_TIMEOUT))
            .hello_name(client_id(hello_name))
            .pool_config(PoolConfig::new().max_size(POOL_SIZE));
        if let Some((user, password)) = &url.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.to_string()));
        }
        Ok(Self {
            transport: builder.build(),
            from,
            password: url.credentials.as_ref().map(|(_, password)| password.clone()),
            endpoint: url.to_string(),
        })
    }

    /// Sends one `multipart/alternative` message (a `text` and an `html` part) to `to`, with
    /// this `Message-ID` (`<id@host>`, stable across retries so a receiver can drop a
    /// duplicate) and `Date` (seconds since the Unix epoch, from the caller's clock).
    ///
    /// # Errors
    /// [`DeliveryError::Permanent`] for an invalid `to` or a `5xx` reply about the message;
    /// [`DeliveryError::Transient`] for everything worth retrying (see [`DeliveryError`]).
    pub async fn send(
        &self,
        to: &str,
        subject: &str,
        text: &str,
        html: &str,
        message_id: &str,
        date_unix_secs: i64,
    ) -> Result<(), DeliveryError> {
        let to: Mailbox =
            to.parse().map_err(|_| DeliveryError::Permanent("the recipient address is invalid".into()))?;
        let date = u64::try_from(date_unix_secs)
            .ok()
            .and_then(|secs| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
            .ok_or_else(|| DeliveryError::Permanent("the message date is out of range".into()))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(message_id.to_owned()))
            .date(date)
            .multipart(MultiPart::alternative_plain_html(text.to_owned(), html.to_owned()))
            .map_err(|e| DeliveryError::Permanent(format!("the message cannot be built: {e}")))?;
        self.transport.send(message).await.map(|_| ()).map_err(|e| self.classify(&e))
    }

    /// Sorts a lettre error into transient and permanent, with a text that holds no password.
    fn classify(&self, e: &SmtpError) -> DeliveryError {
        let mut text = e.to_string();
        if let Some(password) = &self.password {
            text = text.replace(password.as_str(), "[redacted]");
        }
        let is_auth_refused = e.status().is_some_and(|code| {
            code.severity == Severity::PermanentNegativeCompletion && code.category == Category::Unspecified3
        });
        if e.is_permanent() && !is_auth_refused {
            DeliveryError::Permanent(text)
        } else {
            DeliveryError::Transient(text)
        }
    }
}

/// The outbox sender's transport (`latchkey_core::outbox`).
#[async_trait]
impl MailTransport for SmtpMailer {
    async fn send(&self, mail: &OutgoingMail<'_>) -> Result<(), DeliveryError> {
        SmtpMailer::send(self, mail.to, mail.subject, mail.text, mail.html, mail.message_id, mail.date.0)
            .await
    }
}

/// TLS settings for `host`: the system's roots plus the extra CA, if any.
fn tls_parameters(host: &str, extra_root_ca_pem: Option<&[u8]>) -> Result<TlsParameters, MailConfigError> {
    let mut builder = TlsParameters::builder(host.to_owned());
    if let Some(pem) = extra_root_ca_pem {
        // lettre accepts input without any certificate in it, which would silently trust
        // nothing extra; refuse that instead.
        let has_certificate = pem.windows(CERT_MARK.len()).any(|w| w == CERT_MARK);
        let certificate = Certificate::from_pem(pem).map_err(|_| MailConfigError::CaCertificate)?;
        if !has_certificate {
            return Err(MailConfigError::CaCertificate);
        }
        builder = builder.add_root_certificate(certificate);
    }
    builder.build_rustls().map_err(|e| MailConfigError::Tls(e.to_string()))
}

const CERT_MARK: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// The EHLO argument: an address literal for an IP, else the name.
fn client_id(hello_name: &str) -> ClientId {
    match hello_name.trim_matches(['[', ']']).parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ClientId::Ipv4(ip),
        Ok(IpAddr::V6(ip)) => ClientId::Ipv6(ip),
        Err(_) => ClientId::Domain(hello_name.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr:t@pw";

    #[test]
    fn schemes_default_ports_and_hosts_parse() {
        let url = SmtpUrl::parse("smtp://mail.example.com").unwrap();
        assert_eq!((url.security(), url.host(), url.port()), (SmtpSecurity::Plain, "mail.example.com", 25));
        let url = SmtpUrl::parse("smtp+starttls://mail.example.com").unwrap();
        assert_eq!((url.security(), url.port()), (SmtpSecurity::StartTls, 587));
        let url = SmtpUrl::parse("SMTPS://mail.example.com:2465/").unwrap();
        assert_eq!((url.security(), url.port()), (SmtpSecurity::ImplicitTls, 2465));
        let url = SmtpUrl::parse("smtps://[::1]:1465").unwrap();
        assert_eq!((url.host(), url.port(), url.is_loopback()), ("::1", 1465, true));
        assert_eq!(url.to_string(), "smtps://[::1]:1465");
        let url = SmtpUrl::parse("smtp://127.0.0.1:2525").unwrap();
        assert!(url.is_loopback() && !url.has_credentials());
        assert!(!SmtpUrl::parse("smtp://mail.example.com").unwrap().is_loopback());
    }

    #[test]
    fn credentials_are_percent_decoded() {
        let url = SmtpUrl::parse("smtp+starttls://al%40x:s3cr%3At%40pw@mail.example.com:2587").unwrap();
        assert_eq!(url.user(), Some("al@x"));
        let (_, password) = url.credentials.as_ref().unwrap();
        assert_eq!(password.as_str(), SECRET);
        assert_eq!((url.host(), url.port()), ("mail.example.com", 2587));
        // An unencoded `@` in the password still splits at the last one.
        let url = SmtpUrl::parse("smtp://u:p@ss@h").unwrap();
        assert_eq!(url.credentials.as_ref().unwrap().1.as_str(), "p@ss");
        // Non-ASCII UTF-8 works.
        let url = SmtpUrl::parse("smtp://%C3%A9:%E2%82%AC@h").unwrap();
        assert_eq!((url.user(), url.credentials.as_ref().unwrap().1.as_str()), (Some("é"), "€"));
    }

    #[test]
    fn invalid_urls_are_refused_with_the_reason() {
        let cases = [
            ("mail.example.com", SmtpUrlError::Scheme),
            ("http://mail.example.com", SmtpUrlError::Scheme),
            ("smtp+tls://mail.example.com", SmtpUrlError::Scheme),
            ("smtp://", SmtpUrlError::Host),
            ("smtp://:25", SmtpUrlError::Host),
            ("smtp://bad host", SmtpUrlError::Host),
            ("smtp://[::1", SmtpUrlError::Host),
            ("smtp://[not-v6]:25", SmtpUrlError::Host),
            ("smtp://::1:25", SmtpUrlError::Host),
            ("smtp://h:", SmtpUrlError::Port),
            ("smtp://h:0", SmtpUrlError::Port),
            ("smtp://h:65536", SmtpUrlError::Port),
            ("smtp://h:+25", SmtpUrlError::Port),
            ("smtp://[::1]x", SmtpUrlError::Port),
            ("smtp://h/path", SmtpUrlError::PathQueryOrFragment),
            ("smtp://h?tls=required", SmtpUrlError::PathQueryOrFragment),
            ("smtp://h#f", SmtpUrlError::PathQueryOrFragment),
            ("smtp://user@h", SmtpUrlError::Credentials),
            ("smtp://:pw@h", SmtpUrlError::Credentials),
            ("smtp://user:@h", SmtpUrlError::Credentials),
            ("smtp://user:%zz@h", SmtpUrlError::Credentials),
            ("smtp://user:%ff@h", SmtpUrlError::Credentials),
            ("smtp://user:%4@h", SmtpUrlError::Credentials),
        ];
        for (url, want) in cases {
            assert_eq!(SmtpUrl::parse(url).unwrap_err(), want, "{url}");
        }
    }

    #[tokio::test]
    async fn errors_debug_and_display_never_show_the_password() {
        let encoded = "s3cr%3At%40pw";
        for url in [
            format!("smtp://user:{encoded}@h/path"),
            format!("smtp://user:{encoded}@h:99999"),
            format!("smtp://user:{encoded}@bad host"),
            format!("smtpx://user:{encoded}@h"),
            format!("smtp://user:{SECRET}@h?x"),
            format!("smtp://user:{SECRET}%zz@h"),
        ] {
            let text = SmtpUrl::parse(&url).unwrap_err().to_string();
            for secret in [SECRET, encoded, "s3cr"] {
                assert!(!text.contains(secret), "{text}");
            }
            assert!(text.contains("smtp_url"), "{text}");
        }
        let url = SmtpUrl::parse(&format!("smtps://user:{encoded}@h")).unwrap();
        for text in [format!("{url:?}"), url.to_string()] {
            assert!(!text.contains("s3cr"), "{text}");
        }
        assert!(format!("{url:?}").contains("[redacted]"));
        assert_eq!(url.to_string(), "smtps://h:465");
        let mailer = SmtpMailer::new(&url, "a@b.example", None, "latchkey.test").unwrap();
        assert!(!format!("{mailer:?}").contains("s3cr"));
    }

    #[tokio::test]
    async fn the_mailer_checks_mail_from_and_the_ca() {
        let url = SmtpUrl::parse("smtps://h").unwrap();
        assert!(SmtpMailer::new(&url, "Latchkey <no-reply@latchkey.test>", None, "x").is_ok());
        assert_eq!(
            SmtpMailer::new(&url, "not an address", None, "x").unwrap_err(),
            MailConfigError::MailFrom
        );
        let err = SmtpMailer::new(&url, "a@b.example", Some(b"not pem"), "x").unwrap_err();
        assert_eq!(err, MailConfigError::CaCertificate);
    }

    #[test]
    fn hello_names_become_address_literals_for_ips() {
        assert_eq!(client_id("127.0.0.1").to_string(), "[127.0.0.1]");
        assert_eq!(client_id("[::1]").to_string(), "[IPv6:::1]");
        assert_eq!(client_id("latchkey.example").to_string(), "latchkey.example");
    }
}
