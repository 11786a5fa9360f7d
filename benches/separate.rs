//! Stem separation speed and peak memory: the full-size HTDemucs (the official `htdemucs`
//! configuration, 42.0 M parameters) with random weights — no download — beside PyTorch demucs on the
//! same checkpoint and the same samples.
//!
//! `scripts/demucs/bench_reference.py` writes both into `SEPBENCH_DIR` (default `target/sepbench`):
//! `htdemucs_full-<sig>.th` (saved by demucs' own `serialize_model` + `save_with_checksum`),
//! `mix_30s.wav` (16-bit stereo noise) and, after timing PyTorch, its stems as `out_30s.npy`. This
//! bench installs the `.th` through the production path (`install_th`, then `load_bag`) and measures,
//! each in a child process of its own so that the peak RSS (`VmHWM`) is that run's alone:
//!
//! - `30s`: `apply_model(shifts=0, split, overlap 0.25)` on the decoded WAV, what the reference
//!   times, with the engine's segments at once; the stems are then checked against PyTorch's;
//! - `600s`: the `/v1/separate` engine end to end on a 10-minute stereo WAV (decode, separate with
//!   the engine's options, write four 16-bit stems), what a server job does.
//!
//! Run: `scripts/demucs/bench.sh` (both sides back to back, with the ratios), or
//! `cargo bench --bench separate` once the reference has written its files. `SEPBENCH_RUNS` picks
//! the runs (default `30s,600s`); `SEPBENCH_MIX` another input file in the directory for the `30s`
//! run (for profiling), `SEPBENCH_PARALLEL` its segments computed at once (default: the engine's).
//! Prints one JSON line per run.
//!
//! `SEPBENCH_RANDOM=1` needs no reference: the same configuration
//! (`Config::htdemucs_official`) is built with random weights (`engines::random`) on the
//! models' device (`engines::default_device()`: the GPU in a `cuda` build), and the `30s` input is
//! this bench's own noise. Its speed is the real model's; its stems are noise, so nothing is
//! compared. This is what the GPU check (`scripts/gpu/check.sh`) runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device};
use serde_json::{json, Value};
use soundcheck::audio;
use soundcheck::engines::separate::htdemucs::install::{install_th, load_bag};
use soundcheck::engines::separate::htdemucs::{
    apply_model, BagOfModels, Config, HTDemucs, SeparateOptions,
};
use soundcheck::engines::separate::HtdemucsSeparateEngine;
use soundcheck::jobs::{Engine, JobContext};

/// `VmHWM` (peak resident set) and `VmRSS` of this process from /proc, in MB.
fn memory_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// CPU seconds (user + system) this process has used, from /proc.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn bench_dir() -> PathBuf {
    match std::env::var_os("SEPBENCH_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sepbench"),
    }
}

/// The reference's checkpoint installed as a bag under `dir/installed` (once).
fn installed(dir: &Path) -> PathBuf {
    let out = dir.join("installed");
    if !out.join("bag.json").is_file() {
        let th = std::fs::read_dir(dir)
            .expect("SEPBENCH_DIR: run scripts/demucs/bench_reference.py first")
            .map(|e| e.unwrap().path())
            .find(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.starts_with("htdemucs_full-") && name.ends_with(".th")
            })
            .expect("no htdemucs_full-*.th: run scripts/demucs/bench_reference.py first");
        install_th(&[th], None, None, &out).unwrap();
    }
    out
}

/// `SEPBENCH_RANDOM=1`: the full-size model with random weights, not the reference's checkpoint.
fn random() -> bool {
    std::env::var("SEPBENCH_RANDOM").is_ok_and(|v| v == "1")
}

/// The engine the runs time: the reference's checkpoint through the production install path on
/// the CPU, or (random) the same configuration with random weights on the models' device.
fn engine(dir: &Path) -> HtdemucsSeparateEngine {
    if random() {
        let device = soundcheck::engines::default_device();
        let vb = soundcheck::engines::random::random_weights(DType::F32, &device);
        let model = HTDemucs::new(Config::htdemucs_official(), vb).unwrap();
        let bag = BagOfModels::new(vec![model], None).unwrap();
        HtdemucsSeparateEngine::from_bag("htdemucs", bag).unwrap()
    } else {
        HtdemucsSeparateEngine::from_bag(
            "htdemucs",
            load_bag(&installed(dir), &Device::Cpu).unwrap(),
        )
        .unwrap()
    }
}

/// On a GPU, one untimed segment first: the first call pays for loading kernels and setting up
/// the libraries, which would otherwise weigh on a 30 s run. (The CPU has nothing to warm.)
fn warm_up(engine: &HtdemucsSeparateEngine, mix: &[Vec<f32>]) {
    let model = &engine.bag().models()[0];
    if model.device().is_cpu() {
        return;
    }
    let second: Vec<Vec<f32>> = mix
        .iter()
        .map(|c| c[..c.len().min(44_100)].to_vec())
        .collect();
    apply_model(model, &second, &SeparateOptions::default(), &|_| {}).unwrap();
}

