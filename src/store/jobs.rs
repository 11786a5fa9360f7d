//! Jobs, their uploads and idempotency keys: insert at submit, claim by a worker, finish, recover
//! after a crash.

use serde_json::Value;

use super::db::{claim_sql, notify, Row, ToValue, Tx, Wake};
use crate::params;

use super::states::{FailCode, JobStatus};
use super::{now_rfc3339, Result};

/// A job as stored.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub endpoint: String,
    pub engine: String,
    pub status: JobStatus,
    pub params: Value,
    pub fault: Option<String>,
    pub upload_path: String,
    pub result: Option<Value>,
    /// As stored: written as a [`FailCode`], read as text so that a code this build does not
    /// know (a newer node's, an operator's fix) is shown rather than failing the read.
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub trace_id: String,
    pub credits_reserved: i64,
    pub credits_used: i64,
    pub runs: i64,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub estimated_completion: String,
    /// The upload's bytes are still in the database, not yet at `upload_path`.
    pub upload_inline: bool,
}

const JOB_COLUMNS: &str =
    "j.id, j.endpoint, j.engine, j.status, j.params, j.fault, u.path, j.result,
    j.error_code, j.error_message, j.trace_id, j.credits_reserved, j.credits_used, j.runs,
    j.created_at, j.started_at, j.finished_at, j.estimated_completion,
    EXISTS (SELECT 1 FROM upload_bytes b WHERE b.upload_id = u.id)";

fn job_from_row(r: &Row) -> Result<Job> {
    Ok(Job {
        id: r.get(0)?,
        endpoint: r.get(1)?,
        engine: r.get(2)?,
        status: r.get(3)?,
        params: r.json(4)?,
        fault: r.get(5)?,
        upload_path: r.get(6)?,
        result: r.json_opt(7)?,
        error_code: r.get(8)?,
        error_message: r.get(9)?,
        trace_id: r.get(10)?,
        credits_reserved: r.get(11)?,
        credits_used: r.get(12)?,
        runs: r.get(13)?,
        created_at: r.get(14)?,
        started_at: r.get(15)?,
        finished_at: r.get(16)?,
        estimated_completion: r.get(17)?,
        upload_inline: r.get(18)?,
    })
}

/// An uploaded file: on disk at `path`, or (when small) held in `data` until a worker needs it.
#[derive(Debug, Clone)]
pub struct NewUpload {
    pub id: String,
    pub path: String,
    pub filename: Option<String>,
    pub size: i64,
    pub sha256: String,
    pub data: Option<bytes::Bytes>,
}

/// A job to insert at submit time.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub endpoint: String,
    pub engine: String,
    pub params: Value,
    pub fault: Option<String>,
    pub trace_id: String,
    pub price: i64,
    pub estimated_completion: String,
}

/// Inserts the upload and the queued job.
pub fn insert(conn: &dyn Tx, upload: &NewUpload, job: &NewJob) -> Result<()> {
    let now = now_rfc3339();
    conn.execute(
        "INSERT INTO uploads (id, path, filename, size, sha256, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            upload.id,
            upload.path,
            upload.filename,
            upload.size,
            upload.sha256,
            now
        ],
    )?;
    if let Some(data) = upload.data.as_deref() {
        conn.execute(
            "INSERT INTO upload_bytes (upload_id, data) VALUES (?1, ?2)",
            params![upload.id, data],
        )?;
    }
    conn.execute(
        "INSERT INTO jobs (id, endpoint, engine, status, params, fault, upload_id, trace_id,
                           credits_reserved, created_at, estimated_completion)
         VALUES (?1, ?2, ?3, ?11, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            job.id,
            job.endpoint,
            job.engine,
            job.params.to_string(),
            job.fault,
            upload.id,
            job.trace_id,
            job.price,
            now,
            job.estimated_completion,
            JobStatus::Queued
        ],
    )?;
    notify(conn, Wake::Work)
}

