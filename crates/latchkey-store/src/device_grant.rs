//! Device authorizations ([`DeviceGrantStore`], RFC 8628), for both backends. A poll locks
//! its row (PostgreSQL: `FOR UPDATE`; SQLite's single writer serialises anyway), reads the
//! approving browser session under lock too, so a logout that commits first is seen, and
//! applies the domain's decision in the same transaction.

use async_trait::async_trait;
use latchkey_core::StoreError;
use latchkey_core::clock::Timestamp;
use latchkey_core::crypto::TokenHash;
use latchkey_core::ids::{ClientId, SessionId, UserId};
use latchkey_core::store::{
    DeviceAuthorizationRecord, DeviceGrantStore, DevicePoll, DevicePollDecide, DevicePollDecision, DeviceWait,
};

use crate::db::{Access, Backend, Conn, Db, DbError, OpFuture, Sql, op, params, query_opt};
use crate::rows::{self, device_columns};
use crate::sessions::insert_session_in_tx;

static INSERT: Sql = Sql::new(concat!(
    "INSERT INTO device_authorizations (",
    device_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
));
static BY_USER_CODE: Sql =
    Sql::new(concat!("SELECT ", device_columns!(), " FROM device_authorizations WHERE user_code = $1"));
static LOCK: Sql = Sql::new(concat!(
    "SELECT ",
    device_columns!(),
    " FROM device_authorizations WHERE device_code_hash = $1 FOR UPDATE"
));
/// `$1` user code, `$2` state, `$3` user, `$4` browser session, `$5` now.
static DECIDE: Sql = Sql::new(
    "UPDATE device_authorizations SET state = $2, user_id = $3, browser_session_id = $4, decided_at = $5 \
     WHERE user_code = $1 AND state = 'pending' AND expires_at > $5",
);
static POLLED: Sql =
    Sql::new("UPDATE device_authorizations SET last_polled_at = $2 WHERE device_code_hash = $1");
static POLLED_TOO_SOON: Sql = Sql::new(
    "UPDATE device_authorizations SET last_polled_at = $2, interval_secs = interval_secs + 5 \
     WHERE device_code_hash = $1",
);
static SPEND: Sql = Sql::new(
    "UPDATE device_authorizations SET last_polled_at = $2, state = 'used', session_id = $3 \
     WHERE device_code_hash = $1",
);

fn insert(c: &mut dyn Conn, d: DeviceAuthorizationRecord) -> OpFuture<'_, ()> {
    Box::pin(async move {
        let p = params![
            &d.device_code_hash.0,
            &d.user_code,
            &d.client_id,
            &d.scope,
            d.created_at.0,
            d.expires_at.0,
            d.interval_secs,
            d.last_polled_at.map(|t| t.0),
            d.state.as_str(),
            &d.user_id,
            &d.browser_session_id,
            d.decided_at.map(|t| t.0),
            &d.session_id
        ];
        c.execute(&INSERT, p).await.map(|_| ())
    })
}

fn find(c: &mut dyn Conn, user_code: String) -> OpFuture<'_, Option<DeviceAuthorizationRecord>> {
    Box::pin(
        async move { query_opt(c, &BY_USER_CODE, params![&user_code], rows::device_authorization).await },
    )
}

fn decide(
    c: &mut dyn Conn,
    (user_code, user_id, approved_by, now): (String, UserId, Option<SessionId>, i64),
) -> OpFuture<'_, bool> {
    Box::pin(async move {
        let state = if approved_by.is_some() { "approved" } else { "denied" };
        Ok(c.execute(&DECIDE, params![&user_code, state, &user_id, &approved_by, now]).await? == 1)
    })
}

/// The decision of one poll, taken at most once (see [`DbError::DecidedTwice`]).
type DecideOnce = std::sync::Arc<std::sync::Mutex<Option<DevicePollDecide>>>;

fn poll(
    c: &mut dyn Conn,
    (hash, client_id, now, decide): ([u8; 32], ClientId, i64, DecideOnce),
) -> OpFuture<'_, DevicePoll> {
    Box::pin(async move {
        let Some(auth) = query_opt(c, &LOCK, params![&hash], rows::device_authorization).await? else {
            return Ok(DevicePoll::Unknown);
        };
        // Another client's device code is unknown to this one, and its poll changes nothing.
        if auth.client_id != client_id {
            return Ok(DevicePoll::Unknown);
        }
        let browser = match &auth.browser_session_id {
            Some(id) => query_opt(c, &crate::sessions::LOCK, params![id], rows::session).await?,
            None => None,
        };
        let decide = decide.lock().ok().and_then(|mut slot| slot.take()).ok_or(DbError::DecidedTwice)?;
        let decision = decide(&auth, browser.as_ref());
        match &decision {
            DevicePollDecision::Issue { session, refresh_token } => {
                insert_session_in_tx(c, session, refresh_token.as_ref()).await?;
                c.execute(&SPEND, params![&hash, now, &session.id]).await?;
            }
            DevicePollDecision::Wait(DeviceWait::SlowDown) => {
                c.execute(&POLLED_TOO_SOON, params![&hash, now]).await?;
            }
            DevicePollDecision::Wait(_) => {
                c.execute(&POLLED, params![&hash, now]).await?;
            }
        }
        Ok(DevicePoll::Decided { authorization: Box::new(auth), decision })
    })
}

#[async_trait]
impl<B: Backend> DeviceGrantStore for Db<B> {
    async fn insert_device_authorization(&self, auth: &DeviceAuthorizationRecord) -> Result<(), StoreError> {
        self.0.run(Access::Statement, op(auth.clone(), insert)).await
    }

    async fn find_device_authorization(
        &self,
        user_code: &str,
    ) -> Result<Option<DeviceAuthorizationRecord>, StoreError> {
        self.0.run(Access::Point, op(user_code.to_owned(), find)).await
    }

    async fn decide_device_authorization(
        &self,
        user_code: &str,
        user_id: &UserId,
        approved_by: Option<&SessionId>,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let args = (user_code.to_owned(), user_id.clone(), approved_by.cloned(), now.0);
        self.0.run(Access::Statement, op(args, decide)).await
    }

    async fn poll_device_authorization(
        &self,
        hash: &TokenHash,
        client_id: &ClientId,
        now: Timestamp,
        decide: DevicePollDecide,
    ) -> Result<DevicePoll, StoreError> {
        let decide: DecideOnce = std::sync::Arc::new(std::sync::Mutex::new(Some(decide)));
        self.0.run(Access::Transaction, op((hash.0, client_id.clone(), now.0, decide), poll)).await
    }
}
