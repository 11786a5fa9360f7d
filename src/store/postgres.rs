//! The PostgreSQL backend: the database every node of a fleet shares (API nodes and workers).
//!
//! It speaks through `tokio-postgres` with a `deadpool` connection pool. The store's operations
//! are plain functions over a [`Tx`] (written once for both backends), so a transaction here runs
//! on a blocking-pool thread that drives each statement on the runtime (`Handle::block_on`), the
//! same shape as SQLite's writer thread: the async handlers await one future per transaction.
//!
//! Writes run one at a time across the whole fleet, as SQLite's single writer runs them on one
//! machine: each write transaction (`READ COMMITTED`) first takes one transaction-scoped advisory
//! lock ([`WRITE_LOCK`]), so it sees every write committed before it and none runs beside it. The
//! credit ledger (the balance is the last row's `balance_after`), the idempotency rule, a run's
//! end against a cancel and the webhook failure count rely on exactly that. (`SERIALIZABLE` gives
//! the same guarantee by aborting conflicting transactions instead; every submit touches the
//! ledger, so under load most of them were aborted and retried: 0.11x PostgreSQL's own insert
//! rate, against a queue on one lock.) The few writes that are one atomic statement on rows
//! nobody else writes at the same time — claiming work (`FOR UPDATE SKIP LOCKED`), renewing a
//! lease, taking a webhook attempt, a poll mark — skip the lock ([`Postgres::write_atomic`]), so
//! workers and dispatchers never queue behind submits. A deadlock is retried ([`MAX_RETRIES`]).
//! Reads run in a `REPEATABLE READ READ ONLY` transaction: one consistent snapshot.
//!
//! The schema has its own numbered migrations (`migrations/postgres/`), recorded in
//! `soundcheck_schema`; nodes starting together take an advisory lock so one of them runs them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::pg_tls::PgTls;
use bytes::BytesMut;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::runtime::Handle;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::IsolationLevel;

use futures_util::StreamExt;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use super::db::{numbered_to_dollar, Dialect, Row, ToValue, Tx, Value, Wake, WAKE_CHANNEL};
use super::{Error, Result};

/// Migrations, applied in order; `soundcheck_schema.version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/postgres/001_init.sql"),
    include_str!("migrations/postgres/002_nodes.sql"),
];

/// Connections per process. A transaction holds one for its duration; every statement in it is
/// a round trip, so this bounds how many transactions one node runs at once.
const POOL_SIZE: usize = 16;

/// How many times a write that PostgreSQL aborted as a deadlock or a serialisation failure is run
/// again before the error is returned (each retry waits a random time, up to about 50 ms).
const MAX_RETRIES: u32 = 20;

/// The advisory lock every serialised write takes (any constant no other program uses).
const WRITE_LOCK: i64 = 0x5C_0DEC_3717;

/// The advisory lock key nodes take while migrating (any constant no other program uses).
const MIGRATION_LOCK: i64 = 0x5C_0DEC_4EC4;

/// Creates a new, empty database named `sc_<ulid>` on the server `admin_url` points at (its user
/// must be allowed to create databases) and returns its URL: the tests' and benchmarks' scratch
/// databases, one per server they start.
pub async fn create_scratch_database(admin_url: &str) -> Result<String> {
    let (config, tls) = super::pg_tls::parse(admin_url).map_err(Error::Config)?;
    let (client, conn) = config.connect(tls).await?;
    let driver = tokio::spawn(conn);
    let name = format!("sc_{}", ulid::Ulid::new().to_string().to_lowercase());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    drop(client);
    let _ = driver.await;
    // Same server and credentials, the new database's name as the path.
    let (base, query) = admin_url.split_once('?').unwrap_or((admin_url, ""));
    let after_host = base.find("://").map_or(0, |i| i + 3);
    let path_at = base[after_host..]
        .find('/')
        .map_or(base.len(), |i| after_host + i);
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    Ok(format!("{}/{name}{query}", &base[..path_at]))
}

/// True for the URLs that select this backend.
pub fn is_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// A pool of connections to one database. Cheap to clone.
#[derive(Clone)]
pub struct Postgres {
    pool: Pool,
    /// Where to open the `LISTEN` connection ([`Postgres::listen`]), and with which TLS.
    config: Arc<tokio_postgres::Config>,
    tls: PgTls,
    /// While set, every write fails as a full disk makes it fail ([`Postgres::simulate_disk_full`]).
    disk_full: Arc<AtomicBool>,
}

impl Postgres {
    /// Connects, checks the server answers, and runs pending migrations.
    pub async fn connect(url: &str) -> Result<Postgres> {
        let pg = Postgres::pool(url)?;
        pg.migrate().await?;
        Ok(pg)
    }

