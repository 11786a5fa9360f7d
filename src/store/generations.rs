//! Generations: insert at submit, claim by a worker, finish, recover after a crash.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::Value;

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
}

const COLUMNS: &str = "id, status, prompt, parameters, model, webhook, fault, audio_url, duration,
    error_message, detail, trace_id, created_at, started_at, completed_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Generation> {
    let parameters: String = r.get(3)?;
    let detail: Option<String> = r.get(10)?;
    Ok(Generation {
        id: r.get(0)?,
        status: r.get(1)?,
        prompt: r.get(2)?,
        parameters: serde_json::from_str(&parameters).unwrap_or(Value::Null),
        model: r.get(4)?,
        webhook: r.get(5)?,
        fault: r.get(6)?,
        audio_url: r.get(7)?,
        duration: r.get(8)?,
        error_message: r.get(9)?,
        detail: detail.and_then(|s| serde_json::from_str(&s).ok()),
        trace_id: r.get(11)?,
        created_at: r.get(12)?,
        started_at: r.get(13)?,
        completed_at: r.get(14)?,
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
pub fn insert(conn: &Connection, g: &NewGeneration) -> Result<Generation> {
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
    Ok(get(conn, &g.id)?.expect("row just inserted"))
}

/// One generation by id.
pub fn get(conn: &Connection, id: &str) -> Result<Option<Generation>> {
    let sql = format!("SELECT {COLUMNS} FROM generations WHERE id = ?1");
    Ok(conn.query_row(&sql, [id], from_row).optional()?)
}

/// The most recent generations, newest first.
pub fn recent(conn: &Connection, limit: usize) -> Result<Vec<Generation>> {
    let sql = format!("SELECT {COLUMNS} FROM generations ORDER BY id DESC LIMIT ?1");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([limit as i64], from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Claims the oldest queued generation: marks it processing and returns it.
pub fn claim_next(conn: &Connection) -> Result<Option<Generation>> {
    let id: Option<String> = conn
        .query_row(
            "SELECT id FROM generations WHERE status = ?1 ORDER BY id LIMIT 1",
            [GenerationStatus::Queued],
            |r| r.get(0),
        )
        .optional()?;
    let Some(id) = id else { return Ok(None) };
    conn.execute(
        "UPDATE generations SET status = ?3, started_at = ?2, runs = runs + 1
         WHERE id = ?1",
        params![id, now_rfc3339(), GenerationStatus::Processing],
    )?;
    get(conn, &id)
}

/// Marks a generation completed; returns it as stored.
pub fn complete(
    conn: &Connection,
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
pub fn fail(conn: &Connection, id: &str, message: &str) -> Result<Generation> {
    conn.execute(
        "UPDATE generations SET status = ?4, error_message = ?2, completed_at = ?3 WHERE id = ?1",
        params![id, message, now_rfc3339(), GenerationStatus::Failed],
    )?;
    Ok(get(conn, id)?.expect("generation exists"))
}

/// Puts a generation a worker gave back (shutdown) in the queue again; the interrupted run is not
/// counted towards the poison bound.
pub fn requeue(conn: &Connection, id: &str) -> Result<()> {
    conn.execute(
        "UPDATE generations SET status = ?2, started_at = NULL, runs = MAX(runs - 1, 0)
         WHERE id = ?1 AND status = ?3",
        params![id, GenerationStatus::Queued, GenerationStatus::Processing],
    )?;
    Ok(())
}

/// At start-up: the ids of generations a crash left `processing` after `max_runs` runs.
pub fn interrupted_too_often(conn: &Connection, max_runs: i64) -> Result<Vec<String>> {
    let mut stmt =
        conn.prepare("SELECT id FROM generations WHERE status = ?2 AND runs >= ?1 ORDER BY id")?;
    let rows = stmt.query_map(params![max_runs, GenerationStatus::Processing], |r| {
        r.get(0)
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// At start-up: every generation a crash left `processing` is queued again. Returns how many.
pub fn recover(conn: &Connection) -> Result<usize> {
    Ok(conn.execute(
        "UPDATE generations SET status = ?1, started_at = NULL WHERE status = ?2",
        [GenerationStatus::Queued, GenerationStatus::Processing],
    )?)
}
