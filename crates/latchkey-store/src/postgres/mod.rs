//! The PostgreSQL store: a sqlx pool, migrations applied at open, and every atomic
//! operation of the [`Store`] port as one transaction. Several Latchkey nodes may share one
//! database, so this file owns what the SQLite store gets for free from its single writer:
//! serialising concurrent writers. It holds SQL and sqlx types; nothing outside this crate
//! sees them.
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
//! - Revocations lock the sessions they revoke, in id order, before changing them
//!   (`mark_revoked_in_tx`); `apply_user_change` locks the user row by updating it first.
//! - Throttle counters are one `INSERT ... ON CONFLICT DO UPDATE`, which is atomic per key.
//! - `prune` locks the sessions it forgets, in id order, before deleting their tokens.
//!
//! Lock order, to keep deadlocks out: a transaction locks rows (user, then sessions in id
//! order) first and takes the feed lock (below) last; after the feed lock it only inserts
//! feed and security events, which wait for nobody. A deadlock or serialization failure
//! that happens anyway (SQLSTATE 40P01, 40001) is retried: the whole transaction runs again,
//! up to `MAX_ATTEMPTS` times with a short randomised backoff, which is why each
//! transaction body is a function of its (owned) transaction.
//!
//! The decision closures of rotation and code redemption are `FnOnce`: they run at most
//! once. A retry that would need to ask again (the failure came after the decision) is not
//! made; the call fails with [`StoreError::Unavailable`], and nothing was committed. Since
//! every lock such a transaction needs is taken before the decision, this only happens when
//! PostgreSQL aborts a transaction for reasons outside this design.
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

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use latchkey_core::caller::CallerFingerprint;
use latchkey_core::clock::Timestamp;
use latchkey_core::crypto::TokenHash;
use latchkey_core::store::{
    AuthCodeRecord, ClientRecord, CodeDecide, CodeDecision, CodeRedemption, Decide, FeedEventRecord,
    NewSecurityEvent, RefreshSnapshot, RefreshTokenRecord, RevocationTarget, RotationDecision,
    SecurityEventRecord, SessionRecord, SessionRevocation, Store, StoreError, StoredKey, ThrottleRecord,
    Touch, UserChange, UserChangeKind, UserRecord, UserStatus,
};
use latchkey_proto::ErrorReason;
use latchkey_proto::events::RevocationEvent;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row};

/// Schema migrations, applied in order, each once.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../migrations/postgres/0002_refresh_token_retired_by.sql")),
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

/// A transaction, owned by a transaction body for the length of one attempt.
type PgTx = sqlx::Transaction<'static, Postgres>;
/// What a transaction body returns: its transaction (for the caller to commit) and its value.
type TxResult<T> = Result<(PgTx, T), sqlx::Error>;
/// A transaction body's future. It owns the transaction and borrows only the arguments,
/// which is what lets one body run again on a fresh transaction.
type TxFuture<'a, T> = Pin<Box<dyn Future<Output = TxResult<T>> + Send + 'a>>;
/// A query with its bound arguments.
type PgQuery<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;
/// Maps a row to a record.
type FromRow<T> = fn(&PgRow) -> Result<T, sqlx::Error>;

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

/// Takes a decision closure out of its slot; `None` once it has been taken.
fn take_once<F>(slot: &Mutex<Option<F>>) -> Option<F> {
    slot.lock().ok().and_then(|mut guard| guard.take())
}

/// Whether a decision closure is still in its slot (it has not run).
fn is_unused<F>(slot: &Mutex<Option<F>>) -> bool {
    slot.lock().map(|guard| guard.is_some()).unwrap_or(false)
}

/// A body asked for its decision a second time. Unreachable: [`PgStore::in_tx_while`] does not
/// retry once the decision has been taken.
fn decided_twice() -> sqlx::Error {
    sqlx::Error::Protocol("a store decision was asked for twice in one operation".into())
}

/// The PostgreSQL implementation of [`Store`].
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Set when an operation could not reach the database; see [`PgStore::pool`].
    is_down: Arc<AtomicBool>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not derived: the pool's options hold the connection settings, password included.
        f.debug_struct("PgStore").field("connections", &self.pool.size()).finish_non_exhaustive()
    }
}

