//! What a hostile client, a neighbouring process or a full disk could do to the server, each
//! reproduced against the real server: absurd or non-finite audio, a second server on the same
//! data directory, DNS rebinding, a disk that fills and frees, unbounded bodies, half-sent
//! requests, HTTP details (405, Range, If-Range), the janitor, and strict webhook URLs.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::{assert_error, form, wav_bytes, Options, TestServer};

/// A 16-bit PCM WAV whose header says whatever the test needs: 144 bytes for 100 data bytes.
fn raw_wav(rate: u32, channels: u16, data_len: u32, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&data_len.wrapping_add(36).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&channels.to_le_bytes());
    v.extend_from_slice(&rate.to_le_bytes());
    v.extend_from_slice(&rate.wrapping_mul(2 * channels as u32).to_le_bytes());
    v.extend_from_slice(&(2 * channels).to_le_bytes());
    v.extend_from_slice(&16u16.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&data_len.to_le_bytes());
    v.extend_from_slice(data);
    v
}

/// A float WAV of one second of stereo 0.1 with one non-finite sample at frame `at` (channel 1).
fn float_wav_with(bad: f32, at: usize) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 44_100,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut cur = std::io::Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut cur, spec).unwrap();
    for i in 0..44_100usize {
        w.write_sample(0.1f32).unwrap();
        w.write_sample(if i == at { bad } else { 0.1 }).unwrap();
    }
    w.finalize().unwrap();
    cur.into_inner()
}

async fn post_audio(s: &TestServer, path: &str, bytes: Vec<u8>) -> reqwest::Response {
    s.tl(Method::POST, path)
        .multipart(form(bytes, &[]))
        .send()
        .await
        .unwrap()
}

/// The 144-byte WAVs that grew the server past 15 GB (rate 0xFFFFFFFF; one flipped bit making
/// 11,025 Hz into 134,228,753 Hz) are refused at once, naming the field, on every route that
/// reads audio; nothing is queued or charged, and the server answers the next request.
#[tokio::test]
async fn absurd_headers_are_refused_at_submit_naming_the_field() {
    let s = TestServer::start(Options::default()).await;
    let before = s.balance().await;
    for rate in [u32::MAX, 11_025 | (1 << 27)] {
        let wav = raw_wav(rate, 1, 100, &[0u8; 100]);
        assert_eq!(wav.len(), 144);
        for path in [
            "/v1/analyze",
            "/v1/features",
            "/v1/metadata",
            "/v1/analyze/upload",
            "/v1/separate",
            "/v1/transcribe",
            "/v1/master",
        ] {
            let started = Instant::now();
            let body = assert_error(
                post_audio(&s, path, wav.clone()).await,
                422,
                "unsupported_audio",
            )
            .await;
            let msg = body["error"]["message"].as_str().unwrap();
            assert!(msg.contains("sample_rate"), "{path}: {msg}");
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{path} took {:?}",
                started.elapsed()
            );
        }
    }
    // A length declared far past the cap (0x7FFF0000 bytes of 8 kHz mono: ~37 hours).
    let long = raw_wav(8_000, 1, 0x7FFF_0000, &[0u8; 100]);
    let body = assert_error(
        post_audio(&s, "/v1/separate", long).await,
        422,
        "unsupported_audio",
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("duration"),
        "{body}"
    );
    let many = raw_wav(44_100, 40, 160, &[0u8; 160]);
    let r = post_audio(&s, "/v1/analyze", many).await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("channel"),
        "{body}"
    );
    // Under the hour, but more samples than one decode may hold (1,000 s of 8-channel 192 kHz:
    // a 1.6 MB FLAC of silence declaring this once grew the server by 4 GB before the decoder
    // stopped it, and the job route charged for it).
    let wide = raw_wav(192_000, 8, 3_072_000_000, &[0u8; 160]);
    for path in ["/v1/features", "/v1/analyze/upload", "/v1/separate"] {
        let body = assert_error(
            post_audio(&s, path, wide.clone()).await,
            422,
            "unsupported_audio",
        )
        .await;
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains("samples: the file declares"), "{path}: {msg}");
    }
    assert_eq!(s.balance().await, before, "nothing reserved or charged");
    let jobs: Value = s
        .tl(Method::GET, "/v1/jobs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jobs["data"].as_array().map_or(0, Vec::len), 0, "{jobs}");
    // Still serving real audio.
    let ok = post_audio(&s, "/v1/analyze", wav_bytes(2.0)).await;
    assert_eq!(ok.status(), 200);
    s.stop().await;
}

