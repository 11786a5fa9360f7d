//! The arranger: turns a request and a `Style` into a `Score` (mixer parts plus timed notes).
//! This file owns the mixer parts, the chord timeline with a closing V–I cadence, the ending and the
//! bar loop; the seams live beside it: the meter and beat grid (`grid`), the form (`form`), and one
//! file per part: `drums`, `bass`, `chords` (with pad and counter-line) and `melody`.

mod bass;
mod chords;
mod drums;
mod form;
mod grid;
mod melody;

use super::dmath::{self, Rng};
use super::score::{Kit, Note, Part, Score, SectionKind, Timbre, Voice};
use super::style::{ChordPattern, DrumPattern, Style};
use super::tags::Genre;
use super::theory::{self, Chord, Harmony, Key, Mode};
use bass::BassSection;
use chords::ChordSection;
use drums::DrumSection;
use form::{layers, plan_sections};
use grid::{beat_map, meter_groups, BeatInfo, Grid};
use melody::Melody;

/// The final hit lands at least this many seconds before the end of the track (the held tonic
/// and the master's fade follow it).
const ENDING_TAIL_S: f64 = 2.5;

/// Indices of the mixer parts a style uses.
#[derive(Debug, Default, Clone, Copy)]
struct PartIds {
    kick: Option<u16>,
    snare: Option<u16>,
    clap: Option<u16>,
    hat: Option<u16>,
    open_hat: Option<u16>,
    ride: Option<u16>,
    crash: Option<u16>,
    shaker: Option<u16>,
    tom: Option<u16>,
    bass: Option<u16>,
    chords: Option<u16>,
    pad: Option<u16>,
    melody: Option<u16>,
    counter: Option<u16>,
}

struct Arranger<'a> {
    key: Key,
    style: &'a Style,
    grid: Grid,
    beats: Vec<BeatInfo>,
    groups: Vec<u32>,
    ids: PartIds,
    notes: Vec<Note>,
    kicks: Vec<f64>,
    /// Chord of every bar (index = bar).
    chords: Vec<Chord>,
    /// Bars per chord.
    chord_bars: u32,
    total_s: f64,
    /// Bar from which the ending plays (final tonic), if the track is long enough for one.
    ending: Option<u32>,
    human: Rng,
    /// Voice of each mixer part, by index.
    part_voices: Vec<Voice>,
    seeds: Rng,
}

