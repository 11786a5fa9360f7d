//! MusicGen speed: the full-size musicgen-small configuration (24 layers, width 1024, 16 heads, 2048 codes;
//! T5-base; EnCodec 32 kHz) with random weights — no download — generating with the published settings
//! (guidance 3.0 so batch 2, top-k 250, temperature 1). Prints decoder steps per second (one step = one
//! frame of 4 codes, as transformers counts `max_new_tokens`) and the EnCodec decode time.
//! Run: `cargo bench --bench musicgen` (BENCH_FRAMES sets the frames, default 100 = 2 s of audio). The
//! PyTorch reference on the same configuration: `scripts/musicgen/bench_reference.py` (see BENCHMARKS.md).
//! Measured on the shared 2-core x86-64 VM (load ≈ 2), same session, 100 frames: candle 7.86 steps/s
//! (0.183 CPU-s/step), EnCodec 2 s in 0.85 s; transformers 4.57.1 / torch 2.5.1: 4.86 steps/s with 2 threads
//! (0.407 CPU-s/step), 4.59 with 1, EnCodec 3.13 s — 1.6× the steps/s, 1.7× end to end.

use std::time::Instant;

use candle_core::DType;
use soundcheck::engines::default_device;
use soundcheck::engines::musicgen::generate::{generate_codes, total_steps};
use soundcheck::engines::musicgen::loader::{random_weights, read_tokenizer};
use soundcheck::engines::musicgen::{Config, GenerationConfig, MusicGen};

/// CPU seconds (user + system) this process has used, from /proc (0 where unavailable): on a shared
/// machine the wall clock mostly measures the neighbours, CPU time measures the work.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // fields after the parenthesised command name; utime and stime are the 12th and 13th of those
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn main() {
    let frames: usize = std::env::var("BENCH_FRAMES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let device = default_device();
    let cfg = Config::musicgen_small();
    let tok_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/musicgen/model");
    let tokenizer = read_tokenizer(std::path::Path::new(tok_dir)).unwrap();
    let t0 = Instant::now();
    let mg = MusicGen::from_parts(
        "musicgen-small".into(),
        &cfg,
        GenerationConfig::published(2048),
        tokenizer,
        random_weights(DType::F32, &device),
    )
    .unwrap();
    println!(
        "musicgen-small (random weights) built in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let model = mg.model();
    let text = "lofi chill, piano, 80 bpm, A minor";
    let ids = mg.tokenize(text).unwrap();

    // warm-up: allocations, thread pool
    let mut warm = mg.options(0.0, 1);
    warm.frames = 8;
    let states = model.encode_text(&ids).unwrap();
    generate_codes(model, &states, &warm, &mut |_| {}, &|| false).unwrap();

    let mut opts = mg.options(0.0, 42);
    opts.frames = frames;
    let steps = total_steps(&opts, cfg.decoder.num_codebooks);
    let t0 = Instant::now();
    let states = model.encode_text(&ids).unwrap();
    let t_text = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let c1 = cpu_seconds();
    let codes = generate_codes(model, &states, &opts, &mut |_| {}, &|| false).unwrap();
    let t_gen = t1.elapsed().as_secs_f64();
    let c_gen = cpu_seconds() - c1;
    let t2 = Instant::now();
    let audio = model.decode_audio(&codes).unwrap();
    let t_dec = t2.elapsed().as_secs_f64();
    let secs = audio.len() as f64 / cfg.audio_encoder.sampling_rate as f64;
    println!(
        "candle {}: text {t_text:.3} s; {steps} decoder steps in {t_gen:.2} s = {:.2} steps/s \
         ({:.3} CPU-s/step; guidance batch 2); EnCodec decode of {secs:.1} s audio in {t_dec:.2} s; \
         total {:.2} s",
        if device.is_cuda() { "GPU" } else { "CPU" },
        steps as f64 / t_gen,
        c_gen / steps as f64,
        t_text + t_gen + t_dec
    );
}
