//! Offline commands that run an engine on a file without a server: `analyze`, `master`,
//! `transcribe`, `separate`. Each shows a progress bar on stderr and writes its result. Given
//! several files or a directory, each runs on every audio file under one progress bar, then a
//! per-file summary ([`batch`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use indicatif::{ProgressBar, ProgressStyle};

use crate::audio;
use crate::engines::{analyze, decode_mono, master, separate, transcribe, JobParams};

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

/// Extensions the batch mode takes from a directory (what the decoder reads).
const AUDIO_EXTENSIONS: &[&str] = &[
    "wav", "wave", "mp3", "flac", "ogg", "oga", "m4a", "mp4", "aac", "aif", "aiff", "caf", "mkv",
    "webm",
];

/// The inputs a command was given: one plain file is `None` (the single-file form, whose `-o`
/// names the output file); otherwise every file given and each directory's audio files (by
/// extension, sorted, not recursive), for [`batch`].
pub fn batch_inputs(paths: &[PathBuf]) -> anyhow::Result<Option<Vec<PathBuf>>> {
    if let [one] = paths {
        if !one.is_dir() {
            return Ok(None);
        }
    }
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|f| {
                    f.is_file()
                        && f.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                            AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())
                        })
                })
                .collect();
            found.sort();
            anyhow::ensure!(!found.is_empty(), "no audio files in {}", p.display());
            files.extend(found);
        } else {
            anyhow::ensure!(p.is_file(), "no such file: {}", p.display());
            files.push(p.clone());
        }
    }
    Ok(Some(files))
}

/// One file's outcome in a batch: its result as JSON and a one-line summary.
pub type Outcome = anyhow::Result<(serde_json::Value, String)>;

/// The progress callback a batch hands each file's run (the engines want it `Sync`).
pub type Progress<'a> = &'a (dyn Fn(f32) + Sync);