/// Arranges the request: `bpm`, `beats` per bar, `duration` seconds, all choices from `seed`.
pub fn arrange(key: Key, style: &Style, bpm: u32, beats: u32, duration: f64, seed: u64) -> Score {
    let spb = 60.0 / bpm as f64;
    let bpb = beats.clamp(2, 12);
    let grid = Grid {
        spb,
        bpb,
        swing: style.swing.clamp(0.5, 0.7),
        pair: 2.0 / style.swing_div.max(2) as f64,
    };
    let bar_s = grid.bar_len();
    let slow_harmony = style.harmony == Harmony::Static
        || matches!(style.genre, Genre::Ambient | Genre::Cinematic);
    let mut chord_bars = if bar_s < 0.45 {
        4
    } else if bar_s < 0.9 {
        2
    } else {
        1
    };
    if slow_harmony && bar_s * chord_bars as f64 <= 2.5 {
        chord_bars *= 2;
    }
    let total_bars = ((duration / bar_s).ceil() as u32).max(1);
    let phrase_bars = 4 * chord_bars;
    let sections = plan_sections(total_bars, phrase_bars);

    let mut hrng = Rng::stream(seed, "harmony");
    let main = theory::progression(key.mode, style.harmony, &mut hrng);
    let chorus = if hrng.chance(0.5) {
        main
    } else {
        theory::progression(key.mode, style.harmony, &mut hrng)
    };
    let bridge = theory::bridge_progression(key.mode, &mut hrng);
    let outro = [0, 3, 4, 0];
    let seventh = style.sevenths;
    let mut chords = Vec::new();
    for s in &sections {
        let prog = match s.kind {
            SectionKind::Chorus => chorus,
            SectionKind::Bridge => bridge,
            SectionKind::Outro => outro,
            _ => main,
        };
        for b in 0..s.bars {
            let degree = prog[((b / chord_bars) % 4) as usize];
            // A minor tonic stays a triad: i7 (A C E G) is also C6, the relative major.
            chords.push(key.chord(degree, seventh && !(degree == 0 && key.mode == Mode::Minor)));
        }
    }
    // The close: V then I, landing a little before the end so the tonic is heard.
    let ending = if total_bars >= 4 {
        let land = (duration - (0.75 * bar_s).min(3.0)).max(0.0);
        let e = ((land / bar_s) as u32).min(total_bars - 1);
        for c in chords.iter_mut().skip(e as usize) {
            *c = key.chord(0, false);
        }
        if e >= 1 {
            chords[e as usize - 1] = key.chord(4, seventh);
        }
        Some(e)
    } else {
        None
    };

    let mut a = Arranger {
        key,
        style,
        grid,
        beats: beat_map(&meter_groups(bpb)),
        groups: meter_groups(bpb),
        ids: PartIds::default(),
        notes: Vec::new(),
        kicks: Vec::new(),
        chords,
        chord_bars,
        total_s: duration,
        ending,
        human: Rng::stream(seed, "humanize"),
        part_voices: Vec::new(),
        seeds: Rng::stream(seed, "note-seeds"),
    };
    let parts = a.make_parts(bpm);
    a.part_voices = parts.iter().map(|p| p.voice).collect();
    let phrases = total_bars.div_ceil(phrase_bars) as usize;
    let mut mel = Melody::new(&a, Rng::stream(seed, "melody"));
    for (si, s) in sections.iter().enumerate() {
        let l = layers(s.kind, style, phrases);
        let mut drng = Rng::stream(seed, "drums").fork(&format!("section{si}"));
        let mut brng = Rng::stream(seed, "bass").fork(&format!("section{si}"));
        let mut crng = Rng::stream(seed, "chords").fork(&format!("section{si}"));
        let dsec = DrumSection::new(&a, &mut drng);
        let bsec = BassSection::new(a.quick_triple() || a.grid.slow(), &mut brng);
        let csec = ChordSection::new(&a, &mut crng);
        let first_section = si == 0;
        for b in s.start_bar..(s.start_bar + s.bars).min(total_bars) {
            if a.grid.time(b, 0.0) >= duration {
                break;
            }
            let last_of_section = b + 1 == s.start_bar + s.bars && si + 1 < sections.len();
            let in_ending = a.ending.is_some_and(|e| b >= e);
            if in_ending {
                let first = b == a.ending.unwrap_or(0);
                // In a long final bar the band keeps the beat up to the final hit.
                let hit_beat = if first { a.final_hit_beat(b) } else { 0 };
                if hit_beat > 0 {
                    let cut = a.grid.time(b, hit_beat as f64);
                    let from = a.notes.len();
                    if l.drums > 0 {
                        a.drum_bar(b, l.drums, &dsec, &mut drng, false, false);
                    }
                    if l.bass {
                        a.bass_bar(b, &bsec, &mut brng, l.drums >= 2);
                    }
                    a.cut_from(from, cut);
                }
                a.ending_bar(b, first, hit_beat);
                continue;
            }
            if l.drums > 0 {
                let crash = b == s.start_bar
                    && !first_section
                    && matches!(s.kind, SectionKind::Chorus | SectionKind::Verse);
                a.drum_bar(b, l.drums, &dsec, &mut drng, last_of_section, crash);
            }
            if l.bass {
                a.bass_bar(b, &bsec, &mut brng, l.drums >= 2);
            }
            if l.chords {
                a.chord_bar(b, &csec, &mut crng, s.kind);
            }
            if l.pad {
                a.pad_bar(b);
            }
            if l.counter {
                a.counter_bar(b);
            }
            if l.melody > 0 {
                mel.bar(&mut a, b, l.melody, b - s.start_bar);
            }
        }
    }
    a.notes.retain(|n| n.start < duration);
    a.notes
        .sort_by(|x, y| x.start.total_cmp(&y.start).then(x.part.cmp(&y.part)));
    Score {
        parts,
        notes: a.notes,
        kicks: a.kicks,
        spb,
    }
}

