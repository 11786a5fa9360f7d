//! Where everything durable lives: every job, generation, upload, webhook delivery, idempotency
//! key, credit movement and setting. No SQL lives outside this module.
//!
//! Two backends stand behind one [`Store`]: SQLite (`sqlite.rs`, the default: one file in the data
//! directory) and PostgreSQL (`postgres.rs`, for fleets: every node of one deployment points at the
//! same database). The store's operations (`jobs.rs`, `generations.rs`, `credits.rs`, `media.rs`,
//! `settings.rs`, `webhooks.rs`) are written once against [`db::Tx`], a transaction of either
//! backend, with the states of [`states`] as types; callers compose them into one transaction
//! with [`Store::write`] (the submit rule in `jobs/submit.rs`, a run's end in `jobs/worker.rs`).
//!
//! A write is atomic and durable when it returns, and behaves as if it ran alone: on SQLite one
//! writer thread runs them; on PostgreSQL each takes one advisory lock shared by every node of the
//! fleet — what the credit and idempotency rules rely on. A few single-statement writes skip that
//! lock ([`Store::write_atomic`]). Because a write may run more than once (PostgreSQL retries a
//! transaction it aborted as a deadlock), its closure must only touch the transaction.

pub mod credits;
pub mod db;
pub mod generations;
pub mod jobs;
pub mod media;
pub mod nodes;
pub mod pg_tls;
pub mod postgres;
pub mod settings;
pub mod sqlite;
pub mod states;
pub mod webhooks;

use std::path::Path;

pub use db::Tx;
pub use sqlite::open_read_only;

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
    #[error("the write was rolled back: the group's commit failed: {0}")]
    Commit(String),
    /// Its message already carries the driver's cause, so it is not chained again as a source.
    #[error("postgres: {}", postgres::describe(.0))]
    Postgres(tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(String),
    #[error("a stored value has the wrong type: {0}")]
    Type(String),
    #[error("{0}")]
    Config(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Error {
        Error::Postgres(e)
    }
}

impl Error {
    /// True when the same write may succeed later: the disk is full, an I/O error, the database
    /// busy, or a group commit that failed for one of those. A constraint or data error will not.
    pub fn is_transient(&self) -> bool {
        use rusqlite::ErrorCode as C;
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                C::DiskFull
                    | C::SystemIoFailure
                    | C::DatabaseBusy
                    | C::DatabaseLocked
                    | C::CannotOpen
                    | C::OutOfMemory
                    | C::FileLockingProtocolFailed
            ),
            Error::Commit(_) | Error::Join(_) | Error::Pool(_) => true,
            Error::Postgres(e) => postgres::is_transient(e),
            Error::Sqlite(_) | Error::Json(_) | Error::Type(_) | Error::Config(_) => false,
        }
    }

    /// True when the database could not be reached or did not answer: no connection, a dropped
    /// one, a server shutting down, or no answer within the wait. A read would fail the same way
    /// now, unlike a write refused for a full disk.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Error::Pool(_) => true,
            Error::Postgres(e) => postgres::is_unreachable(e),
            _ => false,
        }
    }

    /// True when the write failed because the disk (or its quota) is full.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::DiskFull
            }
            Error::Commit(m) => m.contains("full"),
            Error::Postgres(e) => postgres::is_disk_full(e),
            _ => false,
        }
    }
}

/// The backend a [`Store`] talks to.
#[derive(Clone)]
enum Backend {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

/// Cheap to clone: every clone shares the same connections.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

impl Store {
    /// Opens (creating if needed) a SQLite database file and runs pending migrations.
    pub fn open(path: &Path) -> Result<Store> {
        Ok(Store {
            backend: Backend::Sqlite(sqlite::Sqlite::open(path)?),
        })
    }

