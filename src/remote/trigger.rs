//! `trigger`: a real job or generation forced down one path so its webhook is sent, with
//! `--param` fields checked against the server's OpenAPI document before anything runs.

use std::time::Duration;

use anyhow::{anyhow, bail};
use serde_json::{json, Value};

use super::client::{answer, decode, Client, Key};
use super::print::job_line;
use crate::api::webhook::EndpointBody;
use crate::jobs::engine::JobKind;
use crate::views::{GenerationBody, JobBody, SubmitBody};

/// The item whose event stream is `events`, once it has ended (at most 300 s), and the client
/// that saw the end (another API node's, when the first stopped answering meanwhile). The
/// stream, not polls: a job allows one poll per second, and that one is the app's (its webhook
/// handler fetching the job `trigger` ran, say), never taken by `trigger` waiting.
async fn ended<T: serde::de::DeserializeOwned>(
    c: &Client,
    events: &str,
    key: Key,
    id: &str,
) -> anyhow::Result<(T, Client)> {
    let followed = c.follow_on(events, key, true, |_, _| {});
    let (done, c) = tokio::time::timeout(Duration::from_secs(300), followed)
        .await
        .map_err(|_| anyhow!("{id} did not finish in 300 s"))??;
    Ok((decode(done, events)?, c))
}

