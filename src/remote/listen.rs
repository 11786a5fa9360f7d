//! `listen`: a local webhook inbox that becomes the jobs endpoint, prints each event (with its
//! signature check), relays job and generation events to their own `--forward…` URLs with the
//! app's answer passed back, and puts the previous endpoint URL back on exit. With `--json`, each
//! event is one JSON object per line on stdout, and the notes around them go to stderr.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use super::client::Client;
use crate::api::webhook::EndpointBody;
use crate::views::{GenerationBody, JobEvent};

/// Where `listen` relays events, by kind.
#[derive(Debug, Clone, Default)]
pub(super) struct Forward {
    /// Job events (`--forward-to`).
    pub jobs: Option<String>,
    /// Generation events (`--forward-generations-to`).
    pub generations: Option<String>,
}

/// What `listen` needs in its handler.
#[derive(Clone)]
pub(super) struct Inbox {
    server: std::sync::Arc<Client>,
    forward: Forward,
    /// One JSON object per event on stdout.
    json: bool,
    http: reqwest::Client,
    /// This inbox's own URL, as it is named in [`VIA_HEADER`].
    me: String,
    /// Cancelled when stdout is gone (`listen --json | head -1`): `listen` then stops as on
    /// Ctrl-C, restoring the endpoint URL, instead of answering nothing.
    closed: tokio_util::sync::CancellationToken,
}

impl Inbox {
    /// Prints one line on stdout; a closed stdout stops `listen`.
    fn say(&self, line: &str) {
        if !out(line) {
            self.closed.cancel();
        }
    }
}

/// Writes one line on stdout without panicking; false once stdout is closed.
fn out(line: &str) -> bool {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .is_ok()
}

/// A note for the person watching: on stdout, or on stderr when stdout carries JSON lines.
/// Never panics on a closed stream.
macro_rules! note {
    ($json:expr, $($arg:tt)*) => {
        if $json {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), $($arg)*);
        } else {
            let _ = out(&format!($($arg)*));
        }
    };
}

pub(super) async fn listen(
    c: &Client,
    forward: Forward,
    port: u16,
    json: bool,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let ours = listener.local_addr()?;
    for (flag, target) in [
        ("--forward-to", &forward.jobs),
        ("--forward-generations-to", &forward.generations),
    ] {
        if let Some(target) = target {
            check_forward(flag, target, ours.port())?;
        }
    }
    // Listening for Ctrl-C and SIGTERM from before the endpoint changes: a stop from then on
    // puts it back.
    let stop = crate::app::shutdown_signal();
    // A closed terminal (SIGHUP) too: `listen` lives in one.
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let url = format!("http://{ours}/webhook");
    // Put back on exit, so a stopped `listen` never leaves the endpoint on a dead port. A URL
    // that is this inbox's own (left by a `listen` on this port that was killed) is not one to
    // go back to.
    let previous = c
        .tl_get_as::<EndpointBody>("/v1/webhook")
        .await?
        .url
        .filter(|p| *p != url);
    // Another `listen` may be the endpoint now (stacked `listen`s): this one then goes back, at
    // the end, to the nearest of those below it that still runs, else to the URL the bottom one
    // found; stopped in any order, the stack leaves the URL it found.
    let stack = match &previous {
        Some(p) => match another_listen(c, p).await {
            Some(below) => Stack {
                listens: std::iter::once(p.clone()).chain(below.listens).collect(),
                origin: below.origin,
            },
            None => Stack {
                listens: Vec::new(),
                origin: previous.clone(),
            },
        },
        None => Stack::default(),
    };
    let ep: EndpointBody = c
        .tl_send_as("PUT", "/v1/webhook", Some(json!({ "url": url })))
        .await?;
    note!(
        json,
        "Ready! soundcheck at {} now sends job events to {url}",
        c.base
    );
    if let Some(f) = &forward.jobs {
        note!(json, "Forwarding job events to {f}");
    }
    if let Some(f) = &forward.generations {
        note!(json, "Forwarding generation events to {f}");
    }
    if !ep.enabled {
        note!(
            json,
            "Note: the endpoint is disabled; run `soundcheck webhook enable` to receive events."
        );
    }
    match stack.listens.first() {
        Some(p) => note!(
            json,
            "(Ctrl-C to stop. The endpoint was another `listen`'s inbox, {p}: the URL then goes \
             back to it if it still runs, else to {}.)",
            stack.origin.as_deref().unwrap_or("none")
        ),
        None => note!(
            json,
            "(Ctrl-C to stop; the endpoint URL then goes back to {}.)",
            previous.as_deref().unwrap_or("none")
        ),
    }
    let answer = json!({
        LISTEN_KEY: { "server": c.base, "listens": stack.listens, "origin": stack.origin }
    });
    let inbox = Inbox {
        server: std::sync::Arc::new(c.clone()),
        forward,
        json,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        me: url.clone(),
        closed: tokio_util::sync::CancellationToken::new(),
    };
    let closed = inbox.closed.clone();
    // A later `listen` asks this one what lies below it (see `another_listen`).
    let app = axum::Router::new()
        .route(
            LISTEN_PATH,
            axum::routing::get(move || async move { axum::Json(answer) }),
        )
        .fallback(axum::routing::post(inbox_receive))
        .with_state(inbox);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            #[cfg(unix)]
            let hung_up = async move {
                match hangup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hung_up = std::future::pending::<()>();
            tokio::select! {
                _ = stop => {}
                _ = hung_up => {}
                _ = closed.cancelled() => eprintln!("stdout was closed; stopping"),
            }
        })
        .await?;
    // The nearest `listen` below that still runs, else the URL the stack found. One that stops
    // just as this one puts the URL back to it is passed over too (checked after the PUT).
    let mut back_to = stack.origin.clone();
    for below in &stack.listens {
        if another_listen(c, below).await.is_some() {
            back_to = Some(below.clone());
            break;
        }
    }
    restore_endpoint(c, &url, back_to.clone(), json).await;
    if let Some(to) = back_to.filter(|to| stack.listens.contains(to)) {
        if another_listen(c, &to).await.is_none() {
            restore_endpoint(c, &to, stack.origin.clone(), json).await;
        }
    }
    Ok(())
}

