//! The procedural composer: an instant, weight-free text-to-music generator that honours every
//! request parameter. Tags pick a style (`tags`, `style`), the arranger writes a seeded score in
//! the requested key, meter and tempo (`theory`, `arrange`), own DSP voices play it (`voices`,
//! `drums`, `play`, `dsp`; the score's types in `score`), and the mixer masters it to -14 LUFS, 44.1 kHz stereo (`mix`, `textures`).
//! Same request and seed give bit-identical samples: all randomness is a seeded SplitMix64 and
//! all transcendental math is our own (`dmath`), never the platform's.

mod arrange;
mod dmath;
mod drums;
mod dsp;
mod mix;
mod play;
mod score;
mod style;
mod tags;
mod textures;
mod theory;
mod voices;

pub use tags::{default_bpm_for_tags, parse_tags, Genre, Instrument, Mood, TagReading, Texture};
pub use theory::{parse_keyscale, Key, Mode};

use crate::audio::Audio;
use crate::jobs::engine::EngineError;
use crate::jobs::generator::{GenerationInput, Generator};

/// Sample rate of every procedural render (the MP3's rate).
pub const SAMPLE_RATE: u32 = 44_100;

/// The procedural generator (`"procedural"`): no weights, a 90 s track in well under a second.
#[derive(Debug, Default, Clone, Copy)]
pub struct Procedural;

impl Procedural {
    /// A generator; it holds no state (the wavetables are built once per process on first use).
    pub fn new() -> Self {
        Procedural
    }
}

impl Generator for Procedural {
    fn name(&self) -> &str {
        "procedural"
    }

