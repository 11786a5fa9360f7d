//! Server throughput and webhook latency over loopback, beside a reference measured in the same
//! run: the raw SQLite insert rate with the server's durability settings (WAL, synchronous=NORMAL,
//! one transaction per row). Run: `cargo bench --bench server` (figures go in BENCHMARKS.md).
//!
//! - submits/s: N clients POST a 0.1 s WAV to /v1/analyze/upload (with a 60 s start delay so the
//!   workers stay idle and only admission is measured);
//! - polls/s: N clients GET /v1/jobs/{id}, each job once per pass (the per-job limit never trips);
//! - webhook latency: jobs failed instantly by fault injection, completion (`completed_at`) →
//!   receipt at a local receiver, p50/p99; and deliveries/s for a burst.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::Router;
use soundcheck::config::{Config, DataArgs};
use tokio_util::sync::CancellationToken;

const CLIENTS: usize = 16;
const SUBMITS: usize = 24_000;
const POLL_PASSES: usize = 2;
const WEBHOOK_EVENTS: usize = 1_000;

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let raw = raw_sqlite_inserts_per_sec(20_000);
    println!("raw SQLite inserts/s (1 row per transaction, WAL, synchronous=NORMAL): {raw:.0}");
    rt.block_on(async move {
        let (rx_url, received) = receiver().await;
        let (base, key, shutdown, server, _dir) = start(&rx_url).await;
        let wav = Bytes::from(wav_bytes(0.1));
        // The multipart body is encoded once, as a load generator (wrk, hey, curl -F with a file)
        // would send it: fixed bytes with a Content-Length, so the clients' share of the two
        // cores goes to HTTP, not to re-encoding the same form 24,000 times.
        let (content_type, body) = multipart_body(&wav);

        // Submits.
        let ids = Arc::new(Mutex::new(Vec::with_capacity(SUBMITS)));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let (base, key, body, ids) = (base.clone(), key.clone(), body.clone(), ids.clone());
            tasks.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                let url = format!("{base}/v1/analyze/upload");
                for _ in (c..SUBMITS).step_by(CLIENTS) {
                    let r = client.post(&url).bearer_auth(&*key)
                        .header("X-Soundcheck-Fault", "delay=60000")
                        .header(reqwest::header::CONTENT_TYPE, content_type)
                        .body(body.clone()).send().await.unwrap();
                    assert_eq!(r.status(), 202);
                    let body: serde_json::Value = r.json().await.unwrap();
                    ids.lock().unwrap().push(body["job_id"].as_str().unwrap().to_string());
                }
            }));
        }
        for t in tasks { t.await.unwrap(); }
        let submit_rate = SUBMITS as f64 / started.elapsed().as_secs_f64();
        println!("submits/s ({CLIENTS} clients, {SUBMITS} jobs): {submit_rate:.0}  ({:.2}× raw SQLite)", submit_rate / raw);

        // Polls: each pass polls every job once; passes are at least a second apart (the per-job
        // limit), and only the time inside the passes counts.
        let ids = Arc::new(ids.lock().unwrap().clone());
        let mut polling = Duration::ZERO;
        let mut limited = 0;
        for _ in 0..POLL_PASSES {
            let started = Instant::now();
            let mut tasks = Vec::new();
            for c in 0..CLIENTS {
                let (base, key, ids) = (base.clone(), key.clone(), ids.clone());
                tasks.push(tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let mut limited = 0usize;
                    for id in ids.iter().skip(c).step_by(CLIENTS) {
                        let r = client.get(format!("{base}/v1/jobs/{id}")).bearer_auth(&*key).send().await.unwrap();
                        match r.status().as_u16() { 200 => {}, 429 => limited += 1, s => panic!("poll status {s}") }
                        let _ = r.bytes().await;
                    }
                    limited
                }));
            }
            for t in tasks { limited += t.await.unwrap(); }
            let took = started.elapsed();
            polling += took;
            tokio::time::sleep(Duration::from_millis(1100).saturating_sub(took)).await;
        }
        let polls = ids.len() * POLL_PASSES;
        let poll_rate = polls as f64 / polling.as_secs_f64();
        println!("polls/s ({CLIENTS} clients, {polls} polls, {limited} answered 429): {poll_rate:.0}");

        // Webhooks: instant failures, timed from completion to receipt, on a second server (the
        // first one's workers are busy with the delayed submits above, which are queued first).
        shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(60), server).await;
        let (base, key, shutdown, server, _dir2) = start(&rx_url).await;
        received.lock().unwrap().clear();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let (base, key, wav) = (base.clone(), key.clone(), wav.clone());
            tasks.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                for _ in (c..WEBHOOK_EVENTS).step_by(CLIENTS) {
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
        shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(60), server).await;
    });
}

/// A server on a fresh data directory, webhooks to `rx_url`, credits for every submit.
async fn start(
    rx_url: &str,
) -> (
    String,
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let registry = soundcheck::engines::registry(&config);
    let (store, secrets) = soundcheck::app::open_store(&config).unwrap();
    store
        .write_blocking(|tx| soundcheck::store::credits::record(tx, None, "grant", 1_000_000))
        .unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(soundcheck::app::run(
        config,
        store,
        secrets.clone(),
        registry,
        listener,
        shutdown.clone(),
    ));
    (
        base,
        Arc::new(secrets.tl_key.clone()),
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

fn raw_sqlite_inserts_per_sec(n: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = rusqlite::Connection::open(dir.path().join("raw.sqlite")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
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
