//! Developer tools that talk to a running server through its HTTP API, like the Stripe CLI:
//! `listen` (a local webhook inbox, optionally forwarding to your app), `trigger` (a real job or
//! generation forced down one path), `jobs list|show|tail|cancel|wait`, `deliveries list|resend`, and
//! `webhook show|set-url|enable|disable|rotate-secret`. Keys come from `--api-key` / `--ft-key`
//! (or `SOUNDCHECK_TL_KEY` / `SOUNDCHECK_FT_KEY`), else from the data directory as `soundcheck keys`
//! reads them.

//!
//! One file per seam: [`client`] (server, keys, errors, event streams), [`listen`], [`trigger`],
//! [`jobs`] (list, tail), [`deliveries`] (bulk resend) and [`print`] (tables and lines).

mod client;
mod deliveries;
mod jobs;
mod listen;
mod print;
mod trigger;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::api::admin::BalanceBody;
use crate::api::webhook::{DeliveryList, EndpointBody};
use crate::config::DataArgs;
use crate::store::webhooks::Attempt;
use crate::views::JobBody;
use client::{decode, query, segment, Client, Key};
use deliveries::{parse_since, resend_failed_since};
use jobs::{follow_job, job_error, jobs_list, jobs_tail, print_job};
use listen::listen;
use print::{print_deliveries, print_endpoint};
pub(crate) use trigger::check_params;
use trigger::trigger;

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
    /// A fleet's database (`postgres://…`): its keys, and the public URL of the API node that
    /// started last (unless --url names one). --data-dir, when given, wins.
    #[arg(long, env = "SOUNDCHECK_DATABASE")]
    pub database: Option<String>,
}

