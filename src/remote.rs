//! Developer tools that talk to a running server through its HTTP API, like the Stripe CLI:
//! `listen` (a local webhook inbox, optionally forwarding to your app), `trigger` (a real job or
//! generation forced down one path), `jobs list|show|tail|cancel|wait`, `deliveries list|resend`, and
//! `webhook show|set-url|enable|disable|rotate-secret`. Keys come from `--api-key` / `--ft-key`
//! (or `SOUNDCHECK_TL_KEY` / `SOUNDCHECK_FT_KEY`), else from the data directory as `soundcheck keys`
//! reads them.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::config::DataArgs;

/// Where the server is and which keys to use. With neither `--url` nor `--data-dir`, the server
/// `soundcheck serve` recorded as running on this machine is used (see the `instances`
/// module; `soundcheck servers` lists them).
#[derive(Debug, Clone, Args)]
pub struct RemoteArgs {
    /// Base URL of the server (default: the running server, else http://127.0.0.1:8080).
    #[arg(long, env = "SOUNDCHECK_URL")]
    pub url: Option<String>,
    /// Jobs API key (Bearer); default: read from the data directory.
    #[arg(long, env = "SOUNDCHECK_TL_KEY")]
    pub api_key: Option<String>,
    /// Generations API key (X-API-Key); default: read from the data directory.
    #[arg(long, env = "SOUNDCHECK_FT_KEY")]
    pub ft_key: Option<String>,
    #[command(flatten)]
    pub data: DataArgs,
}

