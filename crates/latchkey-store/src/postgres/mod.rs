//! The PostgreSQL store: a sqlx pool, migrations applied at open, and every atomic
//! operation of the `Store` port as one transaction. The operations themselves are written
//! once for both backends (`db.rs` and the aggregate modules); this file runs them, and
//! owns what the SQLite store gets for free from its single writer: serialising concurrent
//! writers (row locks, the feed lock, retries) and failing fast through an outage. Nothing
//! outside this crate sees sqlx types.
//!
//! # Transactions and locks
//!
//! Transactions run at PostgreSQL's default isolation, READ COMMITTED, and take row locks
//! where a decision depends on what they read:
//!
//! - `rotate_refresh_token` finds the session of the presented token, then locks the session
//!   row (`FOR UPDATE`) before reading the snapshot, so rotations of one session are
//!   serialised across connections and nodes, and the snapshot the decision sees cannot
//!   change before the decision is applied.
//! - `redeem_auth_code` locks the code row, so two redemptions of one code are serialised:
//!   the second sees the first's `used_at` and takes the reuse path.
//! - Revocations update the sessions they revoke one by one in id order, which locks them in
//!   that order (`sessions.rs`, `revoke_in_tx`); `apply_user_change` locks the user row by
//!   updating it first.
//! - Throttle counters are one `INSERT ... ON CONFLICT DO UPDATE`, which is atomic per key.
//! - `prune` locks the sessions it forgets, in id order, before deleting their tokens.
//!
//! Lock order, to keep deadlocks out: a transaction locks rows (user, then sessions in id
//! order) first and takes the feed lock (below) last; after the feed lock it only inserts
//! feed and security events, which wait for nobody. A deadlock or serialization failure
//! that happens anyway (SQLSTATE 40P01, 40001) is retried: the whole transaction runs again,
//! up to `MAX_ATTEMPTS` times with a short randomised backoff, which is why each
//! operation takes its arguments by cloning and may run more than once.
//!
//! The decision closures of rotation and code redemption are `FnOnce`: they run at most
//! once. A retry that would need to ask again (the failure came after the decision) stops
//! there (`DbError::DecidedTwice`); the call fails with [`StoreError::Unavailable`], and
//! nothing was committed. Every row lock such a transaction needs is taken before the
//! decision; after it comes at most the feed lock, which is always the last lock of a
//! transaction and held only to commit, so no cycle can form through it, and this only
//! happens when PostgreSQL aborts a transaction for reasons outside this design. (Prune
//! locks ended sessions before it deletes expired codes, the reverse of a redemption's code
//! then session; both run before any decision, so a deadlock there is simply retried.)
//!
//! # The revocation feed with several writers (SPEC 5.4)
//!
//! Readers page through the feed with `seq > after` and remember the highest seq they saw.
//! With a plain `BIGSERIAL`, transaction A could take seq 41 and transaction B seq 42, B
//! commit first, a reader see 42 and move past it, and 41, committed a moment later, never
//! be read. So every transaction takes a transaction-scoped advisory lock (`FEED_LOCK`)
//! immediately before it inserts its first feed event, and holds it until it commits or
//! rolls back. A seq is therefore only allocated after every earlier writer has finished
//! (PostgreSQL releases transaction locks after the commit is visible), so feed events
//! become visible in seq order: whatever a reader's snapshot shows is a prefix of the feed,
//! and `seq > after` skips nothing. Rolled-back writers leave gaps, which readers ignore.
//!
//! The cost: feed writers queue behind each other for the rest of their transaction, which
//! is short (a few inserts) because the lock is taken last. Revocations, user changes and
//! access-token revocations are rare next to refreshes; a refresh that only rotates never
//! takes the lock (one that detects reuse and revokes does). Readers take no lock at all.
//!
//! `last_feed_seq` is the highest seq present (`MAX(seq)`), not SQLite's high-water mark of
//! the sequence: after pruning every event it is 0 again, which only makes the feed hub
//! start from 0 and find nothing older. Reading the sequence itself would be wrong here: it
//! counts seqs of transactions that have not committed.
//!
//! # When the database goes away
//!
//! Every operation that cannot reach PostgreSQL (connection refused or reset, the server
//! shutting down, no connection within the pool's timeout) fails with
//! [`StoreError::Unavailable`], which the server answers with 503 and a JSON body; nothing is
//! half-applied, because every write is one transaction. The first such failure marks the
//! database down, and from then on each call waits at most `PROBE_TIMEOUT` for a connection
//! instead of queueing for `ACQUIRE_TIMEOUT`, so requests fail fast during an outage. The
//! pool checks a connection before handing it out, so connections that died with the old
//! server are dropped, and the first call that gets a working connection ends the outage:
//! no restart of the node is needed. A rotation whose commit reached the database but whose
//! answer did not reach the client is safe: the client presents the same token again and,
//! inside the grace window, receives the same successor.

