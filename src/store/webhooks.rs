//! The webhook endpoint's configuration, the outbox of events, and every delivery attempt.

use serde::Serialize;

use super::db::{notify, Row, Tx, Wake};
use crate::params;

use super::states::{EventKind, EventState};
use super::{now_rfc3339, Result};

/// The jobs API's webhook endpoint (one per data directory).
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub url: Option<String>,
    #[serde(skip)]
    pub secret: String,
    pub enabled: bool,
    pub consecutive_failures: i64,
    pub disabled_at: Option<String>,
    pub disabled_reason: Option<String>,
    pub updated_at: String,
}

/// Creates the endpoint row with `secret` if none exists yet.
pub fn endpoint_ensure(conn: &dyn Tx, secret: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO webhook_endpoint (id, url, secret, enabled, updated_at)
         VALUES (1, NULL, ?1, 1, ?2) ON CONFLICT (id) DO NOTHING",
        params![secret, now_rfc3339()],
    )?;
    Ok(())
}

/// The endpoint configuration.
pub fn endpoint_get(conn: &dyn Tx) -> Result<Endpoint> {
    conn.query_one(
        "SELECT url, secret, enabled, consecutive_failures, disabled_at, disabled_reason, updated_at
         FROM webhook_endpoint WHERE id = 1",
        params![],
        |r| {
            Ok(Endpoint {
                url: r.get(0)?,
                secret: r.get(1)?,
                enabled: r.get(2)?,
                consecutive_failures: r.get(3)?,
                disabled_at: r.get(4)?,
                disabled_reason: r.get(5)?,
                updated_at: r.get(6)?,
            })
        },
    )
}

/// Sets (or clears) the endpoint URL.
pub fn endpoint_set_url(conn: &dyn Tx, url: Option<&str>) -> Result<()> {
    conn.execute(
        "UPDATE webhook_endpoint SET url = ?1, updated_at = ?2 WHERE id = 1",
        params![url, now_rfc3339()],
    )?;
    Ok(())
}

/// Replaces the signing secret.
pub fn endpoint_set_secret(conn: &dyn Tx, secret: &str) -> Result<()> {
    conn.execute(
        "UPDATE webhook_endpoint SET secret = ?1, updated_at = ?2 WHERE id = 1",
        params![secret, now_rfc3339()],
    )?;
    Ok(())
}

/// Enables the endpoint, resets its failure count and releases every held event for delivery now.
/// Returns how many events were released.
pub fn endpoint_enable(conn: &dyn Tx, now_ms: i64) -> Result<usize> {
    conn.execute(
        "UPDATE webhook_endpoint SET enabled = 1, consecutive_failures = 0, disabled_at = NULL,
                                     disabled_reason = NULL, updated_at = ?1 WHERE id = 1",
        params![now_rfc3339()],
    )?;
    let released = conn.execute(
        "UPDATE webhook_events SET state = ?2, next_attempt_at = ?1 WHERE state = ?3",
        params![now_ms, EventState::Pending, EventState::Held],
    )?;
    if released > 0 {
        notify(conn, Wake::Outbox)?;
    }
    Ok(released)
}

/// Disables the endpoint; pending job events are held until it is enabled again.
pub fn endpoint_disable(conn: &dyn Tx, reason: &str) -> Result<()> {
    conn.execute(
        "UPDATE webhook_endpoint SET enabled = 0, disabled_at = ?1, disabled_reason = ?2,
                                     updated_at = ?1 WHERE id = 1",
        params![now_rfc3339(), reason],
    )?;
    conn.execute(
        "UPDATE webhook_events SET state = ?1, next_attempt_at = NULL
         WHERE state = ?2 AND kind = ?3",
        params![EventState::Held, EventState::Pending, EventKind::Job],
    )?;
    Ok(())
}

/// Sets the count of consecutive failed events.
pub fn endpoint_set_failures(conn: &dyn Tx, n: i64) -> Result<()> {
    conn.execute(
        "UPDATE webhook_endpoint SET consecutive_failures = ?1 WHERE id = 1",
        params![n],
    )?;
    Ok(())
}

/// An outbox event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: String,
    pub kind: EventKind,
    #[serde(rename = "type")]
    pub event_type: String,
    pub subject_id: String,
    pub url: Option<String>,
    #[serde(skip)]
    pub payload: String,
    pub state: EventState,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub created_at: String,
}

const EVENT_COLUMNS: &str =
    "id, kind, type, subject_id, url, payload, state, attempts, next_attempt_at, created_at";