/// The commands, flattened into the binary's command list.
#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Become the jobs webhook endpoint and print each event (type, job id, signature check);
    /// with --forward-to, relay it to your app and print its status and latency.
    Listen {
        /// Your app's webhook URL: each event is relayed with its exact body and headers.
        #[arg(long)]
        forward_to: Option<String>,
        /// Port of the local inbox (default: any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Run a real job or generation forced down one path, so its webhook is sent:
    /// job.completed, job.failed, generation.completed or generation.failed.
    Trigger {
        event: String,
        /// Job endpoint to run for job.* events.
        #[arg(long, default_value = "/v1/analyze/upload")]
        endpoint: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// List, show or follow jobs.
    Jobs {
        #[command(subcommand)]
        action: JobsAction,
    },
    /// The webhook delivery log: list attempts, resend one.
    Deliveries {
        #[command(subcommand)]
        action: DeliveriesAction,
    },
    /// The jobs webhook endpoint: show, set-url, enable, disable, rotate-secret.
    Webhook {
        #[command(subcommand)]
        action: WebhookAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsAction {
    /// The 50 most recent jobs.
    List(RemoteArgs),
    /// One job as JSON.
    Show {
        id: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Print every change of status or progress as it happens, from the jobs' live event
    /// streams: of one job until it ends, or of every new job (Ctrl-C stops).
    Tail {
        /// Follow only this job, and stop when it ends.
        id: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Cancel a queued or running job (it ends failed with error code `cancelled`, refunded).
    Cancel {
        id: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Wait until a job ends; print it, and exit non-zero if it failed.
    Wait {
        id: String,
        /// Print the final job as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeliveriesAction {
    /// The most recent delivery attempts.
    List {
        /// `job` (default), `generation`, or a `job_…`/`gen_…` id.
        #[arg(long)]
        of: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Send an event again now (a `del_…` or `evt_…` id).
    Resend {
        id: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhookAction {
    /// The endpoint's URL, state and secret.
    Show(RemoteArgs),
    /// Set the endpoint URL (`none` clears it).
    SetUrl {
        #[arg(value_name = "URL")]
        new_url: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Re-enable the endpoint; held events are sent now.
    Enable(RemoteArgs),
    /// Pause deliveries (events are kept).
    Disable(RemoteArgs),
    /// Replace the signing secret.
    RotateSecret(RemoteArgs),
}

/// Runs a command to completion (or until Ctrl-C for `listen` and `jobs tail`).
pub fn run(cmd: RemoteCommand) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        match cmd {
            RemoteCommand::Listen {
                forward_to,
                port,
                remote,
            } => listen(&Client::new(&remote)?, forward_to, port).await,
            RemoteCommand::Trigger {
                event,
                endpoint,
                remote,
            } => trigger(&Client::new(&remote)?, &event, &endpoint).await,
            RemoteCommand::Jobs { action } => match action {
                JobsAction::List(r) => jobs_list(&Client::new(&r)?).await,
                JobsAction::Show { id, remote } => {
                    let job = Client::new(&remote)?
                        .tl_get(&format!("/v1/jobs/{id}"))
                        .await?;
                    println!("{}", serde_json::to_string_pretty(&job)?);
                    Ok(())
                }
                JobsAction::Tail {
                    id: Some(id),
                    remote,
                } => {
                    let c = Client::new(&remote)?;
                    follow_job(&c, &id).await.map(|_| ())
                }
                JobsAction::Tail { id: None, remote } => jobs_tail(&Client::new(&remote)?).await,
                JobsAction::Cancel { id, remote } => {
                    let c = Client::new(&remote)?;
                    let job = c.tl_send("DELETE", &format!("/v1/jobs/{id}"), None).await?;
                    println!("{}", job_line(&job));
                    Ok(())
                }
                JobsAction::Wait { id, json, remote } => {
                    let c = Client::new(&remote)?;
                    let path = format!("/v1/jobs/{id}/events");
                    let job = c.follow(&path, Key::Jobs, |_, _| {}).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&job)?);
                    } else {
                        println!("{}", job_line(&job));
                    }
                    if job["status"] == "failed" {
                        bail!(
                            "job {id} failed: {}: {}",
                            job["error"]["code"].as_str().unwrap_or("?"),
                            job["error"]["message"].as_str().unwrap_or("")
                        );
                    }
                    Ok(())
                }
            },
            RemoteCommand::Deliveries { action } => match action {
                DeliveriesAction::List { of, limit, remote } => {
                    let mut path = format!("/v1/webhook/deliveries?limit={limit}");
                    if let Some(of) = of {
                        path.push_str(&format!("&of={of}"));
                    }
                    let list = Client::new(&remote)?.tl_get(&path).await?;
                    print_deliveries(&list["data"]);
                    Ok(())
                }
                DeliveriesAction::Resend { id, remote } => {
                    let path = format!("/v1/webhook/deliveries/{id}/resend");
                    let a = Client::new(&remote)?.tl_send("POST", &path, None).await?;
                    print_deliveries(&json!([a]));
                    Ok(())
                }
            },
            RemoteCommand::Webhook { action } => {
                let (remote, method, path, body) = match action {
                    WebhookAction::Show(r) => (r, "GET", "/v1/webhook", None),
                    WebhookAction::SetUrl { new_url, remote } => {
                        let url = if new_url == "none" {
                            Value::Null
                        } else {
                            json!(new_url)
                        };
                        (remote, "PUT", "/v1/webhook", Some(json!({ "url": url })))
                    }
                    WebhookAction::Enable(r) => (r, "POST", "/v1/webhook/enable", None),
                    WebhookAction::Disable(r) => (r, "POST", "/v1/webhook/disable", None),
                    WebhookAction::RotateSecret(r) => {
                        (r, "POST", "/v1/webhook/rotate-secret", None)
                    }
                };
                let ep = Client::new(&remote)?.tl_send(method, path, body).await?;
                print_endpoint(&ep);
                Ok(())
            }
        }
    })
}

/// An HTTP client for one server with its keys.
#[derive(Clone)]
struct Client {
    base: String,
    tl_key: String,
    ft_key: String,
    /// Where each key came from ("--api-key", "data directory …"), for the `401` message.
    tl_source: String,
    ft_source: String,
    http: reqwest::Client,
}

impl Client {
    fn new(args: &RemoteArgs) -> anyhow::Result<Client> {
        let target = crate::instances::resolve(
            args.url.as_deref(),
            args.data.data_dir.as_deref(),
            &args.data.path(),
        )?;
        let flag = |name: &str, env: &str| {
            if std::env::var_os(env).is_some() {
                format!("{name} / {env}")
            } else {
                name.to_string()
            }
        };
        let from_dir = || {
            crate::config::DataArgs {
                data_dir: Some(target.data_dir.clone()),
            }
            .existing()
            .and_then(|dir| crate::app::read_secrets(&dir))
            .map_err(|e| match unreachable(&target.url) {
                // Nothing answers there: that, not the keys, is what to fix first.
                Some(why) => anyhow!(
                    "could not reach a soundcheck server at {} (chosen from {}): {why}. Start \
                     one with `soundcheck serve`, or name a running one with --url or --data-dir \
                     (`soundcheck servers` lists them)",
                    target.url,
                    target.how
                ),
                None => e.context(format!(
                    "reading the keys of data directory {} (chosen from {}); pass --data-dir, \
                     or the keys with --api-key and --ft-key",
                    target.data_dir.display(),
                    target.how
                )),
            })
        };
        let dir_source = format!(
            "data directory {} (chosen from {})",
            target.data_dir.display(),
            target.how
        );
        let (tl_key, ft_key, tl_source, ft_source) = match (&args.api_key, &args.ft_key) {
            (Some(tl), Some(ft)) => (
                tl.clone(),
                ft.clone(),
                flag("--api-key", "SOUNDCHECK_TL_KEY"),
                flag("--ft-key", "SOUNDCHECK_FT_KEY"),
            ),
            (tl, ft) => {
                let secrets = from_dir()?;
                (
                    tl.clone().unwrap_or(secrets.tl_key),
                    ft.clone().unwrap_or(secrets.ft_key),
                    match tl {
                        Some(_) => flag("--api-key", "SOUNDCHECK_TL_KEY"),
                        None => dir_source.clone(),
                    },
                    match ft {
                        Some(_) => flag("--ft-key", "SOUNDCHECK_FT_KEY"),
                        None => dir_source.clone(),
                    },
                )
            }
        };
        Ok(Client {
            base: target.url,
            tl_key,
            ft_key,
            tl_source,
            ft_source,
            http: reqwest::Client::new(),
        })
    }

    /// The JSON of a 2xx answer, or an error naming the envelope's code and message; a `401`
    /// also says where the key came from and how to pass the right one.
    async fn answer(&self, resp: reqwest::Response, key: Key) -> anyhow::Result<Value> {
        let status = resp.status();
        let result = answer(resp).await;
        if status != reqwest::StatusCode::UNAUTHORIZED {
            return result;
        }
        let (name, source, flag, env) = match key {
            Key::Jobs => (
                "jobs API key",
                &self.tl_source,
                "--api-key",
                "SOUNDCHECK_TL_KEY",
            ),
            Key::Generations => (
                "generations API key",
                &self.ft_source,
                "--ft-key",
                "SOUNDCHECK_FT_KEY",
            ),
        };
        result.map_err(|e| {
            anyhow!(
                "{e}\nThe {name} sent came from {source}, and the server at {} does not accept it.\n\
                 Fix: pass the data directory that server was started with (`--data-dir DIR`; its \
                 start-up banner prints it), or its key with {flag} (or {env}; the banner and \
                 `soundcheck keys --data-dir DIR` print it).",
                self.base
            )
        })
    }

    /// Sends a request, naming the server and what to check when it cannot be reached.
    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        req.send().await.map_err(|e| {
            anyhow!(
                "could not reach soundcheck at {}: {e}. Is `soundcheck serve` running there? \
                 (--url names another server)",
                self.base
            )
        })
    }

    async fn tl_get(&self, path: &str) -> anyhow::Result<Value> {
        self.tl_send("GET", path, None).await
    }

    /// A jobs-API request; a non-2xx answer becomes an error carrying the envelope's message.
    async fn tl_send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method.parse()?, format!("{}{path}", self.base))
            .bearer_auth(&self.tl_key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = self.send(req).await?;
        self.answer(resp, Key::Jobs).await
    }
}

impl Client {
    /// Reads an item's `/events` stream (server-sent events), calling `on(event, data)` for
    /// each event, until `done`; returns the final object.
    async fn follow(
        &self,
        path: &str,
        key: Key,
        mut on: impl FnMut(&str, &Value),
    ) -> anyhow::Result<Value> {
        use futures_util::StreamExt;
        let req = self.http.get(format!("{}{path}", self.base));
        let req = match key {
            Key::Jobs => req.bearer_auth(&self.tl_key),
            Key::Generations => req.header("X-API-Key", &self.ft_key),
        };
        let resp = self.send(req).await?;
        if !resp.status().is_success() {
            self.answer(resp, key).await?;
            bail!("{path} did not answer with an event stream");
        }
        let mut body = resp.bytes_stream();
        let (mut buf, mut event, mut data) = (String::new(), String::new(), String::new());
        while let Some(chunk) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk?));
            while let Some(end) = buf.find('\n') {
                let line: String = buf.drain(..=end).collect();
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if !data.is_empty() {
                        let value: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                        on(&event, &value);
                        if event == "done" {
                            return Ok(value);
                        }
                    }
                    event.clear();
                    data.clear();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                } // ':' lines are keep-alive comments
            }
        }
        bail!("the event stream of {path} ended before the item did (is the server stopping?)")
    }
}

