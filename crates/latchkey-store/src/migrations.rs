//! Applying the schema migrations, written once: each backend has its own migration files
//! (`migrations/sqlite`, `migrations/postgres`) and opens the transaction they run in
//! (SQLite: `BEGIN IMMEDIATE`, so another process waits; PostgreSQL: under an advisory lock,
//! so nodes starting together do not migrate twice); this applies those not applied yet.

use latchkey_core::Clock as _;

use crate::db::{Conn, DbError, Sql, first_int, params, query_opt};

static CREATE_TABLE: Sql = Sql::new(
    "CREATE TABLE IF NOT EXISTS latchkey_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
);
static APPLIED: Sql = Sql::new("SELECT version FROM latchkey_migrations WHERE version = $1");
static RECORD: Sql = Sql::new("INSERT INTO latchkey_migrations (version, applied_at) VALUES ($1, $2)");

/// Applies, in order, every migration of `migrations` (version, script) not applied yet.
pub(crate) async fn apply(c: &mut dyn Conn, migrations: &[(i64, &'static str)]) -> Result<(), DbError> {
    c.execute(&CREATE_TABLE, params![]).await?;
    for &(version, script) in migrations {
        if query_opt(c, &APPLIED, params![version], first_int).await?.is_none() {
            c.run_script(script).await?;
            c.execute(&RECORD, params![version, latchkey_core::SystemClock.now().0]).await?;
        }
    }
    Ok(())
}
