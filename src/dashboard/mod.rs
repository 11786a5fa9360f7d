//! The developer dashboard at `/`: plain HTML, JS and CSS compiled into the binary (no CDN, no
//! build step), polling the server's own API once a second. The page needs the API keys; it gets
//! them from `GET /dashboard/config`, which answers only clients connecting from a loopback
//! address (anyone who can reach that can also run `soundcheck keys` on this machine). Other
//! clients get `404`, and the page tells them to use the API. The same goes for a job's uploaded
//! input (`GET /dashboard/jobs/{id}/input`), which the API never hands out but the job's detail
//! page draws beside its results.
//!
//! A loopback peer is not enough on its own: with DNS rebinding, a web page the developer visits
//! (`evil.example`) has its name re-pointed at 127.0.0.1, and the browser then connects from
//! loopback while sending `Host: evil.example`. So those routes also require the `Host` header to
//! name this machine (`localhost`, a loopback address) or the host of `--public-url`. Every
//! dashboard response forbids framing (`frame-ancestors 'none'`, `X-Frame-Options: DENY`), so no
//! other page can overlay it to click its buttons.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::api::Path;
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
        .route("/dashboard/jobs/{id}/input", get(dashboard_job_input))
        .layer(axum::middleware::map_response(forbid_framing))
}

/// No other site may frame the dashboard (clickjacking its buttons).
async fn forbid_framing(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
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

/// Refuses clients that do not connect from a loopback address, or that name another host than
/// this machine or `--public-url`'s (DNS rebinding).
fn loopback_only(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> ApiResult<()> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let public_host = state
        .config
        .public_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
    if peer.ip().is_loopback() && host.is_some_and(|h| is_local_host(h, public_host.as_deref())) {
        Ok(())
    } else {
        Err(ApiError::not_found(
            "The dashboard's keys and uploads are served to this machine only.",
        ))
    }
}

/// True when a `Host` header (with or without a port) names this machine: `localhost`, a loopback
/// address, or the configured public host.
pub fn is_local_host(host: &str, public_host: Option<&str>) -> bool {
    let host = host.trim().to_ascii_lowercase();
    // "[::1]:8080" → "::1"; "127.0.0.1:8080" → "127.0.0.1"; "localhost" stays.
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inside, tail)) if tail.is_empty() || tail.starts_with(':') => inside.to_string(),
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_string(),
            Some(_) => return false,
            None => host.clone(),
        }
    };
    let name = name.trim_end_matches('.');
    if name == "localhost" || public_host.is_some_and(|p| p.trim_matches(['[', ']']) == name) {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// The base URL, both keys, the installed engines, the model catalog with what is installed and
/// loaded, and the start-up hints (what to install next), for loopback clients only.
async fn dashboard_config(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    loopback_only(&state, peer, &headers)?;
    let engines: Vec<(String, String)> = state.registry.describe();
    let data_dir = state.config.data_dir.clone();
    let models = tokio::task::spawn_blocking(move || crate::models::rows(&data_dir))
        .await
        .map_err(ApiError::internal)?;
    // A model is loaded when an engine or generator of this server runs it; one installed after
    // start (or a second separator) is on disk but unused until the next `serve`.
    let models: Vec<_> = models
        .into_iter()
        .map(|m| {
            let loaded = engines.iter().any(|(_, name)| *name == m.id);
            let mut v = json!(m);
            v["loaded"] = json!(loaded);
            v
        })
        .collect();
    let secrets = state.secrets.current();
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "base_url": &*state.public_url,
            // Copyable commands carry `--data-dir`, so they read this server's keys.
            "data_dir": std::path::absolute(&state.config.data_dir).unwrap_or_else(|_| state.config.data_dir.clone()),
            "ft_key": secrets.ft_key,
            "tl_key": secrets.tl_key,
            "engines": engines,
            "default_generator": state.registry.default_generator().map(|g| g.name().to_string()),
            "models": models,
            "models_dir": crate::models::models_dir(&state.config.data_dir),
            "hints": crate::engines::hints(&state.registry),
            "version": env!("CARGO_PKG_VERSION"),
        })),
    ))
}

/// The audio file uploaded for a job, for the detail page's player and waveform: from disk with
/// Range support, or from its row while a small upload is still held in the database; loopback
/// clients only (the API itself never serves uploads back).
async fn dashboard_job_input(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    loopback_only(&state, peer, req.headers())?;
    let job = state
        .store
        .read(move |c| crate::store::jobs::get(c, &id))
        .await?
        .ok_or_else(|| ApiError::not_found("No job with that id."))?;
    if job.upload_inline {
        // A small upload waits in the database until a worker writes it out: sent whole (a
        // `Range` header is ignored, as HTTP allows). Gone by now means it is on disk.
        let id = job.id.clone();
        let inline = state
            .store
            .read(move |c| crate::store::jobs::inline_upload(c, &id))
            .await?;
        if let Some(bytes) = inline {
            return Ok((
                [
                    (header::CONTENT_TYPE, "application/octet-stream"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                bytes,
            )
                .into_response());
        }
    }
    let mut resp = state.media.serve(&job.upload_path, req).await?;
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::is_local_host;

    #[test]
    fn only_names_of_this_machine_or_the_public_host_count_as_local() {
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "127.1.2.3:1",
            "localhost:8080",
            "LOCALHOST",
            "localhost.",
            "[::1]:8080",
            "[::1]",
        ] {
            assert!(is_local_host(ok, None), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "10.0.0.1:8080",
            "[::1]x",
            "[fe80::1]:80",
            "localhost:80x",
            "",
            "0.0.0.0:8080",
        ] {
            assert!(!is_local_host(bad, None), "{bad}");
        }
        assert!(is_local_host("studio.lan:8443", Some("studio.lan")));
        assert!(!is_local_host("other.lan:8443", Some("studio.lan")));
    }
}
