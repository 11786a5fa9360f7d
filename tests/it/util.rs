//! Test helpers: a real server on an ephemeral port with a temp data dir, and a webhook receiver
//! whose response status can be switched.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::Router;
use reqwest::Method;
use serde_json::Value;
use soundcheck::app::Secrets;
use soundcheck::config::{Config, DataArgs};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio_util::sync::CancellationToken;

/// A running in-process server.
pub struct TestServer {
    pub base: String,
    pub secrets: Secrets,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub data_dir: tempfile::TempDir,
    /// The server's store (for fault simulation and inspection).
    pub store: soundcheck::store::Store,
}

/// Options for a test server; `time_scale` shrinks the retry schedule (1 min → 60 ms at 0.001).
pub struct Options {
    pub time_scale: f64,
    pub webhook_url: Option<String>,
    pub strict: bool,
    pub max_upload_mb: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            time_scale: 0.001,
            webhook_url: None,
            strict: false,
            max_upload_mb: 50,
        }
    }
}

/// The PostgreSQL server the suite runs against when `SOUNDCHECK_TEST_DATABASE` names one (an
/// admin URL, e.g. from `scripts/pg/cluster.sh`); unset, every server uses its SQLite file.
pub fn test_database_server() -> Option<String> {
    std::env::var("SOUNDCHECK_TEST_DATABASE")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A fresh, empty database on the test PostgreSQL server (`None`: the suite runs on SQLite).
pub async fn test_database() -> Option<String> {
    let admin = test_database_server()?;
    Some(
        soundcheck::store::postgres::create_scratch_database(&admin)
            .await
            .expect("SOUNDCHECK_TEST_DATABASE: cannot create a database there"),
    )
}

pub fn config_for(dir: &std::path::Path, o: &Options) -> Config {
    let mut c = Config::for_data_dir(&DataArgs {
        data_dir: Some(dir.to_path_buf()),
    })
    .unwrap();
    c.time_scale = o.time_scale;
    c.webhook_url = o.webhook_url.clone();
    c.strict = o.strict;
    c.max_upload_bytes = o.max_upload_mb * 1024 * 1024;
    c.webhook_timeout = Duration::from_secs(2);
    c.workers = 2;
    c
}

impl TestServer {
    pub async fn start(o: Options) -> TestServer {
        TestServer::start_with(o, |_| {}).await
    }

    /// Starts a server after `adjust` has changed its configuration.
    pub async fn start_with(o: Options, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = config_for(data_dir.path(), &o);
        config.database = test_database().await;
        adjust(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let registry = soundcheck::engines::registry(&config);
        let (store, secrets) = soundcheck::app::open_store(&config).await.unwrap();
        let media = soundcheck::app::open_media(&config, &store).await.unwrap();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(soundcheck::app::run(
            config,
            store.clone(),
            secrets.clone(),
            media,
            registry,
            listener,
            shutdown.clone(),
        ));
        TestServer {
            base,
            secrets,
            client: reqwest::Client::new(),
            shutdown,
            handle,
            data_dir,
            store,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to the jobs API with its Bearer key.
    pub fn tl(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(&self.secrets.tl_key)
    }

    /// A request to the generations API with its X-API-Key.
    pub fn ft(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("X-API-Key", &self.secrets.ft_key)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }
}

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path_and_query: String,
    pub headers: axum::http::HeaderMap,
    pub body: Bytes,
    pub at: std::time::Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A local webhook receiver that records every request and answers with `status`.
#[derive(Clone)]
pub struct TestReceiver {
    pub url: String,
    pub status: Arc<AtomicU16>,
    pub got: Arc<Mutex<Vec<Received>>>,
}

impl TestReceiver {
    pub async fn start() -> TestReceiver {
        let status = Arc::new(AtomicU16::new(200));
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let app = Router::new()
            .fallback(receive)
            .with_state((status.clone(), got.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        TestReceiver { url, status, got }
    }

    pub fn set_status(&self, s: u16) {
        self.status.store(s, Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived (panics after `secs`).
    pub async fn wait_for(&self, n: usize, secs: u64) -> Vec<Received> {
        wait_until(secs, || self.got.lock().unwrap().len() >= n).await;
        self.received()
    }
}

type ReceiverState = (Arc<AtomicU16>, Arc<Mutex<Vec<Received>>>);

/// Answers with the switchable status and a small JSON body (what the delivery log records).
async fn receive(
    State((status, got)): State<ReceiverState>,
    req: Request,
) -> (
    StatusCode,
    [(axum::http::HeaderName, &'static str); 1],
    &'static str,
) {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    got.lock().unwrap().push(Received {
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts.headers,
        body,
        at: std::time::Instant::now(),
    });
    (
        StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap(),
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        r#"{"received":true}"#,
    )
}

/// Polls `cond` every 10 ms; panics if it is still false after `secs`.
pub async fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts a response is the contract's error envelope with `status` and `code`.
pub async fn assert_error(resp: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(resp.status().as_u16(), status, "status");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        body["error"]["trace_id"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    body
}

/// A short stereo WAV (16-bit, 44.1 kHz): a chord of sines, in memory.
pub fn wav_bytes(seconds: f32) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 44_100,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cursor = std::io::Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut cursor, spec).unwrap();
    let n = (seconds * 44_100.0) as usize;
    for i in 0..n {
        let t = i as f32 / 44_100.0;
        let s = [220.0f32, 277.18, 329.63]
            .iter()
            .map(|f| (2.0 * std::f32::consts::PI * f * t).sin())
            .sum::<f32>()
            * 0.2;
        let v = (s * i16::MAX as f32) as i16;
        w.write_sample(v).unwrap();
        w.write_sample(v).unwrap();
    }
    w.finalize().unwrap();
    cursor.into_inner()
}

/// A multipart form with `audio` set to `bytes` and the given text fields.
pub fn form(bytes: Vec<u8>, fields: &[(&str, &str)]) -> reqwest::multipart::Form {
    let mut f = reqwest::multipart::Form::new().part(
        "audio",
        reqwest::multipart::Part::bytes(bytes).file_name("track.wav"),
    );
    for (k, v) in fields {
        f = f.text(k.to_string(), v.to_string());
    }
    f
}

impl TestServer {
    /// Polls a job (respecting the one-poll-per-second limit) until it is final.
    pub async fn wait_job(&self, job_id: &str, secs: u64) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let r = self
                .tl(reqwest::Method::GET, &format!("/v1/jobs/{job_id}"))
                .send()
                .await
                .unwrap();
            if r.status() == 200 {
                let body: serde_json::Value = r.json().await.unwrap();
                if body["status"] == "completed" || body["status"] == "failed" {
                    return body;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job {job_id} not final within {secs} s"
            );
            tokio::time::sleep(Duration::from_millis(1050)).await;
        }
    }

    /// Polls a generation until it is final.
    pub async fn wait_generation(&self, id: &str, secs: u64) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let body: serde_json::Value = self
                .ft(reqwest::Method::GET, &format!("/v1/generations/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if body["status"] == "completed" || body["status"] == "failed" {
                return body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "generation {id} not final within {secs} s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Submits a job and returns the 202 body.
    pub async fn submit(&self, path: &str, form: reqwest::multipart::Form) -> serde_json::Value {
        let r = self
            .tl(reqwest::Method::POST, path)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{:?}", r.text().await);
        r.json().await.unwrap()
    }

    pub async fn balance(&self) -> i64 {
        let c: serde_json::Value = self
            .tl(reqwest::Method::GET, "/v1/credits")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        c["balance"].as_i64().unwrap()
    }
}

/// Verifies `X-TuneLab-Signature` the way the seed's Flask receiver does, written independently
/// of soundcheck's signer: HMAC-SHA256 over "<t>.<raw body>" with the whole secret as the key.
pub fn verify_like_flask(secret: &str, header: &str, body: &[u8]) -> bool {
    use hmac::{Hmac, Mac};
    let parts: std::collections::HashMap<&str, &str> = header
        .split(',')
        .filter_map(|p| p.split_once('='))
        .collect();
    let (Some(ts), Some(sig)) = (parts.get("t"), parts.get("v1")) else {
        return false;
    };
    let now = chrono::Utc::now().timestamp();
    if (now - ts.parse::<i64>().unwrap()).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{ts}.{}", String::from_utf8_lossy(body)).as_bytes());
    hex::encode(mac.finalize().into_bytes()) == *sig
}

/// Copies a directory tree (installing a model into a test server's data directory).
pub fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Every file under `dir`, recursively (none if it does not exist).
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(files_under(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// The temporary home every binary a test starts runs in (`target/tmp/it-home`): HOME and the XDG
/// directories point into it, so a `serve` never records itself in the user's real runtime
/// directory and no command creates a default data directory in the real home.
pub fn test_home() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("it-home")
}

/// The `soundcheck` binary with [`test_home`] as its home and no key, URL or data directory
/// inherited from the developer's environment.
/// Sends a signal (`"-TERM"`, `"-STOP"`, `"-CONT"`) to process `pid`.
pub fn signal(sig: &str, pid: u32) {
    let sent = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {sig} {pid}: {sent}");
}

/// Sends SIGTERM to a child process (what Ctrl-C's sibling, a service manager's stop, sends).
pub fn sigterm(child: &Child) {
    signal("-TERM", child.id().expect("the child is running"));
}

/// Sends SIGTERM and waits up to `secs` for the child to exit; asserts it exited with 0.
pub async fn terminate(child: &mut Child, secs: u64) {
    sigterm(child);
    let status = tokio::time::timeout(Duration::from_secs(secs), child.wait())
        .await
        .unwrap_or_else(|_| panic!("still running {secs} s after SIGTERM"))
        .unwrap();
    assert!(status.success(), "exit after SIGTERM: {status:?}");
}

pub fn soundcheck() -> std::process::Command {
    let home = test_home();
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_soundcheck"));
    c.env("HOME", &home)
        .env("XDG_RUNTIME_DIR", home.join("run"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env_remove("SOUNDCHECK_FT_KEY")
        .env_remove("SOUNDCHECK_TL_KEY")
        .env_remove("SOUNDCHECK_DATA_DIR")
        .env_remove("SOUNDCHECK_URL")
        .env_remove("SOUNDCHECK_ADDR");
    c
}

/// [`soundcheck`] for tokio (to await its output or read its lines).
pub fn soundcheck_async() -> tokio::process::Command {
    tokio::process::Command::from(soundcheck())
}

/// A node process and what its banner said.
pub struct Node {
    pub child: Child,
    /// API nodes: their URL and keys.
    pub base: String,
    pub tl_key: String,
    pub ft_key: String,
}

impl Node {
    /// Starts `soundcheck <kind> --data-dir <data> <args>` with `env` added, and reads its banner
    /// (up to the `next:` line of `serve`, or a worker's first line).
    pub async fn spawn(kind: &str, data: &Path, args: &[&str], env: &[(&str, &str)]) -> Node {
        let mut child = soundcheck_async()
            .arg(kind)
            .arg("--data-dir")
            .arg(data)
            .args(args)
            .envs(env.iter().copied())
            .env("SOUNDCHECK_LOG", "warn")
            .env("XDG_RUNTIME_DIR", data.join("run"))
            .env("XDG_STATE_HOME", data.join("state"))
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut base, mut tl_key, mut ft_key) = (String::new(), String::new(), String::new());
        while let Some(line) = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the node starts within a minute")
            .unwrap()
        {
            if let Some(url) = line.split("listening on ").nth(1) {
                base = url.trim().to_string();
            }
            if let Some(k) = line.strip_prefix("SOUNDCHECK_TL_KEY=") {
                tl_key = k.to_string();
            }
            if let Some(k) = line.strip_prefix("SOUNDCHECK_FT_KEY=") {
                ft_key = k.to_string();
            }
            if line.starts_with("next:") || line.contains("workers on the shared database") {
                break;
            }
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Node {
            child,
            base,
            tl_key,
            ft_key,
        }
    }

    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.tl_key)
    }

    /// One poll; a `429` (this node saw a poll of the job within the last second) waits it out.
    pub async fn job(&self, id: &str) -> Value {
        loop {
            let r = self
                .req(Method::GET, &format!("/v1/jobs/{id}"))
                .send()
                .await
                .unwrap();
            if r.status() == 429 {
                tokio::time::sleep(Duration::from_millis(1050)).await;
                continue;
            }
            assert_eq!(r.status(), 200);
            return r.json().await.unwrap();
        }
    }

    /// Polls (once a second, the contract's limit) until the job's status is one of `want`.
    pub async fn wait_status(&self, id: &str, want: &[&str], secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let job = self.job(id).await;
            if want.contains(&job["status"].as_str().unwrap_or("")) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} not {want:?} within {secs} s: {job}"
            );
            tokio::time::sleep(Duration::from_millis(1050)).await;
        }
    }
}

/// A fresh database on the test PostgreSQL server; `None` (after saying so) when the suite runs
/// without one, which `SOUNDCHECK_REQUIRE_POSTGRES` (CI) turns into a failure.
pub async fn fleet_database() -> Option<String> {
    let db = test_database().await;
    if db.is_none() {
        assert!(
            std::env::var_os("SOUNDCHECK_REQUIRE_POSTGRES").is_none(),
            "SOUNDCHECK_REQUIRE_POSTGRES is set but SOUNDCHECK_TEST_DATABASE is not"
        );
        eprintln!("fleet test not run: set SOUNDCHECK_TEST_DATABASE to a PostgreSQL admin URL");
    }
    db
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What a [`DbRelay`] does with the bytes between a node and the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// Passes them on.
    Open,
    /// Drops every connection and closes new ones at once: the database is down.
    Cut,
    /// Holds them (new connections too) until opened again: the database stopped answering, or
    /// the network between is partitioned.
    Frozen,
}

/// A TCP relay in front of the test database. A test gives nodes its URL and cuts or freezes it,
/// playing a database outage without stopping the server the other tests share.
pub struct DbRelay {
    /// The database's URL with the relay's port.
    pub url: String,
    mode: tokio::sync::watch::Sender<RelayMode>,
}

impl DbRelay {
    pub async fn start(db_url: &str) -> DbRelay {
        let mut url = url::Url::parse(db_url).unwrap();
        let target = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        url.set_port(Some(listener.local_addr().unwrap().port()))
            .unwrap();
        let (mode, watch) = tokio::sync::watch::channel(RelayMode::Open);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (watch, target) = (watch.clone(), target.clone());
                tokio::spawn(async move {
                    if *watch.borrow() == RelayMode::Cut {
                        return; // dropped: closed at once
                    }
                    let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (a_read, a_write) = inbound.into_split();
                    let (b_read, b_write) = outbound.into_split();
                    tokio::join!(
                        relay_pump(a_read, b_write, watch.clone()),
                        relay_pump(b_read, a_write, watch)
                    );
                });
            }
        });
        DbRelay {
            url: url.to_string(),
            mode,
        }
    }

    pub fn set(&self, mode: RelayMode) {
        self.mode.send_replace(mode);
    }
}

/// One direction of a relayed connection: each chunk read is held while the relay is frozen and
/// dropped (with the connection) once it is cut.
async fn relay_pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: tokio::sync::watch::Receiver<RelayMode>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = mode.wait_for(|m| *m == RelayMode::Cut) => return,
        };
        match mode.wait_for(|m| *m != RelayMode::Frozen).await {
            Ok(m) if *m == RelayMode::Open => {}
            _ => return,
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
