//! The async jobs API (seed 003): `POST /v1/separate`, `/v1/transcribe`, `/v1/master`,
//! `/v1/analyze/upload` answer `202` with a `job_id`; `GET /v1/jobs/{job_id}` polls it. Bearer auth,
//! `Idempotency-Key`, credits reserved at submit. Also `GET /v1/jobs` (a listing), an extension.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Multipart, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::docs::{ErrorEnvelope, Upload, JOBS};
use super::{fault_header, JobsKey, Path};
use crate::app::AppState;
use crate::engines::analyze::AnalyzeParams;
use crate::engines::master::MasterParams;
use crate::engines::separate::SeparateParams;
use crate::engines::transcribe::TranscribeParams;
use crate::error::{current_trace_id, ApiError, ApiResult, Code};
use crate::jobs::submit;
use crate::jobs::JobKind;
use crate::store::jobs::{self as jobs_store, NewJob, NewUpload};
use crate::store::states::JobStatus;
use crate::views::{JobBody, SubmitBody, SubmitMeta};

/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Uploads up to this size are kept in the database until a worker needs them as a file.
const INLINE_UPLOAD: usize = 1 << 20;
/// Bytes gathered before each write of an upload streaming to disk.
const SPILL_BUFFER: usize = 1 << 20;
/// Longest accepted text field of a multipart submission.
const MAX_FIELD_BYTES: usize = 16 * 1024;
/// Most text fields in one multipart body (every endpoint takes fewer than a dozen).
pub(super) const MAX_FIELDS: usize = 64;

pub fn router() -> OpenApiRouter<AppState> {
    let submits = OpenApiRouter::new()
        .routes(routes!(separate_submit))
        .routes(routes!(transcribe_submit))
        .routes(routes!(master_submit))
        .routes(routes!(analyze_submit))
        // Uploads are size-checked while they stream to disk (--max-upload-mb).
        .layer(DefaultBodyLimit::disable());
    OpenApiRouter::new()
        .merge(submits)
        .routes(routes!(jobs_list))
        .routes(routes!(jobs_get))
}

/// The multipart body of a submit, as axum hands it over (rejections become the envelope).
type MultipartBody = Result<Multipart, axum::extract::multipart::MultipartRejection>;

/// One submit handler per async endpoint, each documented with the same responses: a macro, so the
/// four OpenAPI operations cannot drift apart.
macro_rules! submit_handler {
    ($name:ident, $path:literal, $kind:expr, $form:ident, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = JOBS, security(("bearer" = [])),
            request_body(content = $form, content_type = "multipart/form-data"),
            params(("Idempotency-Key" = Option<String>, Header, description = "Same key and request within 24 h: the same job")),
            responses(
                (status = 202, description = "Accepted", body = SubmitBody),
                (status = 400, description = "invalid_request", body = ErrorEnvelope),
                (status = 402, description = "insufficient_credits", body = ErrorEnvelope),
                (status = 409, description = "idempotency_conflict", body = ErrorEnvelope),
                (status = 413, description = "payload_too_large", body = ErrorEnvelope),
                (status = 422, description = "unsupported_audio or corrupt_audio", body = ErrorEnvelope),
                (status = 501, description = "engine_unavailable", body = ErrorEnvelope),
            ))]
        async fn $name(
            state: State<AppState>,
            key: JobsKey,
            headers: HeaderMap,
            multipart: MultipartBody,
        ) -> ApiResult<axum::response::Response> {
            jobs_submit($kind, state, key, headers, multipart).await
        }
    };
}

// Each submit form is its endpoint's parameter type (the one its engine validates, stores and
// reads) beside the `audio` file. (Named, because the OpenAPI macros take a generic type only as
// a type they can compose themselves.)
type SeparateForm = Upload<SeparateParams>;
type TranscribeForm = Upload<TranscribeParams>;
type MasterForm = Upload<MasterParams>;
pub(super) type AnalyzeForm = Upload<AnalyzeParams>;

submit_handler!(
    separate_submit,
    "/v1/separate",
    JobKind::Separate,
    SeparateForm,
    "Stem separation (10 credits)."
);
submit_handler!(
    transcribe_submit,
    "/v1/transcribe",
    JobKind::Transcribe,
    TranscribeForm,
    "Audio to MIDI (8 credits)."
);
submit_handler!(
    master_submit,
    "/v1/master",
    JobKind::Master,
    MasterForm,
    "Auto-mastering (6 credits)."
);
submit_handler!(
    analyze_submit,
    "/v1/analyze/upload",
    JobKind::Analyze,
    AnalyzeForm,
    "Full analysis (2 credits)."
);