impl PgStore {
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
        Ok(Self { pool, is_down: Arc::new(AtomicBool::new(false)) })
    }

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

    /// Reads at most one row.
    async fn find_one<T: Send>(&self, query: PgQuery<'_>, map: FromRow<T>) -> Result<Option<T>, StoreError> {
        let row = query.fetch_optional(self.pool().await?).await.map_err(|e| self.fail(e))?;
        row.as_ref().map(map).transpose().map_err(|e| self.fail(e))
    }

    /// Reads every row.
    async fn find_all<T: Send>(&self, query: PgQuery<'_>, map: FromRow<T>) -> Result<Vec<T>, StoreError> {
        let rows = query.fetch_all(self.pool().await?).await.map_err(|e| self.fail(e))?;
        rows.iter().map(map).collect::<Result<_, _>>().map_err(|e| self.fail(e))
    }

    /// Runs one statement on its own (autocommit); returns the rows it changed.
    async fn execute(&self, query: PgQuery<'_>) -> Result<u64, StoreError> {
        Ok(query.execute(self.pool().await?).await.map_err(|e| self.fail(e))?.rows_affected())
    }

    /// Runs `body` in a transaction and commits it, running it again on a deadlock or
    /// serialization failure.
    async fn in_tx<'a, T: Send>(
        &self,
        body: impl FnMut(PgTx) -> TxFuture<'a, T> + Send,
    ) -> Result<T, StoreError> {
        self.in_tx_while(|| true, body).await
    }

    /// [`Self::in_tx`], retrying only while `can_retry` says so (a body whose `FnOnce`
    /// decision has run cannot run again).
    async fn in_tx_while<'a, T: Send>(
        &self,
        can_retry: impl Fn() -> bool + Send,
        mut body: impl FnMut(PgTx) -> TxFuture<'a, T> + Send,
    ) -> Result<T, StoreError> {
        let mut attempt = 1;
        loop {
            let e = match run_once(self.pool().await?, &mut body).await {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            if !is_retryable(&e) {
                return Err(self.fail(e));
            }
            if attempt >= MAX_ATTEMPTS || !can_retry() {
                return Err(StoreError::Unavailable(format!(
                    "transaction given up after {attempt} attempt(s): {e}"
                )));
            }
            tracing::debug!(attempt, error = %e, "transaction lost a race; running it again");
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }
}

/// One attempt: begin, run the body, commit. A body that fails drops its transaction,
/// which rolls it back.
async fn run_once<'a, T: Send>(
    pool: &PgPool,
    body: &mut (impl FnMut(PgTx) -> TxFuture<'a, T> + Send),
) -> Result<T, sqlx::Error> {
    let tx = pool.begin().await?;
    let (tx, value) = body(tx).await?;
    tx.commit().await?;
    Ok(value)
}

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
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS latchkey_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    for &(version, sql) in MIGRATIONS {
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM latchkey_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        if done.is_none() {
            sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(db_err)?;
            sqlx::query(
                "INSERT INTO latchkey_migrations (version, applied_at) VALUES ($1, EXTRACT(EPOCH FROM now())::BIGINT)",
            )
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
    }
    tx.commit().await.map_err(db_err)
}

const USER_COLUMNS: &str =
    "u.id AS u_id, u.username, u.password_hash, u.roles, u.authz_ver, u.status, u.created_at AS u_created_at";
const SESSION_COLUMNS: &str = "s.id AS s_id, s.user_id, s.client_id, s.scope, s.created_at AS s_created_at, \
    s.last_used_at, s.idle_expires_at, s.expires_at, s.ip, s.user_agent, s.revoked_at, s.revoke_reason";

/// A user from `USER_COLUMNS`, starting at column `at`.
fn user_at(row: &PgRow, at: usize) -> Result<UserRecord, sqlx::Error> {
    let roles: String = row.try_get(at + 3)?;
    let status: String = row.try_get(at + 5)?;
    Ok(UserRecord {
        id: row.try_get(at)?,
        username: row.try_get(at + 1)?,
        password_hash: row.try_get(at + 2)?,
        roles: serde_json::from_str(&roles).unwrap_or_default(),
        authz_ver: row.try_get(at + 4)?,
        status: UserStatus::parse(&status),
        created_at: Timestamp(row.try_get(at + 6)?),
    })
}

fn user_from_row(row: &PgRow) -> Result<UserRecord, sqlx::Error> {
    user_at(row, 0)
}

/// A session from `SESSION_COLUMNS`, starting at column `at`.
fn session_at(row: &PgRow, at: usize) -> Result<SessionRecord, sqlx::Error> {
    let reason: Option<String> = row.try_get(at + 11)?;
    Ok(SessionRecord {
        id: row.try_get(at)?,
        user_id: row.try_get(at + 1)?,
        client_id: row.try_get(at + 2)?,
        scope: row.try_get(at + 3)?,
        created_at: Timestamp(row.try_get(at + 4)?),
        last_used_at: Timestamp(row.try_get(at + 5)?),
        idle_expires_at: Timestamp(row.try_get(at + 6)?),
        expires_at: Timestamp(row.try_get(at + 7)?),
        ip: row.try_get(at + 8)?,
        user_agent: row.try_get(at + 9)?,
        revoked_at: row.try_get::<Option<i64>, _>(at + 10)?.map(Timestamp),
        // A reason this version does not know is reported as an admin revocation: the
        // session stays revoked either way.
        revoke_reason: reason.map(|r| ErrorReason::parse(&r).unwrap_or(ErrorReason::RevokedByAdmin)),
    })
}

fn session_from_row(row: &PgRow) -> Result<SessionRecord, sqlx::Error> {
    session_at(row, 0)
}

async fn insert_security_event(conn: &mut PgConnection, e: &NewSecurityEvent) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO security_events (at, kind, user_id, session_id, ip, detail) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(e.at.0)
    .bind(e.kind)
    .bind(e.user_id.as_deref())
    .bind(e.session_id.as_deref())
    .bind(e.ip.as_deref())
    .bind(e.detail.as_deref())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Takes the feed's write lock, held until the transaction ends: see the module doc. Taking
/// it again in the same transaction is a no-op in effect (it only stacks).
async fn lock_feed(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(FEED_LOCK).execute(&mut *conn).await?;
    Ok(())
}

/// Revokes the given sessions that are not yet revoked, with a feed event each and the
/// security event. Returns the ids it revoked.
async fn revoke_in_tx(
    conn: &mut PgConnection,
    ids: Vec<String>,
    rev: &SessionRevocation,
) -> Result<Vec<String>, sqlx::Error> {
    let revoked = mark_revoked_in_tx(conn, ids, rev).await?;
    publish_revoked_in_tx(conn, &revoked, rev).await?;
    Ok(revoked)
}

/// The first half of [`revoke_in_tx`]: locks the given sessions that are not yet revoked, in
/// id order (so two revocations of overlapping sets cannot deadlock), and marks them
/// revoked. Returns their ids in the order given, as SQLite's one-by-one updates do.
async fn mark_revoked_in_tx(
    conn: &mut PgConnection,
    ids: Vec<String>,
    rev: &SessionRevocation,
) -> Result<Vec<String>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // Under READ COMMITTED, FOR UPDATE re-checks `revoked_at IS NULL` on the latest version
    // of a row it had to wait for, so a session revoked meanwhile is left out.
    let mut locked: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM sessions WHERE id = ANY($1) AND revoked_at IS NULL ORDER BY id FOR UPDATE",
    )
    .bind(ids.as_slice())
    .fetch_all(&mut *conn)
    .await?;
    if locked.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query("UPDATE sessions SET revoked_at = $1, revoke_reason = $2 WHERE id = ANY($3)")
        .bind(rev.now.0)
        .bind(rev.reason.as_str())
        .bind(locked.as_slice())
        .execute(&mut *conn)
        .await?;
    let revoked = ids
        .into_iter()
        .filter(|id| match locked.iter().position(|l| l == id) {
            Some(at) => {
                locked.swap_remove(at);
                true
            }
            None => false,
        })
        .collect();
    Ok(revoked)
}