/// The device the runs' models are on, for the report.
fn device_name(engine: &HtdemucsSeparateEngine) -> String {
    format!("{:?}", engine.bag().models()[0].device().location())
}

/// `seconds` of stereo noise at 44.1 kHz, 16-bit, written once (a simple LCG, so no two
/// channels or minutes repeat).
fn long_mix(dir: &Path, seconds: usize) -> PathBuf {
    let path = dir.join(format!("mix_{seconds}s.wav"));
    if path.is_file() {
        return path;
    }
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 44_100,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..seconds * 44_100 * 2 {
        // Sum of four uniforms: roughly Gaussian, about 0.1 rms.
        let mut v = 0.0f32;
        for _ in 0..4 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            v += (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        }
        w.write_sample((v * 0.173 * 32768.0).round() as i16)
            .unwrap();
    }
    w.finalize().unwrap();
    path
}

/// The child of run `30s`: what the reference times, then a comparison with its stems.
fn run_apply(dir: &Path) -> Value {
    let engine = engine(dir);
    let model = &engine.bag().models()[0];
    let name = std::env::var("SEPBENCH_MIX").unwrap_or_else(|_| "mix_30s.wav".into());
    if random() && name == "mix_30s.wav" {
        long_mix(dir, 30);
    }
    let mix = audio::decode(&dir.join(&name)).unwrap();
    warm_up(&engine, &mix.channels);
    let opts = SeparateOptions {
        shifts: 0,
        parallel: std::env::var("SEPBENCH_PARALLEL")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(engine.options().parallel),
        ..SeparateOptions::default()
    };
    let (t0, c0) = (Instant::now(), cpu_seconds());
    let out = apply_model(model, &mix.channels, &opts, &|_| {}).unwrap();
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
    let (peak, _) = memory_mb();
    let mut report = json!({
        "impl": "soundcheck",
        "run": "30s",
        "weights": if random() { "random" } else { "reference checkpoint" },
        "device": device_name(&engine),
        "threads": candle_core::utils::get_num_threads(),
        "parallel_segments": opts.parallel,
        "audio_s": mix.duration_secs(),
        "wall_s": wall,
        "x_realtime": mix.duration_secs() / wall,
        "cpu_s": cpu,
        "peak_rss_mb": peak,
    });
    // PyTorch's stems for the same input, if the reference saved them (same weights only).
    let stem = name.trim_start_matches("mix_").trim_end_matches(".wav");
    let npy = dir.join(format!("out_{stem}.npy"));
    if npy.is_file() && !random() {
        let want = candle_core::Tensor::read_npy(&npy).unwrap();
        let want = want.to_vec3::<f32>().unwrap();
        let mut err = 0f32;
        for (s, w) in out.iter().zip(&want) {
            for (c, wc) in s.iter().zip(w) {
                for (a, b) in c.iter().zip(wc) {
                    err = err.max((a - b).abs());
                }
            }
        }
        report["max_abs_diff_vs_pytorch"] = json!(err);
    }
    report
}

/// The child of run `600s`: the server's separation job on a 10-minute upload.
fn run_engine(dir: &Path) -> Value {
    let input = long_mix(dir, 600);
    let engine = engine(dir);
    warm_up(
        &engine,
        &audio::decode(&long_mix(dir, 30)).unwrap().channels,
    );
    let out = tempfile::tempdir().unwrap();
    let params = json!({"stems": 4, "format": "wav16"});
    let ctx = JobContext {
        input: &input,
        params: &params,
        out_dir: out.path(),
        progress: &|_| {},
        cancelled: &|| false,
    };
    let (t0, c0) = (Instant::now(), cpu_seconds());
    let result = engine.run(&ctx).unwrap().result;
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
    let (peak, _) = memory_mb();
    json!({
        "impl": "soundcheck",
        "run": "600s",
        "path": "engine (decode, separate, write 4 wav16 stems)",
        "weights": if random() { "random" } else { "reference checkpoint" },
        "device": device_name(&engine),
        "shifts": engine.options().shifts,
        "parallel_segments": engine.options().parallel,
        "threads": candle_core::utils::get_num_threads(),
        "audio_s": result["duration"],
        "wall_s": wall,
        "x_realtime": result["duration"].as_f64().unwrap_or(0.0) / wall,
        "cpu_s": cpu,
        "peak_rss_mb": peak,
    })
}

fn main() {
    let dir = bench_dir();
    if let Ok(run) = std::env::var("SEPBENCH_CHILD") {
        let report = match run.as_str() {
            "30s" => run_apply(&dir),
            "600s" => run_engine(&dir),
            other => panic!("unknown run {other}"),
        };
        println!("{report}");
        return;
    }
    if random() {
        std::fs::create_dir_all(&dir).unwrap();
    } else {
        installed(&dir);
    }
    let runs = std::env::var("SEPBENCH_RUNS").unwrap_or_else(|_| "30s,600s".into());
    for run in runs.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        if run == "600s" {
            long_mix(&dir, 600);
        }
        let out = Command::new(std::env::current_exe().unwrap())
            .env("SEPBENCH_CHILD", run)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "run {run} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}
