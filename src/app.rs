//! `AppState`, the router and `run()`: opens the store, recovers interrupted work, starts the
//! workers and the webhook dispatcher, serves HTTP until the shutdown token fires, then drains.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;

use crate::config::Config;
use crate::error::{envelope, Code, TRACE_ID};
use crate::jobs::registry::Registry;
use crate::jobs::worker::{ProgressMap, RunStops, Workers};
use crate::store::{self, Store};
use crate::webhooks::dispatch::{DispatchConfig, Dispatcher};

/// The keys and secret the server accepts and signs with.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// Generations API key (`X-API-Key`).
    pub ft_key: String,
    /// Jobs API key (`Authorization: Bearer`).
    pub tl_key: String,
    /// The webhook signing secret at start (rotation changes the stored one).
    pub webhook_secret: String,
}

impl Secrets {
    /// One `NAME=value` line each, as `serve` and `keys` print them.
    pub fn env_lines(&self) -> String {
        format!(
            "SOUNDCHECK_FT_KEY={}\nSOUNDCHECK_TL_KEY={}\nSOUNDCHECK_WEBHOOK_SECRET={}\n",
            self.ft_key, self.tl_key, self.webhook_secret
        )
    }
}

/// The node's [`Secrets`], replaceable while it runs.
#[derive(Clone)]
pub struct LiveSecrets(Arc<std::sync::RwLock<Arc<Secrets>>>);

impl LiveSecrets {
    pub fn new(secrets: Secrets) -> LiveSecrets {
        LiveSecrets(Arc::new(std::sync::RwLock::new(Arc::new(secrets))))
    }

    /// The keys now.
    pub fn current(&self) -> Arc<Secrets> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn replace(&self, secrets: Secrets) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(secrets);
    }
}

/// How often a fleet node re-reads the keys from the database.
const KEYS_EVERY: Duration = Duration::from_secs(2);

/// On a fleet's database, keeps this node's API keys equal to the fleet's: a node started with
/// `--tl-key`/`--ft-key` stores the new key, and every other node takes it within
/// [`KEYS_EVERY`] (each used to keep the key it read at start, so behind a load balancer about
/// half of all requests were refused).
async fn follow_fleet_keys(store: Store, secrets: LiveSecrets, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(KEYS_EVERY) => {}
        }
        let read = store
            .read(|c| {
                Ok((
                    store::settings::get(c, "ft_key")?,
                    store::settings::get(c, "tl_key")?,
                ))
            })
            .await;
        let Ok((Some(ft_key), Some(tl_key))) = read else {
            continue;
        };
        let now = secrets.current();
        if now.ft_key != ft_key || now.tl_key != tl_key {
            tracing::warn!(
                "the fleet's API keys changed in its database; this node now accepts the new ones"
            );
            secrets.replace(Secrets {
                ft_key,
                tl_key,
                webhook_secret: now.webhook_secret.clone(),
            });
        }
    }
}

/// Everything a handler needs; cheap to clone (all handles).
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    /// Where uploads and results live (a directory, or object storage).
    pub media: crate::media::Media,
    pub registry: Arc<Registry>,
    pub dispatcher: Dispatcher,
    /// The API keys and the webhook secret at start; on a fleet's database the keys follow the
    /// database (see [`follow_fleet_keys`]).
    pub secrets: LiveSecrets,
    /// Base of every absolute URL we hand out (`poll_url`, media).
    pub public_url: Arc<str>,
    pub progress: ProgressMap,
    /// Stop signals of the runs in progress, fired by a cancel.
    pub stops: RunStops,
    /// Fired at shutdown: ends the live event streams, so connections drain.
    pub shutdown: CancellationToken,
    /// Wakes a worker after a submit.
    pub work: Arc<Notify>,
    /// Last poll of each job, for the one-poll-per-second limit.
    pub polls: Arc<Mutex<PollLimiter>>,
    /// Synchronous analyses decoding at once (one per worker): each holds a whole decoded file in
    /// memory, so their number is bounded like the workers'.
    pub sync_analyses: Arc<tokio::sync::Semaphore>,
}

/// Remembers when each job was last polled; forgets entries older than the window.
#[derive(Default)]
pub struct PollLimiter {
    last: std::collections::HashMap<String, Instant>,
    swept: Option<Instant>,
}

impl PollLimiter {
    /// Window within which a second poll of the same job is refused.
    pub const WINDOW: Duration = Duration::from_secs(1);

