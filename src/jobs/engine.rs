//! The `Engine` interface every async job engine implements (separate, transcribe, master, analyze).
//!
//! An engine is pure compute: it gets an input audio file, its already-validated parameters and a
//! scratch directory, and returns a JSON result plus the files it wrote. It never touches the
//! database, HTTP or URLs: the job worker turns every `{"$file": "name"}` object in the result into an
//! absolute, expiring media URL, stores the result and fires the webhook.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::store::states::FailCode;

/// Which endpoint of the jobs API an engine serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobKind {
    Separate,
    Transcribe,
    Master,
    Analyze,
}

impl JobKind {
    pub const ALL: [JobKind; 4] = [
        JobKind::Separate,
        JobKind::Transcribe,
        JobKind::Master,
        JobKind::Analyze,
    ];

    /// The path clients POST to, also reported as `data.endpoint` in webhooks.
    pub fn endpoint(self) -> &'static str {
        match self {
            JobKind::Separate => "/v1/separate",
            JobKind::Transcribe => "/v1/transcribe",
            JobKind::Master => "/v1/master",
            JobKind::Analyze => "/v1/analyze/upload",
        }
    }

    pub fn from_endpoint(endpoint: &str) -> Option<JobKind> {
        JobKind::ALL.into_iter().find(|k| k.endpoint() == endpoint)
    }

    /// Credits reserved at submit and charged on success (docs/decisions.md).
    pub fn price(self) -> i64 {
        match self {
            JobKind::Separate => 10,
            JobKind::Transcribe => 8,
            JobKind::Master => 6,
            JobKind::Analyze => 2,
        }
    }
}

/// Where an engine's work runs: device-bound engines run one at a time per device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Cpu,
    Device,
}

/// Why an engine run failed; mapped to the job's `error.code`.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The input could not be decoded (`unsupported_audio`); not refunded: the client sent it.
    #[error("{0}")]
    UnsupportedAudio(String),
    /// The input is damaged (`corrupt_audio`); not refunded.
    #[error("{0}")]
    CorruptAudio(String),
    /// The input decoded but cannot be processed as asked (`invalid_request`); not refunded.
    #[error("{0}")]
    InvalidInput(String),
    /// Our side failed (`internal_error`); refunded.
    #[error("{0}")]
    Internal(String),
    /// The engine could not run now (`service_unavailable`); refunded.
    #[error("{0}")]
    Unavailable(String),
    /// The run was stopped: by shutdown (the job is re-queued) or by a cancel (which has already
    /// ended the job).
    #[error("cancelled")]
    Cancelled,
}

impl EngineError {
    /// The contract's error code for this failure.
    pub fn code(&self) -> FailCode {
        match self {
            EngineError::UnsupportedAudio(_) => FailCode::UnsupportedAudio,
            EngineError::CorruptAudio(_) => FailCode::CorruptAudio,
            EngineError::InvalidInput(_) => FailCode::InvalidRequest,
            EngineError::Internal(_) => FailCode::InternalError,
            EngineError::Unavailable(_) | EngineError::Cancelled => FailCode::ServiceUnavailable,
        }
    }
}

/// Everything an engine run gets.
pub struct JobContext<'a> {
    /// The uploaded audio file, as the client sent it (any container symphonia reads).
    pub input: &'a Path,
    /// The parameters `Engine::params` returned at submit time.
    pub params: &'a Value,
    /// An empty directory for output files; files named in the result must live here.
    pub out_dir: &'a Path,
    /// Reports progress in `0.0..=1.0`; cheap, call it as often as useful.
    pub progress: &'a (dyn Fn(f32) + Sync),
    /// True once the server is shutting down or the job was cancelled (`DELETE`); long engines
    /// should check it between steps and return `Cancelled`.
    pub cancelled: &'a (dyn Fn() -> bool + Sync),
}

/// A finished run: the job's `result` JSON, where `{"$file": "<name in out_dir>"}` marks a file to
/// publish as an absolute, expiring URL.
#[derive(Debug, Clone)]
pub struct JobOutput {
    pub result: Value,
}

/// Marks a file in `out_dir` for publication; the worker replaces it with its URL.
pub fn file_ref(name: &str) -> Value {
    serde_json::json!({ "$file": name })
}

/// An async job engine. Implementations live in `src/engines/<name>/` and are registered in
/// `jobs::registry`.
pub trait Engine: Send + Sync {
    /// Which endpoint this engine serves.
    fn kind(&self) -> JobKind;
    /// Short model/engine name reported in results (`"dsp"`, `"htdemucs"`, `"basic-pitch"` …).
    fn name(&self) -> &str;
    /// CPU engines may run in parallel; device engines run one at a time per device.
    fn resource(&self) -> Resource {
        Resource::Cpu
    }
    /// Validates the multipart text fields of a submission (all but the `audio` file) into the
    /// parameters stored with the job. `Err` is the message of a `400 invalid_request`.
    fn params(&self, fields: &BTreeMap<String, String>) -> Result<Value, String>;
    /// Checks the upload's headers (`input`, probed at submit) against the parameters `params`
    /// returned, for what is already known to fail before anything is charged. `Err` is the
    /// message of a `400 invalid_request`.
    fn check_input(&self, params: &Value, input: &crate::audio::ProbeInfo) -> Result<(), String> {
        let _ = (params, input);
        Ok(())
    }
    /// Runs the job. Blocking: called on a blocking thread.
    fn run(&self, ctx: &JobContext<'_>) -> Result<JobOutput, EngineError>;
}
