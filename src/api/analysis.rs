//! The synchronous analysis endpoints (seed 003: "metadata lookups, BPM/key analysis, and feature
//! extraction return the result in the same response"): `POST /v1/analyze` (tempo and key),
//! `POST /v1/features` (level, spectral, chroma and mel descriptors) and `POST /v1/metadata`
//! (container, codec, bit rate, tags). Bearer auth like the jobs API; free (no credits).
//!
//! The audio comes either as a multipart upload (field `audio`, as for the async endpoints) or as
//! JSON `{"url": "…"}` naming a file this server serves (`/media/{token}/{filename}`: a result or
//! a generation). Other URLs are refused: the server never fetches from the network on a client's
//! behalf, so there is nothing for a hostile URL to reach.

use std::path::PathBuf;

use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::docs::{
    AudioForm, ErrorEnvelope, FeaturesBody, MediaUrl, MetadataBody, TempoKeyBody, ANALYSIS,
};
use super::jobs::{audio_error, receive, spill};
use super::{JobsKey, JsonBody};
use crate::app::AppState;
use crate::engines::analyze;
use crate::error::{current_trace_id, ApiError, ApiResult};

/// Longest a synchronous analysis waits for a free slot before answering `503`.
const SYNC_SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Which synchronous analysis a route runs.
#[derive(Debug, Clone, Copy)]
enum Analysis {
    TempoKey,
    Features,
    Metadata,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(analyze_post))
        .routes(routes!(features_post))
        .routes(routes!(metadata_post))
        // Uploads are size-checked while they stream to disk (--max-upload-mb).
        .layer(DefaultBodyLimit::disable())
}

/// Tempo and key, answered in the same response (free).
#[utoipa::path(post, path = "/v1/analyze", tag = ANALYSIS, security(("bearer" = [])),
    request_body(content((AudioForm = "multipart/form-data"), (MediaUrl = "application/json"))),
    responses(
        (status = 200, description = "The report", body = TempoKeyBody),
        (status = 400, description = "invalid_request: neither an upload nor a media URL of this server", body = ErrorEnvelope),
        (status = 404, description = "not_found: no such media file, or expired", body = ErrorEnvelope),
        (status = 413, description = "payload_too_large", body = ErrorEnvelope),
        (status = 422, description = "unsupported_audio or corrupt_audio", body = ErrorEnvelope),
    ))]
async fn analyze_post(
    state: State<AppState>,
    key: JobsKey,
    req: Request,
) -> ApiResult<Json<Value>> {
    analysis_post(Analysis::TempoKey, state, key, req).await
}

/// Level, spectral, chroma and mel descriptors, answered in the same response (free).
#[utoipa::path(post, path = "/v1/features", tag = ANALYSIS, security(("bearer" = [])),
    request_body(content((AudioForm = "multipart/form-data"), (MediaUrl = "application/json"))),
    responses(
        (status = 200, description = "The report", body = FeaturesBody),
        (status = 400, description = "invalid_request: neither an upload nor a media URL of this server", body = ErrorEnvelope),
        (status = 404, description = "not_found: no such media file, or expired", body = ErrorEnvelope),
        (status = 413, description = "payload_too_large", body = ErrorEnvelope),
        (status = 422, description = "unsupported_audio or corrupt_audio", body = ErrorEnvelope),
    ))]
async fn features_post(
    state: State<AppState>,
    key: JobsKey,
    req: Request,
) -> ApiResult<Json<Value>> {
    analysis_post(Analysis::Features, state, key, req).await
}

/// Container, codec, bit rate and tags, answered in the same response (free).
#[utoipa::path(post, path = "/v1/metadata", tag = ANALYSIS, security(("bearer" = [])),
    request_body(content((AudioForm = "multipart/form-data"), (MediaUrl = "application/json"))),
    responses(
        (status = 200, description = "The report", body = MetadataBody),
        (status = 400, description = "invalid_request: neither an upload nor a media URL of this server", body = ErrorEnvelope),
        (status = 404, description = "not_found: no such media file, or expired", body = ErrorEnvelope),
        (status = 413, description = "payload_too_large", body = ErrorEnvelope),
        (status = 422, description = "unsupported_audio or corrupt_audio", body = ErrorEnvelope),
    ))]
