//! `listen`: a local webhook inbox that becomes the jobs endpoint, prints each event (with its
//! signature check), relays job and generation events to their own `--forward…` URLs with the
//! app's answer passed back, and puts the previous endpoint URL back on exit.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use super::client::Client;

/// What `listen` needs in its handler.
#[derive(Clone)]
pub(super) struct Inbox {
    server: std::sync::Arc<Client>,
    /// Where job events are relayed (`--forward-to`).
    forward_to: Option<String>,
    /// Where generation events are relayed (`--forward-generations-to`).
    forward_generations_to: Option<String>,
    http: reqwest::Client,
}

pub(super) async fn listen(
    c: &Client,
    forward_to: Option<String>,
    forward_generations_to: Option<String>,
    port: u16,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let url = format!("http://{}/webhook", listener.local_addr()?);
    // Put back on exit, so a stopped `listen` never leaves the endpoint on a dead port.
    let previous = c.tl_get("/v1/webhook").await?["url"]
        .as_str()
        .map(str::to_string);
    let ep = c
        .tl_send("PUT", "/v1/webhook", Some(json!({ "url": url })))
        .await?;
    println!(
        "Ready! soundcheck at {} now sends job events to {url}",
        c.base
    );
    if let Some(f) = &forward_to {
        println!("Forwarding job events to {f}");
    }
    if let Some(f) = &forward_generations_to {
        println!("Forwarding generation events to {f}");
    }
    if ep["enabled"] == false {
        println!(
            "Note: the endpoint is disabled; run `soundcheck webhook enable` to receive events."
        );
    }
    println!(
        "(Ctrl-C to stop; the endpoint URL then goes back to {}.)",
        previous.as_deref().unwrap_or("none")
    );
    let inbox = Inbox {
        server: std::sync::Arc::new(c.clone()),
        forward_to,
        forward_generations_to,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
    };
    let app = axum::Router::new()
        .fallback(axum::routing::post(inbox_receive))
        .with_state(inbox);
    axum::serve(listener, app)
        .with_graceful_shutdown(crate::app::shutdown_signal())
        .await?;
    restore_endpoint(c, &url, previous).await;
    Ok(())
}

/// Sets the endpoint URL back to `previous`, unless someone changed it from `ours` meanwhile.
pub(super) async fn restore_endpoint(c: &Client, ours: &str, previous: Option<String>) {
    let now = match c.tl_get("/v1/webhook").await {
        Ok(ep) => ep["url"].as_str().map(str::to_string),
        Err(e) => {
            eprintln!("could not restore the endpoint URL: {e:#}");
            return;
        }
    };
    if now.as_deref() != Some(ours) {
        println!("The endpoint URL was changed while listening; left as it is.");
        return;
    }
    let body = json!({ "url": previous });
    match c.tl_send("PUT", "/v1/webhook", Some(body)).await {
        Ok(_) => println!(
            "Restored the endpoint URL to {}.",
            previous.as_deref().unwrap_or("none")
        ),
        Err(e) => eprintln!(
            "could not restore the endpoint URL ({e:#}); set it with `soundcheck webhook set-url`"
        ),
    }
}

/// Prints one event and, with a forward URL for its kind, relays it; answers with the app's
/// status and body (so the delivery log records what the app said), else `200`.
pub(super) async fn inbox_receive(
    State(inbox): State<Inbox>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (kind, subject, target) = match header("x-tunelab-event") {
        Some(t) => (
            t,
            payload["data"]["job_id"]
                .as_str()
                .unwrap_or("?")
                .to_string(),
            &inbox.forward_to,
        ),
        None => (
            format!("generation.{}", payload["status"].as_str().unwrap_or("?")),
            payload["id"].as_str().unwrap_or("?").to_string(),
            &inbox.forward_generations_to,
        ),
    };
    let signature = match header("x-tunelab-signature") {
        None => "unsigned".to_string(),
        Some(sig) => match inbox.server.tl_get("/v1/webhook").await {
            Ok(ep) => {
                let secret = ep["secret"].as_str().unwrap_or_default();
                let now = chrono::Utc::now().timestamp();
                if crate::webhooks::sign::verify(secret, &sig, &body, now, 300) {
                    "signature verified".to_string()
                } else {
                    "signature INVALID".to_string()
                }
            }
            Err(e) => format!("signature not checked ({e})"),
        },
    };
    let time = chrono::Local::now().format("%H:%M:%S");
    let event_id = header("x-tunelab-event-id").unwrap_or_default();
    println!("{time}  --> {kind:<22} {subject}  [{signature}] {event_id}");
    let Some(target) = target else {
        return StatusCode::OK.into_response();
    };
    let mut req = inbox.http.post(target).body(body.clone());
    for (name, value) in headers.iter() {
        if !matches!(name.as_str(), "host" | "content-length" | "connection") {
            req = req.header(name, value);
        }
    }
    let started = Instant::now();
    match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            let content_type = resp.headers().get(reqwest::header::CONTENT_TYPE).cloned();
            let answer = resp.bytes().await.unwrap_or_default();
            println!(
                "{time}  <-- [{}] POST {target} ({} ms)",
                status.as_u16(),
                started.elapsed().as_millis()
            );
            let mut out = (
                StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
                answer,
            )
                .into_response();
            if let Some(ct) = content_type {
                out.headers_mut()
                    .insert(axum::http::header::CONTENT_TYPE, ct);
            }
            out
        }
        Err(e) => {
            println!("{time}  <-- [ERR] POST {target}: {e}");
            (
                StatusCode::BAD_GATEWAY,
                format!("listen could not reach {target}: {e}"),
            )
                .into_response()
        }
    }
}
