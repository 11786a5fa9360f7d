//! The drum part: one bar of a pattern (backbeat, four-on-the-floor, breakbeat, jazz ride,
//! cinematic toms, pulse, train, bossa) over the meter's groups, fills into the next section, and
//! the drums' tuning to the key. Velocities are named below; `en` scales them by the style's energy.

use super::super::dmath::Rng;
use super::super::score::{Kit, Voice};
use super::super::style::DrumPattern;
use super::grid::Beat;
use super::Arranger;

/// Drum velocities (0–1), before the energy scale `en` where the pattern applies it.
mod vel {
    /// Crash at a section's start.
    pub const CRASH: f32 = 0.85;
    /// Hats: on the beat, the beat's middle in a 16th grid, the off-beat eighth, other 16ths.
    pub const HAT_ON_BEAT: f32 = 0.75;
    pub const HAT_MID_BEAT: f32 = 0.55;
    pub const HAT_OFF_EIGHTH: f32 = 0.5;
    pub const HAT_SIXTEENTH: f32 = 0.35;
    /// Backbeat family: reggae's softer one-drop kick, snare on the backbeat, the waltz's
    /// after-beats, the clap doubling the backbeat, the kick pulse of light sections.
    pub const REGGAE_KICK: f32 = 0.8;
    pub const BACKBEAT: f32 = 0.92;
    pub const AFTERBEAT: f32 = 0.55;
    pub const CLAP: f32 = 0.8;
    pub const LIGHT_PULSE: f32 = 0.55;
    /// Metal's double kick on the off-beats.
    pub const DOUBLE_KICK: f32 = 0.7;
    /// Trap hi-hat roll: first 32nd, then louder by this per step.
    pub const ROLL_FROM: f32 = 0.3;
    pub const ROLL_STEP: f32 = 0.1;
    pub const OPEN_HAT: f32 = 0.6;
    /// Four-on-the-floor: the bar's first kick, the others, the clap, light sections' off-beat hat.
    pub const DOWNBEAT: f32 = 1.0;
    pub const FLOOR_KICK: f32 = 0.92;
    pub const FLOOR_CLAP: f32 = 0.85;
    pub const FLOOR_LIGHT_HAT: f32 = 0.55;
    /// Breakbeat snare and its drag ghost.
    pub const BREAK_SNARE: f32 = 0.95;
    pub const GHOST_DRAG: f32 = 0.25;
    /// Jazz: ride on group starts, on the other beats, the skip note; hi-hat foot; feathered kick.
    pub const RIDE_GROUP_START: f32 = 0.7;
    pub const RIDE_BACK: f32 = 0.8;
    pub const RIDE_SKIP: f32 = 0.5;
    pub const JAZZ_FOOT_HAT: f32 = 0.55;
    pub const FEATHER_DOWN: f32 = 0.55;
    pub const FEATHER: f32 = 0.4;
    /// Cinematic: the kick under the taiko, scaled by the beat's accent.
    pub const TAIKO_KICK: f32 = 0.8;
    /// Pulse (ambient, folk): kicks on the downbeat and group starts, the felt heartbeat,
    /// the shaker on and off the beat.
    pub const PULSE_DOWN: f32 = 0.8;
    pub const PULSE_GROUP: f32 = 0.65;
    pub const HEARTBEAT: f32 = 0.45;
    pub const SHAKER_BEAT: f32 = 0.55;
    pub const SHAKER_OFF: f32 = 0.3;
    /// Train beat: snare on the backbeat, on other beats, on the off-beats.
    pub const TRAIN_BACK: f32 = 0.85;
    pub const TRAIN_BEAT: f32 = 0.45;
    pub const TRAIN_OFF: f32 = 0.3;
    /// Bossa: kick on group starts and other beats, its pickup; shaker 16ths; rim and clave.
    pub const BOSSA_GROUP: f32 = 0.75;
    pub const BOSSA_BEAT: f32 = 0.55;
    pub const BOSSA_PICKUP: f32 = 0.35;
    pub const SHAKER_BEAT_SOFT: f32 = 0.45;
    pub const SHAKER_SIXTEENTH: f32 = 0.25;
    pub const RIM_OFF: f32 = 0.7;
    pub const CLAVE: f32 = 0.75;
    /// Per-section extra kicks (on a beat in quick triple meters, else off it) and snare ghosts.
    pub const EXTRA_KICK_ON_BEAT: f32 = 0.6;
    pub const EXTRA_KICK: f32 = 0.7;
    /// Quick tempos: the snare on the beats between the backbeats.
    pub const QUICK_SNARE: f32 = 0.6;
    /// Slow tempos: the waltz after-beats' share of `AFTERBEAT`, so the downbeat leads the bar.
    pub const SLOW_AFTERBEAT: f32 = 0.5;
    pub const GHOST: f32 = 0.2;
}

