//! Pushed authorization requests ([`PushedRequestStore`], RFC 9126), for both backends.
//! Using a request binds it to the first browser in one statement, so two browsers racing
//! for one `request_uri` cannot both get it.

use async_trait::async_trait;
use latchkey_core::StoreError;
use latchkey_core::clock::Timestamp;
use latchkey_core::crypto::TokenHash;
use latchkey_core::ids::ClientId;
use latchkey_core::store::{PushedRequestRecord, PushedRequestStore};

use crate::db::{Access, Backend, Conn, Db, OpFuture, Sql, op, params, query_opt};

static INSERT: Sql = Sql::new(
    "INSERT INTO pushed_requests (hash, client_id, params, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
);
/// `$1` hash, `$2` client, `$3` browser key, `$4` now, `$5` the first browser's deadline.
static USE: Sql = Sql::new(
    "UPDATE pushed_requests \
     SET expires_at = CASE WHEN browser_key IS NULL THEN $5 ELSE expires_at END, \
         browser_key = COALESCE(browser_key, $3) \
     WHERE hash = $1 AND client_id = $2 AND used_at IS NULL AND expires_at > $4 \
       AND (browser_key IS NULL OR browser_key = $3) \
     RETURNING params, created_at",
);
static SPEND: Sql = Sql::new("UPDATE pushed_requests SET used_at = $2 WHERE hash = $1 AND used_at IS NULL");

fn insert(c: &mut dyn Conn, r: PushedRequestRecord) -> OpFuture<'_, ()> {
    Box::pin(async move {
        let p = params![&r.hash.0, &r.client_id, &r.params, r.created_at.0, r.expires_at.0];
        c.execute(&INSERT, p).await.map(|_| ())
    })
}

fn use_request(
    c: &mut dyn Conn,
    (hash, client_id, browser, now, until): ([u8; 32], ClientId, [u8; 32], i64, i64),
) -> OpFuture<'_, Option<(String, Timestamp)>> {
    Box::pin(async move {
        query_opt(c, &USE, params![&hash, &client_id, &browser, now, until], |row| {
            Ok((row.text(0)?, Timestamp(row.int(1)?)))
        })
        .await
    })
}

fn spend(c: &mut dyn Conn, (hash, now): ([u8; 32], i64)) -> OpFuture<'_, bool> {
    Box::pin(async move { Ok(c.execute(&SPEND, params![&hash, now]).await? == 1) })
}

#[async_trait]
impl<B: Backend> PushedRequestStore for Db<B> {
    async fn insert_pushed_request(&self, request: &PushedRequestRecord) -> Result<(), StoreError> {
        self.0.run(Access::Statement, op(request.clone(), insert)).await
    }

    async fn use_pushed_request(
        &self,
        hash: &TokenHash,
        client_id: &ClientId,
        browser: &TokenHash,
        now: Timestamp,
        extend_until: Timestamp,
    ) -> Result<Option<(String, Timestamp)>, StoreError> {
        let args = (hash.0, client_id.clone(), browser.0, now.0, extend_until.0);
        self.0.run(Access::Transaction, op(args, use_request)).await
    }

    async fn spend_pushed_request(&self, hash: &TokenHash, now: Timestamp) -> Result<bool, StoreError> {
        self.0.run(Access::Statement, op((hash.0, now.0), spend)).await
    }
}
