//! From posteriorgrams to notes: a line-by-line port of basic-pitch's `note_creation.py`
//! (`output_to_notes_polyphonic`, `get_infered_onsets`, `constrain_frequency`, the "melodia trick",
//! `get_pitch_bends`, `model_frames_to_time`). Pure functions over row-major `[frames, bins]` slices.
//!
//! The reference computes in float64 on the model's float32 outputs; so does this port, so thresholds cut
//! at the same places. Its quirks are kept on purpose (documented where they happen) so that the notes
//! match the Python package's.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// MIDI pitch of note bin 0 (A0).
pub const MIDI_OFFSET: u8 = 21;
/// Last note bin (C8).
const MAX_FREQ_IDX: usize = 87;
/// Frames a note may stay below the frame threshold before it is ended.
const ENERGY_TOL: isize = 11;
/// Pitch-bend search range around a note's centre, in contour bins (1/3 semitone).
const N_BINS_TOLERANCE: usize = 25;
const CONTOUR_BINS_PER_SEMITONE: f64 = 3.0;
const FFT_HOP: usize = 256;
const SAMPLE_RATE: usize = 22_050;
const ANNOT_N_FRAMES: usize = 172;
const AUDIO_N_SAMPLES: usize = 43_844;

/// Note-extraction parameters in model units (see `TranscribeParams` for the user-facing ones).
#[derive(Debug, Clone, PartialEq)]
pub struct NoteParams {
    /// Minimum onset activation for a note to start.
    pub onset_threshold: f64,
    /// Minimum frame activation for a note to continue.
    pub frame_threshold: f64,
    /// Notes must be longer than this many frames.
    pub min_note_frames: usize,
    /// Activations below this frequency are ignored.
    pub min_hz: Option<f64>,
    /// Activations at or above this frequency are ignored.
    pub max_hz: Option<f64>,
    /// Also add notes from the frame activations left after onset-based notes.
    pub melodia_trick: bool,
    /// Add onsets where frame activations jump (the reference always does).
    pub infer_onsets: bool,
}

/// A note in frame units, as `output_to_notes_polyphonic` returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameNote {
    /// First frame (inclusive).
    pub start: usize,
    /// End frame (exclusive for the amplitude mean; the note's end time is this frame's time).
    pub end: usize,
    /// MIDI pitch.
    pub pitch: u8,
    /// Mean note activation over the note, `0..=1`.
    pub amplitude: f32,
}

/// `minimum_note_length` (ms) → frames, as `predict()` converts it.
pub fn min_note_frames(min_note_ms: f64) -> usize {
    let frames = (min_note_ms / 1000.0 * (SAMPLE_RATE as f64 / FFT_HOP as f64)).round_ties_even();
    if frames.is_finite() && frames > 0.0 {
        frames as usize
    } else {
        0
    }
}

/// librosa's `hz_to_midi`.
pub fn hz_to_midi(hz: f64) -> f64 {
    12.0 * (hz.log2() - 440f64.log2()) + 69.0
}

/// librosa's `midi_to_hz`.
pub fn midi_to_hz(midi: f64) -> f64 {
    440.0 * 2f64.powf((midi - 69.0) / 12.0)
}

/// Python's `a[:, idx:]` / `a[:, :idx]` start/stop index for a possibly negative `idx` on an axis of `n`.
fn py_index(idx: i64, n: usize) -> usize {
    let n = n as i64;
    let i = if idx < 0 { idx + n } else { idx };
    i.clamp(0, n) as usize
}

/// `constrain_frequency`: zero activations at or above `max_hz` and below `min_hz` (in place).
/// Note bins are MIDI pitches − 21; a bound converts with `round(hz_to_midi(hz) − 21)` and, as in the
/// reference (numpy slicing), a negative index counts from the top.
pub fn constrain_frequency(
    onsets: &mut [f32],
    frames: &mut [f32],
    n_bins: usize,
    max_hz: Option<f64>,
    min_hz: Option<f64>,
) {
    let zero = |m: &mut [f32], lo: usize, hi: usize| {
        for row in m.chunks_exact_mut(n_bins) {
            row[lo..hi].fill(0.0);
        }
    };
    if let Some(hz) = max_hz {
        let idx = (hz_to_midi(hz) - MIDI_OFFSET as f64).round_ties_even() as i64;
        let lo = py_index(idx, n_bins);
        zero(onsets, lo, n_bins);
        zero(frames, lo, n_bins);
    }
    if let Some(hz) = min_hz {
        let idx = (hz_to_midi(hz) - MIDI_OFFSET as f64).round_ties_even() as i64;
        let hi = py_index(idx, n_bins);
        zero(onsets, 0, hi);
        zero(frames, 0, hi);
    }
}

