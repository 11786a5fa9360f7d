//! The async jobs API end to end on a real engine (`/v1/analyze/upload`): the 202 body, polling
//! and 429, the signed webhook, idempotency, credits (reserve, charge, refund, 402), upload errors
//! and media URLs with Range.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::util::{
    assert_error, form, verify_like_flask, wav_bytes, Options, TestReceiver, TestServer,
};

const ANALYZE: &str = "/v1/analyze/upload";

#[tokio::test]
async fn a_job_completes_and_its_signed_webhook_matches_the_seed() {
    let rx = TestReceiver::start().await;
    let s = TestServer::start(Options {
        webhook_url: Some(format!("{}/webhooks/tunelab", rx.url)),
        ..Options::default()
    })
    .await;
    let submit = s.submit(ANALYZE, form(wav_bytes(2.0), &[])).await;
    let job_id = submit["job_id"].as_str().unwrap().to_string();
    assert!(job_id.starts_with("job_") && job_id.len() == 30, "{job_id}");
    assert_eq!(submit["status"], "queued");
    assert_eq!(submit["poll_url"], format!("{}/v1/jobs/{job_id}", s.base));
    assert!(submit["estimated_completion"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(submit["_meta"]["credits_reserved"], 2);
    assert_eq!(submit["_meta"]["credits_remaining"], 998);
    let trace_id = submit["_meta"]["trace_id"].as_str().unwrap().to_string();

    let job = s.wait_job(&job_id, 60).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["progress"], 1.0);
    assert_eq!(job["credits_used"], 2);
    assert!(job["result"].is_object());
    assert_eq!(job["error"], Value::Null);

    let got = rx.wait_for(1, 20).await;
    let hook = &got[0];
    assert_eq!(hook.path_and_query, "/webhooks/tunelab");
    assert_eq!(hook.header("content-type"), "application/json");
    let sig = hook.header("x-tunelab-signature");
    assert!(
        verify_like_flask(&s.secrets.webhook_secret, sig, &hook.body),
        "{sig}"
    );
    assert!(!verify_like_flask("whsec_wrong", sig, &hook.body));
    let event = hook.json();
    assert_eq!(event["type"], "job.completed");
    assert!(event["created"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(event["data"]["job_id"], job_id.as_str());
    assert_eq!(event["data"]["endpoint"], ANALYZE);
    assert_eq!(event["data"]["status"], "completed");
    assert_eq!(event["data"]["result"], job["result"]);
    assert_eq!(event["data"]["credits_used"], 2);
    assert_eq!(event["data"]["trace_id"], trace_id.as_str());
    assert_eq!(s.balance().await, 998);

    // The delivery log shows the attempt with request and response.
    let log: Value = s
        .tl(Method::GET, "/v1/webhook/deliveries")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let a = &log["data"][0];
    assert_eq!(a["succeeded"], true);
    assert_eq!(a["response_status"], 200);
    assert_eq!(a["attempt"], 1);
    assert_eq!(
        a["request_body"].as_str().unwrap().as_bytes(),
        &hook.body[..]
    );
    assert_eq!(a["request_headers"]["X-TuneLab-Signature"], sig);
    s.stop().await;
}

#[tokio::test]
async fn polling_twice_within_a_second_is_rate_limited() {
    let s = TestServer::start(Options::default()).await;
    let job = s.submit(ANALYZE, form(wav_bytes(1.0), &[])).await;
    let path = format!("/v1/jobs/{}", job["job_id"].as_str().unwrap());
    assert_eq!(s.tl(Method::GET, &path).send().await.unwrap().status(), 200);
    let r = s.tl(Method::GET, &path).send().await.unwrap();
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry_after, 1);
    assert_error(r, 429, "rate_limit_exceeded").await;
    tokio::time::sleep(Duration::from_millis(1010)).await;
    assert_eq!(s.tl(Method::GET, &path).send().await.unwrap().status(), 200);
    s.stop().await;
}

#[tokio::test]
async fn idempotency_key_replays_the_same_job_and_refuses_a_different_request() {
    let s = TestServer::start(Options::default()).await;
    let send = |bytes: Vec<u8>| {
        s.tl(Method::POST, ANALYZE)
            .header("Idempotency-Key", "order-4829-analyze-v1")
            .multipart(form(bytes, &[]))
            .send()
    };
    let first = send(wav_bytes(1.0)).await.unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let again = send(wav_bytes(1.0)).await.unwrap();
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(first["job_id"], again["job_id"]);
    // Reserved once.
    assert_eq!(s.balance().await, 998);
    let other = send(wav_bytes(1.5)).await.unwrap();
    assert_error(other, 409, "idempotency_conflict").await;
    let list: Value = s
        .tl(Method::GET, "/v1/jobs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn failures_on_our_side_are_refunded_and_reported_by_webhook() {
    let rx = TestReceiver::start().await;
    let s = TestServer::start(Options {
        webhook_url: Some(rx.url.clone()),
        ..Options::default()
    })
    .await;
    for (fault, code) in [
        ("internal_error", "internal_error"),
        ("service_unavailable", "service_unavailable"),
        ("timeout", "internal_error"),
    ] {
        let r = s
            .tl(Method::POST, ANALYZE)
            .header("X-Soundcheck-Fault", fault)
            .multipart(form(wav_bytes(1.0), &[]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let sub: Value = r.json().await.unwrap();
        let job = s.wait_job(sub["job_id"].as_str().unwrap(), 30).await;
        assert_eq!(job["status"], "failed");
        assert_eq!(job["error"]["code"], code, "{job}");
        assert_eq!(job["credits_used"], 0);
        assert_eq!(job["result"], Value::Null);
        assert_eq!(s.balance().await, 1000, "refunded after {fault}");
    }
    let got = rx.wait_for(3, 20).await;
    let event = got[0].json();
    assert_eq!(event["type"], "job.failed");
    assert_eq!(event["data"]["status"], "failed");
    assert_eq!(event["data"]["error"]["code"], "internal_error");
    assert!(event["data"]["error"]["message"].is_string());
    assert!(event["data"]["trace_id"].is_string());
    assert!(event["data"].get("result").is_none());
    let r = s
        .tl(Method::POST, ANALYZE)
        .header("X-Soundcheck-Fault", "explode")
        .multipart(form(wav_bytes(1.0), &[]))
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "invalid_request").await;
    s.stop().await;
}

#[tokio::test]
async fn insufficient_credits_is_402_and_reserves_nothing() {
    let s = TestServer::start(Options::default()).await;
    // Spend the balance down to 1 directly in the ledger.
    s.store
        .write(|tx| {
            soundcheck::store::credits::record(
                tx,
                None,
                soundcheck::store::states::LedgerKind::Grant,
                -999,
            )
        })
        .await
        .unwrap();
    let r = s
        .tl(Method::POST, ANALYZE)
        .multipart(form(wav_bytes(1.0), &[]))
        .send()
        .await
        .unwrap();
    assert_error(r, 402, "insufficient_credits").await;
    assert_eq!(s.balance().await, 1);
    s.stop().await;
}

#[tokio::test]
async fn bad_uploads_get_clear_errors_and_store_nothing() {
    let s = TestServer::start(Options {
        max_upload_mb: 1,
        ..Options::default()
    })
    .await;
    let cases: Vec<(reqwest::multipart::Form, u16, &str)> = vec![
        (form(Vec::new(), &[]), 422, "unsupported_audio"),
        (
            form(b"hello, this is not audio at all".repeat(100), &[]),
            422,
            "unsupported_audio",
        ),
        (
            form(vec![0u8; 2 * 1024 * 1024], &[]),
            413,
            "payload_too_large",
        ),
        (
            reqwest::multipart::Form::new().text("stems", "4"),
            400,
            "invalid_request",
        ),
    ];
    for (f, status, code) in cases {
        let r = s
            .tl(Method::POST, ANALYZE)
            .multipart(f)
            .send()
            .await
            .unwrap();
        assert_error(r, status, code).await;
    }
    let r = s
        .tl(Method::POST, ANALYZE)
        .body("not multipart")
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "invalid_request").await;
    assert_eq!(s.balance().await, 1000);
    let list: Value = s
        .tl(Method::GET, "/v1/jobs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    let uploads = s.data_dir.path().join("uploads");
    let left = crate::util::files_under(&uploads).len();
    assert_eq!(left, 0, "no partial upload left on disk");
    s.stop().await;
}

#[tokio::test]
async fn endpoints_without_an_engine_answer_501() {
    let s = TestServer::start(Options::default()).await;
    let registry = soundcheck::engines::registry(&crate::util::config_for(
        s.data_dir.path(),
        &Options::default(),
    ));
    for kind in soundcheck::jobs::JobKind::ALL {
        if registry.engine(kind).is_none() {
            let r = s
                .tl(Method::POST, kind.endpoint())
                .multipart(form(wav_bytes(1.0), &[]))
                .send()
                .await
                .unwrap();
            assert_error(r, 501, "engine_unavailable").await;
        }
    }
    assert_eq!(s.balance().await, 1000);
    s.stop().await;
}

/// What the headers already show a master would fail on is refused at submit (`400`), with
/// nothing charged: FLAC asked of more than 8 channels, and audio shorter than 0.4 s.
#[tokio::test]
async fn master_refuses_at_submit_what_its_headers_show_would_fail() {
    let s = TestServer::start(Options::default()).await;
    let wav = |channels: u16, frames: usize| {
        let spec = hound::WavSpec {
            channels,
            sample_rate: 44_100,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut cur = std::io::Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut cur, spec).unwrap();
        for i in 0..frames * usize::from(channels) {
            w.write_sample(((i % 100) as i16 - 50) * 200).unwrap();
        }
        w.finalize().unwrap();
        cur.into_inner()
    };
    let before = s.balance().await;
    for (bytes, fields, says) in [
        (
            wav(10, 44_100),
            vec![("format", "flac")],
            "at most 8 channels",
        ),
        (
            wav(10, 44_100),
            vec![("format", "flac24")],
            "at most 8 channels",
        ),
        (wav(2, 4_410), vec![], "at least 0.4 s"),
        (wav(2, 1), vec![("format", "mp3")], "at least 0.4 s"),
    ] {
        let r = s
            .tl(reqwest::Method::POST, "/v1/master")
            .multipart(form(bytes, &fields))
            .send()
            .await
            .unwrap();
        let body = assert_error(r, 400, "invalid_request").await;
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(says), "{fields:?}: {msg}");
    }
    assert_eq!(s.balance().await, before, "nothing charged");
    // Ten channels are fine as WAV, and half a second is long enough.
    let ok = s
        .submit("/v1/master", form(wav(10, 22_050), &[("format", "wav24")]))
        .await;
    let job = s.wait_job(ok["job_id"].as_str().unwrap(), 60).await;
    assert_eq!(job["status"], "completed", "{job}");
    s.stop().await;
}

#[tokio::test]
async fn master_transcribe_and_two_stem_separate_return_served_files() {
    let s = TestServer::start(Options::default()).await;
    let master = s
        .submit(
            "/v1/master",
            form(wav_bytes(3.0), &[("target_lufs", "-16")]),
        )
        .await;
    let midi = s.submit("/v1/transcribe", form(wav_bytes(3.0), &[])).await;
    let stems = s
        .submit(
            "/v1/separate",
            form(wav_bytes(2.0), &[("stems", "2"), ("format", "wav24")]),
        )
        .await;

    let m = s.wait_job(master["job_id"].as_str().unwrap(), 120).await;
    assert_eq!(m["status"], "completed", "{m}");
    let after = m["result"]["report"]["after"]["integrated_lufs"]
        .as_f64()
        .unwrap();
    assert!((after + 16.0).abs() <= 0.5, "{after}");
    let wav = s
        .client
        .get(m["result"]["mastered"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        hound::WavReader::new(std::io::Cursor::new(wav))
            .unwrap()
            .duration(),
        3 * 44_100
    );
    assert!(m["result"]["expires_at"].is_string());

    let t = s.wait_job(midi["job_id"].as_str().unwrap(), 120).await;
    assert_eq!(t["status"], "completed", "{t}");
    assert!(
        t["result"]["note_count"].as_u64().unwrap() >= 3,
        "a three-note chord: {t}"
    );
    let mid = s
        .client
        .get(t["result"]["midi"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(mid.starts_with(b"MThd"));

    let p = s.wait_job(stems["job_id"].as_str().unwrap(), 120).await;
    assert_eq!(p["status"], "completed", "{p}");
    assert_eq!(p["result"]["model"], "dsp");
    let names: Vec<&String> = p["result"]["stems"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["vocals", "accompaniment"]);
    let vocals = s
        .client
        .get(p["result"]["stems"]["vocals"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let spec = hound::WavReader::new(std::io::Cursor::new(vocals))
        .unwrap()
        .spec();
    assert_eq!(
        (spec.bits_per_sample, spec.sample_rate, spec.channels),
        (24, 44_100, 2)
    );
    // 10 + 8 + 6 credits charged.
    assert_eq!(s.balance().await, 1000 - 24);
    s.stop().await;
}

/// `GET /v1/jobs` pages back through every job (`limit`, `before`, `next_before`) and filters by
/// `status`, so an old queued job can still be found and cancelled; bad values are a 400.
#[tokio::test]
async fn the_job_list_pages_and_filters() {
    let s = TestServer::start(Options::default()).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let job = s
            .submit("/v1/analyze/upload", form(wav_bytes(0.2), &[]))
            .await;
        ids.push(job["job_id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        assert_eq!(s.wait_job(id, 30).await["status"], "completed");
    }
    let list = |query: &str| {
        let req = s.tl(Method::GET, &format!("/v1/jobs{query}"));
        async move { req.send().await.unwrap() }
    };
    let ids_of = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job_id"].as_str().unwrap().to_string())
            .collect()
    };
    let first: Value = list("?limit=2").await.json().await.unwrap();
    assert_eq!(
        ids_of(&first),
        vec![ids[2].clone(), ids[1].clone()],
        "{first}"
    );
    assert_eq!(first["next_before"], ids[1].as_str());
    let next: Value = list(&format!("?limit=2&before={}", ids[1]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids_of(&next), vec![ids[0].clone()], "{next}");
    assert!(next["next_before"].is_null(), "{next}");
    let all: Value = list("").await.json().await.unwrap();
    assert_eq!(ids_of(&all).len(), 3);
    let done: Value = list("?status=completed").await.json().await.unwrap();
    assert_eq!(ids_of(&done).len(), 3);
    let queued: Value = list("?status=queued").await.json().await.unwrap();
    assert!(ids_of(&queued).is_empty(), "{queued}");
    for bad in [
        "?limit=0",
        "?limit=501",
        "?limit=x",
        "?status=done",
        "?before=nope",
        "?before=gen_01ARZ3NDEKTSV4RRFFQ69G5FAV",
    ] {
        assert_error(list(bad).await, 400, "invalid_request").await;
    }
    s.stop().await;
}
