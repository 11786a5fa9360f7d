//! The jobs webhook's retry schedule under `--time-scale`, auto-disable after 5 events fail for
//! good, held events released on re-enable, manual resend, and secret rotation.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::util::{form, verify_like_flask, wav_bytes, Options, TestReceiver, TestServer};

const ANALYZE: &str = "/v1/analyze/upload";

#[tokio::test]
async fn failed_deliveries_follow_the_seeds_schedule_then_stop() {
    let rx = TestReceiver::start().await;
    rx.set_status(500);
    let scale = 0.001; // 1 min → 60 ms … 4 h → 14.4 s
    let s = TestServer::start(Options {
        webhook_url: Some(rx.url.clone()),
        time_scale: scale,
        ..Options::default()
    })
    .await;
    let sub = s.submit(ANALYZE, form(wav_bytes(1.0), &[])).await;
    let got = rx.wait_for(6, 60).await;
    let gaps: Vec<Duration> = got.windows(2).map(|w| w[1].at - w[0].at).collect();
    for (gap, expected_secs) in gaps.iter().zip([60.0, 300.0, 900.0, 3600.0, 14400.0]) {
        let expected = Duration::from_secs_f64(expected_secs * scale);
        assert!(*gap >= expected, "gap {gap:?} shorter than {expected:?}");
        assert!(
            *gap < expected + Duration::from_millis(900),
            "gap {gap:?} much longer than {expected:?}"
        );
    }
    // Every attempt carries the same event, freshly signed.
    assert!(got.iter().all(|r| r.body == got[0].body));
    assert!(got.iter().all(|r| verify_like_flask(
        &s.secrets.webhook_secret,
        r.header("x-tunelab-signature"),
        &r.body
    )));
    // No seventh attempt.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.received().len(), 6);
    let log: Value = s
        .tl(Method::GET, "/v1/webhook/deliveries")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let attempts = log["data"].as_array().unwrap();
    assert_eq!(attempts.len(), 6);
    assert!(attempts
        .iter()
        .all(|a| a["succeeded"] == false && a["response_status"] == 500));
    assert_eq!(attempts[0]["attempt"], 6);
    // Every retry has run: none is scheduled, so no attempt shows one (each showed its retry
    // while it was still to come: `e2e_listen`).
    assert!(
        attempts.iter().all(|a| a["next_attempt_at"] == Value::Null),
        "{log}"
    );
    assert_eq!(attempts[5]["subject_id"], sub["job_id"]);
    // One event failed for good: counted, not yet disabled.
    let ep: Value = s
        .tl(Method::GET, "/v1/webhook")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ep["consecutive_failures"], 1);
    assert_eq!(ep["enabled"], true);
    s.stop().await;
}

#[tokio::test]
async fn five_events_failing_for_good_disable_the_endpoint_until_re_enabled() {
    let rx = TestReceiver::start().await;
    rx.set_status(503);
    let s = TestServer::start(Options {
        webhook_url: Some(rx.url.clone()),
        time_scale: 0.0002,
        ..Options::default()
    })
    .await;
    for _ in 0..5 {
        s.submit(ANALYZE, form(wav_bytes(0.5), &[])).await;
    }
    let mut disabled = Value::Null;
    for _ in 0..300 {
        let ep: Value = s
            .tl(Method::GET, "/v1/webhook")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ep["enabled"] == false {
            disabled = ep;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(disabled["enabled"], false, "endpoint was not disabled");
    assert_eq!(disabled["consecutive_failures"], 5);
    assert!(disabled["disabled_reason"]
        .as_str()
        .unwrap()
        .contains("5 consecutive"));
    assert_eq!(rx.received().len(), 30, "5 events × 6 attempts");

    // While disabled, a new event is kept, not sent.
    let held_job = s.submit(ANALYZE, form(wav_bytes(0.5), &[])).await;
    s.wait_job(held_job["job_id"].as_str().unwrap(), 30).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.received().len(), 30);

    // Re-enable with a fixed receiver: the held event goes out.
    rx.set_status(200);
    let on: Value = s
        .tl(Method::POST, "/v1/webhook/enable")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(on["enabled"], true);
    assert_eq!(on["released_events"], 1);
    let got = rx.wait_for(31, 10).await;
    assert_eq!(got[30].json()["data"]["job_id"], held_job["job_id"]);
    s.stop().await;
}

#[tokio::test]
async fn resend_delivers_again_and_rotation_signs_with_the_new_secret() {
    let rx = TestReceiver::start().await;
    rx.set_status(500);
    let s = TestServer::start(Options {
        webhook_url: Some(rx.url.clone()),
        time_scale: 10.0,
        ..Options::default()
    })
    .await;
    s.submit(ANALYZE, form(wav_bytes(0.5), &[])).await;
    rx.wait_for(1, 30).await; // first attempt failed; the next is 10 minutes away
                              // The attempt is recorded once the receiver has answered: wait for the row.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let log = loop {
        let log: Value = s
            .tl(Method::GET, "/v1/webhook/deliveries")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if log["data"][0]["id"].is_string() || std::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let failed_id = log["data"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(log["data"][0]["succeeded"], false);

    // The retry shows while it would be sent; with the URL cleared it would be skipped, so it
    // does not; with a URL again it is back, at the same time.
    let server = &s;
    let next_retry = |body: Value| async move {
        let r = server
            .tl(Method::PUT, "/v1/webhook")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let log: Value = server
            .tl(Method::GET, "/v1/webhook/deliveries")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        log["data"][0]["next_attempt_at"].clone()
    };
    let due = next_retry(serde_json::json!({})).await;
    assert!(due.is_string(), "{due}");
    assert_eq!(
        next_retry(serde_json::json!({"url": null})).await,
        Value::Null
    );
    assert_eq!(next_retry(serde_json::json!({"url": rx.url})).await, due);

    let rotated: Value = s
        .tl(Method::POST, "/v1/webhook/rotate-secret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    rx.set_status(200);
    let r = s
        .tl(
            Method::POST,
            &format!("/v1/webhook/deliveries/{failed_id}/resend"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let attempt: Value = r.json().await.unwrap();
    assert_eq!(attempt["succeeded"], true);
    assert_eq!(attempt["manual"], true);
    assert_eq!(attempt["attempt"], 2);
    let got = rx.wait_for(2, 5).await;
    assert_eq!(got[0].body, got[1].body, "the same event is resent");
    let sig = got[1].header("x-tunelab-signature");
    assert!(verify_like_flask(&new_secret, sig, &got[1].body));
    assert!(!verify_like_flask(
        &s.secrets.webhook_secret,
        sig,
        &got[1].body
    ));
    let ep: Value = s
        .tl(Method::GET, "/v1/webhook")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ep["consecutive_failures"], 0);
    s.stop().await;
}