impl Arranger<'_> {
    fn make_parts(&mut self, bpm: u32) -> Vec<Part> {
        let st = self.style;
        let mut parts = Vec::new();
        let base = Timbre {
            bright: st.bright,
            drive: st.drive,
            kit: st.kit,
            wobble_hz: st.wobble * 2.0 * bpm as f64 / 60.0,
        };
        let rv = st.reverb;
        let dl = st.delay;
        let mut add =
            |voice: Voice, gain_db: f64, pan: f32, reverb: f32, delay: f32, duck: bool| {
                parts.push(Part {
                    voice,
                    timbre: base,
                    gain: dmath::db(gain_db) as f32,
                    pan,
                    reverb,
                    delay,
                    duck,
                });
                Some((parts.len() - 1) as u16)
            };
        let e = (st.energy - 0.7) * 6.0;
        if let Some(p) = st.drums {
            let ids = &mut self.ids;
            ids.kick = add(Voice::Kick, -3.0 + e * 0.5, 0.0, 0.03 * rv, 0.0, false);
            match p {
                DrumPattern::Cinematic => {
                    ids.tom = add(Voice::Taiko, -3.0, 0.0, 0.8 * rv, 0.0, false);
                    ids.snare = add(Voice::Snare, -12.0, 0.1, 0.6 * rv, 0.0, false);
                    ids.crash = add(Voice::Crash, -16.0, -0.2, 0.6 * rv, 0.0, false);
                }
                DrumPattern::Pulse => {
                    // Ambient keeps only the soft low pulse; folk adds a shaker.
                    if st.kit != Kit::Soft {
                        ids.shaker = add(Voice::Shaker, -17.0 + e, 0.3, 0.5 * rv, 0.0, false);
                    }
                }
                _ => {
                    let backbeat = match p {
                        DrumPattern::Reggae | DrumPattern::Bossa => Voice::Rim,
                        _ => Voice::Snare,
                    };
                    ids.snare = add(backbeat, -6.0 + e, 0.05, 0.5 * rv, 0.0, false);
                    if matches!(
                        p,
                        DrumPattern::FourFloor | DrumPattern::Trap | DrumPattern::HipHop
                    ) && st.kit == Kit::Electronic
                    {
                        ids.clap = add(Voice::Clap, -9.0 + e, -0.05, 0.6 * rv, 0.0, false);
                    }
                    ids.hat = add(Voice::HatClosed, -15.0 + e, 0.25, 0.2 * rv, 0.0, false);
                    ids.open_hat = add(Voice::HatOpen, -19.0 + e, 0.25, 0.3 * rv, 0.0, false);
                    ids.crash = add(Voice::Crash, -17.0, -0.25, 0.5 * rv, 0.0, false);
                    ids.tom = add(Voice::Tom, -9.0, 0.0, 0.4 * rv, 0.0, false);
                    if p == DrumPattern::Jazz {
                        ids.ride = add(Voice::Ride, -16.0, -0.3, 0.4 * rv, 0.0, false);
                    }
                    if p == DrumPattern::Bossa {
                        ids.shaker = add(Voice::Shaker, -18.0, 0.35, 0.3 * rv, 0.0, false);
                    }
                }
            }
        }
        if let Some((v, _)) = st.bass {
            let g = if v == Voice::Sub808 { -4.0 } else { -5.0 };
            self.ids.bass = add(v, g, 0.0, 0.05 * rv, 0.0, false);
        }
        if let Some((v, p)) = st.chords {
            let pan = if p == ChordPattern::Strum || p == ChordPattern::Power {
                -0.3
            } else {
                -0.12
            };
            let g = match p {
                ChordPattern::Sustain => -7.0,
                ChordPattern::Power => -11.0,
                _ => -9.0,
            };
            self.ids.chords = add(v, g, pan, 0.8 * rv, 0.2 * dl, st.duck);
        }
        if let Some(v) = st.pad {
            self.ids.pad = add(v, -11.0, 0.0, 1.2 * rv, 0.0, st.duck);
        }
        if let Some(v) = st.melody {
            self.ids.melody = add(v, -8.0, 0.08, 0.9 * rv, dl, false);
        }
        if let Some((v, _)) = st.counter {
            self.ids.counter = add(v, -15.0, 0.3, 1.0 * rv, 0.7 * dl, st.duck);
        }
        // Darker pads, brighter leads.
        for p in parts.iter_mut() {
            if matches!(p.voice, Voice::Pad | Voice::Choir) {
                p.timbre.bright *= 0.7;
            }
        }
        parts
    }

    /// Appends a note at `beat` of `bar` (seconds from the grid, plus humanisation `human_sd`).
    #[allow(clippy::too_many_arguments)]
    fn note(
        &mut self,
        part: Option<u16>,
        bar: u32,
        beat: f64,
        dur_beats: f64,
        pitch: i32,
        vel: f32,
        human_sd: f64,
    ) {
        let Some(part) = part else { return };
        let t = self.grid.time(bar, beat)
            + if human_sd > 0.0 {
                self.human.gauss(human_sd)
            } else {
                0.0
            };
        let start = t.max(0.0);
        let seed = self.seeds.seed32();
        self.notes.push(Note {
            part,
            start,
            dur: (dur_beats * self.grid.spb).max(0.01),
            pitch: pitch as f32,
            vel: vel.clamp(0.02, 1.0),
            pan: 0.0,
            glide: 0.0,
            seed,
        });
    }

    /// The beat of the final bar `bar` on which the final hit lands: the last group start at
    /// least [`ENDING_TAIL_S`] before the end (0, the bar's downbeat, when none is). A slow or
    /// long bar then keeps its pulse for its first groups instead of leaving a quarter of a short
    /// track without a beat, which reads as no tempo (or as twice the tempo) to an analyser.
    fn final_hit_beat(&self, bar: u32) -> u32 {
        let mut start = 0;
        let mut hit = 0;
        for &g in &self.groups {
            if start > 0 && self.grid.time(bar, start as f64) <= self.total_s - ENDING_TAIL_S {
                hit = start;
            }
            start += g;
        }
        hit
    }

    /// Drops the notes from index `from` on that start at or after `cut` seconds and shortens the
    /// rest to end there (with the kicks the ducking follows).
    fn cut_from(&mut self, from: usize, cut: f64) {
        let mut i = from;
        while i < self.notes.len() {
            let n = &mut self.notes[i];
            if n.start >= cut - 1e-9 {
                self.notes.swap_remove(i);
                continue;
            }
            n.dur = n.dur.min(cut - n.start).max(0.01);
            i += 1;
        }
        self.kicks.retain(|&k| k < cut - 1e-9);
    }

    /// The final bar: from `hit_beat` one last hit, then the tonic held to the end (the master
    /// fades it); the chords, pad and melody land on the tonic at the bar's downbeat.
    fn ending_bar(&mut self, bar: u32, first: bool, hit_beat: u32) {
        if !first {
            return;
        }
        let rest = (self.total_s - self.grid.time(bar, 0.0)) / self.grid.spb + 0.5;
        let hb = hit_beat as f64;
        if self.style.drums.is_some() {
            self.hit(self.ids.kick, bar, hb, 1.0);
            self.hit(self.ids.crash, bar, hb, 0.8);
            if self.style.drums == Some(DrumPattern::Cinematic) {
                self.hit(self.ids.tom, bar, hb, 1.0);
            }
        }
        let chord = self.key.chord(0, false);
        let root = self.bass_root(&chord);
        if self.style.bass.is_some() {
            self.note(self.ids.bass, bar, hb, rest - hb, root, 0.8, 0.0);
        }
        let semis: Vec<i32> = chord.semis().collect();
        let tonic_c = self.key.tonic as i32;
        for (part, center) in [(self.ids.chords, self.chord_center()), (self.ids.pad, 60)] {
            if part.is_some() {
                for n in theory::voice_chord(&semis, tonic_c, center, &[]) {
                    self.note(part, bar, 0.0, rest, n, 0.6, 0.0);
                }
            }
        }
        if let Some(v) = self.style.melody {
            let t = self.melody_tonic(v);
            self.note(self.ids.melody, bar, 0.0, rest, t, 0.7, 0.0);
        }
    }

    fn chord_at(&self, bar: u32) -> Chord {
        let i = (bar as usize).min(self.chords.len().saturating_sub(1));
        self.chords[i]
    }

    /// Whether `bar` is the first bar of its chord.
    fn chord_starts(&self, bar: u32) -> bool {
        bar == 0 || self.chord_at(bar) != self.chord_at(bar - 1) || bar % self.chord_bars == 0
    }

    /// Bars the chord starting at `bar` lasts.
    fn chord_span(&self, bar: u32) -> u32 {
        let c = self.chord_at(bar);
        let mut k = 1;
        while k < self.chord_bars
            && (bar + k) < self.chords.len() as u32
            && self.chord_at(bar + k) == c
        {
            k += 1;
        }
        k
    }
}