    /// Connects to a PostgreSQL database (`postgres://…`) and runs pending migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        Ok(Store {
            backend: Backend::Postgres(postgres::Postgres::connect(url).await?),
        })
    }

    /// A fleet's existing PostgreSQL database, its schema left as it is (for client commands).
    pub async fn connect_existing(url: &str) -> Result<Store> {
        Ok(Store {
            backend: Backend::Postgres(postgres::Postgres::connect_existing(url).await?),
        })
    }

    /// `postgres://…` or `postgresql://…` connects to PostgreSQL; anything else is a SQLite path
    /// (a `sqlite://` prefix is allowed).
    pub async fn open_url(url: &str) -> Result<Store> {
        if postgres::is_url(url) {
            Store::connect(url).await
        } else {
            Store::open(Path::new(url.strip_prefix("sqlite://").unwrap_or(url)))
        }
    }

    /// Which database this store uses.
    pub fn dialect(&self) -> db::Dialect {
        match &self.backend {
            Backend::Sqlite(_) => db::Dialect::Sqlite,
            Backend::Postgres(_) => db::Dialect::Postgres,
        }
    }

    /// Makes every write fail as a full disk makes it fail, until turned off: the tests of what
    /// the server does then (the chaos test fills a real disk).
    pub fn simulate_disk_full(&self, on: bool) {
        match &self.backend {
            Backend::Sqlite(s) => s.simulate_disk_full(on),
            Backend::Postgres(p) => p.simulate_disk_full(on),
        }
    }

    /// Calls `on` with every wake-up other nodes of a fleet send (PostgreSQL `LISTEN`), until
    /// `shutdown`. A SQLite store has no other nodes: it returns at once.
    pub async fn listen(
        &self,
        on: impl Fn(db::Wake) + Send,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        if let Backend::Postgres(p) = &self.backend {
            p.listen(on, shutdown).await;
        }
    }

    /// Runs `f` in one transaction: committed if it returns `Ok`, rolled back if it returns `Err`
    /// or panics. Answers after the commit, so what it wrote is durable when this returns. `f`
    /// may run more than once (PostgreSQL retries a transaction that lost a serialisation
    /// conflict), so it must not have effects outside the transaction.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&dyn Tx) -> Result<T> + Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite(s) => s.write(f).await,
            Backend::Postgres(p) => p.write(f).await,
        }
    }

    /// [`Store::write`] for work that is one atomic statement on rows no other write touches at the
    /// same moment (claiming with `SKIP LOCKED`, a conditional `UPDATE` of one row, a poll mark):
    /// on PostgreSQL it runs without the fleet's write lock, so workers and dispatchers never
    /// queue behind submits. On SQLite it is [`Store::write`].
    pub async fn write_atomic<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&dyn Tx) -> Result<T> + Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite(s) => s.write(f).await,
            Backend::Postgres(p) => p.write_atomic(f).await,
        }
    }

    /// Runs `f` on a consistent snapshot, read only.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Tx) -> Result<T> + Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite(s) => s.read(f).await,
            Backend::Postgres(p) => p.read(f).await,
        }
    }

    /// Synchronous write for code that runs outside the async runtime (tests, offline commands
    /// on a SQLite file). On PostgreSQL it drives the write on the current runtime's blocking
    /// pool, so it must be called from a blocking context.
    pub fn write_blocking<T, F>(&self, f: F) -> Result<T>
    where
        F: Fn(&dyn Tx) -> Result<T>,
    {
        match &self.backend {
            Backend::Sqlite(s) => s.write_blocking(f),
            Backend::Postgres(p) => p.write_blocking(f),
        }
    }
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
    fn urls_pick_the_backend() {
        assert!(postgres::is_url("postgres://u@localhost/db"));
        assert!(postgres::is_url("postgresql:///db?host=/tmp"));
        assert!(!postgres::is_url("/var/lib/soundcheck/soundcheck.sqlite"));
        assert!(!postgres::is_url("sqlite:///tmp/x.sqlite"));
    }
}
