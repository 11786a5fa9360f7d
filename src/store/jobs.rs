//! Jobs, their uploads and idempotency keys: insert at submit, claim by a worker, finish, recover
//! after a crash.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::Value;

use super::states::JobStatus;
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

fn job_from_row(r: &Row<'_>) -> rusqlite::Result<Job> {
    let params: String = r.get(4)?;
    let result: Option<String> = r.get(7)?;
    Ok(Job {
        id: r.get(0)?,
        endpoint: r.get(1)?,
        engine: r.get(2)?,
        status: r.get(3)?,
        params: serde_json::from_str(&params).unwrap_or(Value::Null),
        fault: r.get(5)?,
        upload_path: r.get(6)?,
        result: result.and_then(|s| serde_json::from_str(&s).ok()),
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
pub fn insert(conn: &Connection, upload: &NewUpload, job: &NewJob) -> Result<()> {
    let now = now_rfc3339();
    conn.prepare_cached(
        "INSERT INTO uploads (id, path, filename, size, sha256, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        upload.id,
        upload.path,
        upload.filename,
        upload.size,
        upload.sha256,
        now
    ])?;
    if let Some(data) = upload.data.as_deref() {
        conn.prepare_cached("INSERT INTO upload_bytes (upload_id, data) VALUES (?1, ?2)")?
            .execute(params![upload.id, data])?;
    }
    conn.prepare_cached(
        "INSERT INTO jobs (id, endpoint, engine, status, params, fault, upload_id, trace_id,
                           credits_reserved, created_at, estimated_completion)
         VALUES (?1, ?2, ?3, ?11, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
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
    ])?;
    Ok(())
}

/// The bytes of a job's upload while they are still held in the database.
pub fn inline_upload(conn: &Connection, job_id: &str) -> Result<Option<Vec<u8>>> {
    Ok(conn
        .prepare_cached(
            "SELECT b.data FROM jobs j JOIN upload_bytes b ON b.upload_id = j.upload_id
             WHERE j.id = ?1",
        )?
        .query_row([job_id], |r| r.get::<_, Vec<u8>>(0))
        .optional()?)
}

/// Writes an upload's bytes to its path, creating its shard directory if needed, in one call.
pub fn write_upload(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, bytes)
}

/// Forgets a job's inline bytes once they are on disk at the upload's path.
pub fn upload_written(conn: &Connection, job_id: &str) -> Result<()> {
    conn.prepare_cached(
        "DELETE FROM upload_bytes WHERE upload_id = (SELECT upload_id FROM jobs WHERE id = ?1)",
    )?
    .execute([job_id])?;
    Ok(())
}

/// One job by id.
pub fn get(conn: &Connection, id: &str) -> Result<Option<Job>> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs j JOIN uploads u ON u.id = j.upload_id WHERE j.id = ?1"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], job_from_row)
        .optional()?)
}

/// The most recent jobs, newest first (dashboard and CLI listings).
pub fn recent(conn: &Connection, limit: usize) -> Result<Vec<Job>> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs j JOIN uploads u ON u.id = j.upload_id
         ORDER BY j.id DESC LIMIT ?1"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([limit as i64], job_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Claims the oldest queued job: marks it running and returns it.
pub fn claim_next(conn: &Connection) -> Result<Option<Job>> {
    let id: Option<String> = conn
        .query_row(
            "SELECT id FROM jobs WHERE status = ?1 ORDER BY id LIMIT 1",
            [JobStatus::Queued],
            |r| r.get(0),
        )
        .optional()?;
    let Some(id) = id else { return Ok(None) };
    conn.execute(
        "UPDATE jobs SET status = ?3, started_at = ?2, runs = runs + 1 WHERE id = ?1",
        params![id, now_rfc3339(), JobStatus::Running],
    )?;
    get(conn, &id)
}

/// Marks a running job completed with its result.
pub fn complete(conn: &Connection, id: &str, result: &Value, credits_used: i64) -> Result<()> {
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
    conn: &Connection,
    id: &str,
    code: &str,
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
pub fn requeue(conn: &Connection, id: &str) -> Result<()> {
    conn.execute(
        "UPDATE jobs SET status = ?2, started_at = NULL, runs = MAX(runs - 1, 0)
         WHERE id = ?1 AND status = ?3",
        params![id, JobStatus::Queued, JobStatus::Running],
    )?;
    Ok(())
}

/// At start-up: the jobs a crash left `running` that have already been run `max_runs` times
/// (each of those runs was cut off: the input may be what kills the process). The caller fails them.
pub fn interrupted_too_often(conn: &Connection, max_runs: i64) -> Result<Vec<Job>> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs j JOIN uploads u ON u.id = j.upload_id
         WHERE j.status = ?2 AND j.runs >= ?1 ORDER BY j.id"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params![max_runs, JobStatus::Running], job_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// At start-up: every other job a crash left `running` is queued again. Returns how many.
pub fn recover(conn: &Connection) -> Result<usize> {
    Ok(conn.execute(
        "UPDATE jobs SET status = ?1, started_at = NULL WHERE status = ?2",
        [JobStatus::Queued, JobStatus::Running],
    )?)
}

/// How many jobs wait or run (to estimate completion times).
pub fn backlog(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM jobs WHERE status IN (?1, ?2)",
        [JobStatus::Queued, JobStatus::Running],
        |r| r.get(0),
    )?)
}

/// What an idempotency key points at.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    pub request_hash: String,
    pub job_id: String,
    pub created_at: i64,
}

/// Looks up an idempotency key.
pub fn idempotency_get(conn: &Connection, key: &str) -> Result<Option<IdempotencyRecord>> {
    Ok(conn
        .query_row(
            "SELECT request_hash, job_id, created_at FROM idempotency_keys WHERE key = ?1",
            [key],
            |r| {
                Ok(IdempotencyRecord {
                    request_hash: r.get(0)?,
                    job_id: r.get(1)?,
                    created_at: r.get(2)?,
                })
            },
        )
        .optional()?)
}

/// Records (or, after expiry, replaces) an idempotency key.
pub fn idempotency_put(
    conn: &Connection,
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
pub fn stale_uploads(
    conn: &Connection,
    cutoff: &str,
    limit: usize,
) -> Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT u.id, u.path FROM jobs j JOIN uploads u ON u.id = j.upload_id
         WHERE j.finished_at IS NOT NULL AND j.finished_at < ?1 AND u.deleted_at IS NULL
         ORDER BY j.finished_at LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![cutoff, limit as i64], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Records that the janitor deleted these uploads' files (and drops any bytes still inline).
pub fn uploads_deleted(conn: &Connection, upload_ids: &[String]) -> Result<()> {
    let now = now_rfc3339();
    let mut mark = conn.prepare_cached("UPDATE uploads SET deleted_at = ?2 WHERE id = ?1")?;
    let mut bytes = conn.prepare_cached("DELETE FROM upload_bytes WHERE upload_id = ?1")?;
    for id in upload_ids {
        mark.execute(params![id, now])?;
        bytes.execute([id])?;
    }
    Ok(())
}
