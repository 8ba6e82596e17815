//! The SQLite store: one file, WAL, migrations applied at open.
//!
//! SQLite is synchronous, so the store runs it on its own threads and the async side only
//! sends a job and awaits its answer: one writer thread (SQLite allows one writer at a time;
//! a queue is fairer and cheaper than busy-waiting on the file lock) and a few reader
//! threads (WAL lets readers run beside the writer). Point lookups by key (a client, a
//! user, a session, a token hash) are the exception: they take about 4 µs, less than the
//! two thread switches of a hand-off, so they run right where they are asked, on one of a
//! few connections kept for that (`point_read`), and fall back to the reader threads when
//! all of those are in use. Anything that may scan (lists, feed pages) stays on the threads.
//!
//! The operations themselves are written once for both backends (`db.rs` and the aggregate
//! modules); this file runs them: each atomic operation is one write job, run with cached
//! prepared statements. The writer
//! commits in groups: it takes every job waiting in its queue, opens one `BEGIN IMMEDIATE`
//! transaction (so another process on the same file, such as the CLI, waits instead of
//! failing), runs each job inside its own savepoint (a job that fails is rolled back alone),
//! commits once, and only then answers every job. Every answer still follows the commit of
//! its write; under load, many writes share one commit.
//!
//! Why not sqlx here: sqlx's SQLite driver also runs each connection on a worker thread but
//! hands off every *statement* (BEGIN, SELECT, UPDATE, INSERT, UPDATE, COMMIT), and on this
//! machine kind each hand-off costs tens of microseconds; a rotation cost ~1.2 ms that way.
//! One hand-off per operation brings it under 0.1 ms. PostgreSQL, which is I/O over a
//! socket anyway, uses sqlx.

mod connections;

use std::sync::{Arc, mpsc};

use async_trait::async_trait;
use latchkey_core::StoreError;
use rusqlite::Connection;

use self::connections::{Threads, Writer, open_connection, parse_url, spawn_checkpointer};
use crate::db::{
    Access, Backend, Conn, Db, DbError, EachRow, Op, OpFuture, Param, Params, Sql, impl_row, run_now,
    with_param,
};

/// Schema migrations, applied in order, each once.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../migrations/sqlite/0002_clients.sql")),
    (3, include_str!("../../migrations/sqlite/0003_oauth.sql")),
    (4, include_str!("../../migrations/sqlite/0004_refresh_tokens_in_issue_order.sql")),
    (5, include_str!("../../migrations/sqlite/0005_refresh_token_retired_by.sql")),
    (6, include_str!("../../migrations/sqlite/0006_auth_code_browser_session.sql")),
    (7, include_str!("../../migrations/sqlite/0007_refresh_tokens_by_issue_key.sql")),
    (8, include_str!("../../migrations/sqlite/0008_user_email.sql")),
    (9, include_str!("../../migrations/sqlite/0009_links_and_outbox.sql")),
    (10, include_str!("../../migrations/sqlite/0010_second_factors.sql")),
    (11, include_str!("../../migrations/sqlite/0011_session_amr.sql")),
    (12, include_str!("../../migrations/sqlite/0012_passkey_challenges.sql")),
    (13, include_str!("../../migrations/sqlite/0013_dpop.sql")),
    (14, include_str!("../../migrations/sqlite/0014_session_step_up.sql")),
    (15, include_str!("../../migrations/sqlite/0015_logout.sql")),
    (16, include_str!("../../migrations/sqlite/0016_device_authorizations.sql")),
    (17, include_str!("../../migrations/sqlite/0017_pushed_requests.sql")),
    (18, include_str!("../../migrations/sqlite/0018_resource_indicators.sql")),
    (19, include_str!("../../migrations/sqlite/0019_client_keys.sql")),
    (20, include_str!("../../migrations/sqlite/0020_dynamic_registration.sql")),
    (21, include_str!("../../migrations/sqlite/0021_anomaly_index.sql")),
];

/// Maps SQLite errors to the port's, without leaking rusqlite types.
fn db_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::ConstraintViolation => StoreError::Conflict(e.to_string()),
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::CannotOpen => {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Backend(e.to_string()),
        },
        _ => StoreError::Backend(e.to_string()),
    }
}

