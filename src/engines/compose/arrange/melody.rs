//! The melody: two-bar motifs (rhythm and contour) for verse and chorus, realised over the chords
//! phrase by phrase, in the register of the melody's voice.

use super::super::dmath::Rng;
use super::super::score::Voice;
use super::super::tags::Genre;
use super::super::theory::{Chord, Key};
use super::Arranger;

impl Arranger<'_> {
    pub(super) fn melody_tonic(&self, v: Voice) -> i32 {
        let center = self.style.melody_center + melody_shift(v, self.style.genre);
        let pc = self.key.tonic as i32;
        center - 6 + (pc - (center - 6)).rem_euclid(12)
    }
}

/// Melody register shift of a voice (bells sit an octave up, brass and guitar lower).
pub(super) fn melody_shift(v: Voice, genre: Genre) -> i32 {
    match v {
        Voice::Bells if genre == Genre::Ambient => 0,
        Voice::Bells => 12,
        Voice::Brass | Voice::ElectricGuitar | Voice::Strings => -5,
        _ => 0,
    }
}

/// The melody: two-bar motifs (rhythm and contour) for verse and chorus, realised over the chords
/// phrase by phrase; strong beats land on chord tones, phrases breathe at their ends and the
/// consequent phrase resolves.
pub(super) struct Melody {
    pub(super) motifs: [Motif; 2],
    pub(super) cadences: [Vec<(f64, f64)>; 2],
    pub(super) cur: i32,
    pub(super) base: i32,
}

#[derive(Debug, Clone)]
pub(super) struct Motif {
    pub(super) bars: [Vec<(f64, f64)>; 2],
    pub(super) steps: Vec<i32>,
}

impl Melody {
    pub(super) fn new(a: &Arranger<'_>, mut rng: Rng) -> Melody {
        let density = a.style.density;
        let mk = |rng: &mut Rng, d: f64| Motif {
            bars: [rhythm(a, d, rng, true), rhythm(a, d, rng, false)],
            steps: contour(rng),
        };
        let verse = mk(&mut rng, density * 0.85);
        let chorus = mk(&mut rng, (density * 1.15).min(1.0));
        let cad = |rng: &mut Rng| -> Vec<(f64, f64)> {
            let n = a.beats.len() as f64;
            if rng.chance(0.5) || n < 3.0 {
                vec![(0.0, n * 0.75)]
            } else {
                vec![(0.0, 1.0), (1.0, n * 0.75 - 1.0)]
            }
        };
        let cadences = [cad(&mut rng), cad(&mut rng)];
        let base = a.style.melody.map_or(72, |v| a.melody_tonic(v));
        Melody {
            motifs: [verse, chorus],
            cadences,
            cur: 2,
            base,
        }
    }

    /// One bar of melody; `which` is 1 (verse) or 2 (chorus); `bar_in_section` counts from 0.
    pub(super) fn bar(&mut self, a: &mut Arranger<'_>, bar: u32, which: u8, bar_in_section: u32) {
        let m = (which as usize).clamp(1, 2) - 1;
        let phrase_bars = 4 * a.chord_bars;
        let k = bar_in_section % phrase_bars;
        let phrase_index = bar_in_section / phrase_bars;
        let cadence = k + 1 == phrase_bars;
        let chord = a.chord_at(bar);
        let raised = chord.is_dominant();
        let (lo, hi) = if m == 1 { (-1, 10) } else { (-3, 8) };
        if k == 0 {
            self.cur = if m == 1 { 4 } else { 2 };
        }
        let rhythm: Vec<(f64, f64)> = if cadence {
            self.cadences[m].clone()
        } else {
            self.motifs[m].bars[(k % 2) as usize].clone()
        };
        let steps = self.motifs[m].steps.clone();
        let count = rhythm.len();
        for (j, &(pos, dur)) in rhythm.iter().enumerate() {
            let strong =
                pos.fract() == 0.0 && a.beats.get(pos as usize).is_some_and(|b| b.group_start);
            let mut target = self.cur + steps[(j + k as usize * 3) % steps.len()];
            if target > hi {
                target = hi - (target - hi);
            }
            if target < lo {
                target = lo + (lo - target);
            }
            if k == 0 && j == 0 {
                // Phrases open on the tonic chord: verses on its third (which names the mode),
                // choruses on the tonic itself.
                let home = if m == 0 { 2 } else { 7 };
                target = if (target - home).abs() <= (target - (home - 7)).abs() {
                    home
                } else {
                    home - 7
                };
            } else if cadence && j + 1 == count {
                // Antecedent phrases end on a chord tone, consequents on the tonic if it fits.
                target = if phrase_index % 2 == 1 && chord.contains(0) {
                    if (target - 7).abs() < target.abs() {
                        7
                    } else {
                        0
                    }
                } else {
                    nearest_chord_step(&a.key, &chord, target, raised)
                };
            } else if strong {
                target = nearest_chord_step(&a.key, &chord, target, raised);
            }
            self.cur = target;
            let pitch = self.base + a.key.step_semis(target, raised);
            let vel = if strong { 0.78 } else { 0.66 } + a.human.range(-0.05, 0.05) as f32;
            let hs = a.style.humanize;
            a.note(a.ids.melody, bar, pos, dur, pitch, vel, hs);
        }
    }
}

