//! The seeds' own Flask receivers (scripts/seed_clients/) run against the server: they must accept
//! our webhooks with nothing changed but the secret. Needs python3 with Flask; CI installs it and
//! sets SOUNDCHECK_REQUIRE_PYTHON=1 so these never skip there.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::util::{form, wait_until, wav_bytes, Options, TestServer};

/// True when python3 with Flask is here; panics instead when CI requires it.
fn python_ready() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import flask, requests"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("SOUNDCHECK_REQUIRE_PYTHON").is_none(),
            "python3 with flask and requests is required"
        );
        eprintln!("python3 with flask is not installed: seed-client checks not run here");
    }
    ok
}

fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/seed_clients")
}

/// Starts `flask --app <app> run` on a free port; returns the child and its base URL.
async fn flask(app: &str, env: &[(&str, &str)]) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "flask",
        "--app",
        app,
        "run",
        "--port",
        &port.to_string(),
    ])
    .current_dir(scripts_dir())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            return (child, format!("http://{addr}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("flask app {app} did not start");
}

#[tokio::test]
async fn the_seeds_flask_receiver_verifies_our_signed_job_webhooks() {
    if !python_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen.txt");
    let seen_s = seen.to_string_lossy().to_string();
    // The receiver needs the secret before the server exists: fix it with the override.
    let secret = soundcheck::ids::webhook_secret();
    let (_flask, base) = flask(
        "tunelab_receiver",
        &[("TUNELAB_WEBHOOK_SECRET", &secret), ("SEEN_FILE", &seen_s)],
    )
    .await;
    let s = TestServer::start_with(
        Options {
            webhook_url: Some(format!("{base}/webhooks/tunelab")),
            ..Options::default()
        },
        |c| {
            c.webhook_secret = Some(secret.clone());
        },
    )
    .await;
    let sub = s
        .submit("/v1/analyze/upload", form(wav_bytes(1.0), &[]))
        .await;
    let job_id = sub["job_id"].as_str().unwrap().to_string();
    wait_until(30, || {
        std::fs::read_to_string(&seen)
            .unwrap_or_default()
            .contains(&job_id)
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap().trim(),
        format!("job.completed {job_id}")
    );

    // After a rotation the old secret no longer verifies: the receiver answers 401.
    s.tl(Method::POST, "/v1/webhook/rotate-secret")
        .send()
        .await
        .unwrap();
    let second = s
        .submit("/v1/analyze/upload", form(wav_bytes(1.0), &[]))
        .await;
    let mut status = None;
    for _ in 0..300 {
        let path = format!(
            "/v1/webhook/deliveries?of={}",
            second["job_id"].as_str().unwrap()
        );
        let log: Value = s
            .tl(Method::GET, &path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        status = log["data"][0]["response_status"].as_i64();
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, Some(401));
    let path = format!("/v1/webhook/deliveries?of={job_id}");
    let log: Value = s
        .tl(Method::GET, &path)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log["data"][0]["response_status"], 200);
    s.stop().await;
}

#[tokio::test]
async fn the_seeds_flask_receiver_accepts_our_generation_webhooks() {
    if !python_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen.txt");
    let seen_s = seen.to_string_lossy().to_string();
    let (_flask, base) = flask(
        "finetuning_receiver",
        &[
            ("FINETUNING_WEBHOOK_TOKEN", "test123"),
            ("SEEN_FILE", &seen_s),
        ],
    )
    .await;
    let s = TestServer::start(Options::default()).await;
    let mut ids = Vec::new();
    for token in ["test123", "wrong"] {
        let r = s.ft(Method::POST, "/v1/generations")
            .json(&json!({"tags": "lofi chill, piano", "duration": 2, "webhook": format!("{base}/finetuning-callback?token={token}")}))
            .send().await.unwrap();
        assert_eq!(r.status(), 202);
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    wait_until(60, || {
        std::fs::read_to_string(&seen)
            .unwrap_or_default()
            .contains(&ids[0])
    })
    .await;
    let line = std::fs::read_to_string(&seen).unwrap();
    assert!(
        line.starts_with(&format!("Generation {} ready at {}/media/", ids[0], s.base)),
        "{line}"
    );
    // The wrong token is refused by the receiver, and the attempt says so.
    let mut status = None;
    for _ in 0..300 {
        let log: Value = s
            .ft(
                Method::GET,
                &format!("/v1/generations/{}/deliveries", ids[1]),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        status = log["data"][0]["response_status"].as_i64();
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, Some(401));
    s.stop().await;
}

#[tokio::test]
async fn the_seeds_python_polling_loop_separates_a_track() {
    if !python_ready() {
        return;
    }
    let s = TestServer::start(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("track.wav"), wav_bytes(3.0)).unwrap();
    let out = Command::new("python3")
        .arg(scripts_dir().join("poll_separate.py"))
        .current_dir(dir.path())
        .env("TUNELAB_API", &s.base)
        .env("TUNELAB_KEY", &s.secrets.tl_key)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("queued: job_"), "{stdout}");
    let stems: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(
        stems,
        ["vocals", "drums", "bass", "other"],
        "the seed's order"
    );
    for line in &lines[1..] {
        let url = line.split_once(": ").unwrap().1;
        let r = s.client.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let wav = r.bytes().await.unwrap();
        let reader = hound::WavReader::new(std::io::Cursor::new(wav)).unwrap();
        assert_eq!(
            reader.duration(),
            3 * 44_100,
            "stems keep the input's length"
        );
    }
    s.stop().await;
}
