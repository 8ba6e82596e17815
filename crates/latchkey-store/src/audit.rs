//! Security events ([`AuditStore`]), for both backends.

use async_trait::async_trait;
use latchkey_core::StoreError;
use latchkey_core::refresh::BINDING_ANOMALY;
use latchkey_core::store::{ANOMALY_QUIET, AuditStore, NewSecurityEvent, SecurityEventRecord};

use crate::db::{Access, Backend, Conn, Db, DbError, OpFuture, Sql, op, params, query_all};
use crate::rows;

static INSERT: Sql = Sql::new(
    "INSERT INTO security_events (at, kind, user_id, session_id, ip, detail) VALUES ($1, $2, $3, $4, $5, $6)",
);
static LATEST: Sql = Sql::new(
    "SELECT id, at, kind, user_id, session_id, ip, detail FROM security_events ORDER BY id DESC LIMIT $1",
);

/// The same, unless the session already has an event of this kind and detail from the same
/// address at or after `$7` (a thief elsewhere showing the same anomaly is still recorded).
/// The `kind IN (…)` term names the partial index's kinds, so the check is one index probe
/// (SQLite uses a partial index only for a query that states its condition).
static INSERT_UNLESS_REPEATED: Sql = Sql::new(
    "INSERT INTO security_events (at, kind, user_id, session_id, ip, detail) \
     SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS (SELECT 1 FROM security_events \
     WHERE kind IN ('binding_anomaly', 'refresh_risk') AND session_id = $4 AND kind = $2 \
     AND detail = $6 AND COALESCE(ip, '') = COALESCE($5, '') AND at >= $7)",
);

/// Records a security event in the caller's transaction.
pub(crate) async fn insert_security_event(c: &mut dyn Conn, e: &NewSecurityEvent) -> Result<(), DbError> {
    c.execute(&INSERT, params![e.at.0, e.kind, &e.user_id, &e.session_id, &e.ip, &e.detail]).await.map(|_| ())
}

/// Records the events of a refresh that goes on, in the caller's transaction: a
/// `binding_anomaly` once per [`ANOMALY_QUIET`] for the same detail and address (see
/// there), every other event (a risk decision: SPEC 12) always.
pub(crate) async fn insert_refresh_events(
    c: &mut dyn Conn,
    events: &[NewSecurityEvent],
) -> Result<(), DbError> {
    for e in events {
        if e.kind == BINDING_ANOMALY {
            insert_anomaly(c, e).await?;
        } else {
            insert_security_event(c, e).await?;
        }
    }
    Ok(())
}

async fn insert_anomaly(c: &mut dyn Conn, e: &NewSecurityEvent) -> Result<(), DbError> {
    let since = e.at.0.saturating_sub(i64::try_from(ANOMALY_QUIET.as_secs()).unwrap_or(i64::MAX));
    let p = params![e.at.0, e.kind, &e.user_id, &e.session_id, &e.ip, &e.detail, since];
    c.execute(&INSERT_UNLESS_REPEATED, p).await.map(|_| ())
}

fn insert(c: &mut dyn Conn, e: NewSecurityEvent) -> OpFuture<'_, ()> {
    Box::pin(async move { insert_security_event(c, &e).await })
}

fn latest(c: &mut dyn Conn, limit: i64) -> OpFuture<'_, Vec<SecurityEventRecord>> {
    Box::pin(async move { query_all(c, &LATEST, params![limit], rows::security_event).await })
}

#[async_trait]
impl<B: Backend> AuditStore for Db<B> {
    async fn insert_security_event(&self, event: &NewSecurityEvent) -> Result<(), StoreError> {
        self.0.run(Access::Statement, op(event.clone(), insert)).await
    }

    async fn list_security_events(&self, limit: i64) -> Result<Vec<SecurityEventRecord>, StoreError> {
        self.0.run(Access::Scan, op(limit, latest)).await
    }
}
