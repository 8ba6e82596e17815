//! Link tokens ([`LinkStore`]), for both backends. A link is issued with its mail (see
//! `outbox.rs`) in one transaction; a redemption locks the link row first, then
//! the user row (through the change it applies), then sessions and the feed, the lock order
//! of the PostgreSQL module doc.

use async_trait::async_trait;
use latchkey_core::StoreError;
use latchkey_core::clock::Timestamp;
use latchkey_core::crypto::TokenHash;
use latchkey_core::store::{
    LinkEffect, LinkJudge, LinkPurpose, LinkRecord, LinkRedemption, LinkStore, NewMail,
};

use crate::db::{Access, Backend, Conn, Db, OpFuture, Sql, op, params, query_opt};
use crate::outbox::insert_mail_in_tx;
use crate::rows::{self, link_columns};

static INSERT_LINK: Sql = Sql::new(concat!(
    "INSERT INTO link_tokens (",
    link_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL)"
));
static VOID_OLDER: Sql = Sql::new(
    "UPDATE link_tokens SET voided_at = $1 WHERE user_id = $2 AND purpose = $3 AND used_at IS NULL \
     AND voided_at IS NULL",
);
static BY_HASH: Sql = Sql::new(concat!("SELECT ", link_columns!(), " FROM link_tokens WHERE hash = $1"));
static LOCK: Sql =
    Sql::new(concat!("SELECT ", link_columns!(), " FROM link_tokens WHERE hash = $1 FOR UPDATE"));
static MARK_USED: Sql = Sql::new("UPDATE link_tokens SET used_at = $1 WHERE hash = $2");
static VOID_OTHER_RESETS: Sql = Sql::new(
    "UPDATE link_tokens SET voided_at = $1 WHERE user_id = $2 AND purpose = 'password_reset' \
     AND hash <> $3 AND used_at IS NULL AND voided_at IS NULL",
);
static SET_ADDRESS: Sql =
    Sql::new("UPDATE users SET email = $1, email_key = $2, email_verified_at = $3 WHERE id = $4");
static VOID_RESETS: Sql = Sql::new(
    "UPDATE link_tokens SET voided_at = $1 WHERE user_id = $2 AND purpose = 'password_reset' \
     AND used_at IS NULL AND voided_at IS NULL",
);
static VERIFY_ADDRESS: Sql = Sql::new(
    "UPDATE users SET email_verified_at = $1 WHERE id = $2 AND email_key = $3 AND email_verified_at IS NULL",
);
fn issue(c: &mut dyn Conn, (link, mails): (LinkRecord, Vec<NewMail>)) -> OpFuture<'_, ()> {
    Box::pin(async move {
        let purpose = link.purpose.as_str();
        c.execute(&VOID_OLDER, params![link.created_at.0, &link.user_id, purpose]).await?;
        let p = params![
            &link.hash.0,
            purpose,
            &link.user_id,
            &link.email,
            &link.email_key,
            link.created_at.0,
            link.expires_at.0
        ];
        c.execute(&INSERT_LINK, p).await?;
        for mail in &mails {
            insert_mail_in_tx(c, mail).await?;
        }
        Ok(())
    })
}

fn by_hash(c: &mut dyn Conn, hash: [u8; 32]) -> OpFuture<'_, Option<LinkRecord>> {
    Box::pin(async move { query_opt(c, &BY_HASH, params![&hash], rows::link).await })
}

fn redeem(
    c: &mut dyn Conn,
    (hash, now, judge, effect): ([u8; 32], Timestamp, LinkJudge, LinkEffect),
) -> OpFuture<'_, LinkRedemption> {
    Box::pin(async move {
        let Some(link) = query_opt(c, &LOCK, params![&hash], rows::link).await? else {
            return Ok(LinkRedemption::Unknown);
        };
        let Some(user) = query_opt(c, &crate::users::BY_ID, params![&link.user_id], rows::user).await? else {
            return Ok(LinkRedemption::Unknown);
        };
        if let Err(reason) = judge(&link, &user, now) {
            return Ok(LinkRedemption::Refused(reason));
        }
        c.execute(&MARK_USED, params![now.0, &hash]).await?;
        if link.purpose == LinkPurpose::ChangeEmail {
            let p = params![&link.email, &link.email_key, now.0, &link.user_id];
            c.execute(&SET_ADDRESS, p).await?;
            c.execute(&VOID_RESETS, params![now.0, &link.user_id]).await?;
        } else {
            c.execute(&VERIFY_ADDRESS, params![now.0, &link.user_id, &link.email_key]).await?;
        }
        let change = match effect {
            LinkEffect::VerifyEmail => None,
            LinkEffect::ResetPassword(change) => {
                c.execute(&VOID_OTHER_RESETS, params![now.0, &link.user_id, &hash]).await?;
                crate::users::apply_change(c, *change).await?
            }
        };
        Ok(LinkRedemption::Redeemed { link, change })
    })
}

#[async_trait]
impl<B: Backend> LinkStore for Db<B> {
    async fn issue_link(&self, link: &LinkRecord, mails: &[NewMail]) -> Result<(), StoreError> {
        self.0.run(Access::Transaction, op((link.clone(), mails.to_vec()), issue)).await
    }

    async fn find_link(&self, hash: &TokenHash) -> Result<Option<LinkRecord>, StoreError> {
        self.0.run(Access::Point, op(hash.0, by_hash)).await
    }

    async fn redeem_link(
        &self,
        hash: &TokenHash,
        now: Timestamp,
        judge: LinkJudge,
        effect: &LinkEffect,
    ) -> Result<LinkRedemption, StoreError> {
        self.0.run(Access::Transaction, op((hash.0, now, judge, effect.clone()), redeem)).await
    }
}