/// NaN and infinity: refused with 422 `corrupt_audio` by the synchronous routes and at submit when
/// the first packet shows them; further in, the job fails `corrupt_audio` (never completes, never
/// panics, never shows panic text).
#[tokio::test]
async fn non_finite_samples_never_reach_an_engine() {
    let s = TestServer::start(Options::default()).await;
    for bad in [f32::NAN, f32::INFINITY] {
        for path in ["/v1/analyze", "/v1/features"] {
            let body = assert_error(
                post_audio(&s, path, float_wav_with(bad, 20_000)).await,
                422,
                "corrupt_audio",
            )
            .await;
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("not a finite"),
                "{body}"
            );
        }
        for path in [
            "/v1/separate",
            "/v1/transcribe",
            "/v1/analyze/upload",
            "/v1/master",
        ] {
            assert_error(
                post_audio(&s, path, float_wav_with(bad, 0)).await,
                422,
                "corrupt_audio",
            )
            .await;
        }
    }
    for path in [
        "/v1/separate",
        "/v1/transcribe",
        "/v1/analyze/upload",
        "/v1/master",
    ] {
        let sub = s
            .submit(path, form(float_wav_with(f32::NAN, 30_000), &[]))
            .await;
        let job = s.wait_job(sub["job_id"].as_str().unwrap(), 60).await;
        assert_eq!(job["status"], "failed", "{path}: {job}");
        assert_eq!(job["error"]["code"], "corrupt_audio", "{path}: {job}");
        let msg = job["error"]["message"].as_str().unwrap();
        assert!(!msg.contains("panick"), "{path}: {msg}");
    }
    s.stop().await;
}

