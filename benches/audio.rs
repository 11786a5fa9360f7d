//! The audio layer on a 3-minute stereo 44.1 kHz track (drums and chords from the accuracy tests'
//! seeded generator): decode per format, the synchronous analysis endpoints end to end over HTTP
//! (upload, decode, analyse, answer), full analysis, loudness and mastering. Best of three, wall
//! and on-CPU time. Run: `cargo bench --bench audio`; `scripts/audio/bench.sh` runs it beside the
//! reference tools (ffmpeg, librosa, pyloudnorm) on the same files and prints the ratios.
//!
//! `SOUNDCHECK_BENCH_OUT=DIR` keeps the track files there for the reference run.

#[path = "../tests/it/synth.rs"]
#[allow(dead_code)]
mod synth;

use std::time::Instant;

use soundcheck::audio::{self, Audio, Format};
use soundcheck::config::{Config, DataArgs};
use soundcheck::engines::analyze::{self, key::Key};
use soundcheck::engines::master::{self, MasterSettings};
use tokio_util::sync::CancellationToken;

/// Drums at 123 BPM under chord progressions in E minor, `secs` long.
fn track(secs: f64) -> Audio {
    let mut rng = synth::Rng(0x5EED_0006);
    let mut track = synth::rhythm_clip(&mut rng, 123.0, secs, true);
    let (mut pos, mut variant) = (0, 0);
    while pos < track.frames() {
        let key = Key {
            tonic: 4,
            mode: analyze::key::Mode::Minor,
        };
        let c = synth::chord_clip(&mut rng, key, variant);
        variant += 1;
        for (t, ch) in track.channels.iter_mut().zip(&c.channels) {
            for (a, b) in t[pos..].iter_mut().zip(ch) {
                *a = (*a + b) * 0.5;
            }
        }
        pos += c.frames();
    }
    track
}

/// On-CPU time of this process's threads (Linux schedstat of each task), seconds: what the work
/// costs even when a shared machine is busy and wall time includes waiting for a core. All threads,
/// since decoding and analysis run on rayon's pool (whose threads live as long as the process).
fn cpu_secs() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    let ns: f64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum();
    ns / 1e9
}

/// Best of three: (wall, cpu) seconds.
fn best_of_3(mut f: impl FnMut()) -> (f64, f64) {
    let (mut wall, mut cpu) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        let (t, c) = (Instant::now(), cpu_secs());
        f();
        wall = wall.min(t.elapsed().as_secs_f64());
        cpu = cpu.min(cpu_secs() - c);
    }
    (wall, cpu)
}

fn row(label: &str, secs: f64, (wall, cpu): (f64, f64)) {
    let cpu_col = if cpu.is_nan() {
        "        —".to_string()
    } else {
        format!("{:>9.1}", cpu * 1000.0)
    };
    println!(
        "{label:<38}{:>9.1} ms wall{cpu_col} ms cpu{:>8.0}× realtime (wall)",
        wall * 1000.0,
        secs / wall
    );
}

fn main() {
    let dir = match std::env::var("SOUNDCHECK_BENCH_OUT") {
        Ok(d) => std::path::PathBuf::from(d),
        Err(_) => std::env::temp_dir().join("soundcheck-bench"),
    };
    std::fs::create_dir_all(&dir).unwrap();
    let track = track(180.0);
    let secs = track.duration_secs();
    println!("3-minute stereo 44.1 kHz track ({secs:.1} s)");

    for format in [Format::Wav16, Format::Flac16, Format::Mp3 { kbps: 320 }] {
        let path = dir.join(format!("track.{}", format.extension()));
        audio::encode(&track, format, &path).unwrap();
        row(
            &format!("decode {}", format.name()),
            secs,
            best_of_3(|| {
                audio::decode(&path).unwrap();
            }),
        );
    }
    let wav = dir.join("track.wav");
    row(
        "decode wav + tempo/key",
        secs,
        best_of_3(|| {
            analyze::tempo_key(&audio::decode(&wav).unwrap()).unwrap();
        }),
    );
    row(
        "decode wav + features",
        secs,
        best_of_3(|| {
            analyze::features(&audio::decode(&wav).unwrap()).unwrap();
        }),
    );
    row(
        "full analysis (decoded)",
        secs,
        best_of_3(|| {
            analyze::full(&track, &|_| {}).unwrap();
        }),
    );
    row(
        "loudness: I, LRA, true peak (decoded)",
        secs,
        best_of_3(|| {
            audio::measure(&track, audio::Measure::Full).unwrap();
        }),
    );
    let out = dir.join("mastered.wav");
    row(
        "master to wav16, verified (decoded)",
        secs,
        best_of_3(|| {
            // The chain shapes its input in place, so each run takes a copy (about 1% of
            // the time).
            master::master_audio_to_file(
                track.clone(),
                &out,
                Format::Wav16,
                &MasterSettings::default(),
                &|_| {},
                &|| false,
            )
            .unwrap();
        }),
    );

    // The synchronous endpoints as a client sees them: a 31 MB WAV uploaded over loopback.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let data = tempfile::tempdir().unwrap();
        let config = Config::for_data_dir(&DataArgs {
            data_dir: Some(data.path().to_path_buf()),
        })
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let registry = soundcheck::engines::registry(&config);
        let (store, secrets) = soundcheck::app::open_store(&config).await.unwrap();
        let media = soundcheck::app::open_media(&config, &store).await.unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(soundcheck::app::run(
            config,
            store,
            secrets.clone(),
            media,
            registry,
            listener,
            shutdown.clone(),
        ));
        let client = reqwest::Client::new();
        let bytes = std::fs::read(&wav).unwrap();
        for (path, mp3) in [
            ("/v1/analyze", false),
            ("/v1/features", false),
            ("/v1/metadata", false),
            ("/v1/analyze", true),
        ] {
            let (body, name) = if mp3 {
                (std::fs::read(dir.join("track.mp3")).unwrap(), "track.mp3")
            } else {
                (bytes.clone(), "track.wav")
            };
            let mut best = f64::MAX;
            let mut answer = serde_json::Value::Null;
            for _ in 0..3 {
                let form = reqwest::multipart::Form::new().part(
                    "audio",
                    reqwest::multipart::Part::bytes(body.clone()).file_name(name),
                );
                let t = Instant::now();
                let r = client
                    .post(format!("{base}{path}"))
                    .bearer_auth(&secrets.tl_key)
                    .multipart(form)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                answer = r.json().await.unwrap();
                best = best.min(t.elapsed().as_secs_f64());
            }
            row(
                &format!("POST {path} ({name}, HTTP)"),
                secs,
                (best, f64::NAN),
            );
            if path == "/v1/analyze" && !mp3 {
                println!("    → {} BPM, {}", answer["bpm"], answer["key"]);
            }
        }
        shutdown.cancel();
        let _ = server.await;
    });
}
