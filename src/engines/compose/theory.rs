//! Keys, scales, chords and progressions: parsing `keyscale`, building diatonic chords (minor keys
//! borrow the harmonic minor's raised 7th for V, so the key is never mistaken for its relative
//! major), choosing progressions that establish the tonic, and voice-leading chord voicings.

use std::fmt;

use super::dmath::Rng;

/// Major or minor, as `keyscale` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Major,
    Minor,
}

/// A key: tonic pitch class (C = 0 … B = 11) and mode; what `keyscale` parses to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    /// Pitch class of the tonic, C = 0.
    pub tonic: u8,
    /// Major or (natural/harmonic) minor.
    pub mode: Mode,
}

const MAJOR: [i32; 7] = [0, 2, 4, 5, 7, 9, 11];
const MINOR: [i32; 7] = [0, 2, 3, 5, 7, 8, 10];
const NAMES: [&str; 12] = [
    "C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B",
];

/// Parses `"A minor"`, `"F# major"`, `"Bb minor"`: a letter A–G, an optional `#` or `b`, then
/// `major` or `minor` (case and surrounding spaces ignored). The server validates requests with it.
pub fn parse_keyscale(s: &str) -> Result<Key, String> {
    let bad = || {
        format!("invalid keyscale {s:?}: expected a note A-G, optional # or b, then major or minor (e.g. \"A minor\", \"F# major\")")
    };
    let t = s.trim();
    let mut chars = t.chars();
    let letter = chars.next().ok_or_else(bad)?;
    let natural: i32 = match letter.to_ascii_uppercase() {
        'C' => 0,
        'D' => 2,
        'E' => 4,
        'F' => 5,
        'G' => 7,
        'A' => 9,
        'B' => 11,
        _ => return Err(bad()),
    };
    let rest = chars.as_str();
    let (shift, rest) = if let Some(r) = rest.strip_prefix('#') {
        (1, r)
    } else if let Some(r) = rest.strip_prefix('b') {
        (-1, r)
    } else {
        (0, rest)
    };
    if !rest.starts_with(char::is_whitespace) {
        return Err(bad());
    }
    let mode = match rest.trim().to_ascii_lowercase().as_str() {
        "major" => Mode::Major,
        "minor" => Mode::Minor,
        _ => return Err(bad()),
    };
    Ok(Key {
        tonic: (natural + shift).rem_euclid(12) as u8,
        mode,
    })
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.mode {
            Mode::Major => "major",
            Mode::Minor => "minor",
        };
        write!(f, "{} {mode}", NAMES[self.tonic as usize])
    }
}

impl Key {
    /// Semitones above the tonic of the seven scale steps (natural minor for minor keys).
    pub(crate) fn scale(&self) -> [i32; 7] {
        match self.mode {
            Mode::Major => MAJOR,
            Mode::Minor => MINOR,
        }
    }

    /// Semitones above the tonic of scale step `step` (any integer; octaves wrap), with the
    /// leading tone raised in minor when `raised7`.
    pub(crate) fn step_semis(&self, step: i32, raised7: bool) -> i32 {
        let oct = step.div_euclid(7);
        let idx = step.rem_euclid(7) as usize;
        let mut s = self.scale()[idx];
        if raised7 && idx == 6 && self.mode == Mode::Minor {
            s += 1;
        }
        s + 12 * oct
    }

    /// The diatonic triad (or seventh chord) on scale degree `degree` (0 = tonic).
    pub(crate) fn chord(&self, degree: u8, seventh: bool) -> Chord {
        // V and vii use the harmonic minor's leading tone; the others stay natural.
        let raised = self.mode == Mode::Minor && (degree == 4 || degree == 6);
        let d = degree as i32;
        let root = self.step_semis(d, raised);
        let n = if seventh { 4 } else { 3 };
        let mut tones = [0i32; 4];
        for (k, t) in tones.iter_mut().enumerate().take(n) {
            *t = self.step_semis(d + 2 * k as i32, raised) - root;
        }
        Chord {
            degree,
            root,
            tones,
            len: n as u8,
        }
    }
}