    /// Records a poll; `Err(wait)` if the job was polled less than a second ago.
    pub fn check(&mut self, job_id: &str, now: Instant) -> Result<(), Duration> {
        if self
            .swept
            .is_none_or(|t| now.duration_since(t) > Self::WINDOW * 10)
        {
            self.last
                .retain(|_, t| now.duration_since(*t) < Self::WINDOW);
            self.swept = Some(now);
        }
        if let Some(prev) = self.last.get(job_id) {
            let since = now.duration_since(*prev);
            if since < Self::WINDOW {
                return Err(Self::WINDOW - since);
            }
        }
        self.last.insert(job_id.to_string(), now);
        Ok(())
    }
}

/// Opens the store (`--database`, else the SQLite file in the data directory) and makes sure
/// keys, the webhook secret and the starting credits exist, applying overrides. On a shared
/// PostgreSQL the first node to start creates them and every other node reads the same ones.
pub async fn open_store(config: &Config) -> anyhow::Result<(Store, Secrets)> {
    let store = match &config.database {
        Some(url) => Store::connect(url)
            .await
            .map_err(|e| anyhow::anyhow!("--database: {e}"))?,
        None => Store::open(&config.data_dir.join(crate::datadir::DATABASE_FILE))?,
    };
    let c = config.clone();
    let secrets = store
        .write(move |tx| {
            let config = &c;
            use crate::store::settings;
            if let Some(k) = &config.ft_key {
                settings::set(tx, "ft_key", k)?;
            }
            if let Some(k) = &config.tl_key {
                settings::set(tx, "tl_key", k)?;
            }
            let ft_key = settings::get_or_insert(tx, "ft_key", || crate::ids::api_key("ft_test_"))?;
            let tl_key = settings::get_or_insert(tx, "tl_key", || crate::ids::api_key("tl_test_"))?;
            store::webhooks::endpoint_ensure(tx, &crate::ids::webhook_secret())?;
            if let Some(s) = &config.webhook_secret {
                store::webhooks::endpoint_set_secret(tx, s)?;
            }
            if let Some(url) = &config.webhook_url {
                store::webhooks::endpoint_set_url(tx, Some(url))?;
            }
            store::credits::ensure_initial_grant(tx)?;
            let webhook_secret = store::webhooks::endpoint_get(tx)?.secret;
            Ok(Secrets {
                ft_key,
                tl_key,
                webhook_secret,
            })
        })
        .await?;
    Ok((store, secrets))
}

/// The keys and webhook secret stored in an existing data directory, read without writing (a
/// server may own it): what `keys` prints and what the client commands authenticate with.
pub fn read_secrets(data_dir: &std::path::Path) -> anyhow::Result<Secrets> {
    let path = data_dir.join(crate::datadir::DATABASE_FILE);
    let conn = store::open_read_only(&path)?;
    let start = format!(
        "start `soundcheck serve --data-dir {}` once",
        data_dir.display()
    );
    secrets_in(&conn, &path.display().to_string(), &start)
}

/// The keys and secret a fleet's database holds (`keys --database`): read, never created.
pub async fn read_fleet_secrets(url: &str) -> anyhow::Result<Secrets> {
    Ok(read_fleet_client(url).await?.0)
}

/// What a client command given a fleet's `--database` needs: the keys, and the public URLs of
/// the API nodes to try: those running, newest first, then the one that started last (none
/// before one has).
pub async fn read_fleet_client(url: &str) -> anyhow::Result<(Secrets, Vec<String>)> {
    read_fleet(&Store::connect_existing(url).await?).await
}

/// [`read_fleet_client`] on a store already open (a client that reads its fleet again and again
/// keeps one).
pub async fn read_fleet(store: &Store) -> anyhow::Result<(Secrets, Vec<String>)> {
    let name = "the --database".to_string();
    store
        .read(move |c| {
            let secrets = secrets_in(
                c,
                &name,
                "start a node of the fleet (`soundcheck serve --database …`) once",
            )
            .map_err(|e| e.to_string());
            // The running API nodes, newest first, then the last one recorded as started.
            let mut api_urls = store::nodes::api_urls(c)?;
            if let Some(last) = store::settings::get(c, API_URL_SETTING)? {
                if !last.is_empty() && !api_urls.contains(&last) {
                    api_urls.push(last);
                }
            }
            Ok(secrets.map(|s| (s, api_urls)))
        })
        .await?
        .map_err(|e| anyhow::anyhow!(e))
}

fn secrets_in(conn: &dyn crate::store::Tx, origin: &str, start: &str) -> anyhow::Result<Secrets> {
    let get = |key: &str| -> anyhow::Result<String> {
        store::settings::get(conn, key)?
            .ok_or_else(|| anyhow::anyhow!("{origin} has no {key} yet: {start}"))
    };
    Ok(Secrets {
        ft_key: get("ft_key")?,
        tl_key: get("tl_key")?,
        webhook_secret: store::webhooks::endpoint_get(conn)?.secret,
    })
}

