//! Meter (beats per bar) and downbeats from the beat grid.
//!
//! A bar starts where the harmony changes and the bass or kick lands. For each beat the chroma
//! frames it spans are averaged (beat-synchronous chroma), and two cues are read per beat: how
//! much the pitch-class profile changes from the previous beat (1 − cosine), and the low-band
//! (< 200 Hz) onset strength at the beat. Every meter of [`METERS`] and every phase of it is then
//! scored by how much more cue its bar-start beats carry than the other beats; the best pair gives
//! the meter and the downbeats.

/// Beats per bar the analyser can report.
pub const METERS: [usize; 2] = [4, 3];
/// Weight of the low-band onset beside the harmonic change. On the MMA pieces of the tune part of
/// `scripts/analysis_eval` (278 excerpts, `rhythm.py`): weights 0 / 0.15 / 0.5 / 1 gave downbeat
/// F-measures 0.747 / 0.752 / 0.732 / 0.702 and meters right 273 / 273 / 273 / 269; the harmony
/// carries the bar, the kick only a little.
const LOW_WEIGHT: f32 = 0.15;
/// A meter other than 4 wins when its contrast is above this many times 4's (ties go to 4/4, the
/// common case). 0.8 / 1.0 / 1.2 read 272 / 273 / 273 meters right on the same pieces.
const OTHER_METER_MARGIN: f32 = 1.0;
/// ... and above this absolute contrast: with no chord changes and no accents, 4's and 3's
/// contrasts are both noise (an even metronome's clicks fall at phases of the analysis hop that
/// cycle with the tempo, enough to tip a max-normalised cue). A chord change on the bar scores
/// about 1, a kick accent about 0.1. 0 / 0.05 / 0.1 read 273 / 273 / 274 meters right.
const MIN_CONTRAST: f32 = 0.1;
/// The harmonic change (1 − cosine, 0…1) is divided by its largest value in the piece or by this,
/// whichever is larger. A chord change scores about 0.3–0.8; an even metronome's chroma, which
/// never changes, about 0.01, which scaled by its own maximum looked like chords changing on
/// every third beat. 0 / 0.1 / 0.2 / 0.3 gave downbeat F 0.757 / 0.757 / 0.760 / 0.757 on the
/// tune part's MMA pieces, and only with a floor did plain metronomes read 4/4.
const CHANGE_FLOOR: f32 = 0.2;

/// What the bar stage found.
#[derive(Debug, Clone, PartialEq)]
pub struct Bars {
    /// Beats per bar; `None` when there are too few beats to tell (fewer than 8).
    pub beats_per_bar: Option<usize>,
    /// Indices into the beats that start a bar.
    pub downbeats: Vec<usize>,
}

