//! The HTDemucs `/v1/separate` engine on an installed bag: `install_th` on the tiny random-weight
//! fixture (checksums refused, nothing half-written), `load_bag`, and the engine's `run` through a
//! real `JobContext` (decode, resample 22.05 → 44.1 kHz, separate, write WAV stems). With random
//! weights the stems mean nothing musically; the tests check that the engine writes exactly what
//! its own `BagOfModels` computes, and that a weighted bag averages as demucs does.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use soundcheck::audio::{self, Audio, Format, Quality};
use soundcheck::engines::separate::htdemucs::install::{install_th, load_bag, Bag, BAG_FILE};
use soundcheck::engines::separate::htdemucs::{self, HTDemucs, Planar, Stems};
use soundcheck::engines::separate::HtdemucsSeparateEngine;
use soundcheck::jobs::{Engine, EngineError, JobContext};

fn fixture_th() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/htdemucs/htdemucs_tiny-b10f9334.th")
}

/// Names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn max_abs_diff(a: &Planar, b: &Planar) -> f32 {
    assert_eq!(a.len(), b.len(), "channel count");
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len(), "length");
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

fn sum(stems: &[&Planar]) -> Planar {
    let mut acc = stems[0].clone();
    for s in &stems[1..] {
        for (a, c) in acc.iter_mut().zip(s.iter()) {
            for (x, y) in a.iter_mut().zip(c) {
                *x += y;
            }
        }
    }
    acc
}

fn stem<'a>(stems: &'a Stems, name: &str) -> &'a Planar {
    &stems.iter().find(|(n, _)| n == name).unwrap().1
}

/// 0.7 s of stereo at 22.05 kHz: a chord on the left, a pulse train and noise-ish partials on the
/// right, so the channels differ.
fn clip() -> Audio {
    let rate = 22_050;
    let n = (0.7 * rate as f64) as usize;
    let tone = |f: f32, i: usize| (2.0 * std::f32::consts::PI * f * i as f32 / rate as f32).sin();
    let left = (0..n)
        .map(|i| 0.3 * tone(220.0, i) + 0.2 * tone(277.2, i) + 0.1 * tone(329.6, i))
        .collect();
    let right = (0..n)
        .map(|i| {
            let pulse = if i % 5512 < 300 { 0.5 } else { 0.0 };
            pulse * tone(90.0, i) + 0.15 * tone(1234.5, i) + 0.05 * tone(5000.0, i)
        })
        .collect();
    Audio {
        sample_rate: rate,
        channels: vec![left, right],
    }
}

/// The tiny fixture installed as `models/htdemucs` under `root`.
fn install_tiny(root: &Path) -> PathBuf {
    let dir = root.join("models").join("htdemucs");
    install_th(&[fixture_th()], None, None, &dir).unwrap();
    dir
}

struct Run {
    result: Result<Value, EngineError>,
    progress: Vec<f32>,
}

/// Runs the engine on `input` through a real `JobContext`, writing into `out`.
fn run_engine(
    engine: &HtdemucsSeparateEngine,
    input: &Path,
    fields: &[(&str, &str)],
    out: &Path,
    cancel_after: Option<usize>,
) -> Run {
    let fields: BTreeMap<String, String> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let params = engine.params(&fields).unwrap();
    std::fs::create_dir_all(out).unwrap();
    let seen = Mutex::new(Vec::new());
    let checks = AtomicUsize::new(0);
    let ctx = JobContext {
        input,
        params: &params,
        out_dir: out,
        progress: &|p| seen.lock().unwrap().push(p),
        cancelled: &|| cancel_after.is_some_and(|n| checks.fetch_add(1, Ordering::SeqCst) >= n),
    };
    let result = engine.run(&ctx).map(|o| o.result);
    Run {
        result,
        progress: seen.into_inner().unwrap(),
    }
}

