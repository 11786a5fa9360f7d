//! `GET /openapi.json`: an OpenAPI 3.1 document generated from the handlers. Every documented
//! operation is routed (and the route list is the one the README promises), and real responses
//! match their documented schemas, checked by a small strict validator (no undeclared fields).

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::util::{form, wav_bytes, Options, TestReceiver, TestServer};

async fn document(s: &TestServer) -> Value {
    let r = s.client.get(s.url("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    r.json().await.unwrap()
}

/// Every operation of the two APIs, the admin API, sync analysis and media.
const OPERATIONS: &[(&str, &str)] = &[
    ("get", "/v1/generations"),
    ("post", "/v1/generations"),
    ("get", "/v1/generations/{id}"),
    ("get", "/v1/generations/{id}/deliveries"),
    ("post", "/v1/separate"),
    ("post", "/v1/transcribe"),
    ("post", "/v1/master"),
    ("post", "/v1/analyze/upload"),
    ("get", "/v1/jobs"),
    ("get", "/v1/jobs/{job_id}"),
    ("post", "/v1/analyze"),
    ("post", "/v1/features"),
    ("post", "/v1/metadata"),
    ("get", "/v1/webhook"),
    ("put", "/v1/webhook"),
    ("post", "/v1/webhook/enable"),
    ("post", "/v1/webhook/disable"),
    ("post", "/v1/webhook/rotate-secret"),
    ("get", "/v1/webhook/deliveries"),
    ("get", "/v1/webhook/deliveries/{id}"),
    ("post", "/v1/webhook/deliveries/{id}/resend"),
    ("get", "/v1/credits"),
    ("post", "/v1/credits"),
    ("get", "/media/{token}/{filename}"),
    ("delete", "/v1/jobs/{job_id}"),
    ("get", "/v1/jobs/{job_id}/events"),
    ("delete", "/v1/generations/{id}"),
    ("get", "/v1/generations/{id}/events"),
];

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.insert((method.clone(), path.clone()));
        }
    }
    ops
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_every_operation_is_routed() {
    let s = TestServer::start(Options::default()).await;
    let doc = document(&s).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let expected: BTreeSet<(String, String)> = OPERATIONS
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(operations(&doc), expected);

    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][&method];
        // Each operation documents a success, its errors in the envelope, and its key.
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|k| k.starts_with('2')),
            "{method} {path}"
        );
        if path.starts_with("/v1/") {
            assert!(responses.contains_key("401"), "{method} {path}");
            assert!(responses.contains_key("500"), "{method} {path}");
            let scheme = op["security"][0]
                .as_object()
                .unwrap()
                .keys()
                .next()
                .unwrap()
                .clone();
            let want = if path.starts_with("/v1/generations") {
                "api_key"
            } else {
                "bearer"
            };
            assert_eq!(scheme, want, "{method} {path}");
        }
        // The route exists: no key → 401 (or, for media, the media 404), never the fallback.
        let concrete = path
            .replace("{id}", "x")
            .replace("{job_id}", "job_x")
            .replace("{token}", "t")
            .replace("{filename}", "f.wav");
        let r = s
            .client
            .request(method.to_uppercase().parse().unwrap(), s.url(&concrete))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        if path.starts_with("/media/") {
            assert_eq!(status, 404);
            assert_ne!(body["error"]["message"], "No such endpoint.");
        } else {
            assert_eq!(status, 401, "{method} {path}: {body}");
        }
    }
    // Submits document the fault header; the generator list is this server's.
    let submit = &doc["paths"]["/v1/separate"]["post"];
    assert!(submit["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "X-Soundcheck-Fault"));
    let models = &doc["components"]["schemas"]["GenerationRequest"]["properties"]["model"]["enum"];
    assert!(
        models.as_array().unwrap().contains(&json!("procedural")),
        "{models}"
    );
    s.stop().await;
}

/// Checks `value` against `schema` (resolving `$ref` in `doc`); objects may carry only declared
/// properties. Returns the first mismatch.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return check(doc, &doc["components"]["schemas"][name], value, at);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema[key].as_array() {
            let ok = options.iter().any(|o| check(doc, o, value, at).is_ok());
            return if ok {
                Ok(())
            } else {
                Err(format!("{at}: {value} matches none of {key}"))
            };
        }
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            check(doc, s, value, at)?;
        }
    }
    if let Some(options) = schema["enum"].as_array() {
        if !options.contains(value) {
            return Err(format!("{at}: {value} not in {options:?}"));
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !types.is_empty() {
        let fits = types.iter().any(|t| match *t {
            "null" => value.is_null(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => false,
        });
        if !fits {
            return Err(format!("{at}: {value} is not {types:?}"));
        }
    }
    if let Value::Object(map) = value {
        let props = schema["properties"].as_object();
        for req in schema["required"].as_array().into_iter().flatten() {
            if !map.contains_key(req.as_str().unwrap()) {
                return Err(format!("{at}: required {req} missing"));
            }
        }
        for (k, v) in map {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(doc, s, v, &format!("{at}.{k}"))?,
                None => match &schema["additionalProperties"] {
                    Value::Object(_) => check(
                        doc,
                        &schema["additionalProperties"],
                        v,
                        &format!("{at}.{k}"),
                    )?,
                    Value::Bool(true) => {}
                    _ if props.is_none() => {} // a free-form object
                    _ => return Err(format!("{at}: undocumented field {k}")),
                },
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        for (i, v) in items.iter().enumerate() {
            check(doc, item_schema, v, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// Asserts a response body matches what the document says `method path` answers with `status`.
fn assert_documented(doc: &Value, method: &str, path: &str, status: u16, body: &Value) {
    let schema = &doc["paths"][path][method]["responses"][status.to_string()]["content"]
        ["application/json"]["schema"];
    assert!(
        !schema.is_null(),
        "{method} {path} documents no {status} JSON body"
    );
    if let Err(e) = check(doc, schema, body, "$") {
        panic!("{method} {path} {status}: {e}\n{body:#}");
    }
}

#[tokio::test]
async fn real_responses_match_their_documented_schemas() {
    let rx = TestReceiver::start().await;
    let s = TestServer::start(Options {
        webhook_url: Some(rx.url.clone()),
        ..Options::default()
    })
    .await;
    let doc = document(&s).await;
    let json = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap())
    };

    // Jobs: submit, list, poll, and the webhook admin views it produced.
    let r = s
        .tl(Method::POST, "/v1/analyze/upload")
        .multipart(form(wav_bytes(1.0), &[]))
        .send()
        .await
        .unwrap();
    let (st, sub) = json(r).await;
    assert_documented(&doc, "post", "/v1/analyze/upload", st, &sub);
    let job_id = sub["job_id"].as_str().unwrap().to_string();
    let job = s.wait_job(&job_id, 30).await;
    assert_eq!(job["status"], "completed");
    assert_documented(&doc, "get", "/v1/jobs/{job_id}", 200, &job);
    let (st, list) = json(s.tl(Method::GET, "/v1/jobs").send().await.unwrap()).await;
    assert_documented(&doc, "get", "/v1/jobs", st, &list);
    rx.wait_for(1, 30).await;
    let (st, dels) = json(
        s.tl(Method::GET, "/v1/webhook/deliveries")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_documented(&doc, "get", "/v1/webhook/deliveries", st, &dels);
    let (st, ep) = json(s.tl(Method::GET, "/v1/webhook").send().await.unwrap()).await;
    assert_documented(&doc, "get", "/v1/webhook", st, &ep);
    let (st, ep) = json(
        s.tl(Method::POST, "/v1/webhook/enable")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_documented(&doc, "post", "/v1/webhook/enable", st, &ep);
    let (st, credits) = json(s.tl(Method::GET, "/v1/credits").send().await.unwrap()).await;
    assert_documented(&doc, "get", "/v1/credits", st, &credits);
    // JSON has one number type: 25.0 is the integer the schema asks for (schemathesis found it).
    let r = s
        .tl(Method::POST, "/v1/credits")
        .json(&json!({"amount": 25.0}))
        .send()
        .await
        .unwrap();
    let (st, topped) = json(r).await;
    assert_eq!(st, 200, "{topped}");
    assert_documented(&doc, "post", "/v1/credits", st, &topped);

    // Generations: the 202 body and the final one.
    let r = s
        .ft(Method::POST, "/v1/generations")
        .json(&json!({"tags": "lofi piano", "duration": 2, "seed": 7}))
        .send()
        .await
        .unwrap();
    let (st, gen) = json(r).await;
    assert_documented(&doc, "post", "/v1/generations", st, &gen);
    let done = s.wait_generation(gen["id"].as_str().unwrap(), 60).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_documented(&doc, "get", "/v1/generations/{id}", 200, &done);

    // Synchronous analysis of the generated file, by URL.
    let r = s
        .tl(Method::POST, "/v1/analyze")
        .json(&json!({"url": done["audioUrl"]}))
        .send()
        .await
        .unwrap();
    let (st, report) = json(r).await;
    assert_documented(&doc, "post", "/v1/analyze", st, &report);
    let r = s
        .tl(Method::POST, "/v1/metadata")
        .multipart(form(wav_bytes(0.5), &[]))
        .send()
        .await
        .unwrap();
    let (st, meta) = json(r).await;
    assert_documented(&doc, "post", "/v1/metadata", st, &meta);

    // Errors: the envelope, as documented.
    let (st, err) = json(s.tl(Method::GET, "/v1/jobs/job_nope").send().await.unwrap()).await;
    assert_documented(&doc, "get", "/v1/jobs/{job_id}", st, &err);
    let (st, err) = json(
        s.ft(Method::POST, "/v1/generations")
            .json(&json!({"tags": 5}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_documented(&doc, "post", "/v1/generations", st, &err);

    // The validator itself rejects a drifted body.
    let mut drifted = job.clone();
    drifted["surprise"] = json!(1);
    let schema = &doc["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]["200"]["content"]
        ["application/json"]["schema"];
    assert!(check(&doc, schema, &drifted, "$").is_err());
    let mut wrong = job.clone();
    wrong["credits_used"] = json!("ten");
    assert!(check(&doc, schema, &wrong, "$").is_err());
    s.stop().await;
}

/// What Redocly's recommended rules ask of the document (CI runs `scripts/openapi_lint.sh`):
/// `servers` naming this server, an SPDX licence identifier, and `security` declared on every
/// operation — an empty list on the public media route, a key on every other one.
#[tokio::test]
async fn the_document_names_its_server_licence_and_every_operations_security() {
    let s = TestServer::start(Options::default()).await;
    let doc = document(&s).await;
    assert_eq!(
        doc["servers"][0]["url"],
        s.base.as_str(),
        "{}",
        doc["servers"]
    );
    assert_eq!(doc["info"]["license"]["identifier"], "MIT OR Apache-2.0");
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let security = op["security"]
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path} declares no security"));
            if path.starts_with("/media/") {
                assert!(security.is_empty(), "{method} {path}: {security:?}");
            } else {
                assert!(!security.is_empty(), "{method} {path} has no key");
            }
        }
    }
    s.stop().await;
}