/// `get_infered_onsets`: the element-wise max of the onsets and the (rescaled) positive jumps of the frame
/// activations over 1 and 2 frames. When the frames never rise, the reference divides 0 by 0 and every
/// onset becomes NaN (so no onset-based note is found); that is reproduced.
pub fn infer_onsets(onsets: &[f32], frames: &[f32], n_bins: usize) -> Vec<f64> {
    const N_DIFF: usize = 2;
    let n_frames = frames.len() / n_bins;
    let mut diff = vec![0f64; frames.len()];
    for t in N_DIFF..n_frames {
        for f in 0..n_bins {
            let cur = frames[t * n_bins + f] as f64;
            let d = (1..=N_DIFF)
                .map(|n| cur - frames[(t - n) * n_bins + f] as f64)
                .fold(f64::INFINITY, f64::min);
            diff[t * n_bins + f] = d.max(0.0);
        }
    }
    let max_onset = onsets.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let max_diff = diff.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    onsets
        .iter()
        .zip(&diff)
        .map(|(&o, &d)| {
            let d = max_onset * d / max_diff; // NaN when max_diff == 0, as in numpy
            if d.is_nan() {
                f64::NAN
            } else {
                (o as f64).max(d)
            }
        })
        .collect()
}

/// Mean of `frames[start..end, bin]`.
fn mean_column(frames: &[f32], n_bins: usize, start: usize, end: usize, bin: usize) -> f32 {
    if end <= start {
        return f32::NAN;
    }
    let sum: f64 = (start..end).map(|t| frames[t * n_bins + bin] as f64).sum();
    (sum / (end - start) as f64) as f32
}

/// A heap key ordering cells like numpy's `argmax`: larger value first, then the lower flat index.
#[derive(Debug, PartialEq)]
struct Cell(f32, Reverse<usize>);

impl Eq for Cell {}

