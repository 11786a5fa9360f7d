//! The generations API end to end: the 202 body, every chosen default reported, the MP3 served at
//! `audioUrl`, and the fire-once webhook exactly as seed 000 shows it.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::util::{Options, TestReceiver, TestServer};

#[tokio::test]
async fn a_generation_completes_with_an_mp3_and_fires_its_webhook_once() {
    let rx = TestReceiver::start().await;
    let s = TestServer::start(Options::default()).await;
    let hook = format!("{}/finetuning-callback?token=test123", rx.url);
    let r = s.ft(Method::POST, "/v1/generations")
        .json(&json!({"tags": "lofi chill, piano, vinyl crackle", "duration": 5, "bpm": 80, "webhook": hook, "mood": "x"}))
        .send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["x-soundcheck-ignored-fields"], "mood");
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("gen_"));
    assert_eq!(created["status"], "queued");
    assert_eq!(created["audioUrl"], Value::Null);
    assert_eq!(created["duration"], Value::Null);
    assert_eq!(created["completedAt"], Value::Null);
    assert!(created.get("errorMessage").is_none());
    assert_eq!(created["prompt"], "lofi chill, piano, vinyl crackle");
    let p = &created["parameters"];
    assert_eq!(
        (
            p["bpm"].as_u64(),
            p["duration"].as_u64(),
            p["timesignature"].as_u64()
        ),
        (Some(80), Some(5), Some(4))
    );
    assert!(
        p["keyscale"].as_str().unwrap().ends_with("major")
            || p["keyscale"].as_str().unwrap().ends_with("minor")
    );
    assert!(p["seed"].as_u64().unwrap() <= u32::MAX as u64);
    let keys: Vec<&String> = p.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 5);

    let done = s.wait_generation(&id, 60).await;
    assert_eq!(done["status"], "completed", "{done}");
    let secs = done["duration"].as_f64().unwrap();
    assert!((secs - 5.0).abs() < 0.5, "{secs}");
    assert!(done["completedAt"].as_str().unwrap().ends_with('Z'));
    assert!(done["createdAt"].as_str().unwrap().len() == "2026-05-15T08:24:11.000Z".len());
    let audio = s
        .client
        .get(done["audioUrl"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(audio.status(), 200);
    assert_eq!(audio.headers()["content-type"], "audio/mpeg");
    let bytes = audio.bytes().await.unwrap();
    assert!(bytes.len() > 10_000);
    assert!(
        bytes.starts_with(b"ID3") || (bytes[0] == 0xFF && bytes[1] & 0xE0 == 0xE0),
        "MP3 frame sync"
    );
    // Range requests work on media URLs.
    let part = s
        .client
        .get(done["audioUrl"].as_str().unwrap())
        .header("Range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap().len(), 100);

    let got = rx.wait_for(1, 10).await;
    let req = &got[0];
    assert_eq!(req.path_and_query, "/finetuning-callback?token=test123");
    assert_eq!(req.header("user-agent"), "finetuning-webhook/1.0");
    assert_eq!(req.header("content-type"), "application/json");
    assert_eq!(req.json(), done, "the webhook payload is the GET body");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.received().len(), 1);
    let log: Value = s
        .ft(Method::GET, &format!("/v1/generations/{id}/deliveries"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log["data"][0]["response_status"], 200);
    s.stop().await;
}

/// A generation long enough to be encoded in parallel pieces (src/audio/mp3.rs: 12 s is three)
/// decodes to exactly the requested length, mastered loudness intact, and the same request gives
/// the same bytes.
#[tokio::test]
async fn a_long_generation_decodes_to_the_exact_length_and_repeats_byte_for_byte() {
    let s = TestServer::start(Options::default()).await;
    let body = json!({"tags": "house, synth, bass", "duration": 12, "bpm": 124,
                      "keyscale": "F minor", "seed": 4242});
    let mut files = Vec::new();
    for _ in 0..2 {
        let created: Value = s
            .ft(Method::POST, "/v1/generations")
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let done = s.wait_generation(created["id"].as_str().unwrap(), 60).await;
        assert_eq!(done["status"], "completed", "{done}");
        let url = done["audioUrl"].as_str().unwrap();
        files.push(
            s.client
                .get(url)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        );
    }
    assert_eq!(files[0], files[1], "same request and seed, same MP3 bytes");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.mp3");
    std::fs::write(&path, &files[0]).unwrap();
    let audio = soundcheck::audio::decode(&path).unwrap();
    assert_eq!((audio.sample_rate, audio.channels.len()), (44_100, 2));
    assert_eq!(
        audio.frames(),
        12 * 44_100,
        "gapless length of the joined stream"
    );
    let lufs = soundcheck::audio::measure(&audio, soundcheck::audio::Measure::Integrated)
        .unwrap()
        .integrated_lufs;
    assert!(
        (lufs + 14.0).abs() < 1.0,
        "mastered to about -14 LUFS, got {lufs:.2}"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_failed_generation_reports_errormessage_and_is_never_retried() {
    let rx = TestReceiver::start().await;
    rx.set_status(500);
    let s = TestServer::start_with(Options::default(), |c| {
        c.generation_timeout = Duration::from_secs(2);
    })
    .await;
    for (fault, needle) in [
        ("internal_error", "internal_error"),
        ("timeout", "job timed out after 2s"),
    ] {
        let r = s
            .ft(Method::POST, "/v1/generations")
            .header("X-Soundcheck-Fault", fault)
            .json(&json!({"tags": "techno", "duration": 3, "webhook": rx.url}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let id = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let done = s.wait_generation(&id, 60).await;
        assert_eq!(done["status"], "failed");
        assert_eq!(done["audioUrl"], Value::Null);
        assert_eq!(done["duration"], Value::Null);
        assert!(done["completedAt"].is_string());
        assert!(
            done["errorMessage"].as_str().unwrap().contains(needle),
            "{done}"
        );
    }
    let got = rx.wait_for(2, 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.received().len(), 2, "fire-once: a 500 is not retried");
    assert_eq!(got[0].json()["status"], "failed");
    s.stop().await;
}

#[tokio::test]
async fn the_same_seed_renders_the_same_bytes() {
    let s = TestServer::start(Options::default()).await;
    let mut audio = Vec::new();
    for _ in 0..2 {
        let r = s.ft(Method::POST, "/v1/generations")
            .json(&json!({"tags": "house, synth", "duration": 3, "seed": 1234, "keyscale": "F# minor"}))
            .send().await.unwrap();
        let id = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let done = s.wait_generation(&id, 60).await;
        assert_eq!(done["parameters"]["keyscale"], "F# minor");
        audio.push(
            s.client
                .get(done["audioUrl"].as_str().unwrap())
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        );
    }
    assert_eq!(audio[0], audio[1]);
    s.stop().await;
}
