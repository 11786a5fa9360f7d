//! Generations: insert at submit, claim by a worker, finish, recover after a crash.

use serde_json::Value;

use super::db::{claim_sql, notify, Row, ToValue, Tx, Wake};
use crate::params;

use super::states::GenerationStatus;
use super::{now_rfc3339, Result};

/// A generation as stored.
#[derive(Debug, Clone)]
pub struct Generation {
    pub id: String,
    pub status: GenerationStatus,
    pub prompt: String,
    pub parameters: Value,
    pub model: String,
    pub webhook: Option<String>,
    pub fault: Option<String>,
    pub audio_url: Option<String>,
    pub duration: Option<f64>,
    pub error_message: Option<String>,
    pub detail: Option<Value>,
    pub trace_id: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    /// Times a worker claimed it (the current run's number while it runs).
    pub runs: i64,
}

const COLUMNS: &str = "id, status, prompt, parameters, model, webhook, fault, audio_url, duration,
    error_message, detail, trace_id, created_at, started_at, completed_at, runs";

fn from_row(r: &Row) -> Result<Generation> {
    Ok(Generation {
        id: r.get(0)?,
        status: r.get(1)?,
        prompt: r.get(2)?,
        parameters: r.json(3)?,
        model: r.get(4)?,
        webhook: r.get(5)?,
        fault: r.get(6)?,
        audio_url: r.get(7)?,
        duration: r.get(8)?,
        error_message: r.get(9)?,
        detail: r.json_opt(10)?,
        trace_id: r.get(11)?,
        created_at: r.get(12)?,
        started_at: r.get(13)?,
        completed_at: r.get(14)?,
        runs: r.get(15)?,
    })
}

/// A generation to insert at submit time.
#[derive(Debug, Clone)]
pub struct NewGeneration {
    pub id: String,
    pub prompt: String,
    pub parameters: Value,
    pub model: String,
    pub webhook: Option<String>,
    pub fault: Option<String>,
    pub trace_id: String,
}

/// Inserts a queued generation and returns it as stored.
pub fn insert(conn: &dyn Tx, g: &NewGeneration) -> Result<Generation> {
    conn.execute(
        "INSERT INTO generations (id, status, prompt, parameters, model, webhook, fault, trace_id, created_at)
         VALUES (?1, ?9, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            g.id,
            g.prompt,
            g.parameters.to_string(),
            g.model,
            g.webhook,
            g.fault,
            g.trace_id,
            now_rfc3339(),
            GenerationStatus::Queued
        ],
    )?;
    notify(conn, Wake::Work)?;
    Ok(get(conn, &g.id)?.expect("row just inserted"))
}

/// One generation by id.
pub fn get(conn: &dyn Tx, id: &str) -> Result<Option<Generation>> {
    let sql = format!("SELECT {COLUMNS} FROM generations WHERE id = ?1");
    conn.query_opt(&sql, params![id], from_row)
}

/// The most recent generations, newest first.
pub fn recent(conn: &dyn Tx, limit: usize) -> Result<Vec<Generation>> {
    let sql = format!("SELECT {COLUMNS} FROM generations ORDER BY id DESC LIMIT ?1");
    conn.query_map(&sql, params![limit], from_row)
}

/// Claims the oldest queued generation (of one of the `models`, when given): marks it
/// processing, leased until `lease_until` (unix ms), and returns it.
pub fn claim_next(
    conn: &dyn Tx,
    lease_until: i64,
    models: Option<&[String]>,
) -> Result<Option<Generation>> {
    let sql = claim_sql(conn.dialect(), "generations", "model", models);
    let queued = GenerationStatus::Queued;
    let mut args: Vec<&dyn ToValue> = vec![&queued];
    args.extend(models.unwrap_or_default().iter().map(|m| m as &dyn ToValue));
    let id: Option<String> = conn.query_opt(&sql, &args, |r| r.get(0))?;
    let Some(id) = id else { return Ok(None) };
    conn.execute(
        "UPDATE generations SET status = ?3, started_at = ?2, runs = runs + 1, lease_until = ?4
         WHERE id = ?1",
        params![id, now_rfc3339(), GenerationStatus::Processing, lease_until],
    )?;
    get(conn, &id)
}

/// Extends the lease of a generation its worker is still running (run number `run`). Returns
/// false when the run is no longer its.
pub fn renew_lease(conn: &dyn Tx, id: &str, run: i64, lease_until: i64) -> Result<bool> {
    let n = conn.execute(
        "UPDATE generations SET lease_until = ?3 WHERE id = ?1 AND runs = ?2 AND status = ?4",
        params![id, run, lease_until, GenerationStatus::Processing],
    )?;
    Ok(n == 1)
}

/// Marks a generation completed; returns it as stored.
pub fn complete(
    conn: &dyn Tx,
    id: &str,
    audio_url: &str,
    duration: f64,
    detail: &Value,
) -> Result<Generation> {
    conn.execute(
        "UPDATE generations SET status = ?6, audio_url = ?2, duration = ?3, detail = ?4,
                                completed_at = ?5
         WHERE id = ?1",
        params![
            id,
            audio_url,
            duration,
            detail.to_string(),
            now_rfc3339(),
            GenerationStatus::Completed
        ],
    )?;
    Ok(get(conn, id)?.expect("generation exists"))
}

/// Marks a generation failed; returns it as stored.
pub fn fail(conn: &dyn Tx, id: &str, message: &str) -> Result<Generation> {
    conn.execute(
        "UPDATE generations SET status = ?4, error_message = ?2, completed_at = ?3 WHERE id = ?1",
        params![id, message, now_rfc3339(), GenerationStatus::Failed],
    )?;
    Ok(get(conn, id)?.expect("generation exists"))
}

/// Puts a generation a worker gave back (shutdown) in the queue again; the interrupted run is not
/// counted towards the poison bound.
pub fn requeue(conn: &dyn Tx, id: &str, run: i64) -> Result<()> {
    conn.execute(
        "UPDATE generations SET status = ?2, started_at = NULL, lease_until = NULL,
                                runs = CASE WHEN runs > 0 THEN runs - 1 ELSE 0 END
         WHERE id = ?1 AND status = ?3 AND runs = ?4",
        params![
            id,
            GenerationStatus::Queued,
            GenerationStatus::Processing,
            run
        ],
    )?;
    Ok(())
}

/// The ids of generations left `processing` by a worker whose lease ran out before `now`, after
/// `max_runs` runs.
pub fn interrupted_too_often(conn: &dyn Tx, max_runs: i64, now: i64) -> Result<Vec<String>> {
    conn.query_map(
        "SELECT id FROM generations WHERE status = ?2 AND runs >= ?1
           AND (lease_until IS NULL OR lease_until < ?3) ORDER BY id",
        params![max_runs, GenerationStatus::Processing, now],
        |r| r.get(0),
    )
}

/// Every other generation whose worker's lease ran out before `now` is queued again. Returns
/// their ids.
pub fn recover(conn: &dyn Tx, now: i64) -> Result<Vec<String>> {
    let ids = conn.query_map(
        "UPDATE generations SET status = ?1, started_at = NULL, lease_until = NULL
         WHERE status = ?2 AND (lease_until IS NULL OR lease_until < ?3)
         RETURNING id",
        params![GenerationStatus::Queued, GenerationStatus::Processing, now],
        |r| r.get(0),
    )?;
    if !ids.is_empty() {
        notify(conn, Wake::Work)?;
    }
    Ok(ids)
}
