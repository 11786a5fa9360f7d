//! The OpenAPI 3.1 document served at `GET /openapi.json`. Paths come from the `#[utoipa::path]`
//! attribute on each handler, registered through `utoipa_axum::routes!`, so a route cannot exist
//! without its documentation (or the other way round); schemas come from the types the handlers
//! serialise (`views.rs`, the store's rows) where they exist, and from the request shapes below.
//! [`finish`] adds what every operation shares: the error envelope for `401` and `500`, and the
//! `X-Soundcheck-Fault` header on the submit endpoints.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Tag of the generations API (seed 000).
pub const GENERATIONS: &str = "generations";
/// Tag of the async jobs API (seed 003).
pub const JOBS: &str = "jobs";
/// Tag of the synchronous analysis endpoints.
pub const ANALYSIS: &str = "analysis";
/// Tag of the webhook admin API.
pub const WEBHOOK: &str = "webhook";
/// Tag of credits admin.
pub const CREDITS: &str = "credits";
/// Tag of result files.
pub const MEDIA: &str = "media";

/// The project's licence as an SPDX expression (`info.license.identifier`; the name says the same).
const LICENCE: &str = "MIT OR Apache-2.0";

/// The document's fixed parts; the paths are added by the routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "soundcheck",
        description = "Local, offline emulation of two music-AI APIs: generations (X-API-Key) and \
                       async jobs with signed webhooks (Authorization: Bearer). Every error is \
                       {\"error\": {\"code\", \"message\", \"trace_id\"}}.",
        license(name = "MIT OR Apache-2.0")
    ),
    modifiers(&SecuritySchemes),
    components(schemas(ErrorEnvelope, ErrorDetail, ErrorCode)),
    tags(
        (name = "generations", description = "Text-to-music generations (seed 000), X-API-Key."),
        (name = "jobs", description = "Async jobs (seed 003), Bearer key, credits, webhooks."),
        (name = "analysis", description = "Synchronous analysis, Bearer key, free."),
        (name = "webhook", description = "The jobs webhook endpoint and its delivery log."),
        (name = "credits", description = "Balance, ledger and top-ups."),
        (name = "media", description = "Result files at expiring capability URLs."),
    )
)]
pub struct ApiDoc;

/// The two keys: `X-API-Key` (generations) and `Authorization: Bearer` (everything else).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The one error envelope of both APIs.
#[derive(Serialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorDetail,
}

/// `error` of the envelope.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
    /// Also in the `X-Trace-Id` header and the server's log line of the request.
    pub trace_id: String,
}

/// The contract's error codes.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidRequest,
    Unauthorized,
    NotFound,
    RateLimitExceeded,
    InsufficientCredits,
    IdempotencyConflict,
    UnsupportedAudio,
    CorruptAudio,
    PayloadTooLarge,
    EngineUnavailable,
    InternalError,
    ServiceUnavailable,
    /// Extension: the item has already ended (cancel of a final job or generation).
    Conflict,
}

/// `POST /v1/generations` body. Unknown fields are ignored and named in
/// `X-Soundcheck-Ignored-Fields`.
#[derive(Serialize, ToSchema)]
pub struct GenerationRequest {
    /// Genre, mood and instrument words.
    #[schema(min_length = 1, max_length = 2000, pattern = "\\S")]
    pub tags: String,
    /// Seconds.
    #[schema(minimum = 1, maximum = 600)]
    pub duration: Option<u32>,
    #[schema(minimum = 30, maximum = 300)]
    pub bpm: Option<u32>,
    /// `"A minor"`, `"F# major"`, `"Bb minor"`.
    #[schema(pattern = "^[A-G](#|b)? (major|minor)$")]
    pub keyscale: Option<String>,
    /// Beats per bar.
    #[schema(minimum = 2, maximum = 12)]
    pub timesignature: Option<u32>,
    #[schema(minimum = 0, maximum = 4294967295.0)]
    pub seed: Option<u64>,
    /// Fire-once webhook URL (http or https; loopback allowed unless `serve --strict`).
    #[schema(
        max_length = 2048,
        pattern = "^https?://[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,20}){0,3}(/[A-Za-z0-9._~-]{0,20}){0,4}$"
    )]
    pub webhook: Option<String>,
    /// An installed generator (the document lists this server's).
    pub model: Option<String>,
}