async fn metadata_post(
    state: State<AppState>,
    key: JobsKey,
    req: Request,
) -> ApiResult<Json<Value>> {
    analysis_post(Analysis::Metadata, state, key, req).await
}

/// The answer: the report's fields, then `_meta` as on every jobs-API response.
#[derive(Serialize)]
struct AnalysisBody<T: Serialize> {
    #[serde(flatten)]
    report: T,
    #[serde(rename = "_meta")]
    meta: Meta,
}

#[derive(Serialize)]
struct Meta {
    trace_id: String,
}

/// Where the audio to analyse lives, and whether it is ours to delete afterwards.
struct Source {
    path: PathBuf,
    temporary: bool,
}

async fn analysis_post(
    what: Analysis,
    State(state): State<AppState>,
    _key: JobsKey,
    req: Request,
) -> ApiResult<Json<Value>> {
    let source = source(&state, req).await?;
    let path = source.path.clone();
    // The trace id is task-local: read it here, not on the blocking thread.
    let meta = Meta {
        trace_id: current_trace_id(),
    };
    // Wait for a free slot (bounded memory: each analysis holds its decoded file), but not
    // forever: a client gets a clear 503 rather than a hung request.
    let permit =
        tokio::time::timeout(SYNC_SLOT_WAIT, state.sync_analyses.clone().acquire_owned()).await;
    let Ok(Ok(permit)) = permit else {
        if source.temporary {
            let _ = tokio::fs::remove_file(&source.path).await;
        }
        return Err(ApiError::new(
            crate::error::Code::ServiceUnavailable,
            "Every synchronous analysis slot is busy; try again shortly, or use /v1/analyze/upload.",
        ));
    };
    let result = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        run(what, &path, meta)
    })
    .await;
    if source.temporary {
        let _ = tokio::fs::remove_file(&source.path).await;
    }
    let report = result.map_err(ApiError::internal)??;
    Ok(Json(report))
}

/// Decodes and analyses; the report with `_meta` appended.
fn run(what: Analysis, path: &std::path::Path, meta: Meta) -> ApiResult<Value> {
    let value = match what {
        Analysis::Metadata => {
            let report = analyze::metadata(path).map_err(audio_error)?;
            serde_json::to_value(AnalysisBody { report, meta })
        }
        Analysis::TempoKey => {
            let audio = crate::audio::decode(path).map_err(audio_error)?;
            let report = analyze::tempo_key(&audio).map_err(audio_error)?;
            serde_json::to_value(AnalysisBody { report, meta })
        }
        Analysis::Features => {
            let audio = crate::audio::decode(path).map_err(audio_error)?;
            let report = analyze::features(&audio).map_err(audio_error)?;
            serde_json::to_value(AnalysisBody { report, meta })
        }
    };
    value.map_err(ApiError::internal)
}

/// Reads the request: a multipart upload streamed to a temporary file, or a JSON `url` resolved
/// to a file this server publishes.
async fn source(state: &AppState, req: Request) -> ApiResult<Source> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        let multipart = Multipart::from_request(req, state).await.map_err(|e| {
            ApiError::invalid(format!("Malformed multipart body: {}", e.body_text()))
        })?;
        let mut sub = receive(state, multipart).await?;
        if let Some(name) = sub.fields.keys().next() {
            let _ = tokio::fs::remove_file(&sub.upload.path).await;
            return Err(ApiError::invalid(format!(
                "Unknown field `{name}`: this endpoint takes only the `audio` file."
            )));
        }
        spill(&mut sub.upload).await?;
        return Ok(Source {
            path: PathBuf::from(sub.upload.path),
            temporary: true,
        });
    }
    if content_type.starts_with("application/json") {
        let JsonBody(body) = JsonBody::from_request(req, state).await?;
        let url = parse_url_body(&body)?;
        let location = resolve_media_url(state, &url).await?;
        // A result in object storage is analysed from a scratch copy.
        let temporary = crate::media::is_object(&location);
        let path = state
            .media
            .local_copy(&location)
            .await
            .map_err(|e| ApiError::new(crate::error::Code::ServiceUnavailable, e))?
            .detach();
        return Ok(Source { path, temporary });
    }
    Err(ApiError::invalid(
        "Send the audio as multipart/form-data (field `audio`) or JSON {\"url\": …} naming a \
         file this server serves.",
    ))
}