/// Meter and downbeats of `beats` (seconds). `low_onset` is sampled at `fps`; `chroma` frames
/// are `chroma_hop` seconds apart, the first centred at `chroma_offset` seconds.
pub fn bars(
    beats: &[f64],
    low_onset: &[f32],
    fps: f64,
    chroma: &[[f32; 12]],
    chroma_hop: f64,
    chroma_offset: f64,
) -> Bars {
    let n = beats.len();
    if n < 8 {
        return Bars {
            beats_per_bar: None,
            downbeats: Vec::new(),
        };
    }
    // Beat-synchronous chroma, each unit length. Chroma frame j's window spans
    // [j·hop, j·hop + 2·offset); it counts towards a beat with the square of the share of its
    // window inside the beat, so a frame that straddles a chord change on a bar line counts
    // little on either side (a frame merely centred inside the beat reaches a whole hop, 0.19 s,
    // into the previous one: half a beat at 160 bpm).
    let window = (2.0 * chroma_offset).max(chroma_hop);
    let segs: Vec<[f32; 12]> = (0..n)
        .map(|i| {
            let t0 = beats[i];
            // The last beat lasts as long as the one before it.
            let t1 = beats
                .get(i + 1)
                .copied()
                .unwrap_or_else(|| 2.0 * t0 - beats[i - 1]);
            let first = ((t0 - window) / chroma_hop).floor().max(0.0) as usize;
            let last = ((t1 / chroma_hop).ceil().max(0.0) as usize + 1).min(chroma.len());
            let mut c = [0.0f32; 12];
            for (j, frame) in chroma.iter().enumerate().take(last).skip(first.min(last)) {
                let (w0, w1) = (j as f64 * chroma_hop, j as f64 * chroma_hop + window);
                let share = ((w1.min(t1) - w0.max(t0)).max(0.0) / window) as f32;
                for (x, y) in c.iter_mut().zip(frame) {
                    *x += share * share * y;
                }
            }
            let norm = c.iter().map(|v| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                c.iter_mut().for_each(|v| *v /= norm);
            }
            c
        })
        .collect();
    let change: Vec<f32> = (0..n)
        .map(|i| {
            if i == 0 {
                return 0.0;
            }
            let dot: f32 = segs[i - 1].iter().zip(&segs[i]).map(|(a, b)| a * b).sum();
            let empty = segs[i - 1].iter().all(|&v| v == 0.0) || segs[i].iter().all(|&v| v == 0.0);
            if empty {
                0.0
            } else {
                1.0 - dot
            }
        })
        .collect();
    let low: Vec<f32> = beats
        .iter()
        .map(|&t| {
            // Sum over ±2 frames: beats land within a frame or two of the onset, and a click
            // split across two frames counts as much as one that is not (a max would follow
            // where each click falls within a hop, which cycles with the tempo).
            let f = (t * fps).round() as usize;
            let lo = f.saturating_sub(2);
            let hi = (f + 3).min(low_onset.len());
            low_onset.get(lo..hi).map_or(0.0, |w| w.iter().sum::<f32>())
        })
        .collect();
    let scale = |x: &[f32]| {
        let m = x.iter().cloned().fold(0.0f32, f32::max);
        if m > 0.0 {
            1.0 / m
        } else {
            0.0
        }
    };
    // The harmonic change is scaled by its largest value, but never by less than
    // CHANGE_FLOOR: a piece whose chords never change must not have its chroma jitter blown up
    // into bar lines.
    let most = change
        .iter()
        .cloned()
        .fold(0.0f32, f32::max)
        .max(CHANGE_FLOOR);
    let (sc, sl) = (1.0 / most, scale(&low));
    let cue: Vec<f32> = (0..n)
        .map(|i| change[i] * sc + LOW_WEIGHT * low[i] * sl)
        .collect();
    // Contrast of a meter and phase: mean cue on its bar starts minus mean cue elsewhere
    // (beat 0 has no harmonic change of its own and is left out).
    let contrast = |m: usize, p: usize| {
        let (mut on, mut n_on, mut off, mut n_off) = (0.0f32, 0usize, 0.0f32, 0usize);
        for (i, &c) in cue.iter().enumerate().skip(1) {
            if i % m == p {
                on += c;
                n_on += 1;
            } else {
                off += c;
                n_off += 1;
            }
        }
        if n_on == 0 || n_off == 0 {
            return f32::MIN;
        }
        on / n_on as f32 - off / n_off as f32
    };
    // The best phase of a meter; on a tie the earliest.
    let best_of = |m: usize| {
        (0..m).fold((f32::MIN, 0), |best, p| {
            let c = contrast(m, p);
            if c > best.0 {
                (c, p)
            } else {
                best
            }
        })
    };
    let (four, four_phase) = best_of(4);
    let mut pick = (4usize, four_phase);
    for &m in METERS.iter().filter(|&&m| m != 4) {
        let (s, p) = best_of(m);
        if s > four * OTHER_METER_MARGIN && s > MIN_CONTRAST {
            pick = (m, p);
        }
    }
    Bars {
        beats_per_bar: Some(pick.0),
        downbeats: (pick.1..n).step_by(pick.0).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A beat grid at 120 bpm with a chord change every `m` beats starting at beat `phase`, and a
    /// kick on the bar starts.
    fn piece(m: usize, phase: usize) -> Bars {
        let fps = 86.0;
        let beats: Vec<f64> = (0..48).map(|i| i as f64 * 0.5).collect();
        let hop = 0.1;
        let chords = [[0usize, 4, 7], [5, 9, 0], [7, 11, 2], [9, 0, 4]];
        let chroma: Vec<[f32; 12]> = (0..240)
            .map(|f| {
                let beat = (f as f64 * hop / 0.5) as usize;
                let bar = (beat + m - phase) / m;
                let mut c = [0.05f32; 12];
                for &pc in &chords[bar % 4] {
                    c[pc] = 1.0;
                }
                c
            })
            .collect();
        let mut low = vec![0.0f32; (24.0 * fps) as usize];
        for (i, &t) in beats.iter().enumerate() {
            let f = (t * fps) as usize;
            low[f] = if i % m == phase { 1.0 } else { 0.3 };
        }
        bars(&beats, &low, fps, &chroma, hop, hop / 2.0)
    }

    #[test]
    fn finds_the_meter_and_the_bar_starts() {
        let b = piece(4, 1);
        assert_eq!(b.beats_per_bar, Some(4));
        assert_eq!(&b.downbeats[..3], &[1, 5, 9]);
        let b = piece(3, 2);
        assert_eq!(b.beats_per_bar, Some(3));
        assert_eq!(&b.downbeats[..3], &[2, 5, 8]);
        assert!(bars(&[0.0, 0.5], &[], 86.0, &[], 0.1, 0.0)
            .downbeats
            .is_empty());
    }
}