#[test]
fn install_th_writes_the_layout_and_refuses_bad_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = install_tiny(tmp.path());
    assert_eq!(
        listing(&dir),
        [BAG_FILE, "htdemucs_tiny.json", "htdemucs_tiny.safetensors"]
    );
    let bag: Bag = serde_json::from_slice(&std::fs::read(dir.join(BAG_FILE)).unwrap()).unwrap();
    assert_eq!(
        bag,
        Bag {
            models: vec!["htdemucs_tiny".into()],
            weights: None,
            segment: None
        }
    );
    let models = tmp.path().join("models");
    // Installing again replaces the directory and leaves no staging or old copy beside it.
    install_th(&[fixture_th()], None, Some(7.8), &dir).unwrap();
    assert_eq!(listing(&models), ["htdemucs"]);
    let bag: Bag = serde_json::from_slice(&std::fs::read(dir.join(BAG_FILE)).unwrap()).unwrap();
    assert_eq!(bag.segment, Some(7.8));

    // One flipped byte: the name's sha256 prefix no longer matches, the install is refused.
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let corrupt = src.join("renamed_tiny-b10f9334.th");
    let mut bytes = std::fs::read(fixture_th()).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&corrupt, &bytes).unwrap();
    let bad = models.join("htdemucs_6s");
    let err = install_th(&[fixture_th(), corrupt], None, None, &bad).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("refusing to install") && msg.contains("does not match"),
        "{msg}"
    );
    assert!(!bad.exists());
    assert_eq!(listing(&models), ["htdemucs"]);

    // A file without a checksum that is not a checkpoint fails after staging began: still nothing.
    let junk = src.join("junk.th");
    std::fs::write(&junk, b"not a zip").unwrap();
    assert!(install_th(&[fixture_th(), junk], None, None, &bad).is_err());
    assert!(!bad.exists());
    // Weights of the wrong shape are refused the same way.
    let err = install_th(&[fixture_th()], Some(vec![vec![1.0; 3]]), None, &bad).unwrap_err();
    assert!(err.to_string().contains("weights"), "{err}");
    assert!(!bad.exists());
    assert_eq!(listing(&models), ["htdemucs"]);

    // What was installed loads.
    let bag = load_bag(&dir, &Device::Cpu).unwrap();
    assert_eq!(bag.sources(), ["drums", "bass", "other", "vocals"]);
}

#[test]
fn engine_writes_model_rate_stems_equal_to_its_bag() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = install_tiny(tmp.path());
    let engine = HtdemucsSeparateEngine::load(&dir, "htdemucs", &Device::Cpu).unwrap();
    assert_eq!(engine.name(), "htdemucs");
    assert_eq!(engine.sample_rate(), 44_100);
    let input = tmp.path().join("in.wav");
    let clip = clip();
    audio::encode(&clip, Format::WavFloat, &input).unwrap();
    let frames = 2 * clip.frames();

    // What the engine's own bag gives for the input, read and resampled the way the engine does.
    let mix = audio::resample(&audio::decode(&input).unwrap(), 44_100, Quality::High).unwrap();
    assert_eq!(mix.frames(), frames);
    let want = engine
        .bag()
        .separate(&mix.channels, engine.options(), &|_| {})
        .unwrap();
    let whole = sum(&want.iter().map(|(_, s)| s).collect::<Vec<_>>());

    let read = |out: &Path, result: &Value, name: &str| -> Planar {
        let file = result["stems"][name]["$file"].as_str().unwrap();
        assert_eq!(file, format!("{name}.wav"));
        let a = audio::decode(&out.join(file)).unwrap();
        assert_eq!(a.sample_rate, 44_100, "{name}");
        assert_eq!(a.channels.len(), 2, "{name}");
        assert_eq!(a.frames(), frames, "{name}");
        a.channels
    };

    // Four stems, float WAV so the comparison is exact to f32.
    let out4 = tmp.path().join("out4");
    let run = run_engine(
        &engine,
        &input,
        &[("stems", "4"), ("format", "float")],
        &out4,
        None,
    );
    let result = run.result.unwrap();
    assert_eq!(result["model"], "htdemucs");
    assert_eq!(result["sample_rate"], 44_100);
    assert_eq!(result["format"], "float");
    assert!((result["duration"].as_f64().unwrap() - 0.7).abs() < 1e-3);
    let names: Vec<&String> = result["stems"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["drums", "bass", "other", "vocals"]);
    assert_eq!(listing(&out4).len(), 4);
    let mut got = Vec::new();
    for (name, w) in &want {
        let g = read(&out4, &result, name);
        let err = max_abs_diff(&g, w);
        assert!(err < 1e-6, "{name}: {err}");
        got.push(g);
    }
    let err = max_abs_diff(&sum(&got.iter().collect::<Vec<_>>()), &whole);
    assert!(err < 1e-5, "sum of stems: {err}");
    assert!(
        run.progress.windows(2).all(|w| w[0] <= w[1]),
        "{:?}",
        run.progress
    );
    assert_eq!(run.progress.last(), Some(&1.0));

    // Two stems: vocals, and everything else summed.
    let out2 = tmp.path().join("out2");
    let result = run_engine(
        &engine,
        &input,
        &[("stems", "2"), ("format", "float")],
        &out2,
        None,
    )
    .result
    .unwrap();
    let names: Vec<&String> = result["stems"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["vocals", "accompaniment"]);
    let vocals = read(&out2, &result, "vocals");
    let acc = read(&out2, &result, "accompaniment");
    let err = max_abs_diff(&vocals, stem(&want, "vocals"));
    assert!(err < 1e-6, "vocals: {err}");
    let rest = sum(&[
        stem(&want, "drums"),
        stem(&want, "bass"),
        stem(&want, "other"),
    ]);
    let err = max_abs_diff(&acc, &rest);
    assert!(err < 1e-5, "accompaniment: {err}");
    let err = max_abs_diff(&sum(&[&vocals, &acc]), &whole);
    assert!(err < 1e-5, "sum of two stems: {err}");

    // The default 16-bit WAV: same stems within its quantisation.
    let out16 = tmp.path().join("out16");
    let result = run_engine(&engine, &input, &[], &out16, None)
        .result
        .unwrap();
    assert_eq!(result["format"], "wav16");
    let drums = read(&out16, &result, "drums");
    let peak = stem(&want, "drums")
        .iter()
        .flatten()
        .fold(0f32, |m, v| m.max(v.abs()));
    eprintln!("drums peak {peak}");
    if peak < 1.0 {
        let err = max_abs_diff(&drums, stem(&want, "drums"));
        assert!(err < 1e-4, "wav16 drums: {err}");
    }

    // Shutdown: checked before separating and between segments; the run stops and reports
    // Cancelled (the job is re-queued, not failed). Here it turns true after the first segment.
    let cancelled = run_engine(&engine, &input, &[], &tmp.path().join("outc"), Some(2));
    assert!(matches!(cancelled.result, Err(EngineError::Cancelled)));
    let last = *cancelled.progress.last().unwrap();
    assert!(last > 0.1 && last < 0.95, "{:?}", cancelled.progress);
    let at_once = run_engine(&engine, &input, &[], &tmp.path().join("outc0"), Some(0));
    assert!(matches!(at_once.result, Err(EngineError::Cancelled)));

    // The DSP engine's fields, the same validation.
    let bad: BTreeMap<String, String> = [("stems".to_string(), "6".to_string())].into();
    assert!(engine.params(&bad).is_err());
}