/// A full disk: a run that ends while nothing can be written is not lost. It stays `running`
/// while the store refuses writes, submits get `503 service_unavailable` with nothing stored, and
/// once writes work again the job ends within seconds, without a restart, with its webhook event
/// and a balanced ledger.
#[tokio::test]
async fn a_full_disk_delays_the_end_of_a_job_but_never_loses_it() {
    let rx = crate::util::TestReceiver::start().await;
    let s = TestServer::start(Options {
        webhook_url: Some(rx.url.clone()),
        ..Options::default()
    })
    .await;
    let start_balance = s.balance().await;
    let r = s
        .tl(Method::POST, "/v1/analyze/upload")
        .header("X-Soundcheck-Fault", "delay=700")
        .multipart(form(wav_bytes(1.0), &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.store.simulate_disk_full(true);
    // The run ends (700 ms delay + a short analysis) while nothing can be written.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let job: Value = s
        .tl(Method::GET, &format!("/v1/jobs/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["status"], "running", "{job}");
    let uploads_before = crate::util::files_under(&s.data_dir.path().join("uploads")).len();
    let refused = post_audio(&s, "/v1/separate", wav_bytes(1.0)).await;
    assert_error(refused, 503, "service_unavailable").await;
    let big = post_audio(&s, "/v1/separate", wav_bytes(12.0)).await; // > 1 MiB: streamed to disk
    assert_error(big, 503, "service_unavailable").await;
    assert_eq!(
        crate::util::files_under(&s.data_dir.path().join("uploads")).len(),
        uploads_before,
        "a refused submit leaves no file"
    );
    s.store.simulate_disk_full(false);
    let job = s.wait_job(&id, 15).await;
    assert_eq!(job["status"], "completed", "{job}");
    let got = rx.wait_for(1, 15).await;
    assert_eq!(got[0].json()["data"]["job_id"], id.as_str());
    assert_eq!(
        s.balance().await,
        start_balance - 2,
        "one charge, nothing else"
    );
    s.stop().await;
}

/// DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 connects from
/// loopback but sends its own Host; the keys and uploads are not served to it. Every dashboard
/// response forbids framing.
#[tokio::test]
async fn dashboard_secrets_need_a_local_host_name() {
    let s = TestServer::start(Options::default()).await;
    let port = s.base.rsplit(':').next().unwrap().to_string();
    for host in ["evil.example", "evil.example:80", "127.0.0.1.evil.example"] {
        for path in [
            "/dashboard/config",
            "/dashboard/jobs/job_01HZZZZZZZZZZZZZZZZZZZZZZZ/input",
        ] {
            let r = s
                .client
                .get(s.url(path))
                .header("Host", host)
                .send()
                .await
                .unwrap();
            assert_error(r, 404, "not_found").await;
        }
    }
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let r = s
            .client
            .get(s.url("/dashboard/config"))
            .header("Host", host.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{host}");
        let cfg: Value = r.json().await.unwrap();
        assert_eq!(cfg["tl_key"], s.secrets.tl_key.as_str());
    }
    for path in ["/", "/dashboard/app.js", "/dashboard/config"] {
        let r = s.client.get(s.url(path)).send().await.unwrap();
        assert_eq!(
            r.headers()["content-security-policy"],
            "frame-ancestors 'none'",
            "{path}"
        );
        assert_eq!(r.headers()["x-frame-options"], "DENY", "{path}");
    }
    s.stop().await;
}

/// JSON bodies are capped at 2 MB on every JSON route, refused before the rest is read; multipart
/// bodies may carry at most 64 text fields.
#[tokio::test]
async fn bodies_and_fields_are_capped() {
    let s = TestServer::start(Options::default()).await;
    let huge = format!("{{\"url\": \"{}\"}}", "a".repeat(3 * 1024 * 1024));
    for path in ["/v1/analyze", "/v1/features", "/v1/metadata", "/v1/credits"] {
        let r = s
            .tl(Method::POST, path)
            .header("content-type", "application/json")
            .body(huge.clone())
            .send()
            .await
            .unwrap();
        assert_error(r, 413, "payload_too_large").await;
    }
    // Without a Content-Length (chunked): refused once it passes the cap.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..40).map(|_| Ok(vec![b' '; 100 * 1024])).collect();
    let r = s
        .tl(Method::POST, "/v1/analyze")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_error(r, 413, "payload_too_large").await;
    let fields: Vec<(String, String)> = (0..100).map(|i| (format!("f{i}"), "1".into())).collect();
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = s
        .tl(Method::POST, "/v1/separate")
        .multipart(form(wav_bytes(0.5), &pairs))
        .send()
        .await
        .unwrap();
    let body = assert_error(r, 400, "invalid_request").await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Too many fields"));
    s.stop().await;
}

/// A client that never finishes its request line is disconnected after the header-read timeout,
/// and so is a keep-alive connection that sends no next request; a request whose body stalls is
/// dropped after two idle periods.
#[tokio::test]
async fn half_sent_requests_and_idle_connections_are_closed() {
    let s = TestServer::start_with(Options::default(), |c| {
        c.header_read_timeout = Duration::from_secs(1);
        c.idle_timeout = Duration::from_secs(2);
    })
    .await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let closed_within = |mut stream: tokio::net::TcpStream, secs: u64| async move {
        let started = Instant::now();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(secs), stream.read_to_end(&mut buf))
            .await
            .expect("closed by the server")
            .ok();
        started.elapsed()
    };
    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"GET /v1/jobs HTTP/1.1\r\nHost: x")
        .await
        .unwrap();
    let took = closed_within(half, 10).await;
    assert!(took < Duration::from_secs(4), "{took:?}");

    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut first = vec![0u8; 64];
    let n = idle.read(&mut first).await.unwrap();
    assert!(
        first[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first[..n])
    );
    let took = closed_within(idle, 10).await;
    assert!(took < Duration::from_secs(4), "{took:?}");

    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/credits HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"amount\"",
        s.secrets.tl_key
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    let took = closed_within(stalled, 15).await;
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );

    // A body dripped a byte every 300 ms: under 1 KB per idle period is idle too.
    let mut drip = tokio::net::TcpStream::connect(&addr).await.unwrap();
    drip.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if drip.write_all(b" ").await.is_err() {
            closed = true;
            break;
        }
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(1), drip.read(&mut probe)).await
        {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a dripping connection was still open after {:?}",
        started.elapsed()
    );
    s.stop().await;
}

