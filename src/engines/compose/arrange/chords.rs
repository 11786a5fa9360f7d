//! The harmony parts: chord voicings and one bar of the chord pattern (sustain, block, comp,
//! off-beat, strum, power, oom-pah, chop), the pad, and the counter-line (arpeggio, ostinato).

use super::super::dmath::Rng;
use super::super::score::{SectionKind, Voice};
use super::super::style::{ChordPattern, CounterPattern};
use super::super::tags::Genre;
use super::super::theory::{self, Chord};
use super::Arranger;

impl Arranger<'_> {
    pub(super) fn chord_center(&self) -> i32 {
        match self.style.chords {
            Some((Voice::Brass, _)) => 57,
            Some((Voice::Pluck | Voice::MutedGuitar, _)) => 64,
            Some((Voice::Pad | Voice::Strings | Voice::Choir, _)) => 60,
            _ => 62,
        }
    }

    pub(super) fn voiced(&self, chord: &Chord, center: i32) -> Vec<i32> {
        let semis: Vec<i32> = chord.semis().collect();
        let mut v = theory::voice_chord(&semis, self.key.tonic as i32, center, &[]);
        if chord.degree == 0 {
            // The tonic chord doubles its third on top: the third is what says major or minor.
            let top = v.iter().copied().max().unwrap_or(center);
            let third = self.key.tonic as i32 + chord.root + chord.tones[1];
            v.push(top + 1 + (third - top - 1).rem_euclid(12));
        }
        v
    }

    pub(super) fn chord_bar(
        &mut self,
        bar: u32,
        sec: &ChordSection,
        rng: &mut Rng,
        kind: SectionKind,
    ) {
        let Some((_, pattern)) = self.style.chords else {
            return;
        };
        let chord = self.chord_at(bar);
        let center = self.chord_center();
        let v = self.voiced(&chord, center);
        let n = self.beats.len();
        let ids = self.ids;
        let hs = self.style.humanize * 0.5;
        let slow = self.grid.slow();
        match pattern {
            ChordPattern::Sustain => {
                if self.chord_starts(bar) {
                    let beats = (self.chord_span(bar) as usize * n) as f64 - 0.05;
                    for &p in &v {
                        self.note(ids.chords, bar, 0.0, beats, p, 0.6, 0.0);
                    }
                }
            }
            ChordPattern::Block => {
                let mut start = 0usize;
                for (gi, &len) in self.groups.clone().iter().enumerate() {
                    let vel = if gi == 0 { 0.68 } else { 0.55 };
                    for &p in &v {
                        self.note(ids.chords, bar, start as f64, len as f64 * 0.95, p, vel, hs);
                    }
                    start += len as usize;
                }
            }
            ChordPattern::Comp => {
                let mut spots: Vec<f64> = Vec::new();
                if self.chord_starts(bar) && rng.chance(0.6) {
                    spots.push(0.0);
                }
                for i in 0..n {
                    // Slow: comping on the beats, not the off-beats.
                    if rng.chance(0.3) && !(slow && i == 0) {
                        spots.push(i as f64 + if slow { 0.0 } else { 0.5 });
                    }
                }
                if spots.is_empty() {
                    spots.push(if rng.chance(0.5) {
                        0.0
                    } else if slow {
                        1.0
                    } else {
                        1.5f64.min(n as f64 - 0.5)
                    });
                }
                for s in spots {
                    let vel = self.human.range(0.45, 0.65) as f32;
                    for &p in &v {
                        self.note(ids.chords, bar, s, 0.6, p, vel, hs);
                    }
                }
            }
            ChordPattern::Offbeat => {
                for i in 0..n {
                    // Slow: the stabs move onto the beats.
                    let (pos, len) = if slow {
                        (i as f64, 0.45)
                    } else {
                        (i as f64 + 0.5, 0.3)
                    };
                    for &p in &v {
                        self.note(ids.chords, bar, pos, len, p, 0.6, 0.0);
                    }
                }
            }
            ChordPattern::Strum => {
                let g = self.guitar_voicing(&chord);
                for i in 0..n {
                    for k in 0..2 {
                        if !sec.strum[(i * 2 + k) % sec.strum.len()] {
                            continue;
                        }
                        let down = k == 0;
                        let pos = i as f64 + 0.5 * k as f64;
                        let vel = if down { 0.7 } else { 0.5 };
                        let order: Vec<i32> = if down {
                            g.clone()
                        } else {
                            g.iter().rev().copied().collect()
                        };
                        let spread = 0.012 / self.grid.spb;
                        for (j, &p) in order.iter().enumerate() {
                            self.note(
                                ids.chords,
                                bar,
                                pos + j as f64 * spread,
                                0.5,
                                p,
                                vel - 0.03 * j as f32,
                                hs,
                            );
                        }
                    }
                }
            }
            ChordPattern::Power => {
                let root = 40 + ((self.key.tonic as i32 + chord.root) - 40).rem_euclid(12);
                // Root, fifth, octave, and the third on top so the mode is never in doubt.
                let shape = [root, root + 7, root + 12, root + 12 + chord.tones[1]];
                let chug = kind != SectionKind::Chorus;
                // Slow: the chugs fall on the beats, not in eighths.
                let per_beat = if slow { 1 } else { 2 };
                for i in 0..n {
                    if chug {
                        for k in 0..per_beat {
                            for &p in &shape {
                                self.note(
                                    ids.chords,
                                    bar,
                                    i as f64 + 0.5 * k as f64,
                                    if per_beat == 1 { 0.8 } else { 0.4 },
                                    p,
                                    if k == 0 { 0.8 } else { 0.65 },
                                    hs,
                                );
                            }
                        }
                    } else if self.beats[i].group_start {
                        let len = self.group_len_at(i);
                        for &p in &shape {
                            self.note(ids.chords, bar, i as f64, len as f64 * 0.95, p, 0.8, hs);
                        }
                    }
                }
            }
            ChordPattern::OomPah => {
                let low = 36 + ((self.key.tonic as i32 + chord.root) - 36).rem_euclid(12);
                for i in 0..n {
                    if self.beats[i].group_start {
                        let len = self.group_len_at(i) as f64;
                        self.note(ids.chords, bar, i as f64, len * 0.9, low, 0.62, hs);
                        if i == 0 {
                            self.note(ids.chords, bar, i as f64, len * 0.9, low + 12, 0.4, hs);
                        }
                    } else {
                        for &p in &v {
                            self.note(ids.chords, bar, i as f64, 0.8, p, 0.42, hs);
                        }
                    }
                }
            }
            ChordPattern::Chop => {
                let high = self.voiced(&chord, 67);
                for i in 0..n {
                    for (k, &on) in sec.chop.iter().enumerate() {
                        if on && !(slow && k > 0) {
                            let vel = if k == 0 { 0.7 } else { 0.5 };
                            for &p in &high {
                                self.note(
                                    ids.chords,
                                    bar,
                                    i as f64 + k as f64 * 0.25,
                                    0.12,
                                    p,
                                    vel,
                                    hs,
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    pub(super) fn group_len_at(&self, beat: usize) -> u32 {
        let mut start = 0usize;
        for &g in &self.groups {
            if beat < start + g as usize {
                return g;
            }
            start += g as usize;
        }
        1
    }

    /// Open guitar voicing: root low (E2–D#3), then fifth, octave and the third in two octaves.
    pub(super) fn guitar_voicing(&self, chord: &Chord) -> Vec<i32> {
        let root = 40 + ((self.key.tonic as i32 + chord.root) - 40).rem_euclid(12);
        let third = chord.tones[1];
        let mut v = vec![
            root,
            root + 7,
            root + 12,
            root + 12 + third,
            root + 24 + third,
        ];
        if chord.len == 4 {
            v.push(root + 12 + chord.tones[3]);
        }
        v.sort();
        v
    }

    pub(super) fn pad_bar(&mut self, bar: u32) {
        if self.ids.pad.is_none() || !self.chord_starts(bar) {
            return;
        }
        let chord = self.chord_at(bar);
        let mut v = self.voiced(&chord, 60);
        // Pads double the root an octave down for body.
        v.push(v[0] - 12);
        let beats = (self.chord_span(bar) as usize * self.beats.len()) as f64;
        let k = v.len();
        for (j, p) in v.into_iter().enumerate() {
            let before = self.notes.len();
            self.note(self.ids.pad, bar, 0.0, beats, p, 0.5, 0.0);
            if let Some(nt) = self.notes.get_mut(before) {
                nt.pan = -0.5 + j as f32 / (k.max(2) - 1) as f32;
            }
        }
    }

    pub(super) fn counter_bar(&mut self, bar: u32) {
        let Some((voice, pattern)) = self.style.counter else {
            return;
        };
        let chord = self.chord_at(bar);
        let n = self.beats.len();
        match pattern {
            CounterPattern::Arp => {
                let div = match self.style.genre {
                    // Slow: one tone per beat.
                    _ if self.grid.slow() => 1,
                    Genre::Techno | Genre::Trance => 4,
                    Genre::Synthwave if self.grid.spb > 0.45 => 4,
                    Genre::Ambient => 1,
                    _ => 2,
                };
                let center = if voice == Voice::Harp || voice == Voice::Piano {
                    64
                } else {
                    70
                };
                let mut tones = self.voiced(&chord, center);
                tones.truncate(3);
                tones.push(tones[0] + 12);
                for i in 0..n {
                    for k in 0..div {
                        // Four tones per cycle, so the figure repeats on the beat (a cycle
                        // of three or six steps would suggest a different tempo).
                        let idx = (i * div + k) % 4;
                        let vel = if k == 0 { 0.7 } else { 0.45 };
                        let pos = i as f64 + k as f64 / div as f64;
                        self.note(
                            self.ids.counter,
                            bar,
                            pos,
                            0.9 / div as f64,
                            tones[idx],
                            vel,
                            0.0,
                        );
                    }
                }
            }
            CounterPattern::Ostinato => {
                let root = 48 + ((self.key.tonic as i32 + chord.root) - 48).rem_euclid(12);
                let div = if self.grid.spb > 0.7 { 4 } else { 2 };
                for i in 0..n {
                    for k in 0..div {
                        let p = if k == div - 1 && i % 2 == 1 {
                            root + 7
                        } else {
                            root
                        };
                        let vel = if k == 0 { 0.75 } else { 0.5 };
                        self.note(
                            self.ids.counter,
                            bar,
                            i as f64 + k as f64 / div as f64,
                            0.5 / div as f64,
                            p,
                            vel,
                            0.0,
                        );
                    }
                }
            }
        }
    }
}

/// Per-section chord-pattern decisions.
pub(super) struct ChordSection {
    /// Strum mask over eighths (down, up, down, up …).
    pub(super) strum: Vec<bool>,
    /// Funk chop mask over the 16ths of a beat.
    pub(super) chop: [bool; 4],
}

impl ChordSection {
    pub(super) fn new(a: &Arranger<'_>, rng: &mut Rng) -> ChordSection {
        let patterns: [&[bool]; 3] = [
            &[true, false, true, true],
            &[true, false, true, true, false, true, true, true],
            &[true, true],
        ];
        // Quick or slow: down-strokes on the beats only.
        let strum = if a.grid.spb < 0.4 || a.grid.slow() {
            vec![true, false]
        } else {
            rng.pick(&patterns).to_vec()
        };
        let mut chop = [true, false, false, false];
        for c in chop.iter_mut().skip(1) {
            *c = rng.chance(0.45);
        }
        ChordSection { strum, chop }
    }
}