/// Builds the router with every API and the middleware stack.
pub fn router(state: AppState) -> Router {
    let latency = state.config.latency;
    let (api, doc) = crate::api::router().split_for_parts();
    let generators: Vec<String> = state
        .registry
        .describe()
        .into_iter()
        .filter(|(endpoint, _)| endpoint == "/v1/generations")
        .map(|(_, name)| name)
        .collect();
    let doc = Arc::new(crate::api::docs::finish(
        doc,
        &generators,
        &state.public_url,
    ));
    Router::new()
        .merge(api)
        .merge(crate::dashboard::router())
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json((*doc).clone()) }
            }),
        )
        .fallback(fallback)
        .layer(axum::middleware::map_response(method_not_allowed))
        .layer(axum::middleware::from_fn(move |req, next| {
            add_latency(latency, req, next)
        }))
        .layer(axum::middleware::from_fn(trace_requests))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

async fn fallback() -> crate::error::ApiError {
    crate::error::ApiError::not_found("No such endpoint.")
}

/// axum answers a known path with the wrong method by an empty `405` and an `Allow` header; give it
/// the error envelope too (keeping `Allow`), so every error a client sees has the one shape.
async fn method_not_allowed(resp: Response) -> Response {
    if resp.status() != StatusCode::METHOD_NOT_ALLOWED {
        return resp;
    }
    let (mut parts, _) = resp.into_parts();
    let trace_id = crate::error::current_trace_id();
    let body = envelope(
        Code::InvalidRequest,
        "This method is not allowed on this path; the Allow header lists the ones it takes.",
        &trace_id,
    );
    let json = axum::Json(body).into_response();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, json.into_body())
}

/// `serve --latency`: every API request (`/v1/…`) waits this long before it is handled.
async fn add_latency(latency: Duration, req: Request, next: Next) -> Response {
    if !latency.is_zero() && req.uri().path().starts_with("/v1/") {
        tokio::time::sleep(latency).await;
    }
    next.run(req).await
}

/// The header the dashboard puts on its once-a-second polls, so that the log can tell them from
/// the app's own requests.
pub const DASHBOARD_POLL_HEADER: &str = "x-soundcheck-dashboard";

/// The same mark on the client commands' watch loops (`jobs tail`, `trigger` waiting).
pub const POLL_HEADER: &str = "x-soundcheck-poll";

