//! The SQLite store's threads and connections: opening connections with the right pragmas,
//! the reader threads, the single writer thread with group commit, and the WAL
//! checkpointer. It runs jobs; it knows nothing of Latchkey's tables.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use latchkey_core::StoreError;
use rusqlite::Connection;

use super::db_err;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A set of threads, each owning one connection, taking jobs from one queue.
#[derive(Debug, Clone)]
pub(super) struct Threads {
    jobs: mpsc::Sender<Job>,
}

impl Threads {
    pub(super) fn spawn(
        name: &str,
        count: usize,
        open: &dyn Fn() -> Result<Connection, StoreError>,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..count {
            let mut conn = open()?;
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while taking a job, never while running it.
                        let job = match rx.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(&mut conn),
                            Err(_) => return, // the store was dropped
                        }
                    }
                })
                .map_err(|e| StoreError::Backend(format!("cannot start database thread: {e}")))?;
        }
        Ok(Self { jobs: tx })
    }

    /// Runs `f` on one of the threads and returns its answer.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        self.jobs.send(job).map_err(|_| StoreError::Unavailable("database threads stopped".into()))?;
        rx.await.map_err(|_| StoreError::Unavailable("database thread failed".into()))?
    }
}

/// A write job: runs inside the group's transaction and returns whether it succeeded and
/// how to answer once the group's commit is known.
type WriteJob = Box<dyn FnOnce(&mut Connection) -> (bool, Answer) + Send>;
/// Delivers a write job's result, given the outcome of the group commit.
type Answer = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// The most jobs one group commit takes.
const MAX_GROUP: usize = 128;

/// The single writer thread.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<WriteJob>,
}

impl Writer {
    pub(super) fn spawn(mut conn: Connection) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<WriteJob>();
        std::thread::Builder::new()
            .name("latchkey-db-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    // Let the threads that woke us run first: on a busy core they are the
                    // request handlers, each about to queue another write, so the group
                    // (one commit, one WAL write) grows instead of committing one job at a
                    // time. On an idle core this returns at once. bench A/B (one core for
                    // the server, 64 connections): refresh +18-33%, DPoP refresh +24%,
                    // p99 -25%.
                    std::thread::yield_now();
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(job) => group.push(job),
                            Err(_) => break,
                        }
                    }
                    run_group(&mut conn, group);
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start database thread: {e}")))?;
        Ok(Self { jobs: tx })
    }

    /// Runs `f` in the next group transaction; answers after that transaction committed.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<T, StoreError>>();
        let job: WriteJob = Box::new(move |conn| {
            let result = f(conn);
            let ok = result.is_ok();
            let answer: Answer = Box::new(move |commit| {
                let _ = tx.send(commit.and(result));
            });
            (ok, answer)
        });
        self.jobs.send(job).map_err(|_| StoreError::Unavailable("database writer stopped".into()))?;
        rx.await.map_err(|_| StoreError::Unavailable("database writer failed".into()))?
    }
}

/// Runs a group of write jobs in one transaction, each in a savepoint, then answers them.
fn run_group(conn: &mut Connection, group: Vec<WriteJob>) {
    let exec = |conn: &Connection, sql: &str| {
        conn.prepare_cached(sql).and_then(|mut s| s.execute([])).map(|_| ()).map_err(db_err)
    };
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        // Nothing ran; every job gets the error (typically: another process held the lock
        // past the busy timeout).
        for job in group {
            fail_unrun(job, &e);
        }
        return;
    }
    let mut answers = Vec::with_capacity(group.len());
    for job in group {
        if let Err(e) = exec(conn, "SAVEPOINT job") {
            fail_unrun(job, &e);
            continue;
        }
        let (ok, answer) = job(conn);
        let end = if ok {
            exec(conn, "RELEASE job")
        } else {
            exec(conn, "ROLLBACK TO job").and_then(|()| exec(conn, "RELEASE job"))
        };
        answers.push((answer, end));
    }
    let commit = exec(conn, "COMMIT");
    if commit.is_err() {
        let _ = exec(conn, "ROLLBACK");
    }
    for (answer, end) in answers {
        answer(match (&commit, &end) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(e), _) | (Ok(()), Err(e)) => Err(e.clone()),
        });
    }
}

