//! Server throughput and webhook latency over loopback, beside a reference measured in the same
//! run: the raw SQLite insert rate with the server's durability settings (WAL, synchronous=FULL,
//! one transaction per row). Run: `cargo bench --bench server` (figures go in BENCHMARKS.md).
//!
//! - submits/s: N clients (one keep-alive connection each; `BENCH_CLIENTS`, default 16) POST a
//!   0.1 s WAV to /v1/analyze/upload (with a 60 s start delay so the workers stay idle and only
//!   admission is measured); the process's CPU use and the machine's idle/steal are printed too;
//! - polls/s: N clients GET /v1/jobs/{id}, each job once per pass (the per-job limit never trips);
//! - webhook latency: jobs failed instantly by fault injection, completion (`completed_at`) →
//!   receipt at a local receiver, p50/p99; and deliveries/s for a burst;
//! - a 90 s procedural generation end to end (POST → completed, as a polling client sees it).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::Router;
use http_body_util::{BodyExt, Full};
use soundcheck::config::{Config, DataArgs};
use tokio_util::sync::CancellationToken;

const SUBMITS: usize = 24_000;
const POLL_PASSES: usize = 2;
const WEBHOOK_EVENTS: usize = 1_000;
const GENERATIONS: usize = 5;

fn main() {
    let clients: usize = std::env::var("BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let raw_normal = raw_sqlite_inserts_per_sec(20_000, "NORMAL");
    println!(
        "raw SQLite inserts/s (1 row per transaction, WAL, synchronous=NORMAL): {raw_normal:.0}"
    );
    let raw_sqlite = raw_sqlite_inserts_per_sec(5_000, "FULL");
    println!("raw SQLite inserts/s (1 row per transaction, WAL, synchronous=FULL, the server's setting): {raw_sqlite:.0}");
    // With BENCH_DATABASE (a PostgreSQL admin URL) the server runs on a fresh database there, and
    // the reference is PostgreSQL's own single-row insert rate, measured here too.
    let (raw, reference) = match bench_database() {
        Some(admin) => {
            let raw_pg = rt.block_on(raw_postgres_inserts_per_sec(&admin, 5_000));
            println!("raw PostgreSQL inserts/s (1 row per transaction, one connection, its default durability): {raw_pg:.0}");
            (raw_pg, "raw PostgreSQL")
        }
        None => (raw_sqlite, "raw SQLite"),
    };
    rt.block_on(async move {
        let (rx_url, received) = receiver().await;
        let (base, key, _, shutdown, server, _dir) = start(&rx_url).await;
        let addr = base.trim_start_matches("http://").to_string();
        let wav = Bytes::from(wav_bytes(0.1));
        // The multipart body is encoded once, as a load generator (wrk, hey, curl -F with a file)
        // would send it: fixed bytes with a Content-Length, so the clients' share of the two
        // cores goes to HTTP, not to re-encoding the same form 24,000 times.
        let (content_type, body) = multipart_body(&wav);

        // Submits.
        let ids = Arc::new(Mutex::new(Vec::with_capacity(SUBMITS)));
        let meter = CpuMeter::start();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (addr, key, body, ids) = (addr.clone(), key.clone(), body.clone(), ids.clone());
            tasks.push(tokio::spawn(async move {
                let mut conn = Conn::open(&addr, &key).await;
                for _ in (c..SUBMITS).step_by(clients) {
                    let req = conn.request(hyper::Method::POST, "/v1/analyze/upload")
                        .header("x-soundcheck-fault", "delay=60000")
                        .header(hyper::header::CONTENT_TYPE, content_type)
                        .body(Full::new(body.clone())).unwrap();
                    let (status, body) = conn.send(req).await;
                    assert_eq!(status, 202);
                    let sub: Submitted = serde_json::from_slice(&body).unwrap();
                    ids.lock().unwrap().push(sub.job_id);
                }
            }));
        }
        for t in tasks { t.await.unwrap(); }
        let submit_rate = SUBMITS as f64 / started.elapsed().as_secs_f64();
        println!("submits/s ({clients} clients, {SUBMITS} jobs): {submit_rate:.0}  ({:.2}× {reference})", submit_rate / raw);
        println!("  during submits: {}", meter.report(SUBMITS));

        // Polls: each pass polls every job once; passes are at least a second apart (the per-job
        // limit), and only the time inside the passes counts.
        let ids = Arc::new(ids.lock().unwrap().clone());
        let mut polling = Duration::ZERO;
        let mut limited = 0;
        for _ in 0..POLL_PASSES {
            let started = Instant::now();
            let mut tasks = Vec::new();
            for c in 0..clients {
                let (addr, key, ids) = (addr.clone(), key.clone(), ids.clone());
                tasks.push(tokio::spawn(async move {
                    let mut conn = Conn::open(&addr, &key).await;
                    let mut limited = 0usize;
                    for id in ids.iter().skip(c).step_by(clients) {
                        let req = conn.request(hyper::Method::GET, &format!("/v1/jobs/{id}"))
                            .body(Full::new(Bytes::new())).unwrap();
                        match conn.send(req).await.0 { 200 => {}, 429 => limited += 1, s => panic!("poll status {s}") }
                    }
                    limited
                }));
            }
            for t in tasks { limited += t.await.unwrap(); }
            polling += started.elapsed();
            // The next pass polls each job again: more than a second after this pass's last poll.
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        let polls = ids.len() * POLL_PASSES;
        let poll_rate = polls as f64 / polling.as_secs_f64();
        println!("polls/s ({clients} clients, {polls} polls, {limited} answered 429): {poll_rate:.0}");

        // Webhooks: instant failures, timed from completion to receipt, on a second server (the
        // first one's workers are busy with the delayed submits above, which are queued first).
        shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(60), server).await;
        let (base, key, ft_key, shutdown, server, _dir2) = start(&rx_url).await;
        received.lock().unwrap().clear();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (base, key, wav) = (base.clone(), key.clone(), wav.clone());
            tasks.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                for _ in (c..WEBHOOK_EVENTS).step_by(clients) {
                    let form = reqwest::multipart::Form::new()
                        .part("audio", reqwest::multipart::Part::stream(wav.clone()).file_name("a.wav"));
                    client.post(format!("{base}/v1/analyze/upload")).bearer_auth(&*key)
                        .header("X-Soundcheck-Fault", "internal_error").multipart(form).send().await.unwrap();
                }
            }));
        }
        for t in tasks { t.await.unwrap(); }
        while received.lock().unwrap().len() < WEBHOOK_EVENTS {
            assert!(started.elapsed() < Duration::from_secs(300), "webhooks did not all arrive");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let deliveries_rate = WEBHOOK_EVENTS as f64 / started.elapsed().as_secs_f64();
        let mut lat: Vec<f64> = Vec::new();
        let client = reqwest::Client::new();
        for (job_id, at_ms) in received.lock().unwrap().iter().take(200) {
            // Respect the poll limit: each job is polled once.
            let job: serde_json::Value = client.get(format!("{base}/v1/jobs/{job_id}")).bearer_auth(&*key).send().await.unwrap().json().await.unwrap();
            let done = chrono::DateTime::parse_from_rfc3339(job["completed_at"].as_str().unwrap()).unwrap().timestamp_millis();
            lat.push((*at_ms - done) as f64);
        }
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
        println!("webhook completion→receipt over {} events: p50 {:.0} ms, p99 {:.0} ms (1 ms clock resolution)", lat.len(), pct(0.5), pct(0.99));
        println!("webhook deliveries/s (submit + fail + deliver, {WEBHOOK_EVENTS} events): {deliveries_rate:.0}");

        // A 90 s generation end to end with the default (procedural) engine: POST, then polls
        // every 5 ms until it is completed; and the server's own createdAt → completedAt.
        let (mut seen, mut server_side) = (Vec::new(), Vec::new());
        for _ in 0..GENERATIONS {
            let started = Instant::now();
            let created: serde_json::Value = client
                .post(format!("{base}/v1/generations"))
                .header("X-API-Key", &*ft_key)
                .json(&serde_json::json!({
                    "tags": "lofi chill, piano, vinyl crackle", "duration": 90, "bpm": 80,
                    "keyscale": "A minor", "seed": 1_729_384_756u32,
                }))
                .send().await.unwrap().json().await.unwrap();
            let id = created["id"].as_str().unwrap().to_string();
            let done = loop {
                let g: serde_json::Value = client.get(format!("{base}/v1/generations/{id}"))
                    .header("X-API-Key", &*ft_key).send().await.unwrap().json().await.unwrap();
                match g["status"].as_str() {
                    Some("completed") => break g,
                    Some("failed") => panic!("generation failed: {g}"),
                    _ => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            };
            seen.push(started.elapsed().as_secs_f64());
            let at = |k: &str| chrono::DateTime::parse_from_rfc3339(done[k].as_str().unwrap()).unwrap().timestamp_millis();
            server_side.push((at("completedAt") - at("createdAt")) as f64 / 1e3);
        }
        for v in [&mut seen, &mut server_side] { v.sort_by(f64::total_cmp); }
        println!(
            "90 s generation (procedural, MP3): POST → client sees completed best {:.3} s, median {:.3} s; \
             server createdAt → completedAt best {:.3} s, median {:.3} s ({GENERATIONS} runs)",
            seen[0], seen[GENERATIONS / 2], server_side[0], server_side[GENERATIONS / 2]
        );
        shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(60), server).await;
    });
}

