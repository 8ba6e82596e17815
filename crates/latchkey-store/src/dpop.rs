//! The DPoP replay cache ([`ProofStore`]), for both backends: one row per proof seen, so
//! that every node refuses a proof any node has accepted.

use async_trait::async_trait;
use latchkey_core::StoreError;
use latchkey_core::clock::Timestamp;
use latchkey_core::crypto::TokenHash;
use latchkey_core::store::ProofStore;

use crate::db::{Access, Backend, Conn, Db, OpFuture, Sql, op, params};

/// One statement: of two nodes inserting one proof, exactly one inserts a row.
static REMEMBER: Sql =
    Sql::new("INSERT INTO dpop_proofs (hash, expires_at) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING");
static FORGET: Sql = Sql::new("DELETE FROM dpop_proofs WHERE expires_at <= $1");

fn remember(c: &mut dyn Conn, (hash, until): (TokenHash, i64)) -> OpFuture<'_, bool> {
    Box::pin(async move { Ok(c.execute(&REMEMBER, params![&hash.0, until]).await? == 1) })
}

fn forget(c: &mut dyn Conn, now: i64) -> OpFuture<'_, u64> {
    Box::pin(async move { c.execute(&FORGET, params![now]).await })
}

#[async_trait]
impl<B: Backend> ProofStore for Db<B> {
    async fn remember_dpop_proof(&self, hash: &TokenHash, until: Timestamp) -> Result<bool, StoreError> {
        self.0.run(Access::Statement, op((*hash, until.0), remember)).await
    }

    async fn forget_dpop_proofs(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.0.run(Access::Statement, op(now.0, forget)).await
    }
}