/// Maps an operation's failure to the port's error.
fn op_err(e: DbError) -> StoreError {
    match e {
        DbError::Sqlite(e) => db_err(e),
        DbError::Pg(e) => StoreError::Backend(e.to_string()),
        DbError::Corrupt(what) => StoreError::Backend(format!("corrupt data: {what}")),
        DbError::Internal(what) => StoreError::Backend(format!("store bug: {what}")),
        DbError::DecidedTwice => StoreError::Unavailable("a decision was asked for twice".into()),
    }
}

/// How many connections serve point lookups inline (about one per async worker thread).
const INLINE_CONNECTIONS: usize = 2;

/// The WAL size, in pages, past which the writer checkpoints after its commit itself.
///
/// The checkpointer thread copies the WAL back into the database file, but only the writer
/// can start the WAL over from its beginning, and only when every frame has been copied
/// when its next transaction begins. Under sustained writes that never happens: new frames
/// always arrive between a checkpoint and the next transaction, and the WAL grew without
/// bound (1.2 GB in 8 s of refresh load, with every append to a new region of the file
/// costing the kernel a third of the core in zeroing pages). Past this bound the writer
/// copies the few frames the checkpointer has not reached, and the next transaction starts
/// the WAL over. 65,536 pages is 256 MiB at 4 KiB pages: large enough that the pause is
/// rare under load (measured: a bound of 2,000-8,000 pages doubled the p99 of refresh
/// rotation at 64 connections), small enough for any disk.
const WAL_FRAMES_MAX: i64 = 65_536;

/// SQLite's threads and connections; see the module doc.
#[derive(Debug, Clone)]
pub struct Sqlite {
    writer: Writer,
    readers: Threads,
    /// Connections for point lookups run inline; see the module doc.
    inline: Arc<std::sync::Mutex<Vec<Connection>>>,
    /// Dropping the last clone stops the checkpointer.
    _checkpointer: Arc<mpsc::Sender<()>>,
    /// The DPoP replay cache: one server process per file (see `dpop.rs`).
    proofs: Arc<crate::dpop::MemoryProofs>,
}

/// The SQLite implementation of `latchkey_core::Store`.
pub type SqliteStore = Db<Sqlite>;

impl Db<Sqlite> {
    /// Opens (creating if missing) the database at a `sqlite://PATH` URL and migrates it.
    ///
    /// # Errors
    /// When the file cannot be opened or migrated.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with_wal_bound(url, WAL_FRAMES_MAX).await
    }

    async fn open_with_wal_bound(url: &str, wal_frames_max: i64) -> Result<Self, StoreError> {
        let (path, synchronous) = parse_url(url)?;
        // Migrations run before the writer thread starts, so no job can see an old schema.
        let mut conn = open_connection(&path, synchronous, false)?;
        migrate(&mut conn)?;
        // Checkpoints happen on the checkpointer's connection, not in the writer's commits,
        // except when the WAL has grown past a bound (see `WAL_FRAMES_MAX`).
        conn.pragma_update(None, "wal_autocheckpoint", wal_frames_max).map_err(db_err)?;
        let writer = Writer::spawn(conn)?;
        let checkpointer = spawn_checkpointer(open_connection(&path, synchronous, false)?)?;
        let readers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 4);
        let readers =
            Threads::spawn("latchkey-db-reader", readers, &|| open_connection(&path, synchronous, true))?;
        let inline = (0..INLINE_CONNECTIONS)
            .map(|_| open_connection(&path, synchronous, true))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Db(Sqlite {
            writer,
            readers,
            inline: Arc::new(std::sync::Mutex::new(inline)),
            _checkpointer: Arc::new(checkpointer),
            proofs: Arc::default(),
        }))
    }
}

impl Sqlite {
    /// Runs a point lookup (an index seek returning at most a few rows) on the calling
    /// thread, on a connection kept for that, or on the reader threads when none is free.
    async fn point_read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        // The lock is held only to take and to return a connection, never while reading.
        let conn = self.inline.lock().ok().and_then(|mut free| free.pop());
        match conn {
            Some(mut conn) => {
                let result = f(&mut conn);
                if let Ok(mut free) = self.inline.lock() {
                    free.push(conn);
                }
                result
            }
            None => self.readers.run(f).await,
        }
    }
}

