//! The HTTP API, one file per resource. Handlers are free `async fn`s named `resource_verb` that
//! destructure extractors, validate, and call the store or a service; they hold no SQL and no DSP.
//! The extractors here turn every bad request into the contract's error envelope.

pub mod admin;
pub mod analysis;
pub mod docs;
pub mod generations;
pub mod jobs;
pub mod lifecycle;
pub mod media;
pub mod webhook;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde_json::Value;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;
use crate::error::{ApiError, Code};

/// Every route of both APIs, the admin API and media, each with its OpenAPI operation
/// (`split_for_parts` yields the axum router and the document).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        .merge(generations::router())
        .merge(jobs::router())
        .merge(lifecycle::router())
        .merge(analysis::router())
        .merge(webhook::router())
        .merge(admin::router())
        .merge(media::router())
}

/// Largest JSON request body on any route (every JSON body of both APIs is a few hundred bytes).
pub const MAX_JSON_BODY: usize = 2 * 1024 * 1024;

/// A JSON request body whose rejections (bad syntax, wrong content type, too large) come back in
/// the error envelope instead of axum's plain text. Capped at [`MAX_JSON_BODY`] whatever the
/// route's own body limit (upload routes lift theirs): a declared length over the cap is refused
/// before a byte is read, an undeclared one as soon as it passes the cap.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let too_large = || {
            ApiError::new(
                Code::PayloadTooLarge,
                format!(
                    "JSON bodies are limited to {} MB.",
                    MAX_JSON_BODY / (1024 * 1024)
                ),
            )
        };
        let headers = req.headers();
        let json_type = headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase())
            .is_some_and(|m| {
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            });
        if !json_type {
            return Err(ApiError::invalid("Content-Type must be application/json."));
        }
        let declared = headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_JSON_BODY as u64) {
            return Err(too_large());
        }
        let bytes = axum::body::to_bytes(req.into_body(), MAX_JSON_BODY)
            .await
            .map_err(|e| {
                let length_limit = std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
                if length_limit || e.to_string().contains("length limit") {
                    too_large()
                } else {
                    ApiError::invalid(format!("Could not read the request body: {e}"))
                }
            })?;
        match axum::Json::<Value>::from_bytes(&bytes) {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::invalid("Content-Type must be application/json.")
        }
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::invalid(format!("Malformed JSON: {}", e.body_text()))
        }
        JsonRejection::JsonDataError(e) => {
            ApiError::invalid(format!("Invalid JSON: {}", e.body_text()))
        }
        JsonRejection::BytesRejection(e)
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
        {
            ApiError::new(Code::PayloadTooLarge, "Request body is too large.")
        }
        other => ApiError::invalid(other.body_text()),
    }
}

/// Proof that the request carried the generations API key (`X-API-Key`).
pub struct GenerationsKey;

impl<S> FromRequestParts<S> for GenerationsKey
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let key = parts.headers.get("x-api-key").and_then(|v| v.to_str().ok());
        match key {
            Some(k) if constant_time_eq(k, &state.secrets.ft_key) => Ok(GenerationsKey),
            Some(_) => Err(ApiError::new(Code::Unauthorized, "Invalid API key.")),
            None => Err(ApiError::new(
                Code::Unauthorized,
                "Missing X-API-Key header.",
            )),
        }
    }
}

/// Proof that the request carried the jobs API key (`Authorization: Bearer`).
pub struct JobsKey;

impl<S> FromRequestParts<S> for JobsKey
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let header = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let token = header.and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        });
        match (header, token) {
            (_, Some(t)) if constant_time_eq(t.trim(), &state.secrets.tl_key) => Ok(JobsKey),
            (None, _) => Err(ApiError::new(
                Code::Unauthorized,
                "Missing Authorization: Bearer header.",
            )),
            _ => Err(ApiError::new(Code::Unauthorized, "Invalid API key.")),
        }
    }
}

/// Compares secrets without leaking where they differ.
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `X-Soundcheck-Fault` header, validated.
pub fn fault_header(
    headers: &axum::http::HeaderMap,
) -> Result<Option<crate::faults::Faults>, ApiError> {
    match headers.get(crate::faults::HEADER) {
        None => Ok(None),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| ApiError::invalid("X-Soundcheck-Fault is not text."))?;
            crate::faults::Faults::parse(s)
                .map(Some)
                .map_err(ApiError::invalid)
        }
    }
}