/// Why nothing accepts connections at `url`'s host and port (`None`: something does, or the
/// URL cannot be checked). A quick TCP connect, so a wrong `--url` is reported as such before
/// any key is looked for.
fn unreachable(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let addrs = match parsed.socket_addrs(|| None) {
        Ok(a) => a,
        Err(e) => return Some(e.to_string()),
    };
    let mut last = None;
    for addr in addrs {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(_) => return None,
            Err(e) => last = Some(e.to_string()),
        }
    }
    last
}

/// Which of the two keys a request carried (for the `401` message).
#[derive(Debug, Clone, Copy)]
enum Key {
    Jobs,
    Generations,
}

/// The JSON of a 2xx answer, or an error naming the envelope's code and message.
async fn answer(resp: reqwest::Response) -> anyhow::Result<Value> {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        Ok(body)
    } else {
        bail!(
            "{} {}: {}",
            status.as_u16(),
            body["error"]["code"].as_str().unwrap_or("error"),
            body["error"]["message"].as_str().unwrap_or("")
        )
    }
}

fn print_endpoint(ep: &Value) {
    println!("url:      {}", ep["url"].as_str().unwrap_or("(none)"));
    println!("enabled:  {}", ep["enabled"]);
    println!("secret:   {}", ep["secret"].as_str().unwrap_or(""));
    println!("failures: {}", ep["consecutive_failures"]);
    if let Some(reason) = ep["disabled_reason"].as_str() {
        println!("disabled: {reason}");
    }
    if let Some(n) = ep["released_events"].as_u64() {
        println!("released: {n} held event(s)");
    }
}

