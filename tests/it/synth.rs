//! Seeded test material shared by the accuracy tests (`tests/it/audio.rs`) and the audio benchmark
//! (`benches/audio.rs`, which includes this file by path): click tracks and drum patterns at a
//! known tempo, chord progressions in a known key.

use std::f64::consts::PI;

use soundcheck::audio::Audio;
use soundcheck::engines::analyze::{self, key::Key};

pub const SR: u32 = 44_100;

/// Seeded xorshift, so every run hears the same material.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next()
    }
}

pub fn add(buf: &mut [f32], at: usize, sig: &[f32]) {
    for (o, s) in buf.iter_mut().skip(at).zip(sig) {
        *o += s;
    }
}

/// A percussive hit: decaying sine (pitch `freq`) plus a noise burst.
pub fn hit(rng: &mut Rng, freq: f64, decay: f64, noise: f64, amp: f64) -> Vec<f32> {
    let n = (SR as f64 * 0.25) as usize;
    (0..n)
        .map(|i| {
            let t = i as f64 / SR as f64;
            let env = (-t / decay).exp();
            let tone = (2.0 * PI * freq * t).sin();
            let nz = rng.range(-1.0, 1.0);
            (amp * env * ((1.0 - noise) * tone + noise * nz)) as f32
        })
        .collect()
}

/// Clicks or a rock drum pattern at `bpm` for `secs`, accented on the bar, with a little
/// timing jitter and background noise.
pub fn rhythm_clip(rng: &mut Rng, bpm: f64, secs: f64, drums: bool) -> Audio {
    let n = (SR as f64 * secs) as usize;
    let mut buf = vec![0.0f32; n];
    let beat = 60.0 / bpm;
    let offset = rng.range(0.0, beat);
    let mut i = 0;
    loop {
        let t = offset + i as f64 * beat / 2.0; // eighth-note grid
        if t >= secs - 0.3 {
            break;
        }
        let jitter = rng.range(-0.004, 0.004);
        let at = ((t + jitter) * SR as f64) as usize;
        let on_beat = i % 2 == 0;
        let beat_in_bar = (i / 2) % 4;
        if drums {
            // Hi-hat on every eighth, kick on 1 and 3 (and the "and" of 3), snare on 2 and 4.
            let hh = hit(rng, 8000.0, 0.03, 0.9, 0.15);
            add(&mut buf, at, &hh);
            if on_beat && (beat_in_bar == 0 || beat_in_bar == 2) || (i % 8 == 5) {
                let k = hit(rng, 55.0, 0.12, 0.05, 0.8);
                add(&mut buf, at, &k);
            }
            if on_beat && (beat_in_bar == 1 || beat_in_bar == 3) {
                let s = hit(rng, 190.0, 0.08, 0.7, 0.5);
                add(&mut buf, at, &s);
            }
        } else if on_beat {
            let (f, a) = if beat_in_bar == 0 {
                (1500.0, 0.8)
            } else {
                (1000.0, 0.5)
            };
            let c = hit(rng, f, 0.02, 0.2, a);
            add(&mut buf, at, &c);
        }
        i += 1;
    }
    for s in buf.iter_mut() {
        *s += rng.range(-0.003, 0.003) as f32;
    }
    Audio {
        sample_rate: SR,
        channels: vec![buf.clone(), buf],
    }
}

pub fn midi_hz(m: f64) -> f64 {
    440.0 * 2f64.powf((m - 69.0) / 12.0)
}

/// A plucked/organ-ish tone with 6 harmonics decaying at 1/k.
pub fn note(buf: &mut [f32], start: usize, len: usize, midi: f64, amp: f64, pluck: bool) {
    let f = midi_hz(midi);
    for i in 0..len {
        let t = i as f64 / SR as f64;
        let env = if pluck { (-t * 2.5).exp() } else { 1.0 }
            * (t * 200.0).min(1.0)
            * ((len - i) as f64 / (SR as f64 * 0.01)).min(1.0);
        let mut v = 0.0;
        for k in 1..=6 {
            if f * k as f64 > 10_000.0 {
                break;
            }
            v += (2.0 * PI * f * k as f64 * t).sin() / k as f64;
        }
        if let Some(o) = buf.get_mut(start + i) {
            *o += (amp * env * v) as f32;
        }
    }
}

/// A chord progression establishing `key`: a cadential pattern chosen by `variant`, block chords
/// in a mid register with a bass note, a melody on chord tones, and light drums.
pub fn chord_clip(rng: &mut Rng, key: Key, variant: usize) -> Audio {
    let minor = key.mode == analyze::key::Mode::Minor;
    // Scale degrees as semitone offsets; minor uses the harmonic minor's raised 7th in V.
    let major_chords: [&[[i32; 3]]; 3] = [
        &[[0, 4, 7], [5, 9, 12], [7, 11, 14], [0, 4, 7]], // I IV V I
        &[[0, 4, 7], [9, 12, 16], [5, 9, 12], [7, 11, 14]], // I vi IV V
        &[[0, 4, 7], [2, 5, 9], [7, 11, 14], [0, 4, 7]],  // I ii V I
    ];
    let minor_chords: [&[[i32; 3]]; 3] = [
        &[[0, 3, 7], [5, 8, 12], [7, 11, 14], [0, 3, 7]], // i iv V i
        &[[0, 3, 7], [8, 12, 15], [5, 8, 12], [7, 11, 14]], // i VI iv V
        &[[0, 3, 7], [3, 7, 10], [5, 8, 12], [7, 11, 14]], // i III iv V
    ];
    let prog = if minor {
        minor_chords[variant % 3]
    } else {
        major_chords[variant % 3]
    };
    let bpm = rng.range(80.0, 140.0);
    let bar = 4.0 * 60.0 / bpm;
    let repeats = 2;
    let secs = bar * (prog.len() * repeats) as f64 + 0.5;
    let n = (secs * SR as f64) as usize;
    let mut buf = vec![0.0f32; n];
    let root = 48 + key.tonic as i32; // C3..B3
    let pluck = variant % 2 == 1;
    for r in 0..repeats {
        for (c, chord) in prog.iter().enumerate() {
            let start = ((r * prog.len() + c) as f64 * bar * SR as f64) as usize;
            let len = (bar * SR as f64) as usize;
            for &iv in chord.iter() {
                note(&mut buf, start, len, (root + 12 + iv) as f64, 0.08, pluck);
            }
            note(
                &mut buf,
                start,
                len,
                (root - 12 + chord[0]) as f64,
                0.12,
                pluck,
            );
            // Melody: four quarter notes on chord tones.
            for q in 0..4 {
                let tone = chord[(q + r) % 3] + 24;
                let s = start + (q as f64 * bar / 4.0 * SR as f64) as usize;
                note(&mut buf, s, len / 4, (root + tone) as f64, 0.05, true);
            }
        }
    }
    for s in buf.iter_mut() {
        *s += rng.range(-0.002, 0.002) as f32;
    }
    Audio {
        sample_rate: SR,
        channels: vec![buf.clone(), buf],
    }
}
