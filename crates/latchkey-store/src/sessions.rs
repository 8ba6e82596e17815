//! Sessions, their refresh tokens and browser cookies ([`SessionStore`]), for both
//! backends: rotation with reuse detection and revocation, each one transaction.
//!
//! Rotation reads its snapshot with the session locked (PostgreSQL: `FOR UPDATE`, so
//! rotations of one session are serialised across connections and nodes, and the token is
//! read again after the lock, since a concurrent rotation may have retired it meanwhile;
//! SQLite's single writer serialises them anyway and reads it once). The decision runs
//! inside the transaction and its writes follow. Revocations change sessions in id order
//! (the lock order) and publish their feed events after taking the feed lock, last.

use async_trait::async_trait;
use latchkey_core::StoreError;
use latchkey_core::clock::Timestamp;
use latchkey_core::crypto::{RefreshTokenKey, TokenHash};
use latchkey_core::ids::{SessionId, UserId};
use latchkey_core::store::{
    Decide, RefreshSnapshot, RefreshTokenRecord, RevocationTarget, RotationDecision, SessionRecord,
    SessionRevocation, SessionStore, Touch,
};

use crate::audit::{insert_refresh_events, insert_security_event};
use crate::db::{
    Access, Backend, Conn, Db, DbError, OpFuture, Sql, first_id, op, params, query_all, query_one, query_opt,
};
use crate::revocation::{live_session_ids, revoke_in_tx};
use crate::rows::{self, session_columns};

static INSERT: Sql = Sql::new(
    "INSERT INTO sessions (id, user_id, client_id, scope, created_at, last_used_at, idle_expires_at, \
     expires_at, ip, user_agent, amr, dpop_jkt, browser_session_id, resources) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
);
static INSERT_TOKEN: Sql =
    Sql::new("INSERT INTO refresh_tokens (id, hash, session_id, created_at) VALUES ($1, $2, $3, $4)");
static INSERT_COOKIE: Sql =
    Sql::new("INSERT INTO web_sessions (cookie_hash, session_id, created_at) VALUES ($1, $2, $3)");
static BY_ID: Sql = Sql::new(concat!("SELECT ", session_columns!(), " FROM sessions s WHERE s.id = $1"));
pub(crate) static LOCK: Sql =
    Sql::new(concat!("SELECT ", session_columns!(), " FROM sessions s WHERE s.id = $1 FOR UPDATE"));
static BY_TOKEN: Sql = Sql::new(concat!(
    "SELECT ",
    session_columns!(),
    " FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE t.id = $1 AND t.hash = $2"
));
static BY_LIVE_TOKEN: Sql = Sql::new(concat!(
    "SELECT ",
    session_columns!(),
    " FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id \
     WHERE t.id = $1 AND t.hash = $2 AND t.retired_at IS NULL"
));
static BY_COOKIE: Sql = Sql::new(concat!(
    "SELECT ",
    session_columns!(),
    " FROM web_sessions w JOIN sessions s ON s.id = w.session_id WHERE w.cookie_hash = $1"
));
static LIVE_OF_USER: Sql = Sql::new(concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions s WHERE s.user_id = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 \
     AND s.idle_expires_at > $2 ORDER BY s.last_used_at DESC, s.created_at DESC"
));
static LIVE_IDS_OF_CLIENT: Sql =
    Sql::new("SELECT id FROM sessions WHERE client_id = $1 AND revoked_at IS NULL");
static LIVE_IDS_OF_GRANT: Sql =
    Sql::new("SELECT id FROM sessions WHERE user_id = $1 AND client_id = $2 AND revoked_at IS NULL");
static LIVE_IDS_UNDER_BROWSER_SESSION: Sql =
    Sql::new("SELECT id FROM sessions WHERE browser_session_id = $1 AND revoked_at IS NULL");
static OWNER: Sql = Sql::new("SELECT user_id FROM sessions WHERE id = $1");
static FORGET_CONSENTS_OF_CLIENT: Sql = Sql::new("DELETE FROM consents WHERE client_id = $1");
static FORGET_CONSENT: Sql = Sql::new("DELETE FROM consents WHERE user_id = $1 AND client_id = $2");
static TOUCH: Sql =
    Sql::new("UPDATE sessions SET last_used_at = $1, idle_expires_at = $2, ip = $3 WHERE id = $4");
