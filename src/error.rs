//! `ApiError`: every failure a client can see, rendered as the contract's one envelope
//! `{"error": {"code", "message", "trace_id"}}` with the matching HTTP status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

tokio::task_local! {
    /// The current request's trace id, set by the tracing middleware for the handler's lifetime.
    pub static TRACE_ID: String;
}

/// The trace id of the request being handled (a fresh one outside a request).
pub fn current_trace_id() -> String {
    TRACE_ID
        .try_with(|t| t.clone())
        .unwrap_or_else(|_| crate::ids::trace_id())
}

// One type for the envelope: every failure renders it, the OpenAPI document declares it and the
// client commands read it (doc comments below are the document's descriptions).

/// The one error envelope of both APIs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorDetail,
}

/// `error` of the envelope.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub code: Code,
    /// What went wrong, for a person.
    pub message: String,
    /// Also in the `X-Trace-Id` header and the server's log line of the request.
    pub trace_id: String,
}

// The error codes of both APIs (docs/errors.md), each with its HTTP status (`Code::status`).

/// The contract's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ErrorCode)]
pub enum Code {
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
    /// soundcheck's extension beyond the seeds' codes: the item's state does not allow the request
    /// (cancelling a job or generation that has already ended).
    Conflict,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidRequest => "invalid_request",
            Code::Unauthorized => "unauthorized",
            Code::NotFound => "not_found",
            Code::RateLimitExceeded => "rate_limit_exceeded",
            Code::InsufficientCredits => "insufficient_credits",
            Code::IdempotencyConflict => "idempotency_conflict",
            Code::UnsupportedAudio => "unsupported_audio",
            Code::CorruptAudio => "corrupt_audio",
            Code::PayloadTooLarge => "payload_too_large",
            Code::EngineUnavailable => "engine_unavailable",
            Code::InternalError => "internal_error",
            Code::ServiceUnavailable => "service_unavailable",
            Code::Conflict => "conflict",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Code::InvalidRequest => StatusCode::BAD_REQUEST,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::RateLimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            Code::InsufficientCredits => StatusCode::PAYMENT_REQUIRED,
            Code::IdempotencyConflict => StatusCode::CONFLICT,
            Code::UnsupportedAudio | Code::CorruptAudio => StatusCode::UNPROCESSABLE_ENTITY,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::EngineUnavailable => StatusCode::NOT_IMPLEMENTED,
            Code::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            Code::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Conflict => StatusCode::CONFLICT,
        }
    }
}

/// An error a handler returns; `?` converts store and I/O errors into `internal_error`, whose
/// details are logged, never sent.
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    /// Seconds for a `Retry-After` header (rate limits).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::InvalidRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::NotFound, message)
    }

    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(trace_id = %current_trace_id(), "internal error: {detail}");
        ApiError::new(
            Code::InternalError,
            "An internal error occurred; see the server log.",
        )
    }
}

impl ApiError {
    /// The disk is full: nothing was stored, the client may retry later (`503`).
    pub fn disk_full(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(trace_id = %current_trace_id(), "disk full: {detail}");
        ApiError::new(
            Code::ServiceUnavailable,
            "The server's disk is full; nothing was stored. Try again later.",
        )
    }
}

impl From<crate::store::Error> for ApiError {
    fn from(e: crate::store::Error) -> ApiError {
        if e.is_disk_full() {
            ApiError::disk_full(e)
        } else if matches!(
            e,
            crate::store::Error::Postgres(_) | crate::store::Error::Pool(_)
        ) && e.is_transient()
        {
            // The fleet's database is unreachable or restarting: the client may simply retry.
            tracing::error!(trace_id = %current_trace_id(), "database unavailable: {e}");
            ApiError::new(
                Code::ServiceUnavailable,
                "The database is unavailable right now; no change was made. Try again shortly.",
            )
        } else {
            ApiError::internal(e)
        }
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> ApiError {
        // ENOSPC and EDQUOT: out of space or over quota.
        if e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(122) {
            ApiError::disk_full(e)
        } else {
            ApiError::internal(e)
        }
    }
}

/// Longest client-chosen name (a field's, a key's) a message or header repeats whole.
pub const SHOWN_NAME_CHARS: usize = 64;

/// A name the client chose, as an error message or header repeats it: cut to
/// [`SHOWN_NAME_CHARS`] characters (then `...`), anything but printable ASCII as `?`, and an
/// empty name (or one that was not UTF-8) said as such. A megabyte of field name must not come
/// back as a megabyte of error.
pub fn shown_name(name: &str) -> String {
    if name.is_empty() {
        return "(no readable name)".to_string();
    }
    let mut shown: String = name
        .chars()
        .take(SHOWN_NAME_CHARS)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if name.chars().count() > SHOWN_NAME_CHARS {
        shown.push_str("...");
    }
    shown
}

/// The envelope body for a code and message (also used by the panic handler and fallbacks).
pub fn envelope(code: Code, message: &str, trace_id: &str) -> serde_json::Value {
    let body = ErrorEnvelope {
        error: ErrorDetail {
            code,
            message: message.to_string(),
            trace_id: trace_id.to_string(),
        },
    };
    serde_json::to_value(body).expect("the envelope is plain JSON")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = envelope(self.code, &self.message, &current_trace_id());
        let mut resp = (self.code.status(), axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_codes_text_is_its_serialised_name_and_the_envelope_reads_back() {
        use Code::*;
        let all = [
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
            Conflict,
        ];
        for code in all {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
            let body = envelope(code, "why", "trace");
            assert_eq!(body["error"]["code"], code.as_str());
            let back: ErrorEnvelope = serde_json::from_value(body).unwrap();
            assert_eq!(back.error.code, code);
            assert_eq!(
                (back.error.message.as_str(), back.error.trace_id.as_str()),
                ("why", "trace")
            );
        }
    }
}
