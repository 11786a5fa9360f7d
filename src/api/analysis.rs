//! The synchronous analysis endpoints (seed 003: "metadata lookups, BPM/key analysis, and feature
//! extraction return the result in the same response"): `POST /v1/analyze` (tempo and key),
//! `POST /v1/features` (level, spectral, chroma and mel descriptors) and `POST /v1/metadata`
//! (container, codec, bit rate, tags). Bearer auth like the jobs API; free (no credits).
//!
//! The audio comes either as a multipart upload (field `audio`, as for the async endpoints) or as
//! JSON `{"url": "…"}` naming a file this server serves (`/media/{token}/{filename}`: a result or
//! a generation). Other URLs are refused: the server never fetches from the network on a client's
//! behalf, so there is nothing for a hostile URL to reach.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::body::{self, JsonBody, JsonRequest};
use super::docs::{object_schema, ErrorEnvelope, ANALYSIS};
use super::jobs::{audio_error, receive, spill, AnalyzeForm};
use super::JobsKey;
use crate::app::AppState;
use crate::engines::analyze::{self, FeaturesReport, MetadataReport, TempoKeyReport};
use crate::error::{current_trace_id, ApiError, ApiResult};

/// Longest a synchronous analysis waits for a free slot before answering `503`.
const SYNC_SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

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
    request_body(content((AnalyzeForm = "multipart/form-data"), (MediaUrl = "application/json"))),
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
) -> ApiResult<Json<AnalysisBody<TempoKeyReport>>> {
    analysis_post(
        |path| {
            let audio = crate::audio::decode(path).map_err(audio_error)?;
            analyze::tempo_key(&audio).map_err(audio_error)
        },
        state,
        key,
        req,
    )
    .await
}

/// Level, spectral, chroma and mel descriptors, answered in the same response (free).
#[utoipa::path(post, path = "/v1/features", tag = ANALYSIS, security(("bearer" = [])),
    request_body(content((AnalyzeForm = "multipart/form-data"), (MediaUrl = "application/json"))),
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
) -> ApiResult<Json<AnalysisBody<FeaturesReport>>> {
    analysis_post(
        |path| {
            let audio = crate::audio::decode(path).map_err(audio_error)?;
            analyze::features(&audio).map_err(audio_error)
        },
        state,
        key,
        req,
    )
    .await
}

/// Container, codec, bit rate and tags, answered in the same response (free).
#[utoipa::path(post, path = "/v1/metadata", tag = ANALYSIS, security(("bearer" = [])),
    request_body(content((AnalyzeForm = "multipart/form-data"), (MediaUrl = "application/json"))),
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
) -> ApiResult<Json<AnalysisBody<MetadataReport>>> {
    analysis_post(
        |path| analyze::metadata(path).map_err(audio_error),
        state,
        key,
        req,
    )
    .await
}

/// JSON body of the synchronous analysis endpoints: a file this server serves. Nothing else may
/// be in it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaUrl {
    /// `…/media/{token}/{filename}` (a job result or a generation's `audioUrl`).
    #[serde(deserialize_with = "read_url")]
    #[schema(
        max_length = 2048,
        pattern = "^https?://[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,20}){0,3}(:[1-9][0-9]{0,3})?/media/[A-Za-z0-9]+/[A-Za-z0-9._-]+$"
    )]
    pub url: String,
}

impl JsonRequest for MediaUrl {
    fn not_an_object() -> String {
        "The JSON body must be an object.".into()
    }

    fn missing(field: &str) -> String {
        format!("`{field}` is required.")
    }
}

fn read_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use serde::de::Error;
    match body::any(d)? {
        Value::String(s) if !s.is_empty() && s.len() <= 2048 => Ok(s),
        Value::String(_) => Err(D::Error::custom("`url` must be 1 to 2048 characters.")),
        _ => Err(D::Error::custom("`url` must be a string.")),
    }
}

/// The answer: the report's own fields, then `_meta` as on every jobs-API response.
#[derive(Debug, Serialize)]
pub struct AnalysisBody<T> {
    #[serde(flatten)]
    pub report: T,
    #[serde(rename = "_meta")]
    pub meta: TraceMeta,
}

// The three answers. (Named, because the OpenAPI macros take a generic type only as a type they
// can compose themselves.)
type TempoKeyBody = AnalysisBody<TempoKeyReport>;
type FeaturesBody = AnalysisBody<FeaturesReport>;
type MetadataBody = AnalysisBody<MetadataReport>;

/// `_meta` of a synchronous analysis.
#[derive(Debug, Serialize, ToSchema)]
pub struct TraceMeta {
    pub trace_id: String,
}