fn print_deliveries(list: &Value) {
    println!(
        "{:<30} {:<22} {:<30} {:>3} {:<10} {:>6}  {}",
        "ID", "EVENT", "SUBJECT", "#", "RESULT", "MS", "AT"
    );
    for a in list.as_array().into_iter().flatten() {
        let result = match (a["succeeded"].as_bool(), a["response_status"].as_i64()) {
            (Some(true), Some(s)) => format!("ok {s}"),
            (_, Some(s)) => format!("fail {s}"),
            _ => "fail".to_string(),
        };
        println!(
            "{:<30} {:<22} {:<30} {:>3} {:<10} {:>6}  {}{}",
            a["id"].as_str().unwrap_or(""),
            a["event_type"].as_str().unwrap_or(""),
            a["subject_id"].as_str().unwrap_or(""),
            a["attempt"],
            result,
            a["duration_ms"],
            a["created_at"].as_str().unwrap_or(""),
            a["error"]
                .as_str()
                .map(|e| format!("  ({e})"))
                .unwrap_or_default(),
        );
    }
}

fn job_line(j: &Value) -> String {
    let progress = j["progress"]
        .as_f64()
        .map(|p| format!("{:>3.0}%", p * 100.0))
        .unwrap_or_else(|| "   -".into());
    let error = j["error"]["code"]
        .as_str()
        .map(|c| format!("  {c}: {}", j["error"]["message"].as_str().unwrap_or("")))
        .unwrap_or_default();
    format!(
        "{:<30} {:<20} {:<10} {}  {}{}",
        j["job_id"].as_str().unwrap_or(""),
        j["endpoint"].as_str().unwrap_or(""),
        j["status"].as_str().unwrap_or(""),
        progress,
        j["created_at"].as_str().unwrap_or(""),
        error
    )
}

async fn jobs_list(c: &Client) -> anyhow::Result<()> {
    let list = c.tl_get("/v1/jobs").await?;
    println!(
        "{:<30} {:<20} {:<10} {:>4}  CREATED",
        "ID", "ENDPOINT", "STATUS", "PROG"
    );
    for j in list["data"].as_array().into_iter().flatten() {
        println!("{}", job_line(j));
    }
    Ok(())
}

