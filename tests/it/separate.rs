//! HTDemucs parity with PyTorch demucs 4.0.1 on committed fixtures (`tests/fixtures/htdemucs`,
//! written by `scripts/demucs/make_fixtures.py`): the checkpoint is the `.th` file demucs' own
//! `serialize_model` + `save_with_checksum` wrote, loaded through the production path (convert to
//! safetensors + JSON, then `HTDemucs::load`). Each stage is compared on its own, then the whole
//! `separate` run. The measured maximum absolute errors are recorded next to each bound.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use soundcheck::engines::default_device;
use soundcheck::engines::separate::htdemucs::stft::{self, Stft};
use soundcheck::engines::separate::htdemucs::{checkpoint, separate, HTDemucs, SeparateOptions};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/htdemucs")
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("reference.safetensors"), &default_device())
        .unwrap()
}

fn th_file() -> PathBuf {
    std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "th"))
        .expect("a .th fixture")
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The production loader: convert the `.th`, then load the converted files.
fn load_model(dir: &Path) -> HTDemucs {
    let conv = checkpoint::convert_th(&th_file(), dir, "htdemucs_tiny").unwrap();
    HTDemucs::load(&conv.config, &conv.weights, &default_device()).unwrap()
}

#[test]
fn stft_matches_torch() {
    let r = reference();
    let x = r["stft.input"].to_vec2::<f32>().unwrap();
    let want = &r["stft.spec"]; // (C, F, T, 2)
    let stft = Stft::new(4096).unwrap();
    let mut err = 0f32;
    for (c, chan) in x.iter().enumerate() {
        let z = stft.spec(chan).unwrap();
        let w = want.get(c).unwrap();
        assert_eq!((z.bins, z.frames), (w.dim(0).unwrap(), w.dim(1).unwrap()));
        let re = flat(&w.narrow(2, 0, 1).unwrap());
        let im = flat(&w.narrow(2, 1, 1).unwrap());
        err = err
            .max(max_abs_diff(&z.re, &re))
            .max(max_abs_diff(&z.im, &im));
    }
    eprintln!("stft max abs error {err:e}");
    // Measured: 4.8e-7 (values up to 3.7).
    assert!(err < 1e-5, "stft max abs error {err}");
}

#[test]
fn istft_matches_torch() {
    let r = reference();
    let spec = &r["istft.spec"];
    let want = r["istft.output"].to_vec2::<f32>().unwrap();
    let stft = Stft::new(4096).unwrap();
    let mut err = 0f32;
    for (c, w) in want.iter().enumerate() {
        let s = spec.get(c).unwrap();
        let (bins, frames) = (s.dim(0).unwrap(), s.dim(1).unwrap());
        let z = stft::Spectrogram {
            bins,
            frames,
            re: flat(&s.narrow(2, 0, 1).unwrap()),
            im: flat(&s.narrow(2, 1, 1).unwrap()),
        };
        let y = stft.ispec(&z, w.len()).unwrap();
        err = err.max(max_abs_diff(&y, w));
    }
    eprintln!("istft max abs error {err:e}");
    // Measured: 1.2e-6 (values up to 5.4).
    assert!(err < 1e-5, "istft max abs error {err}");
}