/// Jobs, newest first: the 50 (or `limit`) most recent, or a page of older ones.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub data: Vec<JobBody>,
    /// The `before` that reads the next (older) page; null on the last page.
    #[serde(default)]
    pub next_before: Option<String>,
}

/// `GET /v1/jobs`'s query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    /// How many jobs, newest first (default 50).
    #[serde(default)]
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// Only jobs created before this one (a `job_id`; a page's `next_before`).
    #[serde(default)]
    #[param(pattern = "^job_[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    before: Option<String>,
    /// Only jobs in this state.
    #[serde(default)]
    #[param(inline)]
    status: Option<StatusFilter>,
}

/// A job state to list (`GET /v1/jobs?status=`).
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusFilter {
    Queued,
    Running,
    Completed,
    Failed,
}

impl From<StatusFilter> for JobStatus {
    fn from(s: StatusFilter) -> JobStatus {
        match s {
            StatusFilter::Queued => JobStatus::Queued,
            StatusFilter::Running => JobStatus::Running,
            StatusFilter::Completed => JobStatus::Completed,
            StatusFilter::Failed => JobStatus::Failed,
        }
    }
}

/// Typical run time per endpoint (the seed's table), for `estimated_completion`.
fn typical_secs(kind: JobKind) -> i64 {
    match kind {
        JobKind::Separate => 45,
        JobKind::Transcribe => 60,
        JobKind::Master => 20,
        JobKind::Analyze => 15,
    }
}

/// A submission read off the wire: the audio file on disk and the text fields.
pub(super) struct Submission {
    pub upload: NewUpload,
    pub fields: BTreeMap<String, String>,
}

