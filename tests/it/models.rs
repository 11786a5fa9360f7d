//! Model management without the network: `models pull` against a local stand-in for the Hugging
//! Face Hub (file listing with checksums, `resolve` downloads with Range), a dropped connection
//! resumed where it stopped, a tampered file refused; `models list`; and an installed MusicGen (the
//! tiny parity fixture) serving `/v1/generations` through `--generator auto` and the `model` field.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use reqwest::Method;
use serde_json::{json, Value};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::util::{Options, TestServer};

const REPO: &str = "facebook/musicgen-small";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/musicgen/model")
}

/// A stand-in for the Hub serving the tiny MusicGen fixture (plus a `.bin` nobody should fetch).
#[derive(Clone)]
struct Hub {
    files: Arc<HashMap<String, Vec<u8>>>,
    /// `(file, Range header)` of every download request.
    log: Arc<Mutex<Vec<(String, Option<String>)>>>,
    /// Cut the first download of model.safetensors off half-way.
    drop_once: Arc<AtomicBool>,
    /// Serve these bytes for tokenizer.json instead of the listed ones.
    tampered: Option<Arc<Vec<u8>>>,
}

impl Hub {
    fn new(tamper: bool) -> Hub {
        let mut files = HashMap::new();
        for e in std::fs::read_dir(fixture_dir()).unwrap().flatten() {
            files.insert(
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            );
        }
        files.insert("pytorch_model.bin".into(), vec![0u8; 64]);
        let tampered = tamper.then(|| {
            let mut t = files["tokenizer.json"].clone();
            t[10] ^= 1;
            Arc::new(t)
        });
        Hub {
            files: Arc::new(files),
            log: Arc::default(),
            drop_once: Arc::new(AtomicBool::new(true)),
            tampered,
        }
    }

    async fn start(self) -> String {
        let app = Router::new()
            .route("/api/models/{org}/{name}/revision/{rev}", get(listing))
            .route("/{org}/{name}/resolve/{rev}/{file}", get(resolve))
            .with_state(self);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    fn downloads(&self) -> Vec<(String, Option<String>)> {
        self.log.lock().unwrap().clone()
    }
}

async fn listing(
    State(hub): State<Hub>,
    UrlPath((org, name, rev)): UrlPath<(String, String, String)>,
) -> Response {
    assert_eq!(format!("{org}/{name}"), REPO);
    assert_eq!(rev, "main");
    let siblings: Vec<Value> = hub
        .files
        .iter()
        .map(|(name, bytes)| {
            if name.ends_with(".safetensors") || name.ends_with(".bin") {
                json!({"rfilename": name, "size": bytes.len(), "blobId": "x",
                       "lfs": {"sha256": hex::encode(Sha256::digest(bytes)), "size": bytes.len(), "pointerSize": 134}})
            } else {
                let mut h = Sha1::new();
                h.update(format!("blob {}\0", bytes.len()).as_bytes());
                h.update(bytes);
                json!({"rfilename": name, "size": bytes.len(), "blobId": hex::encode(h.finalize())})
            }
        })
        .collect();
    axum::Json(json!({"id": REPO, "sha": COMMIT, "siblings": siblings})).into_response()
}

async fn resolve(
    State(hub): State<Hub>,
    UrlPath((_org, _name, rev, file)): UrlPath<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    assert_eq!(rev, COMMIT, "downloads are pinned to the listed commit");
    let range = headers
        .get("range")
        .map(|v| v.to_str().unwrap().to_string());
    hub.log.lock().unwrap().push((file.clone(), range.clone()));
    let bytes = match (&hub.tampered, file.as_str()) {
        (Some(t), "tokenizer.json") => t.as_ref().clone(),
        _ => match hub.files.get(&file) {
            Some(b) => b.clone(),
            None => return StatusCode::NOT_FOUND.into_response(),
        },
    };
    let start: usize = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .map(|n| n.parse().unwrap())
        .unwrap_or(0);
    let rest = bytes[start..].to_vec();
    let total = bytes.len();
    if file == "model.safetensors" && hub.drop_once.swap(false, Ordering::SeqCst) {
        // Promise everything, send half, then fail the stream: the connection drops mid-file.
        let half = rest[..rest.len() / 2].to_vec();
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            vec![Ok(half), Err(std::io::Error::other("cut"))];
        return Response::builder()
            .header("content-length", rest.len())
            .body(Body::from_stream(futures_util::stream::iter(chunks)))
            .unwrap();
    }
    let mut resp = Response::builder().header("content-length", rest.len());
    if start > 0 {
        resp = resp.status(StatusCode::PARTIAL_CONTENT).header(
            "content-range",
            format!("bytes {start}-{}/{total}", total - 1),
        );
    }
    resp.body(Body::from(rest)).unwrap()
}

fn soundcheck(args: &[&str], data: &Path) -> std::process::Output {
    crate::util::soundcheck()
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap()
}

#[tokio::test]
async fn pull_resumes_a_dropped_download_and_installs_only_what_is_needed() {
    let hub = Hub::new(false);
    let url = hub.clone().start().await;
    let data = tempfile::tempdir().unwrap();
    let d = data.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        soundcheck(&["models", "pull", "musicgen-small", "--mirror", &url], &d)
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("CC-BY-NC 4.0"),
        "the licence is printed: {stdout}"
    );

