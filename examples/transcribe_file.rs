//! Transcribes a WAV file with the embedded basic-pitch model and writes its notes as JSON.
//!
//!     cargo run --release --example transcribe_file -- in.wav notes.json
//!
//! The WAV must be mono at 22,050 Hz (16-bit PCM or 32-bit float): resampling and decoding are the
//! server's business, and `scripts/basic_pitch/accuracy.py` writes such files for both soundcheck and the
//! Python reference so they read the same samples. Default options; the JSON is
//! `Transcription::notes_json` (`start`, `end`, `pitch`, `velocity`, `amplitude`, `pitch_bends`).

use soundcheck::engines::transcribe::{transcribe, TranscribeParams};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, output] = args.as_slice() else {
        return Err("usage: transcribe_file IN.wav OUT.json".into());
    };
    let mut reader = hound::WavReader::open(input)?;
    let spec = reader.spec();
    if spec.sample_rate != 22_050 || spec.channels != 1 {
        return Err(format!(
            "{input}: need mono 22050 Hz, got {} channel(s) at {} Hz",
            spec.channels, spec.sample_rate
        )
        .into());
    }
    let samples: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, 16) => reader
            .samples::<i16>()
            .map(|s| s.map(|s| s as f32 / 32768.0))
            .collect::<Result<_, _>>()?,
        (hound::SampleFormat::Float, 32) => reader.samples::<f32>().collect::<Result<_, _>>()?,
        (f, b) => return Err(format!("{input}: unsupported sample format {f:?} {b}-bit").into()),
    };
    let t0 = std::time::Instant::now();
    let t = transcribe(&samples, &TranscribeParams::default(), &|_| {})?;
    eprintln!(
        "{input}: {:.1} s of audio, {} notes in {:.2} s",
        samples.len() as f64 / 22_050.0,
        t.notes.len(),
        t0.elapsed().as_secs_f64()
    );
    std::fs::write(output, serde_json::to_string(&t.notes_json())?)?;
    Ok(())
}
