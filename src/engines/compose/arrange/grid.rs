//! The meter and the beat grid: beats grouped in twos and threes with an accent per group, each
//! beat's role in a backbeat, and bar/beat → seconds (exactly `60/bpm` s per beat; swing moves
//! only off-beats).

/// Splits a bar of `beats` into accent groups of twos and threes (4 → 2+2, 6 → 3+3, 5 → 3+2,
/// 7 → 2+2+3, 8 → 3+3+2 …): a group's first beat is accented.
pub(super) fn meter_groups(beats: u32) -> Vec<u32> {
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
pub(super) enum Beat {
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
pub(super) struct BeatInfo {
    pub(super) role: Beat,
    /// First beat of its group.
    pub(super) group_start: bool,
    /// Accent weight: downbeat 1.0, other group starts 0.9, the rest 0.8.
    pub(super) strength: f32,
}

pub(super) fn beat_map(groups: &[u32]) -> Vec<BeatInfo> {
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
pub(super) struct Grid {
    pub(super) spb: f64,
    pub(super) bpb: u32,
    pub(super) swing: f64,
    /// Length of a swung pair in beats (1 for swung eighths, 0.5 for sixteenths).
    pub(super) pair: f64,
}

/// From this many seconds per beat (80 bpm and slower) the beat is slow: the parts then move on
/// the beats (hats, extra kicks, bass, chord stabs, strums and arpeggios on quarter notes, fewer
/// eighths in the melody, softer waltz after-beats under a downbeat that leads), as slow music
/// does, so its eighths are not heard as the beat at twice the tempo.
pub(super) const SLOW_SPB: f64 = 0.75;
/// Below this many seconds per beat (over 150 bpm) the beat is quick: the snare then sounds on
/// every beat (accented on the backbeats), so the beats sound alike and the pulse is not heard
/// in half notes (at half the tempo).
pub(super) const QUICK_SPB: f64 = 0.4;

impl Grid {
    pub(super) fn slow(&self) -> bool {
        self.spb >= SLOW_SPB
    }

    pub(super) fn quick(&self) -> bool {
        self.spb < QUICK_SPB
    }

    pub(super) fn time(&self, bar: u32, beat: f64) -> f64 {
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

    pub(super) fn bar_len(&self) -> f64 {
        self.bpb as f64 * self.spb
    }
}
