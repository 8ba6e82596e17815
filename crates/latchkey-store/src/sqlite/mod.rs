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
//! Each atomic operation is one write job, run with cached prepared statements. The writer
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
//! socket anyway, will use sqlx.

mod connections;

use std::sync::{Arc, mpsc};

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
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use self::connections::{Threads, Writer, open_connection, parse_url, spawn_checkpointer};

/// Schema migrations, applied in order, each once.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../migrations/sqlite/0002_clients.sql")),
    (3, include_str!("../../migrations/sqlite/0003_oauth.sql")),
    (4, include_str!("../../migrations/sqlite/0004_refresh_tokens_in_issue_order.sql")),
    (5, include_str!("../../migrations/sqlite/0005_refresh_token_retired_by.sql")),
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

/// How many connections serve point lookups inline (about one per async worker thread).
const INLINE_CONNECTIONS: usize = 2;

/// The SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: Writer,
    readers: Threads,
    /// Connections for point lookups run inline; see the module doc.
    inline: Arc<std::sync::Mutex<Vec<Connection>>>,
    /// Dropping the last clone stops the checkpointer.
    _checkpointer: Arc<mpsc::Sender<()>>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at a `sqlite://PATH` URL and migrates it.
    ///
    /// # Errors
    /// When the file cannot be opened or migrated.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let (path, synchronous) = parse_url(url)?;
        // Migrations run before the writer thread starts, so no job can see an old schema.
        let mut conn = open_connection(&path, synchronous, false)?;
        migrate(&mut conn)?;
        // Checkpoints happen on the checkpointer's connection, not in the writer's commits.
        conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(db_err)?;
        let writer = Writer::spawn(conn)?;
        let checkpointer = spawn_checkpointer(open_connection(&path, synchronous, false)?)?;
        let readers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 4);
        let readers =
            Threads::spawn("latchkey-db-reader", readers, &|| open_connection(&path, synchronous, true))?;
        let inline = (0..INLINE_CONNECTIONS)
            .map(|_| open_connection(&path, synchronous, true))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            writer,
            readers,
            inline: Arc::new(std::sync::Mutex::new(inline)),
            _checkpointer: Arc::new(checkpointer),
        })
    }

    /// Reads at most one row by a text key.
    async fn find_one<T: Send + 'static>(
        &self,
        sql: String,
        key: &str,
        map: fn(&Row<'_>) -> Result<T, rusqlite::Error>,
    ) -> Result<Option<T>, StoreError> {
        let key = key.to_owned();
        self.point_read(move |c| c.prepare_cached(&sql)?.query_row([key], map).optional()).await
    }

    /// Runs a point lookup (an index seek returning at most a few rows) on the calling
    /// thread, on a connection kept for that, or on the reader threads when none is free.
    async fn point_read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        // The lock is held only to take and to return a connection, never while reading.
        let conn = self.inline.lock().ok().and_then(|mut free| free.pop());
        match conn {
            Some(conn) => {
                let result = f(&conn).map_err(db_err);
                if let Ok(mut free) = self.inline.lock() {
                    free.push(conn);
                }
                result
            }
            None => self.read(f).await,
        }
    }

    /// Runs a read.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.readers.run(move |conn| f(conn).map_err(db_err)).await
    }

    /// Runs a write in the writer's next group transaction, committed before the answer.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.writer.run(f).await
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS latchkey_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .map_err(db_err)?;
    for (version, sql) in MIGRATIONS {
        let done: Option<i64> = tx
            .query_row("SELECT version FROM latchkey_migrations WHERE version = ?1", [version], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        if done.is_none() {
            tx.execute_batch(sql).map_err(db_err)?;
            tx.execute(
                "INSERT INTO latchkey_migrations (version, applied_at) VALUES (?1, CAST(strftime('%s','now') AS INTEGER))",
                [version],
            )
            .map_err(db_err)?;
        }
    }
    tx.commit().map_err(db_err)
}

const USER_COLUMNS: &str =
    "u.id AS u_id, u.username, u.password_hash, u.roles, u.authz_ver, u.status, u.created_at AS u_created_at";
const SESSION_COLUMNS: &str = "s.id AS s_id, s.user_id, s.client_id, s.scope, s.created_at AS s_created_at, \
    s.last_used_at, s.idle_expires_at, s.expires_at, s.ip, s.user_agent, s.revoked_at, s.revoke_reason";