    let downloads = hub.downloads();
    let weights: Vec<_> = downloads
        .iter()
        .filter(|(f, _)| f == "model.safetensors")
        .collect();
    let size = std::fs::metadata(fixture_dir().join("model.safetensors"))
        .unwrap()
        .len();
    assert_eq!(weights.len(), 2, "{downloads:?}");
    assert_eq!(weights[0].1, None);
    let resumed_at: u64 = weights[1]
        .1
        .as_deref()
        .unwrap()
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(
        resumed_at > 0 && resumed_at < size,
        "resumed at {resumed_at} of {size}"
    );
    assert!(
        !downloads.iter().any(|(f, _)| f.ends_with(".bin")),
        "{downloads:?}"
    );

    let dir = data.path().join("models/musicgen-small");
    for f in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "model.safetensors",
    ] {
        assert_eq!(
            std::fs::read(dir.join(f)).unwrap(),
            std::fs::read(fixture_dir().join(f)).unwrap(),
            "{f}"
        );
    }
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("soundcheck-model.json")).unwrap()).unwrap();
    assert_eq!(manifest["revision"], COMMIT);
    assert_eq!(manifest["family"], "musicgen");
    assert!(!data.path().join("models/.partial/musicgen-small").exists());

    let list = soundcheck(&["models", "list"], data.path());
    let text = String::from_utf8_lossy(&list.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("musicgen-small"))
        .unwrap();
    assert!(line.contains("installed"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("htdemucs ") && !l.contains("installed")),
        "{text}"
    );
}

#[tokio::test]
async fn a_file_failing_its_checksum_is_refused_and_nothing_is_installed() {
    let url = Hub::new(true).start().await;
    let data = tempfile::tempdir().unwrap();
    let err = soundcheck::models::pull(
        data.path(),
        "musicgen-small",
        &soundcheck::models::PullOptions {
            mirror: Some(url),
            revision: None,
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, soundcheck::models::Error::Checksum { .. }),
        "{err}"
    );
    assert!(soundcheck::models::installed(data.path()).is_empty());
    assert!(!data.path().join("models/musicgen-small").exists());
    let staged = data.path().join("models/.partial/musicgen-small");
    assert!(
        !staged.join("tokenizer.json").exists() && !staged.join("tokenizer.json.part").exists()
    );
    // An unknown id is an error too, before any request.
    assert!(matches!(
        soundcheck::models::pull(data.path(), "musicgen-huge", &Default::default()).await,
        Err(soundcheck::models::Error::Unknown(_))
    ));
}

