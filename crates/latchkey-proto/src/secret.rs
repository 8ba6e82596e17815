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

secret_string!(
    /// A link token from a mail (SPEC 10): `lkv_` (verify an address) or `lkp_` (reset a
    /// password) + base64url of 256 random bits. Stored only as a hash; single use.
    LinkToken
);

secret_string!(
    /// The proof that a sign-in's password was right, to be completed with a second factor
    /// (SPEC 11): `lkm_` + base64url of 256 random bits, valid 5 minutes, spent by a
    /// success. Stored only as a hash.
    MfaToken
);

secret_string!(
    /// A code typed by the user: six digits from an authenticator app, or a recovery code.
    OneTimeCode
);

/// What a link token is for, by its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// `lkv_`: verifies an address (also a new address, on an email change). Valid 24 h.
    Verify,
    /// `lkp_`: sets a new password. Valid 30 min.
    Reset,
}

impl LinkKind {
    /// The token prefix of this kind.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Verify => "lkv_",
            Self::Reset => "lkp_",
        }
    }
}

impl LinkToken {
    /// The length of the base64url text after the prefix (32 bytes, unpadded).
    pub const SECRET_CHARS: usize = 43;

    /// What the token is for, when it is well formed: a known prefix and 43 base64url
    /// characters. Anything else can be answered `unknown` without a lookup.
    pub fn kind(&self) -> Option<LinkKind> {
        let s = self.expose_secret();
        [LinkKind::Verify, LinkKind::Reset].into_iter().find(|kind| {
            s.strip_prefix(kind.prefix()).is_some_and(|rest| {
                rest.len() == Self::SECRET_CHARS
                    && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
        })
    }
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
    fn link_tokens_are_told_apart_by_prefix_and_shape() {
        let body = "A".repeat(LinkToken::SECRET_CHARS);
        let token = |s: String| LinkToken::new(s);
        assert_eq!(token(format!("lkv_{body}")).kind(), Some(LinkKind::Verify));
        assert_eq!(token(format!("lkp_{body}")).kind(), Some(LinkKind::Reset));
        for bad in [
            String::new(),
            "lkp_".to_owned(),
            format!("lkr_{body}"),
            format!("lkp_{body}A"),
            format!("lkp_{}", &body[1..]),
            format!("lkp_{}!", &body[1..]),
            format!("LKP_{body}"),
        ] {
            assert_eq!(token(bad.clone()).kind(), None, "{bad:?}");
        }
        assert_eq!(format!("{:?}", token(format!("lkp_{body}"))), "LinkToken([redacted])");
    }

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
