//! Throttling counters ([`ThrottleStore`]), for both backends.

use async_trait::async_trait;
use latchkey_core::StoreError;
use latchkey_core::clock::Timestamp;
use latchkey_core::store::{ThrottleRecord, ThrottleStore};

use crate::db::{Access, Backend, Conn, Db, OpFuture, Sql, op, params, query_one, query_opt};
use crate::rows;

static FIND: Sql = Sql::new("SELECT count, window_start, last_failure_at FROM throttles WHERE key = $1");
/// One statement: the conflicting row is locked for the update, so concurrent failures
/// from several nodes each count once. `SET` sees the row as it was.
static COUNT: Sql = Sql::new(
    "INSERT INTO throttles (key, count, window_start, last_failure_at) VALUES ($1, 1, $2, $2) \
     ON CONFLICT (key) DO UPDATE SET \
       count = CASE WHEN throttles.last_failure_at + $3 <= $2 THEN 1 ELSE throttles.count + 1 END, \
       window_start = CASE WHEN throttles.last_failure_at + $3 <= $2 THEN $2 ELSE throttles.window_start END, \
       last_failure_at = $2 \
     RETURNING count, window_start, last_failure_at",
);
static DELETE: Sql = Sql::new("DELETE FROM throttles WHERE key = $1");

fn find(c: &mut dyn Conn, key: String) -> OpFuture<'_, Option<ThrottleRecord>> {
    Box::pin(async move { query_opt(c, &FIND, params![&key], rows::throttle).await })
}

fn count(c: &mut dyn Conn, (key, now, window): (String, i64, i64)) -> OpFuture<'_, ThrottleRecord> {
    Box::pin(async move { query_one(c, &COUNT, params![&key, now, window], rows::throttle).await })
}

fn delete(c: &mut dyn Conn, key: String) -> OpFuture<'_, ()> {
    Box::pin(async move { c.execute(&DELETE, params![&key]).await.map(|_| ()) })
}

#[async_trait]
impl<B: Backend> ThrottleStore for Db<B> {
    async fn find_throttle(&self, key: &str) -> Result<Option<ThrottleRecord>, StoreError> {
        self.0.run(Access::Point, op(key.to_owned(), find)).await
    }

    async fn record_throttle_failure(
        &self,
        key: &str,
        now: Timestamp,
        window_secs: i64,
    ) -> Result<ThrottleRecord, StoreError> {
        self.0.run(Access::Statement, op((key.to_owned(), now.0, window_secs), count)).await
    }

    async fn delete_throttle(&self, key: &str) -> Result<(), StoreError> {
        self.0.run(Access::Statement, op(key.to_owned(), delete)).await
    }
}