/// Checks `name=value` pairs against the request body `path`'s POST takes in the server's
/// OpenAPI document: the name must be one of its fields (the audio file aside), and a value must
/// fit the field's type, range and enumeration. Returns each value typed as the field is (a
/// number for an integer field), so a JSON body carries it as the API expects.
pub(crate) fn check_params(
    doc: &Value,
    path: &str,
    raw: &[String],
) -> anyhow::Result<Vec<(String, Value)>> {
    let content = &doc["paths"][path]["post"]["requestBody"]["content"];
    let schema = content["multipart/form-data"]["schema"]
        .as_object()
        .or_else(|| content["application/json"]["schema"].as_object())
        .ok_or_else(|| anyhow!("{path} is not an endpoint that takes a request body"))?;
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => doc
            .pointer(r.trim_start_matches('#'))
            .and_then(Value::as_object)
            .ok_or_else(|| anyhow!("the document's {r} is missing"))?,
        None => schema,
    };
    let fields: Vec<&String> = schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().filter(|k| *k != "audio").collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for p in raw {
        let (name, value) = p
            .split_once('=')
            .ok_or_else(|| anyhow!("--param {p:?} is not name=value"))?;
        let Some(field) = schema["properties"].get(name).filter(|_| name != "audio") else {
            let known: Vec<&str> = fields.iter().map(|f| f.as_str()).collect();
            bail!(
                "{path} has no field {name:?}; its fields: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        };
        let types: Vec<&str> = match &field["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec!["string"],
        };
        let typed = if types.contains(&"integer") || types.contains(&"number") {
            let n: f64 = value
                .parse()
                .ok()
                .filter(|n: &f64| n.is_finite())
                .ok_or_else(|| anyhow!("--param {name}: {value:?} is not a number"))?;
            let (lo, hi) = (field["minimum"].as_f64(), field["maximum"].as_f64());
            if lo.is_some_and(|lo| n < lo) || hi.is_some_and(|hi| n > hi) {
                bail!(
                    "--param {name} must be {} to {} (got {value})",
                    lo.map_or("-∞".into(), |v| v.to_string()),
                    hi.map_or("∞".into(), |v| v.to_string())
                );
            }
            if let Some(step) = field["multipleOf"].as_f64().filter(|m| *m > 0.0) {
                anyhow::ensure!(
                    (n / step).fract() == 0.0,
                    "--param {name} must be a multiple of {step}{} (got {value})",
                    match (lo, hi) {
                        (Some(lo), Some(hi)) => format!(" from {lo} to {hi}"),
                        _ => String::new(),
                    }
                );
            }
            if types.contains(&"integer") {
                anyhow::ensure!(
                    n.fract() == 0.0,
                    "--param {name} must be a whole number (got {value})"
                );
                json!(n as i64)
            } else {
                json!(n)
            }
        } else if types.contains(&"boolean") {
            json!(value
                .parse::<bool>()
                .map_err(|_| anyhow!("--param {name} must be true or false (got {value:?})"))?)
        } else {
            json!(value)
        };
        if let Some(allowed) = field["enum"].as_array() {
            if !allowed.contains(&typed) {
                let names: Vec<String> = allowed
                    .iter()
                    .filter(|v| !v.is_null())
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                    .collect();
                bail!(
                    "--param {name} must be one of {} (got {value:?})",
                    names.join(", ")
                );
            }
        }
        out.push((name.to_string(), typed));
    }
    Ok(out)
}

/// Four seconds of stereo WAV for `trigger`: a C major triad over a kick-like hit every half
/// second, so the default job (`/v1/analyze/upload`) reads something (120 bpm, C major) rather
/// than a tempo of 0. Small (350 KB) and real audio.
pub(super) fn builtin_wav() -> Vec<u8> {
    const RATE: u32 = 22_050;
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cursor = std::io::Cursor::new(Vec::new());
    {
        let mut w = hound::WavWriter::new(&mut cursor, spec).expect("in-memory WAV");
        let beat = RATE as usize / 2;
        let mut noise = 0x2545_f491u32;
        for i in 0..4 * RATE as usize {
            let t = i as f32 / RATE as f32;
            let triad: f32 = [261.63f32, 329.63, 392.0]
                .iter()
                .map(|f| (2.0 * std::f32::consts::PI * f * t).sin())
                .sum::<f32>()
                * 0.15;
            // The hit: a 90 Hz thump and a little noise, decaying over 80 ms.
            let since = (i % beat) as f32 / RATE as f32;
            noise = noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let hiss = (noise >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
            let hit = if since < 0.08 {
                ((2.0 * std::f32::consts::PI * 90.0 * since).sin() * 0.6 + hiss * 0.6)
                    * (-since / 0.015).exp()
            } else {
                0.0
            };
            let v = ((triad + hit).clamp(-1.0, 1.0) * i16::MAX as f32) as i16;
            w.write_sample(v).expect("in-memory WAV");
            w.write_sample(v).expect("in-memory WAV");
        }
        w.finalize().expect("in-memory WAV");
    }
    cursor.into_inner()
}

/// Notes while `trigger` waits: on stdout, or with `--json` (where stdout is the one object) not
/// at all.
macro_rules! say {
    ($json:expr, $($arg:tt)*) => {
        if !$json { println!($($arg)*) }
    };
}

/// The job endpoint `--endpoint` names: a path as the API spells it (`/v1/separate`), the same
/// without its leading `/` or `/v1/` (`v1/separate`, `separate`, `analyze/upload`), or `analyze`
/// for `/v1/analyze/upload`. Anything else (`/v1/analyze`, the synchronous analysis, among them)
/// is refused here, with the four paths, rather than sent and answered 404 or 405.
pub(crate) fn job_endpoint(given: &str) -> anyhow::Result<&'static str> {
    let given_path = given.trim();
    let given_path = given_path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(given_path);
    JobKind::ALL
        .into_iter()
        .find(|kind| {
            let path = kind.endpoint();
            let short = path.trim_start_matches("/v1/");
            [path, &path[1..], short].contains(&given_path)
                || (*kind == JobKind::Analyze && given_path == "analyze")
        })
        .map(JobKind::endpoint)
        .ok_or_else(|| {
            let paths: Vec<&str> = JobKind::ALL.into_iter().map(JobKind::endpoint).collect();
            anyhow!(
                "--endpoint {given:?} is not a job endpoint; use one of {}",
                paths.join(", ")
            )
        })
}

pub(super) async fn trigger(
    c: &Client,
    event: &str,
    endpoint: Option<&str>,
    raw_params: &[String],
    json: bool,
) -> anyhow::Result<()> {
    let fault = match event {
        "job.completed" | "generation.completed" => None,
        "job.failed" | "generation.failed" => Some("internal_error"),
        other => bail!(
            "unknown event {other:?}: job.completed, job.failed, generation.completed or \
             generation.failed"
        ),
    };
    let endpoint = match (event.starts_with("job."), endpoint) {
        (true, given) => job_endpoint(given.unwrap_or(JobKind::Analyze.endpoint()))?,
        (false, None) => "/v1/generations",
        (false, Some(given)) if given.trim().trim_end_matches('/') == "/v1/generations" => {
            "/v1/generations"
        }
        (false, Some(given)) => bail!(
            "--endpoint {given:?}: {event} always runs a generation (POST /v1/generations); \
             --endpoint picks the job endpoint of job.* events"
        ),
    };
    // Every --param is checked against the server's own document before anything is sent.
    let params = if raw_params.is_empty() {
        Vec::new()
    } else {
        let resp = c
            .send(c.http.get(format!("{}/openapi.json", c.base)))
            .await?;
        let doc = answer(resp).await?;
        check_params(&doc, endpoint, raw_params)?
    };
    let outcome = if event.starts_with("job.") {
        let mut form = reqwest::multipart::Form::new().part(
            "audio",
            reqwest::multipart::Part::bytes(builtin_wav()).file_name("soundcheck-trigger.wav"),
        );
        for (name, value) in &params {
            let text = value
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            form = form.text(name.clone(), text);
        }
        let mut req = c
            .http
            .post(format!("{}{endpoint}", c.base))
            .bearer_auth(&c.tl_key)
            .multipart(form);
        if let Some(f) = fault {
            req = req.header(crate::faults::HEADER, f);
        }
        let sub: SubmitBody = decode(c.answer(c.send(req).await?, Key::Jobs).await?, endpoint)?;
        let id = sub.job_id;
        say!(json, "submitted {id} to {endpoint}");
        let events = format!("/v1/jobs/{}/events", super::client::segment(&id)?);
        let (job, c): (JobBody, _) = ended(c, &events, Key::Jobs, &id).await?;
        say!(json, "{}", job_line(&job));
        // Read once the job has ended, when the event's fate was decided: the endpoint may have
        // been disabled (five failing events) or enabled while it ran. Through the node that
        // saw the end, or the one that answers now.
        let jobs_endpoint = c.tl_get_on::<EndpointBody>("/v1/webhook").await?;
        let webhook_url = jobs_endpoint.url.clone();
        match &webhook_url {
            // A disabled endpoint holds job events until it is enabled again.
            Some(url) if !jobs_endpoint.enabled => say!(
                json,
                "job.{} event held: the endpoint is disabled (`soundcheck webhook enable` sends \
                 it to {url})",
                job.status
            ),
            Some(url) => say!(json, "job.{} event queued for {url}", job.status),
            None => say!(
                json,
                "no webhook endpoint is set, so the event was recorded as skipped \
                 (run `soundcheck listen` or `soundcheck webhook set-url URL`)"
            ),
        }
        json!({
            "event": format!("job.{}", job.status),
            "job": job,
            "webhook_url": webhook_url,
            "held": webhook_url.is_some() && !jobs_endpoint.enabled,
        })
    } else {
        let mut body = json!({"tags": "soundcheck trigger, lofi piano", "duration": 2});
        // Generation webhooks go to the URL given at submit: the jobs endpoint's, if any (so
        // `listen` sees them too).
        let webhook_url = c.tl_get_as::<EndpointBody>("/v1/webhook").await?.url;
        if let Some(url) = &webhook_url {
            body["webhook"] = json!(url);
        }
        for (name, value) in params {
            body[name] = value;
        }
        let mut req = c
            .http
            .post(format!("{}/v1/generations", c.base))
            .header("X-API-Key", &c.ft_key)
            .json(&body);
        if let Some(f) = fault {
            req = req.header(crate::faults::HEADER, f);
        }
        let path = "/v1/generations";
        let g: GenerationBody =
            decode(c.answer(c.send(req).await?, Key::Generations).await?, path)?;
        let id = g.id;
        say!(json, "submitted generation {id}");
        let events = format!("/v1/generations/{}/events", super::client::segment(&id)?);
        let (done, _): (GenerationBody, _) = ended(c, &events, Key::Generations, &id).await?;
        let detail = match (&done.error_message, &done.audio_url) {
            (Some(m), _) => format!(": {m}"),
            (None, url) => format!(" {}", url.as_deref().unwrap_or("")),
        };
        say!(json, "{id} {}{detail}", done.status);
        let sent_to = body["webhook"].as_str().map(str::to_string);
        match &sent_to {
            Some(url) => say!(json, "generation.{} webhook sent to {url}", done.status),
            None => say!(
                json,
                "no webhook URL: set one with `soundcheck listen` or `soundcheck webhook set-url`"
            ),
        }
        json!({
            "event": format!("generation.{}", done.status),
            "generation": done,
            "webhook_url": sent_to,
        })
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document a server built from this code serves.
    fn document() -> Value {
        let (_, doc) = crate::api::router().split_for_parts();
        crate::api::docs::finish(doc, &["procedural".to_string()], "http://127.0.0.1:1")
    }

    /// The built-in clip reads as what it is: 120 bpm, C major (it once read a tempo of 0).
    #[test]
    fn the_builtin_clip_has_a_tempo_and_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trigger.wav");
        std::fs::write(&path, builtin_wav()).unwrap();
        let audio = crate::audio::decode(&path).unwrap();
        assert!((audio.duration_secs() - 4.0).abs() < 1e-3);
        let report = crate::engines::analyze::full(&audio, &|_| {}).unwrap();
        let text = serde_json::to_value(&report).unwrap();
        let bpm = text["rhythm"]["bpm"].as_f64().unwrap();
        assert!((bpm - 120.0).abs() < 2.0, "{text}");
        assert_eq!(text["key"]["name"], "C major", "{text}");
    }

    #[test]
    fn trigger_endpoint_names_a_job_endpoint() {
        assert_eq!(job_endpoint("/v1/separate").unwrap(), "/v1/separate");
        assert_eq!(job_endpoint("v1/master").unwrap(), "/v1/master");
        assert_eq!(job_endpoint("transcribe").unwrap(), "/v1/transcribe");
        assert_eq!(job_endpoint("analyze").unwrap(), "/v1/analyze/upload");
        assert_eq!(
            job_endpoint("analyze/upload").unwrap(),
            "/v1/analyze/upload"
        );
        assert_eq!(
            job_endpoint("/v1/analyze/upload/").unwrap(),
            "/v1/analyze/upload"
        );
        // `/v1/analyze` is the synchronous analysis, not its job endpoint.
        for wrong in [
            "/v1/nope",
            "/v1/generations",
            "/v1/analyze",
            "v1/analyze",
            "upload",
            "/v1/analyze/url",
            "",
            "/",
            "../admin",
        ] {
            let msg = job_endpoint(wrong).unwrap_err().to_string();
            assert!(
                msg.contains("not a job endpoint") && msg.contains("/v1/separate"),
                "{wrong}: {msg}"
            );
        }
    }

    #[test]
    fn trigger_params_are_checked_against_the_document() {
        let doc = document();
        let ok = check_params(&doc, "/v1/transcribe", &["min_note_ms=80".into()]).unwrap();
        assert_eq!(ok, vec![("min_note_ms".to_string(), json!(80.0))]);
        // A form's fields are typed and bounded as the engine reads them.
        let msg = check_params(&doc, "/v1/master", &["target_lufs=-40".into()])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("-30 to -6"), "{msg}");
        let msg = check_params(&doc, "/v1/separate", &["format=mp3".into()])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("wav16, wav24, float"), "{msg}");
        let ok = check_params(&doc, "/v1/separate", &["stems=2".into()]).unwrap();
        assert_eq!(ok, vec![("stems".to_string(), json!(2))]);
        // In range but not a step of the field's multipleOf: refused here, not by the server.
        let msg = check_params(&doc, "/v1/separate", &["stems=3".into()])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("multiple of 2 from 2 to 4"), "{msg}");
        let err = check_params(&doc, "/v1/transcribe", &["bogus=1".into()]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("no field \"bogus\"") && msg.contains("onset_threshold"),
            "{msg}"
        );
        // The upload itself is not a parameter.
        assert!(check_params(&doc, "/v1/separate", &["audio=x".into()]).is_err());
        assert!(check_params(&doc, "/v1/separate", &["stems".into()]).is_err());
        // A JSON body: typed values, ranges and enumerations from the schema.
        let gen = check_params(&doc, "/v1/generations", &["bpm=90".into()]).unwrap();
        assert_eq!(gen, vec![("bpm".to_string(), json!(90))]);
        let msg = check_params(&doc, "/v1/generations", &["duration=9999".into()])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("1 to 600"), "{msg}");
        assert!(check_params(&doc, "/v1/generations", &["bpm=fast".into()]).is_err());
        for odd in ["NaN", "inf", "-infinity"] {
            let msg = check_params(&doc, "/v1/master", &[format!("target_lufs={odd}")])
                .unwrap_err()
                .to_string();
            assert!(msg.contains("is not a number"), "{odd}: {msg}");
        }
        assert!(check_params(&doc, "/v1/generations", &["bpm=90.5".into()]).is_err());
        let msg = check_params(&doc, "/v1/generations", &["model=nope".into()])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("procedural"), "{msg}");
        assert!(check_params(&doc, "/v1/nowhere", &["a=1".into()]).is_err());
    }
}
