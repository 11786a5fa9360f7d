//! Result files at unguessable, expiring URLs: `GET /media/{token}/{filename}`, with HTTP Range
//! support (tower-http's `ServeFile`). No API key: the token is the capability.

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower::ServiceExt;
use tower_http::services::ServeFile;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};

pub fn router() -> Router<AppState> {
    Router::new().route("/media/{token}/{filename}", get(media_get))
}

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