pub(super) fn nearest_chord_step(key: &Key, chord: &Chord, target: i32, raised: bool) -> i32 {
    if chord.degree == 0 {
        // On the tonic chord the melody leans to the third (the mode's signature) when near.
        for s in [target, target - 1, target + 1] {
            if s.rem_euclid(7) == 2 {
                return s;
            }
        }
    }
    for d in 0..7 {
        for s in [target - d, target + d] {
            if chord.contains(key.step_semis(s, raised)) {
                return s;
            }
        }
    }
    target
}

/// A one-bar rhythm: (onset, length) in beats.
pub(super) fn rhythm(
    a: &Arranger<'_>,
    density: f64,
    rng: &mut Rng,
    first: bool,
) -> Vec<(f64, f64)> {
    let n = a.beats.len();
    let fast = a.grid.spb < 0.4;
    let mut onsets: Vec<f64> = Vec::new();
    for i in 0..n {
        let b = i as f64;
        // Cells: quarter, two eighths, dotted eighth + sixteenth, four sixteenths, rest.
        let w = [
            0.35,
            if fast {
                0.12
            } else if a.grid.slow() {
                // Slow: fewer eighth pairs (they would sound like beats at twice the tempo).
                0.1 + 0.1 * density
            } else {
                0.25 + 0.3 * density
            },
            0.06 + 0.1 * density,
            if fast || a.grid.spb < 0.45 || a.grid.slow() {
                0.0
            } else {
                0.06 * density
            },
            0.45 * (1.0 - density),
        ];
        let cell = if i == 0 && first {
            rng.weighted(&w[..4])
        } else {
            rng.weighted(&w)
        };
        match cell {
            0 => onsets.push(b),
            1 => onsets.extend([b, b + 0.5]),
            2 => onsets.extend([b, b + 0.75]),
            3 => onsets.extend([b, b + 0.25, b + 0.5, b + 0.75]),
            _ => {}
        }
    }
    if onsets.is_empty() {
        onsets.push(0.0);
    }
    let end = n as f64;
    (0..onsets.len())
        .map(|j| {
            let next = onsets.get(j + 1).copied().unwrap_or(end);
            let gap = next - onsets[j];
            let len = if j + 1 == onsets.len() {
                gap.min(1.5)
            } else {
                gap
            };
            (onsets[j], len * 0.92)
        })
        .collect()
}

/// Scale-step moves of a motif: mostly steps, some leaps, an arch overall.
pub(super) fn contour(rng: &mut Rng) -> Vec<i32> {
    let moves = [0, 1, -1, 2, -2, 3, -3, 4, -4];
    let w = [0.12, 0.25, 0.25, 0.1, 0.1, 0.06, 0.06, 0.03, 0.03];
    let mut v: Vec<i32> = (0..8).map(|_| moves[rng.weighted(&w)]).collect();
    // Arch: rise in the first half, fall in the second.
    for (i, d) in v.iter_mut().enumerate() {
        if i < 4 && *d < 0 && rng.chance(0.5) {
            *d = -*d;
        }
        if i >= 4 && *d > 0 && rng.chance(0.5) {
            *d = -*d;
        }
    }
    v
}
