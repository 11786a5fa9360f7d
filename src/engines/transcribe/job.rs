//! The `/v1/transcribe` job: parameters in, `.mid` + notes JSON/CSV files and the result JSON out.
//! Decoding the upload is not done here: [`TranscribeEngine`] is given a decoder that returns mono
//! 22,050 Hz samples (the `audio` module's job), so this file only needs samples.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};

use super::{shared_model, Error, TranscribeParams};
use crate::engines::JobParams;
use crate::jobs::engine::file_ref;
use crate::jobs::{Engine, EngineError, JobContext, JobKind, JobOutput, Resource};

/// File names written into the job's `out_dir`.
pub const MIDI_FILE: &str = "transcription.mid";
pub const NOTES_JSON_FILE: &str = "notes.json";
pub const NOTES_CSV_FILE: &str = "notes.csv";

impl From<Error> for EngineError {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidInput(m) | Error::InvalidOptions(m) => EngineError::InvalidInput(m),
            Error::Cancelled => EngineError::Cancelled,
            e @ (Error::Model(_) | Error::Midi(_)) => EngineError::Internal(e.to_string()),
        }
    }
}

/// Transcribes decoded samples with the stored parameters, writes the three files into `out_dir` and
/// returns the job result (`{"$file": …}` marks files the worker publishes as URLs).
pub fn run(
    samples_22050: &[f32],
    params: &Value,
    out_dir: &Path,
    progress: &(dyn Fn(f32) + Sync),
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<JobOutput, EngineError> {
    let opts = TranscribeParams::stored(params)?;
    let model = shared_model()?;
    let t = model.transcribe(samples_22050, &opts, progress, cancelled)?;
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(out_dir.join(name), bytes)
            .map_err(|e| EngineError::Internal(format!("writing {name}: {e}")))
    };
    write(
        MIDI_FILE,
        &t.to_midi_bytes(opts.midi_tempo, opts.multiple_pitch_bends)?,
    )?;
    write(
        NOTES_JSON_FILE,
        serde_json::to_string(&t.notes_json())
            .map_err(|e| EngineError::Internal(e.to_string()))?
            .as_bytes(),
    )?;
    write(NOTES_CSV_FILE, t.notes_csv().as_bytes())?;
    Ok(JobOutput {
        result: json!({
            "midi": file_ref(MIDI_FILE),
            "notes_json": file_ref(NOTES_JSON_FILE),
            "notes_csv": file_ref(NOTES_CSV_FILE),
            "note_count": t.notes.len(),
            "duration_s": samples_22050.len() as f64 / 22_050.0,
            "model": "basic-pitch",
            "options": params,
        }),
    })
}

/// Decodes an upload to mono samples at 22,050 Hz (provided by the caller, e.g. `audio::decode` +
/// resample), with errors already mapped to the contract's codes.
pub type Decoder = dyn Fn(&Path) -> Result<Vec<f32>, EngineError> + Send + Sync;

/// `jobs::Engine` for `/v1/transcribe` (basic-pitch).
pub struct TranscribeEngine {
    decode: Arc<Decoder>,
}

impl TranscribeEngine {
    pub fn new(decode: Arc<Decoder>) -> Self {
        Self { decode }
    }
}

impl Engine for TranscribeEngine {
    fn kind(&self) -> JobKind {
        JobKind::Transcribe
    }

    fn name(&self) -> &str {
        "basic-pitch"
    }

    /// Device-bound only when the shared model really is on a GPU.
    fn resource(&self) -> Resource {
        if crate::engines::default_device().is_cpu() {
            Resource::Cpu
        } else {
            Resource::Device
        }
    }

    /// See [`TranscribeParams`].
    fn params(&self, fields: &BTreeMap<String, String>) -> Result<Value, String> {
        TranscribeParams::store(fields)
    }

    fn run(&self, ctx: &JobContext<'_>) -> Result<JobOutput, EngineError> {
        let samples = (self.decode)(ctx.input)?;
        if (ctx.cancelled)() {
            return Err(EngineError::Cancelled);
        }
        run(
            &samples,
            ctx.params,
            ctx.out_dir,
            ctx.progress,
            ctx.cancelled,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_writes_its_files_and_result() {
        let dir = tempfile::tempdir().unwrap();
        let wav = dir.path().join("in.raw");
        std::fs::write(&wav, b"").unwrap();
        let engine = TranscribeEngine::new(Arc::new(|_: &Path| {
            Ok((0..22050)
                .map(|i| 0.5 * (2.0 * std::f32::consts::PI * 220.0 * i as f32 / 22050.0).sin())
                .collect())
        }));
        let fields = BTreeMap::from([("midi_tempo".to_string(), "100".to_string())]);
        let p = engine.params(&fields).unwrap();
        assert_eq!(p["midi_tempo"], 100.0);
        assert!(engine
            .params(&BTreeMap::from([(
                "onset_threshold".to_string(),
                "2".to_string()
            )]))
            .is_err());
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let ctx = JobContext {
            input: &wav,
            params: &p,
            out_dir: &out,
            progress: &|_| {},
            cancelled: &|| false,
        };
        let r = engine.run(&ctx).unwrap().result;
        assert_eq!(r["midi"]["$file"], MIDI_FILE);
        assert_eq!(r["note_count"], 1);
        let notes: Value =
            serde_json::from_slice(&std::fs::read(out.join(NOTES_JSON_FILE)).unwrap()).unwrap();
        assert_eq!(notes[0]["pitch"], 57);
        let midi = std::fs::read(out.join(MIDI_FILE)).unwrap();
        let smf = midly::Smf::parse(&midi).unwrap();
        let tempo = smf.tracks[0].iter().find_map(|e| match e.kind {
            midly::TrackEventKind::Meta(midly::MetaMessage::Tempo(t)) => Some(t.as_int()),
            _ => None,
        });
        assert_eq!(tempo, Some(600_000));
        let csv = std::fs::read_to_string(out.join(NOTES_CSV_FILE)).unwrap();
        assert_eq!(csv.lines().count(), 2);
    }
}
