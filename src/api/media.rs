//! Result files at unguessable, expiring URLs: `GET /media/{token}/{filename}`, with HTTP Range
//! support (tower-http's `ServeFile`). No API key: the token is the capability.

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeFile;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::docs::{ErrorEnvelope, MEDIA};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(media_get))
}

/// A result file (stem, MIDI, mastered audio, generated MP3). No key: the token is the
/// capability. Supports `Range` requests.
#[utoipa::path(get, path = "/media/{token}/{filename}", tag = MEDIA,
    params(
        ("token" = String, Path, description = "128-bit random token from a result URL"),
        ("filename" = String, Path, description = "The file's name, as in the result URL"),
    ),
    responses(
        (status = 200, description = "The file", content(("audio/mpeg"), ("audio/wav"), ("audio/x-wav"), ("audio/flac"), ("audio/midi"), ("application/octet-stream"))),
        (status = 206, description = "The requested byte range", content(("audio/mpeg"), ("audio/wav"), ("audio/x-wav"), ("audio/flac"), ("audio/midi"), ("application/octet-stream"))),
        (status = 404, description = "not_found: unknown token or expired link", body = ErrorEnvelope),
        (status = 500, description = "internal_error", body = ErrorEnvelope),
    ))]
async fn media_get(
    State(state): State<AppState>,
    Path((token, filename)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let media = state
        .store
        .read(move |c| crate::store::media::get(c, &token))
        .await?
        .filter(|m| m.filename == filename)
        .ok_or_else(|| ApiError::not_found("No such file."))?;
    if media.expires_at < crate::store::now_ms() {
        return Err(ApiError::not_found("This link has expired."));
    }
    let resp = ServeFile::new(&media.path)
        .oneshot(req)
        .await
        .map_err(ApiError::internal)?;
    Ok(resp.into_response())
}
