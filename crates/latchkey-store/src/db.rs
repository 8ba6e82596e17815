//! What both backends share: SQL texts with their placeholders converted in one place
//! ([`Sql`]), parameters as data ([`Param`]), a column reader over a row of either driver
//! ([`Row`]), and a connection of either driver ([`Conn`]) on which every operation of the
//! store is written once (the aggregate modules: `users.rs`, `sessions.rs`, …).
//!
//! A backend only says *where* an operation runs ([`Backend::run`] with an [`Access`]):
//! SQLite on its writer thread, its reader threads or inline; PostgreSQL on a pooled
//! connection or in a transaction it retries. What truly differs between the two is kept
//! behind the [`Conn`] capabilities: the feed's write lock (PostgreSQL's advisory lock,
//! nothing on SQLite's single writer), and whether writes are serial (SQLite: nothing can
//! change between two statements of one write, so a row read before a lock needs no second
//! read after it).
//!
//! SQLite's connections are synchronous: its [`Conn`] answers with futures that are ready at
//! once, and [`run_now`] polls an operation to its end on the calling thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use async_trait::async_trait;
use latchkey_core::StoreError;
use latchkey_core::dpop::Thumbprint;
use latchkey_core::ids::{ClientId, RedirectUri, Scope, SessionId, UserId};

/// A boxed, sendable future: what [`Conn`] methods and operations return.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an operation returns.
pub(crate) type OpFuture<'a, T> = BoxFuture<'a, Result<T, DbError>>;

/// A failure inside an operation. The driver's own error is kept, so that its backend can
/// classify it (a conflict, an outage, a lost race worth retrying).
#[derive(Debug)]
pub(crate) enum DbError {
    /// From rusqlite.
    Sqlite(rusqlite::Error),
    /// From sqlx.
    Pg(sqlx::Error),
    /// A stored value this version cannot read. Always an error, never a silent default:
    /// a default could turn a corrupt row into an empty role list or a public client.
    Corrupt(String),
    /// A programming error in the store (a statement given the wrong number of parameters,
    /// an operation on a SQLite connection that waited): never the data's fault.
    Internal(String),
    /// An operation's decision (a `FnOnce`) was asked for again: a PostgreSQL transaction
    /// retried after its decision ran. Nothing of it was committed.
    DecidedTwice,
}

impl DbError {
    /// A corrupt value of `column`.
    pub(crate) fn corrupt(column: &str, why: impl std::fmt::Display) -> Self {
        Self::Corrupt(format!("{column}: {why}"))
    }
}

/// One SQL text, written once with PostgreSQL's `$1` placeholders (and `FOR UPDATE` where a
/// transaction locks a row). SQLite's form, with `?1` and without the row locks its single
/// writer does not need, is derived here and cached.
pub(crate) struct Sql {
    text: &'static str,
    sqlite: OnceLock<String>,
}

impl Sql {
    /// A statement.
    pub(crate) const fn new(text: &'static str) -> Self {
        Self { text, sqlite: OnceLock::new() }
    }

    /// As PostgreSQL takes it.
    pub(crate) fn postgres(&self) -> &'static str {
        self.text
    }

    /// As SQLite takes it.
    pub(crate) fn sqlite(&self) -> &str {
        self.sqlite.get_or_init(|| {
            self.text.replace(" FOR UPDATE SKIP LOCKED", "").replace(" FOR UPDATE", "").replace('$', "?")
        })
    }
}

/// A bound parameter. Timestamps are `Int` (Unix seconds), hashes and sealed values `Blob`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Param<'a> {
    /// `INTEGER` / `BIGINT`.
    Int(i64),
    /// A nullable one.
    OptInt(Option<i64>),
    /// `TEXT`.
    Text(&'a str),
    /// A nullable one.
    OptText(Option<&'a str>),
    /// `BLOB` / `BYTEA`.
    Blob(&'a [u8]),
    /// A nullable one.
    OptBlob(Option<&'a [u8]>),
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}
impl From<Option<i64>> for Param<'_> {
    fn from(v: Option<i64>) -> Self {
        Self::OptInt(v)
    }
}
impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Self::Text(v)
    }
}
impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Self {
        Self::Text(v)
    }
}
impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Self::OptText(v)
    }
}
impl<'a> From<&'a Option<String>> for Param<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Self::OptText(v.as_deref())
    }
}
impl<'a> From<&'a [u8]> for Param<'a> {
    fn from(v: &'a [u8]) -> Self {
        Self::Blob(v)
    }
}
impl<'a> From<&'a Vec<u8>> for Param<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Self::Blob(v)
    }
}
impl<'a, const N: usize> From<&'a [u8; N]> for Param<'a> {
    fn from(v: &'a [u8; N]) -> Self {
        Self::Blob(v)
    }
}
impl<'a> From<Option<&'a [u8]>> for Param<'a> {
    fn from(v: Option<&'a [u8]>) -> Self {
        Self::OptBlob(v)
    }
}

