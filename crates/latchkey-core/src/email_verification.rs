//! Proving an account's address (SPEC 10 `POST /auth/email/verify/send` and
//! `POST /auth/email/verify`): a link token mailed through the outbox, redeemed once.

use latchkey_proto::{LinkKind, LinkToken, LinkTokenReason};

use crate::account::Authenticated;
use crate::caller::Caller;
use crate::clock::Timestamp;
use crate::crypto::TokenHash;
use crate::link::{VERIFY_LINK_TTL, judge_verification, new_link_token};
use crate::service::Latchkey;
use crate::store::{LinkEffect, LinkPurpose, LinkRecord, LinkRedemption, StoreError};

/// How many link mails of one kind one account may ask for in a clock hour (SPEC 10).
pub const MAILS_PER_ACCOUNT_PER_HOUR: i64 = 5;
/// How many link mails of one kind one client address may ask for in a clock hour.
pub const MAILS_PER_ADDRESS_PER_HOUR: i64 = 20;

/// Why an address could not be verified, or a link not mailed.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    /// The account has no address to verify.
    #[error("the account has no email address")]
    NoAddress,
    /// Too many mails asked for; retry after this many seconds.
    #[error("throttled for {retry_after} s")]
    Throttled {
        /// Seconds.
        retry_after: u64,
    },
    /// The link is used, expired or unknown.
    #[error("link refused: {}", .0.as_str())]
    Link(LinkTokenReason),
    /// A mail template failed to render.
    #[error("mail template: {0}")]
    Template(#[from] askama::Error),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The seconds left in the clock hour of `now`, the wait of an hourly counter.
fn rest_of_hour(now: Timestamp) -> u64 {
    u64::try_from(3600 - now.0.rem_euclid(3600)).unwrap_or(3600)
}

impl Latchkey {
    /// Counts a mail of `kind` asked for by `subject` (an account, or a client address) in
    /// the current clock hour; the wait when that is over `limit`.
    pub(crate) async fn mail_budget(
        &self,
        kind: &str,
        subject: &str,
        limit: i64,
        now: Timestamp,
    ) -> Result<Option<u64>, StoreError> {
        let key = format!("mail:{kind}:{subject}:{}", now.0.div_euclid(3600));
        let rec = self.store.record_throttle_failure(&key, now, 3600).await?;
        Ok((rec.count > limit).then(|| rest_of_hour(now)))
    }

    /// Mails a verification link to the account's address (`202`); nothing when it is
    /// verified already.
    ///
    /// # Errors
    /// [`EmailError::NoAddress`], [`EmailError::Throttled`] past 5 an hour for the account
    /// or 20 an hour for the client address, storage.
    pub async fn send_verification(&self, auth: &Authenticated, ctx: &Caller) -> Result<(), EmailError> {
        let user = auth.user();
        let Some(email) = &user.email else { return Err(EmailError::NoAddress) };
        if email.verified_at.is_some() {
            return Ok(());
        }
        let now = self.clock.now();
        if let Some(ip) = ctx.ip.as_deref() {
            let addr = crate::throttle::address_key(ip);
            if let Some(retry_after) =
                self.mail_budget("verify", &addr, MAILS_PER_ADDRESS_PER_HOUR, now).await?
            {
                return Err(EmailError::Throttled { retry_after });
            }
        }
        let account = user.id.as_str();
        if let Some(retry_after) =
            self.mail_budget("verify", account, MAILS_PER_ACCOUNT_PER_HOUR, now).await?
        {
            return Err(EmailError::Throttled { retry_after });
        }
        let token = new_link_token(LinkKind::Verify);
        let expires_at = now.plus(VERIFY_LINK_TTL);
        let link = LinkRecord {
            hash: TokenHash::of(token.expose_secret()),
            purpose: LinkPurpose::VerifyEmail,
            user_id: user.id.clone(),
            email: email.address.clone(),
            email_key: email.key.clone(),
            created_at: now,
            expires_at,
            used_at: None,
            voided_at: None,
        };
        let url = format!("{}/verify-email?token={}", self.settings.issuer, token.expose_secret());
        let to = crate::mail::Envelope {
            user,
            email: &email.address,
            issuer: &self.settings.issuer,
            now,
            expires_at,
        };
        let mail = crate::mail::verify_email(&to, &url)?;
        self.store.issue_link(&link, &mail).await?;
        self.metrics.mail_queued();
        self.record(self.event(now, "email_verification_sent", Some(&user.id), None, Some(ctx))).await;
        Ok(())
    }

    /// Verifies the address a link was mailed to (`204`).
    ///
    /// # Errors
    /// [`EmailError::Link`] for a used, expired or unknown link; storage.
    pub async fn verify_email(&self, token: &LinkToken, ctx: &Caller) -> Result<(), EmailError> {
        if token.kind() != Some(LinkKind::Verify) {
            return Err(EmailError::Link(LinkTokenReason::Unknown));
        }
        let now = self.clock.now();
        let hash = TokenHash::of(token.expose_secret());
        match self.store.redeem_link(&hash, now, judge_verification, &LinkEffect::VerifyEmail).await? {
            LinkRedemption::Unknown => Err(EmailError::Link(LinkTokenReason::Unknown)),
            LinkRedemption::Refused(reason) => Err(EmailError::Link(reason)),
            LinkRedemption::Redeemed { link, .. } => {
                self.record(self.event(now, "email_verified", Some(&link.user_id), None, Some(ctx))).await;
                Ok(())
            }
        }
    }
}