/// Multipart body of `POST /v1/separate`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct SeparateForm {
    /// The audio file (any format the decoder reads).
    #[schema(value_type = String, format = Binary)]
    pub audio: Vec<u8>,
    #[schema(pattern = "^[24]$")]
    pub stems: Option<String>,
    #[schema(pattern = "^(wav16|wav24|float)$")]
    pub format: Option<String>,
}

/// Multipart body of `POST /v1/transcribe` (numbers and booleans as text fields).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct TranscribeForm {
    #[schema(value_type = String, format = Binary)]
    pub audio: Vec<u8>,
    #[schema(pattern = "^(0(\\.[0-9]{1,3})?|1)$")]
    pub onset_threshold: Option<String>,
    #[schema(pattern = "^(0(\\.[0-9]{1,3})?|1)$")]
    pub frame_threshold: Option<String>,
    #[schema(pattern = "^[0-9]{1,4}(\\.[0-9])?$")]
    pub min_note_ms: Option<String>,
    #[schema(pattern = "^(true|false)$")]
    pub melodia_trick: Option<String>,
    #[schema(pattern = "^(true|false)$")]
    pub pitch_bends: Option<String>,
    #[schema(pattern = "^(true|false)$")]
    pub multiple_pitch_bends: Option<String>,
    #[schema(pattern = "^[1-9][0-9]{1,2}$")]
    pub midi_tempo: Option<String>,
}

/// Multipart body of `POST /v1/master`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct MasterForm {
    #[schema(value_type = String, format = Binary)]
    pub audio: Vec<u8>,
    /// −30 … −6.
    #[schema(pattern = "^-(6|[7-9]|[12][0-9]|30)$")]
    pub target_lufs: Option<String>,
    /// −9 … 0.
    #[schema(pattern = "^(0|-[1-9])$")]
    pub true_peak_db: Option<String>,
    #[schema(pattern = "^(wav16|wav24|float|flac|flac24)$")]
    pub format: Option<String>,
    #[schema(pattern = "^(true|false)$")]
    pub eq: Option<String>,
    #[schema(pattern = "^(true|false)$")]
    pub compress: Option<String>,
}

/// Multipart body of `POST /v1/analyze/upload`, and of the synchronous analysis endpoints.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct AudioForm {
    #[schema(value_type = String, format = Binary)]
    pub audio: Vec<u8>,
}

/// JSON body of the synchronous analysis endpoints: a file this server serves.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct MediaUrl {
    /// `…/media/{token}/{filename}` (a job result or a generation's `audioUrl`).
    #[schema(
        max_length = 2048,
        pattern = "^https?://[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,20}){0,3}(:[1-9][0-9]{0,3})?/media/[A-Za-z0-9]+/[A-Za-z0-9._-]+$"
    )]
    pub url: String,
}

/// `_meta` of a synchronous analysis.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct TraceMeta {
    pub trace_id: String,
}

/// `POST /v1/analyze`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct TempoKeyBody {
    pub bpm: f64,
    pub bpm_confidence: f64,
    /// `"A minor"` / `"F# major"`; null when nothing pitched was heard.
    pub key: Option<String>,
    pub key_confidence: f64,
    pub tuning_cents: f64,
    pub duration_secs: f64,
    #[serde(rename = "_meta")]
    pub meta: TraceMeta,
}

/// Mean and standard deviation of a per-frame descriptor.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct Stat {
    pub mean: f64,
    pub std: f64,
}

/// Per-band statistics of the log-mel spectrogram.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct MelSummary {
    pub bands: u32,
    pub fmin_hz: f64,
    pub fmax_hz: f64,
    pub mean_db: Vec<f64>,
    pub std_db: Vec<f64>,
}

/// `POST /v1/features`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct FeaturesBody {
    pub duration_secs: f64,
    pub sample_rate: u32,
    pub channels: u32,
    pub rms_dbfs: f64,
    pub peak_dbfs: f64,
    pub spectral_centroid_hz: Stat,
    pub spectral_rolloff_hz: Stat,
    pub spectral_flatness: Stat,
    pub zero_crossing_rate: f64,
    pub onset_rate_per_sec: f64,
    /// Pitch class (`C` … `B`) → mean energy, the largest 1.
    pub chroma: BTreeMap<String, f64>,
    pub mel: MelSummary,
    #[serde(rename = "_meta")]
    pub meta: TraceMeta,
}