/// Time the server takes over a request it has read whole is not the client's idleness: with
/// responses held 5 s (`--latency`) and a 2 s idle timeout, a GET and a posted body are answered
/// (both were once dropped with no response after two idle periods).
#[tokio::test]
async fn a_slow_answer_is_not_an_idle_client() {
    let s = TestServer::start_with(Options::default(), |c| {
        c.idle_timeout = Duration::from_secs(2);
        c.latency = Duration::from_millis(5_000);
    })
    .await;
    let credits = s.tl(Method::GET, "/v1/credits").send().await.unwrap();
    assert_eq!(credits.status(), 200);
    let listed = s.tl(Method::GET, "/v1/jobs?limit=1").send().await.unwrap();
    assert_eq!(listed.status(), 200);
    let job = s
        .tl(Method::POST, "/v1/analyze/upload")
        .multipart(form(wav_bytes(0.2), &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(job.status(), 202);

    // Headers first, the body a moment later (as a client that writes them apart does): while
    // the server sleeps out `--latency` it has not read the body, and the unread body is not the
    // client's idleness (this connection was once dropped before its answer).
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut apart = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = br#"{"amount": 5}"#;
    let head = format!(
        "POST /v1/credits HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        s.secrets.tl_key,
        body.len()
    );
    apart.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    apart.write_all(body).await.unwrap();
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(20), apart.read(&mut answer))
        .await
        .expect("no answer within 20 s")
        .unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer[..n])
    );
    s.stop().await;
}

/// A wrong method gets `405` with the envelope and an `Allow` header.
#[tokio::test]
async fn wrong_methods_get_405_with_the_envelope_and_allow() {
    let s = TestServer::start(Options::default()).await;
    let r = s.tl(Method::PATCH, "/v1/jobs").send().await.unwrap();
    let allow = r
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_string());
    assert_error(r, 405, "invalid_request").await;
    assert!(allow.is_some_and(|a| a.contains("GET")));
    let r = s.tl(Method::PUT, "/v1/generations").send().await.unwrap();
    assert!(r.headers().contains_key("allow"));
    assert_error(r, 405, "invalid_request").await;
    // A path id that is not UTF-8 is refused in the envelope too, not in axum's plain text.
    for path in [
        "/v1/jobs/%ff",
        "/v1/jobs/%ff/events",
        "/v1/generations/%ff",
        "/media/%ff/x.wav",
        "/dashboard/jobs/%ff/input",
    ] {
        let request = if path.starts_with("/v1/generations") {
            s.ft(Method::GET, path)
        } else {
            s.tl(Method::GET, path)
        };
        let body = assert_error(request.send().await.unwrap(), 400, "invalid_request").await;
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Invalid path"),
            "{path}: {body}"
        );
    }
    s.stop().await;
}

