//! The one SQLite file that holds every job, generation, upload, webhook delivery, idempotency key
//! and credit movement. No SQL lives outside this module.
//!
//! SQLite runs in WAL mode with `synchronous=NORMAL`: a commit survives a `kill -9` of the process
//! (the WAL is in the OS page cache), though not a power cut. There is one writer connection behind
//! a mutex and a few reader connections; callers reach them through [`Store::write`] and
//! [`Store::read`], which run the closure on a blocking thread so the async runtime never waits on
//! disk.

pub mod credits;
pub mod generations;
pub mod jobs;
pub mod media;
pub mod settings;
pub mod webhooks;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, Transaction};

/// Migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[include_str!("migrations/001_init.sql")];

/// Reader connections; WAL lets them run beside the writer.
const READERS: usize = 4;

/// Why a store call failed. Callers can recover from none of these except by reporting
/// `internal_error`; the variants exist so logs say which layer failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored JSON is invalid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the store's worker thread failed: {0}")]
    Join(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Cheap to clone: every clone shares the same connections.
#[derive(Clone)]
pub struct Store {
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: Arc<AtomicUsize>,
}

impl Store {
    /// Opens (creating if needed) the database file and runs pending migrations.
    pub fn open(path: &Path) -> Result<Store> {
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
        Ok(Store {
            writer: Arc::new(Mutex::new(writer)),
            readers: Arc::new(readers),
            next_reader: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Runs `f` in one write transaction on a blocking thread; commits if it returns `Ok`.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = writer.lock().unwrap_or_else(|p| p.into_inner());
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
        .map_err(|e| Error::Join(e.to_string()))?
    }

    /// Runs `f` on a reader connection. Reads are indexed lookups of microseconds, cheaper than
    /// a hop to the blocking pool, so they run right here when a reader is free; when every
    /// reader is busy the call waits for one on a blocking thread instead of stalling the runtime.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for k in 0..self.readers.len() {
            let i = (start + k) % self.readers.len();
            if let Ok(conn) = self.readers[i].try_lock() {
                return f(&conn);
            }
        }
        let readers = self.readers.clone();
        let i = start % readers.len();
        tokio::task::spawn_blocking(move || {
            let conn = readers[i].lock().unwrap_or_else(|p| p.into_inner());
            f(&conn)
        })
        .await
        .map_err(|e| Error::Join(e.to_string()))?
    }

    /// Synchronous write for start-up and CLI commands that run outside the async runtime.
    pub fn write_blocking<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
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

/// Current time as unix milliseconds, the unit of every scheduling column.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Current time as the RFC 3339 text clients see (`2026-05-15T08:24:11.000Z`).
pub fn now_rfc3339() -> String {
    rfc3339(chrono::Utc::now())
}

/// Formats a time the way the contract shows it: UTC, milliseconds, `Z`.
pub fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_run_once_and_record_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        drop(Store::open(&path).unwrap());
        // Opening again must not re-run migration 1 (it would fail on CREATE TABLE).
        let store = Store::open(&path).unwrap();
        let version: usize = store
            .write_blocking(|tx| Ok(tx.pragma_query_value(None, "user_version", |r| r.get(0))?))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len());
    }
}
