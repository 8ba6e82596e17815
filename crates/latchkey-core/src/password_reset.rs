//! Recovering an account (SPEC 10 `POST /auth/password/forgot` and
//! `POST /auth/password/reset`): a reset link mailed to the account's address (verified or
//! not), and its use, which sets the password and revokes every session in one
//! transaction.
//!
//! The forgot-password answer tells nothing about accounts, by its content or its timing:
//! it is `202` whether the login names one or not, and the `429` is decided from what the
//! request itself carries (its client address and its login text), never from the account.
//! The request answers once it has passed those throttles; the account is looked up, and
//! its link made and queued, afterwards by one task ([`Latchkey::run_reset_mailer`]) that
//! takes requests in order. The per-account mail cap is applied there, silently.
//!
//! A graceful shutdown waits for the requests already accepted; a request still waiting
//! when the process is killed is lost (the user asks again). A link, once made, is in the
//! outbox with its mail.

use std::sync::Arc;

use latchkey_proto::auth::PasswordResetRequest;
use latchkey_proto::{EmailAddress, LinkKind, LinkTokenReason, Username};

use crate::caller::Caller;
use crate::crypto::TokenHash;
use crate::email_verification::{MAILS_PER_ACCOUNT_PER_HOUR, MAILS_PER_ADDRESS_PER_HOUR};
use crate::link::{RESET_LINK_TTL, judge_reset, new_link};
use crate::password::PasswordError;
use crate::service::Latchkey;
use crate::store::{
    LinkEffect, LinkPurpose, LinkRedemption, StoreError, UserChange, UserChangeKind, UserRecord, UserStatus,
};

/// Why a reset link could not be asked for or used.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// Too many reset mails asked for from this address or for this login; retry after this
    /// many seconds.
    #[error("throttled for {retry_after} s")]
    Throttled {
        /// Seconds.
        retry_after: u64,
    },
    /// The link is used, expired or unknown.
    #[error("link refused: {}", .0.as_str())]
    Link(LinkTokenReason),
    /// The new password breaks the rules (the link is not used up).
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// A mail template failed to render.
    #[error("mail template: {0}")]
    Template(#[from] askama::Error),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How many forgot-password requests may wait for [`Latchkey::run_reset_mailer`]; past it
/// they answer `429` until it catches up.
const QUEUED_RESETS_MAX: usize = 256;

/// A forgot-password request that passed the throttles.
struct QueuedReset {
    login: Username,
    caller: Caller,
}

/// Forgot-password requests waiting for [`Latchkey::run_reset_mailer`], in order.
pub(crate) struct ResetQueue {
    tx: tokio::sync::mpsc::Sender<QueuedReset>,
    /// Taken by the one task that drains the queue.
    rx: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<QueuedReset>>>,
}

impl Default for ResetQueue {
    fn default() -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUED_RESETS_MAX);
        Self { tx, rx: std::sync::Mutex::new(Some(rx)) }
    }
}

impl Latchkey {
    /// The account a forgot-password login names: by username, or by its address whether
    /// verified or not (SPEC 10: the reset link proves the address).
    async fn account_to_recover(&self, login: &Username) -> Result<Option<UserRecord>, StoreError> {
        if let Some(user) = self.store.find_user_by_username(login.as_str()).await? {
            return Ok(Some(user));
        }
        match EmailAddress::parse(login.as_str()) {
            Ok(address) => self.store.find_user_by_email(&address.key()).await,
            Err(_) => Ok(None),
        }
    }

    /// Takes a forgot-password request (`202`): queues it for
    /// [`Latchkey::run_reset_mailer`], which mails a reset link if the login names an account.
    ///
    /// # Errors
    /// [`ResetError::Throttled`] past 20 requests an hour from the client address or 5 for
    /// the login text (the same for every login, existing or not), or while the queue is
    /// full; storage.
    pub async fn forgot_password(&self, login: &Username, ctx: &Caller) -> Result<(), ResetError> {
        let now = self.clock.now();
        if let Some(ip) = ctx.ip.as_deref() {
            let addr = crate::throttle::address_key(ip);
            if let Some(retry_after) =
                self.mail_budget("reset", &addr, MAILS_PER_ADDRESS_PER_HOUR, now).await?
            {
                return Err(ResetError::Throttled { retry_after });
            }
        }
        // The login text, hashed: any login, known or not, gets the same budget and answer.
        let login_key = crate::crypto::b64(&TokenHash::of(&login.as_str().to_lowercase()).0);
        if let Some(retry_after) =
            self.mail_budget("reset-login", &login_key, MAILS_PER_ACCOUNT_PER_HOUR, now).await?
        {
            return Err(ResetError::Throttled { retry_after });
        }
        // Full only under a flood; the answer depends on the queue, never on the account.
        let queued = QueuedReset { login: login.clone(), caller: ctx.clone() };
        self.resets.tx.try_send(queued).map_err(|_| ResetError::Throttled { retry_after: 1 })
    }

