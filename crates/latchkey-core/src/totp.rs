//! Time-based one-time passwords (RFC 6238, SPEC 11): HMAC-SHA-1 over the count of
//! 30-second steps since the Unix epoch, truncated as RFC 4226 section 5.3 says, to 6
//! digits. A code is accepted for the step before, the step of, and the step after the
//! server's clock (one step of drift either way), and each code once: the verifier is given
//! the last step it accepted for the factor and accepts only later ones, so a code seen over
//! a shoulder or replayed from a log is worthless once used.
//!
//! This module is the arithmetic alone; `mfa.rs` builds enrolment, sealed storage and
//! sign-in with a factor on it.

use aws_lc_rs::hmac;
use data_encoding::BASE32_NOPAD;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::clock::Timestamp;

/// The length of a step, in seconds.
pub const STEP_SECS: i64 = 30;
/// Digits in a code.
pub const DIGITS: usize = 6;
/// Bytes in a new secret: 160 bits, the length RFC 4226 recommends and SPEC 11's minimum.
pub const SECRET_BYTES: usize = 20;

/// A TOTP secret. It never appears in `Debug` output.
#[derive(Clone)]
pub struct TotpSecret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(..)")
    }
}

impl TotpSecret {
    /// A new random secret of [`SECRET_BYTES`].
    pub fn generate() -> Self {
        Self(Zeroizing::new(crate::crypto::random_bytes::<SECRET_BYTES>().to_vec()))
    }

    /// A secret from its bytes (as stored, once opened).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(Zeroizing::new(bytes.to_vec()))
    }

    /// A secret from its base32 form (as [`Self::to_base32`] gives it; upper case, no
    /// padding), or `None`.
    pub fn from_base32(text: &str) -> Option<Self> {
        BASE32_NOPAD.decode(text.as_bytes()).ok().map(|bytes| Self::from_bytes(&bytes))
    }

    /// The bytes, for sealing at rest.
    pub fn expose_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The secret in base32 without padding (RFC 4648), as authenticator apps take it typed
    /// in or in an `otpauth://` URI.
    pub fn to_base32(&self) -> String {
        BASE32_NOPAD.encode(&self.0)
    }

    /// The code for `step`: [`DIGITS`] decimal digits, zero-padded.
    pub fn code_at(&self, step: i64) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &self.0);
        let tag = hmac::sign(&key, &step.to_be_bytes());
        let mac = tag.as_ref();
        // RFC 4226 5.3: the low 4 bits of the last byte pick 4 bytes; the top bit is dropped.
        let offset = usize::from(mac.last().copied().unwrap_or(0) & 0x0f);
        let picked: [u8; 4] = mac.get(offset..offset + 4).and_then(|b| b.try_into().ok()).unwrap_or_default();
        let number = u32::from_be_bytes(picked) & 0x7fff_ffff;
        format!("{:0width$}", number % 1_000_000, width = DIGITS)
    }

    /// The step `code` is valid for at `now`, among the one before, the current one and the
    /// one after, if that step is later than `last_used` (the last step accepted for this
    /// secret). White space in the code is ignored (apps show `123 456`). All three steps
    /// are compared, in constant time, whatever the first comparison gives.
    pub fn accepts(&self, code: &str, now: Timestamp, last_used: Option<i64>) -> Option<i64> {
        let typed: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        if typed.len() != DIGITS || !typed.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let current = step_of(now);
        let mut found = None;
        for step in [current - 1, current, current + 1] {
            let is_match = bool::from(self.code_at(step).as_bytes().ct_eq(typed.as_bytes()));
            if is_match && last_used.is_none_or(|used| step > used) && found.is_none() {
                found = Some(step);
            }
        }
        found
    }
}

/// The step a moment falls in.
pub fn step_of(now: Timestamp) -> i64 {
    now.0.div_euclid(STEP_SECS)
}

/// The `otpauth://totp/` URI an authenticator app scans (the Key Uri Format that Google
/// Authenticator defined and the others follow): the label `issuer:account`, the secret,
/// the issuer again, and the parameters spelled out (they are this module's constants).
/// Both names are percent-encoded: an account name is free text.
pub fn otpauth_uri(secret: &TotpSecret, issuer: &str, account: &str) -> String {
    let enc =
        |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        enc(issuer),
        enc(account),
        secret.to_base32(),
        enc(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B: the SHA-1 seed and the 8-digit codes; the last 6 digits of each
    /// are the 6-digit code (the truncation is the same number, reduced mod 10^6).
    const RFC_SEED: &[u8] = b"12345678901234567890";
    const RFC_VECTORS: [(i64, &str); 6] = [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ];

    #[test]
    fn codes_match_the_rfc_6238_test_vectors() {
        let secret = TotpSecret::from_bytes(RFC_SEED);
        for (time, eight) in RFC_VECTORS {
            assert_eq!(secret.code_at(step_of(Timestamp(time))), eight[2..], "T = {time}");
        }
    }

    #[test]
    fn one_step_of_drift_each_way_and_each_code_once() {
        let secret = TotpSecret::from_bytes(RFC_SEED);
        let now = Timestamp(1_111_111_111);
        let step = step_of(now);
        for drift in [-1, 0, 1] {
            let code = secret.code_at(step + drift);
            assert_eq!(secret.accepts(&code, now, None), Some(step + drift), "drift {drift}");
        }
        for far in [-2, 2] {
            assert_eq!(secret.accepts(&secret.code_at(step + far), now, None), None, "drift {far}");
        }
        let code = secret.code_at(step);
        assert_eq!(secret.accepts(&code, now, Some(step)), None, "used once already");
        assert_eq!(secret.accepts(&secret.code_at(step - 1), now, Some(step)), None, "an older one");
        assert_eq!(secret.accepts(&secret.code_at(step + 1), now, Some(step)), Some(step + 1));
    }

    #[test]
    fn only_six_digits_are_a_code() {
        let secret = TotpSecret::from_bytes(RFC_SEED);
        let now = Timestamp(59);
        let code = secret.code_at(step_of(now));
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        assert!(secret.accepts(&spaced, now, None).is_some());
        for bad in ["", "12345", "1234567", "abcdef", "１２３４５６", &format!("{code}0")] {
            assert_eq!(secret.accepts(bad, now, None), None, "{bad:?}");
        }
    }

    #[test]
    fn new_secrets_are_160_random_bits_in_base32_and_uri() {
        let a = TotpSecret::generate();
        assert_eq!(a.expose_bytes().len(), 20);
        assert_ne!(a.expose_bytes(), TotpSecret::generate().expose_bytes());
        assert_eq!(a.to_base32().len(), 32);
        assert_eq!(
            TotpSecret::from_bytes(b"12345678901234567890").to_base32(),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
        let uri = otpauth_uri(&a, "Latchkey", "ann & bo:x");
        assert!(uri.starts_with("otpauth://totp/Latchkey:ann%20%26%20bo%3Ax?secret="), "{uri}");
        assert!(uri.ends_with("&issuer=Latchkey&algorithm=SHA1&digits=6&period=30"), "{uri}");
        assert!(!format!("{a:?}").contains(&a.to_base32()));
    }
}
