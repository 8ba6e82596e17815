//! The `EmailAddress` newtype (SPEC 10): an address as the user typed it, parsed once at
//! the edge, with the key that uniqueness and sign-in compare (the address in lower case).
//!
//! The accepted set is deliberately narrow, so that every stored address can be put in a
//! mail header as it is: ASCII `local@domain`, the local part a dot-atom (RFC 5322 §3.2.3),
//! the domain host names of letters, digits and hyphens with at least one dot (or
//! `localhost`), at most 254 characters in all (RFC 5321 §4.5.3.1). Quoted local parts,
//! address literals and non-ASCII addresses are refused.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// A valid email address, stored as given.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct EmailAddress(String);

/// Why an email address was refused. The texts never quote the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailError {
    /// More than 254 characters, or a local part over 64.
    TooLong,
    /// Not `local@domain` with exactly one `@`.
    NotAnAddress,
    /// A character outside the accepted set (white space, control characters, quotes,
    /// brackets, non-ASCII).
    BadCharacter,
    /// The domain is not a host name with a dot (or `localhost`).
    BadDomain,
}

impl fmt::Display for EmailError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TooLong => "email must be at most 254 characters, its local part at most 64",
            Self::NotAnAddress => "email must be an address of the form name@example.com",
            Self::BadCharacter => {
                "email must contain only letters, digits and !#$%&'*+-/=?^_`{|}~. before the @"
            }
            Self::BadDomain => "email must end with a domain name such as example.com",
        })
    }
}

impl std::error::Error for EmailError {}

impl EmailAddress {
    /// The longest address, in characters (RFC 5321 §4.5.3.1).
    pub const MAX_CHARS: usize = 254;
    /// The longest local part (RFC 5321 §4.5.3.1.1).
    const MAX_LOCAL: usize = 64;

    /// Parses an email address.
    ///
    /// # Errors
    /// Returns why the value is not an address Latchkey accepts.
    pub fn parse(value: &str) -> Result<Self, EmailError> {
        if !value.is_ascii() {
            return Err(EmailError::BadCharacter);
        }
        if value.len() > Self::MAX_CHARS {
            return Err(EmailError::TooLong);
        }
        let Some((local, domain)) = value.split_once('@') else {
            return Err(EmailError::NotAnAddress);
        };
        if local.is_empty() || domain.is_empty() || domain.contains('@') {
            return Err(EmailError::NotAnAddress);
        }
        if local.len() > Self::MAX_LOCAL {
            return Err(EmailError::TooLong);
        }
        // An RFC 2047 encoded word (`=?utf-8?b?…?=`) is valid atext, but a mail system that
        // decodes it would deliver elsewhere than the address this server verified.
        if local.contains("=?") {
            return Err(EmailError::BadCharacter);
        }
        let is_atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
        if local.split('.').any(|atom| atom.is_empty() || !atom.chars().all(is_atext)) {
            return Err(if local.chars().all(|c| c == '.' || is_atext(c)) {
                EmailError::NotAnAddress // a leading, trailing or doubled dot
            } else {
                EmailError::BadCharacter
            });
        }
        let is_label = |label: &str| {
            (1..=63).contains(&label.len())
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        let labels: Vec<&str> = domain.split('.').collect();
        let is_host = labels.iter().all(|l| is_label(l))
            && (labels.len() >= 2 || domain.eq_ignore_ascii_case("localhost"))
            && !labels.last().is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()));
        if !is_host {
            return Err(EmailError::BadDomain);
        }
        Ok(Self(value.to_owned()))
    }

    /// The address as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What uniqueness and sign-in compare: the whole address in lower case (SPEC 10:
    /// "compared case-insensitively"). Computed here, once, so that both stores agree.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EmailAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_addresses_as_given() {
        for ok in [
            "alice@example.com",
            "Alice.Smith+tag@Mail.Example.ORG",
            "o'brien@example.ie",
            "x@localhost",
            "a@b-c.example",
            "user@mail.test",
        ] {
            let parsed = EmailAddress::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(parsed.as_str(), ok);
        }
        let a = EmailAddress::parse("Alice@Example.COM").unwrap();
        assert_eq!(a.key(), "alice@example.com");
        assert_eq!(a.key(), EmailAddress::parse("alice@example.com").unwrap().key());
    }

    #[test]
    fn refuses_what_could_not_be_mailed_safely() {
        use EmailError::*;
        for (bad, why) in [
            ("", NotAnAddress),
            ("alice", NotAnAddress),
            ("@example.com", NotAnAddress),
            ("alice@", NotAnAddress),
            ("a@b@example.com", NotAnAddress),
            (".alice@example.com", NotAnAddress),
            ("al..ice@example.com", NotAnAddress),
            ("alice.@example.com", NotAnAddress),
            ("al ice@example.com", BadCharacter),
            ("alice@example.com\r\nBcc: x@evil.test", NotAnAddress),
            ("alice\r\nBcc:x@example.com", BadCharacter),
            ("alice@example.com\r\nBcc: x", BadDomain),
            ("\"al ice\"@example.com", BadCharacter),
            ("<alice@example.com>", BadCharacter),
            ("a,b@example.com", BadCharacter),
            ("zoë@example.com", BadCharacter),
            ("=?utf-8?b?ZXZpbA==?=@example.com", BadCharacter),
            ("a=?x?=@example.com", BadCharacter),
            ("alice@exämple.com", BadCharacter),
            ("alice@example", BadDomain),
            ("alice@[127.0.0.1]", BadDomain),
            ("alice@127.0.0.1", BadDomain),
            ("alice@-example.com", BadDomain),
            ("alice@example..com", BadDomain),
            ("alice@exa_mple.com", BadDomain),
        ] {
            assert_eq!(EmailAddress::parse(bad), Err(why), "{bad:?}");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert_eq!(EmailAddress::parse(&long_local), Err(EmailError::TooLong));
        let long = format!("{}@{}.com", "a".repeat(60), "b".repeat(190));
        assert_eq!(EmailAddress::parse(&long), Err(EmailError::TooLong));
    }

    #[test]
    fn errors_never_quote_the_value() {
        let err = EmailAddress::parse("secret-value").unwrap_err().to_string();
        assert!(!err.contains("secret-value"));
        assert!(err.starts_with("email must"));
    }

    #[test]
    fn deserializes_through_parse() {
        let ok: EmailAddress = serde_json::from_str("\"a@example.com\"").unwrap();
        assert_eq!(ok.as_str(), "a@example.com");
        assert!(serde_json::from_str::<EmailAddress>("\"nope\"").is_err());
    }
}