/// Runs `one(file, progress)` on every file under one progress bar (its message the file being
/// worked on), then prints one line per file (`ok` with its summary, or `FAILED` with the error)
/// or, with `json`, an array of `{"file", "result"}` / `{"file", "error"}`. Fails, after every file
/// has had its turn, if any did.
pub fn batch(
    label: &str,
    files: &[PathBuf],
    json: bool,
    one: &dyn Fn(&Path, Progress<'_>) -> Outcome,
) -> anyhow::Result<()> {
    let pb = bar(label);
    pb.set_style(
        ProgressStyle::with_template("{msg:30!} [{bar:40}] {percent:>3}% {elapsed}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let n = files.len() as f32;
    let mut outcomes = Vec::new();
    for (i, file) in files.iter().enumerate() {
        pb.set_message(format!("{}/{} {}", i + 1, files.len(), file.display()));
        let progress = |p: f32| set(&pb, (i as f32 + p.clamp(0.0, 1.0)) / n);
        outcomes.push(one(file, &progress));
    }
    pb.finish_and_clear();
    let failed = outcomes.iter().filter(|o| o.is_err()).count();
    if json {
        // Paths as displayed: a name that is not UTF-8 shows U+FFFD here (serde_json refuses
        // such a path outright), while the file on disk keeps its bytes.
        let all: Vec<serde_json::Value> = files
            .iter()
            .zip(&outcomes)
            .map(|(f, o)| match o {
                Ok((v, _)) => serde_json::json!({ "file": f.display().to_string(), "result": v }),
                Err(e) => {
                    serde_json::json!({ "file": f.display().to_string(), "error": format!("{e:#}") })
                }
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        for (f, o) in files.iter().zip(&outcomes) {
            match o {
                Ok((_, summary)) => println!("ok      {}  {summary}", f.display()),
                Err(e) => println!("FAILED  {}  {e:#}", f.display()),
            }
        }
    }
    anyhow::ensure!(failed == 0, "{failed} of {} files failed", files.len());
    Ok(())
}

/// Where a batch writes one input's output: `dir/<file stem><suffix>`.
/// The stem keeps its bytes, so names that are not UTF-8 neither collide nor change.
fn output_for(dir: &Path, file: &Path, suffix: &str) -> PathBuf {
    let mut name = file
        .file_stem()
        .unwrap_or(std::ffi::OsStr::new("out"))
        .to_os_string();
    name.push(suffix);
    dir.join(name)
}

/// Whether `a` and `b` name the same existing file (through links and `..`).
fn same_file(a: &Path, b: &Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
}

/// Refuses, before anything runs, a batch in which two inputs would write the same output
/// (`a.wav` and `a.flac` both make `a.mid`) or an output would replace its own input (`master
/// DIR -o DIR`): either would silently lose a file.
fn check_outputs(dir: &Path, files: &[PathBuf], suffix: &str) -> anyhow::Result<()> {
    let mut seen: std::collections::HashMap<PathBuf, &Path> = std::collections::HashMap::new();
    for file in files {
        let out = output_for(dir, file, suffix);
        if let Some(first) = seen.insert(out.clone(), file) {
            anyhow::bail!(
                "{} and {} would both write {}: rename one, or run them apart",
                first.display(),
                file.display(),
                out.display()
            );
        }
        // An output that already exists and is the input (an output not written yet is not).
        anyhow::ensure!(
            !same_file(&out, file),
            "{} would be written over its own input; give -o another directory",
            out.display()
        );
    }
    Ok(())
}

/// `soundcheck analyze FILE… [--json]`: one report, or with several files a batch.
pub fn analyze_files(paths: &[PathBuf], json: bool) -> anyhow::Result<()> {
    let Some(files) = batch_inputs(paths)? else {
        return analyze(&paths[0], json);
    };
    batch("analyzing", &files, json, &|file, progress| {
        let decoded = audio::decode_with_progress(file, &|p| progress(p * 0.5))?;
        let report = analyze::full(&decoded, &|p| progress(0.5 + p * 0.5))?;
        let summary = format!(
            "{:.1} BPM, {}, {:.1} LUFS",
            report.rhythm.bpm,
            report.key.name.as_deref().unwrap_or("no key"),
            report.loudness.integrated_lufs
        );
        Ok((serde_json::to_value(&report)?, summary))
    })
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

/// `soundcheck master FILE -o OUT [options]`: the `/v1/master` job on a file. `fields` are the
/// job's own field names (`target_lufs`, `true_peak_db`, `format`, `bitrate`, `eq`, `compress`),
/// checked by the engine's parser, so ranges and messages are the API's. Without `format` it
/// follows OUT's extension (`.wav` 16-bit, `.flac`, `.mp3`); with it, OUT's extension must agree.
pub fn master(
    file: &Path,
    out: &Path,
    mut fields: BTreeMap<String, String>,
    json: bool,
) -> anyhow::Result<()> {
    let ext = out
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !fields.contains_key("format") {
        let format = match ext.as_str() {
            "wav" => "wav16",
            "flac" => "flac",
            "mp3" => "mp3",
            _ => anyhow::bail!(
                "cannot tell the format from {}: use .wav, .flac or .mp3, or --format",
                out.display()
            ),
        };
        fields.insert("format".into(), format.into());
    }
    anyhow::ensure!(
        !same_file(file, out),
        "{} is the input: write the master to another file",
        out.display()
    );
    let params = master::MasterParams::from_fields(&fields).map_err(|e| anyhow!(e))?;
    let format = params.format();
    anyhow::ensure!(
        format.extension() == ext,
        "--format {} writes a .{} file, but {} ends in .{ext}",
        format.name(),
        format.extension(),
        out.display()
    );
    let pb = bar("mastering");
    let report = master::master_file(file, out, format, &params.settings(), &|p| set(&pb, p))?;
    pb.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", master::report_table(&report));
    }
    Ok(())
}

/// `soundcheck master FILE… -o DIR [options]` with several files or a directory: each is
/// mastered into `DIR/<name>.<the format's extension>` (`--format`, default `wav16`).
pub fn master_files(
    paths: &[PathBuf],
    out: &Path,
    fields: BTreeMap<String, String>,
    json: bool,
) -> anyhow::Result<()> {
    let Some(files) = batch_inputs(paths)? else {
        return master(&paths[0], out, fields, json);
    };
    // Checked once, before anything runs.
    let params = master::MasterParams::from_fields(&fields).map_err(|e| anyhow!(e))?;
    let (format, settings) = (params.format(), params.settings());
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let ext = format!(".{}", format.extension());
    check_outputs(out, &files, &ext)?;
    batch("mastering", &files, json, &|file, progress| {
        let dest = output_for(out, file, &ext);
        let report = master::master_file(file, &dest, format, &settings, progress)?;
        let summary = format!(
            "-> {}  {:.1} -> {:.1} LUFS",
            dest.display(),
            report.before.integrated_lufs,
            report.after.integrated_lufs
        );
        let mut v = serde_json::to_value(&report)?;
        v["output"] = serde_json::json!(dest.display().to_string());
        Ok((v, summary))
    })
}

/// `soundcheck transcribe FILE… -o DIR` with several files or a directory: `DIR/<name>.mid`.
pub fn transcribe_files(
    paths: &[PathBuf],
    out: &Path,
    options: &[String],
    json: bool,
) -> anyhow::Result<()> {
    let Some(files) = batch_inputs(paths)? else {
        return transcribe(&paths[0], out, options, json);
    };
    let opts = transcribe_options(options)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    check_outputs(out, &files, ".mid")?;
    batch("transcribing", &files, json, &|file, progress| {
        let dest = output_for(out, file, ".mid");
        let samples = decode_mono(file, 22_050).map_err(|e| anyhow!("{e}"))?;
        progress(0.1);
        let t = transcribe::transcribe(&samples, &opts, &|p| progress(0.1 + 0.9 * p))?;
        let midi = t.to_midi_bytes(opts.midi_tempo, opts.multiple_pitch_bends)?;
        std::fs::write(&dest, midi).with_context(|| format!("writing {}", dest.display()))?;
        let v = serde_json::json!({
            "note_count": t.notes.len(),
            "output": dest.display().to_string(),
        });
        Ok((v, format!("-> {}  {} notes", dest.display(), t.notes.len())))
    })
}

/// The transcription options from `-p name=value`, names checked against the API's.
fn transcribe_options(options: &[String]) -> anyhow::Result<transcribe::TranscribeParams> {
    // Names the API does not take are refused (listing the ones it does), not ignored.
    let (_, doc) = crate::api::router().split_for_parts();
    crate::remote::check_params(&serde_json::to_value(&doc)?, "/v1/transcribe", options)?;
    let mut fields = BTreeMap::new();
    for o in options {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| anyhow!("option {o:?} is not name=value"))?;
        fields.insert(k.to_string(), v.to_string());
    }
    transcribe::TranscribeParams::from_fields(&fields).map_err(|e| anyhow!(e))
}

/// `soundcheck transcribe FILE -o out.mid [-p name=value …]` with the job's option names.
pub fn transcribe(file: &Path, out: &Path, options: &[String], json: bool) -> anyhow::Result<()> {
    let opts = transcribe_options(options)?;
    let pb = bar("transcribing");
    let samples = decode_mono(file, 22_050).map_err(|e| anyhow!("{e}"))?;
    set(&pb, 0.1);
    let t = transcribe::transcribe(&samples, &opts, &|p| set(&pb, 0.1 + 0.9 * p))?;
    pb.finish_and_clear();
    let midi = t.to_midi_bytes(opts.midi_tempo, opts.multiple_pitch_bends)?;
    std::fs::write(out, midi).with_context(|| format!("writing {}", out.display()))?;
    if json {
        let said = serde_json::json!({ "note_count": t.notes.len(), "output": out });
        println!("{}", serde_json::to_string_pretty(&said)?);
    } else {
        println!("{} notes written to {}", t.notes.len(), out.display());
    }
    Ok(())
}

/// `soundcheck separate FILE -o DIR [--stems 2|4] [--format wav16|wav24|float] [--model …]`:
/// the `/v1/separate` job on a file, run by the same engine a server on `data_dir` would use
/// (`auto`: the best installed HTDemucs, else the DSP separator) or the one `model` names, with
/// the job's fields checked by the engine (the API's ranges and messages). Prints each stem's
/// path, or with `json` the job's result with paths in place of URLs.
pub fn separate(
    paths: &[PathBuf],
    fields: &BTreeMap<String, String>,
    model: &str,
    data_dir: &Path,
    out_dir: &Path,
    json: bool,
) -> anyhow::Result<()> {
    use crate::jobs::engine::{Engine, JobContext};
    let installed = crate::models::installed(data_dir);
    let htdemucs = ["htdemucs_ft", "htdemucs", "htdemucs_6s"];
    let id = match model {
        "auto" => htdemucs
            .into_iter()
            .find(|id| installed.iter().any(|m| m.manifest.id == *id))
            .unwrap_or("dsp"),
        other => other,
    };
    let engine: Box<dyn Engine> = if id == "dsp" {
        Box::new(separate::DspSeparateEngine)
    } else {
        let m = installed.iter().find(|m| m.manifest.id == id).ok_or_else(|| {
            if htdemucs.contains(&id) {
                anyhow!(
                    "model {id} is not installed in {}: `soundcheck models pull {id}` installs it",
                    data_dir.display()
                )
            } else {
                anyhow!("--model must be auto, dsp, htdemucs, htdemucs_ft or htdemucs_6s, not {id:?}")
            }
        })?;
        Box::new(
            separate::HtdemucsSeparateEngine::load(&m.dir, id, &crate::engines::default_device())
                .map_err(|e| anyhow!("model {id} in {}: {e}", m.dir.display()))?,
        )
    };
    let params = engine.params(fields).map_err(|e| anyhow!(e))?;
    let batch_files = batch_inputs(paths)?;
    // One input: its stems, with the job's result (paths in place of URLs).
    let run_one = |file: &Path, dir: &Path, progress: Progress<'_>| {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ctx = JobContext {
            input: file,
            params: &params,
            out_dir: dir,
            progress,
            cancelled: &|| false,
        };
        let output = engine.run(&ctx).map_err(|e| anyhow!("{e}"))?;
        let mut result = output.result;
        let mut stems = Vec::new();
        if let Some(all) = result["stems"].as_object_mut() {
            for (_, v) in all.iter_mut() {
                if let Some(name) = v["$file"].as_str() {
                    let path = dir.join(name).display().to_string();
                    stems.push(path.clone());
                    *v = serde_json::json!(path);
                }
            }
        }
        anyhow::Ok((result, stems))
    };
    if let Some(files) = batch_files {
        check_outputs(out_dir, &files, "")?;
        return batch("separating", &files, json, &|file, progress| {
            let dir = output_for(out_dir, file, "");
            let (result, stems) = run_one(file, &dir, progress)?;
            let summary = format!("-> {}  {} stems", dir.display(), stems.len());
            Ok((result, summary))
        });
    }
    let pb = bar("separating");
    let (result, stems) = run_one(&paths[0], out_dir, &|p| set(&pb, p))?;
    pb.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        eprintln!("{}: {} stems", engine.name(), stems.len());
        for p in stems {
            println!("{p}");
        }
    }
    Ok(())
}

/// `soundcheck generate TAGS -o OUT.mp3 [--duration S] [--bpm N] [--key K] [--timesignature N]
/// [--seed N] [--model ID]`: one generation without a server, with the server's defaults, engines
/// and MP3 (44.1 kHz stereo, 192 kbit/s); `.wav` and `.flac` get the engine's audio losslessly,
/// any other extension is refused before anything runs. Prints the resolved parameters, so the result can be
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
    /// Print the resolved parameters and the file as JSON on stdout.
    pub json: bool,
}