#[cfg(test)]
mod tests {
    use super::super::style::style_for;
    use super::super::tags::parse_tags;
    use super::super::theory::parse_keyscale;
    use super::*;

    fn score(tags: &str, bpm: u32, beats: u32, dur: f64, seed: u64) -> Score {
        let style = style_for(&parse_tags(tags), &mut Rng::stream(seed, "style"));
        arrange(
            parse_keyscale("A minor").unwrap(),
            &style,
            bpm,
            beats,
            dur,
            seed,
        )
    }

    #[test]
    fn meters_group_into_twos_and_threes() {
        assert_eq!(meter_groups(4), vec![2, 2]);
        assert_eq!(meter_groups(3), vec![3]);
        assert_eq!(meter_groups(6), vec![3, 3]);
        assert_eq!(meter_groups(5), vec![3, 2]);
        assert_eq!(meter_groups(7), vec![2, 2, 3]);
        for n in 2..=12 {
            let g = meter_groups(n);
            assert_eq!(g.iter().sum::<u32>(), n);
            assert!(g.iter().all(|&x| x == 2 || x == 3));
        }
    }

    #[test]
    fn a_long_final_bar_keeps_its_pulse_until_the_final_hit() {
        // 65 bpm in 6/8: a bar lasts 5.5 s, so a final bar silent after its downbeat would leave
        // the last 7.8 s of a 30 s track without a beat.
        let s = score("house", 65, 6, 30.0, 1002);
        let spb = 60.0 / 65.0;
        let last = s.kicks.iter().cloned().fold(0.0f64, f64::max);
        assert!(last > 30.0 - 6.0 * spb, "last kick at {last:.2} s");
        assert!(
            last <= 30.0 - ENDING_TAIL_S + 1e-9,
            "last kick at {last:.2} s"
        );
        // The kicks before it stay on the beat, with no gap longer than a beat.
        for w in s.kicks.windows(2) {
            assert!(
                w[1] - w[0] <= spb + 1e-6,
                "gap {:.2} s at {:.2} s",
                w[1] - w[0],
                w[0]
            );
        }
        assert!(s.kicks.len() > 20);
        // A quick 4/4 bar is short: the final hit stays on its downbeat.
        let q = score("rock", 150, 4, 30.0, 5);
        let bar = 4.0 * 60.0 / 150.0;
        let last = q.kicks.iter().cloned().fold(0.0f64, f64::max);
        assert!(((last / bar).round() * bar - last).abs() < 1e-6, "{last}");
    }

