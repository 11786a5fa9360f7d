//! Key and mode from chroma: the track's average pitch-class profile (each frame normalised so
//! loud passages do not dominate) is correlated with the 24 rotations of a major and a minor key
//! profile, and the best correlation wins. The profiles are the average of Krumhansl–Kessler's
//! probe-tone ratings and Temperley's corpus-derived weights (each scaled to unit sum), which is
//! more robust than either alone on chord-heavy material.

/// Pitch-class names with sharps, C first (for chroma summaries).
pub const PITCH_CLASSES: [&str; 12] = [
    "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B",
];

/// Conventional spelling of major keys' tonics (fewest accidentals).
const MAJOR_NAMES: [&str; 12] = [
    "C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B",
];
/// Conventional spelling of minor keys' tonics.
const MINOR_NAMES: [&str; 12] = [
    "C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B",
];

const KK_MAJOR: [f64; 12] = [
    6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88,
];
const KK_MINOR: [f64; 12] = [
    6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17,
];
const TEMPERLEY_MAJOR: [f64; 12] = [5.0, 2.0, 3.5, 2.0, 4.5, 4.0, 2.0, 4.5, 2.0, 3.5, 1.5, 4.0];
const TEMPERLEY_MINOR: [f64; 12] = [5.0, 2.0, 3.5, 4.5, 2.0, 4.0, 2.0, 4.5, 3.5, 2.0, 1.5, 4.0];

/// Major or minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Major,
    Minor,
}

/// A key: tonic pitch class (0 = C) and mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// Tonic pitch class, 0 = C … 11 = B.
    pub tonic: usize,
    /// Major or minor.
    pub mode: Mode,
}

impl Key {
    /// The contract's spelling: `"A minor"`, `"F# major"`, `"Bb major"`.
    pub fn name(&self) -> String {
        match self.mode {
            Mode::Major => format!("{} major", MAJOR_NAMES[self.tonic % 12]),
            Mode::Minor => format!("{} minor", MINOR_NAMES[self.tonic % 12]),
        }
    }

    /// Parses `"A minor"`, `"F# major"`, `"Bb maj"`, `"c#m"`-free long forms; for tests and
    /// clients that send a key.
    pub fn parse(s: &str) -> Option<Key> {
        let mut parts = s.split_whitespace();
        let note = parts.next()?;
        let mode = match parts.next()?.to_ascii_lowercase().as_str() {
            "major" | "maj" => Mode::Major,
            "minor" | "min" => Mode::Minor,
            _ => return None,
        };
        let mut chars = note.chars();
        let letter = chars.next()?.to_ascii_uppercase();
        let base: i32 = match letter {
            'C' => 0,
            'D' => 2,
            'E' => 4,
            'F' => 5,
            'G' => 7,
            'A' => 9,
            'B' => 11,
            _ => return None,
        };
        let shift: i32 = chars
            .map(|c| match c {
                '#' | '♯' => Some(1),
                'b' | '♭' => Some(-1),
                _ => None,
            })
            .sum::<Option<i32>>()?;
        Some(Key {
            tonic: (base + shift).rem_euclid(12) as usize,
            mode,
        })
    }
}

/// The estimate and how sure it is.
#[derive(Debug, Clone, Copy)]
pub struct KeyResult {
    /// Best key.
    pub key: Key,
    /// Pearson correlation of the profile with the best key, −1…1.
    pub correlation: f64,
    /// Margin over the runner-up correlation, 0…2: small means ambiguous (often relative keys).
    pub margin: f64,
}

/// Average chroma with per-frame max-normalisation; silent frames are skipped.
pub fn profile(chroma: &[[f32; 12]]) -> [f64; 12] {
    let mut acc = [0.0f64; 12];
    for c in chroma {
        let m = c.iter().cloned().fold(0.0f32, f32::max);
        if m <= 1e-6 {
            continue;
        }
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += (v / m) as f64;
        }
    }
    acc
}

fn pearson(a: &[f64; 12], b: &[f64; 12]) -> f64 {
    let ma = a.iter().sum::<f64>() / 12.0;
    let mb = b.iter().sum::<f64>() / 12.0;
    let (mut num, mut da, mut db) = (0.0, 0.0, 0.0);
    for i in 0..12 {
        num += (a[i] - ma) * (b[i] - mb);
        da += (a[i] - ma).powi(2);
        db += (b[i] - mb).powi(2);
    }
    if da <= 0.0 || db <= 0.0 {
        0.0
    } else {
        num / (da * db).sqrt()
    }
}

fn blended(kk: &[f64; 12], temperley: &[f64; 12]) -> [f64; 12] {
    let sk: f64 = kk.iter().sum();
    let st: f64 = temperley.iter().sum();
    let mut out = [0.0; 12];
    for i in 0..12 {
        out[i] = kk[i] / sk + temperley[i] / st;
    }
    out
}

/// Estimates the key from chroma frames; `None` when there is no pitched content.
pub fn estimate(chroma: &[[f32; 12]]) -> Option<KeyResult> {
    let p = profile(chroma);
    if p.iter().all(|&v| v <= 0.0) {
        return None;
    }
    let major = blended(&KK_MAJOR, &TEMPERLEY_MAJOR);
    let minor = blended(&KK_MINOR, &TEMPERLEY_MINOR);
    let mut scores: Vec<(f64, Key)> = Vec::with_capacity(24);
    for tonic in 0..12 {
        for (mode, prof) in [(Mode::Major, &major), (Mode::Minor, &minor)] {
            let mut rotated = [0.0; 12];
            for i in 0..12 {
                rotated[(i + tonic) % 12] = prof[i];
            }
            scores.push((pearson(&p, &rotated), Key { tonic, mode }));
        }
    }
    scores.sort_by(|a, b| b.0.total_cmp(&a.0));
    Some(KeyResult {
        key: scores[0].1,
        correlation: scores[0].0,
        margin: scores[0].0 - scores[1].0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for tonic in 0..12 {
            for mode in [Mode::Major, Mode::Minor] {
                let k = Key { tonic, mode };
                assert_eq!(Key::parse(&k.name()), Some(k), "{}", k.name());
            }
        }
        assert_eq!(Key::parse("A minor").unwrap().name(), "A minor");
        assert_eq!(Key::parse("F# major").unwrap().name(), "F# major");
        assert_eq!(Key::parse("A# major").unwrap().name(), "Bb major");
        assert_eq!(Key::parse("H major"), None);
    }

    #[test]
    fn a_scale_profile_finds_its_key() {
        // Pitch-class weights of a D major scale with the tonic triad emphasised.
        let mut c = [0.0f32; 12];
        for (pc, w) in [
            (2, 3.0),
            (4, 1.0),
            (6, 2.0),
            (7, 1.0),
            (9, 2.5),
            (11, 1.0),
            (1, 0.8),
        ] {
            c[pc] = w;
        }
        let r = estimate(&[c; 4]).unwrap();
        assert_eq!(r.key.name(), "D major");
        assert!(estimate(&[[0.0; 12]]).is_none());
    }
}
