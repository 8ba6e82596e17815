//! Latchkey storage: implementations of `latchkey_core::Store`. This crate holds the only
//! SQL in the project; nothing outside it sees database-driver types. SQLite (rusqlite, the
//! embedded default) and PostgreSQL (sqlx, for several server nodes), each with its own
//! migrations.
//!
//! Every SQL text, column list, row reader and transaction body is written once
//! (`db.rs`, `rows.rs`, and one module per aggregate of the port: `users.rs`,
//! `sessions.rs`, `oauth.rs`, `feed.rs`, `keys.rs`, `throttles.rs`, `audit.rs`,
//! `maintenance.rs`); the two backends only run them (`sqlite/`, `postgres/`).

mod audit;
mod db;
mod delivery;
mod device_grant;
mod dpop;
mod feed;
mod keys;
mod links;
mod logout_deliveries;
mod maintenance;
mod mfa;
mod migrations;
mod oauth;
mod outbox;
mod postgres;
mod pushed;
mod revocation;
mod rows;
mod sessions;
mod sqlite;
mod throttles;
mod users;

use std::sync::Arc;

use latchkey_core::{Store, StoreError};

pub use db::Db;
pub use postgres::{Pg, PgStore};
pub use sqlite::{Sqlite, SqliteStore};

/// Connections in a PostgreSQL pool unless the `database_pool_size` setting says otherwise.
pub const DEFAULT_PG_POOL: u32 = 16;

/// Opens the store a `database_url` names, applying migrations, with the default pool.
///
/// # Errors
/// An unsupported scheme, or a database that cannot be opened or migrated.
pub async fn open(database_url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_with(database_url, DEFAULT_PG_POOL).await
}

/// Opens the store a `database_url` names, applying migrations; a PostgreSQL pool gets
/// `pool_size` connections.
///
/// # Errors
/// An unsupported scheme, or a database that cannot be opened or migrated.
pub async fn open_with(database_url: &str, pool_size: u32) -> Result<Arc<dyn Store>, StoreError> {
    if database_url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(database_url).await?))
    } else if database_url.starts_with("postgres:") || database_url.starts_with("postgresql:") {
        Ok(Arc::new(PgStore::open(database_url, pool_size).await?))
    } else {
        Err(StoreError::Backend(format!(
            "unsupported database_url scheme (expected sqlite://PATH or postgres://...): {}",
            database_url.split(':').next().unwrap_or_default()
        )))
    }
}