/// Prints a job's line at each event of its live stream until it ends; returns the final job.
async fn follow_job(c: &Client, id: &str) -> anyhow::Result<Value> {
    let mut last = Value::Null;
    c.follow(
        &format!("/v1/jobs/{id}/events"),
        Key::Jobs,
        |event, data| {
            match event {
                "progress" => last["progress"] = data["progress"].clone(),
                _ => last = data.clone(),
            }
            println!("{}", job_line(&last));
        },
    )
    .await
}

/// Looks for new jobs every half second (the list is not rate limited) and follows each one
/// that has not ended through its live event stream, printing every change.
async fn jobs_tail(c: &Client) -> anyhow::Result<()> {
    let mut seen: std::collections::HashSet<String> = Default::default();
    let mut first = true;
    loop {
        let list = c.tl_get("/v1/jobs").await?;
        let mut jobs: Vec<Value> = list["data"].as_array().cloned().unwrap_or_default();
        jobs.reverse(); // oldest first, so lines come out in order
        for j in jobs {
            let id = j["job_id"].as_str().unwrap_or("").to_string();
            if !seen.insert(id.clone()) {
                continue;
            }
            let ended = j["status"] == "completed" || j["status"] == "failed";
            if ended {
                // Began and ended between two looks: its final line only.
                if !first {
                    println!("{}", job_line(&j));
                }
                continue;
            }
            let c = c.clone();
            tokio::spawn(async move {
                if let Err(e) = follow_job(&c, &id).await {
                    eprintln!("{id}: {e:#}");
                }
            });
        }
        first = false;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// What `listen` needs in its handler.
#[derive(Clone)]
struct Inbox {
    server: std::sync::Arc<Client>,
    forward_to: Option<String>,
    http: reqwest::Client,
}

async fn listen(c: &Client, forward_to: Option<String>, port: u16) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let url = format!("http://{}/webhook", listener.local_addr()?);
    let ep = c
        .tl_send("PUT", "/v1/webhook", Some(json!({ "url": url })))
        .await?;
    println!(
        "Ready! soundcheck at {} now sends job events to {url}",
        c.base
    );
    if let Some(f) = &forward_to {
        println!("Forwarding each event to {f}");
    }
    if ep["enabled"] == false {
        println!(
            "Note: the endpoint is disabled; run `soundcheck webhook enable` to receive events."
        );
    }
    println!("(Ctrl-C to stop; the endpoint URL stays set.)");
    let inbox = Inbox {
        server: std::sync::Arc::new(c.clone()),
        forward_to,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
    };
    let app = axum::Router::new()
        .fallback(axum::routing::post(inbox_receive))
        .with_state(inbox);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// Prints one event (and relays it with `--forward-to`); answers with the app's status.
async fn inbox_receive(State(inbox): State<Inbox>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (kind, subject) = match header("x-tunelab-event") {
        Some(t) => (
            t,
            payload["data"]["job_id"]
                .as_str()
                .unwrap_or("?")
                .to_string(),
        ),
        None => (
            format!("generation.{}", payload["status"].as_str().unwrap_or("?")),
            payload["id"].as_str().unwrap_or("?").to_string(),
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
    let Some(target) = &inbox.forward_to else {
        return StatusCode::OK;
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
            println!(
                "{time}  <-- [{}] POST {target} ({} ms)",
                status.as_u16(),
                started.elapsed().as_millis()
            );
            StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY)
        }
        Err(e) => {
            println!("{time}  <-- [ERR] POST {target}: {e}");
            StatusCode::BAD_GATEWAY
        }
    }
}

/// `credits add N` while a server owns the data directory: `POST /v1/credits` to it, with the
/// directory's jobs key. Returns the new balance.
pub fn credits_add(data_dir: &std::path::Path, amount: i64) -> anyhow::Result<i64> {
    let remote = RemoteArgs {
        url: None,
        api_key: None,
        ft_key: None,
        data: DataArgs {
            data_dir: Some(data_dir.to_path_buf()),
        },
    };
    let c = Client::new(&remote)?;
    let rt = tokio::runtime::Runtime::new()?;
    let body = rt.block_on(c.tl_send("POST", "/v1/credits", Some(json!({ "amount": amount }))))?;
    body["balance"]
        .as_i64()
        .ok_or_else(|| anyhow!("no balance in {body}"))
}

/// A one-second stereo WAV (a major triad) for `trigger`: small, and real audio.
fn builtin_wav() -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 22_050,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cursor = std::io::Cursor::new(Vec::new());
    {
        let mut w = hound::WavWriter::new(&mut cursor, spec).expect("in-memory WAV");
        for i in 0..22_050 {
            let t = i as f32 / 22_050.0;
            let s: f32 = [261.63f32, 329.63, 392.0]
                .iter()
                .map(|f| (2.0 * std::f32::consts::PI * f * t).sin())
                .sum::<f32>()
                * 0.2;
            let v = (s * i16::MAX as f32) as i16;
            w.write_sample(v).expect("in-memory WAV");
            w.write_sample(v).expect("in-memory WAV");
        }
        w.finalize().expect("in-memory WAV");
    }
    cursor.into_inner()
}

async fn trigger(c: &Client, event: &str, endpoint: &str) -> anyhow::Result<()> {
    let fault = match event {
        "job.completed" | "generation.completed" => None,
        "job.failed" | "generation.failed" => Some("internal_error"),
        other => bail!(
            "unknown event {other:?}: job.completed, job.failed, generation.completed or \
             generation.failed"
        ),
    };
    if event.starts_with("job.") {
        let form = reqwest::multipart::Form::new().part(
            "audio",
            reqwest::multipart::Part::bytes(builtin_wav()).file_name("soundcheck-trigger.wav"),
        );
        let mut req = c
            .http
            .post(format!("{}{endpoint}", c.base))
            .bearer_auth(&c.tl_key)
            .multipart(form);
        if let Some(f) = fault {
            req = req.header(crate::faults::HEADER, f);
        }
        let sub = c.answer(c.send(req).await?, Key::Jobs).await?;
        let id = sub["job_id"]
            .as_str()
            .ok_or_else(|| anyhow!("no job_id in {sub}"))?;
        println!("submitted {id} to {endpoint}");
        let deadline = Instant::now() + Duration::from_secs(300);
        let job = loop {
            tokio::time::sleep(Duration::from_millis(1100)).await;
            let j = c.tl_get(&format!("/v1/jobs/{id}")).await?;
            if j["status"] == "completed" || j["status"] == "failed" {
                break j;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "job {id} did not finish in 300 s"
            );
        };
        println!("{}", job_line(&job));
        let ep = c.tl_get("/v1/webhook").await?;
        match ep["url"].as_str() {
            Some(url) => println!(
                "job.{} event queued for {url}",
                job["status"].as_str().unwrap_or("")
            ),
            None => println!(
                "no webhook endpoint is set, so the event was recorded as skipped \
                 (run `soundcheck listen` or `soundcheck webhook set-url URL`)"
            ),
        }
    } else {
        // Generation webhooks go to the URL given at submit: the jobs endpoint's, if any (so
        // `listen` sees them too).
        let ep = c.tl_get("/v1/webhook").await?;
        let mut body = json!({"tags": "soundcheck trigger, lofi piano", "duration": 2});
        if let Some(url) = ep["url"].as_str() {
            body["webhook"] = json!(url);
        }
        let mut req = c
            .http
            .post(format!("{}/v1/generations", c.base))
            .header("X-API-Key", &c.ft_key)
            .json(&body);
        if let Some(f) = fault {
            req = req.header(crate::faults::HEADER, f);
        }
        let g = c.answer(c.send(req).await?, Key::Generations).await?;
        let id = g["id"].as_str().ok_or_else(|| anyhow!("no id in {g}"))?;
        println!("submitted generation {id}");
        let deadline = Instant::now() + Duration::from_secs(300);
        let done = loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let req = c
                .http
                .get(format!("{}/v1/generations/{id}", c.base))
                .header("X-API-Key", &c.ft_key);
            let g = c.answer(c.send(req).await?, Key::Generations).await?;
            if g["status"] == "completed" || g["status"] == "failed" {
                break g;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "generation {id} did not finish in 300 s"
            );
        };
        println!(
            "{id} {}{}",
            done["status"].as_str().unwrap_or(""),
            done["errorMessage"]
                .as_str()
                .map(|m| format!(": {m}"))
                .unwrap_or_else(|| format!(" {}", done["audioUrl"].as_str().unwrap_or("")))
        );
        match body["webhook"].as_str() {
            Some(url) => println!(
                "generation.{} webhook sent to {url}",
                done["status"].as_str().unwrap_or("")
            ),
            None => println!(
                "no webhook URL: set one with `soundcheck listen` or `soundcheck webhook set-url`"
            ),
        }
    }
    Ok(())
}
