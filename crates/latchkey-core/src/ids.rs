//! The ids and values that cross the storage port and could be swapped for one another if
//! they were all strings: [`UserId`], [`ClientId`], [`SessionId`], [`RedirectUri`] and
//! [`Scope`]. Each wraps an already-accepted `String` (read from the store, made by the
//! domain, or parsed at the edge), so that `find_consent(client_id, user_id)` does not
//! compile.
//!
//! These types do not parse or validate wire input: that stays at the edge (extractors,
//! `check_authorize`, the CLI's registration checks). They deliberately have no
//! `Deref<Target = str>`, which would let one id pass for another through `&str`; reach the
//! text with `as_str()`. The wire types in `latchkey-proto` stay plain strings.

use std::fmt;

/// One string newtype: the derives, `new`, `as_str`, `into_string`, `Display`, the
/// conversions from `String` and `&str`, and comparison with a `str` (for constants such as
/// the first-party client id).
macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps an already-accepted value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The value as an owned `String` (for the wire types).
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self(value)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

string_newtype! {
    /// A user's opaque id (the `sub` claim).
    UserId
}

string_newtype! {
    /// An OAuth client's id (RFC 6749 §2.2), the first-party client's included.
    ClientId
}

string_newtype! {
    /// A session's opaque id (the `sid` claim).
    SessionId
}

string_newtype! {
    /// A redirect URI exactly as registered or as an authorization request named it
    /// (RFC 6749 §3.1.2); compared as a whole string, never normalised.
    RedirectUri
}

string_newtype! {
    /// A scope value (RFC 6749 §3.3): scope names delimited by single spaces, in the order
    /// they were granted. A session's or code's granted scope, the scopes a client is
    /// registered for and the scopes a user has consented to are all one.
    Scope
}

/// The empty scope (no names), as a missing consent grants.
impl Default for Scope {
    fn default() -> Self {
        Self(String::new())
    }
}

impl Scope {
    /// The scope value made of `names`, in order, joined by single spaces.
    pub fn from_names<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut value = String::new();
        for name in names {
            if !value.is_empty() {
                value.push(' ');
            }
            value.push_str(name.as_ref());
        }
        Self(value)
    }

    /// The scope names, in order (empty names from stray spaces are skipped).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.split(' ').filter(|name| !name.is_empty())
    }

    /// Whether `name` is one of the scope names.
    pub fn contains(&self, name: &str) -> bool {
        self.names().any(|n| n == name)
    }

    /// Whether every name of `other` is one of this scope's names.
    pub fn covers(&self, other: &Scope) -> bool {
        other.names().all(|name| self.contains(name))
    }

    /// Whether there are no scope names.
    pub fn is_empty(&self) -> bool {
        self.names().next().is_none()
    }

    /// This scope with the names of `other` it lacks appended, in their order, once each.
    #[must_use]
    pub fn union(&self, other: &Scope) -> Scope {
        let mut names: Vec<&str> = self.names().collect();
        for name in other.names() {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        Scope::from_names(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_names_and_membership() {
        let scope = Scope::from("openid  profile");
        assert_eq!(scope.names().collect::<Vec<_>>(), ["openid", "profile"]);
        assert!(scope.contains("profile"));
        assert!(!scope.contains("prof"));
        assert!(!scope.contains(""));
        assert!(scope.covers(&Scope::from("profile")));
        assert!(scope.covers(&Scope::from("")));
        assert!(!scope.covers(&Scope::from("profile roles")));
        assert!(Scope::from(" ").is_empty());
        assert!(Scope::default().covers(&Scope::from(" ")) && !Scope::default().covers(&scope));
        assert_eq!(Scope::from_names(["a", "b"]), Scope::from("a b"));
        assert_eq!(Scope::from("a b").union(&Scope::from("c b c")), Scope::from("a b c"));
    }

    #[test]
    fn ids_print_as_their_text() {
        let id = UserId::from("u1");
        assert_eq!(id.to_string(), "u1");
        assert_eq!(id, "u1");
        assert_eq!(serde_json::to_string(&ClientId::from("c")).ok().as_deref(), Some("\"c\""));
    }
}
