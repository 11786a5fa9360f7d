//! Media in S3-compatible object storage (`--media s3://bucket/prefix`), against a real S3 server
//! process: moto's standalone server (`pip install "moto[server]"`; `scripts/requirements.txt`),
//! started on a free port. soundcheck talks to it over HTTP with signed requests, as it would to
//! AWS, MinIO or Garage; nothing is mocked inside the test.
//!
//! One server: uploads and results land in the bucket (not on disk), results are served with
//! `Range`, a result is analysed from the bucket, the janitor deletes expired objects, and a
//! bucket that cannot be written stops `serve` at start with the reason. A fleet (needs
//! PostgreSQL): two API nodes and a worker, each with its own data directory and only the bucket
//! in common — a job and a generation submitted on one node are served by the other; then the
//! whole fleet is killed with work queued and restarted, and the work completes.
//!
//! Without the moto server installed the tests say so and pass, unless `SOUNDCHECK_REQUIRE_S3`
//! (set by CI) makes that a failure.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::util::{fleet_database, form, free_port, wav_bytes, Node, TestReceiver};

/// A moto S3 server on a free port, killed when dropped.
struct S3Server {
    _child: Child,
    endpoint: String,
}

/// Credentials and endpoint for the test server, as `AWS_*` variables (moto accepts any key).
fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT", endpoint.to_string()),
        ("AWS_ACCESS_KEY_ID", "soundcheck-test".into()),
        ("AWS_SECRET_ACCESS_KEY", "soundcheck-test-secret".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ALLOW_HTTP", "true".into()),
    ]
}

impl S3Server {
    /// Starts one, with `buckets` created; `None` (after saying so) if moto is not installed.
    async fn start(buckets: &[&str]) -> Option<S3Server> {
        let installed = Command::new("python3")
            .args(["-c", "import moto.server, flask"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if !installed {
            assert!(
                std::env::var_os("SOUNDCHECK_REQUIRE_S3").is_none(),
                "SOUNDCHECK_REQUIRE_S3 is set but moto's server is not installed \
                 (pip install \"moto[server]\")"
            );
            eprintln!("S3 test not run: pip install \"moto[server]\" to run it");
            return None;
        }
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let endpoint = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while client.get(&endpoint).send().await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "moto did not start within a minute"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for b in buckets {
            let r = client.put(format!("{endpoint}/{b}")).send().await.unwrap();
            assert!(r.status().is_success(), "create bucket {b}: {}", r.status());
        }
        Some(S3Server {
            _child: child,
            endpoint,
        })
    }

    /// The keys in `bucket` under `prefix`.
    async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let xml = reqwest::get(format!(
            "{}/{bucket}?list-type=2&prefix={prefix}",
            self.endpoint
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
        xml.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }
}

/// `soundcheck <kind>` with its media in `media_url` on `s3`.
async fn s3_node(kind: &str, s3: &S3Server, media_url: &str, data: &Path, extra: &[&str]) -> Node {
    let env = aws_env(&s3.endpoint);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut args = vec!["--media", media_url, "--time-scale", "0.05"];
    args.extend_from_slice(extra);
    Node::spawn(kind, data, &args, &env).await
}

/// Files (not directories) under `dir`, recursively; a missing directory has none.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    if !dir.exists() {
        return Vec::new();
    }
    crate::util::files_under(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_and_results_live_in_the_bucket_and_are_served_with_ranges() {
    let Some(s3) = S3Server::start(&["soundcheck-media"]).await else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let media = "s3://soundcheck-media/node-a";
    let node = s3_node("serve", &s3, media, data.path(), &["--addr", "127.0.0.1:0"]).await;
    assert!(!node.base.is_empty(), "serve started");

    // A large upload (over the 1 MiB kept in the database: streamed, then put before the job is
    // admitted) and a small one (put by the worker that claims it).
    let mut ids = Vec::new();
    for seconds in [8.0, 1.0] {
        let bytes = wav_bytes(seconds);
        let r = node
            .req(Method::POST, "/v1/master")
            .multipart(form(bytes, &[("format", "wav")]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        let v: Value = r.json().await.unwrap();
        ids.push(v["job_id"].as_str().unwrap().to_string());
    }
    let mut urls = Vec::new();
    for id in &ids {
        let done = node.wait_status(id, &["completed", "failed"], 120).await;
        assert_eq!(done["status"], "completed", "{done}");
        urls.push(done["result"]["mastered"].as_str().unwrap().to_string());
    }

    // In the bucket: both uploads and both results; on this node's disk: nothing left over.
    let keys = s3.keys("soundcheck-media", "node-a/").await;
    let count = |part: &str| keys.iter().filter(|k| k.starts_with(part)).count();
    assert_eq!(count("node-a/uploads/"), 2, "{keys:?}");
    for id in &ids {
        assert!(
            keys.contains(&format!("node-a/results/{id}/run1/mastered.wav")),
            "{id} in {keys:?}"
        );
    }
    for sub in ["results", "uploads", "scratch"] {
        let left = files(&data.path().join(sub));
        assert!(left.is_empty(), "{sub}: {left:?}");
    }

    // Served from the bucket: whole, ranges, suffix ranges, an unsatisfiable range, HEAD.
    let client = reqwest::Client::new();
    let whole = client.get(&urls[0]).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    assert_eq!(whole.headers()["content-type"], "audio/wav");
    let modified = whole.headers()["last-modified"]
        .to_str()
        .unwrap()
        .to_string();
    let whole = whole.bytes().await.unwrap();
    let n = whole.len();
    assert!(n > 1_000_000, "an 8 s stereo WAV: {n} bytes");
    assert_eq!(&whole[..4], b"RIFF");
    let range = |r: String| client.get(&urls[0]).header("Range", r).send();
    let part = range("bytes=100-299".into()).await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 100-299/{n}")
    );
    assert_eq!(part.bytes().await.unwrap(), whole[100..300]);
    let tail = range("bytes=-10".into()).await.unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().await.unwrap(), whole[n - 10..]);
    let beyond = range(format!("bytes={n}-")).await.unwrap();
    assert_eq!(beyond.status(), 416);
    assert_eq!(beyond.headers()["content-range"], format!("bytes */{n}"));
    let body: serde_json::Value = beyond.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    // If-Range with the file's own date keeps the range; with another, the whole file.
    let kept = client
        .get(&urls[0])
        .header("Range", "bytes=0-9")
        .header("If-Range", &modified)
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), 206);
    let stale = client
        .get(&urls[0])
        .header("Range", "bytes=0-9")
        .header("If-Range", "Mon, 01 Jan 2001 00:00:00 GMT")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
    let head = client.head(&urls[1]).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let small_len: usize = head.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        client
            .get(&urls[1])
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .len(),
        small_len
    );

