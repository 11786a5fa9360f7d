//! Audio-to-MIDI transcription (`/v1/transcribe`): Spotify's basic-pitch (ICASSP 2022) ported to candle.
//!
//! This module owns the whole path from mono 22,050 Hz samples to notes and files:
//! - [`model`]: the network (harmonic CQT front end, contour / note / onset heads) on one batch of windows;
//!   [`cpu`]: its CPU fast path (packing, products and fused output passes over plain slices);
//! - here: the reference's windowing (43,844-sample windows overlapping by 30 frames) and stitching
//!   (`basic_pitch/inference.py`: `get_audio_input`, `unwrap_output`), the loader of the shipped weights;
//! - [`notes`]: note extraction (`note_creation.py`), [`midi`]: the `.mid` writer, [`options`]: parameters;
//! - [`job`]: the `/v1/transcribe` job's files and result JSON.
//!
//! The weights (`models/basic_pitch/basic_pitch.safetensors`, Apache-2.0, converted from the `basic-pitch`
//! PyPI package by `scripts/basic_pitch/convert.py`) are embedded in the binary: no download, no files.

pub mod cpu;
pub mod job;
pub mod midi;
pub mod model;
pub mod notes;
pub mod options;

use std::path::Path;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde_json::{json, Value};

use crate::engines::JobParams;

pub use model::{BasicPitchModel, Config};
pub use options::TranscribeParams;

/// The converted ICASSP 2022 checkpoint, built into the binary.
pub static WEIGHTS: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/basic_pitch/basic_pitch.safetensors"
));

/// Windows are overlapped by this many frames and half of it is dropped on each side when stitching.
const N_OVERLAPPING_FRAMES: usize = 30;
/// `ANNOTATIONS_FPS` = 22050 // 256: the reference's (integer) frame rate used to trim the output.
const ANNOTATIONS_FPS: usize = 86;
/// Windows run through the network at once. One: each layer's product is already large (thousands of
/// rows), and one window's buffers (≤ 16 MB) stay below glibc's mmap threshold, so they are reused
/// instead of being mapped, faulted in and unmapped again for every batch.
const WINDOWS_PER_BATCH: usize = 1;

/// Why a transcription failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The samples cannot be transcribed (non-finite values); the caller's input, not retryable.
    #[error("invalid audio: {0}")]
    InvalidInput(String),
    /// The options are out of range; the caller's input.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The weights could not be loaded or a tensor op failed: our side.
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
    /// Writing the MIDI bytes failed: our side.
    #[error("midi: {0}")]
    Midi(#[from] std::io::Error),
    /// The caller's cancel check returned true between two windows.
    #[error("cancelled")]
    Cancelled,
}

/// The stitched posteriorgrams of a whole file, row-major `[n_frames, bins]`, one frame per 256 samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelOutput {
    /// Frames, `floor(n_samples · 86 / 22050)` as the reference trims them.
    pub n_frames: usize,
    /// Pitch salience, 264 bins of 1/3 semitone from A0.
    pub contour: Vec<f32>,
    /// Note activity, 88 bins (MIDI 21..=108).
    pub note: Vec<f32>,
    /// Note onsets, 88 bins.
    pub onset: Vec<f32>,
}

/// One transcribed note.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Note {
    /// Start time, seconds (the reference's frame times, see [`notes::frame_times`]).
    pub start: f64,
    /// End time, seconds.
    pub end: f64,
    /// Start frame in [`ModelOutput`].
    pub start_frame: usize,
    /// End frame in [`ModelOutput`].
    pub end_frame: usize,
    /// MIDI note number, 21..=108.
    pub pitch: u8,
    /// Mean note activation over the note, `0..=1`; MIDI velocity is `round(127 · amplitude)`.
    pub amplitude: f32,
    /// Pitch offset per frame of the note, in 1/3 semitones (−25..=25); `None` when pitch bends are off.
    pub pitch_bends: Option<Vec<i32>>,
}

impl Note {
    /// MIDI velocity as basic-pitch writes it (`int(np.round(127 * amplitude))`).
    pub fn velocity(&self) -> u8 {
        (127.0f32 * self.amplitude)
            .round_ties_even()
            .clamp(0.0, 127.0) as u8
    }
}

/// A finished transcription: the notes, and the model outputs they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcription {
    pub notes: Vec<Note>,
    pub output: ModelOutput,
}

impl Transcription {
    /// A standard MIDI file of the notes (see [`midi::notes_to_midi`]).
    pub fn to_midi_bytes(
        &self,
        midi_tempo: f64,
        multiple_pitch_bends: bool,
    ) -> Result<Vec<u8>, Error> {
        Ok(midi::notes_to_midi(
            &self.notes,
            midi_tempo,
            multiple_pitch_bends,
        )?)
    }

