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

/// `soundcheck generate TAGS -o OUT.mp3 [--duration S] [--bpm N] [--key K] [--timesignature N]
/// [--seed N] [--model ID]`: one generation without a server, with the server's defaults, engines
/// and MP3 (44.1 kHz stereo, 192 kbit/s). Prints the resolved parameters, so the result can be
/// reproduced with `--seed`.
pub struct GenerateArgs<'a> {
    pub tags: &'a str,
    pub duration: Option<u32>,
    pub bpm: Option<u32>,
    pub key: Option<&'a str>,
    pub timesignature: Option<u32>,
    pub seed: Option<u64>,
    pub model: &'a str,
    pub output: &'a Path,
}

pub fn generate(config: &crate::config::Config, a: &GenerateArgs<'_>) -> anyhow::Result<()> {
    use crate::api::generations::{parse_keyscale, resolve_parameters};
    let range = |name: &str, v: Option<u64>, lo: u64, hi: u64| match v {
        Some(x) if !(lo..=hi).contains(&x) => Err(anyhow!("--{name} must be {lo} to {hi}")),
        _ => Ok(()),
    };
    range("duration", a.duration.map(u64::from), 1, 600)?;
    range("bpm", a.bpm.map(u64::from), 30, 300)?;
    range("timesignature", a.timesignature.map(u64::from), 2, 12)?;
    range("seed", a.seed, 0, u32::MAX as u64)?;
    anyhow::ensure!(!a.tags.trim().is_empty(), "tags must not be empty");
    let key = a
        .key
        .map(parse_keyscale)
        .transpose()
        .map_err(|e| anyhow!(e))?;
    let p = resolve_parameters(a.tags, a.duration, a.bpm, key, a.timesignature, a.seed);
    let mut cfg = config.clone();
    cfg.generator = a.model.to_string();
    let registry = crate::engines::try_registry(&cfg)?;
    let generator = registry
        .default_generator()
        .ok_or_else(|| anyhow!("no generator installed"))?;
    let req = crate::jobs::generator::GenerationRequest {
        tags: a.tags.to_string(),
        duration: p.duration,
        bpm: p.bpm,
        keyscale: p.keyscale.clone(),
        timesignature: p.timesignature,
        seed: p.seed,
    };
    eprintln!(
        "{}: \"{}\" {} s, {} bpm, {}, {}/x, seed {}",
        generator.name(),
        req.tags,
        req.duration,
        req.bpm,
        req.keyscale,
        req.timesignature,
        req.seed
    );
    let pb = bar("generating");
    let audio = generator
        .generate(&req, &|p| set(&pb, p), &|| false)
        .map_err(|e| anyhow!("generation failed: {e}"))?;
    pb.finish_and_clear();
    let secs =
        crate::jobs::worker::write_mp3_atomically(&audio, a.output).map_err(|e| anyhow!("{e}"))?;
    println!("wrote {} ({secs:.1} s)", a.output.display());
    Ok(())
}

/// `soundcheck models list`.
pub fn models_list(config: &crate::config::Config) -> anyhow::Result<()> {
    print!("{}", crate::models::list_table(&config.data_dir));
    println!(
        "models directory: {}",
        crate::models::models_dir(&config.data_dir).display()
    );
    Ok(())
}

/// `soundcheck models pull ID [--mirror URL] [--revision REV]`.
pub fn models_pull(
    config: &crate::config::Config,
    id: &str,
    opts: &crate::models::PullOptions,
) -> anyhow::Result<()> {
    let entry = crate::models::catalog(id)
        .ok_or_else(|| anyhow!(crate::models::Error::Unknown(id.to_string())))?;
    println!("{id}: {}", entry.description);
    println!("licence of these weights: {}", entry.licence);
    let rt = tokio::runtime::Runtime::new()?;
    let inst = rt.block_on(crate::models::pull(&config.data_dir, id, opts))?;
    println!(
        "installed {id} ({} MB) in {}",
        inst.manifest.bytes.div_ceil(1 << 20),
        inst.dir.display()
    );
    Ok(())
}

/// `soundcheck models import PATH [--as ID]`.
pub fn models_import(
    config: &crate::config::Config,
    path: &Path,
    id: Option<&str>,
) -> anyhow::Result<()> {
    let inst = crate::models::import(&config.data_dir, path, id)?;
    if let Some(l) = &inst.manifest.licence {
        println!("licence of these weights: {l}");
    }
    println!(
        "installed {} ({} MB) in {}",
        inst.manifest.id,
        inst.manifest.bytes.div_ceil(1 << 20),
        inst.dir.display()
    );
    Ok(())
}
