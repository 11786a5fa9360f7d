//! Auth, validation and the error envelope on both APIs, the webhook admin API and credits —
//! everything that needs no engine.

use reqwest::Method;
use serde_json::{json, Value};

use crate::util::{assert_error, Options, TestServer};

#[tokio::test]
async fn keys_follow_the_contract_and_each_api_refuses_the_others_key() {
    let s = TestServer::start(Options::default()).await;
    assert!(soundcheck::ids::is_api_key(&s.secrets.ft_key, "ft_test_"));
    assert!(soundcheck::ids::is_api_key(&s.secrets.tl_key, "tl_test_"));
    assert!(s.secrets.webhook_secret.starts_with("whsec_"));

    // Missing and wrong keys.
    let r = s
        .client
        .get(s.url("/v1/generations/gen_x"))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized").await;
    let r = s.client.get(s.url("/v1/jobs/job_x")).send().await.unwrap();
    assert_error(r, 401, "unauthorized").await;
    // A jobs key on the generations API and the other way round.
    let r = s
        .client
        .get(s.url("/v1/generations/gen_x"))
        .header("X-API-Key", &s.secrets.tl_key)
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized").await;
    let r = s
        .client
        .get(s.url("/v1/jobs/job_x"))
        .bearer_auth(&s.secrets.ft_key)
        .send()
        .await
        .unwrap();
    let body = assert_error(r, 401, "unauthorized").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("`soundcheck keys`"), "{message}");
    // An unset shell variable sends `Bearer ` with nothing after it: said as such.
    let r = s
        .client
        .get(s.url("/v1/jobs/job_x"))
        .header("Authorization", "Bearer ")
        .send()
        .await
        .unwrap();
    let body = assert_error(r, 401, "unauthorized").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("Bearer token is empty"), "{message}");
    // Right keys, unknown ids.
    let r = s
        .ft(Method::GET, "/v1/generations/gen_x")
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "not_found").await;
    let r = s.tl(Method::GET, "/v1/jobs/job_x").send().await.unwrap();
    assert_error(r, 404, "not_found").await;
    // Unknown route.
    let r = s.tl(Method::GET, "/v1/nothing").send().await.unwrap();
    assert_error(r, 404, "not_found").await;
    s.stop().await;
}

#[tokio::test]
async fn generation_requests_are_validated_and_store_nothing_when_bad() {
    let s = TestServer::start(Options::default()).await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "tags is required"),
        (json!({"tags": ""}), "tags must not be empty"),
        (json!({"tags": 5}), "tags must be a string"),
        (json!({"tags": "lofi", "duration": 0}), "duration"),
        (json!({"tags": "lofi", "duration": 601}), "duration"),
        (
            json!({"tags": "lofi", "duration": "90"}),
            "duration must be a number",
        ),
        (json!({"tags": "lofi", "duration": 12.5}), "duration"),
        (json!({"tags": "lofi", "bpm": 29}), "bpm"),
        (json!({"tags": "lofi", "bpm": 301}), "bpm"),
        (json!({"tags": "lofi", "keyscale": "H minor"}), "keyscale"),
        (
            json!({"tags": "lofi", "keyscale": 3}),
            "keyscale must be a string",
        ),
        (json!({"tags": "lofi", "timesignature": 1}), "timesignature"),
        (
            json!({"tags": "lofi", "timesignature": 13}),
            "timesignature",
        ),
        (json!({"tags": "lofi", "seed": -1}), "seed"),
        (json!({"tags": "lofi", "seed": 4294967296u64}), "seed"),
        (json!({"tags": "lofi", "webhook": "not a url"}), "webhook"),
        (
            json!({"tags": "lofi", "webhook": format!("http://127.0.0.1/{}", "a".repeat(2048))}),
            "2048",
        ),
        (
            json!({"tags": "lofi", "webhook": "ftp://example.com/x"}),
            "scheme",
        ),
        (json!(["tags"]), "JSON object"),
    ];
    for (body, needle) in cases {
        let r = s
            .ft(Method::POST, "/v1/generations")
            .json(&body)
            .send()
            .await
            .unwrap();
        let err = assert_error(r, 400, "invalid_request").await;
        let msg = err["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{body} → {msg}");
    }
    // Malformed JSON and a wrong content type.
    let r = s
        .ft(Method::POST, "/v1/generations")
        .header("content-type", "application/json")
        .body("{\"tags\": ")
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "invalid_request").await;
    let r = s
        .ft(Method::POST, "/v1/generations")
        .body("tags=lofi")
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "invalid_request").await;
    // Too large a body.
    let huge = json!({"tags": "x".repeat(3 * 1024 * 1024)});
    let r = s
        .ft(Method::POST, "/v1/generations")
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_error(r, 413, "payload_too_large").await;
    // Nothing was stored.
    let list: Value = s
        .ft(Method::GET, "/v1/generations")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    s.stop().await;
}

