//! The synchronous analysis endpoints (`/v1/analyze`, `/v1/features`, `/v1/metadata`): answers
//! on FluidSynth-rendered fixtures and on a generation's own URL, and bad input refused with
//! nothing left behind.

use std::path::Path;

use reqwest::Method;
use serde_json::{json, Value};

use crate::util::{assert_error, form, wav_bytes, Options, TestServer};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/audio")
            .join(name),
    )
    .unwrap()
}

fn upload(bytes: Vec<u8>, filename: &str) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new().part(
        "audio",
        reqwest::multipart::Part::bytes(bytes).file_name(filename.to_string()),
    )
}

async fn ok_json(resp: reqwest::Response) -> Value {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body["_meta"]["trace_id"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    body
}

fn tempo_ok(est: f64, truth: f64) -> bool {
    [1.0, 2.0, 0.5]
        .iter()
        .any(|m| (est - truth * m).abs() <= truth * m * 0.02)
}

/// Nothing a sync call did may stay: no upload file, no job, no credit movement.
async fn assert_nothing_left(s: &TestServer, balance_before: i64) {
    let uploads = s.data_dir.path().join("uploads");
    let left = crate::util::files_under(&uploads);
    assert!(left.is_empty(), "uploads left behind: {left:?}");
    let jobs: Value = s
        .tl(Method::GET, "/v1/jobs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jobs["data"].as_array().unwrap().len(), 0, "{jobs}");
    assert_eq!(s.balance().await, balance_before);
}

#[tokio::test]
async fn tempo_key_features_and_metadata_of_an_upload() {
    let s = TestServer::start(Options::default()).await;
    let before = s.balance().await;
    let mp3 = fixture("pop_120bpm_C_major.mp3");

    let r = s
        .tl(Method::POST, "/v1/analyze")
        .multipart(upload(mp3.clone(), "pop.mp3"))
        .send()
        .await
        .unwrap();
    let a = ok_json(r).await;
    let bpm = a["bpm"].as_f64().unwrap();
    assert!(tempo_ok(bpm, 120.0), "bpm {bpm}");
    assert_eq!(a["key"], "C major", "{a}");
    assert!(a["duration_secs"].as_f64().unwrap() > 5.0, "{a}");

    let r = s
        .tl(Method::POST, "/v1/features")
        .multipart(form(wav_bytes(2.0), &[]))
        .send()
        .await
        .unwrap();
    let f = ok_json(r).await;
    assert_eq!(f["sample_rate"], 44_100);
    assert_eq!(f["channels"], 2);
    assert!(
        (f["duration_secs"].as_f64().unwrap() - 2.0).abs() < 1e-3,
        "{f}"
    );
    assert!(f["rms_dbfs"].as_f64().unwrap() < 0.0, "{f}");

    let r = s
        .tl(Method::POST, "/v1/metadata")
        .multipart(upload(mp3, "pop.mp3"))
        .send()
        .await
        .unwrap();
    let m = ok_json(r).await;
    assert_eq!(m["container"], "mp3", "{m}");
    assert_eq!(m["codec"], "mp3", "{m}");
    assert!(m["bit_rate_kbps"].as_f64().unwrap() > 32.0, "{m}");

    assert_nothing_left(&s, before).await;
    s.stop().await;
}

#[tokio::test]
async fn a_generation_can_be_analysed_by_its_own_url() {
    let s = TestServer::start(Options::default()).await;
    let r = s.ft(Method::POST, "/v1/generations")
        .json(&json!({"tags": "house, piano", "duration": 20, "bpm": 124, "keyscale": "G minor", "seed": 7}))
        .send().await.unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = s.wait_generation(&id, 60).await;
    let url = done["audioUrl"].as_str().unwrap();

    let r = s
        .tl(Method::POST, "/v1/analyze")
        .json(&json!({ "url": url }))
        .send()
        .await
        .unwrap();
    let a = ok_json(r).await;
    let bpm = a["bpm"].as_f64().unwrap();
    assert!(tempo_ok(bpm, 124.0), "bpm {bpm}");
    assert_eq!(a["key"], "G minor", "{a}");

    let r = s
        .tl(Method::POST, "/v1/metadata")
        .json(&json!({ "url": url }))
        .send()
        .await
        .unwrap();
    let m = ok_json(r).await;
    assert_eq!(m["container"], "mp3");
    // The served file is untouched by being analysed.
    assert_eq!(s.client.get(url).send().await.unwrap().status(), 200);
    s.stop().await;
}

#[tokio::test]
async fn bad_requests_get_the_envelope_and_leave_nothing() {
    let s = TestServer::start(Options {
        max_upload_mb: 1,
        ..Options::default()
    })
    .await;
    let before = s.balance().await;
    let post = |p: &str| s.tl(Method::POST, p);

    // No key.
    let r = s
        .client
        .post(s.url("/v1/analyze"))
        .multipart(form(wav_bytes(0.5), &[]))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized").await;
    // Corrupt and non-audio uploads.
    let mut corrupt = fixture("pop_120bpm_C_major.mp3");
    corrupt.truncate(100);
    for (bytes, name) in [(corrupt, "a.mp3"), (b"hello, not audio".to_vec(), "a.txt")] {
        for path in ["/v1/analyze", "/v1/features", "/v1/metadata"] {
            let r = post(path)
                .multipart(upload(bytes.clone(), name))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            assert_eq!(status, 422, "{path} {name}: {body}");
            let code = body["error"]["code"].as_str().unwrap();
            assert!(
                code == "corrupt_audio" || code == "unsupported_audio",
                "{body}"
            );
        }
    }
    // Too large (1 MB limit here), empty, and extra fields.
    let r = post("/v1/features")
        .multipart(form(wav_bytes(10.0), &[]))
        .send()
        .await
        .unwrap();
    assert_error(r, 413, "payload_too_large").await;
    let r = post("/v1/features")
        .multipart(form(Vec::new(), &[]))
        .send()
        .await
        .unwrap();
    assert_error(r, 422, "unsupported_audio").await;
    let r = post("/v1/analyze")
        .multipart(form(wav_bytes(0.5), &[("stems", "4")]))
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "invalid_request").await;
    // URLs: only this server's media; malformed JSON and wrong types.
    for body in [
        json!({"url": "http://169.254.169.254/latest/meta-data/"}),
        json!({"url": "file:///etc/passwd"}),
        json!({"url": "not a url"}),
        json!({"url": 42}),
        json!({"link": "x"}),
    ] {
        let r = post("/v1/analyze").json(&body).send().await.unwrap();
        assert_error(r, 400, "invalid_request").await;
    }
    let r = post("/v1/analyze")
        .json(&json!({"url": format!("{}/media/nope/a.wav", s.base)}))
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "not_found").await;
    let r = post("/v1/analyze")
        .header("content-type", "application/json")
        .body("{\"url\": ")
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "invalid_request").await;
    let r = post("/v1/analyze").body("raw bytes").send().await.unwrap();
    assert_error(r, 400, "invalid_request").await;

    assert_nothing_left(&s, before).await;
    s.stop().await;
}