    /// Connects to a fleet's existing database without changing its schema (client commands):
    /// a database without soundcheck's tables, or with another schema version, is refused.
    pub async fn connect_existing(url: &str) -> Result<Postgres> {
        // A frozen server accepts the connection and never answers: give up as a read does.
        match tokio::time::timeout(ANSWER_WITHIN, Postgres::open_existing(url)).await {
            Ok(opened) => opened,
            Err(_) => Err(no_answer()),
        }
    }

    async fn open_existing(url: &str) -> Result<Postgres> {
        let pg = Postgres::pool(url)?;
        let client = pg.pool.get().await.map_err(pool_error)?;
        let version: i64 = match client
            .query_one("SELECT version FROM soundcheck_schema", &[])
            .await
        {
            Ok(row) => row.get(0),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                return Err(Error::Config(
                    "this database holds no soundcheck fleet (no soundcheck_schema table): \
                     check --database, or start a node on it once"
                        .into(),
                ))
            }
            Err(e) => return Err(e.into()),
        };
        if version != MIGRATIONS.len() as i64 {
            return Err(Error::Config(format!(
                "the fleet's schema is version {version}, this soundcheck expects {}: use the \
                 fleet's version of soundcheck",
                MIGRATIONS.len()
            )));
        }
        drop(client);
        Ok(pg)
    }

    fn pool(url: &str) -> Result<Postgres> {
        let (config, tls) = super::pg_tls::parse(url).map_err(Error::Config)?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| Error::Pool(e.to_string()))?;
        Ok(Postgres {
            pool,
            config: Arc::new(config),
            tls,
            disk_full: Arc::default(),
        })
    }

    async fn migrate(&self) -> Result<()> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute("SET LOCAL client_min_messages TO warning")
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS soundcheck_schema (version BIGINT NOT NULL);
             INSERT INTO soundcheck_schema (version)
                 SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM soundcheck_schema);",
        )
        .await?;
        let done: i64 = tx
            .query_one("SELECT version FROM soundcheck_schema", &[])
            .await?
            .get(0);
        let done = usize::try_from(done).unwrap_or(0);
        if done > MIGRATIONS.len() {
            return Err(Error::Config(format!(
                "the database's schema is version {done}, newer than this build knows \
                 ({}): upgrade soundcheck",
                MIGRATIONS.len()
            )));
        }
        for sql in &MIGRATIONS[done..] {
            tx.batch_execute(sql).await?;
        }
        tx.execute(
            "UPDATE soundcheck_schema SET version = $1",
            &[&(MIGRATIONS.len() as i64)],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Calls `on` with each wake-up another node sends ([`super::db::notify`]) until `shutdown`,
    /// on a connection of its own that `LISTEN`s; reconnects (every second) when it breaks. The
    /// workers' and the dispatcher's own polling stays as the fallback, so a lost notification
    /// delays work by at most one polling interval.
    pub async fn listen(&self, on: impl Fn(Wake) + Send, shutdown: CancellationToken) {
        loop {
            match self.config.connect(self.tls.clone()).await {
                Ok((client, mut connection)) => {
                    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                    // The connection must be polled for the client's queries to run; its
                    // notifications come out of the same poll.
                    let driver = tokio::spawn(async move {
                        let mut messages =
                            futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                        while let Some(Ok(message)) = messages.next().await {
                            if let AsyncMessage::Notification(n) = message {
                                let _ = tx.send(n.payload().to_string());
                            }
                        }
                    });
                    match client
                        .batch_execute(&format!("LISTEN {WAKE_CHANNEL}"))
                        .await
                    {
                        Ok(()) => loop {
                            tokio::select! {
                                _ = shutdown.cancelled() => {
                                    driver.abort();
                                    return;
                                }
                                payload = rx.recv() => match payload.as_deref() {
                                    Some("work") => on(Wake::Work),
                                    Some("outbox") => on(Wake::Outbox),
                                    Some(_) => {}
                                    None => break,
                                },
                            }
                        },
                        Err(e) => tracing::warn!("LISTEN failed: {e}"),
                    }
                    driver.abort();
                    tracing::warn!("the wake-up connection to PostgreSQL closed; reconnecting");
                }
                Err(e) => tracing::warn!("could not open the wake-up connection: {e}"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Makes every write fail as PostgreSQL fails on a full disk until turned off, for the tests
    /// of what a node does then (SQLite's twin: `Sqlite::simulate_disk_full`).
    pub fn simulate_disk_full(&self, on: bool) {
        self.disk_full.store(on, Ordering::SeqCst);
    }

    fn refuse_if_full(&self) -> Result<()> {
        if self.disk_full.load(Ordering::SeqCst) {
            return Err(Error::Commit(
                "could not extend file: No space left on device (disk full, simulated)".into(),
            ));
        }
        Ok(())
    }

    /// Runs `f` in a transaction holding the fleet's write lock, on a blocking thread.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&dyn Tx) -> Result<T> + Send + 'static,
    {
        self.write_mode(true, f).await
    }

    /// Runs `f`, one atomic statement's worth of work that needs no other write's exclusion (a
    /// claim with `SKIP LOCKED`, a conditional `UPDATE`), without the write lock.
    pub async fn write_atomic<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&dyn Tx) -> Result<T> + Send + 'static,
    {
        self.write_mode(false, f).await
    }

    async fn write_mode<T, F>(&self, serial: bool, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&dyn Tx) -> Result<T> + Send + 'static,
    {
        self.refuse_if_full()?;
        let pool = self.pool.clone();
        let rt = Handle::current();
        let abandoned = Arc::new(AtomicBool::new(false));
        let flag = abandoned.clone();
        let work = tokio::task::spawn_blocking(move || write_on(&rt, &pool, serial, &f, &flag));
        match tokio::time::timeout(ANSWER_WITHIN, work).await {
            Ok(joined) => joined.map_err(|e| Error::Join(e.to_string()))?,
            Err(_) => {
                // The thread stays blocked until the server answers; it then rolls back.
                abandoned.store(true, Ordering::SeqCst);
                Err(no_answer())
            }
        }
    }

    /// [`Postgres::write`] on this thread, which must be allowed to block (not a runtime worker).
    pub fn write_blocking<T>(&self, f: impl Fn(&dyn Tx) -> Result<T>) -> Result<T> {
        self.refuse_if_full()?;
        let rt = Handle::try_current().map_err(|_| {
            Error::Config("a PostgreSQL write needs the async runtime to be running".into())
        })?;
        write_on(&rt, &self.pool, true, &f, &AtomicBool::new(false))
    }

    /// Runs `f` on a read-only snapshot on a blocking thread.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Tx) -> Result<T> + Send + 'static,
    {
        let pool = self.pool.clone();
        let rt = Handle::current();
        let work = tokio::task::spawn_blocking(move || {
            let mut client = rt.block_on(pool.get()).map_err(pool_error)?;
            let tx = rt.block_on(
                client
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start(),
            )?;
            let out = f(&PgTx { tx: &tx, rt: &rt })?;
            rt.block_on(tx.commit())?;
            Ok(out)
        });
        match tokio::time::timeout(ANSWER_WITHIN, work).await {
            Ok(joined) => joined.map_err(|e| Error::Join(e.to_string()))?,
            Err(_) => Err(no_answer()),
        }
    }
}

/// Longest a read or a write waits for the database before its caller gets a transient error (a
/// `503 service_unavailable` for an API client). A stopped server refuses at once, but a frozen
/// one, or one behind a network partition, leaves a query waiting for as long as it lasts: the
/// request hung with it. A fleet's transactions take milliseconds, so this is all margin.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

fn no_answer() -> Error {
    Error::Pool(format!(
        "the database did not answer within {} s",
        ANSWER_WITHIN.as_secs()
    ))
}

/// Runs `f` in a write transaction, again on a conflict. Once `abandoned` is set (the caller
/// stopped waiting and was told the write failed), it does not commit: the transaction is
/// dropped, which rolls it back.
fn write_on<T>(
    rt: &Handle,
    pool: &Pool,
    serial: bool,
    f: &dyn Fn(&dyn Tx) -> Result<T>,
    abandoned: &AtomicBool,
) -> Result<T> {
    let mut retries = 0;
    loop {
        let once = || -> Result<T> {
            let mut client = rt.block_on(pool.get()).map_err(pool_error)?;
            let tx = rt.block_on(
                client
                    .build_transaction()
                    .isolation_level(IsolationLevel::ReadCommitted)
                    .start(),
            )?;
            if serial {
                rt.block_on(tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK]))?;
            }
            // On `Err` (or a panic) the transaction is dropped, which rolls it back.
            let out = f(&PgTx { tx: &tx, rt })?;
            if abandoned.load(Ordering::SeqCst) {
                return Err(no_answer());
            }
            rt.block_on(tx.commit())?;
            Ok(out)
        };
        match once() {
            Err(Error::Postgres(e)) if is_conflict(&e) && retries < MAX_RETRIES => {
                retries += 1;
                let ceiling = 1 + retries.min(10) as u64 * 5;
                let jitter = rand::random::<u64>() % ceiling;
                std::thread::sleep(Duration::from_millis(jitter));
            }
            other => return other,
        }
    }
}

/// A serialisation failure or a deadlock: the transaction did nothing and may simply run again.
fn is_conflict(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// True when the same write may succeed later: the connection broke, the server is starting or
/// shutting down, out of resources (disk, memory, connections), or a conflict outlasted the retries.
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        None => true, // no SQLSTATE: the connection or I/O failed
        Some(c) => {
            let class = &c.code()[..2];
            matches!(class, "08" | "53" | "57" | "40")
        }
    }
}

