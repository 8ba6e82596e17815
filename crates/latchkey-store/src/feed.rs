//! The revocation feed's events ([`FeedStore`]), for both backends. Every insert of a feed
//! event happens after the transaction took the feed lock ([`Conn::lock_feed`]), so that
//! events become visible in seq order (the PostgreSQL module doc says why that matters).

use async_trait::async_trait;
use latchkey_core::StoreError;
use latchkey_core::clock::Timestamp;
use latchkey_core::ids::SessionId;
use latchkey_core::store::{FeedEventRecord, FeedStore, SessionRevocation, UserChange};

use crate::db::{Access, Backend, Conn, Db, DbError, OpFuture, Sql, op, params, query_all, query_opt};
use crate::rows::{self, feed_columns};

static SESSION_REVOKED: Sql = Sql::new(
    "INSERT INTO revocation_events (type, sid, until, created_at) VALUES ('session_revoked', $1, $2, $3)",
);
static USER_CHANGED: Sql = Sql::new(
    "INSERT INTO revocation_events (type, sub, authz_ver, until, created_at) VALUES ('user_changed', $1, $2, $3, $4)",
);
static TOKEN_REVOKED: Sql = Sql::new(
    "INSERT INTO revocation_events (type, jti, until, created_at) VALUES ('token_revoked', $1, $2, $3)",
);
static JTI_KNOWN: Sql = Sql::new("SELECT seq FROM revocation_events WHERE jti = $1 LIMIT 1");
static AFTER: Sql = Sql::new(concat!(
    "SELECT ",
    feed_columns!(),
    " FROM revocation_events WHERE seq > $1 AND until > $2 ORDER BY seq LIMIT $3"
));

/// A `session_revoked` event. The caller holds the feed lock.
pub(crate) async fn insert_session_revoked(
    c: &mut dyn Conn,
    sid: &SessionId,
    rev: &SessionRevocation,
) -> Result<(), DbError> {
    c.execute(&SESSION_REVOKED, params![sid, rev.until.0, rev.now.0]).await.map(|_| ())
}

/// The `user_changed` event of a change, and its security event; takes the feed lock.
pub(crate) async fn insert_user_changed(
    c: &mut dyn Conn,
    change: &UserChange,
    authz_ver: i64,
) -> Result<(), DbError> {
    c.lock_feed().await?;
    c.execute(&USER_CHANGED, params![&change.user_id, authz_ver, change.until.0, change.now.0]).await?;
    crate::audit::insert_security_event(c, &change.event).await
}

/// Publishes `token_revoked` once per jti. The feed lock is taken before the check, so two
/// nodes revoking one token at once publish one event.
fn revoke_token(c: &mut dyn Conn, (jti, until, now): (String, i64, i64)) -> OpFuture<'_, ()> {
    Box::pin(async move {
        c.lock_feed().await?;
        if query_opt(c, &JTI_KNOWN, params![&jti], crate::db::first_int).await?.is_none() {
            c.execute(&TOKEN_REVOKED, params![&jti, until, now]).await?;
        }
        Ok(())
    })
}

fn is_revoked(c: &mut dyn Conn, jti: String) -> OpFuture<'_, bool> {
    Box::pin(
        async move { Ok(query_opt(c, &JTI_KNOWN, params![&jti], crate::db::first_int).await?.is_some()) },
    )
}

fn after(c: &mut dyn Conn, (after, now, limit): (i64, i64, i64)) -> OpFuture<'_, Vec<FeedEventRecord>> {
    // A plain read: events commit in seq order, so the snapshot this statement sees holds
    // every event up to its highest seq, and `seq > after` on the next page skips none.
    Box::pin(async move { query_all(c, &AFTER, params![after, now, limit], rows::feed_event).await })
}

#[async_trait]
impl<B: Backend> FeedStore for Db<B> {
    async fn revoke_access_token(
        &self,
        jti: &str,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.0.run(Access::Transaction, op((jti.to_owned(), until.0, now.0), revoke_token)).await
    }

    async fn is_access_token_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        self.0.run(Access::Point, op(jti.to_owned(), is_revoked)).await
    }

    async fn last_feed_seq(&self) -> Result<i64, StoreError> {
        self.0.last_feed_seq().await
    }

    async fn list_feed_events(
        &self,
        after_seq: i64,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<FeedEventRecord>, StoreError> {
        self.0.run(Access::Scan, op((after_seq, now.0, limit), after)).await
    }
}
