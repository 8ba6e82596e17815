//! The [`Store`] trait itself: `ping`, and `prune`, which forgets what no longer matters
//! in one transaction.

use async_trait::async_trait;
use latchkey_core::clock::Timestamp;
use latchkey_core::{Store, StoreError};

use crate::db::{Access, Backend, Conn, Db, OpFuture, Sql, op, params};

/// The sessions to forget: ended (expired or revoked) before `$1`.
macro_rules! ended_before {
    () => {
        "SELECT id FROM sessions WHERE expires_at <= $1 OR idle_expires_at <= $1 OR revoked_at <= $1"
    };
}

/// Locks the sessions to forget first, in id order (the order every writer locks sessions
/// in), so the deletes below see one set of sessions.
static LOCK_ENDED: Sql = Sql::new(concat!(ended_before!(), " ORDER BY id FOR UPDATE"));
static EXPIRED_EVENTS: Sql = Sql::new("DELETE FROM revocation_events WHERE until <= $1");
static IDLE_THROTTLES: Sql = Sql::new("DELETE FROM throttles WHERE last_failure_at <= $1");
static EXPIRED_CODES: Sql = Sql::new("DELETE FROM auth_codes WHERE expires_at <= $1");
static OLD_DEVICE_AUTHORIZATIONS: Sql = Sql::new("DELETE FROM device_authorizations WHERE expires_at <= $1");
static OLD_PUSHED_REQUESTS: Sql = Sql::new("DELETE FROM pushed_requests WHERE expires_at <= $1");
static OLD_LINKS: Sql = Sql::new("DELETE FROM link_tokens WHERE expires_at <= $1");
static OLD_MFA_CHALLENGES: Sql = Sql::new("DELETE FROM mfa_challenges WHERE expires_at <= $1");
static OLD_PASSKEY_CHALLENGES: Sql = Sql::new("DELETE FROM passkey_challenges WHERE expires_at <= $1");
static DONE_MAIL: Sql = Sql::new("DELETE FROM outbox WHERE state <> 'pending' AND created_at <= $1");
static DONE_LOGOUT_DELIVERIES: Sql =
    Sql::new("DELETE FROM logout_deliveries WHERE state <> 'pending' AND created_at <= $1");
static ENDED_COOKIES: Sql =
    Sql::new(concat!("DELETE FROM web_sessions WHERE session_id IN (", ended_before!(), ")"));
static ENDED_TOKENS: Sql =
    Sql::new(concat!("DELETE FROM refresh_tokens WHERE session_id IN (", ended_before!(), ")"));
static ENDED_SESSIONS: Sql =
    Sql::new("DELETE FROM sessions WHERE expires_at <= $1 OR idle_expires_at <= $1 OR revoked_at <= $1");

/// How long a throttle counter is kept after its last failure.
const THROTTLE_RETENTION_SECS: i64 = 86_400;
/// How long a code (or a device authorization) is kept past its expiry, so that a late
/// second use still revokes (or a late poll answers `expired_token`).
const CODE_RETENTION_SECS: i64 = 600;
/// How long a link token is kept past its expiry, so that a late click answers `used` or
/// `expired` rather than `unknown`; and how long a sent, failed or expired mail (or logout
/// delivery) stays listed.
const MAIL_RETENTION_SECS: i64 = 7 * 86_400;

fn prune(c: &mut dyn Conn, (now, before): (i64, i64)) -> OpFuture<'_, u64> {
    Box::pin(async move {
        c.query(&LOCK_ENDED, params![before], &mut |_| Ok(())).await?;
        let mut n = c.execute(&EXPIRED_EVENTS, params![now]).await?;
        n += c.execute(&IDLE_THROTTLES, params![now.saturating_sub(THROTTLE_RETENTION_SECS)]).await?;
        n += c.execute(&EXPIRED_CODES, params![now.saturating_sub(CODE_RETENTION_SECS)]).await?;
        n += c.execute(&OLD_DEVICE_AUTHORIZATIONS, params![now.saturating_sub(CODE_RETENTION_SECS)]).await?;
        n += c.execute(&OLD_PUSHED_REQUESTS, params![now.saturating_sub(CODE_RETENTION_SECS)]).await?;
        n += c.execute(&OLD_LINKS, params![now.saturating_sub(MAIL_RETENTION_SECS)]).await?;
        n += c.execute(&OLD_MFA_CHALLENGES, params![now.saturating_sub(CODE_RETENTION_SECS)]).await?;
        n += c.execute(&OLD_PASSKEY_CHALLENGES, params![now]).await?;
        n += c.execute(&DONE_MAIL, params![now.saturating_sub(MAIL_RETENTION_SECS)]).await?;
        n += c.execute(&DONE_LOGOUT_DELIVERIES, params![now.saturating_sub(MAIL_RETENTION_SECS)]).await?;
        n += c.execute(&ENDED_COOKIES, params![before]).await?;
        n += c.execute(&ENDED_TOKENS, params![before]).await?;
        n += c.execute(&ENDED_SESSIONS, params![before]).await?;
        Ok(n)
    })
}

#[async_trait]
impl<B: Backend> Store for Db<B> {
    async fn ping(&self) -> Result<(), StoreError> {
        self.0.ping().await
    }

    async fn prune(&self, now: Timestamp, forget_sessions_before: Timestamp) -> Result<u64, StoreError> {
        self.0.run(Access::Transaction, op((now.0, forget_sessions_before.0), prune)).await
    }
}
