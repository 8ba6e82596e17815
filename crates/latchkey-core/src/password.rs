//! Password hashing with Argon2id (OWASP: m=19 MiB, t=2, p=1), run on the blocking pool
//! with bounded concurrency so a login flood cannot starve refreshes (PERF-FACTS: one hash
//! costs ~22 ms of a core). Unknown users are checked against a dummy hash so that their
//! timing matches a wrong password.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Argon2, Params, Version};
use latchkey_proto::Password;
use tokio::sync::Semaphore;

use crate::crypto::random_bytes;

/// Shortest password, in bytes (SPEC 5.1).
pub const MIN_PASSWORD_BYTES: usize = 8;
/// Longest password, in bytes (SPEC 5.1, 8).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Why hashing or checking a password failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    /// Fewer than 8 bytes.
    #[error("password must be at least 8 bytes")]
    TooShort,
    /// More than 1 KiB.
    #[error("password must be at most 1024 bytes")]
    TooLong,
    /// Too many hashes are waiting; try again shortly.
    #[error("too many password checks in progress")]
    Overloaded,
    /// The hashing library failed.
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Checks the length rules for a new password.
///
/// # Errors
/// [`PasswordError::TooShort`] or [`PasswordError::TooLong`].
pub fn check_new_password(password: &Password) -> Result<(), PasswordError> {
    let len = password.expose_secret().len();
    if len < MIN_PASSWORD_BYTES {
        Err(PasswordError::TooShort)
    } else if len > MAX_PASSWORD_BYTES {
        Err(PasswordError::TooLong)
    } else {
        Ok(())
    }
}

fn argon2() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(19 * 1024, 2, 1, None).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(Argon2::new(argon2::Algorithm::Argon2id, Version::V0x13, params))
}

fn hash_blocking(password: &[u8]) -> Result<String, PasswordError> {
    let salt =
        SaltString::encode_b64(&random_bytes::<16>()).map_err(|e| PasswordError::Hash(e.to_string()))?;
    argon2()?
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

fn verify_blocking(password: &[u8], phc: &str) -> bool {
    // Verification uses the parameters recorded in the hash itself.
    PasswordHash::new(phc).is_ok_and(|parsed| Argon2::default().verify_password(password, &parsed).is_ok())
}

/// The bounded password-hashing pool.
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    dummy_hash: String,
}

impl PasswordHasher {
    /// A pool running at most `concurrency` hashes at once, with at most 64 per slot
    /// waiting (beyond that, [`PasswordError::Overloaded`]: the server answers 503 with
    /// `Retry-After` rather than queue without bound).
    ///
    /// # Errors
    /// When the dummy hash cannot be computed.
    pub fn new(concurrency: usize) -> Result<Self, PasswordError> {
        let concurrency = concurrency.max(1);
        let dummy_hash = hash_blocking(&random_bytes::<16>())?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(concurrency)),
            waiting: AtomicUsize::new(0),
            max_waiting: concurrency * 64,
            dummy_hash,
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(PasswordError::Overloaded);
        }
        let guard = Waiting(&self.waiting);
        let permit =
            Arc::clone(&self.permits).acquire_owned().await.map_err(|_| PasswordError::Overloaded)?;
        drop(guard);
        tokio::task::spawn_blocking(move || {
            let out = job();
            drop(permit);
            out
        })
        .await
        .map_err(|e| PasswordError::Hash(e.to_string()))
    }

    /// Hashes a new password.
    ///
    /// # Errors
    /// Policy violations, overload, or a library failure.
    pub async fn hash(&self, password: &Password) -> Result<String, PasswordError> {
        check_new_password(password)?;
        let bytes = zeroize::Zeroizing::new(password.expose_secret().as_bytes().to_vec());
        self.run(move || hash_blocking(&bytes)).await?
    }

    /// Checks a password against a stored hash, or against the dummy hash when there is no
    /// user, so both cost the same.
    ///
    /// # Errors
    /// [`PasswordError::TooLong`] (refused before hashing), overload.
    pub async fn verify(&self, password: &Password, phc: Option<&str>) -> Result<bool, PasswordError> {
        if password.expose_secret().len() > MAX_PASSWORD_BYTES {
            return Err(PasswordError::TooLong);
        }
        let bytes = zeroize::Zeroizing::new(password.expose_secret().as_bytes().to_vec());
        let (phc, is_real) = match phc {
            Some(p) => (p.to_owned(), true),
            None => (self.dummy_hash.clone(), false),
        };
        let ok = self.run(move || verify_blocking(&bytes, &phc)).await?;
        Ok(ok && is_real)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let h = PasswordHasher::new(1).unwrap();
        let pw = Password::new("correct horse".into());
        let phc = h.hash(&pw).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(h.verify(&pw, Some(&phc)).await.unwrap());
        assert!(!h.verify(&Password::new("wrong horse".into()), Some(&phc)).await.unwrap());
        assert!(!h.verify(&pw, None).await.unwrap());
        assert!(!h.verify(&pw, Some("not a hash")).await.unwrap());
    }

    #[tokio::test]
    async fn length_rules() {
        let h = PasswordHasher::new(1).unwrap();
        assert_eq!(h.hash(&Password::new("short".into())).await, Err(PasswordError::TooShort));
        let long = Password::new("x".repeat(1025));
        assert_eq!(h.hash(&long).await, Err(PasswordError::TooLong));
        assert_eq!(h.verify(&long, None).await, Err(PasswordError::TooLong));
        assert!(check_new_password(&Password::new("x".repeat(1024))).is_ok());
    }
}
