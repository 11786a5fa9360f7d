//! Outbound webhooks. Every webhook is first written to the outbox (`webhook_events`) in the same
//! transaction that finishes its job or generation; the [`dispatch::Dispatcher`] then delivers it,
//! so a crash between the two loses nothing (at-least-once).
//!
//! - jobs API: signed (`sign`), retried on the seed's schedule (`schedule`), endpoint auto-disabled
//!   after 5 events in a row fail for good, held events released on re-enable;
//! - generations API: fire-once to the URL given at submit, `User-Agent: finetuning-webhook/1.0`.

pub mod dispatch;
pub mod guard;
pub mod schedule;
pub mod sign;

use crate::store::Tx;

use crate::store::states::{EventKind, EventState};
use crate::store::{self, webhooks as wh};
use crate::views::{GenerationBody, JobEvent};

/// `User-Agent` of generation webhooks (seed 000).
pub const GENERATION_USER_AGENT: &str = "finetuning-webhook/1.0";

/// `User-Agent` of jobs webhooks (the seed names none; see docs/webhooks.md).
pub const JOB_USER_AGENT: &str = concat!("soundcheck-webhook/", env!("CARGO_PKG_VERSION"));

/// Writes the webhook event for a finished job to the outbox. Where it goes depends on the
/// endpoint now: pending (due now) when enabled, held while disabled, skipped when none is set.
pub fn enqueue_job_event(conn: &dyn Tx, job: &store::jobs::Job) -> store::Result<()> {
    let endpoint = wh::endpoint_get(conn)?;
    let event = JobEvent::for_job(job, chrono::Utc::now().timestamp());
    let payload = serde_json::to_string(&event)?;
    let now = store::now_ms();
    let (state, due) = match (&endpoint.url, endpoint.enabled) {
        (None, _) => (EventState::Skipped, None),
        (Some(_), false) => (EventState::Held, None),
        (Some(_), true) => (EventState::Pending, Some(now)),
    };
    wh::insert_event(
        conn,
        &wh::NewEvent {
            id: &crate::ids::new_id("evt"),
            kind: EventKind::Job,
            event_type: &event.event_type,
            subject_id: &job.id,
            url: None,
            payload: &payload,
            state,
            next_attempt_at: due,
        },
    )
}

/// Writes the fire-once webhook of a finished generation to the outbox, if it asked for one.
pub fn enqueue_generation_event(
    conn: &dyn Tx,
    generation: &store::generations::Generation,
) -> store::Result<()> {
    let Some(url) = &generation.webhook else {
        return Ok(());
    };
    let payload = serde_json::to_string(&GenerationBody::from_row(generation))?;
    wh::insert_event(
        conn,
        &wh::NewEvent {
            id: &crate::ids::new_id("evt"),
            kind: EventKind::Generation,
            event_type: &format!("generation.{}", generation.status),
            subject_id: &generation.id,
            url: Some(url),
            payload: &payload,
            state: EventState::Pending,
            next_attempt_at: Some(store::now_ms()),
        },
    )
}