async fn jobs_submit(
    kind: JobKind,
    State(state): State<AppState>,
    _key: JobsKey,
    headers: HeaderMap,
    multipart: MultipartBody,
) -> ApiResult<axum::response::Response> {
    let engine = state.registry.engine(kind).cloned().ok_or_else(|| {
        ApiError::new(
            Code::EngineUnavailable,
            format!(
                "No engine for {} is installed in this server.",
                kind.endpoint()
            ),
        )
    })?;
    let fault = fault_header(&headers)?;
    let idem_key = idempotency_key(&headers)?;
    check_declared_length(&state, &headers)?;
    let multipart = multipart.map_err(|e| {
        ApiError::invalid(format!(
            "Expected a multipart/form-data body with an `audio` file: {}",
            e.body_text()
        ))
    })?;
    let sub = receive(&state, multipart).await?;
    // Where the upload was received; with object storage, a scratch file put to the bucket below.
    let path = PathBuf::from(&sub.upload.path);
    // Removed if the client hangs up before the end of this handler (kept below when it is the
    // upload's final place).
    let received = crate::media::LocalFile::temporary(path.clone());
    let mut stored: Option<String> = None;
    let outcome = async {
        let input = probe_audio(&sub.upload).await?;
        let params = engine.params(&sub.fields).map_err(ApiError::invalid)?;
        engine
            .check_input(&params, &input)
            .map_err(ApiError::invalid)?;
        let mut upload = sub.upload.clone();
        let location = state
            .media
            .store_upload(&upload.id, &path, upload.data.is_none())
            .await?;
        upload.path = location.clone();
        stored = Some(location);
        let fault = fault.map(|f| f.as_string());
        let hash = request_hash(kind, &params, &sub.upload.sha256, fault.as_deref());
        let now = chrono::Utc::now();
        let job = NewJob {
            id: crate::ids::new_id("job"),
            endpoint: kind.endpoint().to_string(),
            engine: engine.name().to_string(),
            params,
            fault,
            trace_id: current_trace_id(),
            price: kind.price(),
            estimated_completion: (now + chrono::Duration::seconds(typical_secs(kind)))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        state
            .store
            .write(move |tx| submit::admit(tx, &upload, &job, idem_key.as_deref(), &hash))
            .await?
            .map_err(refusal)
    }
    .await;
    // Nothing of a refused or replayed submission is kept; an admitted one's scratch file goes
    // once it is in the bucket.
    let keep = matches!(&outcome, Ok(a) if !a.replayed);
    if let (false, Some(location)) = (keep, &stored) {
        state.media.discard(location).await;
    }
    if keep && stored.as_deref() == Some(&*path.to_string_lossy()) {
        received.keep();
    }
    let admitted = outcome?;
    if !admitted.replayed {
        state.work.notify_one();
    }
    let body = SubmitBody {
        job_id: admitted.job.id.clone(),
        status: admitted.job.status.to_string(),
        poll_url: format!("{}/v1/jobs/{}", state.public_url, admitted.job.id),
        estimated_completion: admitted.job.estimated_completion.clone(),
        meta: SubmitMeta {
            credits_reserved: admitted.job.credits_reserved,
            credits_remaining: admitted.balance,
            trace_id: admitted.job.trace_id.clone(),
        },
    };
    let mut resp = (StatusCode::ACCEPTED, Json(body)).into_response();
    if admitted.replayed {
        resp.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(resp)
}

/// Rejects uploads that are not audio soundcheck can read (`422`), before anything is stored.
/// An upload held in memory is probed right here (headers and one packet of at most 1 MiB).
async fn probe_audio(upload: &NewUpload) -> ApiResult<crate::audio::ProbeInfo> {
    let probed = match &upload.data {
        Some(bytes) => crate::audio::probe_bytes(bytes.clone(), None),
        None => {
            let path = PathBuf::from(&upload.path);
            tokio::task::spawn_blocking(move || crate::audio::probe(&path))
                .await
                .map_err(ApiError::internal)?
        }
    };
    probed.map_err(audio_error)
}

/// Writes an upload still held in memory to its path (for callers that need a file).
pub(super) async fn spill(upload: &mut NewUpload) -> ApiResult<()> {
    let Some(bytes) = upload.data.take() else {
        return Ok(());
    };
    let path = PathBuf::from(&upload.path);
    tokio::task::spawn_blocking(move || jobs_store::write_upload(&path, &bytes))
        .await
        .map_err(ApiError::internal)??;
    Ok(())
}

/// Why the submit rule refused a job, in the envelope.
fn refusal(r: submit::Refusal) -> ApiError {
    match r {
        submit::Refusal::IdempotencyConflict => ApiError::new(
            Code::IdempotencyConflict,
            "This Idempotency-Key was already used with a different request.",
        ),
        submit::Refusal::InsufficientCredits { price, balance } => ApiError::new(
            Code::InsufficientCredits,
            format!("This job costs {price} credits; {balance} remain."),
        ),
    }
}

/// An audio error in the envelope: the file's fault → `422`, ours → `500`.
pub(super) fn audio_error(e: crate::audio::Error) -> ApiError {
    match e {
        e if e.code() == "corrupt_audio" => ApiError::new(Code::CorruptAudio, e.to_string()),
        e if e.is_client_error() => ApiError::new(Code::UnsupportedAudio, e.to_string()),
        e => ApiError::internal(e),
    }
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .map_err(|_| ApiError::invalid("Idempotency-Key must be printable ASCII."))?
        .trim();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(ApiError::invalid(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters."
        )));
    }
    Ok(Some(key.to_string()))
}

/// What makes two submissions "the same request" for an idempotency key.
fn request_hash(kind: JobKind, params: &Value, audio_sha256: &str, fault: Option<&str>) -> String {
    let canonical = json!({
        "endpoint": kind.endpoint(), "params": params, "audio": audio_sha256, "fault": fault,
    });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// Room a multipart body may take beyond its audio file: boundaries, part headers and the text
/// fields (each capped far below this).
const MULTIPART_SLACK: u64 = 1024 * 1024;

/// Refuses an upload whose declared `Content-Length` cannot fit the audio cap, before a byte of
/// it is read: a client that sent `Expect: 100-continue` gets the `413` instead of a `100
/// Continue` and never sends the body.
pub(super) fn check_declared_length(state: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let max = state.config.max_upload_bytes;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max.saturating_add(MULTIPART_SLACK)) {
        return Err(ApiError::new(
            Code::PayloadTooLarge,
            format!("The audio file is larger than {} MB.", max / (1024 * 1024)),
        ));
    }
    Ok(())
}