    /// `[{"start", "end", "pitch", "velocity", "amplitude", "pitch_bends"}]`, times in seconds, bends in
    /// 1/3 semitones per model frame (null when off).
    pub fn notes_json(&self) -> Value {
        Value::Array(
            self.notes
                .iter()
                .map(|n| {
                    json!({
                        "start": n.start,
                        "end": n.end,
                        "pitch": n.pitch,
                        "velocity": n.velocity(),
                        "amplitude": n.amplitude,
                        "pitch_bends": n.pitch_bends,
                    })
                })
                .collect(),
        )
    }

    /// CSV with header `start,end,pitch,velocity,pitch_bends`; bends are space-separated in one column.
    pub fn notes_csv(&self) -> String {
        let mut s = String::from("start,end,pitch,velocity,pitch_bends\n");
        for n in &self.notes {
            let bends = n
                .pitch_bends
                .as_ref()
                .map(|b| {
                    b.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            s.push_str(&format!(
                "{},{},{},{},{}\n",
                n.start,
                n.end,
                n.pitch,
                n.velocity(),
                bends
            ));
        }
        s
    }
}

/// The loaded model plus the reference's inference procedure around it.
#[derive(Debug, Clone)]
pub struct BasicPitch {
    model: BasicPitchModel,
}

impl BasicPitch {
    /// Loads the weights built into the binary.
    pub fn load(device: &Device) -> Result<Self, Error> {
        Self::from_safetensors_bytes(WEIGHTS, device)
    }

    /// Loads converted weights from safetensors bytes.
    pub fn from_safetensors_bytes(bytes: &[u8], device: &Device) -> Result<Self, Error> {
        let vb = VarBuilder::from_slice_safetensors(bytes, DType::F32, device)?;
        Ok(Self {
            model: BasicPitchModel::new(&Config::icassp_2022(), vb)?,
        })
    }

    /// Loads converted weights from a safetensors file (e.g. one installed beside the binary).
    pub fn from_file(path: &Path, device: &Device) -> Result<Self, Error> {
        let bytes = std::fs::read(path)
            .map_err(|e| candle_core::Error::Msg(format!("reading {}: {e}", path.display())))?;
        Self::from_safetensors_bytes(&bytes, device)
    }

    pub fn model(&self) -> &BasicPitchModel {
        &self.model
    }

    /// Runs the network over the whole file as `basic_pitch.inference.run_inference` does: 3,840 zeros
    /// (half the overlap) are prepended, windows of 43,844 samples start every 36,164 samples (zero-padded
    /// at the end), 15 frames are cut from each side of every window's 172, and the concatenation is
    /// trimmed to `floor(n · 86 / 22050)` frames. Windows whose frames would all be trimmed are skipped.
    /// `progress` gets the fraction of windows done.
    pub fn predict(
        &self,
        samples: &[f32],
        progress: &dyn Fn(f32),
        cancelled: &dyn Fn() -> bool,
    ) -> Result<ModelOutput, Error> {
        if let Some(i) = samples.iter().position(|x| !x.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "sample {i} is not a finite number"
            )));
        }
        let cfg = self.model.config();
        let (win, frames_per_win) = (cfg.window_samples, cfg.window_frames);
        let (nc, nn) = (cfg.n_contour_bins, cfg.n_note_bins);
        let overlap_len = N_OVERLAPPING_FRAMES * cfg.hop;
        let hop_size = win - overlap_len;
        let lead = overlap_len / 2;
        let olap = N_OVERLAPPING_FRAMES / 2;
        let keep = frames_per_win - 2 * olap;

        let n_frames = (samples.len() as f64 * (ANNOTATIONS_FPS as f64 / cfg.sample_rate as f64))
            .floor() as usize;
        let mut out = ModelOutput {
            n_frames,
            contour: Vec::with_capacity(n_frames * nc),
            note: Vec::with_capacity(n_frames * nn),
            onset: Vec::with_capacity(n_frames * nn),
        };
        let n_windows = n_frames.div_ceil(keep);
        let device = self.model.device().clone();
        let mut done = 0;
        while done < n_windows {
            if cancelled() {
                return Err(Error::Cancelled);
            }
            let batch = WINDOWS_PER_BATCH.min(n_windows - done);
            let mut audio = vec![0f32; batch * win];
            for b in 0..batch {
                // Window start in the zero-led signal, then in `samples`.
                let start = (done + b) * hop_size;
                let dst = &mut audio[b * win..(b + 1) * win];
                for (j, d) in dst.iter_mut().enumerate() {
                    let i = start + j;
                    if i >= lead && i - lead < samples.len() {
                        *d = samples[i - lead];
                    }
                }
            }
            let x = Tensor::from_vec(audio, (batch, win), &device)?;
            let y = self.model.forward(&x)?;
            let rows =
                |t: &Tensor| -> Result<Vec<f32>, Error> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
            let (c, nt, on) = (rows(&y.contour)?, rows(&y.note)?, rows(&y.onset)?);
            for b in 0..batch {
                let have = out.note.len() / nn;
                let take = keep.min(n_frames - have);
                let f0 = b * frames_per_win + olap;
                out.contour.extend_from_slice(&c[f0 * nc..(f0 + take) * nc]);
                out.note.extend_from_slice(&nt[f0 * nn..(f0 + take) * nn]);
                out.onset.extend_from_slice(&on[f0 * nn..(f0 + take) * nn]);
            }
            done += batch;
            progress(done as f32 / n_windows as f32);
        }
        Ok(out)
    }

    /// Model + note extraction + pitch bends, as `basic_pitch.inference.predict`.
    pub fn transcribe(
        &self,
        samples_22050: &[f32],
        opts: &TranscribeParams,
        progress: &dyn Fn(f32),
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Transcription, Error> {
        opts.validate().map_err(Error::InvalidOptions)?;
        let output = self.predict(samples_22050, &|p| progress(0.95 * p), cancelled)?;
        let notes = notes_from_output(&output, opts, self.model.config());
        progress(1.0);
        Ok(Transcription { notes, output })
    }
}