    #[test]
    fn swing_moves_only_offbeats() {
        let g = Grid {
            spb: 0.5,
            bpb: 4,
            swing: 0.62,
            pair: 1.0,
        };
        for beat in 0..8 {
            assert!((g.time(0, beat as f64) - beat as f64 * 0.5).abs() < 1e-12);
        }
        assert!((g.time(0, 0.5) - 0.31).abs() < 1e-12);
        assert!((g.time(1, 1.5) - (5.0 * 0.5 + 0.31)).abs() < 1e-12);
    }

    #[test]
    fn sections_cover_the_duration() {
        for bars in [1, 3, 8, 17, 40, 300] {
            let s = plan_sections(bars, 4);
            assert_eq!(s[0].start_bar, 0);
            let end = s.last().map(|x| x.start_bar + x.bars).unwrap();
            assert!(end >= bars && end < bars + 4, "{bars}: {s:?}");
            for w in s.windows(2) {
                assert_eq!(w[0].start_bar + w[0].bars, w[1].start_bar);
                assert_ne!(w[0].kind, w[1].kind);
            }
        }
        let long = plan_sections(40, 4);
        assert_eq!(long[0].kind, SectionKind::Intro);
        assert_eq!(long.last().unwrap().kind, SectionKind::Outro);
        assert!(long.iter().any(|s| s.kind == SectionKind::Chorus));
    }