pub fn generate(config: &crate::config::Config, a: &GenerateArgs<'_>) -> anyhow::Result<()> {
    use crate::api::generations::GenerationRequest;
    // Read as the API reads a request body, so the ranges and messages are the API's.
    let body = serde_json::json!({
        "tags": a.tags, "duration": a.duration, "bpm": a.bpm, "keyscale": a.key,
        "timesignature": a.timesignature, "seed": a.seed,
    });
    let r = crate::api::JsonBody::<GenerationRequest>::from_value(body)
        .map_err(|e| anyhow!(e.message))?
        .body;
    // The file's format is its extension's, checked before anything is generated.
    let ext = a
        .output
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let lossless = match ext.as_str() {
        "mp3" => None,
        "wav" => Some(audio::Format::Wav16),
        "flac" => Some(audio::Format::Flac16),
        _ => anyhow::bail!(
            "cannot write {}: name it .mp3 (as the API delivers), .wav or .flac",
            a.output.display()
        ),
    };
    let p = r.resolve();
    let mut cfg = config.clone();
    cfg.generator = a.model.to_string();
    let registry = crate::engines::try_registry(&cfg)?;
    let generator = registry
        .default_generator()
        .ok_or_else(|| anyhow!("no generator installed"))?;
    let req = crate::jobs::generator::GenerationInput::new(a.tags, p);
    let p = &req.parameters;
    eprintln!(
        "{}: \"{}\" {} s, {} bpm, {}, timesignature {}, seed {}",
        generator.name(),
        req.tags,
        p.duration,
        p.bpm,
        p.keyscale,
        p.timesignature,
        p.seed
    );
    let pb = bar("generating");
    let audio = generator
        .generate(&req, &|p| set(&pb, p), &|| false)
        .map_err(|e| anyhow!("generation failed: {e}"))?;
    pb.finish_and_clear();
    let secs = match lossless {
        None => crate::jobs::worker::write_mp3_atomically(&audio, a.output)
            .map_err(|e| anyhow!("{e}"))?,
        Some(format) => {
            audio::encode(&audio, format, a.output)?;
            audio.duration_secs()
        }
    };
    if a.json {
        let said = serde_json::json!({
            "model": generator.name(),
            "tags": req.tags,
            "duration": p.duration,
            "bpm": p.bpm,
            "keyscale": p.keyscale,
            "timesignature": p.timesignature,
            "seed": p.seed,
            "output": a.output,
            "seconds": secs,
        });
        println!("{}", serde_json::to_string_pretty(&said)?);
    } else {
        println!("wrote {} ({secs:.1} s)", a.output.display());
    }
    Ok(())
}

/// `soundcheck models list`: the engines a server on this data directory would use (the
/// built-in ones need no weights), then the catalog of downloadable models.
pub fn models_list(config: &crate::config::Config, json: bool) -> anyhow::Result<()> {
    if json {
        let rows = crate::models::rows(&config.data_dir);
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let registry = crate::engines::try_registry(config)?;
    println!("{:<20}  ENGINE (built in, or installed below)", "ENDPOINT");
    for (endpoint, engine) in registry.describe() {
        println!("{endpoint:<20}  {engine}");
    }
    println!();
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