/// Notes from model outputs (`model_output_to_notes` without the MIDI part).
pub fn notes_from_output(output: &ModelOutput, opts: &TranscribeParams, cfg: &Config) -> Vec<Note> {
    let frame_notes = notes::output_to_notes_polyphonic(
        output.note.clone(),
        output.onset.clone(),
        cfg.n_note_bins,
        &opts.note_params(),
    );
    let times = notes::frame_times(output.n_frames);
    frame_notes
        .into_iter()
        .map(|n| Note {
            start: times[n.start],
            end: times[n.end],
            start_frame: n.start,
            end_frame: n.end,
            pitch: n.pitch,
            amplitude: n.amplitude,
            pitch_bends: opts
                .pitch_bends
                .then(|| notes::pitch_bends(&output.contour, cfg.n_contour_bins, &n)),
        })
        .collect()
}

/// The process-wide model, loaded from the embedded weights on first use.
pub fn shared_model() -> Result<&'static BasicPitch, Error> {
    static MODEL: OnceLock<Result<BasicPitch, String>> = OnceLock::new();
    MODEL
        .get_or_init(|| BasicPitch::load(&super::default_device()).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::Model(candle_core::Error::Msg(e.clone())))
}

/// Transcribes mono `f32` samples at 22,050 Hz with the shared model. Empty or very short audio gives no
/// notes; `progress` receives `0.0..=1.0` as windows complete.
pub fn transcribe(
    samples_22050: &[f32],
    opts: &TranscribeParams,
    progress: &dyn Fn(f32),
) -> Result<Transcription, Error> {
    shared_model()?.transcribe(samples_22050, opts, progress, &|| false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f32, secs: f32) -> Vec<f32> {
        let n = (secs * 22050.0) as usize;
        (0..n)
            .map(|i| 0.5 * (2.0 * std::f32::consts::PI * freq * i as f32 / 22050.0).sin())
            .collect()
    }

    #[test]
    fn empty_and_short_audio_give_no_notes() {
        let opts = TranscribeParams::default();
        for n in [0usize, 1, 100, 256, 2000] {
            let t = transcribe(&vec![0.1; n], &opts, &|_| {}).unwrap();
            assert!(t.notes.is_empty(), "{n} samples");
            assert_eq!(t.output.n_frames, n * 86 / 22050);
            assert_eq!(t.output.note.len(), t.output.n_frames * 88);
            assert_eq!(t.output.contour.len(), t.output.n_frames * 264);
        }
    }

    #[test]
    fn non_finite_samples_are_rejected() {
        let mut x = sine(440.0, 0.5);
        x[100] = f32::NAN;
        let err = transcribe(&x, &TranscribeParams::default(), &|_| {}).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    }

    #[test]
    fn a_sine_becomes_one_note_at_its_pitch() {
        let x = sine(440.0, 1.0);
        let last = std::sync::Mutex::new(0f32);
        let t = transcribe(&x, &TranscribeParams::default(), &|p| {
            *last.lock().unwrap() = p;
        })
        .unwrap();
        assert_eq!(*last.lock().unwrap(), 1.0);
        assert_eq!(t.notes.len(), 1, "{:?}", t.notes);
        let n = &t.notes[0];
        assert_eq!(n.pitch, 69);
        assert!(n.start < 0.1 && n.end > 0.8, "{n:?}");
        let csv = t.notes_csv();
        assert!(csv.starts_with("start,end,pitch,velocity,pitch_bends\n"));
        assert_eq!(csv.lines().count(), 2);
        assert_eq!(t.notes_json()[0]["pitch"], 69);
        let midi = t.to_midi_bytes(120.0, false).unwrap();
        let smf = midly::Smf::parse(&midi).unwrap();
        assert_eq!(smf.tracks.len(), 2);
    }

    #[test]
    fn cancellation_stops_between_windows() {
        let m = shared_model().unwrap();
        let err = m
            .transcribe(
                &sine(440.0, 1.0),
                &TranscribeParams::default(),
                &|_| {},
                &|| true,
            )
            .unwrap_err();
        assert!(matches!(err, Error::Cancelled));
    }
}