/// A user from `USER_COLUMNS`, starting at column `at`. Columns are read by position: by
/// name, each read scans every column name, which showed in profiles of the hot path.
fn user_at(row: &Row<'_>, at: usize) -> Result<UserRecord, rusqlite::Error> {
    let roles: String = row.get(at + 3)?;
    let status: String = row.get(at + 5)?;
    Ok(UserRecord {
        id: row.get(at)?,
        username: row.get(at + 1)?,
        password_hash: row.get(at + 2)?,
        roles: serde_json::from_str(&roles).unwrap_or_default(),
        authz_ver: row.get(at + 4)?,
        status: UserStatus::parse(&status),
        created_at: Timestamp(row.get(at + 6)?),
    })
}

fn user_from_row(row: &Row<'_>) -> Result<UserRecord, rusqlite::Error> {
    user_at(row, 0)
}

/// A session from `SESSION_COLUMNS`, starting at column `at`.
fn session_at(row: &Row<'_>, at: usize) -> Result<SessionRecord, rusqlite::Error> {
    let reason: Option<String> = row.get(at + 11)?;
    Ok(SessionRecord {
        id: row.get(at)?,
        user_id: row.get(at + 1)?,
        client_id: row.get(at + 2)?,
        scope: row.get(at + 3)?,
        created_at: Timestamp(row.get(at + 4)?),
        last_used_at: Timestamp(row.get(at + 5)?),
        idle_expires_at: Timestamp(row.get(at + 6)?),
        expires_at: Timestamp(row.get(at + 7)?),
        ip: row.get(at + 8)?,
        user_agent: row.get(at + 9)?,
        revoked_at: row.get::<_, Option<i64>>(at + 10)?.map(Timestamp),
        // A reason this version does not know is reported as an admin revocation: the
        // session stays revoked either way.
        revoke_reason: reason.map(|r| ErrorReason::parse(&r).unwrap_or(ErrorReason::RevokedByAdmin)),
    })
}

fn session_from_row(row: &Row<'_>) -> Result<SessionRecord, rusqlite::Error> {
    session_at(row, 0)
}

fn insert_security_event(tx: &Connection, e: &NewSecurityEvent) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "INSERT INTO security_events (at, kind, user_id, session_id, ip, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![e.at.0, e.kind, e.user_id, e.session_id, e.ip, e.detail])?;
    Ok(())
}

/// Revokes the given sessions that are not yet revoked, with a feed event each and the
/// security event. Returns the ids it revoked.
fn revoke_in_tx(
    tx: &Connection,
    ids: Vec<String>,
    rev: &SessionRevocation,
) -> Result<Vec<String>, rusqlite::Error> {
    let mut revoked = Vec::with_capacity(ids.len());
    for id in ids {
        let changed = tx
            .prepare_cached("UPDATE sessions SET revoked_at = ?1, revoke_reason = ?2 WHERE id = ?3 AND revoked_at IS NULL")?
            .execute(params![rev.now.0, rev.reason.as_str(), id])?;
        if changed == 1 {
            tx.prepare_cached(
                "INSERT INTO revocation_events (type, sid, until, created_at) VALUES ('session_revoked', ?1, ?2, ?3)",
            )?
            .execute(params![id, rev.until.0, rev.now.0])?;
            revoked.push(id);
        }
    }
    if !revoked.is_empty() {
        let mut event = rev.event.clone();
        if event.detail.is_none() {
            event.detail = Some(format!("reason {}; {} session(s)", rev.reason.as_str(), revoked.len()));
        }
        if event.session_id.is_none() && revoked.len() == 1 {
            event.session_id = revoked.first().cloned();
        }
        insert_security_event(tx, &event)?;
    }
    Ok(revoked)
}

fn live_session_ids(
    tx: &Connection,
    user_id: &str,
    except: Option<&str>,
) -> Result<Vec<String>, rusqlite::Error> {
    let mut stmt = tx.prepare_cached(
        "SELECT id FROM sessions WHERE user_id = ?1 AND revoked_at IS NULL AND id IS NOT ?2",
    )?;
    let ids = stmt.query_map(params![user_id, except], |r| r.get(0))?.collect::<Result<Vec<String>, _>>()?;
    Ok(ids)
}

fn touch_session(tx: &Connection, sid: &str, touch: &Touch) -> Result<(), rusqlite::Error> {
    tx.prepare_cached("UPDATE sessions SET last_used_at = ?1, idle_expires_at = ?2, ip = ?3 WHERE id = ?4")?
        .execute(params![touch.now.0, touch.idle_expires_at.0, touch.ip, sid])?;
    Ok(())
}

