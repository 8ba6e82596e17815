//! The back-channel logout queue ([`LogoutDeliveryStore`], SPEC 13), for both backends.
//! Rows are queued by [`queue_logout_deliveries`], which every revocation calls in its own
//! transaction; the sender claims, completes and expires them exactly as the mail sender
//! does the outbox (see `outbox.rs` for why a claim is one statement and never doubles).

use async_trait::async_trait;
use latchkey_core::StoreError;
use latchkey_core::clock::Timestamp;
use latchkey_core::ids::SessionId;
use latchkey_core::store::{DeliveryOutcome, DeliveryState, LogoutDeliveryRecord, LogoutDeliveryStore};

use crate::db::{Access, Backend, Conn, Db, DbError, OpFuture, Sql, op, params, query_all, query_one};
use crate::delivery::{self, QueueSql, claim_due};
use crate::rows::{self, logout_delivery_columns};

/// How long a logout token is tried (SPEC 13: at least 24 hours).
pub(crate) const RETRY_FOR_SECONDS: i64 = 25 * 3600;

/// Queues one delivery for a revoked session whose app registered a
/// `backchannel_logout_uri` (none otherwise): `$1` session, `$2` now, `$3` give-up time.
static QUEUE: Sql = Sql::new(
    "INSERT INTO logout_deliveries (client_id, uri, user_id, session_id, created_at, expires_at, state, \
     attempts, next_attempt_at) \
     SELECT s.client_id, c.backchannel_logout_uri, s.user_id, s.id, $2, $3, 'pending', 0, $2 \
     FROM sessions s JOIN clients c ON c.client_id = s.client_id \
     WHERE s.id = $1 AND c.backchannel_logout_uri IS NOT NULL",
);
/// `$1` claimer, `$2` lease end, `$3` now, `$4` limit. Deliveries tried least come first,
/// so an app whose endpoint keeps failing cannot hold back another app's first attempt.
static CLAIM: Sql = Sql::new(concat!(
    "UPDATE logout_deliveries SET claimed_by = $1, claimed_until = $2, attempts = attempts + 1 \
     WHERE id IN (SELECT id FROM logout_deliveries \
                   WHERE state = 'pending' AND next_attempt_at <= $3 AND expires_at > $3 \
                     AND (claimed_until IS NULL OR claimed_until <= $3) \
                   ORDER BY attempts, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
     RETURNING ",
    logout_delivery_columns!()
));
static MARK_SENT: Sql = Sql::new(
    "UPDATE logout_deliveries SET state = 'sent', delivered_at = $3, last_error = NULL, claimed_by = NULL, \
     claimed_until = NULL WHERE id = $1 AND claimed_by = $2 AND state = 'pending'",
);
static MARK_RETRY: Sql = Sql::new(
    "UPDATE logout_deliveries SET next_attempt_at = $3, last_error = $4, claimed_by = NULL, \
     claimed_until = NULL WHERE id = $1 AND claimed_by = $2 AND state = 'pending'",
);
static MARK_FAILED: Sql = Sql::new(
    "UPDATE logout_deliveries SET state = 'failed', last_error = $3, claimed_by = NULL, claimed_until = NULL \
     WHERE id = $1 AND claimed_by = $2 AND state = 'pending'",
);
static QUEUE_SQL: QueueSql =
    QueueSql { claim: &CLAIM, sent: &MARK_SENT, retry: &MARK_RETRY, failed: &MARK_FAILED };
static EXPIRE: Sql = Sql::new(
    "UPDATE logout_deliveries SET state = 'expired', claimed_by = NULL, claimed_until = NULL \
     WHERE state = 'pending' AND expires_at <= $1 AND (claimed_until IS NULL OR claimed_until <= $1)",
);
static BACKLOG: Sql =
    Sql::new("SELECT COUNT(*), MIN(created_at) FROM logout_deliveries WHERE state = 'pending'");
static LIST: Sql = Sql::new(concat!(
    "SELECT ",
    logout_delivery_columns!(),
    " FROM logout_deliveries WHERE state = $1 ORDER BY id DESC LIMIT $2"
));
static LIST_ALL: Sql = Sql::new(concat!(
    "SELECT ",
    logout_delivery_columns!(),
    " FROM logout_deliveries ORDER BY id DESC LIMIT $1"
));

/// Queues a logout token for each of `revoked` whose app listens for them, in the
/// revoking transaction (so a revocation and its deliveries commit together or not at all).
pub(crate) async fn queue_logout_deliveries(
    c: &mut dyn Conn,
    revoked: &[SessionId],
    now: Timestamp,
) -> Result<(), DbError> {
    let give_up = now.0.saturating_add(RETRY_FOR_SECONDS);
    for id in revoked {
        c.execute(&QUEUE, params![id, now.0, give_up]).await?;
    }
    Ok(())
}

fn claim(c: &mut dyn Conn, args: (String, i64, i64, i64)) -> OpFuture<'_, Vec<LogoutDeliveryRecord>> {
    Box::pin(async move { claim_due(c, &QUEUE_SQL, args, rows::logout_delivery, |r| r.id).await })
}

fn complete(c: &mut dyn Conn, args: (i64, String, i64, DeliveryOutcome)) -> OpFuture<'_, bool> {
    Box::pin(async move { delivery::complete(c, &QUEUE_SQL, args).await })
}

fn expire(c: &mut dyn Conn, now: i64) -> OpFuture<'_, u64> {
    Box::pin(async move { c.execute(&EXPIRE, params![now]).await })
}

fn backlog(c: &mut dyn Conn, (): ()) -> OpFuture<'_, (i64, Option<Timestamp>)> {
    Box::pin(async move {
        query_one(c, &BACKLOG, params![], |row| Ok((row.int(0)?, row.opt_int(1)?.map(Timestamp)))).await
    })
}

fn list(
    c: &mut dyn Conn,
    (state, limit): (Option<DeliveryState>, i64),
) -> OpFuture<'_, Vec<LogoutDeliveryRecord>> {
    Box::pin(async move {
        match state {
            Some(s) => query_all(c, &LIST, params![s.as_str(), limit], rows::logout_delivery).await,
            None => query_all(c, &LIST_ALL, params![limit], rows::logout_delivery).await,
        }
    })
}

#[async_trait]
impl<B: Backend> LogoutDeliveryStore for Db<B> {
    async fn claim_logout_deliveries(
        &self,
        claimer: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: i64,
    ) -> Result<Vec<LogoutDeliveryRecord>, StoreError> {
        let args = (claimer.to_owned(), now.0, lease_until.0, limit);
        self.0.run(Access::Transaction, op(args, claim)).await
    }

    async fn complete_logout_delivery(
        &self,
        id: i64,
        claimer: &str,
        now: Timestamp,
        outcome: &DeliveryOutcome,
    ) -> Result<bool, StoreError> {
        let args = (id, claimer.to_owned(), now.0, outcome.clone());
        self.0.run(Access::Statement, op(args, complete)).await
    }

    async fn expire_logout_deliveries(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.0.run(Access::Statement, op(now.0, expire)).await
    }

    async fn logout_delivery_backlog(&self) -> Result<(i64, Option<Timestamp>), StoreError> {
        self.0.run(Access::Scan, op((), backlog)).await
    }

    async fn list_logout_deliveries(
        &self,
        state: Option<DeliveryState>,
        limit: i64,
    ) -> Result<Vec<LogoutDeliveryRecord>, StoreError> {
        self.0.run(Access::Scan, op((state, limit), list)).await
    }
}