/// The bytes of a job's upload while they are still held in the database.
pub fn inline_upload(conn: &dyn Tx, job_id: &str) -> Result<Option<Vec<u8>>> {
    conn.query_opt(
        "SELECT b.data FROM jobs j JOIN upload_bytes b ON b.upload_id = j.upload_id
         WHERE j.id = ?1",
        params![job_id],
        |r| r.get(0),
    )
}

/// Writes an upload's bytes to its path, creating its shard directory if needed, in one call.
pub fn write_upload(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, bytes)
}

/// Forgets a job's inline bytes once they are on disk at the upload's path.
pub fn upload_written(conn: &dyn Tx, job_id: &str) -> Result<()> {
    conn.execute(
        "DELETE FROM upload_bytes WHERE upload_id = (SELECT upload_id FROM jobs WHERE id = ?1)",
        params![job_id],
    )?;
    Ok(())
}

/// Whether an upload row exists (in any state): a file under `uploads/` without one was left by
/// a crash between receiving it and admitting its job.
pub fn upload_known(conn: &dyn Tx, upload_id: &str) -> Result<bool> {
    Ok(conn
        .query_opt(
            "SELECT 1 FROM uploads WHERE id = ?1",
            params![upload_id],
            |_| Ok(()),
        )?
        .is_some())
}

/// One job by id.
pub fn get(conn: &dyn Tx, id: &str) -> Result<Option<Job>> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs j JOIN uploads u ON u.id = j.upload_id WHERE j.id = ?1"
    );
    conn.query_opt(&sql, params![id], job_from_row)
}

/// Up to `limit` jobs, newest first, older than the job `before` when given (ids sort by
/// creation time), with `status` when given: `GET /v1/jobs`, its pages and its filter.
pub fn list(
    conn: &dyn Tx,
    status: Option<JobStatus>,
    before: Option<&str>,
    limit: usize,
) -> Result<Vec<Job>> {
    // Every id is `job_` and 26 Crockford base-32 characters whose first is 0-7: all sort below
    // this one, in any collation, so "no cursor" needs no second statement.
    const AFTER_EVERY_ID: &str = "job_ZZZZZZZZZZZZZZZZZZZZZZZZZZ";
    let before = before.unwrap_or(AFTER_EVERY_ID);
    match status {
        Some(status) => {
            let sql = format!(
                "SELECT {JOB_COLUMNS} FROM jobs j JOIN uploads u ON u.id = j.upload_id
                 WHERE j.id < ?1 AND j.status = ?2 ORDER BY j.id DESC LIMIT ?3"
            );
            conn.query_map(&sql, params![before, status.as_str(), limit], job_from_row)
        }
        None => {
            let sql = format!(
                "SELECT {JOB_COLUMNS} FROM jobs j JOIN uploads u ON u.id = j.upload_id
                 WHERE j.id < ?1 ORDER BY j.id DESC LIMIT ?2"
            );
            conn.query_map(&sql, params![before, limit], job_from_row)
        }
    }
}

/// Claims the oldest queued job (of one of the `engines`, when given): marks it running, leased
/// to its worker until `lease_until` (unix ms), and returns it.
pub fn claim_next(
    conn: &dyn Tx,
    lease_until: i64,
    engines: Option<&[String]>,
) -> Result<Option<Job>> {
    let sql = claim_sql(conn.dialect(), "jobs", "engine", engines);
    let queued = JobStatus::Queued;
    let mut args: Vec<&dyn ToValue> = vec![&queued];
    args.extend(
        engines
            .unwrap_or_default()
            .iter()
            .map(|e| e as &dyn ToValue),
    );
    let id: Option<String> = conn.query_opt(&sql, &args, |r| r.get(0))?;
    let Some(id) = id else { return Ok(None) };
    conn.execute(
        "UPDATE jobs SET status = ?3, started_at = ?2, runs = runs + 1, lease_until = ?4
         WHERE id = ?1",
        params![id, now_rfc3339(), JobStatus::Running, lease_until],
    )?;
    get(conn, &id)
}

