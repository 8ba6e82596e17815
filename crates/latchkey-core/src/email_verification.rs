//! Proving an account's address (SPEC 10 `POST /auth/email/verify/send` and
//! `POST /auth/email/verify`): a link token mailed through the outbox, redeemed once.

use latchkey_proto::{LinkKind, LinkToken, LinkTokenReason};

use crate::account::Principal;
use crate::caller::Caller;
use crate::clock::Timestamp;
use crate::crypto::TokenHash;
use crate::link::{VERIFY_LINK_TTL, judge_reset, judge_verification, new_link};
use crate::service::Latchkey;
use crate::store::{LinkEffect, LinkPurpose, LinkRedemption, StoreError};

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
    /// Too many wrong passwords for this account or from this address; retry after this
    /// many seconds.
    #[error("password checks throttled for {retry_after} s")]
    PasswordThrottled {
        /// Seconds.
        retry_after: u64,
    },
    /// The current password given with an email change is wrong.
    #[error("wrong password")]
    WrongPassword,
    /// The new address became another account's before the link was used.
    #[error("email taken")]
    EmailTaken,
    /// Password hashing failed or is overloaded.
    #[error(transparent)]
    Password(#[from] crate::password::PasswordError),
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
    pub async fn send_verification(&self, auth: &impl Principal, ctx: &Caller) -> Result<(), EmailError> {
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
        let address = (email.address.as_str(), email.key.as_str());
        let (token, link) = new_link(LinkPurpose::VerifyEmail, &user.id, address, now, VERIFY_LINK_TTL);
        let expires_at = link.expires_at;
        let url = format!("{}/verify-email?token={}", self.settings.issuer, token.expose_secret());
        let to = self.envelope(user, &email.address, now, expires_at);
        let mail = crate::mail::verify_email(&to, &url)?;
        self.store.issue_link(&link, &[mail]).await?;
        self.metrics.mail_queued();
        self.mail_queued_notify();
        self.record(self.event(now, "email_verification_sent", Some(&user.id), None, Some(ctx))).await;
        Ok(())
    }

    /// Asks to change the account's address (`202`): checks the current password (throttled
    /// like a login), mails a link to the new address and tells the old one. The change
    /// happens when the link is used. An address another account holds gets no link, and
    /// the answer is the same.
    ///
    /// # Errors
    /// [`EmailError::WrongPassword`], [`EmailError::PasswordThrottled`] (too many wrong
    /// passwords), [`EmailError::Throttled`] (too many mails), storage.
    pub async fn change_email(
        &self,
        auth: &impl Principal,
        req: latchkey_proto::auth::EmailChangeRequest,
        ctx: &Caller,
    ) -> Result<(), EmailError> {
        let user = auth.user();
        let now = self.clock.now();
        let acct = crate::throttle::account_key(&user.username);
        let addr = ctx.ip.as_deref().map(crate::throttle::address_key);
        if let Some(retry_after) = self.throttled_for(&acct, addr.as_deref(), now).await? {
            return Err(EmailError::PasswordThrottled { retry_after });
        }
        if !self.passwords.verify(&req.current_password, Some(&user.password_hash)).await? {
            let locked = self
                .record_failure("email_change_failed", Some(&user.id), &acct, addr.as_deref(), ctx, now)
                .await?;
            return Err(match locked {
                Some(retry_after) => EmailError::PasswordThrottled { retry_after },
                None => EmailError::WrongPassword,
            });
        }
        if let Some(retry_after) =
            self.mail_budget("verify", user.id.as_str(), MAILS_PER_ACCOUNT_PER_HOUR, now).await?
        {
            return Err(EmailError::Throttled { retry_after });
        }
        let new_key = req.email.key();
        let taken = self.is_address_taken(&req.email, Some(&user.id)).await?;
        let expires_at = now.plus(VERIFY_LINK_TTL);
        let mut mails = Vec::new();
        if let Some(old) = &user.email {
            let to = self.envelope(user, &old.address, now, expires_at);
            mails.push(crate::mail::email_change_requested(&to, req.email.as_str())?);
        }
        let address = (req.email.as_str(), new_key.as_str());
        let (token, mut link) = new_link(LinkPurpose::ChangeEmail, &user.id, address, now, VERIFY_LINK_TTL);
        if taken {
            link.voided_at = Some(now);
        }
        let url = format!("{}/verify-email?token={}", self.settings.issuer, token.expose_secret());
        let to = self.envelope(user, req.email.as_str(), now, expires_at);
        if !taken {
            mails.push(crate::mail::verify_email(&to, &url)?);
        }
        self.store.issue_link(&link, &mails).await?;
        for _ in &mails {
            self.metrics.mail_queued();
        }
        self.mail_queued_notify();
        self.record(self.event(now, "email_change_requested", Some(&user.id), None, Some(ctx))).await;
        Ok(())
    }

    /// Whether a mailed link of `kind` would work now, read without using it: what the
    /// pages behind the links show when they are opened (SPEC 10: opening a link changes
    /// nothing, since mail scanners follow links). Only a hint: the form post judges the
    /// link again as it redeems it.
    ///
    /// # Errors
    /// Storage. The inner error says why the link would be refused.
    pub async fn peek_link(
        &self,
        token: &LinkToken,
        kind: LinkKind,
    ) -> Result<Result<(), LinkTokenReason>, StoreError> {
        if token.kind() != Some(kind) {
            return Ok(Err(LinkTokenReason::Unknown));
        }
        let Some(link) = self.store.find_link(&TokenHash::of(token.expose_secret())).await? else {
            return Ok(Err(LinkTokenReason::Unknown));
        };
        let Some(user) = self.store.find_user(&link.user_id).await? else {
            return Ok(Err(LinkTokenReason::Unknown));
        };
        let judge = match kind {
            LinkKind::Verify => judge_verification,
            LinkKind::Reset => judge_reset,
        };
        Ok(judge(&link, &user, self.clock.now()))
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
        let redeemed =
            match self.store.redeem_link(&hash, now, judge_verification, &LinkEffect::VerifyEmail).await {
                Err(StoreError::Conflict(_)) => return Err(EmailError::EmailTaken),
                other => other?,
            };
        match redeemed {
            LinkRedemption::Unknown => Err(EmailError::Link(LinkTokenReason::Unknown)),
            LinkRedemption::Refused(reason) => Err(EmailError::Link(reason)),
            LinkRedemption::Redeemed { link, .. } => {
                self.record(self.event(now, "email_verified", Some(&link.user_id), None, Some(ctx))).await;
                Ok(())
            }
        }
    }
}