/// Gives each request a trace id (in the envelope, the `X-Trace-Id` header and the log line).
/// The dashboard's and the client commands' successful polls (`GET` with
/// [`DASHBOARD_POLL_HEADER`] or [`POLL_HEADER`]) are logged at debug level: an open dashboard
/// makes several a second, which would bury the app's requests.
async fn trace_requests(req: Request, next: Next) -> Response {
    let trace_id = crate::ids::trace_id();
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let poll = method == axum::http::Method::GET
        && (req.headers().contains_key(DASHBOARD_POLL_HEADER)
            || req.headers().contains_key(POLL_HEADER));
    let started = Instant::now();
    let mut resp = TRACE_ID.scope(trace_id.clone(), next.run(req)).await;
    if let Ok(v) = HeaderValue::from_str(&trace_id) {
        resp.headers_mut().insert("x-trace-id", v);
    }
    let (status, latency_ms) = (
        resp.status().as_u16(),
        // To 0.01 ms: the log reads 0.63, not 0.6332409999999999.
        (started.elapsed().as_secs_f64() * 1e5).round() / 100.0,
    );
    if poll && resp.status().is_success() {
        tracing::debug!(%method, %path, status, latency_ms, %trace_id, "request");
    } else {
        tracing::info!(%method, %path, status, latency_ms, %trace_id, "request");
    }
    resp
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let trace_id = crate::ids::trace_id();
    tracing::error!(%trace_id, "a handler panicked");
    let body = envelope(
        Code::InternalError,
        "An internal error occurred; see the server log.",
        &trace_id,
    );
    (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
}

/// The node's media storage (`--media-dir` / `--media`). Object storage is checked (an object
/// written, read and deleted), so a node that cannot use its bucket stops at start with the
/// reason; its scratch directory, this node's own (the data directory is locked), is emptied of
/// what a killed run left there.
///
/// On a fleet's database it must also be the fleet's storage (see [`check_fleet_media`]).
pub async fn open_media(config: &Config, store: &Store) -> anyhow::Result<crate::media::Media> {
    let media = crate::media::Media::new(
        config.media_url.as_deref(),
        &config.media_dir,
        &config.data_dir,
    )?;
    media.check().await?;
    if store.dialect() == crate::store::db::Dialect::Postgres {
        check_fleet_media(store, &media, config.claim_media).await?;
    } else if let crate::media::Marker::Fleet(fleet) = media.read_marker().await? {
        // Its own SQLite file knows none of the fleet's uploads and results: its janitor would
        // take them for a crash's leftovers and delete them.
        anyhow::bail!(
            "{} is the media storage of fleet {fleet} (its marker {} says so): a server on its \
             own SQLite database would take the fleet's uploads and results for leftovers and \
             delete them. Give it the fleet's --database, or another --media-dir/--media (if \
             the fleet is gone for good, delete the marker first)",
            media.describe(),
            media.marker_location()
        );
    }
    Ok(media)
}

/// This node's place in a fleet: its row in the `nodes` table, refreshed while it runs (see
/// [`join_fleet`]). [`FleetMember::leave`] deletes it.
pub struct FleetMember {
    store: Store,
    id: String,
    stop: CancellationToken,
    /// Why the node was stopped: a node that joined before it runs with other shared settings.
    conflict: Arc<Mutex<Option<String>>>,
}

/// How often a fleet node refreshes its row (its heartbeat).
const HEARTBEAT: Duration = Duration::from_secs(5);

/// Where an API node is reached: its public URL, and its own listening address.
pub struct NodeUrls {
    pub public: String,
    pub listen: std::net::SocketAddr,
}

/// Joins the fleet on `store`'s database as a node of `kind` (`serve` or `worker`; an API node
/// gives its `urls`, which client commands given `--database` choose from); `None` on a server's
/// own SQLite file. In one write (serialised fleet-wide) it reads which other nodes run and
/// refuses to start:
/// - when this node's shared settings (`--lease-secs`, `--time-scale`, `--strict`) differ from a
///   running node's: leases renewed and swept on different clocks take live work from its
///   worker, and webhooks would be retried on two schedules and sent under two URL policies;
/// - with `--claim-media` while another node runs: it keeps the storage being replaced.
///
/// Otherwise it writes this node's row and refreshes it every [`HEARTBEAT`], comparing again:
/// a node that joined while the others' rows were stale (a database outage, a frozen node) and
/// differs from a node that joined before it cancels `shutdown`, and [`FleetMember::leave`]
/// returns why.
pub async fn join_fleet(
    config: &Config,
    store: &Store,
    kind: &'static str,
    urls: Option<NodeUrls>,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<FleetMember>> {
    if store.dialect() != crate::store::db::Dialect::Postgres {
        return Ok(None);
    }
    // Bound to every interface (0.0.0.0), a node does not know which address others reach it
    // at: only its public URL is recorded.
    let listen = urls
        .as_ref()
        .filter(|u| !u.listen.ip().is_unspecified())
        .map(|u| format!("http://{}", u.listen));
    let me = store::nodes::NodeInfo {
        id: node_id(&config.data_dir)?,
        place: node_place(&config.data_dir),
        kind: kind.to_string(),
        url: urls.map(|u| u.public.trim_end_matches('/').to_string()),
        listen,
        version: env!("CARGO_PKG_VERSION").to_string(),
        settings: serde_json::json!({
            "lease_secs": config.lease.as_secs(),
            "time_scale": config.time_scale,
            "strict": config.strict,
        }),
    };
    let (node, claim) = (me.clone(), config.claim_media);
    let id_file = config.data_dir.join(NODE_ID_FILE);
    let joined =
        store
            .write(move |tx| {
                let others = store::nodes::live_others(tx, &node.id)?;
                if claim && !others.is_empty() {
                    return Ok(Err(format!(
                    "--claim-media: other nodes of the fleet are running ({}): they would go on \
                     with the storage being replaced, and work they took could not be run on \
                     the new one. Stop them first",
                    others.iter().map(describe_node).collect::<Vec<_>>().join("; "),
                )));
                }
                if let Some(why) = disagreement(&node.settings, others.iter()) {
                    return Ok(Err(why));
                }
                // The same id live elsewhere: not this node restarted (that is the same place),
                // but a copy of its data directory, which would share one row and skip the
                // checks.
                if let Some((place, pid)) = store::nodes::live_holder(tx, &node.id)? {
                    if place != node.place {
                        return Ok(Err(format!(
                            "node {} (pid {pid}, at {place}) runs with this node's id: this \
                             data directory was copied from that node's. Delete {} here, and \
                             this node takes an id of its own",
                            node.id,
                            id_file.display()
                        )));
                    }
                }
                store::nodes::join(tx, &node).map(Ok)
            })
            .await?;
    let mut started_at = joined.map_err(|why| anyhow::anyhow!(why))?;
    let stop = CancellationToken::new();
    let conflict: Arc<Mutex<Option<String>>> = Arc::default();
    let (store_in, token, found) = (store.clone(), stop.clone(), conflict.clone());
    let id = me.id.clone();
    tokio::spawn(async move {
        let mut last_try = Instant::now();
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(HEARTBEAT) => {}
            }
            // Asleep far past the beat: this process was frozen (SIGSTOP, a paused machine)
            // while the fleet went on without it, so it joins again as a node starting now,
            // and one that wakes with other settings stops rather than the fleet that formed
            // meanwhile. (A database outage is not that: the beats were tried and failed, and
            // the node keeps its place.)
            let frozen = last_try.elapsed() > Duration::from_millis(store::nodes::STALE_MS as u64);
            last_try = Instant::now();
            let node = me.clone();
            let beat = store_in
                .write_atomic(move |tx| {
                    // Deleted as a day stale (a database outage that long): written again.
                    let joined = if !frozen && store::nodes::heartbeat(tx, &node.id)? {
                        started_at
                    } else {
                        store::nodes::join(tx, &node)?
                    };
                    let others = store::nodes::live_others(tx, &node.id)?;
                    let earlier = others
                        .iter()
                        .filter(|o| (o.started_at, &o.info.id) < (joined, &node.id));
                    Ok((joined, disagreement(&node.settings, earlier)))
                })
                .await;
            match beat {
                Ok((joined, None)) => started_at = joined,
                Ok((_, Some(why))) => {
                    let why = format!("stopping: {why}");
                    tracing::error!("{why}");
                    *found.lock().unwrap() = Some(why);
                    shutdown.cancel();
                    return;
                }
                Err(e) => tracing::debug!("could not refresh this node's row in the fleet: {e}"),
            }
        }
    });
    Ok(Some(FleetMember {
        store: store.clone(),
        id,
        stop,
        conflict,
    }))
}