/// Range requests follow RFC 9110: an unknown unit is ignored (200, whole file), an `If-Range`
/// that does not match the file's Last-Modified sends the whole file, a matching one the range.
/// Then the janitor deletes expired results (their links answer 404) and old uploads.
#[tokio::test]
async fn media_ranges_follow_rfc_9110_and_the_janitor_deletes_expired_files() {
    let s = TestServer::start(Options::default()).await;
    let sub = s.submit("/v1/master", form(wav_bytes(1.0), &[])).await;
    let job = s.wait_job(sub["job_id"].as_str().unwrap(), 60).await;
    assert_eq!(job["status"], "completed", "{job}");
    let url = job["result"]["mastered_url"]
        .as_str()
        .or_else(|| job["result"]["audio_url"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| {
            // The first media URL in the result, whatever its field.
            let text = job["result"].to_string();
            let at = text.find("/media/").unwrap();
            let start = text[..at].rfind('"').unwrap() + 1;
            let end = at + text[at..].find('"').unwrap();
            text[start..end].to_string()
        });
    let whole = s.client.get(&url).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    let last_modified = whole.headers()["last-modified"]
        .to_str()
        .unwrap()
        .to_string();
    let size = whole.bytes().await.unwrap().len();
    let get = |range: &str, if_range: Option<String>| {
        let mut r = s.client.get(&url).header("Range", range.to_string());
        if let Some(v) = if_range {
            r = r.header("If-Range", v);
        }
        r.send()
    };
    let r = get("items=0-9", None).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), size);
    let r = get("bytes=0-9", Some("\"junk\"".into())).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = get("bytes=0-9", Some("Mon, 01 Jan 1990 00:00:00 GMT".into()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = get("bytes=0-9", Some(last_modified)).await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().len(), 10);
    let r = get("bytes=0-9", None).await.unwrap();
    assert_eq!(r.status(), 206);
    // A suffix longer than the file is the whole file, a last position past the end is the end
    // (RFC 9110 §14.1.2); a range that starts past the end is a 416 in the error envelope.
    let r = get(&format!("bytes=-{}", size * 10), None).await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 0-{}/{size}", size - 1).as_str()
    );
    assert_eq!(r.bytes().await.unwrap().len(), size);
    let r = get(&format!("bytes=10-{}", size * 10), None).await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().len(), size - 10);
    let r = get(&format!("bytes={size}-"), None).await.unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes */{size}").as_str()
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");

    // Nothing has expired yet: the janitor leaves everything.
    let files = |dir: &str| crate::util::files_under(&s.data_dir.path().join(dir)).len();
    let ttl = Duration::from_secs(3600);
    let now = soundcheck::store::now_ms();
    let swept = soundcheck::jobs::janitor::sweep(
        &s.store,
        &soundcheck::media::Media::Dir(s.data_dir.path().to_path_buf()),
        s.data_dir.path(),
        ttl,
        now,
    )
    .await
    .unwrap();
    assert_eq!((swept.results, swept.uploads), (0, 0));
    assert!(files("results") > 0 && files("uploads") > 0);
    // Eight days later: result links expired (7-day TTL) and the upload is a TTL old.
    let later = now + 8 * 24 * 3600 * 1000;
    let swept = soundcheck::jobs::janitor::sweep(
        &s.store,
        &soundcheck::media::Media::Dir(s.data_dir.path().to_path_buf()),
        s.data_dir.path(),
        ttl,
        later,
    )
    .await
    .unwrap();
    assert!(swept.results > 0 && swept.uploads == 1, "{swept:?}");
    assert_eq!(files("results"), 0);
    assert_eq!(files("uploads"), 0);
    assert_error(s.client.get(&url).send().await.unwrap(), 404, "not_found").await;
    s.stop().await;
}

/// Strict mode checks the jobs endpoint URL like generation webhooks: 6to4 of 127.0.0.1, site-local
/// and NAT64 addresses are refused by `PUT /v1/webhook`.
#[tokio::test]
async fn strict_mode_refuses_special_addresses_for_the_jobs_endpoint() {
    let s = TestServer::start(Options {
        strict: true,
        ..Options::default()
    })
    .await;
    for url in [
        "https://[2002:7f00:1::1]/hook",
        "https://[fec0::1]/hook",
        "https://[64:ff9b::7f00:1]/hook",
        "https://127.0.0.1/hook",
        "https://192.88.99.1/hook",
        "http://8.8.8.8/hook",
    ] {
        let r = s
            .tl(Method::PUT, "/v1/webhook")
            .json(&serde_json::json!({ "url": url }))
            .send()
            .await
            .unwrap();
        assert_error(r, 400, "invalid_request").await;
    }
    s.stop().await;
}