    fn generate(
        &self,
        req: &GenerationInput,
        progress: &(dyn Fn(f32) + Sync),
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<Audio, EngineError> {
        compose(req, progress, cancelled)
    }
}

/// Renders `req` to exactly `duration` seconds of 44.1 kHz stereo. Out-of-range parameters and an
/// unparsable `keyscale` are `InvalidInput`; a raised `cancelled` flag is `Cancelled`.
pub fn compose(
    req: &GenerationInput,
    progress: &(dyn Fn(f32) + Sync),
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<Audio, EngineError> {
    let invalid = |m: String| Err(EngineError::InvalidInput(m));
    let p = &req.parameters;
    if !(1..=600).contains(&p.duration) {
        return invalid(format!(
            "duration must be 1-600 seconds, got {}",
            p.duration
        ));
    }
    if !(30..=300).contains(&p.bpm) {
        return invalid(format!("bpm must be 30-300, got {}", p.bpm));
    }
    if !(2..=12).contains(&p.timesignature) {
        return invalid(format!(
            "timesignature must be 2-12, got {}",
            p.timesignature
        ));
    }
    if p.seed >= 1 << 32 {
        return invalid(format!("seed must be below 2^32, got {}", p.seed));
    }
    let key = parse_keyscale(&p.keyscale).map_err(EngineError::InvalidInput)?;
    let reading = parse_tags(&req.tags);
    let style = style::style_for(&reading, &mut dmath::Rng::stream(p.seed, "style"));
    let duration = p.duration as f64;
    let score = arrange::arrange(key, &style, p.bpm, p.timesignature, duration, p.seed);
    progress(0.02);
    let frames = p.duration as usize * SAMPLE_RATE as usize;
    let [l, r] = mix::render(&score, &style, frames, p.seed, progress, cancelled)
        .map_err(|_| EngineError::Cancelled)?;
    Ok(Audio {
        sample_rate: SAMPLE_RATE,
        channels: vec![l, r],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::GenerationParameters;
    use realfft::RealFftPlanner;

    fn req(
        tags: &str,
        duration: u32,
        bpm: u32,
        key: &str,
        beats: u32,
        seed: u64,
    ) -> GenerationInput {
        GenerationInput::new(
            tags,
            GenerationParameters {
                duration,
                bpm,
                keyscale: key.into(),
                timesignature: beats,
                seed,
            },
        )
    }

    /// `r` with one parameter changed.
    fn with(
        r: &GenerationInput,
        change: impl FnOnce(&mut GenerationParameters),
    ) -> GenerationInput {
        let mut r = r.clone();
        change(&mut r.parameters);
        r
    }

    fn run(r: &GenerationInput) -> Audio {
        compose(r, &|_| {}, &|| false).expect("render")
    }

    fn mono(a: &Audio) -> Vec<f32> {
        a.channels[0]
            .iter()
            .zip(&a.channels[1])
            .map(|(l, r)| 0.5 * (l + r))
            .collect()
    }

    #[test]
    fn same_request_same_samples_other_seed_other_samples() {
        let r = req(
            "lofi chill, piano, vinyl crackle",
            6,
            80,
            "A minor",
            4,
            1_729_384_756,
        );
        let a = run(&r);
        let b = run(&r);
        assert_eq!(a, b);
        let c = run(&with(&r, |p| p.seed = 7));
        assert_ne!(a.channels[0], c.channels[0]);
    }

    #[test]
    fn length_is_exact_to_the_sample_and_ends_in_a_fade() {
        for d in [1, 2, 7, 13] {
            let a = run(&req("pop", d, 128, "C major", 4, d as u64));
            assert_eq!(a.sample_rate, 44_100);
            assert_eq!(a.channels.len(), 2);
            assert_eq!(a.channels[0].len(), d as usize * 44_100);
            assert_eq!(a.channels[1].len(), d as usize * 44_100);
            for ch in &a.channels {
                assert!(ch.last().unwrap().abs() < 1e-4, "no fade at {d}s");
                assert!(ch.iter().any(|x| x.abs() > 0.05), "silent at {d}s");
            }
        }
    }

    #[test]
    fn every_time_signature_renders() {
        let tags = ["rock", "jazz", "house", "ambient", "classical", "funk"];
        for beats in 2..=12u32 {
            let t = tags[beats as usize % tags.len()];
            let a = run(&req(t, 5, 100, "E minor", beats, beats as u64));
            for ch in &a.channels {
                assert!(
                    ch.iter().all(|x| x.is_finite() && x.abs() <= 1.0),
                    "{t} {beats}"
                );
                assert!(ch.iter().any(|x| x.abs() > 0.05), "{t} {beats} silent");
            }
        }
    }

    #[test]
    fn rejects_bad_parameters() {
        let ok = req("pop", 5, 120, "A minor", 4, 1);
        let cases = [
            with(&ok, |p| p.keyscale = "H minor".into()),
            with(&ok, |p| p.duration = 0),
            with(&ok, |p| p.duration = 601),
            with(&ok, |p| p.bpm = 29),
            with(&ok, |p| p.timesignature = 13),
            with(&ok, |p| p.seed = 1 << 32),
        ];
        for c in cases {
            assert!(
                matches!(
                    compose(&c, &|_| {}, &|| false),
                    Err(EngineError::InvalidInput(_))
                ),
                "{c:?}"
            );
        }
        assert!(matches!(
            compose(&ok, &|_| {}, &|| true),
            Err(EngineError::Cancelled)
        ));
    }

    #[test]
    fn masters_to_minus_14_lufs_without_clipping() {
        for (tags, bpm) in [
            ("techno", 130),
            ("ambient rain", 70),
            ("jazz", 140),
            ("metal", 160),
        ] {
            let a = run(&req(tags, 20, bpm, "D minor", 4, 5));
            let lufs = mix::loudness(&a.channels[0], &a.channels[1]).unwrap();
            assert!((lufs - (-14.0)).abs() < 1.0, "{tags}: {lufs} LUFS");
            let peak = a
                .channels
                .iter()
                .flatten()
                .fold(0f32, |m, x| m.max(x.abs()));
            assert!(peak <= mix::CEILING + 1e-6, "{tags}: peak {peak}");
        }
    }

    /// Mean rise of energy at each time: the 30 ms after it minus the 30 ms before it.
    fn energy_rise(x: &[f32], times: &[f64]) -> f64 {
        let w = (0.03 * 44_100.0) as usize;
        let e = |a: usize, b: usize| {
            x[a..b.min(x.len())]
                .iter()
                .map(|v| (v * v) as f64)
                .sum::<f64>()
        };
        times
            .iter()
            .map(|t| {
                let s = (t * 44_100.0) as usize;
                (e(s, s + w) - e(s.saturating_sub(w), s)).max(0.0)
            })
            .sum::<f64>()
            / times.len() as f64
    }

    fn lowpass(x: &[f32], hz: f64) -> Vec<f32> {
        let mut f = dsp::OnePole::new(hz);
        let mut g = dsp::OnePole::new(hz);
        x.iter().map(|v| g.low(f.low(*v))).collect()
    }

    #[test]
    fn low_end_onsets_sit_on_the_beat_grid() {
        for (tags, bpm) in [("rock", 120), ("house", 124), ("hip hop", 90)] {
            let a = run(&req(tags, 16, bpm, "G major", 4, 9));
            let low = lowpass(&mono(&a), 150.0);
            let spb = 60.0 / bpm as f64;
            let beats: Vec<f64> = (1..(14.0 / spb) as usize).map(|k| k as f64 * spb).collect();
            let between: Vec<f64> = beats.iter().map(|t| t + 0.37 * spb).collect();
            let on = energy_rise(&low, &beats);
            let off = energy_rise(&low, &between);
            assert!(on > 5.0 * off, "{tags}: on-beat {on} vs between {off}");
        }
    }

    /// Onset-strength envelope: rise of RMS (2048-sample window, so low notes do not flicker)
    /// per 512-sample hop.
    fn onset_envelope(x: &[f32]) -> Vec<f64> {
        let (win, hop) = (2048, 512);
        let mut prev = 0.0;
        (0..x.len().saturating_sub(win) / hop)
            .map(|k| {
                let e = x[k * hop..k * hop + win]
                    .iter()
                    .map(|v| (v * v) as f64)
                    .sum::<f64>()
                    .sqrt();
                let d = (e - prev).max(0.0);
                prev = e;
                d
            })
            .collect()
    }

    /// Tempo by a comb over the onset envelope: for each candidate (60–200 bpm, 0.25 steps) the
    /// best phase's mean onset strength on its pulse train; the strongest candidate wins.
    fn tempo(x: &[f32]) -> f64 {
        let env = onset_envelope(&lowpass(x, 4000.0));
        let fps = 44_100.0 / 512.0;
        let at = |t: f64| {
            let i = t as usize;
            let f = t - i as f64;
            env.get(i).copied().unwrap_or(0.0) * (1.0 - f)
                + env.get(i + 1).copied().unwrap_or(0.0) * f
        };
        let mut best = (f64::MIN, 0.0);
        let mut bpm: f64 = 60.0;
        while bpm <= 200.0 {
            let period = fps * 60.0 / bpm;
            let pulses = ((env.len() as f64 - period) / period) as usize;
            for ph in 0..period as usize {
                let s: f64 = (0..pulses)
                    .map(|k| at(ph as f64 + k as f64 * period))
                    .sum::<f64>()
                    / pulses as f64;
                // A mild preference for faster pulses breaks ties between a tempo and its half.
                let score = s * (1.0 + bpm / 2000.0);
                if score > best.0 {
                    best = (score, bpm);
                }
            }
            bpm += 0.25;
        }
        best.1
    }

    #[test]
    fn tempo_is_recoverable_from_the_audio() {
        for (tags, bpm, beats) in [
            ("pop", 100, 4),
            ("techno", 128, 4),
            ("rock", 150, 3),
            ("funk", 96, 4),
        ] {
            let a = run(&req(tags, 20, bpm, "F major", beats, 2));
            let t = tempo(&mono(&a));
            let ok = [1.0, 2.0, 0.5]
                .iter()
                .any(|m| (t - bpm as f64 * m).abs() <= bpm as f64 * m * 0.02);
            assert!(ok, "{tags}: asked {bpm}, found {t}");
        }
    }

    /// Key by Krumhansl–Schmuckler correlation of a whole-track chroma vector.
    fn detect_key(x: &[f32]) -> (u8, Mode) {
        const MAJ: [f64; 12] = [
            6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88,
        ];
        const MIN: [f64; 12] = [
            6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17,
        ];
        // Long frames: 1.3 Hz bins resolve semitones down to 55 Hz.
        let n = 32_768;
        let mut planner = RealFftPlanner::<f64>::new();
        let fft = planner.plan_fft_forward(n);
        let mut chroma = [0f64; 12];
        let mut spec = fft.make_output_vec();
        let mut pos = 0;
        while pos + n <= x.len() {
            let mut frame: Vec<f64> = (0..n)
                .map(|i| {
                    let w = 0.5 - 0.5 * (std::f64::consts::TAU * i as f64 / n as f64).cos();
                    x[pos + i] as f64 * w
                })
                .collect();
            fft.process(&mut frame, &mut spec).unwrap();
            let mut fc = [0f64; 12];
            for (k, c) in spec.iter().enumerate().skip(1) {
                let f = k as f64 * 44_100.0 / n as f64;
                if !(55.0..=2000.0).contains(&f) {
                    continue;
                }
                let pc = ((12.0 * (f / 440.0).log2()).round() as i32 + 9).rem_euclid(12);
                // Divide by frequency: a semitone spans more bins higher up (as a CQT would).
                fc[pc as usize] += c.norm() / f;
            }
            // Each frame counts equally, whatever its loudness.
            let m = fc.iter().cloned().fold(1e-12, f64::max);
            for (c, v) in chroma.iter_mut().zip(fc) {
                *c += v / m;
            }
            pos += n / 2;
        }
        let corr = |p: &[f64; 12], t: usize| {
            let xs: Vec<f64> = (0..12).map(|i| chroma[(i + t) % 12]).collect();
            let (mx, mp) = (xs.iter().sum::<f64>() / 12.0, p.iter().sum::<f64>() / 12.0);
            let num: f64 = (0..12).map(|i| (xs[i] - mx) * (p[i] - mp)).sum();
            let den = ((0..12).map(|i| (xs[i] - mx).powi(2)).sum::<f64>()
                * (0..12).map(|i| (p[i] - mp).powi(2)).sum::<f64>())
            .sqrt();
            num / den
        };
        let mut best = (f64::MIN, 0u8, Mode::Major);
        for t in 0..12 {
            for (p, m) in [(&MAJ, Mode::Major), (&MIN, Mode::Minor)] {
                let c = corr(p, t);
                if c > best.0 {
                    best = (c, t as u8, m);
                }
            }
        }
        (best.1, best.2)
    }

    #[test]
    fn key_is_recoverable_from_the_audio() {
        let cases = [
            ("pop", "A minor"),
            ("lofi", "C major"),
            ("jazz", "F# minor"),
            ("rock", "Bb major"),
            ("ambient", "E minor"),
            ("house", "Eb major"),
            ("folk", "G major"),
            ("techno", "Ab minor"),
            ("cinematic", "C# minor"),
            ("funk", "D minor"),
        ];
        // The issue asks >= 90% exact keys over its grid; this crude FFT-chroma detector is held
        // to the same share here.
        let mut wrong = Vec::new();
        for (i, (tags, k)) in cases.iter().enumerate() {
            let a = run(&req(tags, 30, 110, k, 4, i as u64 + 20));
            let want = parse_keyscale(k).unwrap();
            let got = detect_key(&mono(&a));
            if got != (want.tonic, want.mode) {
                wrong.push(format!("{tags} in {k}: got {got:?}"));
            }
        }
        assert!(wrong.len() * 10 <= cases.len(), "{wrong:?}");
    }

    /// Mean spectral centroid (Hz) and onsets per second.
    fn features(x: &[f32]) -> (f64, f64) {
        let n = 2048;
        let mut planner = RealFftPlanner::<f64>::new();
        let fft = planner.plan_fft_forward(n);
        let mut spec = fft.make_output_vec();
        let (mut num, mut den) = (0.0, 0.0);
        for c in x.chunks_exact(n).step_by(4) {
            let mut frame: Vec<f64> = c.iter().map(|v| *v as f64).collect();
            fft.process(&mut frame, &mut spec).unwrap();
            for (k, s) in spec.iter().enumerate() {
                let m = s.norm();
                num += m * k as f64 * 44_100.0 / n as f64;
                den += m;
            }
        }
        // Onsets, in the manner of librosa's detector: log-power spectral flux (2048/512),
        // normalised to its maximum, peaks that top their ±3 frames and exceed the mean of
        // their ±10 frames by 0.07, at least 3 frames apart.
        let hop = 512;
        let mut flux = Vec::new();
        let mut prev: Vec<f64> = Vec::new();
        let mut pos = 0;
        while pos + n <= x.len() {
            let mut frame: Vec<f64> = x[pos..pos + n]
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    *v as f64 * (0.5 - 0.5 * (std::f64::consts::TAU * i as f64 / n as f64).cos())
                })
                .collect();
            fft.process(&mut frame, &mut spec).unwrap();
            let db: Vec<f64> = spec
                .iter()
                .map(|c| 10.0 * (c.norm_sqr() + 1e-10).log10())
                .collect();
            if !prev.is_empty() {
                let f: f64 = db
                    .iter()
                    .zip(&prev)
                    .map(|(a, b)| (a - b).max(0.0))
                    .sum::<f64>()
                    / db.len() as f64;
                flux.push(f);
            }
            prev = db;
            pos += hop;
        }
        let mx = flux.iter().cloned().fold(1e-12, f64::max);
        let fl: Vec<f64> = flux.iter().map(|v| v / mx).collect();
        let mut peaks = 0;
        let mut last = 0usize;
        for i in 0..fl.len() {
            let (a, b) = (i.saturating_sub(3), (i + 4).min(fl.len()));
            let (c, d) = (i.saturating_sub(10), (i + 11).min(fl.len()));
            let is_max = fl[a..b].iter().all(|v| *v <= fl[i]);
            let mean = fl[c..d].iter().sum::<f64>() / (d - c) as f64;
            if is_max && fl[i] >= mean + 0.07 && (peaks == 0 || i - last > 3) {
                peaks += 1;
                last = i;
            }
        }
        (num / den, peaks as f64 / (x.len() as f64 / 44_100.0))
    }

    #[test]
    fn genres_sound_measurably_different() {
        let dnb = mono(&run(&req("drum and bass", 20, 120, "C minor", 4, 3)));
        let ambient = mono(&run(&req("ambient", 20, 120, "C minor", 4, 3)));
        let (c_dnb, o_dnb) = features(&dnb);
        let (c_amb, o_amb) = features(&ambient);
        assert!(o_dnb > 1.5 * o_amb, "onsets/s dnb {o_dnb} ambient {o_amb}");
        assert!(c_dnb > 1.2 * c_amb, "centroid dnb {c_dnb} ambient {c_amb}");
    }
}