/// The second half of [`revoke_in_tx`]: one `session_revoked` feed event per revoked
/// session and the security event. Takes the feed lock, so it comes after every row lock.
async fn publish_revoked_in_tx(
    conn: &mut PgConnection,
    revoked: &[String],
    rev: &SessionRevocation,
) -> Result<(), sqlx::Error> {
    if revoked.is_empty() {
        return Ok(());
    }
    lock_feed(conn).await?;
    for id in revoked {
        sqlx::query(
            "INSERT INTO revocation_events (type, sid, until, created_at) VALUES ('session_revoked', $1, $2, $3)",
        )
        .bind(id.as_str())
        .bind(rev.until.0)
        .bind(rev.now.0)
        .execute(&mut *conn)
        .await?;
    }
    let mut event = rev.event.clone();
    if event.detail.is_none() {
        event.detail = Some(format!("reason {}; {} session(s)", rev.reason.as_str(), revoked.len()));
    }
    if event.session_id.is_none() && revoked.len() == 1 {
        event.session_id = revoked.first().cloned();
    }
    insert_security_event(conn, &event).await
}

async fn live_session_ids(
    conn: &mut PgConnection,
    user_id: &str,
    except: Option<&str>,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND id IS DISTINCT FROM $2",
    )
    .bind(user_id)
    .bind(except)
    .fetch_all(&mut *conn)
    .await
}

async fn touch_session(conn: &mut PgConnection, sid: &str, touch: &Touch) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET last_used_at = $1, idle_expires_at = $2, ip = $3 WHERE id = $4")
        .bind(touch.now.0)
        .bind(touch.idle_expires_at.0)
        .bind(touch.ip.as_deref())
        .bind(sid)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Inserts a session, with its first refresh token when it has one.
async fn insert_session_in_tx(
    conn: &mut PgConnection,
    s: &SessionRecord,
    refresh_token: Option<&TokenHash>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sessions (id, user_id, client_id, scope, created_at, last_used_at, idle_expires_at, \
         expires_at, ip, user_agent) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(s.id.as_str())
    .bind(s.user_id.as_str())
    .bind(s.client_id.as_str())
    .bind(s.scope.as_str())
    .bind(s.created_at.0)
    .bind(s.last_used_at.0)
    .bind(s.idle_expires_at.0)
    .bind(s.expires_at.0)
    .bind(s.ip.as_deref())
    .bind(s.user_agent.as_deref())
    .execute(&mut *conn)
    .await?;
    if let Some(hash) = refresh_token {
        sqlx::query("INSERT INTO refresh_tokens (hash, session_id, created_at) VALUES ($1, $2, $3)")
            .bind(hash.0.as_slice())
            .bind(s.id.as_str())
            .bind(s.created_at.0)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

const CODE_COLUMNS: &str = "hash, client_id, user_id, redirect_uri, scope, nonce, code_challenge, auth_time, \
    created_at, expires_at, used_at, session_id";

fn code_from_row(row: &PgRow) -> Result<AuthCodeRecord, sqlx::Error> {
    let hash: Vec<u8> = row.try_get(0)?;
    Ok(AuthCodeRecord {
        hash: TokenHash(hash.try_into().unwrap_or([0; 32])),
        client_id: row.try_get(1)?,
        user_id: row.try_get(2)?,
        redirect_uri: row.try_get(3)?,
        scope: row.try_get(4)?,
        nonce: row.try_get(5)?,
        code_challenge: row.try_get(6)?,
        auth_time: Timestamp(row.try_get(7)?),
        created_at: Timestamp(row.try_get(8)?),
        expires_at: Timestamp(row.try_get(9)?),
        used_at: row.try_get::<Option<i64>, _>(10)?.map(Timestamp),
        session_id: row.try_get(11)?,
    })
}

const CLIENT_SELECT: &str =
    "SELECT client_id, name, secret_hash, redirect_uris, grant_types, scopes, created_at FROM clients";

fn client_from_row(row: &PgRow) -> Result<ClientRecord, sqlx::Error> {
    let list = |i: usize| -> Result<Vec<String>, sqlx::Error> {
        Ok(serde_json::from_str(&row.try_get::<String, _>(i)?).unwrap_or_default())
    };
    let secret_hash: Option<Vec<u8>> = row.try_get(2)?;
    Ok(ClientRecord {
        client_id: row.try_get(0)?,
        name: row.try_get(1)?,
        // A stored hash of the wrong length can match nothing: treat it as no secret.
        secret_hash: secret_hash.and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok()).map(TokenHash),
        redirect_uris: list(3)?,
        grant_types: list(4)?,
        scopes: list(5)?,
        created_at: Timestamp(row.try_get(6)?),
    })
}

fn throttle_from_row(row: &PgRow) -> Result<ThrottleRecord, sqlx::Error> {
    Ok(ThrottleRecord {
        count: row.try_get(0)?,
        window_start: Timestamp(row.try_get(1)?),
        last_failure_at: Timestamp(row.try_get(2)?),
    })
}

fn key_from_row(row: &PgRow) -> Result<StoredKey, sqlx::Error> {
    Ok(StoredKey {
        kid: row.try_get(0)?,
        alg: row.try_get(1)?,
        private_key: row.try_get(2)?,
        created_at: Timestamp(row.try_get(3)?),
        activates_at: Timestamp(row.try_get(4)?),
    })
}

fn security_event_from_row(row: &PgRow) -> Result<SecurityEventRecord, sqlx::Error> {
    Ok(SecurityEventRecord {
        id: row.try_get(0)?,
        at: Timestamp(row.try_get(1)?),
        kind: row.try_get(2)?,
        user_id: row.try_get(3)?,
        session_id: row.try_get(4)?,
        ip: row.try_get(5)?,
        detail: row.try_get(6)?,
    })
}

/// A feed event from `seq, type, sid, sub, jti, authz_ver, until`.
fn feed_event_from_row(row: &PgRow) -> Result<FeedEventRecord, StoreError> {
    let text = |i: usize| row.try_get::<Option<String>, _>(i).map(Option::unwrap_or_default).map_err(db_err);
    let seq: i64 = row.try_get(0).map_err(db_err)?;
    let kind: String = row.try_get(1).map_err(db_err)?;
    let until: i64 = row.try_get(6).map_err(db_err)?;
    let event = match kind.as_str() {
        "session_revoked" => RevocationEvent::SessionRevoked { seq, sid: text(2)?, until },
        "user_changed" => RevocationEvent::UserChanged {
            seq,
            sub: text(3)?,
            authz_ver: row.try_get::<Option<i64>, _>(5).map_err(db_err)?.unwrap_or_default(),
            until,
        },
        "token_revoked" => RevocationEvent::TokenRevoked { seq, jti: text(4)?, until },
        other => return Err(StoreError::Backend(format!("unknown revocation event type {other}"))),
    };
    Ok(FeedEventRecord { seq, event })
}

/// Locks and reads a session: the lock that serialises rotations of one session.
async fn lock_session(conn: &mut PgConnection, id: &str) -> Result<Option<SessionRecord>, sqlx::Error> {
    let row = sqlx::query(&format!("SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(session_from_row).transpose()
}

/// A stored caller fingerprint; any other length is a corrupt row.
fn fingerprint(bytes: Vec<u8>) -> Result<CallerFingerprint, sqlx::Error> {
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| sqlx::Error::Decode("refresh_tokens.retired_by is not 32 bytes".into()))?;
    Ok(CallerFingerprint(bytes))
}

/// Reads a refresh token row, and whether its successor has itself been rotated.
async fn refresh_token_in_tx(
    conn: &mut PgConnection,
    presented: &[u8; 32],
) -> Result<Option<RefreshTokenRecord>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT session_id, created_at, retired_at, successor_hash, successor_sealed, retired_by \
         FROM refresh_tokens WHERE hash = $1",
    )
    .bind(presented.as_slice())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let successor_hash: Option<Vec<u8>> = row.try_get(3)?;
    let is_successor_used = match &successor_hash {
        Some(next) => {
            sqlx::query_scalar::<_, bool>("SELECT retired_at IS NOT NULL FROM refresh_tokens WHERE hash = $1")
                .bind(next.as_slice())
                .fetch_optional(&mut *conn)
                .await?
                .unwrap_or(false)
        }
        None => false,
    };
    Ok(Some(RefreshTokenRecord {
        hash: TokenHash(*presented),
        session_id: row.try_get(0)?,
        created_at: Timestamp(row.try_get(1)?),
        retired_at: row.try_get::<Option<i64>, _>(2)?.map(Timestamp),
        successor_sealed: row.try_get(4)?,
        is_successor_used,
        retired_by: row.try_get::<Option<Vec<u8>>, _>(5)?.map(fingerprint).transpose()?,
    }))
}