/// A chord built on the key: degree, root (semitones above the tonic) and intervals above the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chord {
    /// Scale degree of the root, 0 = tonic.
    pub degree: u8,
    /// Root, in semitones above the tonic (0–11).
    pub root: i32,
    /// Intervals above the root; the first `len` are used.
    pub tones: [i32; 4],
    /// Number of chord tones (3 for a triad, 4 with a seventh).
    pub len: u8,
}

impl Chord {
    /// Chord tones as semitones above the tonic, root first.
    pub(crate) fn semis(&self) -> impl Iterator<Item = i32> + '_ {
        self.tones[..self.len as usize]
            .iter()
            .map(|t| self.root + t)
    }

    /// Whether `semis` (above the tonic, any octave) is a chord tone.
    pub(crate) fn contains(&self, semis: i32) -> bool {
        self.semis().any(|c| (c - semis).rem_euclid(12) == 0)
    }

    /// Whether this chord is the dominant (its melody uses the raised leading tone in minor).
    pub(crate) fn is_dominant(&self) -> bool {
        self.degree == 4 || self.degree == 6
    }
}

/// Which family of progressions a style draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Harmony {
    /// Triads, I–IV–V family.
    Plain,
    /// Seventh chords and ii–V motion (jazz, lofi, soul).
    Jazzy,
    /// Tonic-heavy and slow (ambient, techno): few changes.
    Static,
}

/// Four-chord progression (scale degrees) for the main sections. Every choice starts on the
/// tonic and contains a dominant, so a listener (or a key detector) hears the key at once.
pub(crate) fn progression(mode: Mode, harmony: Harmony, rng: &mut Rng) -> [u8; 4] {
    let opts: &[[u8; 4]] = match (mode, harmony) {
        (Mode::Major, Harmony::Plain) => &[
            [0, 3, 4, 0],
            [0, 3, 0, 4],
            [0, 5, 3, 4],
            [0, 0, 3, 4],
            [0, 4, 0, 3],
        ],
        (Mode::Minor, Harmony::Plain) => &[
            [0, 3, 4, 0],
            [0, 5, 3, 4],
            [0, 3, 0, 4],
            [0, 3, 5, 4],
            [0, 0, 3, 4],
        ],
        (Mode::Major, Harmony::Jazzy) => &[[0, 5, 1, 4], [0, 1, 4, 0], [0, 3, 1, 4]],
        (Mode::Minor, Harmony::Jazzy) => &[[0, 3, 1, 4], [0, 5, 1, 4], [0, 3, 4, 0]],
        (_, Harmony::Static) => &[[0, 0, 3, 4], [0, 3, 0, 4], [0, 0, 5, 4]],
    };
    *rng.pick(opts)
}

/// Progression for a contrasting bridge: leaves the tonic, still cadences on the dominant.
pub(crate) fn bridge_progression(mode: Mode, rng: &mut Rng) -> [u8; 4] {
    match mode {
        Mode::Major => *rng.pick(&[[3, 0, 3, 4], [3, 4, 0, 4], [5, 3, 0, 4]]),
        Mode::Minor => *rng.pick(&[[5, 3, 0, 4], [3, 0, 5, 4], [3, 5, 0, 4]]),
    }
}

