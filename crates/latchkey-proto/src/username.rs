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
    /// Contains a control character (including NUL), or one that renders as nothing.
    ControlCharacter,
    /// Starts or ends with white space (`"alice "` would pass for `"alice"`).
    EdgeWhitespace,
}

impl fmt::Display for UsernameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Blank => "username must not be blank",
            Self::TooLong => "username must be at most 255 characters",
            Self::ControlCharacter => "username must not contain control or invisible characters",
            Self::EdgeWhitespace => "username must not start or end with white space",
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

    /// The stricter rules a *new* username must also meet (registration, `user add`): no
    /// character that renders as nothing (default-ignorable code points, blank fillers) and no white
    /// space at either end, so a new name cannot pass for an existing one (`"alice "`,
    /// `"alice"` + a variation selector). Names accepted before these rules still parse
    /// with [`Username::parse`], so their owners can sign in.
    ///
    /// # Errors
    /// Returns why the value may not be a new username.
    pub fn check_new(&self) -> Result<(), UsernameError> {
        let name = self.0.as_str();
        if name.chars().any(is_default_ignorable_or_blank) {
            return Err(UsernameError::ControlCharacter);
        }
        if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
            return Err(UsernameError::EdgeWhitespace);
        }
        Ok(())
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

/// What new usernames may not contain beyond [`is_invisible_format`]: the rest of Unicode's
/// default-ignorable code points (variation selectors, tag characters, the combining
/// grapheme joiner, the Hangul and Khmer fillers, musical-symbol format controls), the
/// other format characters, and the blank braille pattern, which renders as a space.
fn is_default_ignorable_or_blank(c: char) -> bool {
    is_invisible_format(c)
        || matches!(
            c,
            '\u{034F}'
                | '\u{0600}'..='\u{0605}'
                | '\u{06DD}'
                | '\u{070F}'
                | '\u{0890}'..='\u{0891}'
                | '\u{08E2}'
                | '\u{115F}'..='\u{1160}'
                | '\u{17B4}'..='\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{2800}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FFA0}'
                | '\u{FFF0}'..='\u{FFF8}'
                | '\u{110BD}'
                | '\u{110CD}'
                | '\u{13430}'..='\u{1343F}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E0FFF}'
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

    /// Outside review (probe F4): look-alikes of "alice" and names that render blank.
    #[test]
    fn refuses_look_alikes_and_blank_renderings() {
        let new_name = |name: &str| Username::parse(name).and_then(|u| u.check_new());
        for blank in ["\u{3164}", "\u{2800}", "\u{115F}"] {
            assert!(new_name(blank).is_err(), "{blank:?}");
        }
        for look_alike in [
            "alice\u{E0041}",
            "alice\u{1D173}",
            "alice\u{FE0F}",
            "alice\u{034F}",
            "alice\u{180B}",
            "alice\u{17B4}",
            "alice\u{115F}",
        ] {
            assert_eq!(new_name(look_alike), Err(UsernameError::ControlCharacter), "{look_alike:?}");
        }
        for edge in ["alice ", " alice", "alice\u{00A0}", "\u{3000}alice"] {
            assert_eq!(new_name(edge), Err(UsernameError::EdgeWhitespace), "{edge:?}");
            // An existing account with such a name can still sign in.
            assert!(Username::parse(edge).is_ok(), "{edge:?}");
        }
        assert!(new_name("alice smith").is_ok(), "inner spaces stay allowed");
    }
}