#[async_trait]
impl Backend for Sqlite {
    async fn run<T: Send + 'static>(&self, access: Access, mut op: Op<T>) -> Result<T, StoreError> {
        let run = move |conn: &mut Connection| run_now(op(&mut SqliteConn(conn))).map_err(op_err);
        match access {
            Access::Point => self.point_read(run).await,
            Access::Scan => self.readers.run(run).await,
            // Every write, one statement or several, is a job of the writer's group commit.
            Access::Statement | Access::Transaction => self.writer.run(run).await,
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // Both sides: a stopped writer would fail every write while reads still worked.
        let select_one =
            |c: &mut Connection| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).map_err(db_err);
        self.readers.run(select_one).await?;
        self.writer.run(select_one).await?;
        Ok(())
    }

    async fn last_feed_seq(&self) -> Result<i64, StoreError> {
        // sqlite_sequence keeps the AUTOINCREMENT high-water mark even after pruning.
        self.readers
            .run(|c| {
                c.query_row(
                    "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'revocation_events'), 0)",
                    [],
                    |r| r.get(0),
                )
                .map_err(db_err)
            })
            .await
    }

    fn memory_proofs(&self) -> Option<&crate::dpop::MemoryProofs> {
        Some(&self.proofs)
    }
}

/// A SQLite connection as the shared operations see it. Its futures are ready at once.
struct SqliteConn<'c>(&'c mut Connection);

/// Binds every parameter by position; a statement that expects another count is refused,
/// so no binding of an earlier use of the cached statement can linger.
fn prepare<'c>(
    conn: &'c Connection,
    sql: &Sql,
    params: &[Param<'_>],
) -> Result<rusqlite::CachedStatement<'c>, DbError> {
    let mut stmt = conn.prepare_cached(sql.sqlite()).map_err(DbError::Sqlite)?;
    if stmt.parameter_count() != params.len() {
        return Err(DbError::Internal(format!(
            "statement takes {} parameters, {} given: {}",
            stmt.parameter_count(),
            params.len(),
            sql.postgres()
        )));
    }
    for (i, p) in params.iter().enumerate() {
        with_param!(*p, |v| stmt.raw_bind_parameter(i + 1, v)).map_err(DbError::Sqlite)?;
    }
    Ok(stmt)
}

impl Conn for SqliteConn<'_> {
    fn execute<'a>(&'a mut self, sql: &'static Sql, params: Params<'a>) -> OpFuture<'a, u64> {
        let result = prepare(self.0, sql, params)
            .and_then(|mut stmt| stmt.raw_execute().map_err(DbError::Sqlite))
            .map(|n| u64::try_from(n).unwrap_or(u64::MAX));
        Box::pin(std::future::ready(result))
    }

    fn query<'a>(&'a mut self, sql: &'static Sql, params: Params<'a>, each: EachRow<'a>) -> OpFuture<'a, ()> {
        let result = prepare(self.0, sql, params).and_then(|mut stmt| {
            let mut rows = stmt.raw_query();
            while let Some(row) = rows.next().map_err(DbError::Sqlite)? {
                each(row)?;
            }
            Ok(())
        });
        Box::pin(std::future::ready(result))
    }

    fn lock_feed(&mut self) -> OpFuture<'_, ()> {
        // One writer: feed events are written, and become visible, in seq order already.
        Box::pin(std::future::ready(Ok(())))
    }

    fn are_writes_serial(&self) -> bool {
        true
    }

    fn run_script(&mut self, script: &'static str) -> OpFuture<'_, ()> {
        Box::pin(std::future::ready(self.0.execute_batch(script).map_err(DbError::Sqlite)))
    }
}

