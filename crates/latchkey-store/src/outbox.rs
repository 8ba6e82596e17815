//! The outbox ([`OutboxStore`]), for both backends: mail written in the transaction of its
//! cause (a link is queued by `links.rs` with its link), listed for `latchkey mail list`,
//! and claimed, completed and expired by the sender (`latchkey_core::outbox`).
//!
//! Claiming is one statement, `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)
//! RETURNING …`. On PostgreSQL the subquery locks the due rows it picks and skips rows
//! another node's claim holds locked; under READ COMMITTED a row that another claim
//! committed meanwhile is re-checked against the `WHERE` on its newest version and drops
//! out, so two nodes never claim one mail at once. It locks only outbox rows and takes no
//! other lock. On SQLite the lock clause is stripped (`Sql::sqlite`) and the single writer
//! serialises claims. Completion checks `claimed_by`, so a sender whose lease lapsed and
//! whose mail another sender took changes nothing.

use async_trait::async_trait;
use latchkey_core::StoreError;
use latchkey_core::clock::Timestamp;
use latchkey_core::store::{DeliveryOutcome, DeliveryState, MailRecord, NewMail, OutboxStore};

use crate::db::{
    Access, Backend, Conn, Db, DbError, OpFuture, Sql, first_int, op, params, query_all, query_one,
};
use crate::delivery::{self, QueueSql, claim_due};
use crate::rows::{self, mail_columns};

static INSERT_MAIL: Sql = Sql::new(
    "INSERT INTO outbox (kind, user_id, recipient, subject, text_body, html_body, created_at, expires_at, \
     state, attempts, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', 0, $7)",
);
static LIST_MAIL: Sql =
    Sql::new(concat!("SELECT ", mail_columns!(), " FROM outbox WHERE state = $1 ORDER BY id DESC LIMIT $2"));
static LIST_ALL_MAIL: Sql =
    Sql::new(concat!("SELECT ", mail_columns!(), " FROM outbox ORDER BY id DESC LIMIT $1"));

/// Claims due mail: `$1` claimer, `$2` lease end, `$3` now, `$4` limit.
static CLAIM_MAIL: Sql = Sql::new(concat!(
    "UPDATE outbox SET claimed_by = $1, claimed_until = $2, attempts = attempts + 1 \
     WHERE id IN (SELECT id FROM outbox \
                   WHERE state = 'pending' AND next_attempt_at <= $3 AND expires_at > $3 \
                     AND (claimed_until IS NULL OR claimed_until <= $3) \
                   ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) \
     RETURNING ",
    mail_columns!()
));
static MARK_SENT: Sql = Sql::new(
    "UPDATE outbox SET state = 'sent', sent_at = $3, last_error = NULL, text_body = NULL, \
     html_body = NULL, claimed_by = NULL, claimed_until = NULL \
     WHERE id = $1 AND claimed_by = $2 AND state = 'pending'",
);
static MARK_RETRY: Sql = Sql::new(
    "UPDATE outbox SET next_attempt_at = $3, last_error = $4, claimed_by = NULL, claimed_until = NULL \
     WHERE id = $1 AND claimed_by = $2 AND state = 'pending'",
);
static MARK_FAILED: Sql = Sql::new(
    "UPDATE outbox SET state = 'failed', last_error = $3, text_body = NULL, html_body = NULL, \
     claimed_by = NULL, claimed_until = NULL \
     WHERE id = $1 AND claimed_by = $2 AND state = 'pending'",
);
static QUEUE_SQL: QueueSql =
    QueueSql { claim: &CLAIM_MAIL, sent: &MARK_SENT, retry: &MARK_RETRY, failed: &MARK_FAILED };
/// A mail being sent under a live lease is left to its sender, which completes it.
static EXPIRE_MAIL: Sql = Sql::new(
    "UPDATE outbox SET state = 'expired', text_body = NULL, html_body = NULL, claimed_by = NULL, \
     claimed_until = NULL \
     WHERE state = 'pending' AND expires_at <= $1 AND (claimed_until IS NULL OR claimed_until <= $1)",
);
static COUNT_PENDING: Sql = Sql::new("SELECT COUNT(*) FROM outbox WHERE state = 'pending'");

pub(crate) async fn insert_mail_in_tx(c: &mut dyn Conn, m: &NewMail) -> Result<(), DbError> {
    let p = params![
        m.kind,
        m.user_id.as_ref(),
        &m.recipient,
        &m.subject,
        &m.text,
        &m.html,
        m.created_at.0,
        m.expires_at.0
    ];
    c.execute(&INSERT_MAIL, p).await.map(|_| ())
}

fn queue(c: &mut dyn Conn, mail: NewMail) -> OpFuture<'_, ()> {
    Box::pin(async move { insert_mail_in_tx(c, &mail).await })
}

fn list(c: &mut dyn Conn, (state, limit): (Option<DeliveryState>, i64)) -> OpFuture<'_, Vec<MailRecord>> {
    Box::pin(async move {
        match state {
            Some(s) => query_all(c, &LIST_MAIL, params![s.as_str(), limit], rows::mail).await,
            None => query_all(c, &LIST_ALL_MAIL, params![limit], rows::mail).await,
        }
    })
}

fn claim(c: &mut dyn Conn, args: (String, i64, i64, i64)) -> OpFuture<'_, Vec<MailRecord>> {
    Box::pin(async move { claim_due(c, &QUEUE_SQL, args, rows::mail, |r| r.id).await })
}

fn complete(c: &mut dyn Conn, args: (i64, String, i64, DeliveryOutcome)) -> OpFuture<'_, bool> {
    Box::pin(async move { delivery::complete(c, &QUEUE_SQL, args).await })
}

fn expire(c: &mut dyn Conn, now: i64) -> OpFuture<'_, u64> {
    Box::pin(async move { c.execute(&EXPIRE_MAIL, params![now]).await })
}

fn count_pending(c: &mut dyn Conn, (): ()) -> OpFuture<'_, i64> {
    Box::pin(async move { query_one(c, &COUNT_PENDING, params![], first_int).await })
}

#[async_trait]
impl<B: Backend> OutboxStore for Db<B> {
    async fn queue_mail(&self, mail: &NewMail) -> Result<(), StoreError> {
        self.0.run(Access::Transaction, op(mail.clone(), queue)).await
    }

    async fn list_mail(
        &self,
        state: Option<DeliveryState>,
        limit: i64,
    ) -> Result<Vec<MailRecord>, StoreError> {
        self.0.run(Access::Scan, op((state, limit), list)).await
    }

    async fn claim_mail(
        &self,
        claimer: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: i64,
    ) -> Result<Vec<MailRecord>, StoreError> {
        let args = (claimer.to_owned(), now.0, lease_until.0, limit);
        self.0.run(Access::Transaction, op(args, claim)).await
    }

    async fn complete_mail(
        &self,
        id: i64,
        claimer: &str,
        now: Timestamp,
        outcome: &DeliveryOutcome,
    ) -> Result<bool, StoreError> {
        let args = (id, claimer.to_owned(), now.0, outcome.clone());
        self.0.run(Access::Statement, op(args, complete)).await
    }

    async fn expire_mail(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.0.run(Access::Statement, op(now.0, expire)).await
    }

    async fn count_pending_mail(&self) -> Result<i64, StoreError> {
        self.0.run(Access::Scan, op((), count_pending)).await
    }
}
