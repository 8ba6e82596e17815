//! The mail sender (SPEC 10): drains the outbox through a [`MailTransport`] (SMTP in the
//! binary), outside any request, with retries and backoff. It owns the outbound port, the
//! backoff ([`next_attempt`]), one delivery pass ([`Latchkey::deliver_mail_pass`]) and the
//! sender's loop ([`Latchkey::run_mail_sender`]). It must not log an address, a subject or
//! a body (they may carry a link token): only the outbox id, the kind, the attempt and the
//! transport's error text.
//!
//! # Delivery guarantees
//!
//! Mail is committed to the outbox before the request that caused it answers, so a restart
//! loses none. A pass claims due mail for a lease kept in the database (`LEASE`), not in
//! memory: a sender killed mid-send leaves a claim that lapses, and the mail is sent again
//! later. Several nodes on PostgreSQL claim with `FOR UPDATE SKIP LOCKED`, so no mail is
//! claimed by two senders at once, and completion checks the claim, so a sender whose lease
//! lapsed changes nothing. The one window for a duplicate is a crash (or a lost lease) after
//! the mail server accepted a message and before it was marked sent: SMTP has no
//! idempotency, so it cannot be closed. The `Message-ID` is the same on every attempt, so a
//! receiving server can drop the duplicate.
//!
//! Time for `next_attempt_at`, leases and expiry comes from the service's [`Clock`]
//! (tests advance it); only the send timeout and the sender's tick are real time.
//!
//! [`Clock`]: crate::clock::Clock

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt as _;

use crate::clock::Timestamp;
use crate::mail_seal::open_body;
use crate::service::Latchkey;
use crate::store::{DeliveryOutcome, DeliveryState, MailRecord, StoreError};

/// How many mails one pass claims.
pub const BATCH: i64 = 16;
/// How many of them are sent at once (the SMTP transport pools as many connections).
pub const SENDS_AT_ONCE: usize = 4;
/// How long a claim holds: a sender that dies mid-pass delays its mail by at most this.
/// It is longer than a pass can take even against a mail server that never answers
/// ([`BATCH`] / [`SENDS_AT_ONCE`] rounds of at most [`SEND_TIMEOUT`]: 2 minutes), so no
/// other node can claim a mail while its send is still under way.
pub const LEASE: Duration = Duration::from_secs(5 * 60);
/// How long one send may take before it counts as a transient failure.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);
// The guarantee above, checked when the numbers change (the minute left over is for the
// store's own writes).
const _: () =
    assert!((BATCH as u64).div_ceil(SENDS_AT_ONCE as u64) * SEND_TIMEOUT.as_secs() + 60 < LEASE.as_secs());
/// The first retry's delay; each further retry doubles it, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(10);
/// The longest delay between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10 * 60);

/// Why a message was not delivered. The texts hold the mail server's reply or the
/// transport's error, never a password, an address or a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth trying again later: the server is down or slow, TLS failed, a `4xx` reply, or
    /// the server refused our credentials (an operator can fix those without losing mail).
    #[error("transient delivery failure: {0}")]
    Transient(String),
    /// Will fail the same way every time: a `5xx` reply about the message or a recipient,
    /// or a message that cannot be built (an invalid recipient address).
    #[error("permanent delivery failure: {0}")]
    Permanent(String),
}

/// One message to send, as the transport sees it.
#[derive(Clone, Copy)]
pub struct OutgoingMail<'a> {
    /// The recipient's address.
    pub to: &'a str,
    /// The subject.
    pub subject: &'a str,
    /// The plain-text part.
    pub text: &'a str,
    /// The HTML part.
    pub html: &'a str,
    /// `<{id}.{created_at}@{issuer host}>`: the same on every attempt, so a receiver can
    /// drop a duplicate.
    pub message_id: &'a str,
    /// The `Date`: when the mail was queued (the same on every attempt).
    pub date: Timestamp,
}