/// `TEXT` parameters for the port's id newtypes (`&UserId`, `&Option<SessionId>`,
/// `Option<&ClientId>`, …): they are stored as their text.
macro_rules! text_params {
    ($($id:ty),*) => {$(
        impl<'a> From<&'a $id> for Param<'a> {
            fn from(v: &'a $id) -> Self {
                Self::Text(v.as_str())
            }
        }
        impl<'a> From<Option<&'a $id>> for Param<'a> {
            fn from(v: Option<&'a $id>) -> Self {
                Self::OptText(v.map(<$id>::as_str))
            }
        }
        impl<'a> From<&'a Option<$id>> for Param<'a> {
            fn from(v: &'a Option<$id>) -> Self {
                Self::OptText(v.as_ref().map(<$id>::as_str))
            }
        }
    )*};
}
text_params!(UserId, ClientId, SessionId, RedirectUri, Scope, Thumbprint);

/// Expands to `body` once per kind of [`Param`], with `v` bound to its value: how each
/// driver binds a parameter, written once.
macro_rules! with_param {
    ($p:expr, |$v:ident| $body:expr) => {
        match $p {
            $crate::db::Param::Int($v) => $body,
            $crate::db::Param::OptInt($v) => $body,
            $crate::db::Param::Text($v) => $body,
            $crate::db::Param::OptText($v) => $body,
            $crate::db::Param::Blob($v) => $body,
            $crate::db::Param::OptBlob($v) => $body,
        }
    };
}
pub(crate) use with_param;

/// The parameters of one statement, as a [`Conn`] takes them.
pub(crate) type Params<'a> = &'a [Param<'a>];

/// The parameters of one statement: `params![a, b]` is `&[Param::from(a), Param::from(b)]`.
macro_rules! params {
    ($($p:expr),* $(,)?) => {
        &[$($crate::db::Param::from($p)),*]
    };
}
pub(crate) use params;

/// One result row of either driver, read by column position (by name, every read scans
/// the column names, which showed in profiles of the hot path).
pub(crate) trait Row {
    /// A non-null integer.
    fn int(&self, i: usize) -> Result<i64, DbError>;
    /// A nullable integer.
    fn opt_int(&self, i: usize) -> Result<Option<i64>, DbError>;
    /// A non-null text.
    fn text(&self, i: usize) -> Result<String, DbError>;
    /// A nullable text.
    fn opt_text(&self, i: usize) -> Result<Option<String>, DbError>;
    /// A non-null blob.
    fn blob(&self, i: usize) -> Result<Vec<u8>, DbError>;
    /// A nullable blob.
    fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>, DbError>;
    /// A boolean expression's value (SQLite answers an integer, PostgreSQL a boolean).
    fn flag(&self, i: usize) -> Result<bool, DbError>;
}

/// Implements [`Row`] for a driver's row type, given how it reads one column:
/// `impl_row!(RowType, |row, i| row.get(i).map_err(DbError::Sqlite))`.
macro_rules! impl_row {
    ($row:ty, |$r:ident, $i:ident| $get:expr) => {
        impl $crate::db::Row for $row {
            fn int(&self, $i: usize) -> Result<i64, $crate::db::DbError> {
                let $r = self;
                $get
            }
            fn opt_int(&self, $i: usize) -> Result<Option<i64>, $crate::db::DbError> {
                let $r = self;
                $get
            }
            fn text(&self, $i: usize) -> Result<String, $crate::db::DbError> {
                let $r = self;
                $get
            }
            fn opt_text(&self, $i: usize) -> Result<Option<String>, $crate::db::DbError> {
                let $r = self;
                $get
            }
            fn blob(&self, $i: usize) -> Result<Vec<u8>, $crate::db::DbError> {
                let $r = self;
                $get
            }
            fn opt_blob(&self, $i: usize) -> Result<Option<Vec<u8>>, $crate::db::DbError> {
                let $r = self;
                $get
            }
            fn flag(&self, $i: usize) -> Result<bool, $crate::db::DbError> {
                let $r = self;
                $get
            }
        }
    };
}
pub(crate) use impl_row;

/// Called with each result row, in order.
pub(crate) type EachRow<'a> = &'a mut (dyn FnMut(&dyn Row) -> Result<(), DbError> + Send);

/// A connection (or a transaction on one) of either backend.
pub(crate) trait Conn: Send {
    /// Runs a statement; returns how many rows it changed.
    fn execute<'a>(&'a mut self, sql: &'static Sql, params: Params<'a>) -> OpFuture<'a, u64>;
    /// Runs a query, calling `each` with every row.
    fn query<'a>(&'a mut self, sql: &'static Sql, params: Params<'a>, each: EachRow<'a>) -> OpFuture<'a, ()>;
    /// Takes the feed's write lock until the transaction ends (PostgreSQL: see its module
    /// doc; SQLite's single writer needs none).
    fn lock_feed(&mut self) -> OpFuture<'_, ()>;
    /// Whether nothing else can write between two statements of one write (SQLite's single
    /// writer), so that a row read before a row lock need not be read again after it.
    fn are_writes_serial(&self) -> bool;
    /// Runs a script of several statements without parameters (a migration).
    fn run_script(&mut self, script: &'static str) -> OpFuture<'_, ()>;
}

/// The first row a query returns, read with `read`.
pub(crate) async fn query_opt<T: Send>(
    c: &mut dyn Conn,
    sql: &'static Sql,
    params: &[Param<'_>],
    read: fn(&dyn Row) -> Result<T, DbError>,
) -> Result<Option<T>, DbError> {
    let mut out = None;
    c.query(sql, params, &mut |row| {
        if out.is_none() {
            out = Some(read(row)?);
        }
        Ok(())
    })
    .await?;
    Ok(out)
}

/// The first row a query returns; a query that returns none is a corrupt store.
pub(crate) async fn query_one<T: Send>(
    c: &mut dyn Conn,
    sql: &'static Sql,
    params: &[Param<'_>],
    read: fn(&dyn Row) -> Result<T, DbError>,
) -> Result<T, DbError> {
    query_opt(c, sql, params, read)
        .await?
        .ok_or_else(|| DbError::Corrupt("a statement returned no row".into()))
}

/// Every row a query returns, read with `read`.
pub(crate) async fn query_all<T: Send>(
    c: &mut dyn Conn,
    sql: &'static Sql,
    params: &[Param<'_>],
    read: fn(&dyn Row) -> Result<T, DbError>,
) -> Result<Vec<T>, DbError> {
    let mut out = Vec::new();
    c.query(sql, params, &mut |row| {
        out.push(read(row)?);
        Ok(())
    })
    .await?;
    Ok(out)
}

/// Reads the first column as an id (a session id, say).
pub(crate) fn first_id<T: From<String>>(row: &dyn Row) -> Result<T, DbError> {
    row.text(0).map(T::from)
}

/// Reads the first column as an integer.
pub(crate) fn first_int(row: &dyn Row) -> Result<i64, DbError> {
    row.int(0)
}

/// An operation: a transaction body (or a single statement, or a read) written once,
/// run by the backend on one of its connections. It may run more than once when a
/// PostgreSQL transaction is retried, so it takes its arguments by cloning.
pub(crate) type Op<T> = Box<dyn for<'c> FnMut(&'c mut dyn Conn) -> OpFuture<'c, T> + Send>;

/// Makes an [`Op`] of a body that takes owned arguments: `op(args, body)`.
pub(crate) fn op<A, T, F>(args: A, mut body: F) -> Op<T>
where
    A: Clone + Send + 'static,
    F: for<'c> FnMut(&'c mut dyn Conn, A) -> OpFuture<'c, T> + Send + 'static,
{
    Box::new(move |c| body(c, args.clone()))
}

/// Where an operation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// A point lookup by key: SQLite runs it inline, PostgreSQL on a pooled connection.
    Point,
    /// A read that may scan: SQLite's reader threads, a pooled PostgreSQL connection.
    Scan,
    /// One write statement: SQLite's writer, PostgreSQL autocommit.
    Statement,
    /// Several statements that must be atomic: SQLite's writer (a savepoint of its group
    /// commit), a PostgreSQL transaction retried on deadlock or serialization failure.
    Transaction,
}

/// A database: where operations run, and the little that cannot be written once.
#[async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    /// Runs `op` where `access` says, and maps its failure to the port's error.
    async fn run<T: Send + 'static>(&self, access: Access, op: Op<T>) -> Result<T, StoreError>;
    /// Succeeds when the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// The highest feed seq written so far (SQLite keeps a high-water mark that survives
    /// pruning; PostgreSQL's sequence counts uncommitted seqs, so it takes the maximum).
    async fn last_feed_seq(&self) -> Result<i64, StoreError>;
    /// Where the DPoP proofs seen are kept when not in the database (see `dpop.rs`).
    fn memory_proofs(&self) -> Option<&crate::dpop::MemoryProofs> {
        None
    }
}

