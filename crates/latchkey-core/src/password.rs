//! Password hashing with Argon2id (OWASP: m=19 MiB, t=2, p=1) on its own small pool of
//! threads, off the async runtime, with bounded concurrency and a bounded queue, so a login
//! flood cannot starve refreshes (PERF-FACTS: one hash costs ~22 ms of a core). The hashing
//! threads run at a lower CPU priority (nice 10): when the machine is busy, refreshes and
//! API calls go first and logins take longer; when it is idle, logins get the whole core.
//! Unknown users are checked against a dummy hash so that their timing matches a wrong
//! password.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Argon2, Params, Version};
use latchkey_proto::Password;

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

/// Checks a password; a stored value that is not a hash (a user created without a
/// password) is checked against the dummy hash instead, so it costs the same.
fn verify_blocking(password: &[u8], phc: &str, dummy: &str) -> bool {
    // Verification uses the parameters recorded in the hash itself.
    let check = |hash: &PasswordHash<'_>| Argon2::default().verify_password(password, hash).is_ok();
    match PasswordHash::new(phc) {
        Ok(parsed) => check(&parsed),
        Err(_) => {
            let _ = PasswordHash::new(dummy).map(|d| check(&d));
            false
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The niceness of the hashing threads (0 is normal, 19 the lowest priority).
const HASHING_NICENESS: i32 = 10;

/// Lowers the calling thread's CPU priority. Best effort: where the OS refuses, hashing runs
/// at normal priority, which is still off the async runtime and bounded.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), HASHING_NICENESS) {
        tracing::debug!(error = %e, "could not lower the password-hashing thread's priority");
    }
}

/// The bounded password-hashing pool.
pub struct PasswordHasher {
    jobs: mpsc::Sender<Job>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: usize,
    dummy_hash: String,
}

impl PasswordHasher {
    /// A pool of `concurrency` hashing threads, with at most 64 requests per thread queued
    /// or running (beyond that, [`PasswordError::Overloaded`]: the server answers 503 with
    /// `Retry-After` rather than queue without bound).
    ///
    /// # Errors
    /// When the threads cannot start or the dummy hash cannot be computed.
    pub fn new(concurrency: usize) -> Result<Self, PasswordError> {
        let concurrency = concurrency.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..concurrency {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("latchkey-argon2-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        // The lock is held only while taking a job, never while hashing.
                        let job = match rx.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return, // the pool was dropped
                        }
                    }
                })
                .map_err(|e| PasswordError::Hash(format!("cannot start hashing thread: {e}")))?;
        }
        let dummy_hash = hash_blocking(&random_bytes::<16>())?;
        Ok(Self {
            jobs: tx,
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_in_flight: concurrency * 64,
            dummy_hash,
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= self.max_in_flight {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return Err(PasswordError::Overloaded);
        }
        // The slot is released by the job itself, when it has run (or been skipped): a client
        // that disconnects does not free its slot while its hash is still queued, so
        // connect-and-drop floods stay bounded too.
        let in_flight = Arc::clone(&self.in_flight);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if !tx.is_closed() {
                let _ = tx.send(job());
            }
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
        if self.jobs.send(job).is_err() {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return Err(PasswordError::Hash("hashing threads stopped".into()));
        }
        rx.await.map_err(|_| PasswordError::Hash("hashing thread failed".into()))
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
        let dummy = self.dummy_hash.clone();
        let ok = self.run(move || verify_blocking(&bytes, &phc, &dummy)).await?;
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
