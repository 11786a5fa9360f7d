//! The developer dashboard at `/`: plain HTML, JS and CSS compiled into the binary (no CDN, no
//! build step), polling the server's own API once a second. The page needs the API keys; it gets
//! them from `GET /dashboard/config`, which answers only clients connecting from a loopback
//! address (anyone who can reach that can also run `soundcheck keys` on this machine). Other
//! clients get `404`, and the page tells them to use the API.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};

const INDEX: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(dashboard_index))
        .route("/dashboard/app.js", get(dashboard_js))
        .route("/dashboard/app.css", get(dashboard_css))
        .route("/dashboard/config", get(dashboard_config))
}

async fn dashboard_index() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX)
}

async fn dashboard_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
}

async fn dashboard_css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS)
}

/// The base URL, both keys and the installed engines, for loopback clients only.
async fn dashboard_config(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> ApiResult<impl IntoResponse> {
    if !peer.ip().is_loopback() {
        return Err(ApiError::not_found(
            "The dashboard's keys are served to this machine only.",
        ));
    }
    let engines: Vec<(String, String)> = state.registry.describe();
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "base_url": &*state.public_url,
            "ft_key": state.secrets.ft_key,
            "tl_key": state.secrets.tl_key,
            "engines": engines,
            "version": env!("CARGO_PKG_VERSION"),
        })),
    ))
}
