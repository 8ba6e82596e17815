//! Queued mail at rest. Until it is sent, a queued mail's bodies carry its link token,
//! while the link token itself is stored only hashed (SPEC 10). With a master key
//! configured (SPEC 3), the bodies are therefore stored sealed, under a key derived from
//! it for this purpose alone and bound to the recipient, so a copy of the database (a
//! backup, a replica, a stolen file) holds no usable link, and a sealed body moved to
//! another recipient's row opens as nothing. Without a master key they are stored as they
//! are, like the signing keys.
//!
//! A sealed body is `lkm1.` and base64url(nonce, ciphertext, tag); any other stored body is
//! plain text (mail queued before a master key was set), which opens as it is.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::master_key::MasterKey;

/// What starts a sealed body. No template starts so: they start with `Hello,` or a doctype.
const SEALED_PREFIX: &str = "lkm1.";

/// A stored body that this process cannot open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealedBodyError {
    /// It is sealed, and no master key is configured.
    #[error("the mail is sealed under a master key and none is configured")]
    NoMasterKey,
    /// It is sealed under another master key, for another recipient, or was altered.
    #[error("the mail is sealed under another master key or was altered")]
    WontOpen,
}

/// The body to store for `recipient`: sealed when there is a master key.
pub(crate) fn seal_body(master: Option<&MasterKey>, recipient: &str, body: String) -> String {
    match master.and_then(|key| key.seal_mail(recipient, body.as_bytes())) {
        Some(sealed) => format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(sealed)),
        // Sealing fails only if the system's random source does; the link is stored as a
        // signing key would be without a master key, rather than losing the mail.
        None => body,
    }
}

/// The body a stored one holds.
///
/// # Errors
/// [`SealedBodyError`] for a sealed body this process cannot open.
pub(crate) fn open_body(
    master: Option<&MasterKey>,
    recipient: &str,
    stored: &str,
) -> Result<String, SealedBodyError> {
    let Some(sealed) = stored.strip_prefix(SEALED_PREFIX) else { return Ok(stored.to_owned()) };
    let key = master.ok_or(SealedBodyError::NoMasterKey)?;
    let bytes = URL_SAFE_NO_PAD.decode(sealed).map_err(|_| SealedBodyError::WontOpen)?;
    let plain = key.open_mail(recipient, &bytes).ok_or(SealedBodyError::WontOpen)?;
    String::from_utf8(plain.to_vec()).map_err(|_| SealedBodyError::WontOpen)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "q4nBnBvNTVGlYVR5bW0mWg0Xo1s6f2y9P8fQcR7kJ1E=";
    const OTHER: &str = "2H0pL8sVx3mQ9eT1wZ7uK5nR4bY6cA0dF2gJ8hM1oPs=";

    #[test]
    fn sealed_bodies_open_only_for_their_recipient_and_key() {
        let key = MasterKey::parse(KEY).unwrap();
        let body = "Hello,\n\nhttp://x/reset-password?token=lkp_secret\n".to_owned();
        let stored = seal_body(Some(&key), "a@example.com", body.clone());
        assert!(stored.starts_with(SEALED_PREFIX) && !stored.contains("lkp_"), "{stored}");
        assert_eq!(open_body(Some(&key), "a@example.com", &stored), Ok(body.clone()));
        assert_eq!(open_body(Some(&key), "b@example.com", &stored), Err(SealedBodyError::WontOpen));
        let other = MasterKey::parse(OTHER).unwrap();
        assert_eq!(open_body(Some(&other), "a@example.com", &stored), Err(SealedBodyError::WontOpen));
        assert_eq!(open_body(None, "a@example.com", &stored), Err(SealedBodyError::NoMasterKey));
        let mut altered = stored.clone();
        altered.pop();
        altered.push(if stored.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(open_body(Some(&key), "a@example.com", &altered), Err(SealedBodyError::WontOpen));
        assert_eq!(open_body(Some(&key), "a@example.com", "lkm1.!!"), Err(SealedBodyError::WontOpen));
    }

    #[test]
    fn without_a_master_key_bodies_are_stored_and_read_as_they_are() {
        let stored = seal_body(None, "a@example.com", "Hello,".to_owned());
        assert_eq!(stored, "Hello,");
        let key = MasterKey::parse(KEY).unwrap();
        assert_eq!(open_body(Some(&key), "a@example.com", &stored), Ok("Hello,".to_owned()));
    }

    #[test]
    fn a_sealed_signing_key_copied_into_the_outbox_does_not_open() {
        let key = MasterKey::parse(KEY).unwrap();
        let sealed_key = key.encrypt(b"pkcs8 of a signing key").unwrap();
        let stored = format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(sealed_key));
        assert_eq!(open_body(Some(&key), "", &stored), Err(SealedBodyError::WontOpen));
    }
}