#[tokio::test]
async fn an_installed_musicgen_serves_generations() {
    let s = TestServer::start_with(Options::default(), |c| {
        soundcheck::models::import(&c.data_dir, &fixture_dir(), Some("musicgen-small")).unwrap();
        c.generator = "auto".into();
    })
    .await;
    // `auto` picked the installed MusicGen; `procedural` is still there by name.
    let mut ids = Vec::new();
    for body in [
        json!({"tags": "lofi, piano", "duration": 2, "seed": 5}),
        json!({"tags": "lofi, piano", "duration": 2, "seed": 5, "model": "procedural"}),
    ] {
        let r = s
            .ft(Method::POST, "/v1/generations")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let r = s
        .ft(Method::POST, "/v1/generations")
        .json(&json!({"tags": "x", "model": "musicgen-medium"}))
        .send()
        .await
        .unwrap();
    crate::util::assert_error(r, 501, "engine_unavailable").await;

    let mut decoded = Vec::new();
    for id in &ids {
        let done = s.wait_generation(id, 120).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert!(
            done.get("model").is_none(),
            "the seed's body is unchanged: {done}"
        );
        let mp3 = s
            .client
            .get(done["audioUrl"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let a = soundcheck::audio::decode::decode_bytes(mp3.to_vec(), Some("mp3")).unwrap();
        assert_eq!((a.sample_rate, a.channels.len()), (44_100, 2));
        assert!(
            (a.duration_secs() - 2.0).abs() < 0.2,
            "{}",
            a.duration_secs()
        );
        decoded.push(a);
    }
    // Two engines, two different renders of the same request.
    assert_ne!(
        decoded[0].channels[0][..4096],
        decoded[1].channels[0][..4096]
    );
    s.stop().await;
}

#[test]
fn serve_refuses_a_generator_that_is_not_installed() {
    let data = tempfile::tempdir().unwrap();
    let out = crate::util::soundcheck()
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--generator",
            "musicgen-small",
            "--data-dir",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("models pull musicgen-small"), "{err}");
}

fn demucs_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/htdemucs/htdemucs_tiny-b10f9334.th")
}

#[tokio::test]
async fn an_imported_htdemucs_serves_separations() {
    let data = tempfile::tempdir().unwrap();
    let out = soundcheck(
        &[
            "models",
            "import",
            demucs_fixture().to_str().unwrap(),
            "--as",
            "htdemucs",
        ],
        data.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("MIT"));
    let src = data.path().join("models/htdemucs");
    let s = TestServer::start_with(Options::default(), |c| {
        crate::util::copy_tree(&src, &c.data_dir.join("models/htdemucs"));
    })
    .await;
    let job = s
        .submit(
            "/v1/separate",
            crate::util::form(crate::util::wav_bytes(1.0), &[("stems", "2")]),
        )
        .await;
    let done = s.wait_job(job["job_id"].as_str().unwrap(), 120).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["model"], "htdemucs");
    let stems = done["result"]["stems"].as_object().unwrap();
    assert_eq!(
        stems.keys().collect::<Vec<_>>(),
        ["vocals", "accompaniment"]
    );
    for url in stems.values() {
        let bytes = s
            .client
            .get(url.as_str().unwrap())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let a = soundcheck::audio::decode::decode_bytes(bytes.to_vec(), Some("wav")).unwrap();
        assert_eq!((a.sample_rate, a.channels.len()), (44_100, 2));
        assert!((a.duration_secs() - 1.0).abs() < 0.01);
    }
    // The dashboard's overview: htdemucs installed and loaded, so no hint to pull it.
    let cfg: serde_json::Value = s
        .client
        .get(s.url("/dashboard/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = cfg["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "htdemucs")
        .unwrap();
    assert_eq!(
        (&row["installed"], &row["loaded"]),
        (&true.into(), &true.into())
    );
    let six = cfg["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "htdemucs_6s")
        .unwrap();
    assert_eq!(six["installed"], false);
    assert!(
        !cfg["hints"].to_string().contains("pull htdemucs"),
        "{}",
        cfg["hints"]
    );
    s.stop().await;
}

/// A bucket serving the tiny checkpoint under the official name: its content does not hash to the
/// name's signature, so the pull is refused before anything is converted.
#[tokio::test]
async fn a_demucs_checkpoint_that_does_not_match_its_name_is_refused() {
    let bytes = std::fs::read(demucs_fixture()).unwrap();
    let hits = Arc::new(Mutex::new(Vec::<String>::new()));
    let h = hits.clone();
    let app = Router::new().route(
        "/demucs/hybrid_transformer/{file}",
        get(move |UrlPath(file): UrlPath<String>| {
            h.lock().unwrap().push(file);
            let b = bytes.clone();
            async move { b }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let data = tempfile::tempdir().unwrap();
    let err = soundcheck::models::pull(
        data.path(),
        "htdemucs",
        &soundcheck::models::PullOptions {
            mirror: Some(url),
            revision: None,
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, soundcheck::models::Error::Checksum { .. }),
        "{err}"
    );
    assert_eq!(*hits.lock().unwrap(), ["955717e8-8726e21a.th"]);
    assert!(soundcheck::models::installed(data.path()).is_empty());
}
