//! Revoking sessions, written once for every caller that does it (logout, a user change,
//! code reuse, rotation's reuse detection): sessions change in id order, the lock order,
//! and their feed events follow the feed lock, taken last. Each ended session of an app
//! with a `backchannel_logout_uri` queues its logout token in the same transaction.

use latchkey_core::ids::{SessionId, UserId};
use latchkey_core::store::SessionRevocation;

use crate::audit::insert_security_event;
use crate::db::{Conn, DbError, Sql, first_id, params, query_all};
use crate::feed::insert_session_revoked;
use crate::logout_deliveries::queue_logout_deliveries;

static MARK_REVOKED: Sql =
    Sql::new("UPDATE sessions SET revoked_at = $1, revoke_reason = $2 WHERE id = $3 AND revoked_at IS NULL");
static LIVE_IDS_OF_USER: Sql =
    Sql::new("SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND id IS DISTINCT FROM $2");

/// The ids of a user's sessions that are not revoked, except `keep`.
pub(crate) async fn live_session_ids(
    c: &mut dyn Conn,
    user_id: &UserId,
    keep: Option<&SessionId>,
) -> Result<Vec<SessionId>, DbError> {
    query_all(c, &LIVE_IDS_OF_USER, params![user_id, keep], first_id).await
}

/// Revokes the given sessions that are not yet revoked, with a feed event each and the
/// security event. Sessions are changed in id order, the lock order, so two revocations of
/// overlapping sets cannot deadlock; the feed lock comes after every row lock. Returns the
/// ids it revoked, in the order given.
pub(crate) async fn revoke_in_tx(
    c: &mut dyn Conn,
    ids: Vec<SessionId>,
    rev: &SessionRevocation,
) -> Result<Vec<SessionId>, DbError> {
    let revoked = mark_revoked(c, ids, rev).await?;
    publish_revoked(c, &revoked, rev).await?;
    Ok(revoked)
}

/// The first half of [`revoke_in_tx`]: marks the given sessions that are not yet revoked,
/// in id order (which locks them in that order on PostgreSQL). Returns those it changed, in
/// the order given. A transaction that has more rows to change (a user change) calls this,
/// then takes the feed lock, so that no row lock is ever taken after the feed lock.
pub(crate) async fn mark_revoked(
    c: &mut dyn Conn,
    ids: Vec<SessionId>,
    rev: &SessionRevocation,
) -> Result<Vec<SessionId>, DbError> {
    let mut in_lock_order: Vec<&SessionId> = ids.iter().collect();
    in_lock_order.sort();
    in_lock_order.dedup();
    let mut changed = Vec::with_capacity(ids.len());
    for id in in_lock_order {
        // Under READ COMMITTED, an UPDATE that waited for the row re-checks `revoked_at IS
        // NULL` on the latest version, so a session revoked meanwhile is left out.
        if c.execute(&MARK_REVOKED, params![rev.now.0, rev.reason.as_str(), id]).await? == 1 {
            changed.push(id.clone());
        }
    }
    Ok(ids.into_iter().filter(|id| changed.contains(id)).collect())
}

/// The second half of [`revoke_in_tx`]: one `session_revoked` feed event per revoked
/// session and the security event, after the feed lock (a no-op when it is held already),
/// and a back-channel logout delivery for each session whose app listens for them.
pub(crate) async fn publish_revoked(
    c: &mut dyn Conn,
    revoked: &[SessionId],
    rev: &SessionRevocation,
) -> Result<(), DbError> {
    if revoked.is_empty() {
        return Ok(());
    }
    c.lock_feed().await?;
    for id in revoked {
        insert_session_revoked(c, id, rev).await?;
    }
    insert_security_event(c, &rev.event_for(revoked)).await?;
    queue_logout_deliveries(c, revoked, rev.now).await
}