/// Extends the lease of a job its worker is still running (run number `run`, so a worker whose
/// job was claimed again elsewhere extends nothing). Returns false when the run is no longer its.
pub fn renew_lease(conn: &dyn Tx, id: &str, run: i64, lease_until: i64) -> Result<bool> {
    let n = conn.execute(
        "UPDATE jobs SET lease_until = ?3 WHERE id = ?1 AND runs = ?2 AND status = ?4",
        params![id, run, lease_until, JobStatus::Running],
    )?;
    Ok(n == 1)
}

/// Marks a running job completed with its result.
pub fn complete(conn: &dyn Tx, id: &str, result: &Value, credits_used: i64) -> Result<()> {
    conn.execute(
        "UPDATE jobs SET status = ?5, result = ?2, credits_used = ?3, finished_at = ?4
         WHERE id = ?1",
        params![
            id,
            result.to_string(),
            credits_used,
            now_rfc3339(),
            JobStatus::Completed
        ],
    )?;
    Ok(())
}

/// Marks a job failed with the contract's error code.
pub fn fail(
    conn: &dyn Tx,
    id: &str,
    code: FailCode,
    message: &str,
    credits_used: i64,
) -> Result<()> {
    conn.execute(
        "UPDATE jobs SET status = ?6, error_code = ?2, error_message = ?3, credits_used = ?4,
                         finished_at = ?5
         WHERE id = ?1",
        params![
            id,
            code,
            message,
            credits_used,
            now_rfc3339(),
            JobStatus::Failed
        ],
    )?;
    Ok(())
}

/// Puts a job a worker gave back (shutdown) in the queue again; its reservation stays held. The
/// interrupted run is not counted: only runs cut off by a crash count towards the poison bound.
pub fn requeue(conn: &dyn Tx, id: &str, run: i64) -> Result<()> {
    conn.execute(
        "UPDATE jobs SET status = ?2, started_at = NULL, lease_until = NULL,
                         runs = CASE WHEN runs > 0 THEN runs - 1 ELSE 0 END
         WHERE id = ?1 AND status = ?3 AND runs = ?4",
        params![id, JobStatus::Queued, JobStatus::Running, run],
    )?;
    Ok(())
}

/// The jobs left `running` by a worker that stopped renewing its lease before `now` (it crashed,
/// or its machine did) that have already been run `max_runs` times: each of those runs was cut
/// off, and the input may be what kills the worker. The caller fails them.
pub fn interrupted_too_often(conn: &dyn Tx, max_runs: i64, now: i64) -> Result<Vec<Job>> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs j JOIN uploads u ON u.id = j.upload_id
         WHERE j.status = ?2 AND j.runs >= ?1
           AND (j.lease_until IS NULL OR j.lease_until < ?3)
         ORDER BY j.id"
    );
    conn.query_map(
        &sql,
        params![max_runs, JobStatus::Running, now],
        job_from_row,
    )
}

/// Every other job whose worker's lease ran out before `now` is queued again. Returns their ids.
pub fn recover(conn: &dyn Tx, now: i64) -> Result<Vec<String>> {
    let ids = conn.query_map(
        "UPDATE jobs SET status = ?1, started_at = NULL, lease_until = NULL
         WHERE status = ?2 AND (lease_until IS NULL OR lease_until < ?3)
         RETURNING id",
        params![JobStatus::Queued, JobStatus::Running, now],
        |r| r.get(0),
    )?;
    if !ids.is_empty() {
        notify(conn, Wake::Work)?;
    }
    Ok(ids)
}

/// How many jobs wait or run (to estimate completion times).
pub fn backlog(conn: &dyn Tx) -> Result<i64> {
    conn.query_one(
        "SELECT COUNT(*) FROM jobs WHERE status IN (?1, ?2)",
        params![JobStatus::Queued, JobStatus::Running],
        |r| r.get(0),
    )
}

