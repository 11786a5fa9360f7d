//! Cancel and follow, for jobs and generations alike (soundcheck extensions):
//! - `DELETE /v1/jobs/{job_id}` and `DELETE /v1/generations/{id}` cancel a queued or running item:
//!   it ends `failed` (error code / `errorMessage` `cancelled`), refunded, its webhook sent
//!   (`jobs::cancel`); an item that has already ended answers `409 conflict`.
//! - `GET /v1/jobs/{job_id}/events` and `GET /v1/generations/{id}/events` stream server-sent
//!   events until the item is final: `status` (the whole object, at the start and at each change of
//!   status), `progress` (`{"id", "progress"}` while it runs), then `done` (the final object) and
//!   the stream ends. Not subject to the one-poll-per-second limit; comments keep the connection
//!   alive well inside the server's idle timeout.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::Stream;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::docs::{ErrorEnvelope, GENERATIONS, JOBS};
use super::{GenerationsKey, JobsKey, Path};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult, Code};
use crate::jobs::cancel::{self, Cancel};
use crate::store;
use crate::views::{GenerationBody, JobBody};

/// How often a stream looks at its item (the store read is cheap; progress is in memory).
const FOLLOW_TICK: Duration = Duration::from_millis(200);
/// Smallest progress step worth an event (1 %).
const PROGRESS_STEP: f32 = 0.01;
/// Longest gap between keep-alive comments, whatever the idle timeout.
pub(crate) const KEEP_ALIVE_MAX: Duration = Duration::from_secs(15);
/// How often a stream tries its read again while the fleet's database is unavailable.
const OUTAGE_RETRY: Duration = Duration::from_secs(2);
/// How long a stream stays open through a database outage (keep-alives go on, so the client
/// waits) before it ends without `done`, as it would at the node's shutdown.
const OUTAGE_PATIENCE: Duration = Duration::from_secs(300);

/// One event of an `/events` stream as the stream frames it (what the document describes for
/// `text/event-stream`): its name and its `data` line, which is JSON text. Every event a stream
/// sends is made as one of these.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct StreamEvent {
    /// `status`, `progress` or `done`.
    #[schema(pattern = "^(status|progress|done)$")]
    pub event: String,
    /// JSON: the whole object (`status`, `done`) or `{"id", "progress"}` (`progress`).
    pub data: String,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(jobs_cancel))
        .routes(routes!(jobs_events))
        .routes(routes!(generations_cancel))
        .routes(routes!(generations_events))
}

/// Cancels a queued or running job: it ends `failed` with `error.code = "cancelled"`, its
/// reservation is refunded and `job.failed` is sent. The engine stops between steps.
#[utoipa::path(delete, path = "/v1/jobs/{job_id}", tag = JOBS, security(("bearer" = [])),
    params(("job_id" = String, Path, description = "A `job_…` id")),
    responses(
        (status = 200, description = "Cancelled: the job, now failed with error.code cancelled", body = JobBody),
        (status = 404, description = "not_found", body = ErrorEnvelope),
        (status = 409, description = "conflict: the job has already ended", body = ErrorEnvelope),
    ))]
async fn jobs_cancel(
    State(state): State<AppState>,
    _key: JobsKey,
    Path(job_id): Path<String>,
) -> ApiResult<Json<JobBody>> {
    let id = job_id.clone();
    let outcome = state.store.write(move |tx| cancel::job_tx(tx, &id)).await?;
    match outcome {
        Cancel::Cancelled(job) => {
            stop_run(&state, &job.id);
            tracing::info!(job = %job.id, "job cancelled");
            Ok(Json(JobBody::from_row(&job, None)))
        }
        Cancel::AlreadyFinal(job) => Err(ApiError::new(
            Code::Conflict,
            format!(
                "Job {} has already ended ({}); only queued or running jobs can be cancelled.",
                job.id, job.status
            ),
        )),
        Cancel::NotFound => Err(ApiError::not_found("No job with that id.")),
    }
}

/// Cancels a queued or processing generation: it ends `failed` with `errorMessage` "cancelled",
/// and its webhook (if it gave one) fires.
#[utoipa::path(delete, path = "/v1/generations/{id}", tag = GENERATIONS, security(("api_key" = [])),
    params(("id" = String, Path, description = "A `gen_…` id")),
    responses(
        (status = 200, description = "Cancelled: the generation, now failed", body = GenerationBody),
        (status = 404, description = "not_found", body = ErrorEnvelope),
        (status = 409, description = "conflict: the generation has already ended", body = ErrorEnvelope),
    ))]