impl FleetMember {
    /// Stops the heartbeat and deletes this node's row: the others no longer count it. Returns
    /// why the node was stopped, if a disagreement found while it ran stopped it.
    pub async fn leave(self) -> Option<String> {
        self.stop.cancel();
        let id = self.id.clone();
        if let Err(e) = self
            .store
            .write(move |tx| store::nodes::leave(tx, &id))
            .await
        {
            tracing::warn!("could not remove this node from the fleet's nodes: {e}");
        }
        self.conflict.lock().unwrap().take()
    }
}

/// The file in a node's data directory holding its id.
const NODE_ID_FILE: &str = "node-id";

/// A node's id in the fleet, `node_<ulid>`, kept in its data directory (which it locks): a node
/// restarted after a crash replaces its own row rather than meeting it as another node, and two
/// containers whose data directories share a path and a host name are still two nodes.
fn node_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join(NODE_ID_FILE);
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if crate::ids::is_id(id, "node") {
            return Ok(id.to_string());
        }
    }
    let id = crate::ids::new_id("node");
    std::fs::create_dir_all(data_dir)
        .and_then(|()| std::fs::write(&path, format!("{id}\n")))
        .map_err(|e| anyhow::anyhow!("writing this node's id to {}: {e}", path.display()))?;
    Ok(id)
}

/// Where a node runs, for people: its host name and data directory.
fn node_place(data_dir: &std::path::Path) -> String {
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    format!("{host}:{}", dir.display())
}

/// A running node as a refusal names it, with how much longer it counts as running if it was
/// killed (its row is refreshed every [`HEARTBEAT`]).
fn describe_node(n: &store::nodes::Node) -> String {
    let seen = n.seen_ms_ago.max(0);
    let mut text = format!(
        "{} {} (pid {}, soundcheck {}, seen {} s ago",
        n.info.kind,
        n.info.place,
        n.pid,
        n.info.version,
        seen / 1000
    );
    if seen > 2 * HEARTBEAT.as_millis() as i64 {
        let left = (store::nodes::STALE_MS - seen) / 1000 + 1;
        text.push_str(&format!(
            "; if it was killed, it counts as running {left} s more"
        ));
    }
    text.push(')');
    text
}

