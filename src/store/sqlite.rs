//! The SQLite backend: the one file that holds everything on a laptop or a desktop app.
//!
//! SQLite runs in WAL mode with `synchronous=FULL`: every commit is on disk (fsync of the WAL)
//! before its caller is answered, so an accepted job survives a power cut, not only a `kill -9`.
//! There is one writer connection, a few reader connections and a checkpointing connection;
//! callers reach them through [`Sqlite::write`] and [`Sqlite::read`].
//!
//! Writes go to one writer thread, which commits them in groups: it takes every write waiting in
//! its queue, runs each inside its own savepoint of one transaction (a write that fails rolls back
//! alone), commits once and only then answers each caller. Under load a commit (and its fsync)
//! carries dozens of writes instead of one: that is what makes `synchronous=FULL` affordable.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::oneshot;

use super::db::{Dialect, Row, ToValue, Tx, Value};
use super::{Error, Result};

/// Migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/sqlite/001_init.sql"),
    include_str!("migrations/sqlite/002_inline_uploads.sql"),
    include_str!("migrations/sqlite/003_upload_bytes.sql"),
    include_str!("migrations/sqlite/004_hardening.sql"),
    include_str!("migrations/sqlite/005_leases.sql"),
];

/// Reader connections; WAL lets them run beside the writer.
const READERS: usize = 4;

/// How often the checkpoint thread runs.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Most writes one commit carries; bounds how long the first caller of a group waits.
const MAX_GROUP: usize = 256;

/// Cheap to clone: every clone shares the same connections.
#[derive(Clone)]
pub struct Sqlite {
    /// The writer connection: owned by the writer thread, borrowed by [`Sqlite::write_blocking`].
    writer: Arc<Mutex<Connection>>,
    /// The writer thread's queue; the thread ends when the last `Sqlite` clone is dropped.
    queue: mpsc::Sender<Box<dyn PendingWrite>>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: Arc<AtomicUsize>,
    /// Held only so the checkpoint thread sees the channel close when the last clone is dropped.
    _checkpoints: Arc<mpsc::Sender<()>>,
    /// While set, every group commit fails as SQLite fails on a full disk ([`Sqlite::simulate_disk_full`]).
    disk_full: Arc<AtomicBool>,
}

impl Sqlite {
    /// Opens (creating if needed) the database file and runs pending migrations.
    pub fn open(path: &Path) -> Result<Sqlite> {
        let mut writer = Connection::open(path)?;
        configure(&writer)?;
        migrate(&mut writer)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            readers.push(Mutex::new(conn));
        }
        let writer = Arc::new(Mutex::new(writer));
        let (queue, pending) = mpsc::channel();
        let thread_writer = writer.clone();
        let disk_full = Arc::new(AtomicBool::new(false));
        let thread_full = disk_full.clone();
        std::thread::Builder::new()
            .name("soundcheck-store-writer".into())
            .spawn(move || writer_thread(&thread_writer, &pending, &thread_full))
            .map_err(|e| Error::Join(e.to_string()))?;
        let checkpointer = Connection::open(path)?;
        checkpointer.busy_timeout(std::time::Duration::from_secs(5))?;
        let (checkpoints, stop) = mpsc::channel();
        std::thread::Builder::new()
            .name("soundcheck-store-checkpoint".into())
            .spawn(move || checkpoint_thread(&checkpointer, &stop))
            .map_err(|e| Error::Join(e.to_string()))?;
        Ok(Sqlite {
            writer,
            queue,
            readers: Arc::new(readers),
            next_reader: Arc::new(AtomicUsize::new(0)),
            _checkpoints: Arc::new(checkpoints),
            disk_full,
        })
    }

    /// Makes every queued write fail with SQLite's own "database or disk is full" error until
    /// turned off: the failure a full disk causes, on demand, for the tests of what the server
    /// does then (the chaos test fills a real disk).
    pub fn simulate_disk_full(&self, on: bool) {
        self.disk_full.store(on, Ordering::SeqCst);
    }

    /// Runs `f` atomically on the writer connection: its changes are committed (with whatever
    /// other writes share the commit) if it returns `Ok`, rolled back if it returns `Err` or
    /// panics. Answers after the commit, so what it wrote is durable when this returns.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Tx) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let op: Box<dyn PendingWrite> = Box::new(Write {
            f: Some(f),
            out: None,
            reply,
        });
        self.queue
            .send(op)
            .map_err(|_| Error::Join("the writer thread has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Join("the writer thread dropped a write".into()))?
    }

    /// Runs `f` on a reader connection. Reads are indexed lookups of microseconds, cheaper than
    /// a hop to the blocking pool, so they run right here when a reader is free; when every
    /// reader is busy the call waits for one on a blocking thread instead of stalling the runtime.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Tx) -> Result<T> + Send + 'static,
    {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for k in 0..self.readers.len() {
            let i = (start + k) % self.readers.len();
            if let Ok(conn) = self.readers[i].try_lock() {
                return f(&*conn);
            }
        }
        let readers = self.readers.clone();
        let i = start % readers.len();
        tokio::task::spawn_blocking(move || {
            let conn = readers[i].lock().unwrap_or_else(|p| p.into_inner());
            f(&*conn)
        })
        .await
        .map_err(|e| Error::Join(e.to_string()))?
    }

    /// Synchronous write for start-up and CLI commands that run outside the async runtime: its
    /// own transaction, taken between two of the writer thread's groups.
    pub fn write_blocking<T>(&self, f: impl FnOnce(&dyn Tx) -> Result<T>) -> Result<T> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let conn: &Connection = &tx;
        let out = f(conn)?;
        tx.commit()?;
        Ok(out)
    }
}

