//! The arranger: turns a request and a `Style` into a `Score` (mixer parts plus timed notes).
//! It owns the meter (beats grouped in twos and threes, accents per group), the beat grid (exactly
//! `60/bpm` s per beat; swing moves only off-beats, humanisation is zero-mean), the sections sized
//! to the duration, the chord timeline with a closing V–I cadence, and the parts' patterns:
//! drums, bass, chords, pad, counter-line and a phrase-structured melody.

use super::dmath::{self, Rng};
use super::dsp::SR;
use super::style::{BassPattern, ChordPattern, CounterPattern, DrumPattern, Style};
use super::tags::Genre;
use super::theory::{self, Chord, Harmony, Key, Mode};
use super::voices::{Kit, Note, Timbre, Voice};

/// A mixer channel: one voice with its level, placement, sends and timbre.
#[derive(Debug, Clone)]
pub struct Part {
    /// What it sounds like.
    pub voice: Voice,
    /// Filter, drive and kit settings passed to the voice.
    pub timbre: Timbre,
    /// Linear gain.
    pub gain: f32,
    /// Stereo position, -1 (left) … 1 (right).
    pub pan: f32,
    /// Reverb send, linear.
    pub reverb: f32,
    /// Echo send, linear.
    pub delay: f32,
    /// Dips under the kick (four-on-the-floor pumping).
    pub duck: bool,
}

/// A section of the form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    Intro,
    Verse,
    Chorus,
    Bridge,
    Outro,
}

/// A run of bars with one role in the form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    pub kind: SectionKind,
    pub start_bar: u32,
    pub bars: u32,
}

/// Everything the mixer needs to render the track.
#[derive(Debug, Clone)]
pub struct Score {
    pub parts: Vec<Part>,
    pub notes: Vec<Note>,
    /// Onsets of the kick drum (seconds), for ducking.
    pub kicks: Vec<f64>,
    /// Seconds per beat.
    pub spb: f64,
}

/// Splits a bar of `beats` into accent groups of twos and threes (4 → 2+2, 6 → 3+3, 5 → 3+2,
/// 7 → 2+2+3, 8 → 3+3+2 …): a group's first beat is accented.
pub fn meter_groups(beats: u32) -> Vec<u32> {
    match beats {
        0 | 1 => vec![1],
        2 | 3 => vec![beats],
        4 => vec![2, 2],
        7 => vec![2, 2, 3],
        n if n % 3 == 0 => vec![3; (n / 3) as usize],
        n => {
            // As many threes as leave an even remainder, then twos.
            let mut threes = n / 3;
            while (n - 3 * threes) % 2 != 0 {
                threes -= 1;
            }
            let mut g = vec![3; threes as usize];
            g.extend(std::iter::repeat_n(2, ((n - 3 * threes) / 2) as usize));
            g
        }
    }
}

/// What each beat of a bar does in a backbeat pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Beat {
    /// Kick (group start).
    K,
    /// Snare (backbeat).
    S,
    /// Softer snare (waltz after-beats).
    Ss,
    /// Hat only.
    H,
}

/// Position of one beat in its meter.
#[derive(Debug, Clone, Copy)]
struct BeatInfo {
    role: Beat,
    /// First beat of its group.
    group_start: bool,
    /// Accent weight: downbeat 1.0, other group starts 0.9, the rest 0.8.
    strength: f32,
}

fn beat_map(groups: &[u32]) -> Vec<BeatInfo> {
    let compound = groups.len() >= 2 && groups.iter().all(|&g| g == 3);
    let mut out = Vec::new();
    for (gi, &len) in groups.iter().enumerate() {
        for p in 0..len {
            let role = if groups.len() == 1 {
                match (len, p) {
                    (_, 0) => Beat::K,
                    (2, _) => Beat::S,
                    _ => Beat::Ss,
                }
            } else if compound {
                match (p, gi % 2) {
                    (0, 0) => Beat::K,
                    (0, _) => Beat::S,
                    _ => Beat::H,
                }
            } else {
                match (len, p) {
                    (_, 0) => Beat::K,
                    (2, 1) | (3, 2) => Beat::S,
                    _ => Beat::H,
                }
            };
            let strength = match (gi, p) {
                (0, 0) => 1.0,
                (_, 0) => 0.9,
                _ => 0.8,
            };
            out.push(BeatInfo {
                role,
                group_start: p == 0,
                strength,
            });
        }
    }
    out
}