/// The first shared setting in which this node differs from one of `others`, as a refusal.
fn disagreement<'a>(
    mine: &serde_json::Value,
    others: impl IntoIterator<Item = &'a store::nodes::Node>,
) -> Option<String> {
    const FLAGS: [(&str, &str); 3] = [
        ("lease_secs", "--lease-secs"),
        ("time_scale", "--time-scale"),
        ("strict", "--strict"),
    ];
    let show = |v: &serde_json::Value| match v {
        serde_json::Value::Bool(true) => "on".to_string(),
        serde_json::Value::Bool(false) => "off".to_string(),
        serde_json::Value::Number(n) => {
            n.as_f64().map_or_else(|| n.to_string(), |f| format!("{f}"))
        }
        other => other.to_string(),
    };
    for other in others {
        for (key, flag) in FLAGS {
            let (here, there) = (&mine[key], &other.info.settings[key]);
            if !there.is_null() && here != there {
                return Some(format!(
                    "this node's {flag} is {}, but {} runs with {}. Every node of a fleet runs \
                     with the same --lease-secs, --time-scale and --strict (given or default: \
                     30, 1 and off); to change them, stop every node, then start each with the \
                     new values",
                    show(here),
                    describe_node(other),
                    show(there),
                ));
            }
        }
    }
    None
}

/// The setting holding the public URL of the fleet's most recently started API node.
pub const API_URL_SETTING: &str = "api_url";

/// A fleet's nodes must share one media storage: a job's upload is put where the node that took
/// it keeps media and read where the claiming worker does. The first node writes the fleet's id
/// (kept in the database) into its storage; a node whose storage lacks it, or names another
/// fleet, stops here with the reason instead of claiming jobs it would fail.
///
/// The decision is taken in one write transaction (serialised fleet-wide), so of several nodes
/// starting at once on a fresh database exactly one marks its storage; the others wait a little
/// for that marker to appear in theirs (the same storage) before refusing (another one).
/// `claim` (`--claim-media`) gives the fleet a new id written into this node's storage, so a
/// node left on the old storage is refused from then on.
async fn check_fleet_media(
    store: &Store,
    media: &crate::media::Media,
    claim: bool,
) -> anyhow::Result<()> {
    use crate::media::Marker;
    let storage = media.describe();
    let marker = media.marker_location();
    if claim {
        let id = crate::ids::new_id("fleet");
        media.write_marker(&id).await?;
        let (id_in, storage_in) = (id.clone(), storage.clone());
        store
            .write(move |tx| {
                store::settings::set(tx, "fleet_id", &id_in)?;
                store::settings::set(tx, "fleet_media_marked", "1")?;
                store::settings::set(tx, "fleet_media", &storage_in)
            })
            .await?;
        tracing::warn!(%storage, fleet = %id, "--claim-media: this storage is now the fleet's media storage; nodes on any other are refused at start");
        return Ok(());
    }
    enum Verdict {
        Ours,
        Mark(String),
        /// Marked by the fleet elsewhere (named, when recorded); `found` is what is here, and
        /// `just_marked` says the fleet's storage was marked less than [`MARKER_WAIT`] ago.
        Elsewhere {
            fleet: String,
            at: Option<String>,
            found: Marker,
            just_marked: bool,
        },
    }
    let fix = "give every node the same --media-dir (one shared mount, at the same path) or \
               --media; if this storage replaced the fleet's at the same path or bucket (a restored \
               volume), start one node on it once with --claim-media (docs/fleet.md)";
    let patience = std::time::Instant::now() + MARKER_WAIT;
    loop {
        let found = media.read_marker().await?;
        let (seen, storage_in) = (found.clone(), storage.clone());
        let verdict = store
            .write(move |tx| {
                let id =
                    store::settings::get_or_insert(tx, "fleet_id", || crate::ids::new_id("fleet"))?;
                let marked = store::settings::get(tx, "fleet_media_marked")?.is_some();
                Ok(match seen.clone() {
                    Marker::Fleet(x) if x == id => Verdict::Ours,
                    Marker::Absent if !marked => {
                        store::settings::set(tx, "fleet_media_marked", "1")?;
                        store::settings::set(tx, "fleet_media", &storage_in)?;
                        let now = crate::store::db::now_ms(tx)?.to_string();
                        store::settings::set(tx, MARKED_AT, &now)?;
                        Verdict::Mark(id)
                    }
                    found => {
                        let marked_at = store::settings::get(tx, MARKED_AT)?
                            .and_then(|at| at.parse::<i64>().ok());
                        let since =
                            crate::store::db::now_ms(tx)? - marked_at.unwrap_or(i64::MIN / 2);
                        Verdict::Elsewhere {
                            fleet: id,
                            at: store::settings::get(tx, "fleet_media")?,
                            found,
                            just_marked: since < MARKER_WAIT.as_millis() as i64,
                        }
                    }
                })
            })
            .await?;
        match verdict {
            Verdict::Ours => return Ok(()),
            Verdict::Mark(id) => return media.write_marker(&id).await,
            // A node that marked the fleet a moment ago may still be writing its marker here
            // (the same storage); a fleet marked longer ago than that is refused at once.
            Verdict::Elsewhere {
                found: Marker::Absent,
                just_marked: true,
                ..
            } if std::time::Instant::now() < patience => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Verdict::Elsewhere {
                fleet, at, found, ..
            } => {
                let there = at.map_or_else(String::new, |at| format!(" (the fleet's is {at})"));
                let why = match found {
                    Marker::Absent => format!(
                        "the fleet's other nodes keep uploads and results elsewhere{there}: \
                         this storage lacks the marker {marker} they share, so jobs taken by one \
                         node could not be run by another"
                    ),
                    Marker::Fleet(other) => format!(
                        "{marker} names fleet {other}, this database's fleet is {fleet}{there}"
                    ),
                    Marker::Invalid(what) => format!("its marker {marker} is {what}{there}"),
                };
                anyhow::bail!("{storage} is not this fleet's media storage: {why}: {fix}");
            }
        }
    }
}