/// Opens an existing database read-only, for commands that only look (`keys`, `credits show`,
/// the client commands' keys) and may run beside the server that owns it. Never creates the file.
pub fn open_read_only(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

impl Tx for Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&self, sql: &str, params: &[&dyn ToValue]) -> Result<usize> {
        let values: Vec<Value> = params.iter().map(|p| p.to_value()).collect();
        Ok(self
            .prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(values.iter()))?)
    }

    fn query(&self, sql: &str, params: &[&dyn ToValue]) -> Result<Vec<Row>> {
        let values: Vec<Value> = params.iter().map(|p| p.to_value()).collect();
        let mut stmt = self.prepare_cached(sql)?;
        let columns = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(values.iter()))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut row = Vec::with_capacity(columns);
            for i in 0..columns {
                row.push(match r.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    ValueRef::Real(v) => Value::Real(v),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                });
            }
            out.push(Row(row));
        }
        Ok(out)
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Real(v) => ToSqlOutput::Borrowed(ValueRef::Real(*v)),
            Value::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
            Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

/// A queued write, type-erased so writes of any result type share the queue.
trait PendingWrite: Send {
    /// Runs the write; `true` if it succeeded and its savepoint should be kept.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the group's fate is known (`commit` is the commit's error, if any).
    fn answer(self: Box<Self>, commit: Option<&str>);
}

struct Write<T, F> {
    f: Option<F>,
    out: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> PendingWrite for Write<T, F>
where
    T: Send,
    F: FnOnce(&dyn Tx) -> Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        let out = std::panic::catch_unwind(AssertUnwindSafe(|| f(conn)))
            .unwrap_or_else(|_| Err(Error::Join("a store write panicked".into())));
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }

    fn answer(self: Box<Self>, commit: Option<&str>) {
        let out = match (self.out, commit) {
            (Some(Ok(_)), Some(e)) => Err(Error::Commit(e.to_string())),
            (Some(out), _) => out,
            (None, Some(e)) => Err(Error::Commit(e.to_string())),
            (None, None) => Err(Error::Commit("the write never ran".into())),
        };
        // The caller may have gone away (a dropped request); its write stands regardless.
        let _ = self.reply.send(out);
    }
}

/// The writer thread: a group per wake-up, one savepoint per write, one commit per group.
fn writer_thread(
    writer: &Mutex<Connection>,
    pending: &mpsc::Receiver<Box<dyn PendingWrite>>,
    disk_full: &AtomicBool,
) {
    while let Ok(first) = pending.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match pending.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        let mut conn = writer.lock().unwrap_or_else(|p| p.into_inner());
        let committed = if disk_full.load(Ordering::SeqCst) {
            Err(Error::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                Some("database or disk is full".into()),
            )))
        } else {
            run_group(&mut conn, &mut group)
        };
        drop(conn);
        let error = committed.err().map(|e| e.to_string());
        for op in group {
            op.answer(error.as_deref());
        }
    }
}

/// Copies committed WAL pages into the database file every [`CHECKPOINT_EVERY`], beside the writer
/// (a passive checkpoint never blocks it). The writer still runs SQLite's automatic checkpoint
/// (every 1000 WAL pages): only a checkpoint that finishes between two commits lets the WAL start
/// over instead of growing, and with this thread having copied most pages already, that one is
/// short. Ends when the last `Sqlite` clone is dropped.
fn checkpoint_thread(conn: &Connection, stop: &mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        // A failure (the disk, a busy lock past the timeout) only delays it to the next round;
        // the WAL keeps every commit meanwhile.
        let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
    }
}