/// Records a poll of an existing job at `now_ms` unless it was polled less than `window_ms`
/// before: `Ok(Some(job))` when allowed, `Err(wait_ms)` when refused, `Ok(None)` when there is no
/// such job (nothing recorded). A fleet's API nodes share this through the database (PostgreSQL;
/// the marks live in `poll_marks`); precision is that of the nodes' clocks.
pub fn poll(
    conn: &dyn Tx,
    job_id: &str,
    now_ms: i64,
    window_ms: i64,
) -> Result<std::result::Result<Option<Job>, i64>> {
    let Some(job) = get(conn, job_id)? else {
        return Ok(Ok(None));
    };
    // A mark need not survive a crash (losing one only relaxes the limit for a second): the
    // commit does not wait for the disk.
    conn.execute("SET LOCAL synchronous_commit TO OFF", params![])?;
    // One statement checks and sets the mark: of two nodes polling at once, one updates the row
    // and the other, waiting on its lock, finds the new mark and updates nothing.
    let taken = conn.execute(
        "INSERT INTO poll_marks (job_id, last_ms) VALUES (?1, ?2)
         ON CONFLICT (job_id) DO UPDATE SET last_ms = excluded.last_ms
         WHERE poll_marks.last_ms <= excluded.last_ms - ?3 OR poll_marks.last_ms > excluded.last_ms",
        params![job_id, now_ms, window_ms],
    )?;
    if taken == 1 {
        return Ok(Ok(Some(job)));
    }
    let last: i64 = conn.query_one(
        "SELECT last_ms FROM poll_marks WHERE job_id = ?1",
        params![job_id],
        |r| r.get(0),
    )?;
    Ok(Err((window_ms - (now_ms - last)).clamp(1, window_ms)))
}

/// Forgets poll marks older than `before_ms` (the janitor; PostgreSQL only).
pub fn forget_polls(conn: &dyn Tx, before_ms: i64) -> Result<usize> {
    conn.execute(
        "DELETE FROM poll_marks WHERE last_ms < ?1",
        params![before_ms],
    )
}

/// What an idempotency key points at.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    pub request_hash: String,
    pub job_id: String,
    pub created_at: i64,
}

/// Looks up an idempotency key.
pub fn idempotency_get(conn: &dyn Tx, key: &str) -> Result<Option<IdempotencyRecord>> {
    conn.query_opt(
        "SELECT request_hash, job_id, created_at FROM idempotency_keys WHERE key = ?1",
        params![key],
        |r| {
            Ok(IdempotencyRecord {
                request_hash: r.get(0)?,
                job_id: r.get(1)?,
                created_at: r.get(2)?,
            })
        },
    )
}

/// Records (or, after expiry, replaces) an idempotency key.
pub fn idempotency_put(
    conn: &dyn Tx,
    key: &str,
    request_hash: &str,
    job_id: &str,
    now_ms: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO idempotency_keys (key, request_hash, job_id, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(key) DO UPDATE SET request_hash = excluded.request_hash,
             job_id = excluded.job_id, created_at = excluded.created_at",
        params![key, request_hash, job_id, now_ms],
    )?;
    Ok(())
}

/// Up to `limit` uploads still on disk whose job finished before `cutoff` (RFC 3339):
/// `(upload_id, path)`, for the janitor.
pub fn stale_uploads(conn: &dyn Tx, cutoff: &str, limit: usize) -> Result<Vec<(String, String)>> {
    conn.query_map(
        "SELECT u.id, u.path FROM jobs j JOIN uploads u ON u.id = j.upload_id
         WHERE j.finished_at IS NOT NULL AND j.finished_at < ?1 AND u.deleted_at IS NULL
         ORDER BY j.finished_at LIMIT ?2",
        params![cutoff, limit],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Records that the janitor deleted these uploads' files (and drops any bytes still inline).
pub fn uploads_deleted(conn: &dyn Tx, upload_ids: &[String]) -> Result<()> {
    let now = now_rfc3339();
    for id in upload_ids {
        conn.execute(
            "UPDATE uploads SET deleted_at = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        conn.execute("DELETE FROM upload_bytes WHERE upload_id = ?1", params![id])?;
    }
    Ok(())
}