async fn generations_cancel(
    State(state): State<AppState>,
    _key: GenerationsKey,
    Path(id): Path<String>,
) -> ApiResult<Json<GenerationBody>> {
    let gen_id = id.clone();
    let outcome = state
        .store
        .write(move |tx| cancel::generation_tx(tx, &gen_id))
        .await?;
    match outcome {
        Cancel::Cancelled(g) => {
            stop_run(&state, &g.id);
            tracing::info!(generation = %g.id, "generation cancelled");
            Ok(Json(GenerationBody::from_row(&g)))
        }
        Cancel::AlreadyFinal(g) => Err(ApiError::new(
            Code::Conflict,
            format!(
                "Generation {} has already ended ({}); only queued or processing generations \
                 can be cancelled.",
                g.id, g.status
            ),
        )),
        Cancel::NotFound => Err(ApiError::not_found("No generation with that id.")),
    }
}

/// After a cancel is stored: stop its run (if one is in progress) and send its webhook now.
fn stop_run(state: &AppState, id: &str) {
    if let Some(stop) = state.stops.lock().unwrap().get(id) {
        stop.cancel();
    }
    state.progress.lock().unwrap().remove(id);
    state.dispatcher.wake();
}

/// Streams a job's changes as server-sent events until it is final.
#[utoipa::path(get, path = "/v1/jobs/{job_id}/events", tag = JOBS, security(("bearer" = [])),
    params(("job_id" = String, Path, description = "A `job_…` id")),
    responses(
        (status = 200, description = "text/event-stream: `status` (the job object) at the start and at each change, `progress` ({id, progress}) while running, then `done` (the final job object); keep-alive comments in between", content_type = "text/event-stream", body = StreamEvent),
        (status = 404, description = "not_found", body = ErrorEnvelope),
    ))]
async fn jobs_events(
    State(state): State<AppState>,
    _key: JobsKey,
    Path(job_id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let first = job_snapshot(&state, &job_id)
        .await?
        .ok_or_else(|| ApiError::not_found("No job with that id."))?;
    let follower = Follower::new(state.clone(), job_id, Item::Job, first);
    Ok(sse(&state, follower))
}

/// Streams a generation's changes as server-sent events until it is final.
#[utoipa::path(get, path = "/v1/generations/{id}/events", tag = GENERATIONS, security(("api_key" = [])),
    params(("id" = String, Path, description = "A `gen_…` id")),
    responses(
        (status = 200, description = "text/event-stream: `status` (the generation object) at the start and at each change, `progress` ({id, progress}) while processing, then `done` (the final object); keep-alive comments in between", content_type = "text/event-stream", body = StreamEvent),
        (status = 404, description = "not_found", body = ErrorEnvelope),
    ))]
async fn generations_events(
    State(state): State<AppState>,
    _key: GenerationsKey,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let first = generation_snapshot(&state, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("No generation with that id."))?;
    let follower = Follower::new(state.clone(), id, Item::Generation, first);
    Ok(sse(&state, follower))
}

/// The response: the follower's events, with keep-alive comments at half the idle timeout (at
/// most [`KEEP_ALIVE_MAX`]) so a quiet stream is never closed as idle.
fn sse(state: &AppState, follower: Follower) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let interval = (state.config.idle_timeout / 2)
        .min(KEEP_ALIVE_MAX)
        .max(Duration::from_millis(500));
    let stream = futures_util::stream::unfold(follower, |mut f| async move {
        f.next().await.map(|event| (Ok(event), f))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(interval))
}

/// Which kind of item a stream follows.
#[derive(Debug, Clone, Copy)]
enum Item {
    Job,
    Generation,
}

/// One look at an item: its status, its progress (if running) and its public object.
struct Snapshot {
    status: String,
    /// The item can change no more (its typed status is final).
    done: bool,
    progress: Option<f32>,
    body: Value,
}

async fn job_snapshot(state: &AppState, id: &str) -> ApiResult<Option<Snapshot>> {
    let key = id.to_string();
    let Some(job) = state.store.read(move |c| store::jobs::get(c, &key)).await? else {
        return Ok(None);
    };
    let live = state.progress.lock().unwrap().get(&job.id).copied();
    let body = JobBody::from_row(&job, live);
    Ok(Some(Snapshot {
        status: job.status.to_string(),
        done: job.status.is_final(),
        progress: (job.status == crate::store::states::JobStatus::Running)
            .then(|| body.progress.unwrap_or(0.0)),
        body: serde_json::to_value(&body).map_err(ApiError::internal)?,
    }))
}

