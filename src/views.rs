//! The public JSON shapes of both contracts, field for field and in the seeds' order: the
//! generation body (GET response and webhook payload), the job submit and status bodies, and the
//! jobs webhook event envelope. Handlers and workers both render through these, and the developer
//! tools (`remote`) read the server's answers back into them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::store::generations::Generation;
use crate::store::jobs::Job;
use crate::store::states::{FailCode, GenerationStatus, JobStatus};

/// `parameters` of a generation: everything needed to reproduce it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GenerationParameters {
    pub bpm: u32,
    pub duration: u32,
    pub keyscale: String,
    pub timesignature: u32,
    pub seed: u64,
}

/// `GET /v1/generations/:id`, the `POST` answer and the webhook payload (seed 000).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenerationBody {
    pub id: String,
    pub status: String,
    pub audio_url: Option<String>,
    pub duration: Option<f64>,
    pub prompt: String,
    #[schema(value_type = GenerationParameters)]
    pub parameters: Value,
    pub created_at: String,
    pub completed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

impl GenerationBody {
    pub fn from_row(g: &Generation) -> GenerationBody {
        // Re-serialise through the struct so the keys come out in the seed's order.
        let parameters = serde_json::from_value::<GenerationParameters>(g.parameters.clone())
            .ok()
            .and_then(|p| serde_json::to_value(p).ok())
            .unwrap_or_else(|| g.parameters.clone());
        GenerationBody {
            id: g.id.clone(),
            status: g.status.to_string(),
            audio_url: g.audio_url.clone(),
            duration: g.duration,
            prompt: g.prompt.clone(),
            parameters,
            created_at: g.created_at.clone(),
            completed_at: g.completed_at.clone(),
            error_message: (g.status == GenerationStatus::Failed)
                .then(|| g.error_message.clone().unwrap_or_default()),
        }
    }
}

/// `_meta` of a job submission.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SubmitMeta {
    pub credits_reserved: i64,
    pub credits_remaining: i64,
    pub trace_id: String,
}

/// The `202 Accepted` body of an async endpoint (seed 003).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SubmitBody {
    pub job_id: String,
    pub status: String,
    pub poll_url: String,
    pub estimated_completion: String,
    #[serde(rename = "_meta")]
    pub meta: SubmitMeta,
}

/// `error` of a failed job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobErrorBody {
    pub code: String,
    pub message: String,
}

/// `GET /v1/jobs/{job_id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobBody {
    pub job_id: String,
    pub status: String,
    pub endpoint: String,
    /// 0 while queued, the engine's fraction while running, 1 when completed, null when failed.
    pub progress: Option<f32>,
    /// The endpoint's result (file URLs, `expires_at`, reports) when completed.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    pub error: Option<JobErrorBody>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub estimated_completion: String,
    pub credits_reserved: i64,
    pub credits_used: i64,
    pub trace_id: String,
}

impl JobBody {
    /// Renders a job; `live_progress` is the running engine's last report.
    pub fn from_row(j: &Job, live_progress: Option<f32>) -> JobBody {
        let progress = match j.status {
            JobStatus::Queued => Some(0.0),
            JobStatus::Running => Some(live_progress.unwrap_or(0.0)),
            JobStatus::Completed => Some(1.0),
            JobStatus::Failed => None,
        };
        JobBody {
            job_id: j.id.clone(),
            status: j.status.to_string(),
            endpoint: j.endpoint.clone(),
            progress,
            result: j.result.clone(),
            error: job_error(j),
            created_at: j.created_at.clone(),
            started_at: j.started_at.clone(),
            completed_at: j.finished_at.clone(),
            estimated_completion: j.estimated_completion.clone(),
            credits_reserved: j.credits_reserved,
            credits_used: j.credits_used,
            trace_id: j.trace_id.clone(),
        }
    }
}

fn job_error(j: &Job) -> Option<JobErrorBody> {
    (j.status == JobStatus::Failed).then(|| JobErrorBody {
        code: j
            .error_code
            .clone()
            .unwrap_or_else(|| FailCode::InternalError.to_string()),
        message: j.error_message.clone().unwrap_or_default(),
    })
}

/// `data` of a jobs webhook event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventData {
    pub job_id: String,
    pub endpoint: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobErrorBody>,
    pub credits_used: i64,
    pub trace_id: String,
}

/// The jobs webhook envelope: `{"type", "created", "data"}` (seed 003).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    pub created: i64,
    pub data: EventData,
}

impl JobEvent {
    /// The event for a job that just finished (`completed` or `failed`).
    pub fn for_job(j: &Job, created: i64) -> JobEvent {
        JobEvent {
            event_type: format!("job.{}", j.status),
            created,
            data: EventData {
                job_id: j.id.clone(),
                endpoint: j.endpoint.clone(),
                status: j.status.to_string(),
                result: j.result.clone(),
                error: job_error(j),
                credits_used: j.credits_used,
                trace_id: j.trace_id.clone(),
            },
        }
    }
}

/// Serialises a time stored as epoch milliseconds (the outbox's `next_attempt_at`) the way the
/// API shows every other time: RFC 3339, UTC, milliseconds, `Z`.
pub fn ms_as_rfc3339<S: serde::Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match ms.and_then(chrono::DateTime::from_timestamp_millis) {
        Some(t) => s.serialize_some(&crate::store::rfc3339(t)),
        None => s.serialize_none(),
    }
}

/// Reads back what [`ms_as_rfc3339`] writes (the client commands decode the API's answers).
pub fn rfc3339_as_ms<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let text: Option<String> = serde::Deserialize::deserialize(d)?;
    text.map(|t| {
        chrono::DateTime::parse_from_rfc3339(&t)
            .map(|t| t.timestamp_millis())
            .map_err(|e| serde::de::Error::custom(format!("{t:?}: {e}")))
    })
    .transpose()
}
