//! [`Latchkey`]: the domain facade the HTTP layer and the CLI call. It owns the ports
//! (store, clock), the settings, the key ring, the password pool and the metrics. Each
//! operation lives in the module named after it (`login.rs`, `refresh.rs`, `account.rs`,
//! `admin.rs`); this file only wires them and runs periodic maintenance.

use std::sync::Arc;

use crate::caller::Caller;
use crate::clock::{Clock, Timestamp};
use crate::ids::{SessionId, UserId};
use crate::keys::{KeyError, KeyRing};
use crate::master_key::MasterKey;
use crate::metrics::Metrics;
use crate::password::{PasswordError, PasswordHasher};
use crate::settings::Settings;
use crate::store::{NewSecurityEvent, Store};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Keys.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// Password pool.
    #[error(transparent)]
    Password(#[from] PasswordError),
}

/// The domain service.
pub struct Latchkey {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) settings: Settings,
    pub(crate) keys: KeyRing,
    pub(crate) passwords: PasswordHasher,
    pub(crate) metrics: Metrics,
    pub(crate) feed: crate::feed_hub::FeedHub,
    /// Wakes the mail sender after a commit that queued mail (see `outbox.rs`).
    pub(crate) mail_ready: tokio::sync::Notify,
    /// Forgot-password requests waiting for their links (see `password_reset.rs`).
    pub(crate) resets: crate::password_reset::ResetQueue,
    /// Access tokens whose signature verified (see `token_cache.rs`).
    pub(crate) verified: crate::token_cache::VerifiedTokens,
    /// The WebAuthn relying party, built from the issuer; `None` when the issuer has no
    /// domain name, so passkeys cannot work (see `passkey.rs`).
    pub(crate) webauthn: Option<webauthn_rs::prelude::Webauthn>,
    /// The key DPoP nonces are made with (see `dpop.rs`).
    pub(crate) nonces: crate::dpop::NonceKey,
    /// `private_key_jwt` clients' fetched key sets (see `client_assertion.rs`).
    pub(crate) jwks: crate::client_assertion::JwksCache,
    /// When maintenance last pruned old rows.
    last_prune: std::sync::atomic::AtomicI64,
    /// Held for a whole `maintain`, so a second caller waits for a run in progress instead
    /// of skipping its prune and returning before that run's prune has committed.
    maintaining: tokio::sync::Mutex<()>,
}

/// How long ended sessions stay in the database (for the device history and so that an
/// old refresh token still answers with its session's revocation reason).
const SESSION_RETENTION: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);
/// How often maintenance prunes.
const PRUNE_EVERY_SECS: i64 = 3600;

impl Latchkey {
    /// Starts the service: creates signing keys on first start, loads the key ring.
    ///
    /// # Errors
    /// When keys cannot be created, decrypted or loaded.
    pub async fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        settings: Settings,
        master_key: Option<MasterKey>,
    ) -> Result<Self, StartError> {
        let retention =
            settings.access_token_ttl.max(std::time::Duration::from_secs(3600)) + settings.clock_skew;
        let nonces = crate::dpop::NonceKey::new(master_key.as_ref());
        let keys = KeyRing::new(master_key, retention);
        let passwords = PasswordHasher::new(settings.password_hash_concurrency)?;
        let service = Self {
            webauthn: crate::passkey::relying_party(&settings.issuer),
            nonces,
            store,
            clock,
            settings,
            keys,
            passwords,
            metrics: Metrics::default(),
            feed: crate::feed_hub::FeedHub::new(),
            verified: crate::token_cache::VerifiedTokens::default(),
            mail_ready: tokio::sync::Notify::new(),
            resets: crate::password_reset::ResetQueue::default(),
            last_prune: std::sync::atomic::AtomicI64::new(0),
            jwks: crate::client_assertion::JwksCache::default(),
            maintaining: tokio::sync::Mutex::new(()),
        };
        service.maintain().await?;
        Ok(service)
    }

    /// Periodic work: scheduled key rotation, pruning, reloading keys changed by other
    /// processes (the CLI, other nodes). The binary runs it every few seconds.
    ///
    /// # Errors
    /// Storage or key errors.
    pub async fn maintain(&self) -> Result<(), KeyError> {
        let _one_at_a_time = self.maintaining.lock().await;
        let now = self.clock.now();
        let s = &self.settings;
        let mut algs = vec![s.access_token_alg];
        if s.id_token_alg != s.access_token_alg {
            algs.push(s.id_token_alg);
        }
        let store = self.store.as_ref();
        let created = self.keys.ensure_keys(store, &algs, now, s.key_rotation, s.key_publish_ahead).await?;
        for kid in created {
            tracing::info!(kid, "created signing key");
        }
        self.keys.prune(store, now).await?;
        self.keys.reload(store, now).await?;
        // Without a sender (no `smtp_url`) dead mail still expires and the gauge still moves.
        if let Err(e) = self.tidy_outbox(now).await {
            tracing::warn!(error = %e, "outbox upkeep failed; will retry");
        }
        if let Err(e) = self.tidy_logout_queue(now).await {
            tracing::warn!(error = %e, "logout queue upkeep failed; will retry");
        }
        // Spent DPoP proofs go at every run, not hourly: anyone can add one per request.
        if let Err(e) = store.forget_dpop_proofs(now).await {
            tracing::warn!(error = %e, "forgetting spent DPoP proofs failed; will retry");
        }
        let last = self.last_prune.load(std::sync::atomic::Ordering::Relaxed);
        if now.0 - last >= PRUNE_EVERY_SECS {
            self.last_prune.store(now.0, std::sync::atomic::Ordering::Relaxed);
            let forget_before =
                Timestamp(now.0 - i64::try_from(SESSION_RETENTION.as_secs()).unwrap_or(i64::MAX));
            match store.prune(now, forget_before).await {
                Ok(n) if n > 0 => tracing::info!(rows = n, "pruned expired rows"),
                Ok(_) => {}
                Err(e) => {
                    // Retry at the next run rather than a whole prune interval later.
                    self.last_prune.store(last, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(error = %e, "pruning failed; will retry");
                }
            }
        }
        Ok(())
    }

    /// Settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The key ring.
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether the database answers.
    pub async fn is_healthy(&self) -> bool {
        self.store.ping().await.is_ok()
    }

    /// The `until` of a feed event written now.
    pub(crate) fn revocation_until(&self, now: Timestamp) -> Timestamp {
        now.plus(self.settings.revocation_horizon())
    }

    /// A security event skeleton.
    pub(crate) fn event(
        &self,
        now: Timestamp,
        kind: &'static str,
        user_id: Option<&UserId>,
        session_id: Option<&SessionId>,
        ctx: Option<&Caller>,
    ) -> NewSecurityEvent {
        NewSecurityEvent {
            at: now,
            kind,
            user_id: user_id.cloned(),
            session_id: session_id.cloned(),
            ip: ctx.and_then(|c| c.ip.clone()),
            detail: None,
        }
    }

    /// Records a security event; a failure to record is logged, never fatal.
    pub(crate) async fn record(&self, event: NewSecurityEvent) {
        if let Err(e) = self.store.insert_security_event(&event).await {
            tracing::warn!(error = %e, kind = event.kind, "could not record security event");
        }
    }
}
