//! Nothing is lost across `kill -9`: the real binary is killed with a job running and a webhook
//! delivery pending, started again on the same data dir, and both finish.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use crate::util::{form, wav_bytes, TestReceiver};

/// A `soundcheck serve` child process and what it printed at start.
struct Proc {
    child: Child,
    base: String,
    tl_key: String,
}

async fn spawn(data_dir: &std::path::Path, webhook_url: &str) -> Proc {
    let mut child = crate::util::soundcheck_async()
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--time-scale",
            "0.05",
            "--workers",
            "1",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--webhook-url", webhook_url])
        .env("SOUNDCHECK_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut base, mut tl_key) = (String::new(), String::new());
    while let Some(line) = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
    {
        if let Some(url) = line.split("listening on ").nth(1) {
            base = url.trim().to_string();
        }
        if let Some(k) = line.strip_prefix("SOUNDCHECK_TL_KEY=") {
            tl_key = k.to_string();
        }
        if line.starts_with("SOUNDCHECK_WEBHOOK_SECRET=") {
            break;
        }
    }
    assert!(!base.is_empty() && !tl_key.is_empty());
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Proc {
        child,
        base,
        tl_key,
    }
}

impl Proc {
    async fn get(&self, path: &str) -> Value {
        reqwest::Client::new()
            .request(Method::GET, format!("{}{path}", self.base))
            .bearer_auth(&self.tl_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn kill_9_loses_neither_a_running_job_nor_a_pending_delivery() {
    let rx = TestReceiver::start().await;
    rx.set_status(500);
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn(dir.path(), &rx.url).await;
    let client = reqwest::Client::new();
    let submit = |p: &Proc, fault: Option<&str>| {
        let mut r = client
            .post(format!("{}/v1/analyze/upload", p.base))
            .bearer_auth(&p.tl_key);
        if let Some(f) = fault {
            r = r.header("X-Soundcheck-Fault", f);
        }
        r.multipart(form(wav_bytes(0.5), &[])).send()
    };
    // Job A completes; its webhook fails once (receiver 500) and waits for attempt 2 (3 s away).
    let a: Value = submit(&p, None).await.unwrap().json().await.unwrap();
    rx.wait_for(1, 30).await;
    // Job B is running (held in a 5 s delay) when the server dies.
    let b: Value = submit(&p, Some("delay=5000"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b_id = b["job_id"].as_str().unwrap().to_string();
    for _ in 0..50 {
        if p.get("/v1/jobs").await["data"][0]["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(p.get("/v1/jobs").await["data"][0]["status"], "running");
    // Job C waits in the queue behind B (one worker). Its small upload lives only in its database
    // row until a worker needs it: A's and B's are on disk, C's is not.
    let c: Value = submit(&p, None).await.unwrap().json().await.unwrap();
    let c_id = c["job_id"].as_str().unwrap().to_string();
    let on_disk = crate::util::files_under(&dir.path().join("uploads"));
    assert_eq!(on_disk.len(), 2, "{on_disk:?}");
    p.child.kill().await.unwrap(); // SIGKILL

    rx.set_status(200);
    let p2 = spawn(dir.path(), &rx.url).await;
    // B runs again and completes, C runs from its stored bytes; every webhook arrives.
    let got = rx.wait_for(4, 60).await;
    let delivered: Vec<String> = got[1..]
        .iter()
        .map(|r| r.json()["data"]["job_id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        delivered.contains(&a["job_id"].as_str().unwrap().to_string()),
        "{delivered:?}"
    );
    assert!(delivered.contains(&b_id), "{delivered:?}");
    assert!(delivered.contains(&c_id), "{delivered:?}");
    let job_b = p2.get(&format!("/v1/jobs/{b_id}")).await;
    assert_eq!(job_b["status"], "completed", "{job_b}");
    let job_c = p2.get(&format!("/v1/jobs/{c_id}")).await;
    assert_eq!(job_c["status"], "completed", "{job_c}");
    assert_eq!(job_c["result"]["metadata"]["file_size"], 88_244, "{job_c}");
    let credits = p2.get("/v1/credits").await;
    assert_eq!(credits["balance"], 994, "three analyses charged once each");
}

#[tokio::test]
async fn sigterm_gives_running_work_back_and_the_next_start_finishes_it() {
    let rx = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(dir.path(), &rx.url).await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/analyze/upload", p.base))
        .bearer_auth(&p.tl_key)
        .header("X-Soundcheck-Fault", "delay=3000")
        .multipart(form(wav_bytes(0.5), &[]))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..50 {
        if p.get("/v1/jobs").await["data"][0]["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut child = p.child;
    crate::util::terminate(&mut child, 20).await;
    assert!(rx.received().is_empty());

    let p2 = spawn(dir.path(), &rx.url).await;
    let got = rx.wait_for(1, 30).await;
    assert_eq!(got[0].json()["data"]["job_id"], id.as_str());
    assert_eq!(p2.get("/v1/credits").await["balance"], 998);
}

#[tokio::test]
async fn keys_and_credits_commands_read_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        crate::util::soundcheck()
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("SOUNDCHECK_FT_KEY")
            .env_remove("SOUNDCHECK_TL_KEY")
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| {
        let out = run(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // Before any server ran there: an error, and nothing created.
    let out = run(&["keys"]);
    assert!(!out.status.success());
    assert!(!dir.path().join("soundcheck.sqlite").exists());
    // A server creates the database; killed, it leaves it (and no lock) behind.
    let mut p = spawn(dir.path(), "http://127.0.0.1:9/hook").await;
    p.child.kill().await.unwrap();
    let keys = ok(&["keys"]);
    let lines: Vec<&str> = keys.lines().collect();
    assert_eq!(lines.len(), 3, "{keys}");
    assert!(soundcheck::ids::is_api_key(
        lines[0].strip_prefix("SOUNDCHECK_FT_KEY=").unwrap(),
        "ft_test_"
    ));
    assert!(soundcheck::ids::is_api_key(
        lines[1].strip_prefix("SOUNDCHECK_TL_KEY=").unwrap(),
        "tl_test_"
    ));
    assert_eq!(
        lines[1].strip_prefix("SOUNDCHECK_TL_KEY=").unwrap(),
        p.tl_key
    );
    assert!(lines[2].starts_with("SOUNDCHECK_WEBHOOK_SECRET=whsec_"));
    assert_eq!(ok(&["keys"]), keys, "generated once, then kept");
    assert_eq!(ok(&["credits", "show"]).trim(), "1000");
    assert_eq!(ok(&["credits", "add", "25"]).trim(), "1025");
}

/// A server whose stdout and stderr readers have gone (`serve 2>&1 | head -1`, a log shipper
/// that died) goes on working: it answers, runs jobs, sends their webhooks and stops on SIGTERM.
/// Rust's `println!` and tracing-subscriber's own error report panic on a closed pipe: the banner
/// killed the server, and a worker task that logged mid-job wedged its job.
#[tokio::test]
async fn a_server_whose_output_pipes_are_closed_keeps_working_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let rx = TestReceiver::start().await;
    let mut child = crate::util::soundcheck_async()
        .args(["serve", "--addr", "127.0.0.1:0", "--workers", "1"])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--webhook-url", &rx.url])
        .env("SOUNDCHECK_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Read the first line (it says where the server listens), then close both pipes.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    drop(lines);
    drop(child.stderr.take());
    let base = first
        .split("listening on ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    let keys = crate::util::soundcheck()
        .args(["keys", "--json", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let keys: Value = serde_json::from_slice(&keys.stdout).unwrap();
    let key = keys["tl_key"].as_str().unwrap().to_string();
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let sub: Value = client
            .post(format!("{base}/v1/analyze/upload"))
            .bearer_auth(&key)
            .multipart(form(wav_bytes(0.5), &[]))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(sub["job_id"].is_string(), "{sub}");
    }
    let got = rx.wait_for(3, 60).await;
    assert!(got.iter().all(|r| r.json()["type"] == "job.completed"));
    crate::util::terminate(&mut child, 30).await;
}