mod url;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use latchkey_core::StoreError;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row as _};

use crate::db::{
    Access, Backend, Conn, Db, DbError, EachRow, Op, OpFuture, Params, Sql, impl_row, with_param,
};

/// Schema migrations, applied in order, each once.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../migrations/postgres/0002_refresh_token_retired_by.sql")),
    (3, include_str!("../../migrations/postgres/0003_auth_code_browser_session.sql")),
    (4, include_str!("../../migrations/postgres/0004_refresh_tokens_by_issue_key.sql")),
    (5, include_str!("../../migrations/postgres/0005_user_email.sql")),
    (6, include_str!("../../migrations/postgres/0006_links_and_outbox.sql")),
    (7, include_str!("../../migrations/postgres/0007_second_factors.sql")),
    (8, include_str!("../../migrations/postgres/0008_session_amr.sql")),
    (9, include_str!("../../migrations/postgres/0009_passkey_challenges.sql")),
    (10, include_str!("../../migrations/postgres/0010_dpop.sql")),
    (11, include_str!("../../migrations/postgres/0011_session_step_up.sql")),
    (12, include_str!("../../migrations/postgres/0012_logout.sql")),
    (13, include_str!("../../migrations/postgres/0013_device_authorizations.sql")),
    (14, include_str!("../../migrations/postgres/0014_pushed_requests.sql")),
    (15, include_str!("../../migrations/postgres/0015_resource_indicators.sql")),
    (16, include_str!("../../migrations/postgres/0016_client_keys.sql")),
    (17, include_str!("../../migrations/postgres/0017_dynamic_registration.sql")),
    (18, include_str!("../../migrations/postgres/0018_anomaly_index.sql")),
];

/// Advisory lock key held while migrating, so nodes starting together migrate one at a time.
const MIGRATION_LOCK: i64 = 4242;
/// Advisory lock key every feed writer holds from its first feed insert to its commit.
const FEED_LOCK: i64 = 4243;
/// How many times a transaction runs before a deadlock or serialization failure is reported.
const MAX_ATTEMPTS: u32 = 5;
/// How long a caller waits for a pooled connection before the database counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a connection while the database is known to be down.
const PROBE_TIMEOUT: Duration = Duration::from_millis(250);

/// A query with its bound arguments.
type PgQuery<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

/// Maps sqlx errors to the port's, without leaking sqlx types. A driver message names no
/// secret: hashes are not secrets, and the connection URL never reaches these messages.
fn db_err(e: sqlx::Error) -> StoreError {
    let message = e.to_string();
    match &e {
        sqlx::Error::Database(d) => match d.code().as_deref() {
            Some("23505") => StoreError::Conflict(message),
            Some(code) if is_transient(code) => StoreError::Unavailable(message),
            _ => StoreError::Backend(message),
        },
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(message),
        _ => StoreError::Backend(message),
    }
}

/// SQLSTATEs that say the database cannot serve now (connection exceptions, shutdown,
/// too many connections) or that a transaction lost a race it may win next time.
fn is_transient(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01")
}

/// Whether an error says the database cannot be reached at all (as opposed to refusing one
/// statement): connection failures, pool timeouts, shutdown in progress.
fn is_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|code| code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")),
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => {
            true
        }
        _ => false,
    }
}

/// Whether running the whole transaction again may succeed.
fn is_retryable(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("40001" | "40P01")))
}