/// A store on a backend: implements every port trait of `latchkey_core::store` once, for
/// both backends (see the aggregate modules).
#[derive(Debug, Clone)]
pub struct Db<B>(pub(crate) B);

/// Polls a future that cannot wait (an operation on a SQLite connection) to its end.
pub(crate) fn run_now<T>(mut future: BoxFuture<'_, Result<T, DbError>>) -> Result<T, DbError> {
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(result) => result,
        Poll::Pending => Err(DbError::Internal("an operation on a SQLite connection waited".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_placeholders_and_locks_are_derived() {
        static S: Sql = Sql::new("SELECT a FROM t WHERE b = $1 AND c IS DISTINCT FROM $2 FOR UPDATE");
        assert_eq!(S.sqlite(), "SELECT a FROM t WHERE b = ?1 AND c IS DISTINCT FROM ?2");
        assert_eq!(S.postgres(), "SELECT a FROM t WHERE b = $1 AND c IS DISTINCT FROM $2 FOR UPDATE");
        static CLAIM: Sql = Sql::new(
            "UPDATE t SET a = $1 WHERE id IN (SELECT id FROM t WHERE b = $2 LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING a",
        );
        assert_eq!(
            CLAIM.sqlite(),
            "UPDATE t SET a = ?1 WHERE id IN (SELECT id FROM t WHERE b = ?2 LIMIT ?3) RETURNING a"
        );
    }
}