/// The beat grid: bar and beat → seconds, with swing applied to off-beats only.
#[derive(Debug, Clone, Copy)]
struct Grid {
    spb: f64,
    bpb: u32,
    swing: f64,
    /// Length of a swung pair in beats (1 for swung eighths, 0.5 for sixteenths).
    pair: f64,
}

impl Grid {
    fn time(&self, bar: u32, beat: f64) -> f64 {
        let abs = bar as f64 * self.bpb as f64 + beat;
        let pairs = (abs / self.pair).floor();
        let x = abs / self.pair - pairs;
        let s = self.swing;
        let warped = if x < 0.5 {
            x * (s / 0.5)
        } else {
            s + (x - 0.5) * ((1.0 - s) / 0.5)
        };
        (pairs + warped) * self.pair * self.spb
    }

    fn bar_len(&self) -> f64 {
        self.bpb as f64 * self.spb
    }
}

/// Layers active in a section.
#[derive(Debug, Clone, Copy)]
struct Layers {
    /// 0 silent, 1 light (kick and hats), 2 full.
    drums: u8,
    bass: bool,
    chords: bool,
    pad: bool,
    /// 0 none, 1 verse motif, 2 chorus motif.
    melody: u8,
    counter: bool,
}

fn layers(kind: SectionKind, style: &Style, phrases: usize) -> Layers {
    let no_melody = style.melody.is_none();
    let no_chords = style.chords.is_none();
    let mut l = match kind {
        SectionKind::Intro => Layers {
            drums: 1,
            bass: phrases <= 3,
            chords: true,
            pad: true,
            melody: 0,
            counter: true,
        },
        SectionKind::Verse => Layers {
            drums: 2,
            bass: true,
            chords: true,
            pad: no_chords,
            melody: 1,
            counter: no_melody,
        },
        SectionKind::Chorus => Layers {
            drums: 2,
            bass: true,
            chords: true,
            pad: true,
            melody: 2,
            counter: true,
        },
        SectionKind::Bridge => Layers {
            drums: 1,
            bass: true,
            chords: true,
            pad: true,
            melody: if style.counter.is_none() { 1 } else { 0 },
            counter: true,
        },
        SectionKind::Outro => Layers {
            drums: 1,
            bass: true,
            chords: true,
            pad: true,
            melody: 0,
            counter: true,
        },
    };
    if style.drums.is_none() {
        l.drums = 0;
    }
    l
}

/// Sections for `total_bars`, in whole phrases of `phrase_bars` (the last may run past the end).
fn plan_sections(total_bars: u32, phrase_bars: u32) -> Vec<Section> {
    use SectionKind::*;
    let p = total_bars.div_ceil(phrase_bars).max(1) as usize;
    let kinds: Vec<SectionKind> = match p {
        1 => vec![Verse],
        2 => vec![Verse, Chorus],
        3 => vec![Intro, Verse, Chorus],
        4 => vec![Intro, Verse, Chorus, Outro],
        _ => {
            const BODY: [SectionKind; 12] = [
                Verse, Verse, Chorus, Chorus, Verse, Verse, Chorus, Chorus, Bridge, Bridge, Chorus,
                Chorus,
            ];
            let mut k = vec![Intro];
            k.extend((0..p - 2).map(|i| BODY[i % BODY.len()]));
            k.push(Outro);
            k
        }
    };
    let mut out: Vec<Section> = Vec::new();
    for (i, kind) in kinds.into_iter().enumerate() {
        let start = i as u32 * phrase_bars;
        match out.last_mut() {
            Some(s) if s.kind == kind => s.bars += phrase_bars,
            _ => out.push(Section {
                kind,
                start_bar: start,
                bars: phrase_bars,
            }),
        }
    }
    out
}

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

