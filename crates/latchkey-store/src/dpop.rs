//! The DPoP replay cache ([`ProofStore`]). On PostgreSQL, one row per proof seen, so that
//! every node refuses a proof any node has accepted. SQLite serves one server process per
//! database file, so its cache is that process's memory ([`MemoryProofs`]): a row per proof
//! would be a second write next to each rotation on the one writer, which halved DPoP refresh
//! throughput (bench/compare.sh). The price: a restart forgets proofs of the last two
//! minutes, which could then be replayed until their `iat` window closes.

use async_trait::async_trait;
use latchkey_core::StoreError;
use latchkey_core::clock::Timestamp;
use latchkey_core::crypto::TokenHash;
use latchkey_core::store::ProofStore;

use std::collections::HashMap;
use std::sync::Mutex;

use crate::db::{Access, Backend, Conn, Db, OpFuture, Sql, op, params};

/// Proofs held in memory at most: each lives about two minutes, so this is 16,000 DPoP
/// requests a second (about 100 MB). Past it, proofs are refused as the database would be
/// when it is unreachable, rather than forgotten early.
const MEMORY_PROOFS_CAP: usize = 2_000_000;

/// Proofs seen, in memory, until when each is remembered.
#[derive(Debug, Default)]
pub(crate) struct MemoryProofs(Mutex<HashMap<TokenHash, i64>>);

impl MemoryProofs {
    fn remember(&self, hash: TokenHash, until: i64) -> Result<bool, StoreError> {
        let mut seen = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains_key(&hash) {
            return Ok(false);
        }
        if seen.len() >= MEMORY_PROOFS_CAP {
            return Err(StoreError::Unavailable("too many DPoP proofs in flight".into()));
        }
        seen.insert(hash, until);
        Ok(true)
    }

    fn forget(&self, now: i64) -> u64 {
        let mut seen = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = seen.len();
        seen.retain(|_, until| *until > now);
        (before - seen.len()) as u64
    }
}

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
        match self.0.memory_proofs() {
            Some(memory) => memory.remember(*hash, until.0),
            None => self.0.run(Access::Statement, op((*hash, until.0), remember)).await,
        }
    }

    async fn forget_dpop_proofs(&self, now: Timestamp) -> Result<u64, StoreError> {
        match self.0.memory_proofs() {
            Some(memory) => Ok(memory.forget(now.0)),
            None => self.0.run(Access::Statement, op(now.0, forget)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_proofs_are_remembered_once_until_forgotten() {
        let m = MemoryProofs::default();
        let (a, b) = (TokenHash::of("a"), TokenHash::of("b"));
        assert!(m.remember(a, 100).unwrap());
        assert!(!m.remember(a, 100).unwrap());
        assert!(m.remember(b, 200).unwrap());
        assert_eq!(m.forget(99), 0);
        assert_eq!(m.forget(100), 1);
        assert!(!m.remember(b, 200).unwrap());
        assert!(m.remember(a, 300).unwrap(), "forgotten after its time");
    }
}