/// Reads the multipart body: the `audio` file hashed and size-capped — kept in memory when it is
/// under `INLINE_UPLOAD` (it is stored in its database row until a worker needs it), else streamed
/// to `<data>/uploads/` — and the text fields into a map. Nothing is left on disk if it fails.
pub(super) async fn receive(state: &AppState, mut multipart: Multipart) -> ApiResult<Submission> {
    let max = state.config.max_upload_bytes;
    let mut fields = BTreeMap::new();
    let mut upload: Option<NewUpload> = None;
    let result = async {
        while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
            let name = field.name().unwrap_or_default().to_string();
            if name == "audio" {
                if upload.is_some() {
                    return Err(ApiError::invalid("Send exactly one `audio` file."));
                }
                let id = crate::ids::new_id("upl");
                let path = state.media.upload_path(&id);
                let dir = path
                    .parent()
                    .map(std::path::Path::to_path_buf)
                    .unwrap_or_default();
                let filename = field.file_name().map(str::to_string);
                upload = Some(NewUpload {
                    id,
                    path: path.to_string_lossy().into_owned(),
                    filename,
                    size: 0,
                    sha256: String::new(),
                    data: None,
                });
                // Small uploads stay in memory; a large one goes to disk as it streams, once it
                // passes INLINE_UPLOAD.
                let mut buffered: Vec<u8> = Vec::new();
                let mut file: Option<tokio::io::BufWriter<tokio::fs::File>> = None;
                let mut hasher = Sha256::new();
                let mut size: u64 = 0;
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    size += chunk.len() as u64;
                    if size > max {
                        return Err(ApiError::new(
                            Code::PayloadTooLarge,
                            format!("The audio file is larger than {} MB.", max / (1024 * 1024)),
                        ));
                    }
                    hasher.update(&chunk);
                    match file.as_mut() {
                        Some(f) => f.write_all(&chunk).await?,
                        None if buffered.len() + chunk.len() <= INLINE_UPLOAD => {
                            buffered.extend_from_slice(&chunk)
                        }
                        None => {
                            tokio::fs::create_dir_all(&dir).await?;
                            // Each write to a tokio file is a trip to the blocking pool; the
                            // body arrives in chunks of a few KB, so gather a MiB per trip.
                            let mut f = tokio::io::BufWriter::with_capacity(
                                SPILL_BUFFER,
                                tokio::fs::File::create(&path).await?,
                            );
                            f.write_all(&buffered).await?;
                            f.write_all(&chunk).await?;
                            buffered = Vec::new();
                            file = Some(f);
                        }
                    }
                }
                if let Some(f) = file.as_mut() {
                    f.flush().await?;
                }
                if let Some(u) = upload.as_mut() {
                    u.size = size as i64;
                    u.sha256 = hex::encode(hasher.finalize());
                    u.data = file.is_none().then(|| bytes::Bytes::from(buffered));
                }
            } else if field.file_name().is_some() {
                return Err(ApiError::invalid(format!(
                    "Unexpected file field `{}`; send the file as `audio`.",
                    crate::error::shown_name(&name)
                )));
            } else {
                if fields.len() >= MAX_FIELDS {
                    return Err(ApiError::invalid(format!(
                        "Too many fields: at most {MAX_FIELDS} text fields beside `audio`."
                    )));
                }
                let mut value = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    value.extend_from_slice(&chunk);
                    if value.len() > MAX_FIELD_BYTES {
                        return Err(ApiError::invalid(format!(
                            "Field `{}` is too long.",
                            crate::error::shown_name(&name)
                        )));
                    }
                }
                let value = String::from_utf8(value).map_err(|_| {
                    ApiError::invalid(format!(
                        "Field `{}` is not UTF-8 text.",
                        crate::error::shown_name(&name)
                    ))
                })?;
                if fields.contains_key(&name) {
                    // Which one was meant? Refused rather than one silently winning.
                    return Err(ApiError::invalid(format!(
                        "Field `{}` is given more than once.",
                        crate::error::shown_name(&name)
                    )));
                }
                fields.insert(name, value);
            }
        }
        Ok(())
    }
    .await;
    match (result, upload) {
        (Ok(()), Some(upload)) if upload.size == 0 => {
            let _ = tokio::fs::remove_file(&upload.path).await;
            Err(ApiError::new(
                Code::UnsupportedAudio,
                "The audio file is empty.",
            ))
        }
        (Ok(()), Some(upload)) => Ok(Submission { upload, fields }),
        (Ok(()), None) => Err(ApiError::invalid("An `audio` file is required.")),
        (Err(e), upload) => {
            if let Some(u) = upload {
                let _ = tokio::fs::remove_file(&u.path).await;
            }
            Err(e)
        }
    }
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(Code::PayloadTooLarge, "Request body is too large.")
    } else {
        ApiError::invalid(format!("Malformed multipart body: {}", e.body_text()))
    }
}