/// How long a node waits for the marker of a node that marked the fleet just before it.
const MARKER_WAIT: Duration = Duration::from_secs(10);

/// The setting holding when (database clock, unix ms) the fleet's media storage was marked: a
/// node finding no marker waits for one only within [`MARKER_WAIT`] of it.
const MARKED_AT: &str = "fleet_media_marked_at";

/// Runs the server on `listener` until `shutdown` fires; returns after draining.
pub async fn run(
    config: Config,
    store: Store,
    secrets: Secrets,
    media: crate::media::Media,
    registry: Registry,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    run_node(
        config,
        store,
        secrets,
        media,
        registry,
        Some((listener, addr)),
        shutdown,
    )
    .await
}

/// Runs a worker node of a fleet (`soundcheck worker`): the workers, the webhook dispatcher and
/// the janitor on the shared database, no HTTP. Result URLs use `--public-url` (the fleet's).
pub async fn run_worker(
    config: Config,
    store: Store,
    secrets: Secrets,
    media: crate::media::Media,
    registry: Registry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    check_worker(&config)?;
    run_node(config, store, secrets, media, registry, None, shutdown).await
}

/// What a worker node needs beyond a server's flags: the `--public-url` its result URLs start
/// with. `soundcheck worker` checks it before it opens anything.
pub fn check_worker(config: &Config) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.public_url.is_some(),
        "a worker needs --public-url: the address clients reach the fleet's API nodes at, \
         which result URLs start with"
    );
    Ok(())
}

/// The engine and generator names a fleet node's workers claim work of: `--engines`, each of
/// which must be installed here, or every one installed. `serve` and `worker` call it before
/// they open the database or print the banner, so a misspelt name stops the node with the
/// list of what is installed and nothing touched.
pub fn claimed_engines(config: &Config, registry: &Registry) -> anyhow::Result<Vec<String>> {
    let mut installed: Vec<String> = registry
        .describe()
        .into_iter()
        .map(|(_, name)| name)
        .collect();
    installed.sort();
    installed.dedup();
    if let Some(unknown) = config
        .engines
        .iter()
        .flatten()
        .find(|name| !installed.contains(name))
    {
        anyhow::bail!(
            "--engines: this node has no engine or generator named {unknown} (installed: {})",
            installed.join(", ")
        );
    }
    Ok(config.engines.clone().unwrap_or(installed))
}

