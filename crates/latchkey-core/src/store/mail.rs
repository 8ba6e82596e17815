//! The storage port for SPEC 10's mail: link tokens ([`LinkStore`]) and the outbox
//! ([`OutboxStore`]). A link and the mail that carries it are written in one transaction;
//! redeeming a link and what it changes are one transaction too.

use async_trait::async_trait;
use latchkey_proto::LinkTokenReason;

use super::{DeliveryOutcome, DeliveryState, StoreError, UserChange, UserRecord};
use crate::clock::Timestamp;
use crate::crypto::TokenHash;
use crate::ids::{SessionId, UserId};

/// What a link token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPurpose {
    /// Proves the account's address (`lkv_`).
    VerifyEmail,
    /// Proves a new address, which becomes the account's when the link is used (`lkv_`).
    ChangeEmail,
    /// Sets a new password (`lkp_`).
    PasswordReset,
}

impl LinkPurpose {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::ChangeEmail => "change_email",
            Self::PasswordReset => "password_reset",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::VerifyEmail, Self::ChangeEmail, Self::PasswordReset].into_iter().find(|p| p.as_str() == s)
    }
}

/// A link token as stored: its hash, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRecord {
    /// SHA-256 of the token.
    pub hash: TokenHash,
    /// What it is for.
    pub purpose: LinkPurpose,
    /// Whose.
    pub user_id: UserId,
    /// The address it was mailed to.
    pub email: String,
    /// That address's key (lower case).
    pub email_key: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it stops working.
    pub expires_at: Timestamp,
    /// When it was used; used is final.
    pub used_at: Option<Timestamp>,
    /// When a newer link of its purpose replaced it.
    pub voided_at: Option<Timestamp>,
}

/// A mail to queue (its bodies rendered already).
#[derive(Clone, PartialEq, Eq)]
pub struct NewMail {
    /// What kind of mail, e.g. `verify_email` (for `mail list` and the metrics).
    pub kind: &'static str,
    /// The user it concerns.
    pub user_id: Option<UserId>,
    /// The address.
    pub recipient: String,
    /// The subject (never a secret).
    pub subject: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part.
    pub html: String,
    /// When it was queued.
    pub created_at: Timestamp,
    /// Not sent after this (its link is dead by then).
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for NewMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The bodies may carry a link token.
        f.debug_struct("NewMail")
            .field("kind", &self.kind)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// A queued mail.
#[derive(Clone, PartialEq, Eq)]
pub struct MailRecord {
    /// Queue order.
    pub id: i64,
    /// What kind of mail.
    pub kind: String,
    /// The user it concerns.
    pub user_id: Option<UserId>,
    /// The address.
    pub recipient: String,
    /// The subject.
    pub subject: String,
    /// The plain-text part, while the mail is still to be sent.
    pub text: Option<String>,
    /// The HTML part, likewise.
    pub html: Option<String>,
    /// When it was queued.
    pub created_at: Timestamp,
    /// Not sent after this.
    pub expires_at: Timestamp,
    /// Where it is.
    pub state: DeliveryState,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// When it is due (again).
    pub next_attempt_at: Timestamp,
    /// The mail server's last refusal (never a body).
    pub last_error: Option<String>,
    /// When it was accepted.
    pub sent_at: Option<Timestamp>,
}

impl std::fmt::Debug for MailRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailRecord")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("state", &self.state)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// Judges a link inside its redemption's transaction: why it may not be used, if so. A
/// plain function, so that a retried transaction can ask again.
pub type LinkJudge = fn(&LinkRecord, &UserRecord, Timestamp) -> Result<(), LinkTokenReason>;

/// What a redeemed link changes, in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEffect {
    /// Marks the link's address verified (when it is still the account's); for a
    /// [`LinkPurpose::ChangeEmail`] link, makes it the account's address, verified, and
    /// voids the reset links that went to the old one (another account holding it by then
    /// is [`StoreError::Conflict`], and nothing changes).
    VerifyEmail,
    /// Applies the change (a new password, every session revoked), voids the user's other
    /// reset links, and verifies the address the link went to when it is still the
    /// account's (reading the mail proved it).
    ResetPassword(Box<UserChange>),
}

/// How a redemption ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkRedemption {
    /// No such link (or its user is gone).
    Unknown,
    /// The judge refused; nothing changed.
    Refused(LinkTokenReason),
    /// Used now, with the new `authz_ver` and the revoked sessions of a reset.
    Redeemed {
        /// The link as it was.
        link: LinkRecord,
        /// What a reset changed.
        change: Option<(i64, Vec<SessionId>)>,
    },
}

/// Link tokens (SPEC 10).
#[async_trait]
pub trait LinkStore {
    /// Stores a link and queues the mails of its cause (the one that carries it, and any
    /// notice), in one transaction; older links of the same user and purpose are voided
    /// first.
    async fn issue_link(&self, link: &LinkRecord, mails: &[NewMail]) -> Result<(), StoreError>;
    /// A link by hash, without using it (what the pages show before the form is posted).
    async fn find_link(&self, hash: &TokenHash) -> Result<Option<LinkRecord>, StoreError>;
    /// Judges and uses a link, and applies its effect, in one transaction with the link
    /// locked (two redemptions of one link: one wins, the other sees it used).
    async fn redeem_link(
        &self,
        hash: &TokenHash,
        now: Timestamp,
        judge: LinkJudge,
        effect: &LinkEffect,
    ) -> Result<LinkRedemption, StoreError>;
}

/// The outbox (SPEC 10): mail waits here until it is sent.
///
/// A sender claims due mail for a lease (`claimed_by`, `claimed_until`), sends it, and
/// completes each claimed mail; a sender that dies leaves a claim that lapses at the end of
/// its lease, after which any sender may claim the mail again. On PostgreSQL two senders
/// never claim one mail at once (`FOR UPDATE SKIP LOCKED`).
#[async_trait]
pub trait OutboxStore {
    /// Queues a mail that needs no link (a notice).
    async fn queue_mail(&self, mail: &NewMail) -> Result<(), StoreError>;
    /// Queued mail, newest first, in one state or all.
    async fn list_mail(
        &self,
        state: Option<DeliveryState>,
        limit: i64,
    ) -> Result<Vec<MailRecord>, StoreError>;
    /// Claims up to `limit` due mails for `claimer` until `lease_until`, oldest first: pending,
    /// `next_attempt_at <= now`, `expires_at > now`, and not claimed (or the claim lapsed).
    /// Each claim counts an attempt.
    async fn claim_mail(
        &self,
        claimer: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: i64,
    ) -> Result<Vec<MailRecord>, StoreError>;
    /// Records how an attempt ended and releases the claim; `false` (nothing changed) when
    /// the mail is no longer claimed by `claimer` (its lease lapsed and another sender took it).
    async fn complete_mail(
        &self,
        id: i64,
        claimer: &str,
        now: Timestamp,
        outcome: &DeliveryOutcome,
    ) -> Result<bool, StoreError>;
    /// Marks pending mail past its `expires_at` (and not claimed by a live lease) `expired`,
    /// dropping the bodies; how many.
    async fn expire_mail(&self, now: Timestamp) -> Result<u64, StoreError>;
    /// How many mails are pending.
    async fn count_pending_mail(&self) -> Result<i64, StoreError>;
}
