//! One log line per request (method, path, status, latency_ms, trace_id), as JSON with
//! `--log-format json`: the real binary is started and its stderr read.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Starts `soundcheck serve` with `log_format`; returns the child, its base URL, the jobs key and
/// a channel of its stderr lines.
async fn spawn(
    dir: &std::path::Path,
    log_format: &str,
) -> (
    tokio::process::Child,
    String,
    String,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let mut child = crate::util::soundcheck_async()
        .args(["serve", "--addr", "127.0.0.1:0", "--workers", "1"])
        .args(["--log-format", log_format])
        .arg("--data-dir")
        .arg(dir)
        .env("SOUNDCHECK_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut base, mut key) = (String::new(), String::new());
    while let Some(line) = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
    {
        if let Some(url) = line.split("listening on ").nth(1) {
            base = url.trim().to_string();
        }
        if let Some(k) = line.strip_prefix("SOUNDCHECK_TL_KEY=") {
            key = k.to_string();
        }
        if line.starts_with("SOUNDCHECK_WEBHOOK_SECRET=") {
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = err.next_line().await {
            let _ = tx.send(line);
        }
    });
    (child, base, key, rx)
}

/// Reads stderr lines until one contains `needle` (panics after 10 s); returns all lines read.
async fn lines_until(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    needle: &str,
) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no log line with {needle:?} in {seen:#?}"))
            .expect("stderr open");
        let done = line.contains(needle);
        seen.push(line);
        if done {
            return seen;
        }
    }
}

#[tokio::test]
async fn json_logs_have_one_parseable_line_per_request_with_its_trace_id() {
    let dir = tempfile::tempdir().unwrap();
    let (_child, base, key, mut rx) = spawn(dir.path(), "json").await;
    let resp = reqwest::Client::new()
        .get(format!("{base}/v1/jobs/job_missing"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let trace_id = resp.headers()["x-trace-id"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["trace_id"], trace_id.as_str());

    let lines = lines_until(&mut rx, &trace_id).await;
    for l in &lines {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
    }
    let line: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(line["message"], "request", "{line}");
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["path"], "/v1/jobs/job_missing", "{line}");
    assert_eq!(line["status"], 404, "{line}");
    assert_eq!(line["trace_id"], trace_id.as_str(), "{line}");
    assert!(
        line["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{line}"
    );
    assert_eq!(line["level"], "INFO", "{line}");
}

#[tokio::test]
async fn text_logs_name_the_same_fields() {
    let dir = tempfile::tempdir().unwrap();
    let (_child, base, key, mut rx) = spawn(dir.path(), "text").await;
    let resp = reqwest::Client::new()
        .get(format!("{base}/v1/credits"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let trace_id = resp.headers()["x-trace-id"].to_str().unwrap().to_string();
    let lines = lines_until(&mut rx, &trace_id).await;
    let line = lines.last().unwrap();
    for field in [
        "method=GET",
        "path=/v1/credits",
        "status=200",
        "latency_ms=",
    ] {
        assert!(line.contains(field), "{field} missing from {line}");
    }
    assert!(
        serde_json::from_str::<Value>(line).is_err(),
        "text, not JSON"
    );
}

/// The dashboard's polls (marked with `X-Soundcheck-Dashboard`) are logged at debug level, so
/// at the default `info` they do not bury the app's own requests, which still get their line.
#[tokio::test]
async fn dashboard_polls_are_logged_at_debug_level() {
    let dir = tempfile::tempdir().unwrap();
    let (_child, base, key, mut rx) = spawn(dir.path(), "json").await;
    let client = reqwest::Client::new();
    let poll = client
        .get(format!("{base}/v1/jobs"))
        .bearer_auth(&key)
        .header("X-Soundcheck-Dashboard", "poll")
        .send()
        .await
        .unwrap();
    assert_eq!(poll.status(), 200);
    let poll_trace = poll.headers()["x-trace-id"].to_str().unwrap().to_string();
    let app = client
        .get(format!("{base}/v1/jobs"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let app_trace = app.headers()["x-trace-id"].to_str().unwrap().to_string();
    let lines = lines_until(&mut rx, &app_trace).await;
    assert!(
        lines.iter().all(|l| !l.contains(&poll_trace)),
        "the poll was logged at info: {lines:#?}"
    );
    let line: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(line["path"], "/v1/jobs", "{line}");
    assert_eq!(line["level"], "INFO", "{line}");
}