    /// The queue's task: makes and queues the reset link of each forgot-password request in
    /// turn. When `stop` completes (the server is shutting down), it takes no more requests
    /// (they answer `429`), deals with those already accepted, and returns. Without it,
    /// requests fill the queue and then answer `429`.
    pub async fn run_reset_mailer(self: Arc<Self>, stop: impl Future<Output = ()>) {
        let taken = self.resets.rx.lock().ok().and_then(|mut rx| rx.take());
        let Some(mut requests) = taken else {
            tracing::error!("a second reset mailer was started; it does nothing");
            return;
        };
        tokio::pin!(stop);
        let mut is_stopping = false;
        loop {
            let next = if is_stopping {
                requests.recv().await
            } else {
                tokio::select! {
                    next = requests.recv() => next,
                    () = &mut stop => {
                        // What is already queued is still received, then `None`.
                        requests.close();
                        is_stopping = true;
                        continue;
                    }
                }
            };
            let Some(QueuedReset { login, caller }) = next else { return };
            if let Err(e) = self.mail_reset_link(&login, &caller).await {
                tracing::warn!(error = %e, "a password reset link could not be queued");
            }
        }
    }

    /// Mails a reset link to the account `login` names, if it has an address and is under
    /// its hourly cap.
    async fn mail_reset_link(&self, login: &Username, ctx: &Caller) -> Result<(), ResetError> {
        let now = self.clock.now();
        let Some(user) = self.account_to_recover(login).await? else { return Ok(()) };
        let Some(email) = user.email.as_ref().filter(|_| user.status == UserStatus::Active) else {
            return Ok(());
        };
        // Silently capped per account: a 429 here would tell that the account exists.
        if self.mail_budget("reset", user.id.as_str(), MAILS_PER_ACCOUNT_PER_HOUR, now).await?.is_some() {
            return Ok(());
        }
        let address = (email.address.as_str(), email.key.as_str());
        let (token, link) = new_link(LinkPurpose::PasswordReset, &user.id, address, now, RESET_LINK_TTL);
        let expires_at = link.expires_at;
        let url = format!("{}/reset-password?token={}", self.settings.issuer, token.expose_secret());
        let to = self.envelope(&user, &email.address, now, expires_at);
        let mail = crate::mail::password_reset(&to, &url)?;
        self.store.issue_link(&link, &[mail]).await?;
        self.metrics.mail_queued();
        self.mail_queued_notify();
        self.record(self.event(now, "password_reset_requested", Some(&user.id), None, Some(ctx))).await;
        Ok(())
    }

    /// Sets a new password with a reset link (`204`): every session of the user is revoked
    /// (feed events), `user_changed` is published, the user's other reset links are voided,
    /// and the address the link went to counts as verified.
    ///
    /// # Errors
    /// [`ResetError::Password`] (the link stays usable), [`ResetError::Link`], storage.
    pub async fn reset_password(&self, req: PasswordResetRequest, ctx: &Caller) -> Result<(), ResetError> {
        crate::password::check_new_password(&req.new_password)?;
        if req.token.kind() != Some(LinkKind::Reset) {
            return Err(ResetError::Link(LinkTokenReason::Unknown));
        }
        let now = self.clock.now();
        let hash = TokenHash::of(req.token.expose_secret());
        // The change names the link's user, so the link is read first; the redemption
        // locks it and judges it again.
        let Some(link) = self.store.find_link(&hash).await? else {
            return Err(ResetError::Link(LinkTokenReason::Unknown));
        };
        let password_hash = self.passwords.hash(&req.new_password).await?;
        let change = UserChange {
            user_id: link.user_id.clone(),
            kind: UserChangeKind::SetPassword { password_hash, keep_session: None },
            now,
            until: self.revocation_until(now),
            event: self.event(now, "password_reset", Some(&link.user_id), None, Some(ctx)),
        };
        let effect = LinkEffect::ResetPassword(Box::new(change));
        match self.store.redeem_link(&hash, now, judge_reset, &effect).await? {
            LinkRedemption::Unknown => Err(ResetError::Link(LinkTokenReason::Unknown)),
            LinkRedemption::Refused(reason) => Err(ResetError::Link(reason)),
            LinkRedemption::Redeemed { change, .. } => {
                self.feed.changed();
                if let Some((_, revoked)) = change {
                    self.metrics
                        .revocations(latchkey_proto::ErrorReason::PasswordChanged.as_str(), revoked.len());
                }
                if let Some(user) = self.store.find_user(&link.user_id).await? {
                    self.store.delete_throttle(&crate::throttle::account_key(&user.username)).await?;
                }
                Ok(())
            }
        }
    }
}