fn soundcheck_cmd() -> std::process::Command {
    let mut c = crate::util::soundcheck();
    c.env("SOUNDCHECK_LOG", "warn");
    c
}

/// A second `serve` on a data directory in use exits at once, naming the directory and the first
/// server's pid and URL; `keys` and `credits show` still read it; `credits add` goes through its API
/// while it runs. A mistyped `--data-dir` is an error that creates nothing. `serve --strict` refuses a
/// private `--webhook-url` at start.
#[tokio::test]
async fn one_server_per_data_directory_and_client_commands_never_create_one() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let mut first = crate::util::soundcheck_async()
        .args(["serve", "--addr", "127.0.0.1:0", "--workers", "1"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("SOUNDCHECK_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(first.stdout.take().unwrap()).lines();
    let mut base = String::new();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
    {
        if let Some(url) = line.split("listening on ").nth(1) {
            base = url.trim().to_string();
        }
        if line.starts_with("SOUNDCHECK_WEBHOOK_SECRET=") {
            break;
        }
    }
    assert!(!base.is_empty());
    let started = Instant::now();
    let second = soundcheck_cmd()
        .args(["serve", "--addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    assert!(
        err.contains(&format!("pid {}", first.id().unwrap())),
        "{err}"
    );
    assert!(err.contains(&base), "{err}");

    let run = |args: &[&str]| {
        soundcheck_cmd()
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let keys = run(&["keys"]);
    assert!(
        keys.status.success(),
        "{}",
        String::from_utf8_lossy(&keys.stderr)
    );
    assert!(String::from_utf8_lossy(&keys.stdout).contains("SOUNDCHECK_TL_KEY=tl_test_"));
    let shown = run(&["credits", "show"]);
    assert_eq!(String::from_utf8_lossy(&shown.stdout).trim(), "1000");
    // While the server owns the directory, `credits add` goes through its API (its ledger).
    let add = run(&["credits", "add", "5"]);
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&add.stdout).trim(), "1005");

    first.start_kill().unwrap();
    first.wait().await.unwrap();
    let add = run(&["credits", "add", "5"]);
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&add.stdout).trim(), "1010");

    let typo = dir.path().join("no-such-dir");
    for args in [
        vec!["keys"],
        vec!["credits", "show"],
        vec!["credits", "add", "5"],
        vec!["jobs", "list"],
    ] {
        let out = soundcheck_cmd()
            .args(&args)
            .arg("--data-dir")
            .arg(&typo)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no soundcheck database"), "{args:?}: {err}");
        assert!(!err.contains("stack backtrace"), "{err}");
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }

    let strict = soundcheck_cmd()
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--strict",
            "--webhook-url",
            "https://127.0.0.1/x",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!strict.status.success());
    assert!(
        String::from_utf8_lossy(&strict.stderr).contains("--webhook-url"),
        "{}",
        String::from_utf8_lossy(&strict.stderr)
    );
}

/// The offline commands obey the same bounds: `soundcheck analyze` on the 144-byte WAV ends at
/// once with the field named (it used to pass 6 GB).
#[test]
fn offline_analyze_refuses_the_absurd_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.wav");
    std::fs::write(&path, raw_wav(u32::MAX, 1, 100, &[0u8; 100])).unwrap();
    let started = Instant::now();
    let out = soundcheck_cmd().arg("analyze").arg(&path).output().unwrap();
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sample_rate"), "{err}");
}