/// Reads everything a rotation decision needs, with the session locked first: the token's
/// session id (which never changes), then the session row `FOR UPDATE`, then the token again
/// (a concurrent rotation may have retired it while this one waited), then the user.
/// `None` when the token is unknown, or was pruned with its session meanwhile.
async fn rotation_snapshot(
    conn: &mut PgConnection,
    presented: &[u8; 32],
) -> Result<Option<RefreshSnapshot>, sqlx::Error> {
    let session_id: Option<String> =
        sqlx::query_scalar("SELECT session_id FROM refresh_tokens WHERE hash = $1")
            .bind(presented.as_slice())
            .fetch_optional(&mut *conn)
            .await?;
    let Some(session_id) = session_id else { return Ok(None) };
    let Some(session) = lock_session(conn, &session_id).await? else { return Ok(None) };
    let Some(token) = refresh_token_in_tx(conn, presented).await? else { return Ok(None) };
    let user = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1"))
        .bind(session.user_id.as_str())
        .fetch_one(&mut *conn)
        .await?;
    let user = user_from_row(&user)?;
    Ok(Some(RefreshSnapshot { token, session, user }))
}

async fn apply_rotation(
    conn: &mut PgConnection,
    presented: &[u8; 32],
    sid: &str,
    decision: &RotationDecision,
) -> Result<(), sqlx::Error> {
    match decision {
        RotationDecision::Rotate { retired_by, successor_hash, successor_sealed, touch, event } => {
            sqlx::query(
                "UPDATE refresh_tokens SET retired_at = $1, successor_hash = $2, successor_sealed = $3, \
                 retired_by = $4 WHERE hash = $5 AND retired_at IS NULL",
            )
            .bind(touch.now.0)
            .bind(successor_hash.0.as_slice())
            .bind(successor_sealed.as_slice())
            .bind(retired_by.0.as_slice())
            .bind(presented.as_slice())
            .execute(&mut *conn)
            .await?;
            sqlx::query("INSERT INTO refresh_tokens (hash, session_id, created_at) VALUES ($1, $2, $3)")
                .bind(successor_hash.0.as_slice())
                .bind(sid)
                .bind(touch.now.0)
                .execute(&mut *conn)
                .await?;
            touch_session(conn, sid, touch).await?;
            if let Some(e) = event {
                insert_security_event(conn, e).await?;
            }
        }
        RotationDecision::Replay { touch, event } => {
            touch_session(conn, sid, touch).await?;
            if let Some(e) = event {
                insert_security_event(conn, e).await?;
            }
        }
        RotationDecision::Revoke { revocation } => {
            revoke_in_tx(conn, vec![sid.to_owned()], revocation).await?;
        }
        RotationDecision::Refuse { .. } | RotationDecision::ScopeExceeded => {}
    }
    Ok(())
}

// Transaction bodies: each owns its transaction for one attempt and hands it back with its
// value, so that `PgStore::in_tx` can commit it, or run the body again on a fresh one.

