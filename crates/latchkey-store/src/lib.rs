//! Latchkey storage: implementations of `latchkey_core::Store`. This crate holds the only
//! SQL in the project; nothing outside it sees database-driver types. SQLite now; PostgreSQL slots in
//! beside it as `postgres.rs` with its own migrations.

mod sqlite;

use std::sync::Arc;

use latchkey_core::{Store, StoreError};

pub use sqlite::SqliteStore;

/// Opens the store a `database_url` names, applying migrations.
///
/// # Errors
/// An unsupported scheme, or a database that cannot be opened or migrated.
pub async fn open(database_url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if database_url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(database_url).await?))
    } else {
        Err(StoreError::Backend(format!(
            "unsupported database_url scheme (expected sqlite://PATH): {}",
            database_url.split(':').next().unwrap_or_default()
        )))
    }
}