impl Arranger<'_> {
    /// A triple or compound meter at a quick beat (over 130 bpm). There the beat is already the
    /// subdivision (6/8 counts eighths): halving it again only blurs which level is the beat,
    /// and off-beats 1.5 beats apart line up with the group accents as a false dotted pulse.
    /// Drums then stay on the beats: hats once per beat, extra kicks on unaccented beats.
    pub(super) fn quick_triple(&self) -> bool {
        self.groups.contains(&3) && self.grid.spb < 60.0 / 130.0
    }

    pub(super) fn hit(&mut self, part: Option<u16>, bar: u32, beat: f64, vel: f32) {
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
    pub(super) fn drum_pitch(&self, part: Option<u16>) -> i32 {
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

    pub(super) fn parts_voice(&self, part: Option<u16>) -> Option<Voice> {
        let p = part?;
        self.part_voices.get(p as usize).copied()
    }

    pub(super) fn drum_bar(
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
            self.hit(ids.crash, bar, 0.0, vel::CRASH);
        }
        // Slow beats: the parts move on the beats (see `grid::SLOW_SPB`).
        let slow = self.grid.slow();
        let quick = self.grid.quick();
        let hat_div = if self.quick_triple() || slow {
            1
        } else {
            self.style.hat_div.max(1)
        };
        let hats = |a: &mut Self, beat: usize, vel_scale: f32| {
            for k in 0..hat_div {
                let pos = beat as f64 + k as f64 / hat_div as f64;
                if !before_fill(pos) {
                    continue;
                }
                let v = match (hat_div, k) {
                    (_, 0) => vel::HAT_ON_BEAT,
                    (4, 2) => vel::HAT_MID_BEAT,
                    (2, 1) => vel::HAT_OFF_EIGHTH,
                    _ => vel::HAT_SIXTEENTH,
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
                                    vel::REGGAE_KICK
                                } else {
                                    1.0
                                },
                        ),
                        Beat::S | Beat::Ss if full => {
                            let v = if b.role == Beat::Ss {
                                vel::AFTERBEAT * if slow { vel::SLOW_AFTERBEAT } else { 1.0 }
                            } else {
                                vel::BACKBEAT
                            };
                            self.hit(ids.snare, bar, pos, v * en);
                            if ids.clap.is_some() && b.role == Beat::S {
                                self.hit(ids.clap, bar, pos, vel::CLAP * en);
                            }
                        }
                        // Light sections keep a soft pulse on the backbeats.
                        Beat::S | Beat::Ss => self.hit(ids.kick, bar, pos, vel::LIGHT_PULSE * en),
                        Beat::H => {}
                    }
                    // Quick: the snare on every beat, the backbeats accented (four on the snare),
                    // so the beats sound alike and the pulse is not heard in half notes.
                    if quick && full && !matches!(b.role, Beat::S | Beat::Ss) {
                        self.hit(ids.snare, bar, pos, vel::QUICK_SNARE * en);
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
                    if self.style.energy >= 0.95 && pattern == DrumPattern::Backbeat && !slow {
                        // Metal: double kick on the off-beats.
                        for i in 0..n {
                            if before_fill(i as f64 + 0.5) {
                                self.hit(ids.kick, bar, i as f64 + 0.5, vel::DOUBLE_KICK);
                            }
                        }
                    }
                }
                for i in 0..n {
                    hats(self, i, if full { 1.0 } else { 0.8 });
                }
                if pattern == DrumPattern::Trap && full && !slow {
                    for i in 0..n {
                        if rng.chance(0.15) && before_fill(i as f64 + 0.5) {
                            // A hi-hat roll: 32nd notes across the second half of the beat.
                            for k in 0..4 {
                                let pos = i as f64 + 0.5 + k as f64 / 8.0;
                                let v = vel::ROLL_FROM + vel::ROLL_STEP * k as f32;
                                self.hit(ids.hat, bar, pos, v * en);
                            }
                        }
                    }
                }
                if full && rng.chance(sec.open_hat_p) && !slow {
                    let pos = n as f64 - 0.5;
                    if before_fill(pos) {
                        self.hit(ids.open_hat, bar, pos, vel::OPEN_HAT * en);
                    }
                }
            }
            DrumPattern::FourFloor => {
                for (i, b) in beats.iter().enumerate() {
                    let pos = i as f64;
                    let v = if i == 0 {
                        vel::DOWNBEAT
                    } else {
                        vel::FLOOR_KICK
                    };
                    self.hit(ids.kick, bar, pos, v * en);
                    if full && matches!(b.role, Beat::S | Beat::Ss) {
                        self.hit(ids.clap.or(ids.snare), bar, pos, vel::FLOOR_CLAP * en);
                    }
                    if slow {
                        // Slow: the hat joins the kick on the beat instead of the off-beat.
                        self.hit(ids.hat, bar, pos, vel::FLOOR_LIGHT_HAT * en);
                    } else if full {
                        self.hit(ids.open_hat, bar, pos + 0.5, vel::OPEN_HAT * en);
                    } else {
                        self.hit(ids.hat, bar, pos + 0.5, vel::FLOOR_LIGHT_HAT * en);
                    }
                    if hat_div >= 4 && full {
                        for k in [1.0, 3.0] {
                            self.hit(ids.hat, bar, pos + k / 4.0, vel::HAT_SIXTEENTH * en);
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
                            if full && !slow {
                                self.hit(ids.kick, bar, g0 + 0.5, 0.9 * en);
                            }
                        }
                        if full {
                            self.hit(ids.snare, bar, g0 + 1.0, vel::BREAK_SNARE * en);
                            if rng.chance(0.4) && !slow {
                                self.hit(ids.snare, bar, g0 + 1.75, vel::GHOST_DRAG);
                            }
                        } else {
                            self.hit(ids.kick, bar, g0 + 1.0, 0.5 * en);
                        }
                    } else {
                        self.hit(ids.kick, bar, g0, en * if gi == 0 { 1.0 } else { 0.9 });
                        if full {
                            self.hit(ids.snare, bar, g0 + 2.0, vel::BREAK_SNARE * en);
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
                        if b.group_start {
                            vel::RIDE_GROUP_START
                        } else {
                            vel::RIDE_BACK
                        } * en,
                    );
                    if next_is_back {
                        self.hit(ids.ride, bar, pos + 0.5, vel::RIDE_SKIP * en);
                    }
                    if !b.group_start {
                        self.hit(ids.hat, bar, pos, vel::JAZZ_FOOT_HAT);
                    }
                    let v = if i == 0 {
                        vel::FEATHER_DOWN
                    } else {
                        vel::FEATHER
                    };
                    self.hit(ids.kick, bar, pos, v);
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
                        self.hit(ids.kick, bar, pos, vel::TAIKO_KICK * b.strength);
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
                        let v = if i == 0 {
                            vel::PULSE_DOWN
                        } else {
                            vel::PULSE_GROUP
                        };
                        self.hit(ids.kick, bar, pos, v);
                    } else if ids.shaker.is_none() {
                        // A felt heartbeat on the other beats keeps the tempo audible.
                        self.hit(ids.kick, bar, pos, vel::HEARTBEAT);
                    }
                    self.hit(ids.shaker, bar, pos, vel::SHAKER_BEAT);
                    if self.style.energy > 0.35 && !slow {
                        self.hit(ids.shaker, bar, pos + 0.5, vel::SHAKER_OFF);
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
                            vel::TRAIN_BACK
                        } else if k == 0 {
                            vel::TRAIN_BEAT
                        } else {
                            vel::TRAIN_OFF
                        };
                        if (full || back) && !(slow && k == 1) {
                            self.hit(ids.snare, bar, pos + k as f64 * 0.5, v * en);
                        }
                    }
                    hats(self, i, 0.6);
                }
            }
            DrumPattern::Bossa => {
                for (i, b) in beats.iter().enumerate() {
                    let pos = i as f64;
                    let v = if b.group_start {
                        vel::BOSSA_GROUP
                    } else {
                        vel::BOSSA_BEAT
                    };
                    self.hit(ids.kick, bar, pos, v);
                    if full && !b.group_start && !slow {
                        self.hit(ids.kick, bar, pos - 0.25, vel::BOSSA_PICKUP);
                    }
                    for k in 0..if slow { 1 } else { 4 } {
                        self.hit(
                            ids.shaker,
                            bar,
                            pos + k as f64 / 4.0,
                            if k == 0 {
                                vel::SHAKER_BEAT_SOFT
                            } else {
                                vel::SHAKER_SIXTEENTH
                            },
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
                    if clave.is_empty() && !slow {
                        for (i, b) in beats.iter().enumerate() {
                            if !b.group_start {
                                self.hit(ids.snare, bar, i as f64 + 0.5, vel::RIM_OFF);
                            }
                        }
                    }
                    for &p in clave {
                        self.hit(ids.snare, bar, p, vel::CLAVE);
                    }
                }
            }
        }
        if let Some(from) = fill_from {
            // Fill: 16ths (8ths when fast) over the last group, toms falling, louder to the end.
            let step = if self.grid.spb < 0.35 || slow {
                0.5
            } else {
                0.25
            };
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
}

/// Per-section drum decisions, fixed so each bar of a section repeats the same groove.
pub(super) struct DrumSection {
    pub(super) extra_kicks: Vec<(f64, f32)>,
    pub(super) ghosts: Vec<(f64, f32)>,
    pub(super) open_hat_p: f64,
}

impl DrumSection {
    pub(super) fn new(a: &Arranger<'_>, rng: &mut Rng) -> DrumSection {
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
        let on_beats = a.quick_triple() || a.grid.slow();
        for i in 0..n {
            if on_beats {
                if a.beats[i].role == Beat::H && rng.chance(kick_p) {
                    extra_kicks.push((i as f64, vel::EXTRA_KICK_ON_BEAT));
                }
                continue;
            }
            let next_is_k = a.beats.get(i + 1).is_some_and(|b| b.role == Beat::K);
            for off in [0.5, 0.75] {
                if !next_is_k && rng.chance(kick_p) {
                    extra_kicks.push((i as f64 + off, vel::EXTRA_KICK));
                }
            }
            for off in [0.25, 0.75] {
                if rng.chance(ghost_p) {
                    ghosts.push((i as f64 + off, vel::GHOST));
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