async fn generation_snapshot(state: &AppState, id: &str) -> ApiResult<Option<Snapshot>> {
    let key = id.to_string();
    let Some(g) = state
        .store
        .read(move |c| store::generations::get(c, &key))
        .await?
    else {
        return Ok(None);
    };
    let live = state.progress.lock().unwrap().get(&g.id).copied();
    Ok(Some(Snapshot {
        progress: (g.status == crate::store::states::GenerationStatus::Processing)
            .then(|| live.unwrap_or(0.0)),
        status: g.status.to_string(),
        done: g.status.is_final(),
        body: serde_json::to_value(GenerationBody::from_row(&g)).map_err(ApiError::internal)?,
    }))
}

/// Turns successive snapshots of one item into events.
struct Follower {
    state: AppState,
    id: String,
    item: Item,
    /// Events decided but not yet sent.
    queue: VecDeque<Event>,
    last_status: Option<String>,
    last_progress: Option<f32>,
    /// `done` was queued (or shutdown began): end after the queue.
    finished: bool,
    /// When the database first failed to answer, during an outage.
    unavailable_since: Option<std::time::Instant>,
}

impl Follower {
    fn new(state: AppState, id: String, item: Item, first: Snapshot) -> Follower {
        let mut f = Follower {
            state,
            id,
            item,
            queue: VecDeque::new(),
            last_status: None,
            last_progress: None,
            finished: false,
            unavailable_since: None,
        };
        f.observe(first);
        f
    }

    /// Queues the events a snapshot calls for.
    fn observe(&mut self, snap: Snapshot) {
        if snap.done {
            self.queue.push_back(event("done", &snap.body));
            self.finished = true;
            return;
        }
        if self.last_status.as_deref() != Some(snap.status.as_str()) {
            self.queue.push_back(event("status", &snap.body));
            self.last_status = Some(snap.status);
            self.last_progress = snap.progress;
            return;
        }
        if let Some(p) = snap.progress {
            let moved = self
                .last_progress
                .is_none_or(|last| (p - last).abs() >= PROGRESS_STEP || (p >= 1.0 && last < 1.0));
            if moved {
                let data = ProgressEvent {
                    id: self.id.clone(),
                    // As the object's `progress` reads, the f32's shortest form (widened as is,
                    // 0.1 would read 0.10000000149011612).
                    progress: p.to_string().parse().unwrap_or(f64::from(p)),
                };
                let data = serde_json::to_value(data).unwrap_or_default();
                self.queue.push_back(event("progress", &data));
                self.last_progress = Some(p);
            }
        }
    }

    /// The next event, waiting for a change; `None` once the item is final (or at shutdown).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            if self.finished {
                return None;
            }
            let wait = if self.unavailable_since.is_some() {
                OUTAGE_RETRY
            } else {
                FOLLOW_TICK
            };
            tokio::select! {
                _ = self.state.shutdown.cancelled() => return None,
                _ = tokio::time::sleep(wait) => {}
            }
            let snap = match self.item {
                Item::Job => job_snapshot(&self.state, &self.id).await,
                Item::Generation => generation_snapshot(&self.state, &self.id).await,
            };
            match snap {
                Ok(Some(s)) => {
                    self.unavailable_since = None;
                    self.observe(s)
                }
                // A fleet's database restarting or out of reach: the item still exists, and
                // will end; the stream waits for it (keep-alives go on) rather than ending
                // without `done`, for [`OUTAGE_PATIENCE`].
                Err(e) if e.code == Code::ServiceUnavailable => {
                    let since = *self
                        .unavailable_since
                        .get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() >= OUTAGE_PATIENCE {
                        return None;
                    }
                }
                // Gone (it cannot be deleted today) or unreadable: end the stream; the client
                // can fall back to polling.
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

/// The data of a `progress` event (the client commands read it with the same type).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ProgressEvent {
    pub id: String,
    pub progress: f64,
}

fn event(name: &str, data: &Value) -> Event {
    StreamEvent {
        event: name.to_string(),
        data: data.to_string(),
    }
    .into()
}

impl From<StreamEvent> for Event {
    fn from(e: StreamEvent) -> Event {
        Event::default().event(e.event).data(e.data)
    }
}
