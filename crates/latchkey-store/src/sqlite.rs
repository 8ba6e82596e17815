//! The SQLite store: one file, WAL, migrations applied at open. Writes go through a single
//! writer connection (SQLite allows one writer at a time; queueing in the pool is fairer
//! and cheaper than busy-waiting on the file lock), each in `BEGIN IMMEDIATE` so another
//! process on the same file (the CLI) waits instead of failing. Reads use a reader pool.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use latchkey_core::clock::Timestamp;
use latchkey_core::crypto::TokenHash;
use latchkey_core::store::{
    Decide, FeedEventRecord, NewSecurityEvent, RefreshSnapshot, RefreshTokenRecord, RevocationTarget,
    RotationDecision, SecurityEventRecord, SessionRecord, SessionRevocation, Store, StoreError, StoredKey,
    ThrottleRecord, UserChange, UserChangeKind, UserRecord, UserStatus,
};
use latchkey_proto::ErrorReason;
use latchkey_proto::events::RevocationEvent;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

/// Schema migrations, applied in order, each once.
const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../migrations/sqlite/0001_init.sql"))];

/// Maps sqlx errors to the port's, without leaking sqlx types.
fn db_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(d.message().to_owned()),
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

/// The SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at a `sqlite://PATH` URL and migrates it.
    ///
    /// # Errors
    /// When the file cannot be opened or migrated.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let (url, synchronous) = split_synchronous(url)?;
        let options = SqliteConnectOptions::from_str(&url)
            .map_err(db_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("cache_size", "-16000");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .map_err(db_err)?;
        let readers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2);
        let reader = SqlitePoolOptions::new()
            .max_connections(u32::try_from(readers * 2).unwrap_or(4))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.read_only(true))
            .await
            .map_err(db_err)?;
        let store = Self { writer, reader };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS latchkey_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        for (version, sql) in MIGRATIONS {
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM latchkey_migrations WHERE version = ?")
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
            if done.is_some() {
                continue;
            }
            sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(db_err)?;
            sqlx::query(
                "INSERT INTO latchkey_migrations (version, applied_at) VALUES (?, strftime('%s','now'))",
            )
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn begin(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)
    }
}

/// Takes Latchkey's own `synchronous=normal|full` parameter out of a `sqlite://` URL.
///
/// `normal` (the default) in WAL mode: a commit survives a crash of the process (kill -9);
/// only an OS crash or power loss can lose the last transactions. `full` also survives those,
/// at about four times the cost per commit (PERF-FACTS). See docs/security.md.
fn split_synchronous(url: &str) -> Result<(String, SqliteSynchronous), StoreError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), SqliteSynchronous::Normal));
    };
    let mut synchronous = SqliteSynchronous::Normal;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("synchronous", value)) => {
                synchronous = match value.to_ascii_lowercase().as_str() {
                    "normal" => SqliteSynchronous::Normal,
                    "full" => SqliteSynchronous::Full,
                    other => {
                        return Err(StoreError::Backend(format!(
                            "database_url: synchronous must be normal or full, not {other:?}"
                        )));
                    }
                }
            }
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    Ok((url, synchronous))
}

fn user_from_row(row: &SqliteRow) -> Result<UserRecord, sqlx::Error> {
    let roles: String = row.try_get("roles")?;
    Ok(UserRecord {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        roles: serde_json::from_str(&roles).unwrap_or_default(),
        authz_ver: row.try_get("authz_ver")?,
        status: UserStatus::parse(row.try_get::<&str, _>("status")?),
        created_at: Timestamp(row.try_get("created_at")?),
    })
}

fn session_from_row(row: &SqliteRow) -> Result<SessionRecord, sqlx::Error> {
    Ok(SessionRecord {
        id: row.try_get("s_id")?,
        user_id: row.try_get("user_id")?,
        client_id: row.try_get("client_id")?,
        scope: row.try_get("scope")?,
        created_at: Timestamp(row.try_get("s_created_at")?),
        last_used_at: Timestamp(row.try_get("last_used_at")?),
        idle_expires_at: Timestamp(row.try_get("idle_expires_at")?),
        expires_at: Timestamp(row.try_get("expires_at")?),
        ip: row.try_get("ip")?,
        user_agent: row.try_get("user_agent")?,
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.map(Timestamp),
        // A reason this version does not know is reported as an admin revocation: the
        // session stays revoked either way.
        revoke_reason: row
            .try_get::<Option<&str>, _>("revoke_reason")?
            .map(|r| ErrorReason::parse(r).unwrap_or(ErrorReason::RevokedByAdmin)),
    })
}