/// A short randomised pause before attempt `attempt + 1`, so that two transactions that
/// deadlocked do not meet again at once. The randomness is std's per-process hasher keys:
/// good enough for jitter, and no dependency.
fn backoff(attempt: u32) -> Duration {
    use std::hash::BuildHasher;
    let jitter = std::collections::hash_map::RandomState::new().hash_one(attempt) % 20;
    Duration::from_millis(u64::from(attempt) * 10 + jitter)
}

/// The PostgreSQL pool and its outage state; see the module doc.
#[derive(Clone)]
pub struct Pg {
    pool: PgPool,
    /// Set when an operation could not reach the database; see [`Pg::pool`].
    is_down: Arc<AtomicBool>,
}

/// The PostgreSQL implementation of `latchkey_core::Store`.
pub type PgStore = Db<Pg>;

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not derived: the pool's options hold the connection settings, password included.
        f.debug_struct("Pg").field("connections", &self.pool.size()).finish_non_exhaustive()
    }
}

impl Db<Pg> {
    /// Connects to the database at a `postgres://` (or `postgresql://`) URL with a pool of at
    /// most `max_connections`, and migrates it. Errors never quote the URL's password.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the server cannot be reached; [`StoreError::Backend`]
    /// for a malformed URL, a refused login or a failed migration.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options =
            PgConnectOptions::from_str(url).map_err(|e| connect_err(url, e))?.application_name("latchkey");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| connect_err(url, e))?;
        migrate(&pool).await?;
        Ok(Db(Pg { pool, is_down: Arc::new(AtomicBool::new(false)) }))
    }
}

impl Pg {
    /// The pool, once the database looks reachable. While it is down (the last operation
    /// failed to reach it), each call first tries for a connection for at most
    /// [`PROBE_TIMEOUT`] and fails with [`StoreError::Unavailable`] if there is none, instead
    /// of queueing for [`ACQUIRE_TIMEOUT`]: requests fail fast during an outage (the server
    /// answers 503), and the first connection made after it ends the down state.
    async fn pool(&self) -> Result<&PgPool, StoreError> {
        if self.is_down.load(Ordering::Relaxed) {
            match tokio::time::timeout(PROBE_TIMEOUT, self.pool.acquire()).await {
                Ok(Ok(_probe)) => {
                    self.is_down.store(false, Ordering::Relaxed);
                    tracing::info!("the database is reachable again");
                }
                Ok(Err(e)) => return Err(self.fail(e)),
                Err(_) => return Err(StoreError::Unavailable("the database is unreachable".into())),
            }
        }
        Ok(&self.pool)
    }

    /// Maps an error to the port's, noting whether it says the database cannot be reached.
    fn fail(&self, e: sqlx::Error) -> StoreError {
        if is_unreachable(&e) && !self.is_down.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "the database is unreachable; failing fast until it answers again");
        }
        db_err(e)
    }

    /// Maps an operation's failure to the port's error.
    fn fail_op(&self, e: DbError) -> StoreError {
        match e {
            DbError::Pg(e) => self.fail(e),
            DbError::Sqlite(e) => StoreError::Backend(e.to_string()),
            DbError::Corrupt(what) => StoreError::Backend(format!("corrupt data: {what}")),
            DbError::Internal(what) => StoreError::Backend(format!("store bug: {what}")),
            DbError::DecidedTwice => {
                StoreError::Unavailable("transaction given up: it failed after its decision was taken".into())
            }
        }
    }

    /// Runs `op` in a transaction and commits it, running it again on a deadlock or
    /// serialization failure (an operation whose decision ran stops itself, see the module
    /// doc).
    async fn in_tx<T: Send>(&self, op: &mut Op<T>) -> Result<T, StoreError> {
        let mut attempt = 1;
        loop {
            let e = match run_once(self.pool().await?, op).await {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            let is_lost_race = matches!(&e, DbError::Pg(e) if is_retryable(e));
            if !is_lost_race {
                return Err(self.fail_op(e));
            }
            if attempt >= MAX_ATTEMPTS {
                return Err(StoreError::Unavailable(format!(
                    "transaction given up after {attempt} attempt(s): {}",
                    self.fail_op(e)
                )));
            }
            tracing::debug!(attempt, "transaction lost a race; running it again");
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }
}

/// One attempt: begin, run the operation, commit. An operation that fails drops its
/// transaction, which rolls it back.
async fn run_once<T: Send>(pool: &PgPool, op: &mut Op<T>) -> Result<T, DbError> {
    let mut tx = pool.begin().await.map_err(DbError::Pg)?;
    let value = op(&mut PgConn(&mut tx)).await?;
    tx.commit().await.map_err(DbError::Pg)?;
    Ok(value)
}

#[async_trait]
impl Backend for Pg {
    async fn run<T: Send + 'static>(&self, access: Access, mut op: Op<T>) -> Result<T, StoreError> {
        match access {
            Access::Point | Access::Scan | Access::Statement => {
                let mut conn = self.pool().await?.acquire().await.map_err(|e| self.fail(e))?;
                op(&mut PgConn(&mut conn)).await.map_err(|e| self.fail_op(e))
            }
            Access::Transaction => self.in_tx(&mut op).await,
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(self.pool().await?).await.map(|_| ()).map_err(|e| self.fail(e))
    }

    async fn last_feed_seq(&self) -> Result<i64, StoreError> {
        // Safe as a starting point because feed events commit in seq order (module doc):
        // no event below this one can still appear.
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM revocation_events")
            .fetch_one(self.pool().await?)
            .await
            .map_err(|e| self.fail(e))
    }
}

/// A PostgreSQL connection (or transaction) as the shared operations see it.
struct PgConn<'c>(&'c mut PgConnection);

