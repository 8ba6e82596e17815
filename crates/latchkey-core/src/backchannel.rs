//! Back-channel logout (SPEC 13; OpenID Connect Back-Channel Logout 1.0): the sender that
//! delivers the logout tokens the revocations queued, through a [`LogoutTransport`] (an
//! HTTP client in the binary), with the mail outbox's design: a claim is a lease in the
//! database, failures are retried with [`next_attempt`]'s backoff until the delivery is 25
//! hours old, and several nodes never claim one delivery at once.
//!
//! A delivery stores what its token says, not the token: each attempt signs a fresh token
//! (`iat` now, `exp` two minutes later) with the same `jti`, so a receiver that was down
//! for a day gets a token it can accept and can still drop a duplicate. It must not log a
//! token; the app's URI and the receiver's status are fine (operators registered them).
//!
//! The one window for a duplicate is the mail outbox's: a crash (or a lapsed lease) after
//! the app accepted a token and before it was marked sent. The same `jti` lets the app
//! tell.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::digest::{SHA256, digest};
use futures_util::StreamExt as _;
use latchkey_proto::oauth::{LOGOUT_TOKEN_TYPE, LogoutEvents, LogoutTokenClaims};

use crate::clock::Timestamp;
use crate::crypto::b64;
use crate::keys::KeyError;
use crate::outbox::{DeliveryError, next_attempt, settle, within};
use crate::service::Latchkey;
use crate::store::{DeliveryOutcome, LogoutDeliveryRecord, StoreError};

/// How many deliveries one pass claims.
pub const BATCH: i64 = 32;
/// How many are posted at once: the whole batch, so a pass lasts at most one
/// [`POST_TIMEOUT`] however many receivers hang (with the claim order, never-tried
/// deliveries first, one app's dead endpoint delays another's logout by one pass at most).
pub const POSTS_AT_ONCE: usize = 32;
/// How long one POST may take, connection included, before it counts as a failure.
pub const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claim holds; longer than a pass can take against receivers that never answer.
pub const LEASE: Duration = Duration::from_secs(3 * 60);
const _: () =
    assert!((BATCH as u64).div_ceil(POSTS_AT_ONCE as u64) * POST_TIMEOUT.as_secs() + 60 < LEASE.as_secs());
/// How long a logout token is valid after it is signed.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(120);

/// The outbound port: POSTs `logout_token=…` to an app's `backchannel_logout_uri`.
#[async_trait]
pub trait LogoutTransport: Send + Sync {
    /// Delivers one logout token.
    ///
    /// # Errors
    /// [`DeliveryError::Transient`] for what is worth retrying (no connection, a timeout,
    /// a 5xx), [`DeliveryError::Permanent`] for the app's refusal of the token (a 400,
    /// Back-Channel Logout §2.8).
    async fn post(&self, uri: &str, logout_token: &str) -> Result<(), DeliveryError>;
}

/// The `jti` of a delivery: opaque, and the same on every attempt.
fn delivery_jti(issuer: &str, d: &LogoutDeliveryRecord) -> String {
    let input = format!("{issuer}\n{}\n{}", d.id, d.created_at.0);
    let hash = digest(&SHA256, input.as_bytes());
    b64(hash.as_ref().get(..16).unwrap_or_default())
}

impl Latchkey {
    /// The logout token of one attempt of `d`, signed now with the ID-token key.
    ///
    /// # Errors
    /// When no key can sign.
    pub fn mint_logout_token(&self, d: &LogoutDeliveryRecord, now: Timestamp) -> Result<String, KeyError> {
        let s = &self.settings;
        let claims = LogoutTokenClaims {
            iss: s.issuer.clone(),
            sub: d.user_id.to_string(),
            aud: d.client_id.to_string(),
            iat: now.0,
            exp: now.plus(TOKEN_LIFETIME).0,
            jti: delivery_jti(&s.issuer, d),
            sid: d.session_id.to_string(),
            events: LogoutEvents::default(),
        };
        let set = self.keys.current();
        let key = set.signer(s.id_token_alg, now).ok_or(KeyError::NoActiveKey(s.id_token_alg.as_str()))?;
        key.sign_jwt(LOGOUT_TOKEN_TYPE, &claims)
    }

    /// Gives up deliveries past their 25 hours, then sets the queue gauges: `maintain` runs
    /// it, so both work on a node without a sender.
    pub(crate) async fn tidy_logout_queue(&self, now: Timestamp) -> Result<(), StoreError> {
        let expired = self.store.expire_logout_deliveries(now).await?;
        if expired > 0 {
            tracing::warn!(
                deliveries = expired,
                "back-channel logout tokens undelivered for 25 hours; given up"
            );
            self.metrics.logout_failed(expired);
        }
        self.count_logout_queue(now).await
    }