/// Polls a job; more than one poll per second of the same job → `429`.
#[utoipa::path(get, path = "/v1/jobs/{job_id}", tag = JOBS, security(("bearer" = [])),
    params(("job_id" = String, Path, description = "A `job_…` id")),
    responses(
        (status = 200, description = "The job", body = JobBody),
        (status = 404, description = "not_found", body = ErrorEnvelope),
        (status = 429, description = "rate_limit_exceeded (Retry-After in seconds)", body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
async fn jobs_get(
    State(state): State<AppState>,
    _key: JobsKey,
    Path(job_id): Path<String>,
) -> ApiResult<Json<JobBody>> {
    let too_soon = |wait: Duration| {
        let mut e = ApiError::new(
            Code::RateLimitExceeded,
            "This job was polled less than a second ago; poll at most once per second.",
        );
        e.retry_after = Some(wait.max(Duration::from_millis(1)).as_secs_f64().ceil() as u64);
        e
    };
    let id = job_id.clone();
    let shared = if state.store.dialect() == crate::store::db::Dialect::Postgres {
        // A fleet: the limit holds across API nodes, through the shared database.
        let window = crate::app::PollLimiter::WINDOW.as_millis() as i64;
        let now = crate::store::now_ms();
        match state
            .store
            .write_atomic(move |tx| jobs_store::poll(tx, &id, now, window))
            .await
        {
            Ok(checked) => Some(checked),
            // The database cannot write now (a full disk): polling goes on with this node's
            // own limit rather than failing. One that cannot be reached at all is a 503 now: a
            // read would wait as long again for the same answer.
            Err(e) if e.is_transient() && !e.is_unreachable() => None,
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let job = match shared {
        Some(checked) => checked.map_err(|wait| too_soon(Duration::from_millis(wait as u64)))?,
        None => {
            let limited = state.polls.lock().unwrap().check(&job_id, Instant::now());
            limited.map_err(too_soon)?;
            let id = job_id.clone();
            state.store.read(move |c| jobs_store::get(c, &id)).await?
        }
    };
    let job = job.ok_or_else(|| ApiError::not_found("No job with that id."))?;
    let live = state.progress.lock().unwrap().get(&job.id).copied();
    Ok(Json(JobBody::from_row(&job, live)))
}

/// The 50 most recent jobs, newest first (extension; not rate limited).
#[utoipa::path(get, path = "/v1/jobs", tag = JOBS, security(("bearer" = [])),
    params(JobsQuery),
    responses(
        (status = 200, description = "Jobs, newest first", body = JobList),
        (status = 400, description = "invalid_request: bad limit, status or before", body = ErrorEnvelope),
    ))]
async fn jobs_list(
    State(state): State<AppState>,
    _key: JobsKey,
    query: Result<Query<JobsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<JobList>> {
    let Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit must be from 1 to 500."));
    }
    let status = q.status.map(JobStatus::from);
    let before = q.before;
    if let Some(b) = before.as_deref().filter(|b| !crate::ids::is_id(b, "job")) {
        return Err(ApiError::invalid(format!(
            "before must be a job id (a page's next_before), not `{}`.",
            crate::error::shown_name(b)
        )));
    }
    // One more than asked for says whether there is a next page.
    let mut rows = state
        .store
        .read(move |c| jobs_store::list(c, status, before.as_deref(), limit + 1))
        .await?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let progress = state.progress.lock().unwrap().clone();
    let data: Vec<JobBody> = rows
        .iter()
        .map(|j| JobBody::from_row(j, progress.get(&j.id).copied()))
        .collect();
    let next_before = more.then(|| rows.last().map(|j| j.id.clone())).flatten();
    Ok(Json(JobList { data, next_before }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::PollLimiter;

    #[test]
    fn poll_limiter_allows_one_poll_per_second_per_job() {
        let mut l = PollLimiter::default();
        let t0 = Instant::now();
        assert!(l.check("job_a", t0).is_ok());
        assert!(l.check("job_b", t0).is_ok());
        let wait = l
            .check("job_a", t0 + Duration::from_millis(300))
            .unwrap_err();
        assert_eq!(wait, Duration::from_millis(700));
        assert!(l.check("job_a", t0 + Duration::from_millis(1000)).is_ok());
    }

    #[test]
    fn request_hash_separates_what_matters() {
        let p = json!({"stems": 4});
        let a = request_hash(JobKind::Separate, &p, "abc", None);
        assert_eq!(a, request_hash(JobKind::Separate, &p, "abc", None));
        assert_ne!(
            a,
            request_hash(JobKind::Separate, &json!({"stems": 2}), "abc", None)
        );
        assert_ne!(a, request_hash(JobKind::Separate, &p, "abd", None));
        assert_ne!(a, request_hash(JobKind::Master, &p, "abc", None));
    }
}