/// `POST /v1/metadata`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct MetadataBody {
    pub container: String,
    pub codec: String,
    pub sample_rate: u32,
    pub channels: u32,
    pub bits_per_sample: Option<u32>,
    pub frames: Option<u64>,
    pub duration_secs: Option<f64>,
    pub bit_rate_kbps: Option<f64>,
    pub file_size: u64,
    pub tags: BTreeMap<String, String>,
    #[serde(rename = "_meta")]
    pub meta: TraceMeta,
}

/// `X-Soundcheck-Fault` values the document lists as examples of the grammar the description
/// gives (short delays, so generated requests stay cheap; `timeout` holds a worker for minutes).
const FAULT_VALUES: [&str; 8] = [
    "internal_error",
    "service_unavailable",
    "delay=100",
    "webhook_fail",
    "webhook_slow=100",
    "internal_error,webhook_fail",
    "delay=50,webhook_slow=50",
    "service_unavailable,webhook_slow=100",
];

/// Completes the generated document: `401` on every authenticated operation and `500` on every
/// API operation (both in the error envelope), the fault header on submits, and the installed
/// generators as the values of `model`.
pub fn finish(doc: utoipa::openapi::OpenApi, generators: &[String], base_url: &str) -> Value {
    let mut doc = serde_json::to_value(&doc).expect("the document serialises");
    // Generated clients take their base URL from here: this server's public URL.
    doc["servers"] = json!([{ "url": base_url, "description": "this soundcheck server" }]);
    // OpenAPI 3.1's SPDX expression beside the name.
    doc["info"]["license"]["identifier"] = json!(LICENCE);
    let envelope = |description: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
        })
    };
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let Some(ops) = item.as_object_mut() else {
                continue;
            };
            for (method, op) in ops.iter_mut() {
                let secured = op.get("security").is_some();
                if !secured {
                    // Public on purpose (a media URL's token is the capability): say so, rather
                    // than leaving clients to guess a key.
                    op["security"] = json!([]);
                }
                let responses = op["responses"].as_object_mut().expect("responses");
                if secured {
                    responses
                        .entry("401")
                        .or_insert_with(|| envelope("unauthorized: missing or wrong key"));
                }
                if path.starts_with("/v1/") {
                    responses
                        .entry("500")
                        .or_insert_with(|| envelope("internal_error: our fault (see the log)"));
                }
                let params = op.get_mut("parameters").and_then(Value::as_array_mut);
                for param in params.into_iter().flatten() {
                    if param["name"] == "Idempotency-Key" {
                        // Printable ASCII, no surrounding spaces (they are trimmed), 1–255.
                        param["schema"] = json!({
                            "type": "string", "minLength": 1, "maxLength": 255,
                            "pattern": "^[!-~]([ -~]{0,253}[!-~])?$"
                        });
                    }
                }
                let submit = method == "post"
                    && matches!(
                        path.as_str(),
                        "/v1/generations"
                            | "/v1/separate"
                            | "/v1/transcribe"
                            | "/v1/master"
                            | "/v1/analyze/upload"
                    );
                if submit {
                    let params = op
                        .as_object_mut()
                        .expect("operation")
                        .entry("parameters")
                        .or_insert_with(|| json!([]));
                    params.as_array_mut().expect("parameters").push(json!({
                        "name": "X-Soundcheck-Fault",
                        "in": "header",
                        "required": false,
                        "description": "Fault injection: internal_error, service_unavailable, \
                                        timeout, delay=<ms>, webhook_fail, webhook_slow=<ms> \
                                        (one run fault and one webhook fault, comma-separated). \
                                        See docs/faults.md.",
                        "schema": {"type": "string", "enum": FAULT_VALUES}
                    }));
                }
            }
        }
    }
    if let Some(model) = doc
        .pointer_mut("/components/schemas/GenerationRequest/properties/model")
        .and_then(Value::as_object_mut)
    {
        let mut values: Vec<Value> = generators.iter().map(|g| json!(g)).collect();
        values.push(Value::Null);
        model.insert("enum".into(), Value::Array(values));
    }
    doc
}
