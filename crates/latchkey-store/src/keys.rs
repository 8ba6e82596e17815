//! Signing keys ([`KeyStore`]), for both backends.

use async_trait::async_trait;
use latchkey_core::StoreError;
use latchkey_core::store::{KeyStore, StoredKey};

use crate::db::{Access, Backend, Conn, Db, OpFuture, Sql, op, params, query_all};
use crate::rows::{self, key_columns};

static INSERT: Sql =
    Sql::new(concat!("INSERT INTO signing_keys (", key_columns!(), ") VALUES ($1, $2, $3, $4, $5)"));
static ALL: Sql = Sql::new(concat!("SELECT ", key_columns!(), " FROM signing_keys ORDER BY created_at, kid"));
static UPDATE: Sql = Sql::new("UPDATE signing_keys SET private_key = $1 WHERE kid = $2");
static DELETE: Sql = Sql::new("DELETE FROM signing_keys WHERE kid = $1");

fn insert(c: &mut dyn Conn, k: StoredKey) -> OpFuture<'_, ()> {
    Box::pin(async move {
        let p = params![&k.kid, &k.alg, &k.private_key, k.created_at.0, k.activates_at.0];
        c.execute(&INSERT, p).await.map(|_| ())
    })
}

fn all(c: &mut dyn Conn, (): ()) -> OpFuture<'_, Vec<StoredKey>> {
    Box::pin(async move { query_all(c, &ALL, params![], rows::signing_key).await })
}

fn update(c: &mut dyn Conn, k: StoredKey) -> OpFuture<'_, ()> {
    Box::pin(async move { c.execute(&UPDATE, params![&k.private_key, &k.kid]).await.map(|_| ()) })
}

fn delete(c: &mut dyn Conn, kid: String) -> OpFuture<'_, ()> {
    Box::pin(async move { c.execute(&DELETE, params![&kid]).await.map(|_| ()) })
}

#[async_trait]
impl<B: Backend> KeyStore for Db<B> {
    async fn insert_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.0.run(Access::Statement, op(key.clone(), insert)).await
    }

    async fn list_signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        self.0.run(Access::Scan, op((), all)).await
    }

    async fn update_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.0.run(Access::Statement, op(key.clone(), update)).await
    }

    async fn delete_signing_key(&self, kid: &str) -> Result<(), StoreError> {
        self.0.run(Access::Statement, op(kid.to_owned(), delete)).await
    }
}