    // A result in the bucket can be analysed by URL (fetched into scratch, then removed).
    let r = node
        .req(Method::POST, "/v1/analyze")
        .json(&json!({ "url": urls[1] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert!(files(&data.path().join("scratch")).is_empty());

    // An object deleted behind the server's back: a clear 404, not a 500.
    let gone = format!(
        "{}/soundcheck-media/node-a/results/{}/run1/mastered.wav",
        s3.endpoint, ids[1]
    );
    // moto refuses an anonymous DELETE; it reads, but does not check, a signature.
    let deleted = client
        .delete(&gone)
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=soundcheck-test/20260101/us-east-1/s3/aws4_request, \
             SignedHeaders=host, Signature=0",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let r = client.get(&urls[1]).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    // Analysed by URL, the same: 404, and nothing about the storage's address in the message.
    let r = node
        .req(Method::POST, "/v1/analyze")
        .json(&json!({ "url": urls[1] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body = r.text().await.unwrap();
    assert!(!body.contains(&s3.endpoint), "{body}");

    // A bucket that does not exist stops the server at start, with the reason.
    let other = tempfile::tempdir().unwrap();
    let env = aws_env(&s3.endpoint);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (err, _) = serve_refused("s3://no-such-bucket/x", other.path(), &env).await;
    assert!(
        err.contains("--media s3://no-such-bucket/x: could not write"),
        "{err}"
    );
    // A key prefix an object path would escape is refused before anything starts.
    let (err, _) = serve_refused("s3://soundcheck-media/team~1", other.path(), &[]).await;
    assert!(err.contains("has '~'"), "{err}");
    // A plain-HTTP endpoint without AWS_ALLOW_HTTP: the message names the missing setting.
    let no_http: Vec<_> = env
        .iter()
        .copied()
        .filter(|(k, _)| *k != "AWS_ALLOW_HTTP")
        .collect();
    let (err, out) = serve_refused("s3://soundcheck-media/y", other.path(), &no_http).await;
    assert!(err.contains("set AWS_ALLOW_HTTP=true"), "{err}");
    // Neither printed a banner first: the bucket is checked before the server says it listens.
    assert!(!out.contains("listening"));
}

/// `serve --media MEDIA` with `env` (and no AWS_ALLOW_HTTP unless given), which must fail:
/// its stderr and stdout.
async fn serve_refused(media: &str, data: &Path, env: &[(&str, &str)]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_soundcheck"))
        .args(["serve", "--addr", "127.0.0.1:0", "--media", media])
        .arg("--data-dir")
        .arg(data)
        .env_remove("AWS_ALLOW_HTTP")
        .envs(env.iter().copied())
        .env("XDG_RUNTIME_DIR", data.join("run"))
        .env("XDG_STATE_HOME", data.join("state"))
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success(), "serve --media {media} started");
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The janitor deletes expired results and old uploads from the bucket, and nothing outside its
/// prefix (another node's or another deployment's objects in the same bucket).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_janitor_deletes_expired_objects_under_its_prefix_only() {
    use soundcheck::media::Media;
    use soundcheck::store::{self, Store};

    let Some(s3) = S3Server::start(&["janitor-media"]).await else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let settings: Vec<(&str, &str)> = vec![
        ("aws_endpoint", &s3.endpoint),
        ("aws_access_key_id", "k"),
        ("aws_secret_access_key", "s"),
        ("aws_region", "us-east-1"),
        ("aws_allow_http", "true"),
    ];
    let media = Media::s3("s3://janitor-media/mine", data.path(), &settings).unwrap();
    media.check().await.unwrap();
    let client = reqwest::Client::new();
    let put = |key: &str| {
        client
            .put(format!("{}/janitor-media/{key}", s3.endpoint))
            .body("x")
            .send()
    };
    for key in [
        "mine/results/job_1/run1/a.wav",
        "minefield/results/b.wav",
        "theirs/c.wav",
    ] {
        assert!(put(key).await.unwrap().status().is_success());
    }
    let store = Store::open(&data.path().join("db.sqlite")).unwrap();
    store
        .write(|tx| {
            for (token, location) in [
                ("t1", "s3://janitor-media/mine/results/job_1/run1/a.wav"),
                ("t2", "s3://janitor-media/minefield/results/b.wav"),
                ("t3", "s3://janitor-media/theirs/c.wav"),
            ] {
                store::media::insert(tx, token, location, "a.wav", "job_1", 1_000)?;
            }
            Ok(())
        })
        .await
        .unwrap();
    let swept = soundcheck::jobs::janitor::sweep(
        &store,
        &media,
        data.path(),
        Duration::from_secs(3600),
        10_000,
    )
    .await
    .unwrap();
    assert_eq!(swept.results, 3, "every expired link is forgotten");
    let keys = s3.keys("janitor-media", "").await;
    assert_eq!(
        keys,
        vec![
            "minefield/results/b.wav".to_string(),
            "theirs/c.wav".to_string()
        ],
        "only the object under mine/ goes"
    );

    // A delete the storage refuses is tried again at the next sweep, not forgotten: a node whose
    // endpoint answers 403 to everything sweeps first, then one that reaches the bucket.
    assert!(put("mine/results/job_2/run1/d.wav")
        .await
        .unwrap()
        .status()
        .is_success());
    store
        .write(|tx| {
            let location = "s3://janitor-media/mine/results/job_2/run1/d.wav";
            store::media::insert(tx, "t4", location, "d.wav", "job_2", 20_000)
        })
        .await
        .unwrap();
    let refusing = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refusing_url = format!("http://{}", refusing.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut conn, _)) = refusing.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {
                    let answer = "HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n";
                    if conn.write_all(answer.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let mut down = settings.clone();
    down[0] = ("aws_endpoint", &refusing_url);
    let refused = Media::s3("s3://janitor-media/mine", data.path(), &down).unwrap();
    let sweep = |media: Media, now: i64| {
        let store = store.clone();
        let dir = data.path().to_path_buf();
        async move {
            soundcheck::jobs::janitor::sweep(&store, &media, &dir, Duration::from_secs(3600), now)
                .await
                .unwrap()
        }
    };
    let first = sweep(refused, 30_000).await;
    assert_eq!((first.results, first.retry_later), (1, 1));
    assert!(
        s3.keys("janitor-media", "mine/")
            .await
            .contains(&"mine/results/job_2/run1/d.wav".to_string()),
        "the refused delete left the object"
    );
    assert_eq!(sweep(media.clone(), 40_000).await.results, 1, "tried again");
    assert!(s3.keys("janitor-media", "mine/").await.is_empty());
    assert_eq!(
        sweep(media, 50_000).await.results,
        0,
        "and then nothing is left to do"
    );
}

/// A fleet whose nodes share only PostgreSQL and the bucket: each has its own data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_shares_media_through_the_bucket_and_survives_a_whole_restart() {
    let Some(db) = fleet_database().await else {
        return;
    };
    let Some(s3) = S3Server::start(&["fleet-media"]).await else {
        return;
    };
    let media = "s3://fleet-media/staging";
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let rx = TestReceiver::start().await;
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let addr_a = format!("127.0.0.1:{port}");
    let fleet = ["--database", &db, "--lease-secs", "3"];
    let api = |dir: usize, addr: String| {
        let (s3, dirs, fleet, public, hook) = (&s3, &dirs, fleet, public.clone(), rx.url.clone());
        async move {
            let mut args = fleet.to_vec();
            args.extend_from_slice(&["--addr", &addr, "--public-url", &public, "--workers", "0"]);
            args.extend_from_slice(&["--webhook-url", &hook]);
            s3_node("serve", s3, media, dirs[dir].path(), &args).await
        }
    };
    let worker = || {
        let (s3, dirs, fleet, public) = (&s3, &dirs, fleet, public.clone());
        async move {
            let mut args = fleet.to_vec();
            args.extend_from_slice(&["--public-url", &public, "--workers", "1"]);
            s3_node("worker", s3, media, dirs[2].path(), &args).await
        }
    };
    let mut a = api(0, addr_a.clone()).await;
    let mut b = api(1, "127.0.0.1:0".into()).await;
    let mut w = worker().await;

    // A job submitted on B runs on the worker; its result is served by A from the bucket.
    let r = b
        .req(Method::POST, "/v1/master")
        .multipart(form(wav_bytes(1.0), &[("format", "wav")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let job: Value = r.json().await.unwrap();
    let job_id = job["job_id"].as_str().unwrap().to_string();
    let done = a.wait_status(&job_id, &["completed", "failed"], 120).await;
    assert_eq!(done["status"], "completed", "{done}");
    let url = done["result"]["mastered"].as_str().unwrap();
    assert!(url.starts_with(&public), "{url}");
    let part = reqwest::Client::new()
        .get(url)
        .header("Range", "bytes=0-3")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(&part.bytes().await.unwrap()[..], b"RIFF");

    // A generation created on A, polled on B, its MP3 served by B's address (same bucket).
    let ft = |node: &Node, method: Method, path: &str| {
        reqwest::Client::new()
            .request(method, format!("{}{path}", node.base))
            .header("X-API-Key", &node.ft_key)
    };
    let r = ft(&a, Method::POST, "/v1/generations")
        .json(&json!({"tags": "lofi piano", "duration": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let gen: Value = r.json().await.unwrap();
    let gen_id = gen["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let generated = loop {
        let g: Value = ft(&b, Method::GET, &format!("/v1/generations/{gen_id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if g["status"] == "completed" || g["status"] == "failed" {
            break g;
        }
        assert!(std::time::Instant::now() < deadline, "{g}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(generated["status"], "completed", "{generated}");
    let audio_url = generated["audioUrl"].as_str().unwrap();
    let on_b = audio_url.replace(&public, &b.base);
    let mp3 = reqwest::get(&on_b).await.unwrap();
    assert_eq!(mp3.status(), 200);
    assert_eq!(mp3.headers()["content-type"], "audio/mpeg");
    assert!(mp3.bytes().await.unwrap().len() > 1000);

    // The whole fleet goes down at once (kill -9) with a job in flight; restarted, it completes
    // the job, with its webhook.
    let r = a
        .req(Method::POST, "/v1/analyze/upload")
        .header("X-Soundcheck-Fault", "delay=3000")
        .multipart(form(wav_bytes(0.5), &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let slow: Value = r.json().await.unwrap();
    let slow_id = slow["job_id"].as_str().unwrap().to_string();
    b.wait_status(&slow_id, &["running"], 60).await;
    for node in [&mut a, &mut b, &mut w] {
        node.child.start_kill().unwrap();
        node.child.wait().await.unwrap();
    }
    let a = api(0, addr_a).await;
    let _b = api(1, "127.0.0.1:0".into()).await;
    let _w = worker().await;
    let done = a.wait_status(&slow_id, &["completed", "failed"], 90).await;
    assert_eq!(done["status"], "completed", "{done}");
    rx.wait_for(2, 30).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let hooks = rx.received();
    for id in [&job_id, &slow_id] {
        let sent = hooks
            .iter()
            .filter(|h| h.json()["data"]["job_id"] == id.as_str())
            .count();
        assert_eq!(sent, 1, "one webhook for {id}");
    }
}