impl_row!(rusqlite::Row<'_>, |row, i| row.get(i).map_err(DbError::Sqlite));

/// Applies the migrations not yet applied, in one `BEGIN IMMEDIATE` transaction (another
/// process on the file waits for it).
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(db_err)?;
    let applied = run_now(Box::pin(crate::migrations::apply(&mut SqliteConn(conn), MIGRATIONS)));
    match applied {
        Ok(()) => conn.execute_batch("COMMIT").map_err(db_err),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(op_err(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use latchkey_core::crypto::RefreshTokenKey;
    use latchkey_core::store::RotationDecision;
    use latchkey_core::store::ports::SessionStore;
    use rusqlite::params;

    use super::*;

    /// Under writes that never pause, the WAL stays within its bound: the writer checkpoints
    /// past it and the next transaction starts the WAL over. (Without the bound, this load
    /// grew the WAL to tens of megabytes, since the checkpointer never sees it idle.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_wal_stays_bounded_under_writes_that_never_pause() {
        use latchkey_core::clock::Timestamp;
        use latchkey_core::store::NewSecurityEvent;
        use latchkey_core::store::ports::AuditStore;

        const BOUND: i64 = 64;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.db");
        let store = Arc::new(
            SqliteStore::open_with_wal_bound(&format!("sqlite://{}", path.display()), BOUND).await.unwrap(),
        );
        let wal = dir.path().join("wal.db-wal");
        let mut largest = 0;
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    for i in 0..1_500 {
                        let event = NewSecurityEvent {
                            at: Timestamp(i),
                            kind: "wal_test",
                            user_id: Some(format!("user-{w}-{i}").into()),
                            session_id: None,
                            ip: None,
                            detail: Some("x".repeat(200)),
                        };
                        store.insert_security_event(&event).await.unwrap();
                    }
                })
            })
            .collect();
        while writers.iter().any(|w| !w.is_finished()) {
            largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        for w in writers {
            w.await.unwrap();
        }
        // The bound, plus the frames of the group commit that crossed it (a few pages each
        // of 4 KiB and a 24-byte header), with room to spare.
        let limit = (BOUND as u64 + 64) * (4096 + 24);
        assert!(largest > 0, "the WAL was never seen");
        assert!(largest <= limit, "the WAL grew to {largest} bytes (bound {limit})");
    }

    /// A database an earlier version migrated up to 0003 keeps its refresh tokens through
    /// 0004 (the move to issue order) and 0007 (keys): the live one is still live, the
    /// retired one is still known with its successor (so replaying it is still detected),
    /// both still lead to their session.
    #[tokio::test]
    async fn refresh_tokens_survive_the_move_to_issue_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        // Tokens of the format before keys: their key is derived from their hash.
        let (retired, live) = (RefreshTokenKey::of("lkr_retired"), RefreshTokenKey::of("lkr_live"));
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE latchkey_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
            )
            .unwrap();
            for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v <= 3) {
                conn.execute_batch(sql).unwrap();
                conn.execute("INSERT INTO latchkey_migrations VALUES (?1, 0)", [version]).unwrap();
            }
            conn.execute_batch(
                "INSERT INTO users (id, username, password_hash, authz_ver, status, created_at) \
                   VALUES ('u1', 'old', 'x', 1, 'active', 0); \
                 INSERT INTO sessions (id, user_id, client_id, scope, created_at, last_used_at, idle_expires_at, expires_at) \
                   VALUES ('s1', 'u1', 'latchkey', 'profile', 0, 0, 9999999999, 9999999999);",
            )
            .unwrap();
            conn.execute(
                "INSERT INTO refresh_tokens (hash, session_id, created_at, retired_at, successor_hash) \
                 VALUES (?1, 's1', 1, 2, ?2), (?2, 's1', 2, NULL, NULL)",
                params![&retired.hash.0[..], &live.hash.0[..]],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&format!("sqlite://{}", path.display())).await.unwrap();
        assert!(store.is_live_refresh_token(&live).await.unwrap());
        assert!(!store.is_live_refresh_token(&retired).await.unwrap());
        for key in [&retired, &live] {
            let session = store.find_session_by_refresh_token(key).await.unwrap().unwrap();
            assert_eq!(session.id, "s1");
        }
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let seen_in = std::sync::Arc::clone(&seen);
        let decide = Box::new(move |snap: &latchkey_core::store::RefreshSnapshot| {
            *seen_in.lock().unwrap() = Some(snap.token.clone());
            RotationDecision::Refuse { reason: latchkey_proto::ErrorReason::UnknownToken }
        });
        store.rotate_refresh_token(&retired, decide).await.unwrap().unwrap();
        let token = seen.lock().unwrap().take().unwrap();
        assert_eq!(token.retired_at.map(|t| t.0), Some(2));
        assert!(!token.is_successor_used, "the successor is found by its derived key");
        // A token of the new format that carries the retired row's key but another secret
        // is not that token.
        let forged = RefreshTokenKey { id: retired.id, hash: live.hash };
        assert!(store.find_session_by_refresh_token(&forged).await.unwrap().is_none());
    }
}