impl std::fmt::Debug for OutgoingMail<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The address, subject and bodies stay out of logs.
        f.debug_struct("OutgoingMail").field("message_id", &self.message_id).finish_non_exhaustive()
    }
}

/// The outbound port: sends one message (SMTP in the binary).
#[async_trait]
pub trait MailTransport: Send + Sync {
    /// Sends one `multipart/alternative` message.
    ///
    /// # Errors
    /// [`DeliveryError::Transient`] for what is worth retrying, [`DeliveryError::Permanent`]
    /// for a refusal that will not change.
    async fn send(&self, mail: &OutgoingMail<'_>) -> Result<(), DeliveryError>;
}

/// When a mail that failed its `attempts`-th attempt (1 for the first) is due again: 10 s,
/// doubling with each attempt, at most 10 minutes, less a jitter of up to 20 % derived from
/// the mail's id (so mails that failed together do not retry together, and no random
/// number is needed).
pub fn next_attempt(attempts: i64, id: i64, now: Timestamp) -> Timestamp {
    let max = MAX_BACKOFF.as_secs();
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 32)).unwrap_or(32);
    let base = FIRST_BACKOFF.as_secs().saturating_mul(1u64 << doublings).min(max);
    // A fixed mix of the id's bits (SplitMix64's finaliser), then 0 to 20 % of the delay.
    let mut h = id.cast_unsigned();
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    let jitter = base * (h % 21) / 100;
    now.plus(Duration::from_secs(base - jitter))
}

/// Runs one send under `limit`; running out of time is a transient failure.
pub async fn within(
    limit: Duration,
    send: impl std::future::Future<Output = Result<(), DeliveryError>>,
) -> Result<(), DeliveryError> {
    tokio::time::timeout(limit, send)
        .await
        .unwrap_or_else(|_| Err(DeliveryError::Transient(format!("no answer within {} s", limit.as_secs()))))
}

/// What to record for the `attempts`-th attempt of queue row `id`: sent, due again at
/// [`next_attempt`] after a transient failure, or failed for good. Both queues (mail and
/// back-channel logout) settle their attempts this way.
pub fn settle(result: Result<(), DeliveryError>, attempts: i64, id: i64, now: Timestamp) -> DeliveryOutcome {
    match result {
        Ok(()) => DeliveryOutcome::Sent,
        Err(DeliveryError::Transient(error)) => {
            DeliveryOutcome::Retry { at: next_attempt(attempts, id, now), error }
        }
        Err(DeliveryError::Permanent(error)) => DeliveryOutcome::Failed { error },
    }
}