/// A `model` soundcheck does not know is the client's mistake (`400`, naming the generators it
/// knows); a known one that is not installed is `501` with the command that installs it.
#[tokio::test]
async fn an_unknown_model_is_a_400_and_a_missing_one_names_its_pull_command() {
    let s = TestServer::start(Options::default()).await;
    for typo in ["musicgen-smal", "htdemucs", "procedural "] {
        let r = s
            .ft(Method::POST, "/v1/generations")
            .json(&json!({"tags": "lofi", "model": typo}))
            .send()
            .await
            .unwrap();
        let err = assert_error(r, 400, "invalid_request").await;
        let msg = err["error"]["message"].as_str().unwrap();
        for name in ["procedural", "musicgen-small", "musicgen-medium"] {
            assert!(msg.contains(name), "{typo}: {msg}");
        }
    }
    let r = s
        .ft(Method::POST, "/v1/generations")
        .json(&json!({"tags": "lofi", "model": "musicgen-medium"}))
        .send()
        .await
        .unwrap();
    let err = assert_error(r, 501, "engine_unavailable").await;
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("soundcheck models pull musicgen-medium"),
        "{msg}"
    );
    // Nothing was queued; the installed generator still answers by name.
    let list: Value = s
        .ft(Method::GET, "/v1/generations")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    let r = s
        .ft(Method::POST, "/v1/generations")
        .json(&json!({"tags": "lofi", "duration": 1, "model": "procedural"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    s.stop().await;
}

#[tokio::test]
async fn strict_mode_refuses_http_and_private_webhooks() {
    let s = TestServer::start(Options {
        strict: true,
        ..Options::default()
    })
    .await;
    for url in [
        "http://example.com/hook",
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://10.1.2.3/hook",
        "https://192.168.0.5/hook",
        "https://[::1]/hook",
        "https://169.254.169.254/latest",
    ] {
        let r = s
            .ft(Method::POST, "/v1/generations")
            .json(&json!({"tags": "lofi", "webhook": url}))
            .send()
            .await
            .unwrap();
        assert_error(r, 400, "invalid_request").await;
    }
    let r = s
        .tl(Method::PUT, "/v1/webhook")
        .json(&json!({"url": "http://127.0.0.1:9/x"}))
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "invalid_request").await;
    s.stop().await;
}

#[tokio::test]
async fn webhook_admin_api_configures_rotates_and_toggles() {
    let s = TestServer::start(Options::default()).await;
    let ep: Value = s
        .tl(Method::GET, "/v1/webhook")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ep["url"], Value::Null);
    assert_eq!(ep["enabled"], true);
    assert_eq!(ep["secret"], s.secrets.webhook_secret.as_str());

    let r = s
        .tl(Method::PUT, "/v1/webhook")
        .json(&json!({"url": "http://127.0.0.1:9/hook"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ep: Value = r.json().await.unwrap();
    assert_eq!(ep["url"], "http://127.0.0.1:9/hook");

    let rotated: Value = s
        .tl(Method::POST, "/v1/webhook/rotate-secret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_secret = rotated["secret"].as_str().unwrap();
    assert!(new_secret.starts_with("whsec_") && new_secret != s.secrets.webhook_secret);

    let off: Value = s
        .tl(Method::POST, "/v1/webhook/disable")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(off["enabled"], false);
    assert!(off["disabled_reason"].is_string());
    let on: Value = s
        .tl(Method::POST, "/v1/webhook/enable")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(on["enabled"], true);
    assert_eq!(on["disabled_reason"], Value::Null);

    let r = s
        .tl(Method::PUT, "/v1/webhook")
        .json(&json!({"url": 5}))
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "invalid_request").await;
    let r = s
        .tl(Method::POST, "/v1/webhook/deliveries/del_nope/resend")
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "not_found").await;
    let log: Value = s
        .tl(Method::GET, "/v1/webhook/deliveries")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log["data"].as_array().unwrap().len(), 0);
    s.stop().await;
}

#[tokio::test]
async fn credits_start_at_1000_and_can_be_topped_up() {
    let s = TestServer::start(Options::default()).await;
    let c: Value = s
        .tl(Method::GET, "/v1/credits")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(c["balance"], 1000);
    let c: Value = s
        .tl(Method::POST, "/v1/credits")
        .json(&json!({"amount": 250}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(c["balance"], 1250);
    for bad in [json!({"amount": 0}), json!({"amount": "5"}), json!({})] {
        let r = s
            .tl(Method::POST, "/v1/credits")
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_error(r, 400, "invalid_request").await;
    }
    s.stop().await;
}