/// A server killed while receiving an upload, or during a run, leaves files no row leads to. The
/// janitor deletes them once they are an hour old: uploads without a row, and run directories of
/// runs that can no longer finish. The current run's output, known uploads, fresh files and
/// directories that are not a job's or a generation's are left alone.
#[tokio::test]
async fn the_janitor_deletes_what_a_crash_left_behind() {
    let s = TestServer::start(Options::default()).await;
    let job = s
        .submit("/v1/analyze/upload", form(wav_bytes(0.5), &[]))
        .await;
    let id = job["job_id"].as_str().unwrap().to_string();
    assert_eq!(s.wait_job(&id, 30).await["status"], "completed");
    let root = s.data_dir.path().to_path_buf();
    let put = |rel: &str| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"left by a crash").unwrap();
        path
    };
    let orphans = [
        put("uploads/zz/upl_01KILLEDWHILERECEIVINGZZ"),
        put("results/job_01NEVERADMITTED/run1/stems.wav"),
        put(&format!("results/{id}/run7/partial.wav")),
        put("results/gen_01NEVERADMITTED/run2/audio.wav"),
    ];
    let kept = [
        put("results/notes/run1/readme.txt"),
        put(&format!("results/{id}/run1/extra.wav")),
    ];
    let before = crate::util::files_under(&root.join("uploads")).len();
    let sweep = |now: i64| {
        let (store, root) = (s.store.clone(), root.clone());
        async move {
            soundcheck::jobs::janitor::sweep(
                &store,
                &soundcheck::media::Media::Dir(root.clone()),
                &root,
                Duration::from_secs(7 * 24 * 3600),
                now,
            )
            .await
            .unwrap()
        }
    };
    // Fresh: nothing is touched (an upload may still be arriving, a run still writing).
    let now = soundcheck::store::now_ms();
    assert_eq!(sweep(now).await.orphans, 0);
    assert!(orphans.iter().chain(&kept).all(|p| p.exists()));
    // Two hours later: the four orphans go; the rest stays.
    let swept = sweep(now + 2 * 3600 * 1000).await;
    assert_eq!(swept.orphans, 4, "{swept:?}");
    for p in &orphans {
        assert!(!p.exists(), "{} should be gone", p.display());
    }
    for p in &kept {
        assert!(p.exists(), "{} should stay", p.display());
    }
    // The job's own upload is known: kept.
    assert_eq!(
        crate::util::files_under(&root.join("uploads")).len(),
        before - 1
    );
    assert_eq!(s.wait_job(&id, 5).await["status"], "completed");
    s.stop().await;
}

/// A name the client chose is repeated in an error cut short and printable (a 100 KB field name
/// once came back whole in the message); a field given twice, an unknown field of the webhook
/// settings and an unreadable key header are refused with what is wrong.
#[tokio::test]
async fn odd_field_names_and_keys_get_clear_errors() {
    let s = TestServer::start(Options::default()).await;
    let long = "n".repeat(100_000);
    for path in ["/v1/analyze", "/v1/analyze/upload"] {
        let r = s
            .tl(Method::POST, path)
            .multipart(form(wav_bytes(0.5), &[(&long, "1")]))
            .send()
            .await
            .unwrap();
        let len = r.content_length();
        if path == "/v1/analyze" {
            let body = assert_error(r, 400, "invalid_request").await;
            let msg = body["error"]["message"].as_str().unwrap();
            assert!(
                msg.starts_with(&format!("Unknown field `{}...`", &long[..64])),
                "{msg}"
            );
        } else {
            // The jobs route ignores a field it does not take: the job is accepted.
            assert_eq!(r.status(), 202);
        }
        assert!(len.unwrap_or(0) < 2_000, "{path}: {len:?} bytes");
    }
    // A field given twice: which one was meant is not guessed.
    let r = s
        .tl(Method::POST, "/v1/separate")
        .multipart(form(wav_bytes(0.5), &[("stems", "2"), ("stems", "4")]))
        .send()
        .await
        .unwrap();
    let body = assert_error(r, 400, "invalid_request").await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`stems` is given more than once"));
    // PUT /v1/webhook takes only its two fields.
    let r = s
        .tl(Method::PUT, "/v1/webhook")
        .json(&serde_json::json!({"URL": "http://127.0.0.1:9/x"}))
        .send()
        .await
        .unwrap();
    let body = assert_error(r, 400, "invalid_request").await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains("`URL`"),
        "{body}"
    );
    // A key header that is not visible ASCII is a wrong key, not a missing one.
    let r = s
        .client
        .get(s.url("/v1/jobs"))
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(b"Bearer \xff").unwrap(),
        )
        .send()
        .await
        .unwrap();
    let body = assert_error(r, 401, "unauthorized").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Invalid API key"),
        "{body}"
    );
    let mut body = serde_json::Map::new();
    body.insert("\u{1}".repeat(5_000), Value::from(1));
    body.insert("url".into(), Value::from("http://127.0.0.1:9/x.wav"));
    let r = s
        .tl(Method::POST, "/v1/analyze")
        .json(&body)
        .send()
        .await
        .unwrap();
    let body = assert_error(r, 400, "invalid_request").await;
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.len() < 300 && msg.contains("`????"), "{msg}");
    s.stop().await;
}