/// Every node's work: recovery, dispatcher, janitor, workers, and (API nodes) the HTTP server.
async fn run_node(
    config: Config,
    store: Store,
    secrets: Secrets,
    media: crate::media::Media,
    registry: Registry,
    listener: Option<(TcpListener, SocketAddr)>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // On its own SQLite file a server is the only process (the data directory's lock): all work
    // left running is a crashed run's. In a fleet, only work whose lease has run out is.
    let fleet = store.dialect() == crate::store::db::Dialect::Postgres;
    let recovered = store
        .write(move |tx| {
            let horizon = if fleet {
                crate::store::db::now_ms(tx)?
            } else {
                i64::MAX
            };
            crate::jobs::worker::recover(tx, horizon)
        })
        .await?;
    if !recovered.is_empty() {
        tracing::info!(
            requeued = %recovered.requeued.join(","),
            failed = %recovered.failed.join(","),
            "recovered work interrupted by the last shutdown"
        );
    }
    let public_url: Arc<str> = config
        .public_url
        .clone()
        .or_else(|| listener.as_ref().map(|(_, addr)| format!("http://{addr}")))
        .unwrap_or_default()
        .trim_end_matches('/')
        .into();
    if fleet && listener.is_some() {
        // Where client commands given only `--database` send their requests.
        let url = public_url.to_string();
        store
            .write(move |tx| crate::store::settings::set(tx, API_URL_SETTING, &url))
            .await?;
    }
    let dispatcher = Dispatcher::new(
        store.clone(),
        DispatchConfig {
            time_scale: config.time_scale,
            timeout: config.webhook_timeout,
            strict: config.strict,
        },
    );
    // A fleet node claims only work it can run: the engines installed here, or `--engines`.
    let only: Option<Arc<[String]>> = if fleet {
        Some(claimed_engines(&config, &registry)?.into())
    } else {
        None
    };
    let registry = Arc::new(registry);
    let state = AppState {
        config: Arc::new(config.clone()),
        store: store.clone(),
        media: media.clone(),
        registry: registry.clone(),
        dispatcher: dispatcher.clone(),
        secrets: LiveSecrets::new(secrets),
        public_url: public_url.clone(),
        progress: ProgressMap::default(),
        stops: RunStops::default(),
        shutdown: shutdown.clone(),
        work: Arc::new(Notify::new()),
        polls: Arc::default(),
        sync_analyses: Arc::new(tokio::sync::Semaphore::new(config.workers.max(1))),
    };

    let mut tasks = tokio::task::JoinSet::new();
    if fleet {
        tasks.spawn(follow_fleet_keys(
            store.clone(),
            state.secrets.clone(),
            shutdown.clone(),
        ));
    }
    tasks.spawn(dispatcher.clone().run(shutdown.clone()));
    tasks.spawn(crate::jobs::janitor::run(
        store.clone(),
        media.clone(),
        config.media_dir.clone(),
        config.result_ttl,
        shutdown.clone(),
    ));
    let workers = Workers {
        store,
        registry,
        dispatcher,
        progress: state.progress.clone(),
        stops: state.stops.clone(),
        wake: state.work.clone(),
        device: Arc::default(),
        media,
        public_url: public_url.to_string(),
        result_ttl: config.result_ttl,
        generation_timeout: config.generation_timeout,
        fail_rate: config.fail_rate,
        lease: config.lease,
        only,
        shutdown: shutdown.clone(),
        shutdown_grace: crate::jobs::worker::SHUTDOWN_GRACE,
        local_paths: crate::jobs::worker::LocalPaths::new(&[
            // The data directory first: by default the media directory is the same one, and
            // a directory listed twice keeps its first name.
            (&config.data_dir, "<data>"),
            (&crate::models::models_dir(&config.data_dir), "<models>"),
            (&config.media_dir, "<media>"),
            (&std::env::temp_dir(), "<tmp>"),
        ]),
    };
    for _ in 0..config.workers {
        tasks.spawn(workers.clone().run_one());
    }
    if fleet {
        tasks.spawn(crate::jobs::worker::sweep_expired_leases(workers.clone()));
        let (store, work, dispatcher) = (
            workers.store.clone(),
            workers.wake.clone(),
            workers.dispatcher.clone(),
        );
        let token = shutdown.clone();
        tasks.spawn(async move {
            let on = move |wake| match wake {
                crate::store::db::Wake::Work => work.notify_waiters(),
                crate::store::db::Wake::Outbox => dispatcher.wake(),
            };
            store.listen(on, token).await;
        });
    }

    match listener {
        Some((listener, _)) => {
            let app = router(state);
            crate::http::serve(
                listener,
                app,
                crate::http::Timeouts {
                    header_read: config.header_read_timeout,
                    idle: config.idle_timeout,
                },
                shutdown.clone(),
            )
            .await;
        }
        None => shutdown.cancelled().await,
    }
    // Running engines see the token and give their work back (a worker gives its run back
    // itself after `SHUTDOWN_GRACE`); wait for them a while.
    if tokio::time::timeout(Duration::from_secs(30), async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!("some work did not stop within 30 s; it will be re-run at the next start");
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are registered when this is called, not when the
/// future is first polled: a signal that comes in between is not lost (nor does it kill the
/// process, which is what an unregistered SIGTERM does).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(interrupt) => {},
                _ = wait(terminate) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node's id lives in its data directory: the same directory gives the same id after a
    /// restart, and two directories two ids, whatever their paths (two containers may both
    /// mount theirs at `/data` on hosts of one name).
    #[test]
    fn a_node_id_is_kept_in_its_data_directory() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = node_id(a.path()).unwrap();
        assert!(crate::ids::is_id(&first, "node"), "{first}");
        assert_eq!(node_id(a.path()).unwrap(), first);
        assert_ne!(node_id(b.path()).unwrap(), first);
        // A damaged file is replaced by a fresh id.
        std::fs::write(a.path().join(NODE_ID_FILE), "junk").unwrap();
        let fresh = node_id(a.path()).unwrap();
        assert!(crate::ids::is_id(&fresh, "node") && fresh != first);
    }
}
