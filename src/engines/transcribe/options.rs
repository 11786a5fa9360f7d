//! `/v1/transcribe` parameters: defaults from `basic_pitch.inference.predict`, parsed from multipart text
//! fields, validated, and stored with the job as JSON (see [`JobParams`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::notes::{self, NoteParams};
use crate::engines::JobParams;

/// Nyquist frequency of the model's 22,050 Hz input: no note can lie above it.
const MAX_HZ: f64 = 11_025.0;

/// The fields of `POST /v1/transcribe` beside the `audio` file: basic-pitch's options, each of
/// which may be left out.
// The type every use of transcription options shares: see `JobParams`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct TranscribeParams {
    /// Minimum onset activation for a note to start (`0..=1`; reference 0.5).
    #[schema(minimum = 0, maximum = 1)]
    pub onset_threshold: f64,
    /// Minimum note activation for a note to continue (`0..=1`; reference 0.3).
    #[schema(minimum = 0, maximum = 1)]
    pub frame_threshold: f64,
    /// Notes shorter than this are dropped (ms; reference 127.70, i.e. 11 frames).
    #[schema(minimum = 0, maximum = 60000)]
    pub min_note_ms: f64,
    /// Ignore pitches below this frequency (Hz; below `max_hz`).
    #[schema(minimum = 1, maximum = 11025)]
    pub min_hz: Option<f64>,
    /// Ignore pitches at or above this frequency (Hz; above `min_hz`).
    #[schema(minimum = 1, maximum = 11025)]
    pub max_hz: Option<f64>,
    /// Also recover notes without a detected onset from the remaining activations (reference on).
    pub melodia_trick: bool,
    /// Estimate pitch bends from the contour output (reference on).
    pub pitch_bends: bool,
    /// Put each pitch on its own MIDI track/channel so overlapping notes keep their bends (reference
    /// off: bends of overlapping notes are dropped from the MIDI file).
    pub multiple_pitch_bends: bool,
    /// Tempo written to the MIDI file (BPM; reference 120). Note times are in seconds regardless.
    #[schema(minimum = 4, maximum = 1000)]
    pub midi_tempo: f64,
}

impl Default for TranscribeParams {
    fn default() -> Self {
        Self {
            onset_threshold: 0.5,
            frame_threshold: 0.3,
            min_note_ms: 127.70,
            min_hz: None,
            max_hz: None,
            melodia_trick: true,
            pitch_bends: true,
            multiple_pitch_bends: false,
            midi_tempo: 120.0,
        }
    }
}

fn parse_f64(name: &str, v: &str, lo: f64, hi: f64) -> Result<f64, String> {
    let x: f64 = v
        .trim()
        .parse()
        .map_err(|_| format!("`{name}` must be a number, got {v:?}"))?;
    if !x.is_finite() || x < lo || x > hi {
        return Err(format!("`{name}` must be between {lo} and {hi}, got {v}"));
    }
    Ok(x)
}

fn parse_bool(name: &str, v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("`{name}` must be true or false, got {v:?}")),
    }
}

impl JobParams for TranscribeParams {
    /// Parses the multipart text fields; absent or empty fields keep their defaults, unknown fields are
    /// ignored. `Err` is a message for a `400 invalid_request`.
    fn from_fields(fields: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut o = Self::default();
        let get = |k: &str| {
            fields
                .get(k)
                .map(|v| v.as_str())
                .filter(|v| !v.trim().is_empty())
        };
        if let Some(v) = get("onset_threshold") {
            o.onset_threshold = parse_f64("onset_threshold", v, 0.0, 1.0)?;
        }
        if let Some(v) = get("frame_threshold") {
            o.frame_threshold = parse_f64("frame_threshold", v, 0.0, 1.0)?;
        }
        if let Some(v) = get("min_note_ms") {
            o.min_note_ms = parse_f64("min_note_ms", v, 0.0, 60_000.0)?;
        }
        if let Some(v) = get("min_hz") {
            o.min_hz = Some(parse_f64("min_hz", v, 1.0, MAX_HZ)?);
        }
        if let Some(v) = get("max_hz") {
            o.max_hz = Some(parse_f64("max_hz", v, 1.0, MAX_HZ)?);
        }
        if let Some(v) = get("melodia_trick") {
            o.melodia_trick = parse_bool("melodia_trick", v)?;
        }
        if let Some(v) = get("pitch_bends") {
            o.pitch_bends = parse_bool("pitch_bends", v)?;
        }
        if let Some(v) = get("multiple_pitch_bends") {
            o.multiple_pitch_bends = parse_bool("multiple_pitch_bends", v)?;
        }
        if let Some(v) = get("midi_tempo") {
            // MIDI stores µs per quarter note in 24 bits: at least 3.58 BPM.
            o.midi_tempo = parse_f64("midi_tempo", v, 4.0, 1000.0)?;
        }
        o.validate()?;
        Ok(o)
    }