/// A client that opens with the HTTP/2 preface (prior knowledge, as `curl --http2-prior-knowledge`
/// does) is told in HTTP/2 that HTTP/1.1 is required (SETTINGS, then GOAWAY with
/// `HTTP_1_1_REQUIRED` and a reason), not closed without a word; so is one whose preface comes in
/// two pieces. The server goes on serving.
#[tokio::test]
async fn an_http2_preface_is_told_http1_is_required() {
    let s = TestServer::start(Options::default()).await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let preface: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    // An empty SETTINGS frame, which a client sends right after the preface.
    let settings: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
    for split in [preface.len(), 7] {
        let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
        sock.write_all(&preface[..split]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        sock.write_all(&preface[split..]).await.unwrap();
        sock.write_all(settings).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut buf))
            .await
            .expect("answered and closed")
            .unwrap();
        // Frames: 24-bit length, type, flags, stream id; SETTINGS (4) first, then GOAWAY (7).
        let mut frames = Vec::new();
        let mut rest = &buf[..];
        while rest.len() >= 9 {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            assert!(
                rest.len() >= 9 + len,
                "split {split}: a cut frame in {buf:?}"
            );
            frames.push((rest[3], rest[9..9 + len].to_vec()));
            rest = &rest[9 + len..];
        }
        assert!(rest.is_empty(), "split {split}: {buf:?}");
        assert_eq!(frames.len(), 2, "split {split}: {buf:?}");
        assert_eq!(frames[0], (4, vec![]), "split {split}");
        let (kind, goaway) = &frames[1];
        assert_eq!(*kind, 7, "split {split}");
        assert_eq!(goaway[..4], [0, 0, 0, 0], "last stream id");
        assert_eq!(goaway[4..8], [0, 0, 0, 0xd], "HTTP_1_1_REQUIRED");
        let reason = String::from_utf8_lossy(&goaway[8..]);
        assert!(reason.contains("HTTP/1.1"), "{reason}");
    }
    let r = s.tl(reqwest::Method::GET, "/v1/jobs").send().await.unwrap();
    assert_eq!(r.status(), 200);
    s.stop().await;
}

/// An upload that declares more than the cap with `Expect: 100-continue` gets the 413 at once,
/// not a `100 Continue` that invites gigabytes (a job route and a synchronous one).
#[tokio::test]
async fn an_oversized_declared_upload_is_refused_before_its_body() {
    let s = TestServer::start(Options::default()).await;
    let addr = s.base.trim_start_matches("http://").to_string();
    for path in ["/v1/analyze/upload", "/v1/analyze"] {
        let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
             Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 10000000000\r\n\
             Expect: 100-continue\r\n\r\n",
            s.secrets.tl_key
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut buf))
            .await
            .expect("an answer without sending the body")
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 413"), "{path}: {text}");
        assert!(text.contains("payload_too_large"), "{path}: {text}");
    }
    s.stop().await;
}
