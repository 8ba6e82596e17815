//! The outbox ([`OutboxStore`]), for both backends: mail written in the transaction of its
//! cause (a link is queued by `links.rs` with its link), listed for `latchkey mail list`.

use async_trait::async_trait;
use latchkey_core::StoreError;
use latchkey_core::store::{MailRecord, MailState, NewMail, OutboxStore};

use crate::db::{Access, Backend, Conn, Db, DbError, OpFuture, Sql, op, params, query_all};
use crate::rows::{self, mail_columns};

static INSERT_MAIL: Sql = Sql::new(
    "INSERT INTO outbox (kind, user_id, recipient, subject, text_body, html_body, created_at, expires_at, \
     state, attempts, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', 0, $7)",
);
static LIST_MAIL: Sql =
    Sql::new(concat!("SELECT ", mail_columns!(), " FROM outbox WHERE state = $1 ORDER BY id DESC LIMIT $2"));
static LIST_ALL_MAIL: Sql =
    Sql::new(concat!("SELECT ", mail_columns!(), " FROM outbox ORDER BY id DESC LIMIT $1"));

pub(crate) async fn insert_mail_in_tx(c: &mut dyn Conn, m: &NewMail) -> Result<(), DbError> {
    let p = params![
        m.kind,
        m.user_id.as_ref(),
        &m.recipient,
        &m.subject,
        &m.text,
        &m.html,
        m.created_at.0,
        m.expires_at.0
    ];
    c.execute(&INSERT_MAIL, p).await.map(|_| ())
}

fn queue(c: &mut dyn Conn, mail: NewMail) -> OpFuture<'_, ()> {
    Box::pin(async move { insert_mail_in_tx(c, &mail).await })
}

fn list(c: &mut dyn Conn, (state, limit): (Option<MailState>, i64)) -> OpFuture<'_, Vec<MailRecord>> {
    Box::pin(async move {
        match state {
            Some(s) => query_all(c, &LIST_MAIL, params![s.as_str(), limit], rows::mail).await,
            None => query_all(c, &LIST_ALL_MAIL, params![limit], rows::mail).await,
        }
    })
}

#[async_trait]
impl<B: Backend> OutboxStore for Db<B> {
    async fn queue_mail(&self, mail: &NewMail) -> Result<(), StoreError> {
        self.0.run(Access::Transaction, op(mail.clone(), queue)).await
    }

    async fn list_mail(&self, state: Option<MailState>, limit: i64) -> Result<Vec<MailRecord>, StoreError> {
        self.0.run(Access::Scan, op((state, limit), list)).await
    }
}