fn bind<'q>(sql: &'static Sql, params: Params<'q>) -> PgQuery<'q> {
    let mut query = sqlx::query(sql.postgres());
    for p in params {
        query = with_param!(*p, |v| query.bind(v));
    }
    query
}

impl Conn for PgConn<'_> {
    fn execute<'a>(&'a mut self, sql: &'static Sql, params: Params<'a>) -> OpFuture<'a, u64> {
        Box::pin(async move {
            let done = bind(sql, params).execute(&mut *self.0).await.map_err(DbError::Pg)?;
            Ok(done.rows_affected())
        })
    }

    fn query<'a>(&'a mut self, sql: &'static Sql, params: Params<'a>, each: EachRow<'a>) -> OpFuture<'a, ()> {
        Box::pin(async move {
            let rows = bind(sql, params).fetch_all(&mut *self.0).await.map_err(DbError::Pg)?;
            for row in &rows {
                each(row)?;
            }
            Ok(())
        })
    }

    fn lock_feed(&mut self) -> OpFuture<'_, ()> {
        // Taking it again in the same transaction only stacks: a no-op in effect.
        Box::pin(async move {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(FEED_LOCK)
                .execute(&mut *self.0)
                .await
                .map(|_| ())
                .map_err(DbError::Pg)
        })
    }

    fn are_writes_serial(&self) -> bool {
        false
    }

    fn run_script(&mut self, script: &'static str) -> OpFuture<'_, ()> {
        // The future is made outside the async block: inside it, the compiler cannot prove
        // sqlx's executor future `Send` for every lifetime (a known sqlx limitation).
        let done = sqlx::Executor::execute(&mut *self.0, script);
        Box::pin(async move { done.await.map(|_| ()).map_err(DbError::Pg) })
    }
}

impl_row!(PgRow, |row, i| row.try_get(i).map_err(DbError::Pg));

/// A connection error, with the URL redacted and any password scrubbed from the message.
fn connect_err(url: &str, e: sqlx::Error) -> StoreError {
    let at = self::url::redact(url);
    match db_err(e) {
        StoreError::Unavailable(m) => {
            StoreError::Unavailable(format!("cannot reach {at}: {}", self::url::scrub(&m, url)))
        }
        StoreError::Conflict(m) | StoreError::Backend(m) => {
            StoreError::Backend(format!("cannot open {at}: {}", self::url::scrub(&m, url)))
        }
    }
}

/// Applies the migrations not yet applied, in one transaction, under an advisory lock so
/// that nodes starting together do not migrate twice (or trip over each other's
/// `CREATE TABLE IF NOT EXISTS`).
async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await.map_err(db_err)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    crate::migrations::apply(&mut PgConn(&mut tx), MIGRATIONS).await.map_err(|e| match e {
        DbError::Pg(e) => db_err(e),
        other => StoreError::Backend(format!("migration failed: {other:?}")),
    })?;
    tx.commit().await.map_err(db_err)
}