fn event_from_row(r: &Row) -> Result<Event> {
    Ok(Event {
        id: r.get(0)?,
        kind: r.get(1)?,
        event_type: r.get(2)?,
        subject_id: r.get(3)?,
        url: r.get(4)?,
        payload: r.get(5)?,
        state: r.get(6)?,
        attempts: r.get(7)?,
        next_attempt_at: r.get(8)?,
        created_at: r.get(9)?,
    })
}

/// A new outbox event.
pub struct NewEvent<'a> {
    pub id: &'a str,
    pub kind: EventKind,
    pub event_type: &'a str,
    pub subject_id: &'a str,
    pub url: Option<&'a str>,
    pub payload: &'a str,
    /// `Pending` (due at `next_attempt_at`), `Held` or `Skipped`.
    pub state: EventState,
    pub next_attempt_at: Option<i64>,
}

/// Writes an event to the outbox.
pub fn insert_event(conn: &dyn Tx, e: &NewEvent<'_>) -> Result<()> {
    conn.execute(
        "INSERT INTO webhook_events (id, kind, type, subject_id, url, payload, state, next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            e.id,
            e.kind,
            e.event_type,
            e.subject_id,
            e.url,
            e.payload,
            e.state,
            e.next_attempt_at,
            now_rfc3339()
        ],
    )?;
    if e.state == EventState::Pending {
        notify(conn, Wake::Outbox)?;
    }
    Ok(())
}

/// One event by id.
pub fn event_get(conn: &dyn Tx, id: &str) -> Result<Option<Event>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM webhook_events WHERE id = ?1");
    conn.query_opt(&sql, params![id], event_from_row)
}

/// Events of one job or generation, oldest first.
pub fn events_for(conn: &dyn Tx, subject_id: &str) -> Result<Vec<Event>> {
    let sql =
        format!("SELECT {EVENT_COLUMNS} FROM webhook_events WHERE subject_id = ?1 ORDER BY id");
    conn.query_map(&sql, params![subject_id], event_from_row)
}

/// Pending events due at or before `now_ms`, oldest first.
pub fn due_events(conn: &dyn Tx, now_ms: i64, limit: usize) -> Result<Vec<Event>> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM webhook_events
         WHERE state = ?3 AND next_attempt_at <= ?1 ORDER BY next_attempt_at, id LIMIT ?2"
    );
    conn.query_map(
        &sql,
        params![now_ms, limit, EventState::Pending],
        event_from_row,
    )
}

/// When the next pending event falls due, if any.
pub fn next_due_at(conn: &dyn Tx) -> Result<Option<i64>> {
    conn.query_one(
        "SELECT MIN(next_attempt_at) FROM webhook_events WHERE state = ?1",
        params![EventState::Pending],
        |r| r.get(0),
    )
}

/// Takes a due event for one attempt by this node: moves its due time to `hold_until` (past the
/// attempt's timeout) so no other node of a fleet sees it due meanwhile, and returns it. `None`
/// when it is no longer pending and due (another node took it, or it was delivered). If this
/// node dies mid-attempt the event falls due again at `hold_until`: at least once, never twice
/// at the same time.
pub fn take_due(conn: &dyn Tx, id: &str, now_ms: i64, hold_until: i64) -> Result<Option<Event>> {
    let n = conn.execute(
        "UPDATE webhook_events SET next_attempt_at = ?3
         WHERE id = ?1 AND state = ?4 AND next_attempt_at <= ?2",
        params![id, now_ms, hold_until, EventState::Pending],
    )?;
    if n == 0 {
        return Ok(None);
    }
    event_get(conn, id)
}

/// Moves an event to its next state after an attempt.
pub fn event_update(
    conn: &dyn Tx,
    id: &str,
    state: EventState,
    attempts: i64,
    next_attempt_at: Option<i64>,
) -> Result<()> {
    conn.execute(
        "UPDATE webhook_events SET state = ?2, attempts = ?3, next_attempt_at = ?4 WHERE id = ?1",
        params![id, state, attempts, next_attempt_at],
    )?;
    Ok(())
}

// The client commands read it back from the API with the same type.
/// One delivery attempt, as the delivery log shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub subject_id: String,
    pub attempt: i64,
    pub url: String,
    /// Header name → value.
    #[schema(value_type = Object)]
    pub request_headers: serde_json::Value,
    pub request_body: String,
    pub response_status: Option<i64>,
    /// Header name → value; null when no answer came.
    #[schema(value_type = Option<Object>)]
    pub response_headers: Option<serde_json::Value>,
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub succeeded: bool,
    pub manual: bool,
    /// When the next automatic retry is due (RFC 3339), while one is scheduled.
    #[serde(
        serialize_with = "crate::views::ms_as_rfc3339",
        deserialize_with = "crate::views::rfc3339_as_ms",
        default
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<i64>,
    pub created_at: String,
}