/// Places chord tones (semitones above the tonic) as MIDI notes around `center`, choosing the
/// inversion that moves least from `prev` (smooth voice leading) or sits nearest `center`.
pub(crate) fn voice_chord(semis: &[i32], tonic_c: i32, center: i32, prev: &[i32]) -> Vec<i32> {
    let n = semis.len();
    let mut best: Option<(i32, Vec<i32>)> = None;
    for inv in 0..n {
        for shift in [-12, 0, 12] {
            // Stack upward from the inversion's lowest tone, placed just under `center`.
            let low_pc = (tonic_c + semis[inv]).rem_euclid(12);
            let mut low = center - 7 + (low_pc - (center - 7)).rem_euclid(12) + shift;
            let mut v = Vec::with_capacity(n);
            for k in 0..n {
                let pc = (tonic_c + semis[(inv + k) % n]).rem_euclid(12);
                let note = low + (pc - low).rem_euclid(12);
                v.push(note);
                low = note + 1;
            }
            let mean = v.iter().sum::<i32>() / n as i32;
            let mut cost = 2 * (mean - center).abs();
            if prev.len() == n {
                cost += v.iter().zip(prev).map(|(a, b)| (a - b).abs()).sum::<i32>() * 3;
            }
            if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                best = Some((cost, v));
            }
        }
    }
    best.map(|(_, v)| v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_24_keys_with_sharps_and_flats() {
        let sharps = [
            "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B",
        ];
        let flats = [
            "C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B",
        ];
        for (pc, (s, f)) in sharps.iter().zip(flats).enumerate() {
            for (mode_word, mode) in [("major", Mode::Major), ("minor", Mode::Minor)] {
                let want = Key {
                    tonic: pc as u8,
                    mode,
                };
                assert_eq!(parse_keyscale(&format!("{s} {mode_word}")), Ok(want));
                assert_eq!(parse_keyscale(&format!("{f} {mode_word}")), Ok(want));
                // The canonical name parses back to the same key.
                assert_eq!(parse_keyscale(&want.to_string()), Ok(want));
            }
        }
        assert_eq!(
            parse_keyscale("  a MINOR ").unwrap(),
            Key {
                tonic: 9,
                mode: Mode::Minor
            }
        );
        assert_eq!(parse_keyscale("Cb major").unwrap().tonic, 11);
        assert_eq!(parse_keyscale("E# minor").unwrap().tonic, 5);
    }

    #[test]
    fn rejects_malformed_keys() {
        for bad in [
            "H minor",
            "A dorian",
            "A",
            "",
            "Aminor",
            "A## minor",
            "Bbb major",
            "A minor major",
            "1 major",
        ] {
            assert!(parse_keyscale(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_keyscale("H minor").unwrap_err().contains("H minor"));
    }

    #[test]
    fn minor_dominant_has_the_leading_tone() {
        let a_minor = parse_keyscale("A minor").unwrap();
        let v = a_minor.chord(4, false);
        // E major in A minor: E, G#, B = 7, 11, 14 semitones above A.
        assert_eq!(v.semis().collect::<Vec<_>>(), vec![7, 11, 14]);
        let i = a_minor.chord(0, false);
        assert_eq!(i.semis().collect::<Vec<_>>(), vec![0, 3, 7]);
        let iv7 = a_minor.chord(3, true);
        assert_eq!(iv7.semis().collect::<Vec<_>>(), vec![5, 8, 12, 15]);
        let c_major = parse_keyscale("C major").unwrap();
        assert_eq!(
            c_major.chord(4, true).semis().collect::<Vec<_>>(),
            vec![7, 11, 14, 17]
        );
        assert!(c_major.chord(0, false).contains(16));
        assert!(!c_major.chord(0, false).contains(2));
    }

    #[test]
    fn progressions_start_on_tonic_and_hold_a_dominant() {
        let mut rng = Rng::new(5);
        for mode in [Mode::Major, Mode::Minor] {
            for h in [Harmony::Plain, Harmony::Jazzy, Harmony::Static] {
                for _ in 0..20 {
                    let p = progression(mode, h, &mut rng);
                    assert_eq!(p[0], 0);
                    assert!(p.contains(&4), "{p:?}");
                    assert!(p.iter().filter(|&&d| d == 4).count() <= 1, "{p:?}");
                }
            }
            for _ in 0..10 {
                assert!(bridge_progression(mode, &mut rng).contains(&4));
            }
        }
    }

    #[test]
    fn voicings_lead_smoothly() {
        let key = parse_keyscale("C major").unwrap();
        let c: Vec<i32> = key.chord(0, false).semis().collect();
        let f: Vec<i32> = key.chord(3, false).semis().collect();
        let v1 = voice_chord(&c, 60, 64, &[]);
        let v2 = voice_chord(&f, 60, 64, &v1);
        assert_eq!(v1.len(), 3);
        let moved: i32 = v1.iter().zip(&v2).map(|(a, b)| (a - b).abs()).sum();
        assert!(moved <= 4, "{v1:?} -> {v2:?}");
        for (v, pcs) in [(&v1, [0, 4, 7]), (&v2, [5, 9, 0])] {
            let mut got: Vec<i32> = v.iter().map(|n| n.rem_euclid(12)).collect();
            got.sort();
            let mut want = pcs.to_vec();
            want.sort();
            assert_eq!(got, want);
        }
    }
}