async fn rotate_tx(
    mut tx: PgTx,
    presented: &[u8; 32],
    decide: &Mutex<Option<Decide>>,
) -> TxResult<Option<(RefreshSnapshot, RotationDecision)>> {
    let Some(snap) = rotation_snapshot(&mut tx, presented).await? else { return Ok((tx, None)) };
    let Some(decide) = take_once(decide) else { return Err(decided_twice()) };
    let decision = decide(&snap);
    apply_rotation(&mut tx, presented, &snap.session.id, &decision).await?;
    Ok((tx, Some((snap, decision))))
}

async fn redeem_tx(
    mut tx: PgTx,
    hash: &[u8; 32],
    client_id: &str,
    now: Timestamp,
    reuse: &SessionRevocation,
    decide: &Mutex<Option<CodeDecide>>,
) -> TxResult<CodeRedemption> {
    let row = sqlx::query(&format!("SELECT {CODE_COLUMNS} FROM auth_codes WHERE hash = $1 FOR UPDATE"))
        .bind(hash.as_slice())
        .fetch_optional(&mut *tx)
        .await?;
    let Some(code) = row.as_ref().map(code_from_row).transpose()? else {
        return Ok((tx, CodeRedemption::Unknown));
    };
    if code.client_id != client_id {
        return Ok((tx, CodeRedemption::OtherClient { code: Box::new(code) }));
    }
    if code.used_at.is_some() {
        let revoked = match &code.session_id {
            Some(sid) => revoke_in_tx(&mut tx, vec![sid.clone()], reuse).await?,
            None => Vec::new(),
        };
        return Ok((tx, CodeRedemption::Reused { code: Box::new(code), revoked }));
    }
    let Some(decide) = take_once(decide) else { return Err(decided_twice()) };
    let decision = decide(&code);
    let session_id = match &decision {
        CodeDecision::Issue { session, refresh_token } => {
            insert_session_in_tx(&mut tx, session, refresh_token.as_ref()).await?;
            Some(session.id.clone())
        }
        CodeDecision::Refuse => None,
    };
    sqlx::query("UPDATE auth_codes SET used_at = $1, session_id = $2 WHERE hash = $3")
        .bind(now.0)
        .bind(session_id.as_deref())
        .bind(hash.as_slice())
        .execute(&mut *tx)
        .await?;
    Ok((tx, CodeRedemption::Redeemed { code: Box::new(code), decision }))
}

/// Applies the change's own update to the user row; returns what to revoke, if anything.
async fn update_user_in_tx(
    conn: &mut PgConnection,
    change: &UserChange,
    roles: Option<&str>,
) -> Result<Option<(ErrorReason, Option<String>)>, sqlx::Error> {
    let user_id = change.user_id.as_str();
    Ok(match &change.kind {
        UserChangeKind::SetRoles(_) => {
            sqlx::query("UPDATE users SET roles = $1 WHERE id = $2")
                .bind(roles)
                .bind(user_id)
                .execute(&mut *conn)
                .await?;
            None
        }
        UserChangeKind::SetPassword { password_hash, keep_session } => {
            sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                .bind(password_hash.as_str())
                .bind(user_id)
                .execute(&mut *conn)
                .await?;
            Some((ErrorReason::PasswordChanged, keep_session.clone()))
        }
        UserChangeKind::Disable => {
            sqlx::query("UPDATE users SET status = 'disabled' WHERE id = $1")
                .bind(user_id)
                .execute(&mut *conn)
                .await?;
            Some((ErrorReason::UserDisabled, None))
        }
    })
}