/// Answers a job that never ran (it still owns its reply channel).
fn fail_unrun(job: WriteJob, e: &StoreError) {
    // The job cannot be run on a connection we do not trust, so it is dropped unanswered;
    // its caller sees the closed channel as `Unavailable`.
    tracing::warn!(error = %e, "database write could not start");
    drop(job);
}

/// How often the checkpointer copies the WAL back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Runs WAL checkpoints on its own connection and thread, so the writer never stops to
/// copy pages and fsync in the middle of a burst (profiles showed the writer's automatic
/// checkpoints as its largest single cost and as latency spikes). Stops when the store is
/// dropped.
pub(super) fn spawn_checkpointer(conn: Connection) -> Result<mpsc::Sender<()>, StoreError> {
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("latchkey-db-checkpoint".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
                }
            }
        })
        .map_err(|e| StoreError::Backend(format!("cannot start checkpoint thread: {e}")))?;
    Ok(stop)
}

/// How a `sqlite://` URL asks for durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Synchronous {
    Normal,
    Full,
}

/// Parses `sqlite://PATH` or `sqlite:PATH`, with Latchkey's own optional
/// `?synchronous=normal|full`.
///
/// `normal` (the default) in WAL mode: a commit survives a crash of the process (kill -9);
/// only an OS crash or power loss can lose the last transactions. `full` also survives those,
/// at about four times the cost per commit (PERF-FACTS). See docs/security.md.
pub(super) fn parse_url(url: &str) -> Result<(PathBuf, Synchronous), StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StoreError::Backend(format!("not a sqlite URL: {url}")))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() {
        return Err(StoreError::Backend("database_url: the sqlite file path is empty".into()));
    }
    let mut synchronous = Synchronous::Normal;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        synchronous = match pair.split_once('=').map(|(k, v)| (k, v.to_ascii_lowercase())) {
            Some(("synchronous", v)) if v == "normal" => Synchronous::Normal,
            Some(("synchronous", v)) if v == "full" => Synchronous::Full,
            _ => {
                return Err(StoreError::Backend(format!(
                    "database_url: unsupported parameter {pair:?} (only synchronous=normal|full)"
                )));
            }
        };
    }
    Ok((PathBuf::from(path), synchronous))
}

pub(super) fn open_connection(
    path: &PathBuf,
    synchronous: Synchronous,
    read_only: bool,
) -> Result<Connection, StoreError> {
    use rusqlite::OpenFlags;
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(db_err)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(db_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    // Query-planner stability: plans never depend on bound values. Without it, the bundled
    // SQLite (built with STAT4) marks statements whose parameters could sway a plan, and
    // re-prepares them on every execution (perf: `sqlite3Reprepare` under `sqlite3_step`,
    // ~4% of a loaded core); there are no statistics here for bound values to matter.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true).map_err(db_err)?;
    let sync = match synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    if !read_only {
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db_err)?;
        // After a checkpoint, a WAL file larger than this is truncated back.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024).map_err(db_err)?;
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON; PRAGMA cache_size = -16000;"
    ))
    .map_err(db_err)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        assert_eq!(parse_url("sqlite://a.db").unwrap(), (PathBuf::from("a.db"), Synchronous::Normal));
        assert_eq!(parse_url("sqlite:a.db").unwrap(), (PathBuf::from("a.db"), Synchronous::Normal));
        assert_eq!(
            parse_url("sqlite:///tmp/x.db?synchronous=FULL").unwrap(),
            (PathBuf::from("/tmp/x.db"), Synchronous::Full)
        );
        assert!(parse_url("sqlite://a.db?synchronous=off").is_err());
        assert!(parse_url("sqlite://a.db?mode=memory").is_err());
        assert!(parse_url("sqlite://").is_err());
        assert!(parse_url("postgres://x").is_err());
    }
}
