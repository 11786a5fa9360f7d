//! Cancel and follow: `DELETE /v1/jobs/{id}` and `/v1/generations/{id}` end an item `failed`
//! with `cancelled` exactly once (refund, one webhook), a final item answers `409`; the `/events`
//! streams report status, progress and the final object, past the idle timeout; the CLI's
//! `jobs cancel`, `jobs wait` and `jobs tail ID` drive the same routes.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::util::{assert_error, form, wav_bytes, Options, TestReceiver, TestServer};

/// Submits an analysis job with a fault header; returns its id.
async fn submit(s: &TestServer, fault: &str) -> String {
    let r = s
        .tl(Method::POST, "/v1/analyze/upload")
        .header("X-Soundcheck-Fault", fault)
        .multipart(form(wav_bytes(0.5), &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The job as the (unlimited) list shows it.
async fn listed(s: &TestServer, id: &str) -> Value {
    let list: Value = s
        .tl(Method::GET, "/v1/jobs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job_id"] == id)
        .cloned()
        .unwrap()
}

async fn wait_status(s: &TestServer, id: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while listed(s, id).await["status"] != status {
        assert!(Instant::now() < deadline, "{id} never {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads a whole event stream (it ends when the item is final); returns (event, data) pairs.
async fn events(req: reqwest::RequestBuilder) -> Vec<(String, Value)> {
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = tokio::time::timeout(Duration::from_secs(60), resp.text())
        .await
        .expect("the stream ends when the item is final")
        .unwrap();
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut event = String::new();
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if !data.is_empty() {
            out.push((event, serde_json::from_str(&data).unwrap()));
        }
    }
    out
}

#[tokio::test]
async fn cancelling_a_running_job_fails_it_once_refunds_and_sends_job_failed() {
    let rx = TestReceiver::start().await;
    let s = TestServer::start_with(
        Options {
            webhook_url: Some(rx.url.clone()),
            ..Options::default()
        },
        |c| c.workers = 1,
    )
    .await;
    // A: running (waiting out its injected delay); B: queued behind it.
    let a = submit(&s, "delay=30000").await;
    wait_status(&s, &a, "running").await;
    let b = submit(&s, "delay=30000").await;
    assert_eq!(listed(&s, &b).await["status"], "queued");
    assert_eq!(s.balance().await, 1000 - 4);

    // The queued one: failed at once, refunded, never claimed afterwards.
    let r = s
        .tl(Method::DELETE, &format!("/v1/jobs/{b}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "failed");
    assert_eq!(body["error"]["code"], "cancelled");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("DELETE /v1/jobs/{b})")),
        "{message}"
    );
    assert_eq!(body["credits_used"], 0);
    // The running one: its run stops between steps, so the one worker is free at once.
    let started = Instant::now();
    let r = s
        .tl(Method::DELETE, &format!("/v1/jobs/{a}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "cancelled"
    );
    let c = submit(&s, "delay=10").await;
    let done = s.wait_job(&c, 20).await;
    assert_eq!(done["status"], "completed");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the delay was not interrupted"
    );
    assert_eq!(s.balance().await, 1000 - 2, "both cancels refunded");

    // A final job answers 409 conflict; an unknown one 404.
    let r = s
        .tl(Method::DELETE, &format!("/v1/jobs/{a}"))
        .send()
        .await
        .unwrap();
    assert_error(r, 409, "conflict").await;
    let r = s
        .tl(Method::DELETE, &format!("/v1/jobs/{c}"))
        .send()
        .await
        .unwrap();
    assert_error(r, 409, "conflict").await;
    let r = s
        .tl(Method::DELETE, "/v1/jobs/job_nope")
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "not_found").await;

    // Exactly one end each: one job.failed webhook per cancelled job, B never started.
    let got = rx.wait_for(3, 20).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_now = rx.received();
    assert_eq!(got_now.len(), got.len());
    for id in [&a, &b] {
        let events: Vec<Value> = got_now
            .iter()
            .map(|r| r.json())
            .filter(|e| e["data"]["job_id"] == id.as_str())
            .collect();
        assert_eq!(events.len(), 1, "{id}: {events:#?}");
        assert_eq!(events[0]["type"], "job.failed");
        assert_eq!(events[0]["data"]["error"]["code"], "cancelled");
    }
    let b_now = listed(&s, &b).await;
    assert_eq!(b_now["status"], "failed");
    assert!(b_now["started_at"].is_null(), "{b_now}");
    let credits: Value = s
        .tl(Method::GET, "/v1/credits")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = credits["movements"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["job_id"] == a.as_str())
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert!(
        kinds.contains(&"refund") && kinds.contains(&"reserve"),
        "{kinds:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn cancelling_a_generation_fails_it_and_fires_its_webhook() {
    let rx = TestReceiver::start().await;
    let s = TestServer::start(Options::default()).await;
    let r = s
        .ft(Method::POST, "/v1/generations")
        .header("X-Soundcheck-Fault", "delay=30000")
        .json(&json!({"tags": "lofi piano", "duration": 2, "webhook": format!("{}/gen", rx.url)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s
        .ft(Method::DELETE, &format!("/v1/generations/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let g: Value = r.json().await.unwrap();
    assert_eq!(g["status"], "failed");
    assert_eq!(g["errorMessage"], "cancelled");
    let got = rx.wait_for(1, 20).await;
    assert_eq!(got[0].json()["id"], id.as_str());
    assert_eq!(got[0].json()["status"], "failed");
    assert_eq!(got[0].json()["errorMessage"], "cancelled");
    let r = s
        .ft(Method::DELETE, &format!("/v1/generations/{id}"))
        .send()
        .await
        .unwrap();
    assert_error(r, 409, "conflict").await;
    // The jobs key is not the generations key.
    let r = s
        .tl(Method::DELETE, &format!("/v1/generations/{id}"))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.received().len(), 1, "fire-once");
    s.stop().await;
}

#[tokio::test]
async fn event_streams_report_status_progress_and_the_final_object_past_the_idle_timeout() {
    // A 2-second idle timeout, and items that run longer: keep-alive comments hold the stream.
    let s = TestServer::start_with(Options::default(), |c| {
        c.idle_timeout = Duration::from_secs(2)
    })
    .await;
    let id = submit(&s, "delay=3500").await;
    // A poll just before does not rate-limit the stream (nor does the stream the next poll).
    assert_eq!(
        s.tl(Method::GET, &format!("/v1/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let got = events(s.tl(Method::GET, &format!("/v1/jobs/{id}/events"))).await;
    let names: Vec<&str> = got.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names.first(), Some(&"status"), "{names:?}");
    assert_eq!(names.last(), Some(&"done"), "{names:?}");
    assert!(
        got.iter()
            .any(|(e, d)| e == "status" && d["status"] == "running"),
        "{got:#?}"
    );
    let (_, last) = got.last().unwrap();
    assert_eq!(last["status"], "completed");
    assert_eq!(last["job_id"], id.as_str());
    assert!(last["result"].is_object());
    for (e, d) in &got {
        if e == "progress" {
            assert_eq!(d["id"], id.as_str());
            assert!((0.0..=1.0).contains(&d["progress"].as_f64().unwrap()));
        }
    }
    // A final job: one `done` and the stream ends.
    let again = events(s.tl(Method::GET, &format!("/v1/jobs/{id}/events"))).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, "done");

    // A generation, followed the same way.
    let r = s
        .ft(Method::POST, "/v1/generations")
        .header("X-Soundcheck-Fault", "delay=2500")
        .json(&json!({"tags": "ambient", "duration": 1}))
        .send()
        .await
        .unwrap();
    let gid = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let got = events(s.ft(Method::GET, &format!("/v1/generations/{gid}/events"))).await;
    assert_eq!(got.first().unwrap().0, "status");
    let (name, last) = got.last().unwrap();
    assert_eq!(name, "done");
    assert_eq!(last["status"], "completed");
    assert!(last["audioUrl"].is_string());

    // Unknown ids: the envelope, not a stream.
    let r = s
        .tl(Method::GET, "/v1/jobs/job_nope/events")
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "not_found").await;
    let r = s
        .ft(Method::GET, "/v1/generations/gen_nope/events")
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "not_found").await;
    s.stop().await;
}

/// The CLI: `jobs tail ID` follows one job to its end, `jobs wait` exits 0 on completed and
/// non-zero on failed, `jobs cancel` cancels.
#[tokio::test]
async fn jobs_wait_cancel_and_tail_drive_the_same_routes() {
    let s = TestServer::start(Options::default()).await;
    let key = s.secrets.tl_key.clone();
    let sc = |args: Vec<String>| {
        let base = s.base.clone();
        let key = key.clone();
        async move {
            let out = crate::util::soundcheck_async()
                .args(&args)
                .args(["--url", &base, "--api-key", &key, "--ft-key", "x"])
                .env("SOUNDCHECK_LOG", "warn")
                .output()
                .await
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let ok = submit(&s, "delay=1500").await;
    let (ran, out, err) = sc(vec!["jobs".into(), "tail".into(), ok.clone()]).await;
    assert!(ran, "{err}");
    assert!(
        out.lines()
            .any(|l| l.contains(&ok) && l.contains("running")),
        "{out}"
    );
    let last = out.lines().last().unwrap();
    assert!(last.contains("completed") && last.contains("100%"), "{out}");
    let (ran, out, err) = sc(vec!["jobs".into(), "wait".into(), ok.clone()]).await;
    assert!(ran, "{err}");
    assert!(out.contains("completed"), "{out}");

    let bad = submit(&s, "internal_error").await;
    let (ran, _, err) = sc(vec!["jobs".into(), "wait".into(), bad.clone()]).await;
    assert!(!ran);
    assert!(
        err.contains("failed") && err.contains("internal_error"),
        "{err}"
    );

    let slow = submit(&s, "delay=30000").await;
    let waiter = tokio::spawn(sc(vec![
        "jobs".into(),
        "wait".into(),
        slow.clone(),
        "--json".into(),
    ]));
    wait_status(&s, &slow, "running").await;
    let (ran, out, err) = sc(vec!["jobs".into(), "cancel".into(), slow.clone()]).await;
    assert!(ran, "{err}");
    assert!(out.contains("failed") && out.contains("cancelled"), "{out}");
    let (ran, out, err) = waiter.await.unwrap();
    assert!(!ran, "{out}");
    assert!(err.contains("cancelled"), "{err}");
    let final_job: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(final_job["error"]["code"], "cancelled");
    let (ran, _, err) = sc(vec!["jobs".into(), "cancel".into(), slow.clone()]).await;
    assert!(!ran);
    assert!(err.contains("409 conflict"), "{err}");
    s.stop().await;
}
