//! The `Username` newtype: 1-255 characters of printable Unicode, not blank (SPEC 5.1).
//! Parsed once at the edge; everything behind it can trust the value.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// A valid username.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Username(String);

/// Why a username was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsernameError {
    /// Empty or only white space.
    Blank,
    /// More than 255 characters.
    TooLong,
    /// Contains a control character (including NUL).
    ControlCharacter,
}

impl fmt::Display for UsernameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Blank => "username must not be blank",
            Self::TooLong => "username must be at most 255 characters",
            Self::ControlCharacter => "username must not contain control characters",
        })
    }
}

impl std::error::Error for UsernameError {}

impl Username {
    /// The longest username, in characters.
    pub const MAX_CHARS: usize = 255;

    /// Parses a username.
    ///
    /// # Errors
    /// Returns why the value is not a valid username.
    pub fn parse(value: &str) -> Result<Self, UsernameError> {
        if value.trim().is_empty() {
            return Err(UsernameError::Blank);
        }
        if value.chars().count() > Self::MAX_CHARS {
            return Err(UsernameError::TooLong);
        }
        if value.chars().any(|c| c.is_control() || is_invisible_format(c)) {
            return Err(UsernameError::ControlCharacter);
        }
        Ok(Self(value.to_owned()))
    }

    /// The username as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Characters that render as nothing or reorder text, and so make look-alike usernames:
/// format characters (bidi controls and isolates, zero-width characters, soft hyphen), line
/// and paragraph separators, and private-use code points. They are "printable" to no user.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{E000}'..='\u{F8FF}'
            | '\u{F0000}'..='\u{10FFFF}'
    )
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Username {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_printable_unicode() {
        assert!(Username::parse("alice").is_ok());
        assert!(Username::parse("Zoë Ωmega 名前").is_ok());
        assert!(Username::parse(&"é".repeat(255)).is_ok());
    }

    #[test]
    fn refuses_bad_values() {
        assert_eq!(Username::parse(""), Err(UsernameError::Blank));
        assert_eq!(Username::parse("   "), Err(UsernameError::Blank));
        assert_eq!(Username::parse(&"a".repeat(256)), Err(UsernameError::TooLong));
        assert_eq!(Username::parse("a\0b"), Err(UsernameError::ControlCharacter));
        assert_eq!(Username::parse("a\nb"), Err(UsernameError::ControlCharacter));
        assert_eq!(Username::parse("a\u{202E}b"), Err(UsernameError::ControlCharacter));
        for sneaky in ["a\u{2066}b", "a\u{2028}b", "a\u{00AD}b", "a\u{E000}b", "a\u{061C}b"] {
            assert_eq!(Username::parse(sneaky), Err(UsernameError::ControlCharacter), "{sneaky:?}");
        }
    }
}
