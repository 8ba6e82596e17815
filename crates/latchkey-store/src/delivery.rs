//! What the two delivery queues share (the mail outbox, `outbox.rs`, and back-channel
//! logout, `logout_deliveries.rs`): claiming due rows for a lease and completing a claimed
//! row, written once against each queue's statements ([`QueueSql`]). Every completion
//! checks the claim, so a sender whose lease lapsed changes nothing.

use latchkey_core::store::DeliveryOutcome;

use crate::db::{Conn, DbError, Row, Sql, params, query_all};

/// One queue's statements. Placeholders: `claim` `$1` claimer, `$2` lease end, `$3` now,
/// `$4` limit; `sent` `$1` id, `$2` claimer, `$3` now; `retry` `$1` id, `$2` claimer,
/// `$3` due, `$4` error; `failed` `$1` id, `$2` claimer, `$3` error.
pub(crate) struct QueueSql {
    pub(crate) claim: &'static Sql,
    pub(crate) sent: &'static Sql,
    pub(crate) retry: &'static Sql,
    pub(crate) failed: &'static Sql,
}

/// Claims up to `limit` due rows of a queue, oldest first (`RETURNING` gives no order).
pub(crate) async fn claim_due<T: Send>(
    c: &mut dyn Conn,
    q: &QueueSql,
    (claimer, now, lease_until, limit): (String, i64, i64, i64),
    read: fn(&dyn Row) -> Result<T, DbError>,
    id_of: fn(&T) -> i64,
) -> Result<Vec<T>, DbError> {
    let mut rows = query_all(c, q.claim, params![&claimer, lease_until, now, limit], read).await?;
    rows.sort_by_key(id_of);
    Ok(rows)
}

/// Records how an attempt of a claimed row ended; `false` when `claimer` no longer holds it.
pub(crate) async fn complete(
    c: &mut dyn Conn,
    q: &QueueSql,
    (id, claimer, now, outcome): (i64, String, i64, DeliveryOutcome),
) -> Result<bool, DbError> {
    let n = match &outcome {
        DeliveryOutcome::Sent => c.execute(q.sent, params![id, &claimer, now]).await?,
        DeliveryOutcome::Retry { at, error } => {
            c.execute(q.retry, params![id, &claimer, at.0, error]).await?
        }
        DeliveryOutcome::Failed { error } => c.execute(q.failed, params![id, &claimer, error]).await?,
    };
    Ok(n > 0)
}