/// A use that also ends the session's step-up wait: the refresh after `POST /auth/step-up`.
static TOUCH_ENDING_STEP_UP: Sql = Sql::new(
    "UPDATE sessions SET last_used_at = $1, idle_expires_at = $2, ip = $3, step_up_at = NULL WHERE id = $4",
);
static WAIT_FOR_STEP_UP: Sql = Sql::new("UPDATE sessions SET step_up_at = $1 WHERE id = $2");
// Every lookup of a presented token matches its hash as well as its key: a key alone
// proves nothing (see `RefreshTokenKey`).
static TOKEN_SESSION: Sql = Sql::new("SELECT session_id FROM refresh_tokens WHERE id = $1 AND hash = $2");
static TOKEN: Sql = Sql::new(
    "SELECT session_id, created_at, retired_at, successor_id, successor_sealed, retired_by \
     FROM refresh_tokens WHERE id = $1 AND hash = $2",
);
/// Whether a successor (a key from our own row, not a presented token) has been rotated.
static IS_RETIRED: Sql = Sql::new("SELECT retired_at IS NOT NULL FROM refresh_tokens WHERE id = $1");
static RETIRED_AT: Sql = Sql::new("SELECT retired_at FROM refresh_tokens WHERE id = $1 AND hash = $2");
static RETIRE: Sql = Sql::new(
    "UPDATE refresh_tokens SET retired_at = $1, successor_id = $2, successor_sealed = $3, retired_by = $4 \
     WHERE id = $5 AND retired_at IS NULL",
);

/// Inserts a session, with its first refresh token when it has one.
pub(crate) async fn insert_session_in_tx(
    c: &mut dyn Conn,
    s: &SessionRecord,
    refresh_token: Option<&RefreshTokenKey>,
) -> Result<(), DbError> {
    let resources = rows::to_json(&s.resources)?;
    let p = params![
        &s.id,
        &s.user_id,
        &s.client_id,
        &s.scope,
        s.created_at.0,
        s.last_used_at.0,
        s.idle_expires_at.0,
        s.expires_at.0,
        &s.ip,
        &s.user_agent,
        &s.amr,
        &s.dpop_jkt,
        &s.browser_session_id,
        &resources
    ];
    c.execute(&INSERT, p).await?;
    if let Some(key) = refresh_token {
        c.execute(&INSERT_TOKEN, params![&key.id, &key.hash.0, &s.id, s.created_at.0]).await?;
    }
    Ok(())
}

/// The sessions a revocation target names; forgets the consent it ends. (Not locked yet:
/// [`revoke_in_tx`] changes only those still live.)
async fn target_ids(c: &mut dyn Conn, target: &RevocationTarget) -> Result<Vec<SessionId>, DbError> {
    Ok(match target {
        RevocationTarget::Session { id, user_id } => {
            let owner: Option<UserId> = query_opt(c, &OWNER, params![id], first_id).await?;
            match (owner, user_id) {
                (Some(owner), Some(expected)) if &owner != expected => Vec::new(),
                (Some(_), _) => vec![id.clone()],
                (None, _) => Vec::new(),
            }
        }
        RevocationTarget::BrowserSession { id, user_id } => {
            let owner: Option<UserId> = query_opt(c, &OWNER, params![id], first_id).await?;
            if owner.as_ref() != Some(user_id) {
                return Ok(Vec::new());
            }
            let mut ids = vec![id.clone()];
            ids.extend(query_all(c, &LIVE_IDS_UNDER_BROWSER_SESSION, params![id], first_id).await?);
            ids
        }
        RevocationTarget::UserSessions { user_id, except } => {
            live_session_ids(c, user_id, except.as_ref()).await?
        }
        RevocationTarget::ClientSessions { client_id } => {
            c.execute(&FORGET_CONSENTS_OF_CLIENT, params![client_id]).await?;
            query_all(c, &LIVE_IDS_OF_CLIENT, params![client_id], first_id).await?
        }
        RevocationTarget::AppGrant { user_id, client_id } => {
            c.execute(&FORGET_CONSENT, params![user_id, client_id]).await?;
            query_all(c, &LIVE_IDS_OF_GRANT, params![user_id, client_id], first_id).await?
        }
    })
}

async fn touch_in_tx(c: &mut dyn Conn, sid: &SessionId, t: &Touch) -> Result<u64, DbError> {
    let sql = if t.ends_step_up_wait { &TOUCH_ENDING_STEP_UP } else { &TOUCH };
    c.execute(sql, params![t.now.0, t.idle_expires_at.0, &t.ip, sid]).await
}