/// The connection failed or was closed, or the server is shutting down or starting up
/// (class 08, 57P01–57P03): see [`super::Error::is_unreachable`].
pub fn is_unreachable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        None => true,
        Some(c) => c.code().starts_with("08") || matches!(c.code(), "57P01" | "57P02" | "57P03"),
    }
}

/// The error with its cause: the server's own message (`role "x" does not exist`) or the I/O
/// failure (`connection refused`), which tokio-postgres's short text leaves out.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let text = match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    };
    if text.contains("UnknownIssuer") {
        // The chain was checked and no trusted root signed it.
        return format!(
            "{text} (the server's certificate is not signed by a root this node trusts: name its \
             CA with sslrootcert=/path/ca.pem in the URL, or put it in ~/.postgresql/root.crt)"
        );
    }
    text
}

/// True when the server reported a full disk (SQLSTATE 53100).
pub fn is_disk_full(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::DISK_FULL)
}

fn pool_error(e: deadpool_postgres::PoolError) -> Error {
    match e {
        deadpool_postgres::PoolError::Backend(e) => Error::Postgres(e),
        other => Error::Pool(other.to_string()),
    }
}

/// One transaction, driven statement by statement from a blocking thread.
struct PgTx<'a> {
    tx: &'a deadpool_postgres::Transaction<'a>,
    rt: &'a Handle,
}