#[test]
fn converter_reproduces_the_reference_state_and_kwargs() {
    let dir = tempfile::tempdir().unwrap();
    let conv = checkpoint::convert_th(&th_file(), dir.path(), "htdemucs_tiny").unwrap();
    let ours = candle_core::safetensors::load(&conv.weights, &Device::Cpu).unwrap();
    let theirs =
        candle_core::safetensors::load(fixtures().join("htdemucs_tiny.safetensors"), &Device::Cpu)
            .unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (name, t) in &theirs {
        let o = ours.get(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(o.dtype(), t.dtype(), "{name}");
        assert_eq!(o.dims(), t.dims(), "{name}");
        let (o, t) = (
            o.to_dtype(candle_core::DType::F32).unwrap(),
            t.to_dtype(candle_core::DType::F32).unwrap(),
        );
        assert_eq!(flat(&o), flat(&t), "{name}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&conv.config).unwrap()).unwrap();
    let want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("htdemucs_tiny.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json, want);
    assert!(checkpoint::verify_checksum(&th_file()).unwrap());
}

#[test]
fn corrupted_checkpoint_fails_its_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let name = th_file().file_name().unwrap().to_owned();
    let copy = dir.path().join(&name);
    let mut bytes = std::fs::read(th_file()).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&copy, bytes).unwrap();
    assert!(checkpoint::verify_checksum(&copy).is_err());
    assert!(checkpoint::convert_th(&copy, dir.path(), "x").is_err());
}

#[test]
fn forward_stages_match_torch() {
    let dir = tempfile::tempdir().unwrap();
    let model = load_model(dir.path());
    let r = reference();
    let input = r["fwd.input"].unsqueeze(0).unwrap();
    let mut trace = Vec::new();
    let out = model.forward_traced(&input, Some(&mut trace)).unwrap();
    let mut worst = 0f32;
    assert_eq!(trace.last().map(|(n, _)| n.as_str()), Some("output"));
    assert_eq!(out.dims(), [1, 4, 2, 17640]);
    let mut compared = 0;
    for (name, t) in &trace {
        let Some(want) = r.get(&format!("fwd.{name}")) else {
            continue;
        };
        let got = t.squeeze(0).unwrap();
        assert_eq!(got.dims(), want.dims(), "{name}");
        let err = max_abs_diff(&flat(&got), &flat(want));
        eprintln!("{name:>10}: max abs error {err:e}");
        worst = worst.max(err);
        compared += 1;
    }
    // 4 + 4 encoders, transformer in/out (4), 3 + 3 decoders, output.
    assert_eq!(compared, 19);
    // Measured: 1.4e-6 (transformer output), 8.3e-7 at the model output.
    assert!(worst < 2e-5, "forward stage max abs error {worst}");
}

#[test]
fn transformer_matches_torch_on_recorded_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let model = load_model(dir.path());
    let r = reference();
    let x = r["fwd.xf.in_x"].unsqueeze(0).unwrap();
    let xt = r["fwd.xf.in_xt"].unsqueeze(0).unwrap();
    let (y, yt) = model.transformer().unwrap().forward(&x, &xt).unwrap();
    let err = max_abs_diff(&flat(&y), &flat(&r["fwd.xf.out_x"]))
        .max(max_abs_diff(&flat(&yt), &flat(&r["fwd.xf.out_xt"])));
    eprintln!("transformer max abs error {err:e}");
    // Measured: 1.2e-6 (values up to 3.5).
    assert!(err < 2e-5, "transformer max abs error {err}");
}

#[test]
fn encoder_layers_match_torch_on_recorded_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let model = load_model(dir.path());
    let r = reference();
    let (enc, tenc) = model.encoders();
    let mut err = 0f32;
    for i in 1..enc.len() {
        let xt = r[&format!("fwd.tenc.{}", i - 1)].unsqueeze(0).unwrap();
        let yt = tenc[i].forward(&xt).unwrap();
        err = err.max(max_abs_diff(
            &flat(&yt),
            &flat(&r[&format!("fwd.tenc.{i}")]),
        ));
        // Layer 0's output gets the frequency embedding before layer 1; start from layer 1.
        if i >= 2 {
            let x = r[&format!("fwd.enc.{}", i - 1)].unsqueeze(0).unwrap();
            let y = enc[i].forward(&x).unwrap();
            err = err.max(max_abs_diff(&flat(&y), &flat(&r[&format!("fwd.enc.{i}")])));
        }
    }
    eprintln!("encoder layers max abs error {err:e}");
    // Measured: 1.8e-7.
    assert!(err < 1e-5, "encoder layers max abs error {err}");
}

#[test]
fn separate_matches_demucs_apply_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = load_model(dir.path());
    let r = reference();
    let mix = r["separate.mix"].to_vec2::<f32>().unwrap();
    let want = &r["separate.output"]; // (S, C, L)
    let ticks = std::cell::RefCell::new(Vec::new());
    let opts = SeparateOptions {
        shifts: 0,
        ..SeparateOptions::default()
    };
    let stems = separate(&model, &mix, &opts, &|p| ticks.borrow_mut().push(p)).unwrap();
    let names: Vec<&str> = stems.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["drums", "bass", "other", "vocals"]);
    let mut err = 0f32;
    for (s, (_, stem)) in stems.iter().enumerate() {
        for (c, chan) in stem.iter().enumerate() {
            let w = want
                .get(s)
                .unwrap()
                .get(c)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            err = err.max(max_abs_diff(chan, &w));
        }
    }
    eprintln!("separate max abs error {err:e}");
    // Measured: 3.0e-7 (stems up to 0.36); the target was 1e-4.
    assert!(err < 2e-5, "separate max abs error {err}");
    // 0.8 s in 0.4 s segments with 25% overlap: 3 segments, reported in order.
    assert_eq!(*ticks.borrow(), vec![1.0 / 3.0, 2.0 / 3.0, 1.0]);
}