/// The same writes as SQLite's, in lock order: the user row (the first UPDATE locks it),
/// then the sessions to revoke, then the feed lock and the events, which come out in
/// SQLite's order (`user_changed`, its security event, then the revocations).
async fn apply_user_change_tx(
    mut tx: PgTx,
    change: &UserChange,
    roles: Option<&str>,
) -> TxResult<Option<(i64, Vec<String>)>> {
    let authz_ver: Option<i64> =
        sqlx::query_scalar("UPDATE users SET authz_ver = authz_ver + 1 WHERE id = $1 RETURNING authz_ver")
            .bind(change.user_id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
    let Some(authz_ver) = authz_ver else { return Ok((tx, None)) };
    let to_revoke = update_user_in_tx(&mut tx, change, roles).await?;
    let mut revoked = Vec::new();
    let mut revocation = None;
    if let Some((reason, except)) = to_revoke {
        let ids = live_session_ids(&mut tx, &change.user_id, except.as_deref()).await?;
        let mut event = change.event.clone();
        event.kind = "session_revoked";
        let rev = SessionRevocation { reason, now: change.now, until: change.until, event };
        revoked = mark_revoked_in_tx(&mut tx, ids, &rev).await?;
        revocation = Some(rev);
    }
    lock_feed(&mut tx).await?;
    sqlx::query(
        "INSERT INTO revocation_events (type, sub, authz_ver, until, created_at) VALUES ('user_changed', $1, $2, $3, $4)",
    )
    .bind(change.user_id.as_str())
    .bind(authz_ver)
    .bind(change.until.0)
    .bind(change.now.0)
    .execute(&mut *tx)
    .await?;
    insert_security_event(&mut tx, &change.event).await?;
    if let Some(rev) = &revocation {
        publish_revoked_in_tx(&mut tx, &revoked, rev).await?;
    }
    Ok((tx, Some((authz_ver, revoked))))
}

/// The sessions a revocation target names (not yet locked: [`revoke_in_tx`] locks them and
/// drops those revoked meanwhile).
async fn target_session_ids(
    conn: &mut PgConnection,
    target: &RevocationTarget,
) -> Result<Vec<String>, sqlx::Error> {
    Ok(match target {
        RevocationTarget::Session { id, user_id } => {
            let owner: Option<String> = sqlx::query_scalar("SELECT user_id FROM sessions WHERE id = $1")
                .bind(id.as_str())
                .fetch_optional(&mut *conn)
                .await?;
            match (owner, user_id) {
                (Some(owner), Some(expected)) if &owner != expected => Vec::new(),
                (Some(_), _) => vec![id.clone()],
                (None, _) => Vec::new(),
            }
        }
        RevocationTarget::UserSessions { user_id, except } => {
            live_session_ids(conn, user_id, except.as_deref()).await?
        }
        RevocationTarget::ClientSessions { client_id } => {
            sqlx::query("DELETE FROM consents WHERE client_id = $1")
                .bind(client_id.as_str())
                .execute(&mut *conn)
                .await?;
            sqlx::query_scalar("SELECT id FROM sessions WHERE client_id = $1 AND revoked_at IS NULL")
                .bind(client_id.as_str())
                .fetch_all(&mut *conn)
                .await?
        }
        RevocationTarget::AppGrant { user_id, client_id } => {
            sqlx::query("DELETE FROM consents WHERE user_id = $1 AND client_id = $2")
                .bind(user_id.as_str())
                .bind(client_id.as_str())
                .execute(&mut *conn)
                .await?;
            sqlx::query_scalar(
                "SELECT id FROM sessions WHERE user_id = $1 AND client_id = $2 AND revoked_at IS NULL",
            )
            .bind(user_id.as_str())
            .bind(client_id.as_str())
            .fetch_all(&mut *conn)
            .await?
        }
    })
}

async fn revoke_sessions_tx(
    mut tx: PgTx,
    target: &RevocationTarget,
    rev: &SessionRevocation,
) -> TxResult<Vec<String>> {
    let ids = target_session_ids(&mut tx, target).await?;
    let revoked = revoke_in_tx(&mut tx, ids, rev).await?;
    Ok((tx, revoked))
}

async fn insert_session_tx(
    mut tx: PgTx,
    s: &SessionRecord,
    refresh_token: Option<&TokenHash>,
    cookie: Option<&TokenHash>,
) -> TxResult<()> {
    insert_session_in_tx(&mut tx, s, refresh_token).await?;
    if let Some(cookie) = cookie {
        sqlx::query("INSERT INTO web_sessions (cookie_hash, session_id, created_at) VALUES ($1, $2, $3)")
            .bind(cookie.0.as_slice())
            .bind(s.id.as_str())
            .bind(s.created_at.0)
            .execute(&mut *tx)
            .await?;
    }
    Ok((tx, ()))
}

/// Publishes a `token_revoked` event once per jti. The feed lock is taken before the
/// check, so two nodes revoking one token at once publish one event.
async fn revoke_access_token_tx(mut tx: PgTx, jti: &str, until: Timestamp, now: Timestamp) -> TxResult<()> {
    lock_feed(&mut tx).await?;
    let known: Option<i64> = sqlx::query_scalar("SELECT seq FROM revocation_events WHERE jti = $1")
        .bind(jti)
        .fetch_optional(&mut *tx)
        .await?;
    if known.is_none() {
        sqlx::query(
            "INSERT INTO revocation_events (type, jti, until, created_at) VALUES ('token_revoked', $1, $2, $3)",
        )
        .bind(jti)
        .bind(until.0)
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
    }
    Ok((tx, ()))
}

/// Runs one statement with one parameter and returns how many rows it touched.
async fn execute_with(conn: &mut PgConnection, sql: &str, at: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(sql).bind(at).execute(&mut *conn).await?.rows_affected())
}