/// Every float tensor of `path` scaled by `factor`, so a copy of the model computes differently.
fn perturb(path: &Path, factor: f64) {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    let scaled: std::collections::HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, t)| {
            let t = if matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16) {
                (t * factor).unwrap()
            } else {
                t
            };
            (k, t)
        })
        .collect();
    candle_core::safetensors::save(&scaled, path).unwrap();
}

#[test]
fn a_weighted_bag_is_the_weighted_average_of_its_models() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let (a, b) = (src.join("first.th"), src.join("second.th"));
    std::fs::copy(fixture_th(), &a).unwrap();
    std::fs::copy(fixture_th(), &b).unwrap();
    let weights = vec![vec![1.0, 0.0, 0.5, 0.25], vec![0.0, 1.0, 0.5, 0.75]];
    let dir = tmp.path().join("models").join("pair");
    install_th(&[a, b], Some(weights.clone()), None, &dir).unwrap();
    let bag: Bag = serde_json::from_slice(&std::fs::read(dir.join(BAG_FILE)).unwrap()).unwrap();
    assert_eq!(bag.models, ["first", "second"]);
    assert_eq!(bag.weights.as_ref(), Some(&weights));
    // Make the second copy a different model, so the weighting is visible.
    perturb(&dir.join("second.safetensors"), 1.1);

    let bag = load_bag(&dir, &Device::Cpu).unwrap();
    let mix: Planar = clip().channels;
    let opts = htdemucs::SeparateOptions {
        shifts: 0,
        ..Default::default()
    };
    let ticks = RefCell::new(Vec::new());
    let got = bag
        .separate(&mix, &opts, &|p| ticks.borrow_mut().push(p))
        .unwrap();
    let one = |name: &str| {
        let m = HTDemucs::load(
            &dir.join(format!("{name}.json")),
            &dir.join(format!("{name}.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        htdemucs::separate(&m, &mix, &opts, &|_| {}).unwrap()
    };
    let (ya, yb) = (one("first"), one("second"));
    let mut apart = 0f32;
    for (k, (name, g)) in got.iter().enumerate() {
        let (wa, wb) = (weights[0][k], weights[1][k]);
        let (sa, sb) = (&ya[k].1, &yb[k].1);
        apart = apart.max(max_abs_diff(sa, sb));
        let want: Planar = sa
            .iter()
            .zip(sb)
            .map(|(ca, cb)| {
                ca.iter()
                    .zip(cb)
                    .map(|(x, y)| (wa * x + wb * y) / (wa + wb))
                    .collect()
            })
            .collect();
        let err = max_abs_diff(g, &want);
        assert!(err < 1e-5, "{name}: {err}");
    }
    eprintln!("the two models' stems differ by up to {apart:e}");
    assert!(apart > 1e-3, "the two models should differ ({apart})");
    let ticks = ticks.into_inner();
    assert_eq!(ticks.last(), Some(&1.0));
}
