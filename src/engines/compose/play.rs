//! One note of any voice: dispatches to the synthesised drums (`drums`) or the pitched voices
//! (`voices`), and owns what both share, the note's length and the click-free end.

use super::drums;
use super::dsp::SR;
use super::score::{Note, Timbre, Voice};
use super::voices::{self, Scratch};

/// Samples the note occupies from its onset (before clipping to the track end).
pub fn note_len(voice: Voice, note: &Note) -> usize {
    let secs = if voice.is_drum() {
        drums::length(voice)
    } else {
        voices::length(voice, note)
    };
    (secs * SR) as usize
}

/// Renders `note` into `out` (already sized; its length is the audible part of the note).
pub fn render(voice: Voice, tm: &Timbre, note: &Note, scratch: &mut Scratch, out: &mut [f32]) {
    out.fill(0.0);
    if out.is_empty() {
        return;
    }
    if voice.is_drum() {
        drums::render(voice, tm, note, out);
    } else {
        voices::render(voice, tm, note, scratch, out);
    }
    // A 5 ms fade over the last samples: notes cut by their length limit end without a click.
    let fade = out.len().min((0.005 * SR) as usize);
    let n = out.len();
    for (k, x) in out[n - fade..].iter_mut().enumerate() {
        *x *= 1.0 - (k + 1) as f32 / fade as f32;
    }
}