    #[test]
    fn kicks_sit_on_the_beat_grid() {
        for (tags, beats) in [
            ("rock", 4),
            ("house", 4),
            ("lofi", 3),
            ("jazz", 5),
            ("pop", 7),
            ("hip hop", 6),
        ] {
            let s = score(tags, 97, beats, 30.0, 3);
            let spb = 60.0 / 97.0;
            let on_grid = s
                .kicks
                .iter()
                .filter(|&&t| {
                    let b = t / spb;
                    (b - b.round()).abs() < 1e-6
                })
                .count();
            assert!(s.kicks.len() > 10, "{tags}");
            // Every downbeat of the first bars has a kick exactly on it.
            for bar in 0..4 {
                let t = bar as f64 * beats as f64 * spb;
                assert!(
                    s.kicks.iter().any(|&k| (k - t).abs() < 1e-9),
                    "{tags}: no kick on bar {bar}"
                );
            }
            assert!(
                on_grid * 10 >= s.kicks.len() * 6,
                "{tags}: {on_grid}/{}",
                s.kicks.len()
            );
            assert!(s.kicks.iter().all(|&k| (0.0..30.0).contains(&k)));
        }
    }

    #[test]
    fn harmony_is_in_key_and_ends_on_the_tonic() {
        let s = score("pop", 120, 4, 60.0, 11);
        let key = parse_keyscale("A minor").unwrap();
        // Every pitched note is a tone of A harmonic/natural minor (G and G# both allowed).
        let allowed = [9, 11, 0, 2, 4, 5, 7, 8];
        for n in &s.notes {
            let v = s.parts[n.part as usize].voice;
            if v.is_drum() {
                continue;
            }
            let pc = (n.pitch as i32).rem_euclid(12);
            assert!(allowed.contains(&pc), "{v:?} {}", n.pitch);
        }
        // The last bass note is the tonic.
        let bass = s
            .parts
            .iter()
            .position(|p| matches!(p.voice, Voice::SynthBass | Voice::FingerBass))
            .unwrap() as u16;
        let last = s.notes.iter().rev().find(|n| n.part == bass).unwrap();
        assert_eq!((last.pitch as i32 - key.tonic as i32).rem_euclid(12), 0);
    }

    #[test]
    fn every_meter_arranges() {
        for beats in 2..=12 {
            for tags in [
                "pop",
                "jazz",
                "ambient",
                "cinematic",
                "classical",
                "drum and bass",
                "latin",
                "country",
            ] {
                let s = score(tags, 120, beats, 20.0, beats as u64);
                assert!(!s.notes.is_empty());
                assert!(s
                    .notes
                    .iter()
                    .all(|n| n.start >= 0.0 && n.start < 20.0 && n.dur > 0.0));
            }
        }
    }
}
