//! Offline commands that run an engine on a file without a server: `analyze`, `master`,
//! `transcribe`, `separate`. Each shows a progress bar on stderr and writes its result.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Context};
use indicatif::{ProgressBar, ProgressStyle};

use crate::audio::{self, Format};
use crate::engines::{analyze, decode_mono, master, separate, transcribe};

/// A progress bar over `0.0..=1.0` that the engines' `progress` callbacks drive.
fn bar(label: &str) -> ProgressBar {
    let pb = ProgressBar::new(1000);
    pb.set_style(
        ProgressStyle::with_template("{msg:12} [{bar:40}] {percent:>3}% {elapsed}")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_message(label.to_string());
    pb
}

fn set(pb: &ProgressBar, p: f32) {
    pb.set_position((p.clamp(0.0, 1.0) * 1000.0) as u64);
}

/// `soundcheck analyze FILE [--json]`.
pub fn analyze(file: &Path, json: bool) -> anyhow::Result<()> {
    let pb = bar("analyzing");
    let decoded = audio::decode_with_progress(file, &|p| set(&pb, p * 0.5))?;
    let report = analyze::full(&decoded, &|p| set(&pb, 0.5 + p * 0.5))?;
    pb.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", analyze::full_table(&report));
    }
    Ok(())
}

/// `soundcheck master FILE -o OUT [--target-lufs N] [--true-peak N]`; the format follows OUT's
/// extension (`.wav` 16-bit, `.flac`, `.mp3`).
pub fn master(
    file: &Path,
    out: &Path,
    target_lufs: f64,
    true_peak_db: f64,
    json: bool,
) -> anyhow::Result<()> {
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("wav");
    let format = Format::parse(if ext == "wav" { "wav16" } else { ext }, None)
        .ok_or_else(|| anyhow!("cannot write .{ext}: use .wav, .flac or .mp3"))?;
    let settings = master::MasterSettings {
        target_lufs,
        true_peak_db,
        ..Default::default()
    };
    let pb = bar("mastering");
    let report = master::master_file(file, out, format, &settings, &|p| set(&pb, p))?;
    pb.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", master::report_table(&report));
    }
    Ok(())
}

/// `soundcheck transcribe FILE -o out.mid [-p name=value …]` with the job's option names.
pub fn transcribe(file: &Path, out: &Path, options: &[String]) -> anyhow::Result<()> {
    let mut fields = BTreeMap::new();
    for o in options {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| anyhow!("option {o:?} is not name=value"))?;
        fields.insert(k.to_string(), v.to_string());
    }
    let opts = transcribe::TranscribeOptions::from_fields(&fields).map_err(|e| anyhow!(e))?;
    let pb = bar("transcribing");
    let samples = decode_mono(file, 22_050).map_err(|e| anyhow!("{e}"))?;
    set(&pb, 0.1);
    let t = transcribe::transcribe(&samples, &opts, &|p| set(&pb, 0.1 + 0.9 * p))?;
    pb.finish_and_clear();
    let midi = t.to_midi_bytes(opts.midi_tempo, opts.multiple_pitch_bends)?;
    std::fs::write(out, midi).with_context(|| format!("writing {}", out.display()))?;
    println!("{} notes written to {}", t.notes.len(), out.display());
    Ok(())
}

/// `soundcheck separate FILE --stems 2|4 -o DIR` (the DSP separator).
pub fn separate(file: &Path, stems: u8, out_dir: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(stems == 2 || stems == 4, "--stems must be 2 or 4");
    let pb = bar("separating");
    let decoded = audio::decode_with_progress(file, &|p| set(&pb, p * 0.1))?;
    let parts =
        separate::dsp::separate(&decoded, stems == 2, &|p| set(&pb, 0.1 + 0.8 * p), &|| {
            false
        })?;
    std::fs::create_dir_all(out_dir)?;
    for (name, stem) in &parts {
        audio::encode(stem, Format::Wav16, &out_dir.join(format!("{name}.wav")))?;
    }
    pb.finish_and_clear();
    for (name, _) in &parts {
        println!("{}", out_dir.join(format!("{name}.wav")).display());
    }
    Ok(())
}