/// A refresh token row, and whether its successor has itself been rotated.
async fn token_in_tx(
    c: &mut dyn Conn,
    presented: &RefreshTokenKey,
) -> Result<Option<RefreshTokenRecord>, DbError> {
    let read = |row: &dyn crate::db::Row| {
        Ok((
            SessionId::from(row.text(0)?),
            Timestamp(row.int(1)?),
            row.opt_int(2)?.map(Timestamp),
            row.opt_blob(3)?,
            row.opt_blob(4)?,
            row.opt_blob(5)?.map(rows::fingerprint).transpose()?,
        ))
    };
    let Some((session_id, created_at, retired_at, successor_id, successor_sealed, retired_by)) =
        query_opt(c, &TOKEN, params![&presented.id, &presented.hash.0], read).await?
    else {
        return Ok(None);
    };
    let is_successor_used = match &successor_id {
        Some(next) => query_opt(c, &IS_RETIRED, params![next], |r| r.flag(0)).await?.unwrap_or(false),
        None => false,
    };
    Ok(Some(RefreshTokenRecord {
        key: *presented,
        session_id,
        created_at,
        retired_at,
        successor_sealed,
        is_successor_used,
        retired_by,
    }))
}

/// Everything a rotation decision needs, with the session locked first. `None` when the
/// token is unknown, or was pruned with its session meanwhile.
async fn rotation_snapshot(
    c: &mut dyn Conn,
    presented: &RefreshTokenKey,
) -> Result<Option<RefreshSnapshot>, DbError> {
    let token = if c.are_writes_serial() {
        // One lookup fewer on SQLite's writer, whose time bounds its throughput.
        token_in_tx(c, presented).await?
    } else {
        None
    };
    let session_id = match &token {
        Some(t) => t.session_id.clone(),
        None => {
            match query_opt(c, &TOKEN_SESSION, params![&presented.id, &presented.hash.0], first_id).await? {
                Some(id) => id,
                None => return Ok(None),
            }
        }
    };
    let Some(session) = query_opt(c, &LOCK, params![&session_id], rows::session).await? else {
        return Ok(None);
    };
    let token = match token {
        Some(t) => t,
        None => match token_in_tx(c, presented).await? {
            Some(t) => t,
            None => return Ok(None),
        },
    };
    let user = query_one(c, &crate::users::BY_ID, params![&session.user_id], rows::user).await?;
    Ok(Some(RefreshSnapshot { token, session, user }))
}

/// Applies what the rotation policy decided.
async fn apply_rotation(
    c: &mut dyn Conn,
    presented: &RefreshTokenKey,
    sid: &SessionId,
    decision: &RotationDecision,
) -> Result<(), DbError> {
    match decision {
        RotationDecision::Rotate { retired_by, successor, successor_sealed, touch, events, .. } => {
            let p = params![touch.now.0, &successor.id, successor_sealed, &retired_by.0, &presented.id];
            c.execute(&RETIRE, p).await?;
            c.execute(&INSERT_TOKEN, params![&successor.id, &successor.hash.0, sid, touch.now.0]).await?;
            touch_in_tx(c, sid, touch).await?;
            insert_refresh_events(c, events).await?;
        }
        RotationDecision::Replay { touch, events, .. } => {
            touch_in_tx(c, sid, touch).await?;
            insert_refresh_events(c, events).await?;
        }
        RotationDecision::StepUp { at, event } => {
            c.execute(&WAIT_FOR_STEP_UP, params![at.0, sid]).await?;
            insert_security_event(c, event).await?;
        }
        RotationDecision::Revoke { revocation } => {
            revoke_in_tx(c, vec![sid.clone()], revocation).await?;
        }
        RotationDecision::Refuse { .. }
        | RotationDecision::ScopeExceeded
        | RotationDecision::TargetExceeded => {}
    }
    Ok(())
}

/// The decision of one rotation, taken at most once (see [`DbError::DecidedTwice`]).
type DecideOnce = std::sync::Arc<std::sync::Mutex<Option<Decide>>>;

fn rotate(
    c: &mut dyn Conn,
    (presented, decide): (RefreshTokenKey, DecideOnce),
) -> OpFuture<'_, Option<(RefreshSnapshot, RotationDecision)>> {
    Box::pin(async move {
        let Some(snap) = rotation_snapshot(c, &presented).await? else { return Ok(None) };
        let decide = decide.lock().ok().and_then(|mut slot| slot.take()).ok_or(DbError::DecidedTwice)?;
        let decision = decide(&snap);
        apply_rotation(c, &presented, &snap.session.id, &decision).await?;
        Ok(Some((snap, decision)))
    })
}

fn insert(
    c: &mut dyn Conn,
    (s, token, cookie): (SessionRecord, Option<RefreshTokenKey>, Option<TokenHash>),
) -> OpFuture<'_, ()> {
    Box::pin(async move {
        insert_session_in_tx(c, &s, token.as_ref()).await?;
        if let Some(cookie) = cookie {
            c.execute(&INSERT_COOKIE, params![&cookie.0, &s.id, s.created_at.0]).await?;
        }
        Ok(())
    })
}

