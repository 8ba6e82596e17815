//! Users and their changes ([`UserStore`]), for both backends. A change bumps `authz_ver`,
//! publishes `user_changed` and revokes what the change ends, in one transaction and in the
//! lock order of the PostgreSQL module doc: the user row (the first UPDATE locks it), then
//! the sessions, then the feed lock and the events.

use async_trait::async_trait;
use latchkey_core::StoreError;
use latchkey_core::clock::Timestamp;
use latchkey_core::ids::{SessionId, UserId};
use latchkey_core::store::{UserChange, UserChangeKind, UserEmail, UserRecord, UserStore};

use crate::db::{Access, Backend, Conn, Db, DbError, OpFuture, Sql, op, params, query_all, query_opt};
use crate::feed::insert_user_changed;
use crate::revocation::{live_session_ids, mark_revoked, publish_revoked};
use crate::rows::{self, user_columns};

static INSERT: Sql = Sql::new(
    "INSERT INTO users (id, username, password_hash, roles, authz_ver, status, created_at, email, email_key, \
     email_verified_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
);
static BY_EMAIL_KEY: Sql =
    Sql::new(concat!("SELECT ", user_columns!(), " FROM users u WHERE u.email_key = $1"));
static SET_EMAIL: Sql =
    Sql::new("UPDATE users SET email = $1, email_key = $2, email_verified_at = $3 WHERE id = $4");
pub(crate) static BY_ID: Sql = Sql::new(concat!("SELECT ", user_columns!(), " FROM users u WHERE u.id = $1"));
/// The row lock waits out a change in progress (SQLite runs it on its single writer).
static BY_ID_SETTLED: Sql =
    Sql::new(concat!("SELECT ", user_columns!(), " FROM users u WHERE u.id = $1 FOR UPDATE"));
static BY_USERNAME: Sql =
    Sql::new(concat!("SELECT ", user_columns!(), " FROM users u WHERE u.username = $1"));
static ALL: Sql =
    Sql::new(concat!("SELECT ", user_columns!(), " FROM users u ORDER BY u.created_at, u.username"));
static BUMP_AUTHZ_VER: Sql =
    Sql::new("UPDATE users SET authz_ver = authz_ver + 1 WHERE id = $1 RETURNING authz_ver");
static SET_ROLES: Sql = Sql::new("UPDATE users SET roles = $1 WHERE id = $2");
static SET_PASSWORD: Sql = Sql::new("UPDATE users SET password_hash = $1 WHERE id = $2");
static DISABLE: Sql = Sql::new("UPDATE users SET status = 'disabled' WHERE id = $1");
/// Voids a user's unused links that could take the account: reset links and pending
/// address changes. A new password (set, or reset with one of these links, which is
/// marked used first) and a new address through the CLI end them, so that the remedy a
/// change notice recommends (reset your password) also stops the change.
static VOID_TAKEOVER_LINKS: Sql = Sql::new(
    "UPDATE link_tokens SET voided_at = $1 WHERE user_id = $2 AND purpose IN ('password_reset', 'change_email') \
     AND used_at IS NULL AND voided_at IS NULL",
);

/// The change's own update of the user row.
async fn update_user(c: &mut dyn Conn, change: &UserChange) -> Result<(), DbError> {
    let id = &change.user_id;
    match &change.kind {
        UserChangeKind::SetRoles(roles) => c.execute(&SET_ROLES, params![&rows::to_json(roles)?, id]).await?,
        UserChangeKind::SetPassword { password_hash, .. } => {
            c.execute(&VOID_TAKEOVER_LINKS, params![change.now.0, id]).await?;
            c.execute(&SET_PASSWORD, params![password_hash, id]).await?
        }
        UserChangeKind::Disable => c.execute(&DISABLE, params![id]).await?,
    };
    Ok(())
}

