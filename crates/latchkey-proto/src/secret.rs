//! Secret newtypes: values that must never be printed, logged or compared in variable time.
//! They have no derived `Debug` or `Serialize`, are read through `expose_secret()` and are
//! zeroized on drop.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

macro_rules! secret_string {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone)]
        pub struct $name(Zeroizing<String>);

        impl $name {
            /// Wraps a secret value.
            pub fn new(value: String) -> Self {
                Self(Zeroizing::new(value))
            }

            /// The secret itself. Call sites are easy to audit by this name.
            pub fn expose_secret(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
            }
        }

        impl Eq for $name {}

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer).map(Self::new)
            }
        }
    };
}

secret_string!(
    /// A user's password as typed. Never stored; hashed with Argon2id.
    Password
);

secret_string!(
    /// An opaque refresh token (`lkr_` + base64url of 256 random bits). Stored only as a hash.
    RefreshToken
);

secret_string!(
    /// A confidential client's secret (`lks_` + base64url of 256 random bits). Stored only
    /// as a hash; shown once, when the client is registered.
    ClientSecret
);

impl RefreshToken {
    /// The prefix that lets secret scanners recognise a leaked Latchkey refresh token.
    pub const PREFIX: &'static str = "lkr_";
}

/// Serializes a refresh token into a token response. This is the only way a refresh token
/// leaves the server, and it is explicit at the field that uses it.
pub fn serialize_refresh_token<S: Serializer>(
    token: &RefreshToken,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    token.expose_secret().serialize(serializer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let p = Password::new("hunter22".into());
        assert_eq!(format!("{p:?}"), "Password([redacted])");
        let t = RefreshToken::new("lkr_abc".into());
        assert!(!format!("{t:?}").contains("abc"));
    }

    #[test]
    fn equality_compares_values() {
        assert_eq!(Password::new("a".into()), Password::new("a".into()));
        assert_ne!(Password::new("a".into()), Password::new("b".into()));
    }
}