/// An attempt's `next_attempt_at` is the event's next automatic retry, read back on the event's
/// newest attempt while the event is still pending (`EventState::Pending`'s word): a retry that has
/// run, a resend that delivered the event, or an endpoint disabled since, leaves every attempt's
/// null; released by a re-enable, the newest shows when it is due. While the endpoint has no URL
/// a job event's retry would be skipped, so none shows; set a URL again and it is back.
const ATTEMPT_COLUMNS: &str = "a.id, a.event_id, e.type, e.subject_id, a.attempt, a.url,
    a.request_headers, a.request_body, a.response_status, a.response_headers, a.response_body,
    a.error, a.duration_ms, a.succeeded, a.manual,
    CASE WHEN e.state = 'pending' AND a.attempt =
              (SELECT MAX(x.attempt) FROM webhook_attempts x WHERE x.event_id = a.event_id)
              AND (e.kind <> 'job'
                   OR (SELECT w.url FROM webhook_endpoint w WHERE w.id = 1) IS NOT NULL)
         THEN e.next_attempt_at END,
    a.created_at";

fn attempt_from_row(r: &Row) -> Result<Attempt> {
    Ok(Attempt {
        id: r.get(0)?,
        event_id: r.get(1)?,
        event_type: r.get(2)?,
        subject_id: r.get(3)?,
        attempt: r.get(4)?,
        url: r.get(5)?,
        request_headers: r.json(6)?,
        request_body: r.get(7)?,
        response_status: r.get(8)?,
        response_headers: r.json_opt(9)?,
        response_body: r.get(10)?,
        error: r.get(11)?,
        duration_ms: r.get(12)?,
        succeeded: r.get(13)?,
        manual: r.get(14)?,
        next_attempt_at: r.get(15)?,
        created_at: r.get(16)?,
    })
}

/// Records one attempt.
pub fn insert_attempt(conn: &dyn Tx, a: &Attempt) -> Result<()> {
    conn.execute(
        "INSERT INTO webhook_attempts (id, event_id, attempt, url, request_headers, request_body,
             response_status, response_headers, response_body, error, duration_ms, succeeded, manual,
             next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        params![
            a.id,
            a.event_id,
            a.attempt,
            a.url,
            a.request_headers.to_string(),
            a.request_body,
            a.response_status,
            a.response_headers.as_ref().map(|h| h.to_string()),
            a.response_body,
            a.error,
            a.duration_ms,
            a.succeeded,
            a.manual,
            a.next_attempt_at,
            a.created_at
        ],
    )?;
    Ok(())
}

/// Which attempts a listing shows.
#[derive(Debug, Clone, Copy)]
pub enum AttemptFilter<'a> {
    /// Every attempt of job events (the jobs API's delivery log).
    JobEvents,
    /// Every attempt of generation webhooks.
    GenerationEvents,
    /// The attempts of one job or generation.
    Subject(&'a str),
}

/// The most recent attempts, newest first.
pub fn recent_attempts(
    conn: &dyn Tx,
    filter: AttemptFilter<'_>,
    limit: usize,
) -> Result<Vec<Attempt>> {
    let (cond, arg) = match filter {
        AttemptFilter::JobEvents => ("e.kind = ?1", "job"),
        AttemptFilter::GenerationEvents => ("e.kind = ?1", "generation"),
        AttemptFilter::Subject(s) => ("e.subject_id = ?1", s),
    };
    let sql = format!(
        "SELECT {ATTEMPT_COLUMNS} FROM webhook_attempts a JOIN webhook_events e ON e.id = a.event_id
         WHERE {cond} ORDER BY a.id DESC LIMIT ?2"
    );
    conn.query_map(&sql, params![arg, limit], attempt_from_row)
}

/// One attempt by id.
pub fn attempt_get(conn: &dyn Tx, id: &str) -> Result<Option<Attempt>> {
    let sql = format!(
        "SELECT {ATTEMPT_COLUMNS} FROM webhook_attempts a JOIN webhook_events e ON e.id = a.event_id
         WHERE a.id = ?1"
    );
    conn.query_opt(&sql, params![id], attempt_from_row)
}

/// The highest attempt number of an event (manual resends continue from it).
pub fn last_attempt_number(conn: &dyn Tx, event_id: &str) -> Result<i64> {
    conn.query_one(
        "SELECT COALESCE(MAX(attempt), 0) FROM webhook_attempts WHERE event_id = ?1",
        params![event_id],
        |r| r.get(0),
    )
}
