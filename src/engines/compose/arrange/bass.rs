//! The bass part: one bar of a pattern (sustained, roots, eighths/octaves, off-beat, walking,
//! syncopated cell, boom-chick) under the bar's chord, approaching the next chord's root.

use super::super::dmath::Rng;
use super::super::score::Voice;
use super::super::style::BassPattern;
use super::super::tags::Genre;
use super::super::theory::Chord;
use super::Arranger;

impl Arranger<'_> {
    pub(super) fn bass_root(&self, chord: &Chord) -> i32 {
        let lo = match self.style.bass {
            Some((Voice::Sub808, _)) => 27,
            Some((Voice::Strings, _)) => 36,
            Some((Voice::SubBass, _)) => 31,
            _ => 31,
        };
        let pc = (self.key.tonic as i32 + chord.root).rem_euclid(12);
        lo + (pc - lo).rem_euclid(12)
    }

    pub(super) fn bass_bar(&mut self, bar: u32, sec: &BassSection, rng: &mut Rng, full: bool) {
        let Some((_, pattern)) = self.style.bass else {
            return;
        };
        let chord = self.chord_at(bar);
        let next = self.chord_at(bar + 1);
        let root = self.bass_root(&chord);
        let next_root = self.bass_root(&next);
        // The chord's own (diatonic) fifth, above the root if it stays low enough.
        let fifth = root + chord.tones[2] - if root + chord.tones[2] < 48 { 0 } else { 12 };
        let n = self.beats.len();
        let hs = self.style.humanize * 0.5;
        let ids = self.ids;
        let changes = next.root != chord.root;
        let slow = self.grid.slow();
        let pattern = if full {
            pattern
        } else {
            match pattern {
                BassPattern::Walking
                | BassPattern::Syncopated
                | BassPattern::Octaves
                | BassPattern::Eighths => BassPattern::Roots,
                p => p,
            }
        };
        match pattern {
            BassPattern::Sustain => {
                if self.chord_starts(bar) {
                    let beats = (self.chord_span(bar) as usize * n) as f64 - 0.1;
                    self.note(ids.bass, bar, 0.0, beats, root, 0.8, 0.0);
                }
            }
            BassPattern::Roots | BassPattern::Long808 => {
                let mut start = 0usize;
                let groups = self.groups.clone();
                for (gi, &len) in groups.iter().enumerate() {
                    let last = gi + 1 == groups.len();
                    let mut p = root;
                    if last && gi > 0 && rng.chance(0.35) {
                        p = if changes {
                            fifth
                        } else {
                            root + chord.tones[1]
                        };
                    }
                    let v = if gi == 0 { 0.9 } else { 0.78 };
                    let legato = pattern == BassPattern::Long808;
                    let dur = len as f64 * if legato { 1.0 } else { 0.9 };
                    let before = self.notes.len();
                    self.note(ids.bass, bar, start as f64, dur, p, v, hs);
                    if legato && gi == 0 && rng.chance(0.4) {
                        if let Some(nt) = self.notes.get_mut(before) {
                            nt.glide = rng.pick(&[-5.0, 5.0, 7.0, -12.0]).to_owned();
                        }
                    }
                    if legato && full && sec.pickup && last && len >= 2 && !slow {
                        self.note(
                            ids.bass,
                            bar,
                            start as f64 + len as f64 - 0.25,
                            0.25,
                            root + 12,
                            0.6,
                            0.0,
                        );
                    }
                    start += len as usize;
                }
            }
            BassPattern::Eighths | BassPattern::Octaves => {
                // Slow: one note per beat (the octave on every other beat), not eighths.
                let per_beat = if slow { 1 } else { 2 };
                for i in 0..n {
                    for k in 0..per_beat {
                        let pos = i as f64 + 0.5 * k as f64;
                        let up = if slow { i % 2 == 1 } else { k == 1 };
                        let mut p = if pattern == BassPattern::Octaves && up {
                            root + 12
                        } else {
                            root
                        };
                        let last = if slow {
                            i + 1 == n
                        } else {
                            i + 1 == n && k == 1
                        };
                        if changes && last && pattern == BassPattern::Eighths {
                            p = fifth;
                        }
                        let v = if k == 0 {
                            if i == 0 {
                                0.9
                            } else {
                                0.8
                            }
                        } else {
                            0.68
                        };
                        let dur = if slow { 0.9 } else { 0.45 };
                        self.note(ids.bass, bar, pos, dur, p, v, hs);
                    }
                }
            }
            BassPattern::Offbeat => {
                let trance = self.style.genre == Genre::Trance;
                for i in 0..n {
                    if slow {
                        // Slow: the pumping root moves onto the beat.
                        let v = if i == 0 { 0.9 } else { 0.8 };
                        self.note(ids.bass, bar, i as f64, 0.6, root, v, 0.0);
                    } else if trance {
                        for k in 1..4 {
                            self.note(
                                ids.bass,
                                bar,
                                i as f64 + k as f64 * 0.25,
                                0.2,
                                root,
                                0.8,
                                0.0,
                            );
                        }
                    } else {
                        self.note(ids.bass, bar, i as f64 + 0.5, 0.35, root, 0.85, 0.0);
                        if i == 0 {
                            // The downbeat root, short, so the harmony is anchored.
                            self.note(ids.bass, bar, 0.0, 0.25, root, 0.6, 0.0);
                        }
                    }
                }
            }
            BassPattern::Walking => {
                let tones: Vec<i32> = chord.semis().map(|s| s - chord.root).collect();
                let mut prev = root;
                for i in 0..n {
                    let p = if i == 0 {
                        root
                    } else if i + 1 == n {
                        // Chromatic approach into the next root.
                        if rng.chance(0.5) {
                            next_root - 1
                        } else {
                            next_root + 1
                        }
                    } else {
                        let t = tones[i % tones.len()];
                        let cand = root + t;
                        if (cand - prev).abs() > 7 {
                            cand - 12
                        } else {
                            cand
                        }
                    };
                    self.note(
                        ids.bass,
                        bar,
                        i as f64,
                        0.9,
                        p,
                        if i == 0 { 0.88 } else { 0.74 },
                        hs,
                    );
                    prev = p;
                }
            }
            BassPattern::Syncopated => {
                let mut i = 0;
                while i < n {
                    let span = if i + 1 < n { 2 } else { 1 };
                    for &(slot, step) in &sec.cell {
                        let pos = slot as f64 * 0.25;
                        if pos >= span as f64 {
                            continue;
                        }
                        let p = match step {
                            1 => root + 12,
                            2 => fifth,
                            // The chord's third names the mode (major or minor) outright.
                            3 => root + chord.tones[1],
                            _ => root,
                        };
                        let v = if slot == 0 { 0.9 } else { 0.72 };
                        self.note(ids.bass, bar, i as f64 + pos, 0.3, p, v, hs);
                    }
                    i += span;
                }
            }
            BassPattern::BoomChick => {
                let mut start = 0usize;
                for (gi, &len) in self.groups.clone().iter().enumerate() {
                    let p = if gi % 2 == 0 { root } else { fifth };
                    self.note(
                        ids.bass,
                        bar,
                        start as f64,
                        len as f64 * 0.85,
                        p,
                        if gi == 0 { 0.9 } else { 0.78 },
                        hs,
                    );
                    start += len as usize;
                }
            }
        }
    }
}

/// Per-section bass decisions.
pub(super) struct BassSection {
    /// (16th slot within two beats, 0 root / 1 octave / 2 fifth / 3 third).
    pub(super) cell: Vec<(u32, u8)>,
    pub(super) pickup: bool,
}

impl BassSection {
    /// `on_beats`: only whole-beat slots (see `Arranger::quick_triple`, `Grid::slow`).
    pub(super) fn new(on_beats: bool, rng: &mut Rng) -> BassSection {
        let mut cell = vec![(0, 0)];
        let slots: &[u32] = if on_beats { &[4] } else { &[3, 4, 6, 7] };
        for &slot in slots {
            if rng.chance(0.45) {
                cell.push((slot, *rng.pick(&[0u8, 0, 1, 2, 3])));
            }
        }
        BassSection {
            cell,
            pickup: rng.chance(0.5),
        }
    }
}