impl PartialOrd for Cell {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Cell {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

/// `output_to_notes_polyphonic`: notes from the note (`frames`) and onset activations, `[n_frames, 88]`.
/// Both are taken by value because the frequency limits zero them, as the reference does in place.
pub fn output_to_notes_polyphonic(
    mut frames: Vec<f32>,
    mut onsets: Vec<f32>,
    n_bins: usize,
    p: &NoteParams,
) -> Vec<FrameNote> {
    let n_frames = if n_bins == 0 {
        0
    } else {
        frames.len() / n_bins
    };
    if n_frames == 0 || onsets.len() != frames.len() {
        return Vec::new();
    }
    constrain_frequency(&mut onsets, &mut frames, n_bins, p.max_hz, p.min_hz);
    let onsets: Vec<f64> = if p.infer_onsets {
        infer_onsets(&onsets, &frames, n_bins)
    } else {
        onsets.iter().map(|&x| x as f64).collect()
    };

    // scipy.signal.argrelmax(onsets, axis=0): strict local maxima in time (edges never qualify), kept
    // when >= the threshold, visited backwards in time (and from high to low bins within a frame).
    let mut onset_cells = Vec::new();
    for t in 1..n_frames.saturating_sub(1) {
        for f in 0..n_bins {
            let v = onsets[t * n_bins + f];
            if v > onsets[(t - 1) * n_bins + f]
                && v > onsets[(t + 1) * n_bins + f]
                && v >= p.onset_threshold
            {
                onset_cells.push((t, f));
            }
        }
    }

    let thr = p.frame_threshold;
    let min_len = p.min_note_frames as isize;
    let n = n_frames as isize;
    let mut remaining = frames.clone();
    let at = |t: isize, f: usize| t as usize * n_bins + f;
    let mut notes = Vec::new();

    for &(start, f) in onset_cells.iter().rev() {
        let start = start as isize;
        if start >= n - 1 {
            continue;
        }
        let mut i = start + 1;
        let mut k = 0;
        while i < n - 1 && k < ENERGY_TOL {
            if (remaining[at(i, f)] as f64) < thr {
                k += 1;
            } else {
                k = 0;
            }
            i += 1;
        }
        i -= k;
        if i - start <= min_len {
            continue;
        }
        for t in start..i {
            remaining[at(t, f)] = 0.0;
            if f < MAX_FREQ_IDX {
                remaining[at(t, f + 1)] = 0.0;
            }
            if f > 0 {
                remaining[at(t, f - 1)] = 0.0;
            }
        }
        notes.push(FrameNote {
            start: start as usize,
            end: i as usize,
            pitch: f as u8 + MIDI_OFFSET,
            amplitude: mean_column(&frames, n_bins, start as usize, i as usize, f),
        });
    }

    if p.melodia_trick {
        // `while max(remaining) > thr: argmax …` with a lazy max-heap: cells only ever drop to 0, so a
        // popped cell whose value changed is stale; ties resolve to the lowest flat index like argmax.
        let mut heap: BinaryHeap<Cell> = remaining
            .iter()
            .enumerate()
            .filter(|(_, &v)| (v as f64) > thr)
            .map(|(i, &v)| Cell(v, Reverse(i)))
            .collect();
        while let Some(Cell(v, Reverse(idx))) = heap.pop() {
            if remaining[idx] != v {
                continue;
            }
            let i_mid = (idx / n_bins) as isize;
            let f = idx % n_bins;
            remaining[idx] = 0.0;
            let clear = |remaining: &mut Vec<f32>, t: isize| {
                remaining[at(t, f)] = 0.0;
                if f < MAX_FREQ_IDX {
                    remaining[at(t, f + 1)] = 0.0;
                }
                if f > 0 {
                    remaining[at(t, f - 1)] = 0.0;
                }
            };

            // forward pass
            let mut i = i_mid + 1;
            let mut k = 0;
            while i < n - 1 && k < ENERGY_TOL {
                if (remaining[at(i, f)] as f64) < thr {
                    k += 1;
                } else {
                    k = 0;
                }
                clear(&mut remaining, i);
                i += 1;
            }
            let i_end = i - 1 - k;

            // backward pass
            let mut i = i_mid - 1;
            let mut k = 0;
            while i > 0 && k < ENERGY_TOL {
                if (remaining[at(i, f)] as f64) < thr {
                    k += 1;
                } else {
                    k = 0;
                }
                clear(&mut remaining, i);
                i -= 1;
            }
            let i_start = i + 1 + k;

            if i_end - i_start <= min_len {
                continue;
            }
            notes.push(FrameNote {
                start: i_start as usize,
                end: i_end as usize,
                pitch: f as u8 + MIDI_OFFSET,
                amplitude: mean_column(&frames, n_bins, i_start as usize, i_end as usize, f),
            });
        }
    }
    notes
}

/// `get_pitch_bends`: per frame of each note, the offset (in 1/3 semitones, within ±25) of the strongest
/// contour bin near the note's pitch, weighted by a Gaussian (σ = 5 bins) centred on the pitch.
pub fn pitch_bends(contours: &[f32], n_contour_bins: usize, note: &FrameNote) -> Vec<i32> {
    let tol = N_BINS_TOLERANCE as isize;
    let window_len = 2 * tol + 1;
    let nb = n_contour_bins as isize;
    let hz = midi_to_hz(note.pitch as f64);
    let freq_idx =
        (12.0 * CONTOUR_BINS_PER_SEMITONE * (hz / 27.5).log2()).round_ties_even() as isize;
    let f_start = (freq_idx - tol).max(0);
    let f_end = nb.min(freq_idx + tol + 1);
    let g_start = (tol - freq_idx).max(0);
    let g_end = window_len - (freq_idx - (nb - tol - 1)).max(0);
    let width = (f_end - f_start).min(g_end - g_start);
    if width <= 0 {
        return vec![0; note.end.saturating_sub(note.start)];
    }
    // scipy.signal.windows.gaussian(51, std=5)
    let gauss: Vec<f64> = (g_start..g_start + width)
        .map(|i| {
            let x = (i - tol) as f64;
            (-0.5 * (x / 5.0) * (x / 5.0)).exp()
        })
        .collect();
    let shift = tol - (tol - freq_idx).max(0);
    (note.start..note.end)
        .map(|t| {
            let row = &contours[t * n_contour_bins..(t + 1) * n_contour_bins];
            let mut best = (0usize, f64::NEG_INFINITY);
            for (j, g) in gauss.iter().enumerate() {
                let v = row[(f_start as usize) + j] as f64 * g;
                if v > best.1 {
                    best = (j, v);
                }
            }
            best.0 as i32 - shift as i32
        })
        .collect()
}

/// `model_frames_to_time`: frame times in seconds, including the reference's per-window drift correction
/// (the stitched frames are not exactly one hop apart across windows).
pub fn frame_times(n_frames: usize) -> Vec<f64> {
    let hop_s = FFT_HOP as f64 / SAMPLE_RATE as f64;
    let window_offset =
        hop_s * (ANNOT_N_FRAMES as f64 - (AUDIO_N_SAMPLES as f64 / FFT_HOP as f64)) + 0.0018;
    (0..n_frames)
        .map(|i| {
            let original = (i * FFT_HOP) as f64 / SAMPLE_RATE as f64;
            original - window_offset * (i / ANNOT_N_FRAMES) as f64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> NoteParams {
        NoteParams {
            onset_threshold: 0.5,
            frame_threshold: 0.3,
            min_note_frames: 11,
            min_hz: None,
            max_hz: None,
            melodia_trick: true,
            infer_onsets: true,
        }
    }

    #[test]
    fn min_note_length_converts_like_predict() {
        assert_eq!(min_note_frames(127.70), 11);
        assert_eq!(min_note_frames(58.0), 5);
        assert_eq!(min_note_frames(0.0), 0);
    }

    #[test]
    fn frame_times_match_reference_values() {
        let t = frame_times(345);
        assert_eq!(t[0], 0.0);
        assert!((t[1] - 256.0 / 22050.0).abs() < 1e-15);
        // Window 1 starts 0.010326…s earlier than a plain hop grid (values from librosa/numpy).
        assert!((t[172] - (172.0 * 256.0 / 22050.0 - 0.010_326_077_097_505_77)).abs() < 1e-12);
    }

    #[test]
    fn a_held_note_with_an_onset_is_found() {
        let n = 40;
        let mut frames = vec![0f32; n * 88];
        let mut onsets = vec![0f32; n * 88];
        for t in 5..30 {
            frames[t * 88 + 39] = 0.8; // C4 = 60
        }
        onsets[5 * 88 + 39] = 0.9;
        let notes = output_to_notes_polyphonic(frames, onsets, 88, &params());
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].pitch, 60);
        assert_eq!((notes[0].start, notes[0].end), (5, 30));
        assert!((notes[0].amplitude - 0.8).abs() < 1e-6);
    }

    #[test]
    fn frequency_limits_remove_notes() {
        let n = 40;
        let mut frames = vec![0f32; n * 88];
        let mut onsets = vec![0f32; n * 88];
        for t in 5..30 {
            frames[t * 88 + 39] = 0.8;
        }
        onsets[5 * 88 + 39] = 0.9;
        let p = NoteParams {
            min_hz: Some(300.0), // above C4 (261.6 Hz)
            ..params()
        };
        assert!(output_to_notes_polyphonic(frames, onsets, 88, &p).is_empty());
    }

    #[test]
    fn empty_and_tiny_inputs_give_no_notes() {
        assert!(output_to_notes_polyphonic(vec![], vec![], 88, &params()).is_empty());
        let notes = output_to_notes_polyphonic(vec![0.9; 88], vec![0.9; 88], 88, &params());
        assert!(notes.is_empty());
    }

    #[test]
    fn pitch_bends_follow_the_contour() {
        let n = 10;
        let mut contour = vec![0f32; n * 264];
        let note = FrameNote {
            start: 2,
            end: 6,
            pitch: 60,
            amplitude: 0.5,
        };
        let centre = 3 * (60 - 21);
        for t in 2..6 {
            contour[t * 264 + centre + (t - 2)] = 0.9; // drifting up one bin per frame
        }
        assert_eq!(pitch_bends(&contour, 264, &note), vec![0, 1, 2, 3]);
    }
}