/// The host of an issuer URL (`https://id.example.com:8443/x` → `id.example.com`), for the
/// right side of a `Message-ID` and the SMTP greeting.
pub fn issuer_host(issuer: &str) -> &str {
    let rest = issuer.split_once("://").map_or(issuer, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    if authority.starts_with('[') {
        // An IPv6 literal keeps its brackets (a domain literal in a Message-ID).
        authority.split_once(']').map_or(authority, |(v6, _)| authority.get(..=v6.len()).unwrap_or(v6))
    } else {
        authority.split(':').next().unwrap_or(authority)
    }
}

/// The `Message-ID` of a mail: the same on every attempt.
pub fn message_id(mail: &MailRecord, issuer: &str) -> String {
    format!("<{}.{}@{}>", mail.id, mail.created_at.0, issuer_host(issuer))
}

impl Latchkey {
    /// The outbox for `latchkey mail list`, newest first, with its bodies opened; a body
    /// sealed under a master key this process lacks shows as `None`.
    ///
    /// # Errors
    /// Storage.
    pub async fn list_mail(
        &self,
        state: Option<DeliveryState>,
        limit: i64,
    ) -> Result<Vec<MailRecord>, StoreError> {
        let master = self.keys.master_key();
        let mut mails = self.store.list_mail(state, limit).await?;
        for m in &mut mails {
            m.text = m.text.take().and_then(|body| open_body(master, &m.recipient, &body).ok());
            m.html = m.html.take().and_then(|body| open_body(master, &m.recipient, &body).ok());
        }
        Ok(mails)
    }

    /// Wakes the mail sender: called after a commit that queued mail.
    pub(crate) fn mail_queued_notify(&self) {
        self.mail_ready.notify_one();
    }

    /// Expires mail past its link's life, then sets the pending gauge: `maintain` runs it,
    /// so both work without a sender.
    pub(crate) async fn tidy_outbox(&self, now: Timestamp) -> Result<(), StoreError> {
        self.expire_outbox(now).await?;
        self.count_outbox().await
    }

    async fn expire_outbox(&self, now: Timestamp) -> Result<(), StoreError> {
        let expired = self.store.expire_mail(now).await?;
        if expired > 0 {
            tracing::info!(mails = expired, "outbox mail expired unsent");
            self.metrics.mail_failed(expired);
        }
        Ok(())
    }

    async fn count_outbox(&self) -> Result<(), StoreError> {
        self.metrics.set_mail_pending(self.store.count_pending_mail().await?);
        Ok(())
    }

    /// One delivery pass: expires dead mail, claims up to [`BATCH`] due mails as `claimer`
    /// for [`LEASE`], sends each under [`SEND_TIMEOUT`] and records how it went: sent,
    /// retried at [`next_attempt`] (a transient failure) or failed (a permanent one).
    /// Returns how many mails it claimed.
    ///
    /// # Errors
    /// Storage. A mail whose send failed is not an error: it is retried or failed.
    pub async fn deliver_mail_pass(
        &self,
        transport: &dyn MailTransport,
        claimer: &str,
    ) -> Result<usize, StoreError> {
        let now = self.clock.now();
        self.expire_outbox(now).await?;
        let claimed = self.store.claim_mail(claimer, now, now.plus(LEASE), BATCH).await?;
        // A few at once: each send waits on the mail server's replies, and the transport
        // keeps a small pool of connections (measured: sequential sends to a local server
        // managed ~21 mails/s).
        let count = claimed.len();
        let sends = claimed.into_iter().map(|mail| async move {
            let outcome = self.deliver_one(transport, &mail).await;
            let done = self.clock.now();
            let completed = self.store.complete_mail(mail.id, claimer, done, &outcome).await;
            (mail, completed)
        });
        let mut sends = futures_util::stream::iter(sends).buffer_unordered(SENDS_AT_ONCE);
        while let Some((mail, completed)) = sends.next().await {
            if !completed? {
                tracing::warn!(
                    outbox_id = mail.id,
                    kind = %mail.kind,
                    "the claim on a mail lapsed before it was completed; another sender has it"
                );
            }
        }
        self.count_outbox().await?;
        Ok(count)
    }

    /// Sends one claimed mail; the outcome to record (and the metrics moved).
    async fn deliver_one(&self, transport: &dyn MailTransport, mail: &MailRecord) -> DeliveryOutcome {
        let (id, kind, attempt) = (mail.id, mail.kind.as_str(), mail.attempts);
        let (Some(text), Some(html)) = (mail.text.as_deref(), mail.html.as_deref()) else {
            tracing::error!(outbox_id = id, kind, attempt, "a pending mail has no body");
            self.metrics.mail_failed(1);
            return DeliveryOutcome::Failed { error: "the mail has no body".into() };
        };
        let master = self.keys.master_key();
        let opened = open_body(master, &mail.recipient, text)
            .and_then(|text| Ok((text, open_body(master, &mail.recipient, html)?)));
        let (text, html) = match opened {
            Ok(parts) => parts,
            Err(e) => {
                // Another node may hold the key, or the operator may set it again.
                let at = next_attempt(attempt, id, self.clock.now());
                tracing::warn!(outbox_id = id, kind, attempt, error = %e, retry_at = %at, "mail cannot be opened; will retry");
                self.metrics.mail_retried();
                return DeliveryOutcome::Retry { at, error: e.to_string() };
            }
        };
        let message_id = message_id(mail, &self.settings.issuer);
        let outgoing = OutgoingMail {
            to: &mail.recipient,
            subject: &mail.subject,
            text: &text,
            html: &html,
            message_id: &message_id,
            date: mail.created_at,
        };
        let outcome =
            settle(within(SEND_TIMEOUT, transport.send(&outgoing)).await, attempt, id, self.clock.now());
        match &outcome {
            DeliveryOutcome::Sent => {
                tracing::info!(outbox_id = id, kind, attempt, "mail sent");
                self.metrics.mail_sent();
            }
            DeliveryOutcome::Retry { at, error } => {
                tracing::warn!(outbox_id = id, kind, attempt, %error, retry_at = %at, "mail delivery failed; will retry");
                self.metrics.mail_retried();
            }
            DeliveryOutcome::Failed { error } => {
                tracing::warn!(outbox_id = id, kind, attempt, %error, "mail refused for good");
                self.metrics.mail_failed(1);
            }
        }
        outcome
    }

    /// The sender: a delivery pass whenever mail is queued on this node and at every `tick`
    /// (for mail queued by other nodes and the CLI, and retries coming due), passes back to
    /// back while a backlog fills whole batches. Runs until its task is aborted.
    pub async fn run_mail_sender(self: Arc<Self>, transport: Arc<dyn MailTransport>, tick: Duration) {
        let claimer = crate::crypto::new_id();
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            loop {
                match self.deliver_mail_pass(transport.as_ref(), &claimer).await {
                    Ok(n) if i64::try_from(n).unwrap_or(0) >= BATCH => {}
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "mail delivery pass failed; will retry");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = ticks.tick() => {}
                () = self.mail_ready.notified() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_700_000_000);

    fn delay(attempts: i64, id: i64) -> i64 {
        next_attempt(attempts, id, NOW).seconds_since(NOW)
    }

    #[test]
    fn backoff_doubles_from_10_seconds_up_to_10_minutes_less_a_fifth() {
        for id in [1, 2, 3, 42, 1_000_000, i64::MAX, -5] {
            let mut base = 10;
            for attempts in 1..=12 {
                let d = delay(attempts, id);
                assert!(d <= base && d >= base * 4 / 5, "attempt {attempts} of {id}: {d} s, base {base} s");
                base = (base * 2).min(600);
            }
            assert!(delay(1_000, id) <= 600 && delay(i64::MAX, id) <= 600);
            assert_eq!(delay(0, id), delay(1, id), "a zero count is the first attempt");
        }
    }

    #[test]
    fn jitter_is_a_function_of_the_id() {
        assert_eq!(delay(3, 7), delay(3, 7));
        let spread: std::collections::BTreeSet<i64> = (1..=50).map(|id| delay(8, id)).collect();
        assert!(spread.len() > 10, "mails that failed together spread out: {spread:?}");
    }

    #[test]
    fn message_ids_are_stable_and_name_the_issuer_host() {
        for (issuer, host) in [
            ("https://id.example.com", "id.example.com"),
            ("http://127.0.0.1:8080", "127.0.0.1"),
            ("https://id.example.com:8443/tenant", "id.example.com"),
            ("http://[::1]:8080", "[::1]"),
        ] {
            assert_eq!(issuer_host(issuer), host, "{issuer}");
        }
        let mail = MailRecord {
            id: 42,
            kind: "verify_email".into(),
            user_id: None,
            recipient: "a@example.com".into(),
            subject: "s".into(),
            text: None,
            html: None,
            created_at: NOW,
            expires_at: NOW,
            state: crate::store::DeliveryState::Pending,
            attempts: 3,
            next_attempt_at: NOW,
            last_error: None,
            sent_at: None,
        };
        assert_eq!(message_id(&mail, "https://id.example.com/"), "<42.1700000000@id.example.com>");
    }
}