/// Inserts a session, with its first refresh token when it has one.
fn insert_session_in_tx(
    tx: &Connection,
    s: &SessionRecord,
    refresh_token: Option<&TokenHash>,
) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "INSERT INTO sessions (id, user_id, client_id, scope, created_at, last_used_at, idle_expires_at, \
         expires_at, ip, user_agent) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        s.id,
        s.user_id,
        s.client_id,
        s.scope,
        s.created_at.0,
        s.last_used_at.0,
        s.idle_expires_at.0,
        s.expires_at.0,
        s.ip,
        s.user_agent
    ])?;
    if let Some(hash) = refresh_token {
        tx.prepare_cached("INSERT INTO refresh_tokens (hash, session_id, created_at) VALUES (?1, ?2, ?3)")?
            .execute(params![&hash.0[..], s.id, s.created_at.0])?;
    }
    Ok(())
}

const CODE_COLUMNS: &str = "hash, client_id, user_id, redirect_uri, scope, nonce, code_challenge, auth_time, \
    created_at, expires_at, used_at, session_id";

fn code_from_row(row: &Row<'_>) -> Result<AuthCodeRecord, rusqlite::Error> {
    let hash: Vec<u8> = row.get(0)?;
    Ok(AuthCodeRecord {
        hash: TokenHash(hash.try_into().unwrap_or([0; 32])),
        client_id: row.get(1)?,
        user_id: row.get(2)?,
        redirect_uri: row.get(3)?,
        scope: row.get(4)?,
        nonce: row.get(5)?,
        code_challenge: row.get(6)?,
        auth_time: Timestamp(row.get(7)?),
        created_at: Timestamp(row.get(8)?),
        expires_at: Timestamp(row.get(9)?),
        used_at: row.get::<_, Option<i64>>(10)?.map(Timestamp),
        session_id: row.get(11)?,
    })
}

const CLIENT_SELECT: &str =
    "SELECT client_id, name, secret_hash, redirect_uris, grant_types, scopes, created_at FROM clients";

fn client_from_row(row: &Row<'_>) -> Result<ClientRecord, rusqlite::Error> {
    let list = |i: usize| -> Result<Vec<String>, rusqlite::Error> {
        Ok(serde_json::from_str(&row.get::<_, String>(i)?).unwrap_or_default())
    };
    let secret_hash: Option<Vec<u8>> = row.get(2)?;
    Ok(ClientRecord {
        client_id: row.get(0)?,
        name: row.get(1)?,
        // A stored hash of the wrong length can match nothing: treat it as no secret.
        secret_hash: secret_hash.and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok()).map(TokenHash),
        redirect_uris: list(3)?,
        grant_types: list(4)?,
        scopes: list(5)?,
        created_at: Timestamp(row.get(6)?),
    })
}

fn throttle_from_row(row: &Row<'_>) -> Result<ThrottleRecord, rusqlite::Error> {
    Ok(ThrottleRecord {
        count: row.get(0)?,
        window_start: Timestamp(row.get(1)?),
        last_failure_at: Timestamp(row.get(2)?),
    })
}

/// Reads everything a rotation decision needs. Four single-table look-ups by key rather
/// than one join: with the bundled SQLite's STAT4, a join whose constraint is a bound
/// parameter is re-prepared on every execution (measured: ~20% of the writer's time).
fn rotation_snapshot(
    tx: &Connection,
    presented: &[u8; 32],
) -> Result<Option<RefreshSnapshot>, rusqlite::Error> {
    let token = tx
        .prepare_cached(
            "SELECT session_id, created_at, retired_at, successor_hash, successor_sealed, retired_by \
             FROM refresh_tokens WHERE hash = ?1",
        )?
        .query_row([&presented[..]], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Timestamp(r.get(1)?),
                r.get::<_, Option<i64>>(2)?.map(Timestamp),
                r.get::<_, Option<Vec<u8>>>(3)?,
                r.get::<_, Option<Vec<u8>>>(4)?,
                r.get::<_, Option<[u8; 32]>>(5)?.map(CallerFingerprint),
            ))
        })
        .optional()?;
    let Some((session_id, created_at, retired_at, successor_hash, successor_sealed, retired_by)) = token
    else {
        return Ok(None);
    };
    let is_successor_used = match &successor_hash {
        Some(next) => tx
            .prepare_cached("SELECT retired_at IS NOT NULL FROM refresh_tokens WHERE hash = ?1")?
            .query_row([next], |r| r.get::<_, bool>(0))
            .optional()?
            .unwrap_or(false),
        None => false,
    };
    let session = tx
        .prepare_cached(&format!("SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.id = ?1"))?
        .query_row([&session_id], session_from_row)?;
    let user = tx
        .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?1"))?
        .query_row([&session.user_id], user_from_row)?;
    Ok(Some(RefreshSnapshot {
        token: RefreshTokenRecord {
            hash: TokenHash(*presented),
            session_id,
            created_at,
            retired_at,
            successor_sealed,
            is_successor_used,
            retired_by,
        },
        session,
        user,
    }))
}