fn by_id(c: &mut dyn Conn, id: SessionId) -> OpFuture<'_, Option<SessionRecord>> {
    Box::pin(async move { query_opt(c, &BY_ID, params![&id], rows::session).await })
}

fn by_token(c: &mut dyn Conn, key: RefreshTokenKey) -> OpFuture<'_, Option<SessionRecord>> {
    Box::pin(async move { query_opt(c, &BY_TOKEN, params![&key.id, &key.hash.0], rows::session).await })
}

fn by_live_token(c: &mut dyn Conn, key: RefreshTokenKey) -> OpFuture<'_, Option<SessionRecord>> {
    Box::pin(async move { query_opt(c, &BY_LIVE_TOKEN, params![&key.id, &key.hash.0], rows::session).await })
}

fn by_cookie(c: &mut dyn Conn, hash: [u8; 32]) -> OpFuture<'_, Option<SessionRecord>> {
    Box::pin(async move { query_opt(c, &BY_COOKIE, params![&hash], rows::session).await })
}

fn live_of_user(c: &mut dyn Conn, (user_id, now): (UserId, i64)) -> OpFuture<'_, Vec<SessionRecord>> {
    Box::pin(async move { query_all(c, &LIVE_OF_USER, params![&user_id, now], rows::session).await })
}

fn revoke(
    c: &mut dyn Conn,
    (target, rev): (RevocationTarget, SessionRevocation),
) -> OpFuture<'_, Vec<SessionId>> {
    Box::pin(async move {
        let ids = target_ids(c, &target).await?;
        revoke_in_tx(c, ids, &rev).await
    })
}

fn is_live_token(c: &mut dyn Conn, key: RefreshTokenKey) -> OpFuture<'_, bool> {
    Box::pin(async move {
        let retired = query_opt(c, &RETIRED_AT, params![&key.id, &key.hash.0], |r| r.opt_int(0)).await?;
        Ok(matches!(retired, Some(None)))
    })
}

fn touch(c: &mut dyn Conn, (sid, t): (SessionId, Touch)) -> OpFuture<'_, ()> {
    Box::pin(async move { touch_in_tx(c, &sid, &t).await.map(|_| ()) })
}

#[async_trait]
impl<B: Backend> SessionStore for Db<B> {
    async fn insert_session(
        &self,
        session: &SessionRecord,
        refresh_token: &RefreshTokenKey,
    ) -> Result<(), StoreError> {
        self.0.run(Access::Transaction, op((session.clone(), Some(*refresh_token), None), insert)).await
    }

    async fn find_session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        self.0.run(Access::Point, op(id.clone(), by_id)).await
    }

    async fn find_session_by_refresh_token(
        &self,
        key: &RefreshTokenKey,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.0.run(Access::Point, op(*key, by_token)).await
    }

    async fn find_session_by_live_refresh_token(
        &self,
        key: &RefreshTokenKey,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.0.run(Access::Point, op(*key, by_live_token)).await
    }

    async fn list_live_sessions(
        &self,
        user_id: &UserId,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.0.run(Access::Scan, op((user_id.clone(), now.0), live_of_user)).await
    }

    async fn revoke_sessions(
        &self,
        target: &RevocationTarget,
        revocation: &SessionRevocation,
    ) -> Result<Vec<SessionId>, StoreError> {
        self.0.run(Access::Transaction, op((target.clone(), revocation.clone()), revoke)).await
    }

    async fn rotate_refresh_token(
        &self,
        presented: &RefreshTokenKey,
        decide: Decide,
    ) -> Result<Option<(RefreshSnapshot, RotationDecision)>, StoreError> {
        let decide: DecideOnce = std::sync::Arc::new(std::sync::Mutex::new(Some(decide)));
        self.0.run(Access::Transaction, op((*presented, decide), rotate)).await
    }

    async fn is_live_refresh_token(&self, key: &RefreshTokenKey) -> Result<bool, StoreError> {
        self.0.run(Access::Point, op(*key, is_live_token)).await
    }

    async fn insert_web_session(
        &self,
        session: &SessionRecord,
        cookie: &TokenHash,
    ) -> Result<(), StoreError> {
        self.0.run(Access::Transaction, op((session.clone(), None, Some(*cookie)), insert)).await
    }

    async fn find_web_session(&self, cookie: &TokenHash) -> Result<Option<SessionRecord>, StoreError> {
        self.0.run(Access::Point, op(cookie.0, by_cookie)).await
    }

    async fn touch_session(&self, session_id: &SessionId, touch_: &Touch) -> Result<(), StoreError> {
        self.0.run(Access::Statement, op((session_id.clone(), touch_.clone()), touch)).await
    }
}