/// The inboxes an event was relayed through, in order (comma-separated URLs): each inbox adds
/// itself when it relays, and one that finds itself already there stops the circle (two `listen`s
/// forwarding to each other would otherwise bounce one event for ever).
const VIA_HEADER: &str = "x-soundcheck-listen-via";

/// Where a `listen` inbox answers what lies below it, under [`LISTEN_KEY`].
const LISTEN_PATH: &str = "/soundcheck-listen";
const LISTEN_KEY: &str = "soundcheck_listen";

/// The `listen`s below this one (nearest first) and the URL the bottom one found.
#[derive(Debug, Default, serde::Deserialize)]
struct Stack {
    listens: Vec<String>,
    origin: Option<String>,
}

/// If `url` is a running `listen` inbox on this machine, for the same server, what lies below it;
/// `None` if it is not one, or does not answer within 2 s.
async fn another_listen(c: &Client, url: &str) -> Option<Stack> {
    let mut probe = reqwest::Url::parse(url).ok()?;
    let local = match probe.host()? {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    };
    if !local || probe.scheme() != "http" {
        return None;
    }
    probe.set_path(LISTEN_PATH);
    probe.set_query(None);
    let answer = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?
        .get(probe)
        .send()
        .await
        .ok()?;
    if !answer.status().is_success() {
        return None;
    }
    let mut body: Value = answer.json().await.ok()?;
    let mine = body.get_mut(LISTEN_KEY)?.take();
    if mine.get("server").and_then(Value::as_str) != Some(c.base.as_str()) {
        return None;
    }
    serde_json::from_value(mine).ok()
}