/// Melody register shift of a voice (bells sit an octave up, brass and guitar lower).
fn melody_shift(v: Voice, genre: Genre) -> i32 {
    match v {
        Voice::Bells if genre == Genre::Ambient => 0,
        Voice::Bells => 12,
        Voice::Brass | Voice::ElectricGuitar | Voice::Strings => -5,
        _ => 0,
    }
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
        let bsec = BassSection::new(a.quick_triple(), &mut brng);
        let csec = ChordSection::new(&a, &mut crng);
        let first_section = si == 0;
        for b in s.start_bar..(s.start_bar + s.bars).min(total_bars) {
            if a.grid.time(b, 0.0) >= duration {
                break;
            }
            let last_of_section = b + 1 == s.start_bar + s.bars && si + 1 < sections.len();
            let in_ending = a.ending.is_some_and(|e| b >= e);
            if in_ending {
                a.ending_bar(b, b == a.ending.unwrap_or(0));
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

    fn hit(&mut self, part: Option<u16>, bar: u32, beat: f64, vel: f32) {
        let sd = if part == self.ids.kick {
            0.0
        } else {
            self.style.humanize * 0.6
        };
        if part.is_some() && part == self.ids.kick {
            self.kicks.push(self.grid.time(bar, beat));
        }
        let jitter = if self.style.kit == Kit::Electronic {
            0.0
        } else {
            self.human.range(-0.06, 0.06) as f32
        };
        let pitch = self.drum_pitch(part);
        self.note(part, bar, beat, 0.1, pitch, vel + jitter, sd);
    }

    /// Pitched drums are tuned to the key, so their tones reinforce it instead of blurring it:
    /// kick (41–78 Hz), snare, toms, rim and ride bell all sit on the tonic, each in its register.
    fn drum_pitch(&self, part: Option<u16>) -> i32 {
        let t = self.key.tonic as i32;
        let place = |lo: i32, pc: i32| lo + (pc - lo).rem_euclid(12);
        let ids = &self.ids;
        if part == ids.kick {
            place(28, t)
        } else if part == ids.tom {
            if self.style.drums == Some(DrumPattern::Cinematic) {
                place(34, t)
            } else {
                place(43, t)
            }
        } else if part == ids.snare {
            let v = self.parts_voice(part);
            if v == Some(Voice::Rim) {
                place(76, t)
            } else {
                place(53, t)
            }
        } else if part == ids.ride {
            place(88, t)
        } else {
            45
        }
    }

    fn parts_voice(&self, part: Option<u16>) -> Option<Voice> {
        let p = part?;
        self.part_voices.get(p as usize).copied()
    }

    /// The final bars: one last hit, then the tonic held to the end (the master fades it).
    fn ending_bar(&mut self, bar: u32, first: bool) {
        if !first {
            return;
        }
        let rest = (self.total_s - self.grid.time(bar, 0.0)) / self.grid.spb + 0.5;
        if self.style.drums.is_some() {
            self.hit(self.ids.kick, bar, 0.0, 1.0);
            self.hit(self.ids.crash, bar, 0.0, 0.8);
            if self.style.drums == Some(DrumPattern::Cinematic) {
                self.hit(self.ids.tom, bar, 0.0, 1.0);
            }
        }
        let chord = self.key.chord(0, false);
        let root = self.bass_root(&chord);
        if self.style.bass.is_some() {
            self.note(self.ids.bass, bar, 0.0, rest, root, 0.8, 0.0);
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

    fn melody_tonic(&self, v: Voice) -> i32 {
        let center = self.style.melody_center + melody_shift(v, self.style.genre);
        let pc = self.key.tonic as i32;
        center - 6 + (pc - (center - 6)).rem_euclid(12)
    }

    fn chord_center(&self) -> i32 {
        match self.style.chords {
            Some((Voice::Brass, _)) => 57,
            Some((Voice::Pluck | Voice::MutedGuitar, _)) => 64,
            Some((Voice::Pad | Voice::Strings | Voice::Choir, _)) => 60,
            _ => 62,
        }
    }

    fn bass_root(&self, chord: &Chord) -> i32 {
        let lo = match self.style.bass {
            Some((Voice::Sub808, _)) => 27,
            Some((Voice::Strings, _)) => 36,
            Some((Voice::SubBass, _)) => 31,
            _ => 31,
        };
        let pc = (self.key.tonic as i32 + chord.root).rem_euclid(12);
        lo + (pc - lo).rem_euclid(12)
    }

    // ---- drums ----

    /// A triple or compound meter at a quick beat (over 130 bpm). There the beat is already the
    /// subdivision (6/8 counts eighths): halving it again only blurs which level is the beat,
    /// and off-beats 1.5 beats apart line up with the group accents as a false dotted pulse.
    /// Drums then stay on the beats: hats once per beat, extra kicks on unaccented beats.
    fn quick_triple(&self) -> bool {
        self.groups.contains(&3) && self.grid.spb < 60.0 / 130.0
    }

    fn drum_bar(
        &mut self,
        bar: u32,
        level: u8,
        sec: &DrumSection,
        rng: &mut Rng,
        fill: bool,
        crash: bool,
    ) {
        let Some(pattern) = self.style.drums else {
            return;
        };
        let beats = self.beats.clone();
        let n = beats.len();
        let ids = self.ids;
        let full = level >= 2;
        let en = (0.75 + 0.25 * self.style.energy) as f32;
        let fill_from = if fill && full && self.style.fills {
            Some((n - *self.groups.last().unwrap_or(&1) as usize) as f64)
        } else {
            None
        };
        let before_fill = |pos: f64| fill_from.is_none_or(|f| pos < f);
        if crash && (self.style.crash || pattern == DrumPattern::Cinematic) {
            self.hit(ids.crash, bar, 0.0, 0.85);
        }
        let hat_div = if self.quick_triple() {
            1
        } else {
            self.style.hat_div.max(1)
        };
        // At slow tempos the off-beat hats step back, so the beat (not its eighths) leads.
        let slow = if self.grid.spb >= 0.75 { 0.6 } else { 1.0 };
        let hats = |a: &mut Self, beat: usize, vel_scale: f32| {
            for k in 0..hat_div {
                let pos = beat as f64 + k as f64 / hat_div as f64;
                if !before_fill(pos) {
                    continue;
                }
                let v = match (hat_div, k) {
                    (_, 0) => 0.75,
                    (4, 2) => 0.55 * slow,
                    (2, 1) => 0.5 * slow,
                    _ => 0.35 * slow,
                };
                a.hit(ids.hat, bar, pos, v * vel_scale * en);
            }
        };
        match pattern {
            DrumPattern::Backbeat
            | DrumPattern::HipHop
            | DrumPattern::Trap
            | DrumPattern::Funk
            | DrumPattern::Reggae => {
                for (i, b) in beats.iter().enumerate() {
                    let pos = i as f64;
                    if !(before_fill(pos) || b.role == Beat::K && fill_from == Some(pos)) {
                        continue;
                    }
                    match b.role {
                        Beat::K => self.hit(
                            ids.kick,
                            bar,
                            pos,
                            b.strength
                                * en
                                * if pattern == DrumPattern::Reggae {
                                    0.8
                                } else {
                                    1.0
                                },
                        ),
                        Beat::S | Beat::Ss if full => {
                            let v = if b.role == Beat::Ss { 0.55 } else { 0.92 };
                            self.hit(ids.snare, bar, pos, v * en);
                            if ids.clap.is_some() && b.role == Beat::S {
                                self.hit(ids.clap, bar, pos, 0.8 * en);
                            }
                        }
                        // Light sections keep a soft pulse on the backbeats.
                        Beat::S | Beat::Ss => self.hit(ids.kick, bar, pos, 0.55 * en),
                        Beat::H => {}
                    }
                }
                if full {
                    for &(pos, vel) in &sec.extra_kicks {
                        if pos < n as f64 && before_fill(pos) {
                            self.hit(ids.kick, bar, pos, vel * en);
                        }
                    }
                    for &(pos, vel) in &sec.ghosts {
                        if pos < n as f64 && before_fill(pos) {
                            self.hit(ids.snare, bar, pos, vel);
                        }
                    }
                    if self.style.energy >= 0.95 && pattern == DrumPattern::Backbeat {
                        // Metal: double kick on the off-beats.
                        for i in 0..n {
                            if before_fill(i as f64 + 0.5) {
                                self.hit(ids.kick, bar, i as f64 + 0.5, 0.7);
                            }
                        }
                    }
                }
                for i in 0..n {
                    hats(self, i, if full { 1.0 } else { 0.8 });
                }
                if pattern == DrumPattern::Trap && full {
                    for i in 0..n {
                        if rng.chance(0.15) && before_fill(i as f64 + 0.5) {
                            // A hi-hat roll: 32nd notes across the second half of the beat.
                            for k in 0..4 {
                                let pos = i as f64 + 0.5 + k as f64 / 8.0;
                                self.hit(ids.hat, bar, pos, (0.3 + 0.1 * k as f32) * en);
                            }
                        }
                    }
                }
                if full && rng.chance(sec.open_hat_p) {
                    let pos = n as f64 - 0.5;
                    if before_fill(pos) {
                        self.hit(ids.open_hat, bar, pos, 0.6 * en);
                    }
                }
            }
            DrumPattern::FourFloor => {
                for (i, b) in beats.iter().enumerate() {
                    let pos = i as f64;
                    self.hit(ids.kick, bar, pos, if i == 0 { 1.0 } else { 0.92 } * en);
                    if full && matches!(b.role, Beat::S | Beat::Ss) {
                        self.hit(ids.clap.or(ids.snare), bar, pos, 0.85 * en);
                    }
                    if full {
                        self.hit(ids.open_hat, bar, pos + 0.5, 0.6 * en);
                    } else {
                        self.hit(ids.hat, bar, pos + 0.5, 0.55 * en);
                    }
                    if hat_div >= 4 && full {
                        for k in [1.0, 3.0] {
                            self.hit(ids.hat, bar, pos + k / 4.0, 0.35 * en);
                        }
                    }
                }
            }
            DrumPattern::Breakbeat => {
                let mut start = 0usize;
                for (gi, &len) in self.groups.clone().iter().enumerate() {
                    let g0 = start as f64;
                    if len == 2 {
                        if gi == 0 {
                            self.hit(ids.kick, bar, g0, en);
                        } else {
                            self.hit(ids.kick, bar, g0, 0.45 * en);
                            if full {
                                self.hit(ids.kick, bar, g0 + 0.5, 0.9 * en);
                            }
                        }
                        if full {
                            self.hit(ids.snare, bar, g0 + 1.0, 0.95 * en);
                            if rng.chance(0.4) {
                                self.hit(ids.snare, bar, g0 + 1.75, 0.25);
                            }
                        } else {
                            self.hit(ids.kick, bar, g0 + 1.0, 0.5 * en);
                        }
                    } else {
                        self.hit(ids.kick, bar, g0, en * if gi == 0 { 1.0 } else { 0.9 });
                        if full {
                            self.hit(ids.snare, bar, g0 + 2.0, 0.95 * en);
                        }
                    }
                    start += len as usize;
                }
                for i in 0..n {
                    hats(self, i, 1.0);
                }
            }
            DrumPattern::Jazz => {
                for (i, b) in beats.iter().enumerate() {
                    let pos = i as f64;
                    let next_is_back = beats.get(i + 1).is_some_and(|nb| !nb.group_start);
                    self.hit(
                        ids.ride,
                        bar,
                        pos,
                        if b.group_start { 0.7 } else { 0.8 } * en,
                    );
                    if next_is_back {
                        self.hit(ids.ride, bar, pos + 0.5, 0.5 * en);
                    }
                    if !b.group_start {
                        self.hit(ids.hat, bar, pos, 0.55);
                    }
                    self.hit(ids.kick, bar, pos, if i == 0 { 0.55 } else { 0.4 });
                    if full && rng.chance(0.25) {
                        let v = self.human.range(0.25, 0.5) as f32;
                        self.hit(ids.snare, bar, pos + 0.5, v);
                    }
                }
            }
            DrumPattern::Cinematic => {
                for (i, b) in beats.iter().enumerate() {
                    let pos = i as f64;
                    if b.group_start {
                        self.hit(ids.tom, bar, pos, b.strength * en);
                        self.hit(ids.kick, bar, pos, 0.8 * b.strength);
                    } else {
                        let before = self.notes.len();
                        self.hit(ids.tom, bar, pos, if full { 0.55 } else { 0.4 } * en);
                        if let Some(nt) = self.notes.get_mut(before) {
                            let tom = 43 + (self.key.tonic as i32 - 43).rem_euclid(12);
                            nt.pitch = (tom + [0, 7, 12][i % 3]) as f32;
                            nt.pan = 0.3 - 0.2 * (i % 3) as f32;
                        }
                    }
                }
                if fill {
                    // Snare roll into the next section, growing louder.
                    let from = (n as f64 - 2.0).max(0.0);
                    let steps = ((n as f64 - from) * 4.0) as usize;
                    for k in 0..steps {
                        let v = 0.25 + 0.6 * k as f32 / steps as f32;
                        self.hit(ids.snare, bar, from + k as f64 / 4.0, v);
                    }
                }
            }
            DrumPattern::Pulse => {
                for (i, b) in beats.iter().enumerate() {
                    let pos = i as f64;
                    if b.group_start {
                        self.hit(ids.kick, bar, pos, if i == 0 { 0.8 } else { 0.65 });
                    } else if ids.shaker.is_none() {
                        // A felt heartbeat on the other beats keeps the tempo audible.
                        self.hit(ids.kick, bar, pos, 0.45);
                    }
                    self.hit(ids.shaker, bar, pos, 0.55);
                    if self.style.energy > 0.35 {
                        self.hit(ids.shaker, bar, pos + 0.5, 0.3);
                    }
                }
            }
            DrumPattern::Train => {
                for (i, b) in beats.iter().enumerate() {
                    let pos = i as f64;
                    if b.role == Beat::K {
                        self.hit(ids.kick, bar, pos, b.strength * en);
                    }
                    for k in 0..2 {
                        let back = k == 0 && matches!(b.role, Beat::S | Beat::Ss);
                        let v = if back {
                            0.85
                        } else if k == 0 {
                            0.45
                        } else {
                            0.3
                        };
                        if full || back {
                            self.hit(ids.snare, bar, pos + k as f64 * 0.5, v * en);
                        }
                    }
                    hats(self, i, 0.6);
                }
            }
            DrumPattern::Bossa => {
                for (i, b) in beats.iter().enumerate() {
                    let pos = i as f64;
                    self.hit(ids.kick, bar, pos, if b.group_start { 0.75 } else { 0.55 });
                    if full && !b.group_start {
                        self.hit(ids.kick, bar, pos - 0.25, 0.35);
                    }
                    for k in 0..4 {
                        self.hit(
                            ids.shaker,
                            bar,
                            pos + k as f64 / 4.0,
                            if k == 0 { 0.45 } else { 0.25 },
                        );
                    }
                }
                if full {
                    let clave: &[f64] = if n == 4 {
                        if bar % 2 == 0 {
                            &[0.0, 1.5, 3.0]
                        } else {
                            &[1.0, 2.0]
                        }
                    } else {
                        &[]
                    };
                    if clave.is_empty() {
                        for (i, b) in beats.iter().enumerate() {
                            if !b.group_start {
                                self.hit(ids.snare, bar, i as f64 + 0.5, 0.7);
                            }
                        }
                    }
                    for &p in clave {
                        self.hit(ids.snare, bar, p, 0.75);
                    }
                }
            }
        }
        if let Some(from) = fill_from {
            // Fill: 16ths (8ths when fast) over the last group, toms falling, louder to the end.
            let step = if self.grid.spb < 0.35 { 0.5 } else { 0.25 };
            let count = ((n as f64 - from) / step) as usize;
            for k in 0..count {
                let pos = from + k as f64 * step;
                let v = 0.45 + 0.5 * k as f32 / count.max(1) as f32;
                if k % 3 == 2 && ids.tom.is_some() {
                    let before = self.notes.len();
                    self.hit(ids.tom, bar, pos, v);
                    if let Some(nt) = self.notes.get_mut(before) {
                        // Falling through the tonic chord: octave, fifth, root, low fifth.
                        let tom = 43 + (self.key.tonic as i32 - 43).rem_euclid(12);
                        nt.pitch = (tom + [12, 7, 0, -5][(k / 3) % 4]) as f32;
                        nt.pan = 0.4 - 0.2 * k as f32 / count as f32;
                    }
                } else {
                    self.hit(ids.snare, bar, pos, v);
                }
            }
        }
    }

    // ---- bass ----

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

    fn bass_bar(&mut self, bar: u32, sec: &BassSection, rng: &mut Rng, full: bool) {
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
                    if legato && full && sec.pickup && last && len >= 2 {
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
                for i in 0..n {
                    for k in 0..2 {
                        let pos = i as f64 + 0.5 * k as f64;
                        let mut p = if pattern == BassPattern::Octaves && k == 1 {
                            root + 12
                        } else {
                            root
                        };
                        if changes && i + 1 == n && k == 1 && pattern == BassPattern::Eighths {
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
                        self.note(ids.bass, bar, pos, 0.45, p, v, hs);
                    }
                }
            }
            BassPattern::Offbeat => {
                let trance = self.style.genre == Genre::Trance;
                for i in 0..n {
                    if trance {
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

    // ---- chords ----

    fn voiced(&self, chord: &Chord, center: i32) -> Vec<i32> {
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

    fn chord_bar(&mut self, bar: u32, sec: &ChordSection, rng: &mut Rng, kind: SectionKind) {
        let Some((_, pattern)) = self.style.chords else {
            return;
        };
        let chord = self.chord_at(bar);
        let center = self.chord_center();
        let v = self.voiced(&chord, center);
        let n = self.beats.len();
        let ids = self.ids;
        let hs = self.style.humanize * 0.5;
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
                    if rng.chance(0.3) {
                        spots.push(i as f64 + 0.5);
                    }
                }
                if spots.is_empty() {
                    spots.push(if rng.chance(0.5) {
                        0.0
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
                    for &p in &v {
                        self.note(ids.chords, bar, i as f64 + 0.5, 0.3, p, 0.6, 0.0);
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
                for i in 0..n {
                    if chug {
                        for k in 0..2 {
                            for &p in &shape {
                                self.note(
                                    ids.chords,
                                    bar,
                                    i as f64 + 0.5 * k as f64,
                                    0.4,
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
                        if on {
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

    fn group_len_at(&self, beat: usize) -> u32 {
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
    fn guitar_voicing(&self, chord: &Chord) -> Vec<i32> {
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

    fn pad_bar(&mut self, bar: u32) {
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

    fn counter_bar(&mut self, bar: u32) {
        let Some((voice, pattern)) = self.style.counter else {
            return;
        };
        let chord = self.chord_at(bar);
        let n = self.beats.len();
        match pattern {
            CounterPattern::Arp => {
                let div = match self.style.genre {
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

/// Per-section drum decisions, fixed so each bar of a section repeats the same groove.
struct DrumSection {
    extra_kicks: Vec<(f64, f32)>,
    ghosts: Vec<(f64, f32)>,
    open_hat_p: f64,
}

impl DrumSection {
    fn new(a: &Arranger<'_>, rng: &mut Rng) -> DrumSection {
        let n = a.beats.len();
        let mut extra_kicks = Vec::new();
        let mut ghosts = Vec::new();
        let p = a.style.drums;
        let (kick_p, ghost_p) = match p {
            Some(DrumPattern::HipHop) => (0.2, 0.0),
            Some(DrumPattern::Trap) => (0.4, 0.0),
            Some(DrumPattern::Funk) => (0.35, 0.3),
            Some(DrumPattern::Backbeat) => (0.12, 0.0),
            _ => (0.0, 0.0),
        };
        let on_beats = a.quick_triple();
        for i in 0..n {
            if on_beats {
                if a.beats[i].role == Beat::H && rng.chance(kick_p) {
                    extra_kicks.push((i as f64, 0.6));
                }
                continue;
            }
            let next_is_k = a.beats.get(i + 1).is_some_and(|b| b.role == Beat::K);
            for off in [0.5, 0.75] {
                if !next_is_k && rng.chance(kick_p) {
                    extra_kicks.push((i as f64 + off, 0.7));
                }
            }
            for off in [0.25, 0.75] {
                if rng.chance(ghost_p) {
                    ghosts.push((i as f64 + off, 0.2));
                }
            }
        }
        let open_hat_p = match p {
            Some(DrumPattern::HipHop | DrumPattern::Funk | DrumPattern::Backbeat) if !on_beats => {
                0.25
            }
            _ => 0.0,
        };
        DrumSection {
            extra_kicks,
            ghosts,
            open_hat_p,
        }
    }
}

/// Per-section bass decisions.
struct BassSection {
    /// (16th slot within two beats, 0 root / 1 octave / 2 fifth / 3 third).
    cell: Vec<(u32, u8)>,
    pickup: bool,
}

impl BassSection {
    /// `on_beats`: only whole-beat slots (see `Arranger::quick_triple`).
    fn new(on_beats: bool, rng: &mut Rng) -> BassSection {
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

/// Per-section chord-pattern decisions.
struct ChordSection {
    /// Strum mask over eighths (down, up, down, up …).
    strum: Vec<bool>,
    /// Funk chop mask over the 16ths of a beat.
    chop: [bool; 4],
}

impl ChordSection {
    fn new(a: &Arranger<'_>, rng: &mut Rng) -> ChordSection {
        let patterns: [&[bool]; 3] = [
            &[true, false, true, true],
            &[true, false, true, true, false, true, true, true],
            &[true, true],
        ];
        let strum = if a.grid.spb < 0.4 {
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

/// The melody: two-bar motifs (rhythm and contour) for verse and chorus, realised over the chords
/// phrase by phrase; strong beats land on chord tones, phrases breathe at their ends and the
/// consequent phrase resolves.
struct Melody {
    motifs: [Motif; 2],
    cadences: [Vec<(f64, f64)>; 2],
    cur: i32,
    base: i32,
}

#[derive(Debug, Clone)]
struct Motif {
    bars: [Vec<(f64, f64)>; 2],
    steps: Vec<i32>,
}

impl Melody {
    fn new(a: &Arranger<'_>, mut rng: Rng) -> Melody {
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
    fn bar(&mut self, a: &mut Arranger<'_>, bar: u32, which: u8, bar_in_section: u32) {
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

fn nearest_chord_step(key: &Key, chord: &Chord, target: i32, raised: bool) -> i32 {
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
fn rhythm(a: &Arranger<'_>, density: f64, rng: &mut Rng, first: bool) -> Vec<(f64, f64)> {
    let n = a.beats.len();
    let fast = a.grid.spb < 0.4;
    let mut onsets: Vec<f64> = Vec::new();
    for i in 0..n {
        let b = i as f64;
        // Cells: quarter, two eighths, dotted eighth + sixteenth, four sixteenths, rest.
        let w = [
            0.35,
            if fast { 0.12 } else { 0.25 + 0.3 * density },
            0.06 + 0.1 * density,
            if fast || a.grid.spb < 0.45 {
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
fn contour(rng: &mut Rng) -> Vec<i32> {
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

/// Sample index of a time in seconds.
pub fn sample_of(t: f64) -> usize {
    (t * SR).round().max(0.0) as usize
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