fn apply_rotation(
    tx: &Connection,
    presented: &[u8; 32],
    sid: &str,
    decision: &RotationDecision,
) -> Result<(), rusqlite::Error> {
    match decision {
        RotationDecision::Rotate { retired_by, successor_hash, successor_sealed, touch, event } => {
            tx.prepare_cached(
                "UPDATE refresh_tokens SET retired_at = ?1, successor_hash = ?2, successor_sealed = ?3, \
                 retired_by = ?4 WHERE hash = ?5 AND retired_at IS NULL",
            )?
            .execute(params![
                touch.now.0,
                &successor_hash.0[..],
                successor_sealed,
                &retired_by.0[..],
                &presented[..]
            ])?;
            tx.prepare_cached(
                "INSERT INTO refresh_tokens (hash, session_id, created_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![&successor_hash.0[..], sid, touch.now.0])?;
            touch_session(tx, sid, touch)?;
            if let Some(e) = event {
                insert_security_event(tx, e)?;
            }
        }
        RotationDecision::Replay { touch, event } => {
            touch_session(tx, sid, touch)?;
            if let Some(e) = event {
                insert_security_event(tx, e)?;
            }
        }
        RotationDecision::Revoke { revocation } => {
            revoke_in_tx(tx, vec![sid.to_owned()], revocation)?;
        }
        RotationDecision::Refuse { .. } | RotationDecision::ScopeExceeded => {}
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        // Both sides: a stopped writer would fail every write while reads still worked.
        self.read(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))).await?;
        self.write(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))).await?;
        Ok(())
    }

    async fn insert_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let roles = serde_json::to_string(&user.roles).map_err(|e| StoreError::Backend(e.to_string()))?;
        let u = user.clone();
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO users (id, username, password_hash, roles, authz_ver, status, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                u.id,
                u.username,
                u.password_hash,
                roles,
                u.authz_ver,
                u.status.as_str(),
                u.created_at.0
            ])?;
            Ok(())
        })
        .await
    }

    async fn find_user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        self.find_one(format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?1"), id, user_from_row).await
    }

    async fn find_user_by_username(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        self.find_one(
            format!("SELECT {USER_COLUMNS} FROM users u WHERE u.username = ?1"),
            username,
            user_from_row,
        )
        .await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users u ORDER BY u.created_at, u.username"
            ))?
            .query_map([], user_from_row)?
            .collect()
        })
        .await
    }

    async fn apply_user_change(&self, change: &UserChange) -> Result<Option<(i64, Vec<String>)>, StoreError> {
        let change = change.clone();
        let roles = match &change.kind {
            UserChangeKind::SetRoles(roles) => {
                Some(serde_json::to_string(roles).map_err(|e| StoreError::Backend(e.to_string()))?)
            }
            UserChangeKind::SetPassword { .. } | UserChangeKind::Disable => None,
        };
        self.write(move |tx| {
            let authz_ver: Option<i64> = tx
                .prepare_cached("UPDATE users SET authz_ver = authz_ver + 1 WHERE id = ?1 RETURNING authz_ver")?
                .query_row([&change.user_id], |r| r.get(0))
                .optional()?;
            let Some(authz_ver) = authz_ver else {
                return Ok(None);
            };
            let to_revoke = match &change.kind {
                UserChangeKind::SetRoles(_) => {
                    tx.prepare_cached("UPDATE users SET roles = ?1 WHERE id = ?2")?
                        .execute(params![roles, change.user_id])?;
                    None
                }
                UserChangeKind::SetPassword { password_hash, keep_session } => {
                    tx.prepare_cached("UPDATE users SET password_hash = ?1 WHERE id = ?2")?
                        .execute(params![password_hash, change.user_id])?;
                    Some((ErrorReason::PasswordChanged, keep_session.clone()))
                }
                UserChangeKind::Disable => {
                    tx.prepare_cached("UPDATE users SET status = 'disabled' WHERE id = ?1")?.execute([&change.user_id])?;
                    Some((ErrorReason::UserDisabled, None))
                }
            };
            tx.prepare_cached(
                "INSERT INTO revocation_events (type, sub, authz_ver, until, created_at) VALUES ('user_changed', ?1, ?2, ?3, ?4)",
            )?
            .execute(params![change.user_id, authz_ver, change.until.0, change.now.0])?;
            insert_security_event(tx, &change.event)?;
            let mut revoked = Vec::new();
            if let Some((reason, except)) = to_revoke {
                let ids = live_session_ids(tx, &change.user_id, except.as_deref())?;
                let mut event = change.event.clone();
                event.kind = "session_revoked";
                let rev = SessionRevocation { reason, now: change.now, until: change.until, event };
                revoked = revoke_in_tx(tx, ids, &rev)?;
            }
            Ok(Some((authz_ver, revoked)))
        })
        .await
    }

    async fn insert_session(&self, s: &SessionRecord, refresh_token: &TokenHash) -> Result<(), StoreError> {
        let s = s.clone();
        let hash = *refresh_token;
        self.write(move |tx| insert_session_in_tx(tx, &s, Some(&hash))).await
    }

    async fn find_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.find_one(
            format!("SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.id = ?1"),
            id,
            session_from_row,
        )
        .await
    }

    async fn find_session_by_refresh_token(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let hash = hash.0;
        self.point_read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE t.hash = ?1"
            ))?
            .query_row([&hash[..]], session_from_row)
            .optional()
        })
        .await
    }

    async fn list_live_sessions(
        &self,
        user_id: &str,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let user_id = user_id.to_owned();
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.user_id = ?1 AND s.revoked_at IS NULL \
                 AND s.expires_at > ?2 AND s.idle_expires_at > ?2 ORDER BY s.last_used_at DESC, s.created_at DESC"
            ))?
            .query_map(params![user_id, now.0], session_from_row)?
            .collect()
        })
        .await
    }

    async fn revoke_sessions(
        &self,
        target: &RevocationTarget,
        rev: &SessionRevocation,
    ) -> Result<Vec<String>, StoreError> {
        let (target, rev) = (target.clone(), rev.clone());
        self.write(move |tx| {
            let ids = match &target {
                RevocationTarget::Session { id, user_id } => {
                    let owner: Option<String> = tx
                        .prepare_cached("SELECT user_id FROM sessions WHERE id = ?1")?
                        .query_row([id], |r| r.get(0))
                        .optional()?;
                    match (owner, user_id) {
                        (Some(owner), Some(expected)) if &owner != expected => Vec::new(),
                        (Some(_), _) => vec![id.clone()],
                        (None, _) => Vec::new(),
                    }
                }
                RevocationTarget::UserSessions { user_id, except } => {
                    live_session_ids(tx, user_id, except.as_deref())?
                }
                RevocationTarget::ClientSessions { client_id } => {
                    tx.prepare_cached("DELETE FROM consents WHERE client_id = ?1")?.execute([client_id])?;
                    tx.prepare_cached("SELECT id FROM sessions WHERE client_id = ?1 AND revoked_at IS NULL")?
                        .query_map([client_id], |r| r.get(0))?
                        .collect::<Result<Vec<String>, _>>()?
                }
                RevocationTarget::AppGrant { user_id, client_id } => {
                    tx.prepare_cached("DELETE FROM consents WHERE user_id = ?1 AND client_id = ?2")?
                        .execute(params![user_id, client_id])?;
                    tx.prepare_cached(
                        "SELECT id FROM sessions WHERE user_id = ?1 AND client_id = ?2 AND revoked_at IS NULL",
                    )?
                    .query_map(params![user_id, client_id], |r| r.get(0))?
                    .collect::<Result<Vec<String>, _>>()?
                }
            };
            revoke_in_tx(tx, ids, &rev)
        })
        .await
    }

    async fn rotate_refresh_token(
        &self,
        presented: &TokenHash,
        decide: Decide,
    ) -> Result<Option<(RefreshSnapshot, RotationDecision)>, StoreError> {
        let presented = presented.0;
        self.write(move |tx| {
            let Some(snap) = rotation_snapshot(tx, &presented)? else {
                return Ok(None);
            };
            let decision = decide(&snap);
            apply_rotation(tx, &presented, &snap.session.id, &decision)?;
            Ok(Some((snap, decision)))
        })
        .await
    }

    async fn insert_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        let k = key.clone();
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO signing_keys (kid, alg, private_key, created_at, activates_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![k.kid, k.alg, k.private_key, k.created_at.0, k.activates_at.0])?;
            Ok(())
        })
        .await
    }

    async fn list_signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT kid, alg, private_key, created_at, activates_at FROM signing_keys ORDER BY created_at, kid",
            )?
            .query_map([], |r| {
                Ok(StoredKey {
                    kid: r.get(0)?,
                    alg: r.get(1)?,
                    private_key: r.get(2)?,
                    created_at: Timestamp(r.get(3)?),
                    activates_at: Timestamp(r.get(4)?),
                })
            })?
            .collect()
        })
        .await
    }

    async fn update_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        let (kid, private_key) = (key.kid.clone(), key.private_key.clone());
        self.write(move |tx| {
            tx.prepare_cached("UPDATE signing_keys SET private_key = ?1 WHERE kid = ?2")?
                .execute(params![private_key, kid])?;
            Ok(())
        })
        .await
    }

    async fn delete_signing_key(&self, kid: &str) -> Result<(), StoreError> {
        let kid = kid.to_owned();
        self.write(move |tx| {
            tx.prepare_cached("DELETE FROM signing_keys WHERE kid = ?1")?.execute([kid])?;
            Ok(())
        })
        .await
    }

    async fn find_throttle(&self, key: &str) -> Result<Option<ThrottleRecord>, StoreError> {
        let sql = "SELECT count, window_start, last_failure_at FROM throttles WHERE key = ?1".to_owned();
        self.find_one(sql, key, throttle_from_row).await
    }

    async fn record_throttle_failure(
        &self,
        key: &str,
        now: Timestamp,
        window_secs: i64,
    ) -> Result<ThrottleRecord, StoreError> {
        let key = key.to_owned();
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO throttles (key, count, window_start, last_failure_at) VALUES (?1, 1, ?2, ?2) \
                 ON CONFLICT (key) DO UPDATE SET \
                   count = CASE WHEN last_failure_at + ?3 <= ?2 THEN 1 ELSE count + 1 END, \
                   window_start = CASE WHEN last_failure_at + ?3 <= ?2 THEN ?2 ELSE window_start END, \
                   last_failure_at = ?2 \
                 RETURNING count, window_start, last_failure_at",
            )?
            .query_row(params![key, now.0, window_secs], throttle_from_row)
        })
        .await
    }

    async fn delete_throttle(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.write(move |tx| {
            tx.prepare_cached("DELETE FROM throttles WHERE key = ?1")?.execute([key])?;
            Ok(())
        })
        .await
    }

    async fn insert_security_event(&self, event: &NewSecurityEvent) -> Result<(), StoreError> {
        let event = event.clone();
        self.write(move |tx| insert_security_event(tx, &event)).await
    }

    async fn list_security_events(&self, limit: i64) -> Result<Vec<SecurityEventRecord>, StoreError> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT id, at, kind, user_id, session_id, ip, detail FROM security_events ORDER BY id DESC LIMIT ?1",
            )?
            .query_map([limit], |r| {
                Ok(SecurityEventRecord {
                    id: r.get(0)?,
                    at: Timestamp(r.get(1)?),
                    kind: r.get(2)?,
                    user_id: r.get(3)?,
                    session_id: r.get(4)?,
                    ip: r.get(5)?,
                    detail: r.get(6)?,
                })
            })?
            .collect()
        })
        .await
    }

    async fn prune(&self, now: Timestamp, forget_sessions_before: Timestamp) -> Result<u64, StoreError> {
        self.write(move |tx| {
            let before = forget_sessions_before.0;
            let mut n = tx.execute("DELETE FROM revocation_events WHERE until <= ?1", [now.0])?;
            n += tx.execute("DELETE FROM throttles WHERE last_failure_at <= ?1", [now.0 - 86_400])?;
            // Codes are kept 10 minutes past expiry, so a late second use still revokes.
            n += tx.execute("DELETE FROM auth_codes WHERE expires_at <= ?1", [now.0 - 600])?;
            n += tx.execute(
                "DELETE FROM web_sessions WHERE session_id IN \
                 (SELECT id FROM sessions WHERE expires_at <= ?1 OR idle_expires_at <= ?1 OR revoked_at <= ?1)",
                [before],
            )?;
            n += tx.execute(
                "DELETE FROM refresh_tokens WHERE session_id IN \
                 (SELECT id FROM sessions WHERE expires_at <= ?1 OR idle_expires_at <= ?1 OR revoked_at <= ?1)",
                [before],
            )?;
            n += tx.execute(
                "DELETE FROM sessions WHERE expires_at <= ?1 OR idle_expires_at <= ?1 OR revoked_at <= ?1",
                [before],
            )?;
            Ok(u64::try_from(n).unwrap_or(u64::MAX))
        })
        .await
    }

    async fn insert_client(&self, client: &ClientRecord) -> Result<(), StoreError> {
        let c = client.clone();
        let json = |v: &Vec<String>| serde_json::to_string(v).map_err(|e| StoreError::Backend(e.to_string()));
        let (redirect_uris, grant_types, scopes) =
            (json(&c.redirect_uris)?, json(&c.grant_types)?, json(&c.scopes)?);
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO clients (client_id, name, secret_hash, redirect_uris, grant_types, scopes, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                c.client_id,
                c.name,
                c.secret_hash.map(|h| h.0.to_vec()),
                redirect_uris,
                grant_types,
                scopes,
                c.created_at.0
            ])?;
            Ok(())
        })
        .await
    }

    async fn find_client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        self.find_one(format!("{CLIENT_SELECT} WHERE client_id = ?1"), client_id, client_from_row).await
    }

    async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!("{CLIENT_SELECT} ORDER BY created_at, client_id"))?
                .query_map([], client_from_row)?
                .collect()
        })
        .await
    }

    async fn delete_client(&self, client_id: &str) -> Result<bool, StoreError> {
        let client_id = client_id.to_owned();
        self.write(move |tx| {
            Ok(tx.prepare_cached("DELETE FROM clients WHERE client_id = ?1")?.execute([client_id])? == 1)
        })
        .await
    }

    async fn insert_web_session(
        &self,
        session: &SessionRecord,
        cookie: &TokenHash,
    ) -> Result<(), StoreError> {
        let (s, cookie) = (session.clone(), *cookie);
        self.write(move |tx| {
            insert_session_in_tx(tx, &s, None)?;
            tx.prepare_cached(
                "INSERT INTO web_sessions (cookie_hash, session_id, created_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![&cookie.0[..], s.id, s.created_at.0])?;
            Ok(())
        })
        .await
    }

    async fn find_web_session(&self, cookie: &TokenHash) -> Result<Option<SessionRecord>, StoreError> {
        let cookie = cookie.0;
        self.point_read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM web_sessions w JOIN sessions s ON s.id = w.session_id \
                 WHERE w.cookie_hash = ?1"
            ))?
            .query_row([&cookie[..]], session_from_row)
            .optional()
        })
        .await
    }

    async fn touch_session(&self, session_id: &str, touch: &Touch) -> Result<(), StoreError> {
        let (sid, touch) = (session_id.to_owned(), touch.clone());
        self.write(move |tx| touch_session(tx, &sid, &touch)).await
    }

    async fn insert_auth_code(&self, code: &AuthCodeRecord) -> Result<(), StoreError> {
        let c = code.clone();
        self.write(move |tx| {
            tx.prepare_cached(&format!(
                "INSERT INTO auth_codes ({CODE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ))?
            .execute(params![
                &c.hash.0[..],
                c.client_id,
                c.user_id,
                c.redirect_uri,
                c.scope,
                c.nonce,
                c.code_challenge,
                c.auth_time.0,
                c.created_at.0,
                c.expires_at.0,
                c.used_at.map(|t| t.0),
                c.session_id
            ])?;
            Ok(())
        })
        .await
    }

    async fn redeem_auth_code(
        &self,
        hash: &TokenHash,
        client_id: &str,
        now: Timestamp,
        reuse: &SessionRevocation,
        decide: CodeDecide,
    ) -> Result<CodeRedemption, StoreError> {
        let (hash, client_id, reuse) = (hash.0, client_id.to_owned(), reuse.clone());
        self.write(move |tx| {
            let code = tx
                .prepare_cached(&format!("SELECT {CODE_COLUMNS} FROM auth_codes WHERE hash = ?1"))?
                .query_row([&hash[..]], code_from_row)
                .optional()?;
            let Some(code) = code else { return Ok(CodeRedemption::Unknown) };
            if code.client_id != client_id {
                return Ok(CodeRedemption::OtherClient { code: Box::new(code) });
            }
            if code.used_at.is_some() {
                let revoked = match &code.session_id {
                    Some(sid) => revoke_in_tx(tx, vec![sid.clone()], &reuse)?,
                    None => Vec::new(),
                };
                return Ok(CodeRedemption::Reused { code: Box::new(code), revoked });
            }
            let decision = decide(&code);
            let session_id = match &decision {
                CodeDecision::Issue { session, refresh_token } => {
                    insert_session_in_tx(tx, session, refresh_token.as_ref())?;
                    Some(session.id.clone())
                }
                CodeDecision::Refuse => None,
            };
            tx.prepare_cached("UPDATE auth_codes SET used_at = ?1, session_id = ?2 WHERE hash = ?3")?
                .execute(params![now.0, session_id, &hash[..]])?;
            Ok(CodeRedemption::Redeemed { code: Box::new(code), decision })
        })
        .await
    }

    async fn find_consent(&self, user_id: &str, client_id: &str) -> Result<Option<Vec<String>>, StoreError> {
        let (user_id, client_id) = (user_id.to_owned(), client_id.to_owned());
        self.point_read(move |c| {
            let scopes: Option<String> = c
                .prepare_cached("SELECT scopes FROM consents WHERE user_id = ?1 AND client_id = ?2")?
                .query_row(params![user_id, client_id], |r| r.get(0))
                .optional()?;
            Ok(scopes.map(|s| serde_json::from_str(&s).unwrap_or_default()))
        })
        .await
    }

    async fn save_consent(
        &self,
        user_id: &str,
        client_id: &str,
        scopes: &[String],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(scopes).map_err(|e| StoreError::Backend(e.to_string()))?;
        let (user_id, client_id) = (user_id.to_owned(), client_id.to_owned());
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO consents (user_id, client_id, scopes, updated_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (user_id, client_id) DO UPDATE SET scopes = excluded.scopes, updated_at = excluded.updated_at",
            )?
            .execute(params![user_id, client_id, json, now.0])?;
            Ok(())
        })
        .await
    }

    async fn is_live_refresh_token(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        let hash = hash.0;
        self.point_read(move |c| {
            let retired: Option<Option<i64>> = c
                .prepare_cached("SELECT retired_at FROM refresh_tokens WHERE hash = ?1")?
                .query_row([&hash[..]], |r| r.get(0))
                .optional()?;
            Ok(matches!(retired, Some(None)))
        })
        .await
    }

    async fn revoke_access_token(
        &self,
        jti: &str,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let jti = jti.to_owned();
        self.write(move |tx| {
            let known: Option<i64> = tx
                .prepare_cached("SELECT seq FROM revocation_events WHERE jti = ?1")?
                .query_row([&jti], |r| r.get(0))
                .optional()?;
            if known.is_none() {
                tx.prepare_cached(
                    "INSERT INTO revocation_events (type, jti, until, created_at) VALUES ('token_revoked', ?1, ?2, ?3)",
                )?
                .execute(params![jti, until.0, now.0])?;
            }
            Ok(())
        })
        .await
    }

    async fn is_access_token_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        let found = self
            .find_one("SELECT seq FROM revocation_events WHERE jti = ?1".to_owned(), jti, |r| {
                r.get::<_, i64>(0)
            })
            .await?;
        Ok(found.is_some())
    }

    async fn last_feed_seq(&self) -> Result<i64, StoreError> {
        // sqlite_sequence keeps the AUTOINCREMENT high-water mark even after pruning.
        self.read(|c| {
            c.query_row(
                "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'revocation_events'), 0)",
                [],
                |r| r.get(0),
            )
        })
        .await
    }

    async fn list_feed_events(
        &self,
        after: i64,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<FeedEventRecord>, StoreError> {
        let rows = self
            .read(move |c| {
                c.prepare_cached(
                    "SELECT seq, type, sid, sub, jti, authz_ver, until FROM revocation_events \
                     WHERE seq > ?1 AND until > ?2 ORDER BY seq LIMIT ?3",
                )?
                .query_map(params![after, now.0, limit], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                        r.get::<_, i64>(6)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        rows.into_iter()
            .map(|(seq, kind, sid, sub, jti, authz_ver, until)| {
                let event = match kind.as_str() {
                    "session_revoked" => {
                        RevocationEvent::SessionRevoked { seq, sid: sid.unwrap_or_default(), until }
                    }
                    "user_changed" => RevocationEvent::UserChanged {
                        seq,
                        sub: sub.unwrap_or_default(),
                        authz_ver: authz_ver.unwrap_or_default(),
                        until,
                    },
                    "token_revoked" => {
                        RevocationEvent::TokenRevoked { seq, jti: jti.unwrap_or_default(), until }
                    }
                    other => {
                        return Err(StoreError::Backend(format!("unknown revocation event type {other}")));
                    }
                };
                Ok(FeedEventRecord { seq, event })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database an earlier version migrated up to 0003 keeps its refresh tokens through
    /// 0004 (the move to issue order): the live one is still live, the retired one is still
    /// known (so replaying it is still detected), both still lead to their session.
    #[tokio::test]
    async fn refresh_tokens_survive_the_move_to_issue_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let (retired, live) = (TokenHash::of("lkr_retired"), TokenHash::of("lkr_live"));
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
                params![&retired.0[..], &live.0[..]],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&format!("sqlite://{}", path.display())).await.unwrap();
        assert!(store.is_live_refresh_token(&live).await.unwrap());
        assert!(!store.is_live_refresh_token(&retired).await.unwrap());
        for hash in [&retired, &live] {
            let session = store.find_session_by_refresh_token(hash).await.unwrap().unwrap();
            assert_eq!(session.id, "s1");
        }
    }
}