/// A forward target must be an http(s) URL, and not this inbox itself (each event would be
/// relayed back to it without end).
fn check_forward(flag: &str, target: &str, own_port: u16) -> anyhow::Result<()> {
    let url = reqwest::Url::parse(target)
        .map_err(|e| anyhow::anyhow!("{flag} {target:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        anyhow::bail!("{flag} {target:?}: give an http:// or https:// URL with a host");
    }
    let local = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_unspecified(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback() || ip.is_unspecified(),
        None => false,
    };
    if local && url.port_or_known_default() == Some(own_port) {
        anyhow::bail!(
            "{flag} {target:?} is this inbox itself (port {own_port}); forward to your app's port"
        );
    }
    Ok(())
}

/// Sets the endpoint URL back to `previous`, unless someone changed it from `ours` meanwhile.
pub(super) async fn restore_endpoint(c: &Client, ours: &str, previous: Option<String>, json: bool) {
    let now = match c.tl_get_as::<EndpointBody>("/v1/webhook").await {
        Ok(ep) => ep.url,
        Err(e) => {
            eprintln!("could not restore the endpoint URL: {e:#}");
            return;
        }
    };
    if now.as_deref() != Some(ours) {
        note!(
            json,
            "The endpoint URL was changed while listening; left as it is."
        );
        return;
    }
    let body = json!({ "url": previous });
    match c.tl_send("PUT", "/v1/webhook", Some(body)).await {
        Ok(_) => note!(
            json,
            "Restored the endpoint URL to {}.",
            previous.as_deref().unwrap_or("none")
        ),
        Err(e) => eprintln!(
            "could not restore the endpoint URL ({e:#}); set it with `soundcheck webhook set-url`"
        ),
    }
}

/// What became of one event, as `--json` prints it.
#[derive(Debug, serde::Serialize)]
struct Received {
    /// Local time of arrival, RFC 3339 to the millisecond.
    time: String,
    /// `job.completed`, `job.failed`, `generation.completed`, `generation.failed`.
    #[serde(rename = "type")]
    event_type: String,
    /// The job or generation id.
    subject: String,
    /// `X-Tunelab-Event-Id` (job events).
    event_id: Option<String>,
    /// `verified`, `invalid`, `unsigned` (generation events), or why it was not checked.
    signature: String,
    /// Where it was relayed and what the app answered; null when it was not relayed.
    forwarded: Option<Value>,
    /// The event's body as sent.
    payload: Value,
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
    // Job events name their type in a header (and are signed); generation events are the
    // generation itself.
    let (kind, subject, target) = match header("x-tunelab-event") {
        Some(t) => {
            let event = serde_json::from_slice::<JobEvent>(&body).ok();
            let subject = event.map_or_else(|| "?".into(), |e| e.data.job_id);
            (t, subject, &inbox.forward.jobs)
        }
        None => {
            let generation = serde_json::from_slice::<GenerationBody>(&body).ok();
            let (status, id) =
                generation.map_or_else(|| ("?".to_string(), "?".to_string()), |g| (g.status, g.id));
            (
                format!("generation.{status}"),
                id,
                &inbox.forward.generations,
            )
        }
    };
    let signature = match header("x-tunelab-signature") {
        None => "unsigned".to_string(),
        Some(sig) => match inbox.server.tl_get_as::<EndpointBody>("/v1/webhook").await {
            Ok(ep) => {
                let now = chrono::Utc::now().timestamp();
                if crate::webhooks::sign::verify(&ep.secret, &sig, &body, now, 300) {
                    "verified".to_string()
                } else {
                    "invalid".to_string()
                }
            }
            Err(e) => format!("not checked ({e})"),
        },
    };
    let now = chrono::Local::now();
    let time = now.format("%H:%M:%S");
    let event_id = header("x-tunelab-event-id");
    let mut received = Received {
        time: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
        event_type: kind,
        subject,
        event_id,
        signature,
        forwarded: None,
        payload: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    if !inbox.json {
        let signature = match received.signature.as_str() {
            "verified" => "signature verified".to_string(),
            "invalid" => "signature INVALID".to_string(),
            "unsigned" => "unsigned".to_string(),
            other => format!("signature {other}"),
        };
        inbox.say(&format!(
            "{time}  --> {:<22} {}  [{signature}] {}",
            received.event_type,
            received.subject,
            received.event_id.as_deref().unwrap_or_default()
        ));
    }
    let Some(target) = target else {
        if inbox.json {
            inbox.say(&json!(received).to_string());
        }
        return StatusCode::OK.into_response();
    };
    let via = header(VIA_HEADER).unwrap_or_default();
    if via.split(", ").any(|hop| hop == inbox.me) {
        let why = format!(
            "not forwarded: this event has already passed through this inbox (a forwarding \
             loop: {via}, {})",
            inbox.me
        );
        if inbox.json {
            received.forwarded = Some(json!({ "url": target, "error": why }));
            inbox.say(&json!(received).to_string());
        } else {
            inbox.say(&format!("{time}  <-- [508] {why}"));
        }
        return (StatusCode::LOOP_DETECTED, why).into_response();
    }
    let mut req = inbox.http.post(target).body(body.clone());
    for (name, value) in headers.iter() {
        if !matches!(
            name.as_str(),
            "host" | "content-length" | "connection" | VIA_HEADER
        ) {
            req = req.header(name, value);
        }
    }
    let via = if via.is_empty() {
        inbox.me.clone()
    } else {
        format!("{via}, {}", inbox.me)
    };
    req = req.header(VIA_HEADER, via);
    let started = Instant::now();
    let (response, forwarded) = match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            let content_type = resp.headers().get(reqwest::header::CONTENT_TYPE).cloned();
            let answer = resp.bytes().await.unwrap_or_default();
            let ms = started.elapsed().as_millis();
            if !inbox.json {
                inbox.say(&format!(
                    "{time}  <-- [{}] POST {target} ({ms} ms)",
                    status.as_u16()
                ));
            }
            let mut out = (
                StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
                answer,
            )
                .into_response();
            if let Some(ct) = content_type {
                out.headers_mut()
                    .insert(axum::http::header::CONTENT_TYPE, ct);
            }
            let said = json!({ "url": target, "status": status.as_u16(), "ms": ms });
            (out, said)
        }
        Err(e) => {
            if !inbox.json {
                inbox.say(&format!("{time}  <-- [ERR] POST {target}: {e}"));
            }
            let out = (
                StatusCode::BAD_GATEWAY,
                format!("listen could not reach {target}: {e}"),
            )
                .into_response();
            (out, json!({ "url": target, "error": e.to_string() }))
        }
    };
    if inbox.json {
        received.forwarded = Some(forwarded);
        inbox.say(&json!(received).to_string());
    }
    response
}