/// The commands, flattened into the binary's command list.
#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Become the jobs webhook endpoint and print each event (type, job id, signature check);
    /// with --forward-to, relay it to your app and print its status and latency. On exit
    /// (Ctrl-C, SIGTERM) the endpoint URL goes back to what it was.
    Listen {
        /// Your app's URL for job events: each is relayed with its exact body and headers, and
        /// your app's status and body are what soundcheck records.
        #[arg(long)]
        forward_to: Option<String>,
        /// Your app's URL for generation events (fire-once, unsigned; a generation's `webhook`
        /// was this inbox). Without it they are printed, not relayed.
        #[arg(long)]
        forward_generations_to: Option<String>,
        /// Print the jobs webhook signing secret (for your app's configuration) and exit.
        #[arg(long)]
        print_secret: bool,
        /// Port of the local inbox (default: any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Print each event as one JSON object per line (type, subject, signature check, your
        /// app's answer, the payload); the other notes go to stderr.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Run a real job or generation forced down one path, so its webhook is sent:
    /// job.completed, job.failed, generation.completed or generation.failed.
    Trigger {
        /// job.completed, job.failed, generation.completed or generation.failed.
        event: String,
        /// Job endpoint to run for job.* events: /v1/separate, /v1/transcribe, /v1/master or
        /// /v1/analyze/upload (the default; `separate`, `analyze` … are accepted too).
        #[arg(long)]
        endpoint: Option<String>,
        /// A request field as name=value (a form field of the job endpoint, a JSON field of
        /// the generation), checked against the server's OpenAPI document before anything runs.
        #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Print the outcome as one JSON object: the event, the final job or generation as the
        /// API answers it, and where its webhook went.
        #[arg(long)]
        json: bool,
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
        /// Print the endpoint as the API answers it (JSON).
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        action: WebhookAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsAction {
    /// The 50 most recent jobs.
    List {
        /// Print the API's answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// One job as JSON.
    Show {
        /// The job's id (`job_…`).
        id: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Print every change of status or progress as it happens, with its local time, from the
    /// jobs' live event streams: of one job until it ends, or of every new job (Ctrl-C stops).
    Tail {
        /// Follow only this job, and stop when it ends.
        id: Option<String>,
        /// Print each change as one JSON object per line: `{"time", "event", "job"}`.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Cancel a queued or running job (it ends failed with error code `cancelled`, refunded).
    Cancel {
        /// The job's id (`job_…`).
        id: String,
        /// Print the cancelled job as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Wait until a job ends; print it, and exit non-zero if it failed.
    Wait {
        /// The job's id (`job_…`).
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
        /// How many attempts, newest first (1 to 100).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print the API's answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Send an event again now (a `del_…` or `evt_…` id), or with --failed-since every event
    /// whose latest attempt failed since then.
    Resend {
        /// The attempt (`del_…`) or event (`evt_…`) to send again.
        #[arg(required_unless_present = "failed_since")]
        id: Option<String>,
        /// Resend each event whose latest attempt failed at or after this time: RFC 3339
        /// (`2026-12-05T18:00:00Z`) or an age (`90s`, `30m`, `2h`, `1d`). Looks at the 100
        /// most recent attempts.
        #[arg(long, conflicts_with = "id")]
        failed_since: Option<String>,
        /// With --failed-since: `job` (default) or `generation` events.
        #[arg(long, default_value = "job", value_parser = ["job", "generation"])]
        of: String,
        /// Print the new attempts as JSON.
        #[arg(long)]
        json: bool,
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
        /// The receiver's URL, or `none` to clear it.
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

impl RemoteCommand {
    /// `listen`, which runs until stopped (see `main`'s SIGPIPE handling).
    pub fn is_listen(&self) -> bool {
        matches!(self, RemoteCommand::Listen { .. })
    }
}

/// Runs a command to completion (or until Ctrl-C for `listen` and `jobs tail`). With `--json`,
/// a command prints the API's answer, or for a stream (`listen`, `jobs tail`) one JSON object per
/// line, and nothing else on stdout.
pub fn run(cmd: RemoteCommand) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        match cmd {
            RemoteCommand::Listen {
                forward_to,
                forward_generations_to,
                print_secret,
                port,
                json,
                remote,
            } => {
                let c = Client::new(&remote).await?;
                if print_secret {
                    let ep: EndpointBody = c.tl_get_as("/v1/webhook").await?;
                    if json {
                        println!("{}", serde_json::json!({ "secret": ep.secret }));
                    } else {
                        println!("{}", ep.secret);
                    }
                    return Ok(());
                }
                let forward = listen::Forward {
                    jobs: forward_to,
                    generations: forward_generations_to,
                };
                listen(&c, forward, port, json).await
            }
            RemoteCommand::Trigger {
                event,
                endpoint,
                params,
                json,
                remote,
            } => {
                trigger(
                    &Client::new(&remote).await?,
                    &event,
                    endpoint.as_deref(),
                    &params,
                    json,
                )
                .await
            }
            RemoteCommand::Jobs { action } => match action {
                JobsAction::List { json, remote } => {
                    jobs_list(&Client::new(&remote).await?, json).await
                }
                JobsAction::Show { id, remote } => {
                    let job = Client::new(&remote)
                        .await?
                        .tl_get(&format!("/v1/jobs/{}", segment(&id)?))
                        .await?;
                    println!("{}", serde_json::to_string_pretty(&job)?);
                    Ok(())
                }
                JobsAction::Tail {
                    id: Some(id),
                    json,
                    remote,
                } => {
                    let c = Client::new(&remote).await?;
                    follow_job(&c, &id, json, true).await.map(|_| ())
                }
                JobsAction::Tail {
                    id: None,
                    json,
                    remote,
                } => jobs_tail(&Client::new(&remote).await?, json).await,
                JobsAction::Cancel { id, json, remote } => {
                    let c = Client::new(&remote).await?;
                    let job: JobBody = c
                        .tl_send_as("DELETE", &format!("/v1/jobs/{}", segment(&id)?), None)
                        .await?;
                    print_job(&job, json)
                }
                JobsAction::Wait { id, json, remote } => {
                    let c = Client::new(&remote).await?;
                    let path = format!("/v1/jobs/{}/events", segment(&id)?);
                    let (done, _) = c.follow_on(&path, Key::Jobs, true, |_, _| {}).await?;
                    let job: JobBody = decode(done, &path)?;
                    print_job(&job, json)?;
                    if job.status == "failed" {
                        bail!("job {id} failed: {}", job_error(&job));
                    }
                    Ok(())
                }
            },
            RemoteCommand::Deliveries { action } => match action {
                DeliveriesAction::List {
                    of,
                    limit,
                    json,
                    remote,
                } => {
                    let mut path = format!("/v1/webhook/deliveries?limit={limit}");
                    if let Some(of) = of {
                        path.push_str(&format!("&of={}", query(&of)));
                    }
                    let list: DeliveryList = Client::new(&remote).await?.tl_get_as(&path).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&list)?);
                    } else {
                        print_deliveries(&list.data);
                    }
                    Ok(())
                }
                DeliveriesAction::Resend {
                    id: Some(id),
                    json,
                    remote,
                    ..
                } => {
                    let path = format!("/v1/webhook/deliveries/{}/resend", segment(&id)?);
                    let a: Attempt = Client::new(&remote)
                        .await?
                        .tl_send_as("POST", &path, None)
                        .await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&[&a])?);
                    } else {
                        print_deliveries(&[a]);
                    }
                    Ok(())
                }
                DeliveriesAction::Resend {
                    id: None,
                    failed_since,
                    of,
                    json,
                    remote,
                } => {
                    let raw = failed_since.unwrap_or_default();
                    // Checked before anything is sent.
                    let since = parse_since(&raw, chrono::Utc::now())?;
                    resend_failed_since(&Client::new(&remote).await?, since, &of, json).await
                }
            },
            RemoteCommand::Webhook { json, action } => {
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
                let ep: EndpointBody = Client::new(&remote)
                    .await?
                    .tl_send_as(method, path, body)
                    .await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&ep)?);
                } else {
                    print_endpoint(&ep);
                }
                Ok(())
            }
        }
    })
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
        database: None,
    };
    let rt = tokio::runtime::Runtime::new()?;
    let body: BalanceBody = rt.block_on(async {
        let c = Client::new(&remote).await?;
        c.tl_send_as("POST", "/v1/credits", Some(json!({ "amount": amount })))
            .await
    })?;
    Ok(body.balance)
}