/// The `url` of a JSON body; nothing else is allowed in it.
fn parse_url_body(body: &Value) -> ApiResult<String> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::invalid("The JSON body must be an object."))?;
    if let Some(other) = obj.keys().find(|k| *k != "url") {
        return Err(ApiError::invalid(format!(
            "Unknown field `{other}`: the JSON body takes only `url`."
        )));
    }
    match obj.get("url") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 2048 => Ok(s.clone()),
        Some(Value::String(_)) => Err(ApiError::invalid("`url` must be 1 to 2048 characters.")),
        Some(_) => Err(ApiError::invalid("`url` must be a string.")),
        None => Err(ApiError::invalid("`url` is required.")),
    }
}

/// Maps `…/media/{token}/{filename}` to the location of the file it serves. Any host is accepted (the server may
/// sit behind `--public-url`), but only the media path shape, a live token and its own filename.
async fn resolve_media_url(state: &AppState, url: &str) -> ApiResult<String> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ApiError::invalid(format!("`url` is not a valid URL: {e}.")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ApiError::invalid("`url` must be http or https."));
    }
    let (token, filename) = media_path_parts(parsed.path()).ok_or_else(|| {
        ApiError::invalid(
            "`url` must name a file this server serves (…/media/{token}/{filename}); \
             soundcheck does not fetch other URLs.",
        )
    })?;
    let media = state
        .store
        .read(move |c| crate::store::media::get(c, &token))
        .await?
        .filter(|m| m.filename == filename)
        .ok_or_else(|| ApiError::not_found("No such file on this server."))?;
    if media.expires_at < crate::store::now_ms() {
        return Err(ApiError::not_found("This link has expired."));
    }
    Ok(media.path)
}

/// `(token, filename)` of a `/media/{token}/{filename}` path, nothing before or after.
fn media_path_parts(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/media/")?;
    let (token, filename) = rest.split_once('/')?;
    let ok = |s: &str| !s.is_empty() && !s.contains('/');
    (ok(token) && ok(filename)).then(|| (token.to_string(), filename.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn media_paths_are_recognised_exactly() {
        assert_eq!(
            media_path_parts("/media/tok/mix.mp3"),
            Some(("tok".into(), "mix.mp3".into()))
        );
        assert_eq!(media_path_parts("/media/tok/a/b.wav"), None);
        assert_eq!(media_path_parts("/media//b.wav"), None);
        assert_eq!(media_path_parts("/v1/jobs/x"), None);
        assert_eq!(media_path_parts("/x/media/tok/a.wav"), None);
    }

    #[test]
    fn url_body_takes_only_a_string_url() {
        assert_eq!(
            parse_url_body(&json!({"url": "http://h/media/t/f.wav"})).unwrap(),
            "http://h/media/t/f.wav"
        );
        assert!(parse_url_body(&json!({"url": 5})).is_err());
        assert!(parse_url_body(&json!({})).is_err());
        assert!(parse_url_body(&json!({"url": "x", "extra": 1})).is_err());
        assert!(parse_url_body(&json!(["url"])).is_err());
        assert!(parse_url_body(&json!({"url": "x".repeat(2049)})).is_err());
    }
}
