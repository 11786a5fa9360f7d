//! Transcription speed: basic-pitch in candle on a long track built from a shipped fixture clip.
//! Run: `cargo bench --bench transcribe` (BENCH_SECONDS sets the length, default 180). Prints
//! × realtime for the whole transcription (model and note extraction); the Python reference is timed by
//! `scripts/basic_pitch/bench_reference.py` in the same session (see BENCHMARKS.md).

use soundcheck::engines::default_device;
use soundcheck::engines::transcribe::{BasicPitch, TranscribeParams};

fn main() {
    let secs: usize = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180);
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/basic_pitch/piano.wav"
    );
    let mut r = hound::WavReader::open(path).unwrap();
    let clip: Vec<f32> = r
        .samples::<i16>()
        .map(|s| s.unwrap() as f32 / 32768.0)
        .collect();
    let audio: Vec<f32> = clip.iter().copied().cycle().take(secs * 22_050).collect();
    let device = default_device();
    let model = BasicPitch::load(&device).unwrap();
    let t0 = std::time::Instant::now();
    let out = model
        .transcribe(&audio, &TranscribeParams::default(), &|_| {}, &|| false)
        .unwrap();
    let total = t0.elapsed().as_secs_f64();
    println!(
        "basic-pitch (candle, {}): {secs} s of audio in {total:.2} s = {:.1}x realtime, {} notes",
        if device.is_cuda() { "GPU" } else { "CPU" },
        secs as f64 / total,
        out.notes.len()
    );
}