/// A load-generating client: one keep-alive HTTP/1.1 connection driven through hyper's connection
/// API (as wrk drives a socket), so the bench's share of the two cores goes to the server, not to
/// a pooling client's URL parsing and header building.
struct Conn {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
    auth: String,
}

#[derive(serde::Deserialize)]
struct Submitted {
    job_id: String,
}

impl Conn {
    async fn open(addr: &str, key: &str) -> Conn {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        Conn {
            send,
            host: addr.to_string(),
            auth: format!("Bearer {key}"),
        }
    }

    fn request(&self, method: hyper::Method, path: &str) -> hyper::http::request::Builder {
        hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::AUTHORIZATION, &self.auth)
    }

    /// Sends one request and reads the whole answer: (status, body).
    async fn send(&mut self, req: hyper::Request<Full<Bytes>>) -> (u16, Bytes) {
        self.send.ready().await.unwrap();
        let resp = self.send.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    }
}

/// A server on a fresh data directory, webhooks to `rx_url`, credits for every submit.
async fn start(
    rx_url: &str,
) -> (
    String,
    Arc<String>,
    Arc<String>,
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_data_dir(&DataArgs {
        data_dir: Some(dir.path().to_path_buf()),
    })
    .unwrap();
    config.webhook_url = Some(rx_url.to_string());
    if let Some(admin) = bench_database() {
        config.database = Some(
            soundcheck::store::postgres::create_scratch_database(&admin)
                .await
                .unwrap(),
        );
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let registry = soundcheck::engines::registry(&config);
    let (store, secrets) = soundcheck::app::open_store(&config).await.unwrap();
    store
        .write(|tx| {
            soundcheck::store::credits::record(
                tx,
                None,
                soundcheck::store::states::LedgerKind::Grant,
                1_000_000,
            )
        })
        .await
        .unwrap();
    let media = soundcheck::app::open_media(&config, &store).await.unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(soundcheck::app::run(
        config,
        store,
        secrets.clone(),
        media,
        registry,
        listener,
        shutdown.clone(),
    ));
    (
        base,
        Arc::new(secrets.tl_key.clone()),
        Arc::new(secrets.ft_key.clone()),
        shutdown,
        server,
        dir,
    )
}

/// A receiver that records (job_id, arrival unix ms).
async fn receiver() -> (String, Arc<Mutex<Vec<(String, i64)>>>) {
    let got: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    async fn hook(State(got): State<Arc<Mutex<Vec<(String, i64)>>>>, body: Bytes) -> &'static str {
        let at = chrono::Utc::now().timestamp_millis();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        got.lock()
            .unwrap()
            .push((v["data"]["job_id"].as_str().unwrap().to_string(), at));
        "ok"
    }
    let app = Router::new().fallback(hook).with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

/// The PostgreSQL admin URL of `BENCH_DATABASE`, if set: the server then runs on PostgreSQL.
fn bench_database() -> Option<String> {
    std::env::var("BENCH_DATABASE")
        .ok()
        .filter(|u| !u.is_empty())
}

/// Inserts `n` rows like the SQLite reference's, each in its own transaction, on one connection
/// to a fresh database: what one client can commit per second on this PostgreSQL.
async fn raw_postgres_inserts_per_sec(admin: &str, n: usize) -> f64 {
    let url = soundcheck::store::postgres::create_scratch_database(admin)
        .await
        .unwrap();
    // Connected as the server connects (the same TLS choice), so the ratio compares like with like.
    let (config, tls) = soundcheck::store::pg_tls::parse(&url).unwrap();
    let (client, conn) = config.connect(tls).await.unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("CREATE TABLE t (id TEXT PRIMARY KEY, status TEXT NOT NULL, params TEXT NOT NULL, created_at TEXT NOT NULL)")
        .await
        .unwrap();
    let insert = client
        .prepare("INSERT INTO t VALUES ($1, 'queued', '{}', $2)")
        .await
        .unwrap();
    let started = Instant::now();
    for i in 0..n {
        client
            .execute(
                &insert,
                &[&format!("job_{i:026}"), &"2026-01-01T00:00:00.000Z"],
            )
            .await
            .unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn raw_sqlite_inserts_per_sec(n: usize, synchronous: &str) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = rusqlite::Connection::open(dir.path().join("raw.sqlite")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", synchronous)
        .unwrap();
    conn.execute_batch("CREATE TABLE t (id TEXT PRIMARY KEY, status TEXT NOT NULL, params TEXT NOT NULL, created_at TEXT NOT NULL)").unwrap();
    let started = Instant::now();
    for i in 0..n {
        let tx = conn.transaction().unwrap();
        tx.execute(
            "INSERT INTO t VALUES (?1, 'queued', '{}', ?2)",
            rusqlite::params![format!("job_{i:026}"), "2026-01-01T00:00:00.000Z"],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// A `multipart/form-data` body with one `audio` file part, and its content type.
fn multipart_body(file: &[u8]) -> (&'static str, Bytes) {
    const BOUNDARY: &str = "soundcheck-bench-boundary-7d3f0a";
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"a.wav\"\r\n\
         Content-Type: audio/wav\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    (
        "multipart/form-data; boundary=soundcheck-bench-boundary-7d3f0a",
        Bytes::from(body),
    )
}

fn wav_bytes(seconds: f32) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 44_100,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cursor = std::io::Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut cursor, spec).unwrap();
    for i in 0..(seconds * 44_100.0) as usize {
        w.write_sample(((i as f32 * 0.06).sin() * 8000.0) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
    cursor.into_inner()
}

/// CPU use over an interval, from /proc: this process's (client and server together), and the
/// machine's idle and stolen shares (steal: time the hypervisor gave to other guests).
struct CpuMeter {
    wall: Instant,
    process: f64,
    machine: Vec<u64>,
}

impl CpuMeter {
    fn start() -> CpuMeter {
        CpuMeter {
            wall: Instant::now(),
            process: process_cpu_secs(),
            machine: machine_ticks(),
        }
    }

    fn report(&self, ops: usize) -> String {
        let wall = self.wall.elapsed().as_secs_f64();
        let cpu = process_cpu_secs() - self.process;
        let now = machine_ticks();
        let d: Vec<u64> = now.iter().zip(&self.machine).map(|(a, b)| a - b).collect();
        let total: u64 = d.iter().sum::<u64>().max(1);
        let share = |i: usize| 100.0 * d.get(i).copied().unwrap_or(0) as f64 / total as f64;
        format!(
            "process {:.2} cores ({:.0} µs CPU per op); machine idle {:.0}%, iowait {:.0}%, steal {:.0}%",
            cpu / wall, cpu / ops as f64 * 1e6, share(3), share(4), share(7)
        )
    }
}

/// user + system CPU seconds of this process (/proc/self/stat fields 14 and 15, in 1/100 s).
fn process_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let f: Vec<f64> = after_name
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

/// The machine's `cpu` line of /proc/stat: user nice system idle iowait irq softirq steal.
fn machine_ticks() -> Vec<u64> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().unwrap_or(0))
        .collect()
}