/// The report's schema with `_meta` added: one object, as the answer is (composing the two with
/// `allOf` would describe each part as a whole answer with fields missing).
impl<T: ToSchema> PartialSchema for AnalysisBody<T> {
    fn schema() -> RefOr<Schema> {
        let mut object = object_schema::<T>();
        object.properties.insert(
            "_meta".into(),
            Ref::from_schema_name(TraceMeta::name()).into(),
        );
        object.required.push("_meta".into());
        RefOr::T(Schema::Object(object))
    }
}

impl<T: ToSchema> ToSchema for AnalysisBody<T> {
    /// `TempoKeyReport` → `TempoKeyBody`.
    fn name() -> Cow<'static, str> {
        Cow::Owned(format!("{}Body", T::name().trim_end_matches("Report")))
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        T::schemas(schemas);
        schemas.push((TraceMeta::name().into(), TraceMeta::schema()));
    }
}

/// Where the audio to analyse lives; a temporary copy (an upload, an object fetched from the
/// bucket) is removed when this is dropped, even if the client hangs up halfway.
struct Source {
    path: PathBuf,
    _temporary: Option<crate::media::LocalFile>,
}

/// Reads the audio, waits for a slot, and runs `analyse` on it (on a blocking thread); the
/// report comes back with `_meta`.
async fn analysis_post<T: Serialize + Send + 'static>(
    analyse: fn(&Path) -> ApiResult<T>,
    State(state): State<AppState>,
    _key: JobsKey,
    req: Request,
) -> ApiResult<Json<AnalysisBody<T>>> {
    let source = source(&state, req).await?;
    let path = source.path.clone();
    // The trace id is task-local: read it here, not on the blocking thread.
    let meta = TraceMeta {
        trace_id: current_trace_id(),
    };
    // Wait for a free slot (bounded memory: each analysis holds its decoded file), but not
    // forever: a client gets a clear 503 rather than a hung request.
    let permit =
        tokio::time::timeout(SYNC_SLOT_WAIT, state.sync_analyses.clone().acquire_owned()).await;
    let Ok(Ok(permit)) = permit else {
        return Err(ApiError::new(
            crate::error::Code::ServiceUnavailable,
            "Every synchronous analysis slot is busy; try again shortly, or use /v1/analyze/upload.",
        ));
    };
    let result = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        analyse(&path)
    })
    .await;
    drop(source);
    let report = result.map_err(ApiError::internal)??;
    Ok(Json(AnalysisBody { report, meta }))
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
        super::jobs::check_declared_length(state, req.headers())?;
        let multipart = Multipart::from_request(req, state).await.map_err(|e| {
            ApiError::invalid(format!("Malformed multipart body: {}", e.body_text()))
        })?;
        let mut sub = receive(state, multipart).await?;
        let guard = crate::media::LocalFile::temporary(PathBuf::from(&sub.upload.path));
        if let Some(name) = sub.fields.keys().next() {
            return Err(ApiError::invalid(format!(
                "Unknown field `{}`: this endpoint takes only the `audio` file.",
                crate::error::shown_name(name)
            )));
        }
        spill(&mut sub.upload).await?;
        return Ok(Source {
            path: PathBuf::from(sub.upload.path),
            _temporary: Some(guard),
        });
    }
    if content_type.starts_with("application/json") {
        let body = body::read_json(req).await?;
        let url = parse_url_body(&body)?;
        let location = resolve_media_url(state, &url).await?;
        // A result in object storage is analysed from a scratch copy.
        let copy = state
            .media
            .local_copy(&location)
            .await
            .map_err(|e| match e {
                crate::media::CopyError::Gone => {
                    ApiError::not_found("This file is no longer stored.")
                }
                crate::media::CopyError::Unavailable(_) => ApiError::new(
                    crate::error::Code::ServiceUnavailable,
                    "The media storage did not answer; try again shortly.",
                ),
            })?;
        return Ok(Source {
            path: copy.path.clone(),
            _temporary: Some(copy),
        });
    }
    Err(ApiError::invalid(
        "Send the audio as multipart/form-data (field `audio`) or JSON {\"url\": …} naming a \
         file this server serves.",
    ))
}

/// The `url` of a JSON body ([`MediaUrl`]); nothing else is allowed in it.
fn parse_url_body(body: &Value) -> ApiResult<String> {
    Ok(JsonBody::<MediaUrl>::from_value(body.clone())?.body.url)
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
        for (body, message) in [
            (json!({"url": 5}), "`url` must be a string."),
            (json!({"url": null}), "`url` must be a string."),
            (json!({}), "`url` is required."),
            (
                json!({"url": "x", "extra": 1}),
                "Unknown field `extra`: the JSON body takes only `url`.",
            ),
            (json!(["url"]), "The JSON body must be an object."),
            (
                json!({"url": "x".repeat(2049)}),
                "`url` must be 1 to 2048 characters.",
            ),
            (json!({"url": ""}), "`url` must be 1 to 2048 characters."),
        ] {
            let err = parse_url_body(&body).unwrap_err();
            assert_eq!(err.message, message, "{body}");
        }
    }
}