fn run_group(conn: &mut Connection, group: &mut [Box<dyn PendingWrite>]) -> Result<()> {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for op in group.iter_mut() {
        let savepoint = tx.savepoint()?;
        if op.run(&*savepoint) {
            savepoint.commit()?;
        }
        // Dropped uncommitted, a savepoint rolls back to where it began.
    }
    tx.commit()?;
    Ok(())
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(64);
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let done: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params;
    use crate::store::{jobs, Store};

    #[test]
    fn migrations_run_once_and_record_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        drop(Store::open(&path).unwrap());
        // Opening again must not re-run migration 1 (it would fail on CREATE TABLE).
        let store = Store::open(&path).unwrap();
        let version: i64 = store
            .write_blocking(|tx| tx.query_one("PRAGMA user_version", params![], |r| r.get(0)))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    /// A version-2 database (inline bytes in `uploads.data`) opened by this build: the bytes move
    /// to `upload_bytes` and every job still reads as inline with the same bytes.
    #[test]
    fn version_2_inline_uploads_survive_the_move() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        {
            let mut conn = Connection::open(&path).unwrap();
            for (i, sql) in MIGRATIONS[..2].iter().enumerate() {
                conn.execute_batch(sql).unwrap();
                conn.pragma_update(None, "user_version", i + 1).unwrap();
            }
            let tx = conn.transaction().unwrap();
            for (upload, data) in [("upl_a", Some(vec![1u8, 2, 3])), ("upl_b", None)] {
                tx.execute(
                    "INSERT INTO uploads (id, path, size, sha256, created_at, data)
                     VALUES (?1, '/x', 3, '', '2026-01-01T00:00:00.000Z', ?2)",
                    rusqlite::params![upload, data],
                )
                .unwrap();
                tx.execute(
                    "INSERT INTO jobs (id, endpoint, engine, status, params, upload_id, trace_id,
                                       credits_reserved, created_at, estimated_completion)
                     VALUES (?1, '/v1/analyze/upload', 'analyze', 'queued', '{}', ?2, 't', 1,
                             '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:15Z')",
                    rusqlite::params![upload.replace("upl", "job"), upload],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        let store = Store::open(&path).unwrap();
        let (a, b, bytes) = store
            .write_blocking(|c| {
                Ok((
                    jobs::get(c, "job_a")?.unwrap(),
                    jobs::get(c, "job_b")?.unwrap(),
                    jobs::inline_upload(c, "job_a")?,
                ))
            })
            .unwrap();
        assert!(a.upload_inline && !b.upload_inline);
        assert_eq!(bytes, Some(vec![1, 2, 3]));
        store
            .write_blocking(|c| jobs::upload_written(c, "job_a"))
            .unwrap();
        let a = store
            .write_blocking(|c| jobs::get(c, "job_a"))
            .unwrap()
            .unwrap();
        assert!(!a.upload_inline, "written bytes are forgotten");
    }

    fn count_settings(store: &Store) -> i64 {
        store
            .write_blocking(|c| {
                c.query_one("SELECT COUNT(*) FROM settings", params![], |r| r.get(0))
            })
            .unwrap()
    }

    /// Writes queued together share one commit, but each stands or falls alone: one that fails
    /// or panics after changing rows leaves nothing behind, and its neighbours are kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grouped_writes_fail_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        store
            .write_blocking(|c| c.execute("INSERT INTO settings VALUES ('taken', 'x')", params![]))
            .unwrap();
        let mut calls = Vec::new();
        for i in 0..300 {
            let store = store.clone();
            calls.push(tokio::spawn(async move {
                store
                    .write(move |c| {
                        c.execute(
                            "INSERT INTO settings (key, value) VALUES (?1, 'x')",
                            params![format!("k{i}")],
                        )?;
                        match i % 3 {
                            0 => Ok(i),
                            1 => Err(Error::Join("refused".into())),
                            _ if i % 10 == 2 => panic!("write {i} panics"),
                            // Violates the primary key: 'taken' exists from the start.
                            _ => {
                                c.execute(
                                    "INSERT INTO settings (key, value) VALUES ('taken', 'y')",
                                    params![],
                                )?;
                                Ok(i)
                            }
                        }
                    })
                    .await
            }));
        }
        let mut ok = 0;
        for (i, call) in calls.into_iter().enumerate() {
            let out = call.await.unwrap();
            assert_eq!(out.is_ok(), i % 3 == 0, "write {i}: {out:?}");
            ok += out.is_ok() as i64;
        }
        assert_eq!(ok, 100);
        assert_eq!(count_settings(&store), 101);
        let kept: i64 = store
            .write(|c| {
                c.query_one(
                    "SELECT COUNT(*) FROM settings
                     WHERE key != 'taken' AND CAST(substr(key, 2) AS INTEGER) % 3 = 0",
                    params![],
                    |r| r.get(0),
                )
            })
            .await
            .unwrap();
        assert_eq!(kept, 100, "only the writes that succeeded left rows");
    }
}