impl PgTx<'_> {
    /// Prepares `sql` (cached per connection) with its placeholders rewritten and runs `go` on
    /// the statement and the parameters as PostgreSQL takes them.
    fn with_statement<T>(
        &self,
        sql: &str,
        params: &[&dyn ToValue],
        go: impl AsyncFnOnce(
            &tokio_postgres::Statement,
            &[&(dyn ToSql + Sync)],
        ) -> std::result::Result<T, tokio_postgres::Error>,
    ) -> Result<T> {
        let sql = numbered_to_dollar(sql);
        let values: Vec<PgValue> = params.iter().map(|p| PgValue(p.to_value())).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as _).collect();
        Ok(self.rt.block_on(async {
            let stmt = self.tx.prepare_cached(&sql).await?;
            go(&stmt, &refs).await
        })?)
    }
}

impl Tx for PgTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&self, sql: &str, params: &[&dyn ToValue]) -> Result<usize> {
        let n = self.with_statement(sql, params, async |stmt, args| {
            self.tx.execute(stmt, args).await
        })?;
        Ok(n as usize)
    }

    fn query(&self, sql: &str, params: &[&dyn ToValue]) -> Result<Vec<Row>> {
        self.with_statement(sql, params, async |stmt, args| {
            self.tx.query(stmt, args).await
        })?
        .iter()
        .map(row_values)
        .collect()
    }
}

/// A PostgreSQL row as plain values: integers of any width and booleans become `Int`.
fn row_values(row: &tokio_postgres::Row) -> Result<Row> {
    let mut out = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let v = if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(i)?.map(Value::Int)
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *ty == Type::INT2 {
            row.try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *ty == Type::BOOL {
            row.try_get::<_, Option<bool>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *ty == Type::FLOAT8 {
            row.try_get::<_, Option<f64>>(i)?.map(Value::Real)
        } else if *ty == Type::FLOAT4 {
            row.try_get::<_, Option<f32>>(i)?
                .map(|v| Value::Real(v.into()))
        } else if *ty == Type::TEXT
            || *ty == Type::VARCHAR
            || *ty == Type::BPCHAR
            || *ty == Type::NAME
        {
            row.try_get::<_, Option<String>>(i)?.map(Value::Text)
        } else if *ty == Type::BYTEA {
            row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob)
        } else {
            return Err(Error::Type(format!(
                "column {} has type {ty}, which the store does not read",
                column.name()
            )));
        };
        out.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(out))
}

/// A parameter in whatever type PostgreSQL inferred for its placeholder.
#[derive(Debug)]
struct PgValue(Value);

impl ToSql for PgValue {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => {
                if *ty == Type::INT8 {
                    v.to_sql(ty, out)
                } else if *ty == Type::INT4 {
                    i32::try_from(*v)?.to_sql(ty, out)
                } else if *ty == Type::INT2 {
                    i16::try_from(*v)?.to_sql(ty, out)
                } else if *ty == Type::BOOL {
                    (*v != 0).to_sql(ty, out)
                } else if *ty == Type::FLOAT8 {
                    (*v as f64).to_sql(ty, out)
                } else {
                    Err(format!("an integer parameter cannot be sent as {ty}").into())
                }
            }
            Value::Real(v) => {
                if *ty == Type::FLOAT4 {
                    (*v as f32).to_sql(ty, out)
                } else {
                    v.to_sql(ty, out)
                }
            }
            Value::Text(s) => s.as_str().to_sql(ty, out),
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}