    async fn count_logout_queue(&self, now: Timestamp) -> Result<(), StoreError> {
        let (pending, oldest) = self.store.logout_delivery_backlog().await?;
        let age = oldest.map_or(0, |t| now.seconds_since(t).max(0));
        self.metrics.set_logout_backlog(pending, age);
        Ok(())
    }

    /// One delivery pass: claims up to [`BATCH`] due deliveries as `claimer`, posts each
    /// under [`POST_TIMEOUT`] and records how it went. Returns how many it claimed.
    ///
    /// # Errors
    /// Storage. A failed POST is not an error: it is retried or given up.
    pub async fn deliver_logout_pass(
        &self,
        transport: &dyn LogoutTransport,
        claimer: &str,
    ) -> Result<usize, StoreError> {
        let now = self.clock.now();
        self.store.expire_logout_deliveries(now).await?;
        let claimed = self.store.claim_logout_deliveries(claimer, now, now.plus(LEASE), BATCH).await?;
        let count = claimed.len();
        let posts = claimed.into_iter().map(|d| async move {
            let outcome = self.deliver_one_logout(transport, &d).await;
            let completed =
                self.store.complete_logout_delivery(d.id, claimer, self.clock.now(), &outcome).await;
            (d, completed)
        });
        let mut posts = futures_util::stream::iter(posts).buffer_unordered(POSTS_AT_ONCE);
        while let Some((d, completed)) = posts.next().await {
            if !completed? {
                tracing::warn!(
                    delivery = d.id,
                    "the claim on a logout delivery lapsed; another sender has it"
                );
            }
        }
        self.count_logout_queue(self.clock.now()).await?;
        Ok(count)
    }

    async fn deliver_one_logout(
        &self,
        transport: &dyn LogoutTransport,
        d: &LogoutDeliveryRecord,
    ) -> DeliveryOutcome {
        let (id, client, attempt) = (d.id, d.client_id.as_str(), d.attempts);
        let token = match self.mint_logout_token(d, self.clock.now()) {
            Ok(t) => t,
            Err(e) => {
                let at = next_attempt(attempt, id, self.clock.now());
                tracing::error!(delivery = id, client, error = %e, "cannot sign a logout token; will retry");
                self.metrics.logout_retried();
                return DeliveryOutcome::Retry { at, error: e.to_string() };
            }
        };
        let outcome =
            settle(within(POST_TIMEOUT, transport.post(&d.uri, &token)).await, attempt, id, self.clock.now());
        match &outcome {
            DeliveryOutcome::Sent => {
                tracing::info!(delivery = id, client, attempt, "back-channel logout delivered");
                self.metrics.logout_sent();
            }
            DeliveryOutcome::Retry { at, error } => {
                tracing::warn!(delivery = id, client, attempt, %error, retry_at = %at, "back-channel logout failed; will retry");
                self.metrics.logout_retried();
            }
            DeliveryOutcome::Failed { error } => {
                tracing::warn!(delivery = id, client, attempt, %error, "back-channel logout refused by the app");
                self.metrics.logout_failed(1);
            }
        }
        outcome
    }

    /// The sender: a pass at every `tick` (revocations commit on any node and in the CLI),
    /// back to back while a backlog fills whole batches. Runs until its task is aborted.
    pub async fn run_logout_sender(self: Arc<Self>, transport: Arc<dyn LogoutTransport>, tick: Duration) {
        let claimer = crate::crypto::new_id();
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            loop {
                match self.deliver_logout_pass(transport.as_ref(), &claimer).await {
                    Ok(n) if i64::try_from(n).unwrap_or(0) >= BATCH => {}
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "logout delivery pass failed; will retry");
                        break;
                    }
                }
            }
            ticks.tick().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(id: i64) -> LogoutDeliveryRecord {
        LogoutDeliveryRecord {
            id,
            client_id: "app".into(),
            uri: "https://app.example.com/bcl".into(),
            user_id: "u".into(),
            session_id: "s".into(),
            created_at: Timestamp(1_700_000_000),
            expires_at: Timestamp(1_700_090_000),
            state: crate::store::DeliveryState::Pending,
            attempts: 0,
            next_attempt_at: Timestamp(1_700_000_000),
            last_error: None,
            sent_at: None,
        }
    }

    #[test]
    fn a_deliverys_jti_is_stable_opaque_and_its_own() {
        let issuer = "https://id.example.com";
        assert_eq!(delivery_jti(issuer, &delivery(1)), delivery_jti(issuer, &delivery(1)));
        assert_ne!(delivery_jti(issuer, &delivery(1)), delivery_jti(issuer, &delivery(2)));
        assert_ne!(
            delivery_jti(issuer, &delivery(1)),
            delivery_jti("https://other.example.com", &delivery(1))
        );
        assert_eq!(delivery_jti(issuer, &delivery(1)).len(), 22);
    }
}
