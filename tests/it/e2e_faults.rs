//! Fault injection through the real failure paths: `serve --fail-rate`, `serve --latency`, and the
//! per-request webhook faults `webhook_fail` / `webhook_slow=ms`.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::util::{assert_error, form, wav_bytes, Options, TestReceiver, TestServer};

const ANALYZE: &str = "/v1/analyze/upload";

async fn get(s: &TestServer, path: &str) -> Value {
    s.tl(Method::GET, path)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn fail_rate_one_fails_jobs_and_generations_through_the_real_failure_path() {
    let rx = TestReceiver::start().await;
    let s = TestServer::start_with(
        Options {
            webhook_url: Some(rx.url.clone()),
            ..Options::default()
        },
        |c| c.fail_rate = 1.0,
    )
    .await;
    let before = s.balance().await;
    let sub = s.submit(ANALYZE, form(wav_bytes(1.0), &[])).await;
    assert_eq!(sub["_meta"]["credits_reserved"], 2);
    let job = s.wait_job(sub["job_id"].as_str().unwrap(), 30).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "internal_error", "{job}");
    assert_eq!(job["credits_used"], 0);
    assert_eq!(s.balance().await, before, "the reservation is refunded");

    let gen: Value = s
        .ft(Method::POST, "/v1/generations")
        .json(&json!({"tags": "lofi", "duration": 2, "webhook": format!("{}/gen", rx.url)}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let gen = s.wait_generation(gen["id"].as_str().unwrap(), 30).await;
    assert_eq!(gen["status"], "failed", "{gen}");
    assert!(gen["errorMessage"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(gen["audioUrl"], Value::Null);

    // Both webhooks went out with the failure.
    let got = rx.wait_for(2, 30).await;
    let job_event = got
        .iter()
        .find(|r| r.path_and_query == "/")
        .expect("job webhook")
        .json();
    assert_eq!(job_event["type"], "job.failed");
    assert_eq!(job_event["data"]["error"]["code"], "internal_error");
    let gen_hook = got
        .iter()
        .find(|r| r.path_and_query == "/gen")
        .expect("generation webhook")
        .json();
    assert_eq!(gen_hook["status"], "failed");
    assert_eq!(gen_hook["errorMessage"], gen["errorMessage"]);
    s.stop().await;
}

#[tokio::test]
async fn fail_rate_out_of_range_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::util::soundcheck()
        .args(["serve", "--addr", "127.0.0.1:0", "--fail-rate", "1.5"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--fail-rate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn latency_delays_every_api_response_but_not_the_rest() {
    let s = TestServer::start_with(Options::default(), |c| {
        c.latency = Duration::from_millis(400)
    })
    .await;
    let t = Instant::now();
    let r = s.tl(Method::GET, "/v1/credits").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    // Errors are delayed too: the client sees the same latency on every API answer.
    let t = Instant::now();
    let r = s.tl(Method::GET, "/v1/jobs/job_nope").send().await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(400));
    assert_error(r, 404, "not_found").await;
    // Outside the API (media, unknown paths) nothing waits.
    let t = Instant::now();
    let r = s.client.get(s.url("/nothing-here")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    s.stop().await;
}

#[tokio::test]
async fn webhook_fail_runs_the_whole_schedule_and_auto_disables_the_endpoint() {
    let rx = TestReceiver::start().await;
    let s = TestServer::start(Options {
        webhook_url: Some(rx.url.clone()),
        time_scale: 0.0002, // the six attempts of one event take about 4 s
        ..Options::default()
    })
    .await;
    let mut jobs = Vec::new();
    for _ in 0..5 {
        let r = s
            .tl(Method::POST, ANALYZE)
            .header("X-Soundcheck-Fault", "webhook_fail")
            .multipart(form(wav_bytes(0.5), &[]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let body: Value = r.json().await.unwrap();
        jobs.push(body["job_id"].as_str().unwrap().to_string());
    }
    // The jobs themselves complete: only their deliveries fail.
    for id in &jobs {
        assert_eq!(s.wait_job(id, 30).await["status"], "completed");
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    let endpoint = loop {
        let ep = get(&s, "/v1/webhook").await;
        if ep["enabled"] == false {
            break ep;
        }
        assert!(Instant::now() < deadline, "endpoint never disabled: {ep}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(endpoint["consecutive_failures"], 5);
    assert!(endpoint["disabled_reason"]
        .as_str()
        .unwrap()
        .contains("5 consecutive"));
    for id in &jobs {
        let log = get(&s, &format!("/v1/webhook/deliveries?of={id}")).await;
        let attempts = log["data"].as_array().unwrap();
        assert_eq!(attempts.len(), 6, "the whole schedule ran for {id}");
        assert!(attempts.iter().all(|a| a["succeeded"] == false
            && a["response_status"] == Value::Null
            && a["error"].as_str().unwrap().contains("webhook_fail")));
    }
    assert!(rx.received().is_empty(), "nothing reached the receiver");

    // A resend is sent for real, fault or not, and reaches the receiver.
    let log = get(&s, &format!("/v1/webhook/deliveries?of={}", jobs[0])).await;
    let del = log["data"][0]["id"].as_str().unwrap().to_string();
    let resent: Value = s
        .tl(
            Method::POST,
            &format!("/v1/webhook/deliveries/{del}/resend"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resent["succeeded"], true, "{resent}");
    assert_eq!(resent["manual"], true);
    let got = rx.wait_for(1, 10).await;
    assert_eq!(got[0].json()["data"]["job_id"], jobs[0].as_str());
    s.stop().await;
}

#[tokio::test]
async fn webhook_slow_delays_deliveries_and_past_the_timeout_fails_them() {
    let rx = TestReceiver::start().await;
    let s = TestServer::start(Options {
        webhook_url: Some(rx.url.clone()),
        ..Options::default()
    })
    .await;
    // A slow job delivery still succeeds, and its recorded duration includes the wait.
    let r = s
        .tl(Method::POST, ANALYZE)
        .header("X-Soundcheck-Fault", "webhook_slow=500")
        .multipart(form(wav_bytes(0.5), &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let job: Value = r.json().await.unwrap();
    let job_id = job["job_id"].as_str().unwrap().to_string();
    rx.wait_for(1, 30).await;
    // The attempt is recorded once the receiver's answer is in, a moment after it got the
    // request: wait for the row.
    let mut log = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        log = get(&s, &format!("/v1/webhook/deliveries?of={job_id}")).await;
        if !log["data"][0].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = &log["data"][0];
    assert_eq!(a["succeeded"], true, "{a}");
    assert!(a["duration_ms"].as_i64().unwrap() >= 500, "{a}");

    // A failing generation whose fire-once webhook is slower than the 2 s webhook timeout:
    // both faults at once, and the receiver never hears of it.
    let gen: Value = s
        .ft(Method::POST, "/v1/generations")
        .header("X-Soundcheck-Fault", "internal_error,webhook_slow=5000")
        .json(&json!({"tags": "house", "duration": 2, "webhook": format!("{}/gen", rx.url)}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = gen["id"].as_str().unwrap().to_string();
    assert_eq!(s.wait_generation(&id, 30).await["status"], "failed");
    let mut attempts = Value::Null;
    let path = format!("/v1/generations/{id}/deliveries");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        attempts = s
            .ft(Method::GET, &path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if attempts["data"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let a = &attempts["data"][0];
    assert_eq!(a["succeeded"], false, "{attempts}");
    assert!(a["error"].as_str().unwrap().contains("timed out"), "{a}");
    assert!(a["duration_ms"].as_i64().unwrap() >= 2000, "{a}");
    assert_eq!(rx.received().len(), 1, "only the job's webhook arrived");

    // Conflicting or unknown faults are refused with the envelope.
    for bad in [
        "timeout,internal_error",
        "webhook_fail,webhook_slow=5",
        "webhook_slow=x",
    ] {
        let r = s
            .ft(Method::POST, "/v1/generations")
            .header("X-Soundcheck-Fault", bad)
            .json(&json!({"tags": "house"}))
            .send()
            .await
            .unwrap();
        assert_error(r, 400, "invalid_request").await;
    }
    s.stop().await;
}