async fn prune_tx(mut tx: PgTx, now: Timestamp, before: Timestamp) -> TxResult<u64> {
    const OVER: &str =
        "SELECT id FROM sessions WHERE expires_at <= $1 OR idle_expires_at <= $1 OR revoked_at <= $1";
    // The sessions to forget are locked first, in id order (the order every writer locks
    // sessions in), so that the three deletes below see one set of sessions.
    execute_with(&mut tx, &format!("{OVER} ORDER BY id FOR UPDATE"), before.0).await?;
    let mut n = execute_with(&mut tx, "DELETE FROM revocation_events WHERE until <= $1", now.0).await?;
    n += execute_with(
        &mut tx,
        "DELETE FROM throttles WHERE last_failure_at <= $1",
        now.0.saturating_sub(86_400),
    )
    .await?;
    // Codes are kept 10 minutes past expiry, so a late second use still revokes.
    n += execute_with(&mut tx, "DELETE FROM auth_codes WHERE expires_at <= $1", now.0.saturating_sub(600))
        .await?;
    n += execute_with(&mut tx, &format!("DELETE FROM web_sessions WHERE session_id IN ({OVER})"), before.0)
        .await?;
    n += execute_with(&mut tx, &format!("DELETE FROM refresh_tokens WHERE session_id IN ({OVER})"), before.0)
        .await?;
    n += execute_with(
        &mut tx,
        "DELETE FROM sessions WHERE expires_at <= $1 OR idle_expires_at <= $1 OR revoked_at <= $1",
        before.0,
    )
    .await?;
    Ok((tx, n))
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.execute(sqlx::query("SELECT 1")).await.map(|_| ())
    }

    async fn insert_user(&self, u: &UserRecord) -> Result<(), StoreError> {
        let roles = serde_json::to_string(&u.roles).map_err(|e| StoreError::Backend(e.to_string()))?;
        let query = sqlx::query(
            "INSERT INTO users (id, username, password_hash, roles, authz_ver, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(u.id.as_str())
        .bind(u.username.as_str())
        .bind(u.password_hash.as_str())
        .bind(roles)
        .bind(u.authz_ver)
        .bind(u.status.as_str())
        .bind(u.created_at.0);
        self.execute(query).await.map(|_| ())
    }

    async fn find_user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1");
        self.find_one(sqlx::query(&sql).bind(id), user_from_row).await
    }

    async fn find_user_by_username(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.username = $1");
        self.find_one(sqlx::query(&sql).bind(username), user_from_row).await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u ORDER BY u.created_at, u.username");
        self.find_all(sqlx::query(&sql), user_from_row).await
    }

    async fn apply_user_change(&self, change: &UserChange) -> Result<Option<(i64, Vec<String>)>, StoreError> {
        let roles = match &change.kind {
            UserChangeKind::SetRoles(roles) => {
                Some(serde_json::to_string(roles).map_err(|e| StoreError::Backend(e.to_string()))?)
            }
            UserChangeKind::SetPassword { .. } | UserChangeKind::Disable => None,
        };
        let roles = roles.as_deref();
        self.in_tx(|tx| Box::pin(apply_user_change_tx(tx, change, roles))).await
    }

    async fn insert_session(&self, s: &SessionRecord, refresh_token: &TokenHash) -> Result<(), StoreError> {
        self.in_tx(|tx| Box::pin(insert_session_tx(tx, s, Some(refresh_token), None))).await
    }

    async fn find_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.id = $1");
        self.find_one(sqlx::query(&sql).bind(id), session_from_row).await
    }

    async fn find_session_by_refresh_token(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE t.hash = $1"
        );
        self.find_one(sqlx::query(&sql).bind(hash.0.as_slice()), session_from_row).await
    }

    async fn list_live_sessions(
        &self,
        user_id: &str,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.user_id = $1 AND s.revoked_at IS NULL \
             AND s.expires_at > $2 AND s.idle_expires_at > $2 ORDER BY s.last_used_at DESC, s.created_at DESC"
        );
        self.find_all(sqlx::query(&sql).bind(user_id).bind(now.0), session_from_row).await
    }

    async fn revoke_sessions(
        &self,
        target: &RevocationTarget,
        rev: &SessionRevocation,
    ) -> Result<Vec<String>, StoreError> {
        self.in_tx(|tx| Box::pin(revoke_sessions_tx(tx, target, rev))).await
    }

    async fn rotate_refresh_token(
        &self,
        presented: &TokenHash,
        decide: Decide,
    ) -> Result<Option<(RefreshSnapshot, RotationDecision)>, StoreError> {
        let presented = &presented.0;
        // `decide` runs at most once: a retry is only made while it is still in its slot.
        let slot = Mutex::new(Some(decide));
        let slot = &slot;
        self.in_tx_while(|| is_unused(slot), |tx| Box::pin(rotate_tx(tx, presented, slot))).await
    }

    async fn insert_signing_key(&self, k: &StoredKey) -> Result<(), StoreError> {
        let query = sqlx::query(
            "INSERT INTO signing_keys (kid, alg, private_key, created_at, activates_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(k.kid.as_str())
        .bind(k.alg.as_str())
        .bind(k.private_key.as_slice())
        .bind(k.created_at.0)
        .bind(k.activates_at.0);
        self.execute(query).await.map(|_| ())
    }

    async fn list_signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let sql = "SELECT kid, alg, private_key, created_at, activates_at FROM signing_keys ORDER BY created_at, kid";
        self.find_all(sqlx::query(sql), key_from_row).await
    }

    async fn update_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        let query = sqlx::query("UPDATE signing_keys SET private_key = $1 WHERE kid = $2")
            .bind(key.private_key.as_slice())
            .bind(key.kid.as_str());
        self.execute(query).await.map(|_| ())
    }

    async fn delete_signing_key(&self, kid: &str) -> Result<(), StoreError> {
        self.execute(sqlx::query("DELETE FROM signing_keys WHERE kid = $1").bind(kid)).await.map(|_| ())
    }

    async fn find_throttle(&self, key: &str) -> Result<Option<ThrottleRecord>, StoreError> {
        let sql = "SELECT count, window_start, last_failure_at FROM throttles WHERE key = $1";
        self.find_one(sqlx::query(sql).bind(key), throttle_from_row).await
    }

    async fn record_throttle_failure(
        &self,
        key: &str,
        now: Timestamp,
        window_secs: i64,
    ) -> Result<ThrottleRecord, StoreError> {
        // One statement: the conflicting row is locked for the update, so concurrent
        // failures from several nodes each count once. SET sees the row as it was.
        let query = sqlx::query(
            "INSERT INTO throttles (key, count, window_start, last_failure_at) VALUES ($1, 1, $2, $2) \
             ON CONFLICT (key) DO UPDATE SET \
               count = CASE WHEN throttles.last_failure_at + $3 <= $2 THEN 1 ELSE throttles.count + 1 END, \
               window_start = CASE WHEN throttles.last_failure_at + $3 <= $2 THEN $2 ELSE throttles.window_start END, \
               last_failure_at = $2 \
             RETURNING count, window_start, last_failure_at",
        )
        .bind(key)
        .bind(now.0)
        .bind(window_secs);
        let row = query.fetch_one(self.pool().await?).await.map_err(|e| self.fail(e))?;
        throttle_from_row(&row).map_err(|e| self.fail(e))
    }

    async fn delete_throttle(&self, key: &str) -> Result<(), StoreError> {
        self.execute(sqlx::query("DELETE FROM throttles WHERE key = $1").bind(key)).await.map(|_| ())
    }

    async fn insert_security_event(&self, event: &NewSecurityEvent) -> Result<(), StoreError> {
        let mut conn = self.pool().await?.acquire().await.map_err(|e| self.fail(e))?;
        insert_security_event(&mut conn, event).await.map_err(|e| self.fail(e))
    }

    async fn list_security_events(&self, limit: i64) -> Result<Vec<SecurityEventRecord>, StoreError> {
        let sql = "SELECT id, at, kind, user_id, session_id, ip, detail FROM security_events ORDER BY id DESC LIMIT $1";
        self.find_all(sqlx::query(sql).bind(limit), security_event_from_row).await
    }

    async fn prune(&self, now: Timestamp, forget_sessions_before: Timestamp) -> Result<u64, StoreError> {
        self.in_tx(|tx| Box::pin(prune_tx(tx, now, forget_sessions_before))).await
    }

    async fn insert_client(&self, c: &ClientRecord) -> Result<(), StoreError> {
        let json = |v: &Vec<String>| serde_json::to_string(v).map_err(|e| StoreError::Backend(e.to_string()));
        let query = sqlx::query(
            "INSERT INTO clients (client_id, name, secret_hash, redirect_uris, grant_types, scopes, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(c.client_id.as_str())
        .bind(c.name.as_str())
        .bind(c.secret_hash.as_ref().map(|h| h.0.to_vec()))
        .bind(json(&c.redirect_uris)?)
        .bind(json(&c.grant_types)?)
        .bind(json(&c.scopes)?)
        .bind(c.created_at.0);
        self.execute(query).await.map(|_| ())
    }

    async fn find_client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        let sql = format!("{CLIENT_SELECT} WHERE client_id = $1");
        self.find_one(sqlx::query(&sql).bind(client_id), client_from_row).await
    }

    async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        let sql = format!("{CLIENT_SELECT} ORDER BY created_at, client_id");
        self.find_all(sqlx::query(&sql), client_from_row).await
    }

    async fn delete_client(&self, client_id: &str) -> Result<bool, StoreError> {
        let query = sqlx::query("DELETE FROM clients WHERE client_id = $1").bind(client_id);
        Ok(self.execute(query).await? == 1)
    }

    async fn insert_web_session(
        &self,
        session: &SessionRecord,
        cookie: &TokenHash,
    ) -> Result<(), StoreError> {
        self.in_tx(|tx| Box::pin(insert_session_tx(tx, session, None, Some(cookie)))).await
    }

    async fn find_web_session(&self, cookie: &TokenHash) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM web_sessions w JOIN sessions s ON s.id = w.session_id \
             WHERE w.cookie_hash = $1"
        );
        self.find_one(sqlx::query(&sql).bind(cookie.0.as_slice()), session_from_row).await
    }

    async fn touch_session(&self, session_id: &str, touch: &Touch) -> Result<(), StoreError> {
        let mut conn = self.pool().await?.acquire().await.map_err(|e| self.fail(e))?;
        touch_session(&mut conn, session_id, touch).await.map_err(|e| self.fail(e))
    }

    async fn insert_auth_code(&self, c: &AuthCodeRecord) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO auth_codes ({CODE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        );
        let query = sqlx::query(&sql)
            .bind(c.hash.0.as_slice())
            .bind(c.client_id.as_str())
            .bind(c.user_id.as_str())
            .bind(c.redirect_uri.as_str())
            .bind(c.scope.as_str())
            .bind(c.nonce.as_deref())
            .bind(c.code_challenge.as_str())
            .bind(c.auth_time.0)
            .bind(c.created_at.0)
            .bind(c.expires_at.0)
            .bind(c.used_at.map(|t| t.0))
            .bind(c.session_id.as_deref());
        self.execute(query).await.map(|_| ())
    }

    async fn redeem_auth_code(
        &self,
        hash: &TokenHash,
        client_id: &str,
        now: Timestamp,
        reuse: &SessionRevocation,
        decide: CodeDecide,
    ) -> Result<CodeRedemption, StoreError> {
        let hash = &hash.0;
        // `decide` runs at most once: a retry is only made while it is still in its slot.
        let slot = Mutex::new(Some(decide));
        let slot = &slot;
        self.in_tx_while(|| is_unused(slot), |tx| Box::pin(redeem_tx(tx, hash, client_id, now, reuse, slot)))
            .await
    }

    async fn find_consent(&self, user_id: &str, client_id: &str) -> Result<Option<Vec<String>>, StoreError> {
        let scopes: Option<String> =
            sqlx::query_scalar("SELECT scopes FROM consents WHERE user_id = $1 AND client_id = $2")
                .bind(user_id)
                .bind(client_id)
                .fetch_optional(self.pool().await?)
                .await
                .map_err(|e| self.fail(e))?;
        Ok(scopes.map(|s| serde_json::from_str(&s).unwrap_or_default()))
    }

    async fn save_consent(
        &self,
        user_id: &str,
        client_id: &str,
        scopes: &[String],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(scopes).map_err(|e| StoreError::Backend(e.to_string()))?;
        let query = sqlx::query(
            "INSERT INTO consents (user_id, client_id, scopes, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id, client_id) DO UPDATE SET scopes = EXCLUDED.scopes, updated_at = EXCLUDED.updated_at",
        )
        .bind(user_id)
        .bind(client_id)
        .bind(json)
        .bind(now.0);
        self.execute(query).await.map(|_| ())
    }

    async fn is_live_refresh_token(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        let retired: Option<Option<i64>> =
            sqlx::query_scalar("SELECT retired_at FROM refresh_tokens WHERE hash = $1")
                .bind(hash.0.as_slice())
                .fetch_optional(self.pool().await?)
                .await
                .map_err(|e| self.fail(e))?;
        Ok(matches!(retired, Some(None)))
    }

    async fn revoke_access_token(
        &self,
        jti: &str,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.in_tx(|tx| Box::pin(revoke_access_token_tx(tx, jti, until, now))).await
    }

    async fn is_access_token_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM revocation_events WHERE jti = $1 LIMIT 1")
                .bind(jti)
                .fetch_optional(self.pool().await?)
                .await
                .map_err(|e| self.fail(e))?;
        Ok(found.is_some())
    }

    async fn last_feed_seq(&self) -> Result<i64, StoreError> {
        // Safe as a starting point because feed events commit in seq order (module doc):
        // no event below this one can still appear.
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM revocation_events")
            .fetch_one(self.pool().await?)
            .await
            .map_err(|e| self.fail(e))
    }

    async fn list_feed_events(
        &self,
        after: i64,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<FeedEventRecord>, StoreError> {
        // A plain read: feed events commit in seq order (module doc), so the snapshot this
        // statement sees holds every event up to its highest seq, and `seq > after` on the
        // next page skips none.
        let rows = sqlx::query(
            "SELECT seq, type, sid, sub, jti, authz_ver, until FROM revocation_events \
             WHERE seq > $1 AND until > $2 ORDER BY seq LIMIT $3",
        )
        .bind(after)
        .bind(now.0)
        .bind(limit)
        .fetch_all(self.pool().await?)
        .await
        .map_err(|e| self.fail(e))?;
        rows.iter().map(feed_event_from_row).collect()
    }
}