const SESSION_COLUMNS: &str = "s.id AS s_id, s.user_id, s.client_id, s.scope, s.created_at AS s_created_at, \
    s.last_used_at, s.idle_expires_at, s.expires_at, s.ip, s.user_agent, s.revoked_at, s.revoke_reason";

fn hash_from(bytes: &[u8]) -> TokenHash {
    let mut out = [0u8; 32];
    if let Some(src) = bytes.get(..32) {
        out.copy_from_slice(src);
    }
    TokenHash(out)
}

fn reason_str(r: ErrorReason) -> &'static str {
    r.as_str()
}

async fn insert_security_event(
    tx: &mut Transaction<'_, Sqlite>,
    e: &NewSecurityEvent,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO security_events (at, kind, user_id, session_id, ip, detail) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(e.at.0)
    .bind(e.kind)
    .bind(&e.user_id)
    .bind(&e.session_id)
    .bind(&e.ip)
    .bind(&e.detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Revokes the given sessions that are not yet revoked, with a feed event each. Returns the
/// ids it revoked.
async fn revoke_in_tx(
    tx: &mut Transaction<'_, Sqlite>,
    ids: Vec<String>,
    rev: &SessionRevocation,
) -> Result<Vec<String>, sqlx::Error> {
    let mut revoked = Vec::with_capacity(ids.len());
    for id in ids {
        let changed = sqlx::query(
            "UPDATE sessions SET revoked_at = ?, revoke_reason = ? WHERE id = ? AND revoked_at IS NULL",
        )
        .bind(rev.now.0)
        .bind(reason_str(rev.reason))
        .bind(&id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if changed == 1 {
            sqlx::query("INSERT INTO revocation_events (type, sid, until, created_at) VALUES ('session_revoked', ?, ?, ?)")
                .bind(&id)
                .bind(rev.until.0)
                .bind(rev.now.0)
                .execute(&mut **tx)
                .await?;
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
        insert_security_event(tx, &event).await?;
    }
    Ok(revoked)
}

async fn live_session_ids(
    tx: &mut Transaction<'_, Sqlite>,
    user_id: &str,
    except: Option<&str>,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM sessions WHERE user_id = ? AND revoked_at IS NULL AND id IS NOT ?")
        .bind(user_id)
        .bind(except)
        .fetch_all(&mut **tx)
        .await
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await.map_err(db_err)?;
        Ok(())
    }

    async fn insert_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let roles = serde_json::to_string(&user.roles).map_err(|e| StoreError::Backend(e.to_string()))?;
        sqlx::query("INSERT INTO users (id, username, password_hash, roles, authz_ver, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
            .bind(&user.id)
            .bind(&user.username)
            .bind(&user.password_hash)
            .bind(roles)
            .bind(user.authz_ver)
            .bind(user.status.as_str())
            .bind(user.created_at.0)
            .execute(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn find_user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?;
        row.as_ref().map(user_from_row).transpose().map_err(db_err)
    }

    async fn find_user_by_username(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE username = ?")
            .bind(username)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?;
        row.as_ref().map(user_from_row).transpose().map_err(db_err)
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY created_at, username")
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?;
        rows.iter().map(user_from_row).collect::<Result<_, _>>().map_err(db_err)
    }

    async fn apply_user_change(&self, change: &UserChange) -> Result<Option<(i64, Vec<String>)>, StoreError> {
        let mut tx = self.begin().await?;
        let authz_ver: Option<i64> =
            sqlx::query_scalar("UPDATE users SET authz_ver = authz_ver + 1 WHERE id = ? RETURNING authz_ver")
                .bind(&change.user_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        let Some(authz_ver) = authz_ver else {
            return Ok(None);
        };
        let revoke = |reason, except: Option<String>| (reason, except);
        let to_revoke = match &change.kind {
            UserChangeKind::SetRoles(roles) => {
                let roles = serde_json::to_string(roles).map_err(|e| StoreError::Backend(e.to_string()))?;
                sqlx::query("UPDATE users SET roles = ? WHERE id = ?")
                    .bind(roles)
                    .bind(&change.user_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                None
            }
            UserChangeKind::SetPassword { password_hash, keep_session } => {
                sqlx::query("UPDATE users SET password_hash = ? WHERE id = ?")
                    .bind(password_hash)
                    .bind(&change.user_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                Some(revoke(ErrorReason::PasswordChanged, keep_session.clone()))
            }
            UserChangeKind::Disable => {
                sqlx::query("UPDATE users SET status = 'disabled' WHERE id = ?")
                    .bind(&change.user_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                Some(revoke(ErrorReason::UserDisabled, None))
            }
        };
        sqlx::query("INSERT INTO revocation_events (type, sub, authz_ver, until, created_at) VALUES ('user_changed', ?, ?, ?, ?)")
            .bind(&change.user_id)
            .bind(authz_ver)
            .bind(change.until.0)
            .bind(change.now.0)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        insert_security_event(&mut tx, &change.event).await.map_err(db_err)?;
        let mut revoked = Vec::new();
        if let Some((reason, except)) = to_revoke {
            let ids = live_session_ids(&mut tx, &change.user_id, except.as_deref()).await.map_err(db_err)?;
            let mut event = change.event.clone();
            event.kind = "session_revoked";
            let rev = SessionRevocation { reason, now: change.now, until: change.until, event };
            revoked = revoke_in_tx(&mut tx, ids, &rev).await.map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(Some((authz_ver, revoked)))
    }

    async fn insert_session(&self, s: &SessionRecord, refresh_token: &TokenHash) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO sessions (id, user_id, client_id, scope, created_at, last_used_at, idle_expires_at, expires_at, ip, user_agent) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.id)
        .bind(&s.user_id)
        .bind(&s.client_id)
        .bind(&s.scope)
        .bind(s.created_at.0)
        .bind(s.last_used_at.0)
        .bind(s.idle_expires_at.0)
        .bind(s.expires_at.0)
        .bind(&s.ip)
        .bind(&s.user_agent)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query("INSERT INTO refresh_tokens (hash, session_id, created_at) VALUES (?, ?, ?)")
            .bind(&refresh_token.0[..])
            .bind(&s.id)
            .bind(s.created_at.0)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn find_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.id = ?"))
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?;
        row.as_ref().map(session_from_row).transpose().map_err(db_err)
    }

    async fn find_session_by_refresh_token(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE t.hash = ?"
        ))
        .bind(&hash.0[..])
        .fetch_optional(&self.reader)
        .await
        .map_err(db_err)?;
        row.as_ref().map(session_from_row).transpose().map_err(db_err)
    }

    async fn list_live_sessions(
        &self,
        user_id: &str,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.user_id = ? AND s.revoked_at IS NULL \
             AND s.expires_at > ? AND s.idle_expires_at > ? ORDER BY s.last_used_at DESC, s.created_at DESC"
        ))
        .bind(user_id)
        .bind(now.0)
        .bind(now.0)
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        rows.iter().map(session_from_row).collect::<Result<_, _>>().map_err(db_err)
    }

    async fn revoke_sessions(
        &self,
        target: &RevocationTarget,
        rev: &SessionRevocation,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.begin().await?;
        let ids = match target {
            RevocationTarget::Session { id, user_id } => {
                let owner: Option<String> = sqlx::query_scalar("SELECT user_id FROM sessions WHERE id = ?")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
                match (owner, user_id) {
                    (Some(owner), Some(expected)) if &owner != expected => Vec::new(),
                    (Some(_), _) => vec![id.clone()],
                    (None, _) => Vec::new(),
                }
            }
            RevocationTarget::UserSessions { user_id, except } => {
                live_session_ids(&mut tx, user_id, except.as_deref()).await.map_err(db_err)?
            }
        };
        let revoked = revoke_in_tx(&mut tx, ids, rev).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(revoked)
    }

    async fn rotate_refresh_token(
        &self,
        presented: &TokenHash,
        decide: &Decide<'_>,
    ) -> Result<Option<(RefreshSnapshot, RotationDecision)>, StoreError> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT t.hash, t.session_id, t.created_at AS t_created_at, t.retired_at AS t_retired_at, t.successor_sealed, \
                    (n.retired_at IS NOT NULL) AS successor_used, {SESSION_COLUMNS}, \
                    u.id, u.username, u.password_hash, u.roles, u.authz_ver, u.status, u.created_at \
             FROM refresh_tokens t \
             JOIN sessions s ON s.id = t.session_id \
             JOIN users u ON u.id = s.user_id \
             LEFT JOIN refresh_tokens n ON n.hash = t.successor_hash \
             WHERE t.hash = ?"
        ))
        .bind(&presented.0[..])
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let snap = (|| -> Result<RefreshSnapshot, sqlx::Error> {
            Ok(RefreshSnapshot {
                token: RefreshTokenRecord {
                    hash: hash_from(row.try_get::<&[u8], _>("hash")?),
                    session_id: row.try_get("session_id")?,
                    created_at: Timestamp(row.try_get("t_created_at")?),
                    retired_at: row.try_get::<Option<i64>, _>("t_retired_at")?.map(Timestamp),
                    successor_sealed: row.try_get("successor_sealed")?,
                    is_successor_used: row.try_get("successor_used")?,
                },
                session: session_from_row(&row)?,
                user: user_from_row(&row)?,
            })
        })()
        .map_err(db_err)?;
        let decision = decide(&snap);
        let sid = &snap.session.id;
        match &decision {
            RotationDecision::Rotate { successor_hash, successor_sealed, touch, event } => {
                sqlx::query("UPDATE refresh_tokens SET retired_at = ?, successor_hash = ?, successor_sealed = ? WHERE hash = ? AND retired_at IS NULL")
                    .bind(touch.now.0)
                    .bind(&successor_hash.0[..])
                    .bind(successor_sealed)
                    .bind(&presented.0[..])
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                sqlx::query("INSERT INTO refresh_tokens (hash, session_id, created_at) VALUES (?, ?, ?)")
                    .bind(&successor_hash.0[..])
                    .bind(sid)
                    .bind(touch.now.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                touch_session(&mut tx, sid, touch).await.map_err(db_err)?;
                if let Some(e) = event {
                    insert_security_event(&mut tx, e).await.map_err(db_err)?;
                }
            }
            RotationDecision::Replay { touch, event } => {
                touch_session(&mut tx, sid, touch).await.map_err(db_err)?;
                if let Some(e) = event {
                    insert_security_event(&mut tx, e).await.map_err(db_err)?;
                }
            }
            RotationDecision::Revoke { revocation } => {
                revoke_in_tx(&mut tx, vec![sid.clone()], revocation).await.map_err(db_err)?;
            }
            RotationDecision::Refuse { .. } => {}
        }
        tx.commit().await.map_err(db_err)?;
        Ok(Some((snap, decision)))
    }

    async fn insert_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO signing_keys (kid, alg, private_key, created_at, activates_at) VALUES (?, ?, ?, ?, ?)")
            .bind(&key.kid)
            .bind(&key.alg)
            .bind(&key.private_key)
            .bind(key.created_at.0)
            .bind(key.activates_at.0)
            .execute(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn list_signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sqlx::query("SELECT kid, alg, private_key, created_at, activates_at FROM signing_keys ORDER BY created_at, kid")
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(StoredKey {
                    kid: r.try_get("kid")?,
                    alg: r.try_get("alg")?,
                    private_key: r.try_get("private_key")?,
                    created_at: Timestamp(r.try_get("created_at")?),
                    activates_at: Timestamp(r.try_get("activates_at")?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db_err)
    }

    async fn delete_signing_key(&self, kid: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM signing_keys WHERE kid = ?")
            .bind(kid)
            .execute(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn find_throttle(&self, key: &str) -> Result<Option<ThrottleRecord>, StoreError> {
        let row = sqlx::query("SELECT count, window_start, last_failure_at FROM throttles WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?;
        row.as_ref().map(throttle_from_row).transpose().map_err(db_err)
    }

    async fn record_throttle_failure(
        &self,
        key: &str,
        now: Timestamp,
        window_secs: i64,
    ) -> Result<ThrottleRecord, StoreError> {
        let row = sqlx::query(
            "INSERT INTO throttles (key, count, window_start, last_failure_at) VALUES (?1, 1, ?2, ?2) \
             ON CONFLICT (key) DO UPDATE SET \
               count = CASE WHEN window_start + ?3 <= ?2 THEN 1 ELSE count + 1 END, \
               window_start = CASE WHEN window_start + ?3 <= ?2 THEN ?2 ELSE window_start END, \
               last_failure_at = ?2 \
             RETURNING count, window_start, last_failure_at",
        )
        .bind(key)
        .bind(now.0)
        .bind(window_secs)
        .fetch_one(&self.writer)
        .await
        .map_err(db_err)?;
        throttle_from_row(&row).map_err(db_err)
    }

    async fn delete_throttle(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM throttles WHERE key = ?")
            .bind(key)
            .execute(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn insert_security_event(&self, event: &NewSecurityEvent) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        insert_security_event(&mut tx, event).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn list_security_events(&self, limit: i64) -> Result<Vec<SecurityEventRecord>, StoreError> {
        let rows = sqlx::query("SELECT id, at, kind, user_id, session_id, ip, detail FROM security_events ORDER BY id DESC LIMIT ?")
            .bind(limit)
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(SecurityEventRecord {
                    id: r.try_get("id")?,
                    at: Timestamp(r.try_get("at")?),
                    kind: r.try_get("kind")?,
                    user_id: r.try_get("user_id")?,
                    session_id: r.try_get("session_id")?,
                    ip: r.try_get("ip")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db_err)
    }

    async fn prune(&self, now: Timestamp, forget_sessions_before: Timestamp) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let mut n = 0;
        let before = forget_sessions_before.0;
        for (sql, arg) in [
            ("DELETE FROM revocation_events WHERE until <= ?", now.0),
            ("DELETE FROM throttles WHERE last_failure_at <= ?", now.0 - 86_400),
            (
                "DELETE FROM refresh_tokens WHERE session_id IN \
                 (SELECT id FROM sessions WHERE expires_at <= ?1 OR idle_expires_at <= ?1 OR revoked_at <= ?1)",
                before,
            ),
            (
                "DELETE FROM sessions WHERE expires_at <= ?1 OR idle_expires_at <= ?1 OR revoked_at <= ?1",
                before,
            ),
        ] {
            n += sqlx::query(sql).bind(arg).execute(&mut *tx).await.map_err(db_err)?.rows_affected();
        }
        tx.commit().await.map_err(db_err)?;
        Ok(n)
    }

    async fn list_feed_events(
        &self,
        after: i64,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<FeedEventRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, type, sid, sub, jti, authz_ver, until FROM revocation_events WHERE seq > ? AND until > ? ORDER BY seq LIMIT ?",
        )
        .bind(after)
        .bind(now.0)
        .bind(limit)
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let seq: i64 = r.try_get("seq").map_err(db_err)?;
            let until: i64 = r.try_get("until").map_err(db_err)?;
            let text =
                |c: &str| r.try_get::<Option<String>, _>(c).map(Option::unwrap_or_default).map_err(db_err);
            let event = match r.try_get::<&str, _>("type").map_err(db_err)? {
                "session_revoked" => RevocationEvent::SessionRevoked { seq, sid: text("sid")?, until },
                "user_changed" => RevocationEvent::UserChanged {
                    seq,
                    sub: text("sub")?,
                    authz_ver: r.try_get::<Option<i64>, _>("authz_ver").map_err(db_err)?.unwrap_or_default(),
                    until,
                },
                "token_revoked" => RevocationEvent::TokenRevoked { seq, jti: text("jti")?, until },
                other => return Err(StoreError::Backend(format!("unknown revocation event type {other}"))),
            };
            out.push(FeedEventRecord { seq, event });
        }
        Ok(out)
    }
}

async fn touch_session(
    tx: &mut Transaction<'_, Sqlite>,
    sid: &str,
    touch: &latchkey_core::store::Touch,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET last_used_at = ?, idle_expires_at = ?, ip = ? WHERE id = ?")
        .bind(touch.now.0)
        .bind(touch.idle_expires_at.0)
        .bind(&touch.ip)
        .bind(sid)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn throttle_from_row(row: &SqliteRow) -> Result<ThrottleRecord, sqlx::Error> {
    Ok(ThrottleRecord {
        count: row.try_get("count")?,
        window_start: Timestamp(row.try_get("window_start")?),
        last_failure_at: Timestamp(row.try_get("last_failure_at")?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synchronous_parameter_is_ours() {
        let (url, s) = split_synchronous("sqlite://a.db?synchronous=full&mode=rwc").unwrap();
        assert_eq!(url, "sqlite://a.db?mode=rwc");
        assert!(matches!(s, SqliteSynchronous::Full));
        let (url, s) = split_synchronous("sqlite://a.db").unwrap();
        assert_eq!(url, "sqlite://a.db");
        assert!(matches!(s, SqliteSynchronous::Normal));
        assert!(split_synchronous("sqlite://a.db?synchronous=off").is_err());
    }
}