pub(crate) async fn apply_change(
    c: &mut dyn Conn,
    change: UserChange,
) -> Result<Option<(i64, Vec<SessionId>)>, DbError> {
    let Some(authz_ver) =
        query_opt(c, &BUMP_AUTHZ_VER, params![&change.user_id], crate::db::first_int).await?
    else {
        return Ok(None);
    };
    update_user(c, &change).await?;
    let revoking = change.kind.revokes().map(|(reason, keep)| (change.revocation(reason), keep));
    // Lock order (PostgreSQL module doc): the user row (locked by the first UPDATE), the
    // sessions, and only then the feed lock, which `insert_user_changed` takes.
    let revoked = match &revoking {
        Some((revocation, keep)) => {
            let ids = live_session_ids(c, &change.user_id, *keep).await?;
            mark_revoked(c, ids, revocation).await?
        }
        None => Vec::new(),
    };
    insert_user_changed(c, &change, authz_ver).await?;
    if let Some((revocation, _)) = &revoking {
        publish_revoked(c, &revoked, revocation).await?;
    }
    Ok(Some((authz_ver, revoked)))
}

fn insert(c: &mut dyn Conn, u: UserRecord) -> OpFuture<'_, ()> {
    Box::pin(async move {
        let roles = rows::to_json(&u.roles)?;
        let email = u.email.as_ref();
        let p = params![
            &u.id,
            &u.username,
            &u.password_hash,
            &roles,
            u.authz_ver,
            u.status.as_str(),
            u.created_at.0,
            email.map(|e| e.address.as_str()),
            email.map(|e| e.key.as_str()),
            email.and_then(|e| e.verified_at).map(|t| t.0)
        ];
        c.execute(&INSERT, p).await.map(|_| ())
    })
}

fn by_email(c: &mut dyn Conn, key: String) -> OpFuture<'_, Option<UserRecord>> {
    Box::pin(async move { query_opt(c, &BY_EMAIL_KEY, params![&key], rows::user).await })
}

fn set_email(c: &mut dyn Conn, (id, email, now): (UserId, Option<UserEmail>, i64)) -> OpFuture<'_, bool> {
    Box::pin(async move {
        c.execute(&VOID_TAKEOVER_LINKS, params![now, &id]).await?;
        let e = email.as_ref();
        let p = params![
            e.map(|e| e.address.as_str()),
            e.map(|e| e.key.as_str()),
            e.and_then(|e| e.verified_at).map(|t| t.0),
            &id
        ];
        Ok(c.execute(&SET_EMAIL, p).await? > 0)
    })
}

fn by_id(c: &mut dyn Conn, id: UserId) -> OpFuture<'_, Option<UserRecord>> {
    Box::pin(async move { query_opt(c, &BY_ID, params![&id], rows::user).await })
}

fn by_id_settled(c: &mut dyn Conn, id: UserId) -> OpFuture<'_, Option<UserRecord>> {
    Box::pin(async move { query_opt(c, &BY_ID_SETTLED, params![&id], rows::user).await })
}

fn by_username(c: &mut dyn Conn, name: String) -> OpFuture<'_, Option<UserRecord>> {
    Box::pin(async move { query_opt(c, &BY_USERNAME, params![&name], rows::user).await })
}

fn all(c: &mut dyn Conn, (): ()) -> OpFuture<'_, Vec<UserRecord>> {
    Box::pin(async move { query_all(c, &ALL, params![], rows::user).await })
}

fn change(c: &mut dyn Conn, change: UserChange) -> OpFuture<'_, Option<(i64, Vec<SessionId>)>> {
    Box::pin(apply_change(c, change))
}

#[async_trait]
impl<B: Backend> UserStore for Db<B> {
    async fn insert_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        self.0.run(Access::Statement, op(user.clone(), insert)).await
    }

    async fn find_user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        self.0.run(Access::Point, op(id.clone(), by_id)).await
    }

    async fn find_user_settled(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        self.0.run(Access::Transaction, op(id.clone(), by_id_settled)).await
    }

    async fn find_user_by_username(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        self.0.run(Access::Point, op(username.to_owned(), by_username)).await
    }

    async fn find_user_by_email(&self, key: &str) -> Result<Option<UserRecord>, StoreError> {
        self.0.run(Access::Point, op(key.to_owned(), by_email)).await
    }

    async fn set_user_email(
        &self,
        id: &UserId,
        email: Option<&UserEmail>,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.0.run(Access::Transaction, op((id.clone(), email.cloned(), now.0), set_email)).await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.0.run(Access::Scan, op((), all)).await
    }

    async fn apply_user_change(
        &self,
        user_change: &UserChange,
    ) -> Result<Option<(i64, Vec<SessionId>)>, StoreError> {
        self.0.run(Access::Transaction, op(user_change.clone(), change)).await
    }
}