    /// Checks values set programmatically or read back from JSON.
    fn validate(&self) -> Result<(), String> {
        let in_range = |x: f64, lo: f64, hi: f64| x.is_finite() && x >= lo && x <= hi;
        if !in_range(self.onset_threshold, 0.0, 1.0) {
            return Err("`onset_threshold` must be between 0 and 1".into());
        }
        if !in_range(self.frame_threshold, 0.0, 1.0) {
            return Err("`frame_threshold` must be between 0 and 1".into());
        }
        if !in_range(self.min_note_ms, 0.0, 60_000.0) {
            return Err("`min_note_ms` must be between 0 and 60000".into());
        }
        if !in_range(self.midi_tempo, 4.0, 1000.0) {
            return Err("`midi_tempo` must be between 4 and 1000".into());
        }
        for (name, v) in [("min_hz", self.min_hz), ("max_hz", self.max_hz)] {
            if let Some(v) = v {
                if !in_range(v, 1.0, MAX_HZ) {
                    return Err(format!("`{name}` must be between 1 and {MAX_HZ}"));
                }
            }
        }
        if let (Some(lo), Some(hi)) = (self.min_hz, self.max_hz) {
            if lo >= hi {
                return Err(format!("`min_hz` ({lo}) must be below `max_hz` ({hi})"));
            }
        }
        Ok(())
    }
}

impl TranscribeParams {
    /// The note-extraction parameters these options mean.
    pub fn note_params(&self) -> NoteParams {
        NoteParams {
            onset_threshold: self.onset_threshold,
            frame_threshold: self.frame_threshold,
            min_note_frames: notes::min_note_frames(self.min_note_ms),
            min_hz: self.min_hz,
            max_hz: self.max_hz,
            melodia_trick: self.melodia_trick,
            infer_onsets: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_reference_ones() {
        let o = TranscribeParams::from_fields(&fields(&[("webhook_url", "http://x")])).unwrap();
        assert_eq!(o, TranscribeParams::default());
        assert_eq!(o.onset_threshold, 0.5);
        assert_eq!(o.frame_threshold, 0.3);
        assert_eq!(o.min_note_ms, 127.7);
        assert_eq!(o.midi_tempo, 120.0);
        assert!(o.melodia_trick && o.pitch_bends && !o.multiple_pitch_bends);
        assert_eq!(o.note_params().min_note_frames, 11);
    }

    #[test]
    fn values_are_parsed() {
        let o = TranscribeParams::from_fields(&fields(&[
            ("onset_threshold", "0.6"),
            ("frame_threshold", " 0.25 "),
            ("min_note_ms", "58"),
            ("min_hz", "100"),
            ("max_hz", "2000"),
            ("melodia_trick", "false"),
            ("pitch_bends", "off"),
            ("multiple_pitch_bends", "1"),
            ("midi_tempo", "90"),
            ("max_hz_unused", ""),
        ]))
        .unwrap();
        assert_eq!(o.onset_threshold, 0.6);
        assert_eq!(o.frame_threshold, 0.25);
        assert_eq!(o.note_params().min_note_frames, 5);
        assert_eq!((o.min_hz, o.max_hz), (Some(100.0), Some(2000.0)));
        assert!(!o.melodia_trick && !o.pitch_bends && o.multiple_pitch_bends);
        assert_eq!(o.midi_tempo, 90.0);
        let json = serde_json::to_value(&o).unwrap();
        let back: TranscribeParams = serde_json::from_value(json).unwrap();
        assert_eq!(back, o);
    }

    #[test]
    fn bad_values_are_rejected_with_the_field_name() {
        for (k, v) in [
            ("onset_threshold", "1.5"),
            ("onset_threshold", "abc"),
            ("frame_threshold", "-0.1"),
            ("frame_threshold", "NaN"),
            ("min_note_ms", "-1"),
            ("min_hz", "0"),
            ("max_hz", "20000"),
            ("pitch_bends", "maybe"),
            ("midi_tempo", "0"),
            ("midi_tempo", "inf"),
        ] {
            let err = TranscribeParams::from_fields(&fields(&[(k, v)])).unwrap_err();
            assert!(err.contains(k), "{k}={v}: {err}");
        }
        let err = TranscribeParams::from_fields(&fields(&[("min_hz", "500"), ("max_hz", "400")]))
            .unwrap_err();
        assert!(err.contains("min_hz"), "{err}");
    }
}
