//! The mastering chain's building blocks, hand-written because they are the product: biquad
//! filters (RBJ cookbook forms), a stereo-linked feed-forward compressor, a 4× oversampled
//! inter-sample peak detector and an offline look-ahead true-peak limiter.
//!
//! Everything works offline on whole signals: the limiter reads the future directly instead of
//! delaying the audio, so the output is sample-aligned with the input.

use std::collections::VecDeque;
use std::f64::consts::PI;

/// One second-order IIR section in transposed direct form II, coefficients normalised by a0.
#[derive(Debug, Clone, Copy)]
pub struct Biquad {
    b0: f64,
    b1: f64,
    b2: f64,
    a1: f64,
    a2: f64,
}

impl Biquad {
    /// Second-order Butterworth-style high-pass at `freq` Hz (Q 0.7071): removes DC and rumble.
    pub fn highpass(rate: f64, freq: f64) -> Biquad {
        let (cos, alpha) = Self::omega(rate, freq, std::f64::consts::FRAC_1_SQRT_2);
        Self::norm(
            (1.0 + cos) / 2.0,
            -(1.0 + cos),
            (1.0 + cos) / 2.0,
            1.0 + alpha,
            -2.0 * cos,
            1.0 - alpha,
        )
    }

    /// Second-order low-pass at `freq` Hz (Q 0.7071): used to measure the low band.
    pub fn lowpass(rate: f64, freq: f64) -> Biquad {
        let (cos, alpha) = Self::omega(rate, freq, std::f64::consts::FRAC_1_SQRT_2);
        Self::norm(
            (1.0 - cos) / 2.0,
            1.0 - cos,
            (1.0 - cos) / 2.0,
            1.0 + alpha,
            -2.0 * cos,
            1.0 - alpha,
        )
    }

    /// Low shelf at `freq` Hz with `gain_db` below it (shelf slope 1).
    pub fn low_shelf(rate: f64, freq: f64, gain_db: f64) -> Biquad {
        Self::shelf(rate, freq, gain_db, false)
    }

    /// High shelf at `freq` Hz with `gain_db` above it (shelf slope 1).
    pub fn high_shelf(rate: f64, freq: f64, gain_db: f64) -> Biquad {
        Self::shelf(rate, freq, gain_db, true)
    }

    fn shelf(rate: f64, freq: f64, gain_db: f64, high: bool) -> Biquad {
        let a = 10f64.powf(gain_db / 40.0);
        let w0 = 2.0 * PI * freq / rate;
        let (sin, cos) = w0.sin_cos();
        // Shelf slope S = 1: alpha = sin/2 · sqrt(2).
        let alpha = sin / 2.0 * std::f64::consts::SQRT_2;
        let sq = 2.0 * a.sqrt() * alpha;
        if high {
            Self::norm(
                a * ((a + 1.0) + (a - 1.0) * cos + sq),
                -2.0 * a * ((a - 1.0) + (a + 1.0) * cos),
                a * ((a + 1.0) + (a - 1.0) * cos - sq),
                (a + 1.0) - (a - 1.0) * cos + sq,
                2.0 * ((a - 1.0) - (a + 1.0) * cos),
                (a + 1.0) - (a - 1.0) * cos - sq,
            )
        } else {
            Self::norm(
                a * ((a + 1.0) - (a - 1.0) * cos + sq),
                2.0 * a * ((a - 1.0) - (a + 1.0) * cos),
                a * ((a + 1.0) - (a - 1.0) * cos - sq),
                (a + 1.0) + (a - 1.0) * cos + sq,
                -2.0 * ((a - 1.0) + (a + 1.0) * cos),
                (a + 1.0) + (a - 1.0) * cos - sq,
            )
        }
    }

    fn omega(rate: f64, freq: f64, q: f64) -> (f64, f64) {
        let w0 = 2.0 * PI * freq / rate;
        let (sin, cos) = w0.sin_cos();
        (cos, sin / (2.0 * q))
    }

    fn norm(b0: f64, b1: f64, b2: f64, a0: f64, a1: f64, a2: f64) -> Biquad {
        Biquad {
            b0: b0 / a0,
            b1: b1 / a0,
            b2: b2 / a0,
            a1: a1 / a0,
            a2: a2 / a0,
        }
    }

    /// Filters `x` in place from a zero state.
    pub fn run(&self, x: &mut [f32]) {
        self.run_from(&mut BiquadState::default(), x);
    }

    /// Filters `x` in place from `state` and leaves the state at its end, so that a signal
    /// filtered block by block reads exactly as if it had been filtered whole.
    pub fn run_from(&self, state: &mut BiquadState, x: &mut [f32]) {
        let BiquadState { mut z1, mut z2 } = *state;
        for s in x.iter_mut() {
            let i = *s as f64;
            let o = self.b0 * i + z1;
            z1 = self.b1 * i - self.a1 * o + z2;
            z2 = self.b2 * i - self.a2 * o;
            *s = o as f32;
        }
        *state = BiquadState { z1, z2 };
    }

    /// Filters a copy of `x`.
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        let mut y = x.to_vec();
        self.run(&mut y);
        y
    }
}

/// The two delay registers of a [`Biquad`] between blocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct BiquadState {
    z1: f64,
    z2: f64,
}

/// Compressor settings: a gentle glue compressor, not a loudness maximiser.
#[derive(Debug, Clone, Copy)]
pub struct CompressorSettings {
    /// Level (dBFS, of the peak-envelope detector) where compression starts.
    pub threshold_db: f64,
    /// Input dB above threshold per output dB above threshold.
    pub ratio: f64,
    /// Width of the soft knee, dB.
    pub knee_db: f64,
    /// Detector attack time constant, seconds.
    pub attack_s: f64,
    /// Detector release time constant, seconds.
    pub release_s: f64,
}

/// Compresses all channels with one linked gain; returns the largest and the mean gain
/// reduction applied, in dB (positive numbers).
pub fn compress(channels: &mut [Vec<f32>], rate: f64, s: &CompressorSettings) -> (f64, f64) {
    let n = channels.first().map_or(0, Vec::len);
    if n == 0 {
        return (0.0, 0.0);
    }
    let att = (-1.0 / (s.attack_s * rate)).exp();
    let rel = (-1.0 / (s.release_s * rate)).exp();
    let mut env_db = -120.0f64;
    let mut max_gr = 0.0f64;
    let mut sum_gr = 0.0f64;
    for i in 0..n {
        let peak = channels.iter().fold(0.0f32, |m, c| m.max(c[i].abs())) as f64;
        let level = if peak > 1e-6 {
            20.0 * peak.log10()
        } else {
            -120.0
        };
        let coef = if level > env_db { att } else { rel };
        env_db = coef * env_db + (1.0 - coef) * level;
        let gr = gain_reduction_db(env_db, s);
        if gr > 0.0 {
            let g = 10f64.powf(-gr / 20.0) as f32;
            for c in channels.iter_mut() {
                c[i] *= g;
            }
        }
        max_gr = max_gr.max(gr);
        sum_gr += gr;
    }
    (max_gr, sum_gr / n as f64)
}

/// Static soft-knee curve: how many dB to take off a signal whose envelope is `level` dB.
fn gain_reduction_db(level: f64, s: &CompressorSettings) -> f64 {
    let over = level - s.threshold_db;
    let slope = 1.0 - 1.0 / s.ratio;
    if 2.0 * over <= -s.knee_db {
        0.0
    } else if 2.0 * over < s.knee_db {
        slope * (over + s.knee_db / 2.0).powi(2) / (2.0 * s.knee_db)
    } else {
        slope * over
    }
}

/// Phases between input samples the peak detector looks at. 8× rather than BS.1770's 4×: at 4×
/// a peak of content near Nyquist can fall between the phases and read up to 0.7 dB low, and the
/// limiter must hold the ceiling for any meter, not just one sampling grid.
const OVERSAMPLE: usize = 8;
/// Taps per polyphase branch: far longer than BS.1770-4 Annex 2's 12, whose early roll-off
/// under-reads bright transients (noisy hi-hats) by several tenths of a dB; 32 taps agree with an
/// independent long-filter meter (scipy, `scripts/audio/check_loudness.py`) on such material.
const TAPS: usize = 32;

/// Per-sample inter-sample peak: for each frame `n`, the largest absolute value over all
/// channels of the signal band-limited-interpolated on `[n, n+1)` at 8 points. What the limiter
/// must keep below its ceiling so that a true-peak meter agrees. `None` when `cancelled` said
/// so (it is looked at every [`PEAK_CANCEL_EVERY`] frames).
pub fn intersample_peaks(channels: &[Vec<f32>], cancelled: &dyn Fn() -> bool) -> Option<Vec<f32>> {
    let n = channels.first().map_or(0, Vec::len);
    let mut peaks = vec![0.0f32; n];
    let phases = polyphase();
    let half = TAPS / 2;
    for ch in channels {
        // Zero-padded so every tap reads inside the buffer.
        let mut padded = vec![0.0f32; n + TAPS];
        padded[half..half + n].copy_from_slice(ch);
        for i in 0..n {
            if i % PEAK_CANCEL_EVERY == 0 && cancelled() {
                return None;
            }
            let mut m = ch[i].abs();
            let window = &padded[i + 1..i + 1 + TAPS];
            for ph in &phases {
                let v: f32 = window.iter().zip(ph).map(|(a, b)| a * b).sum();
                m = m.max(v.abs());
            }
            if m > peaks[i] {
                peaks[i] = m;
            }
        }
    }
    Some(peaks)
}

/// Frames of [`intersample_peaks`] between two looks at the cancel flag (about a tenth of a
/// second of work).
const PEAK_CANCEL_EVERY: usize = 1 << 18;

/// The seven fractional-delay branches (1/8 … 7/8 of a sample) of a Kaiser-windowed sinc
/// interpolator, each normalised to unity DC gain.
fn polyphase() -> Vec<[f32; TAPS]> {
    let beta = 8.0f64;
    let i0 = |x: f64| {
        // Modified Bessel function of the first kind, order 0, by its power series.
        let mut sum = 1.0;
        let mut term = 1.0;
        for k in 1..30 {
            term *= (x / 2.0) / k as f64;
            sum += term * term;
        }
        sum
    };
    let half = (TAPS / 2) as f64;
    (1..OVERSAMPLE)
        .map(|p| {
            let frac = p as f64 / OVERSAMPLE as f64;
            let mut taps = [0.0f64; TAPS];
            for (k, t) in taps.iter_mut().enumerate() {
                // Tap k multiplies input sample (n + 1 + k - TAPS/2); its distance from the
                // interpolated point n + frac:
                let d = (k as f64 + 1.0 - half) - frac;
                let sinc = if d.abs() < 1e-12 {
                    1.0
                } else {
                    (PI * d).sin() / (PI * d)
                };
                let r = d / (half + 1.0);
                let w = if r.abs() < 1.0 {
                    i0(beta * (1.0 - r * r).sqrt()) / i0(beta)
                } else {
                    0.0
                };
                *t = sinc * w;
            }
            let sum: f64 = taps.iter().sum();
            let mut out = [0.0f32; TAPS];
            for (o, t) in out.iter_mut().zip(taps) {
                *o = (t / sum) as f32;
            }
            out
        })
        .collect()
}

/// Limiter timing.
#[derive(Debug, Clone, Copy)]
pub struct LimiterSettings {
    /// Look-ahead (and attack ramp) length, seconds.
    pub lookahead_s: f64,
    /// Release time constant, seconds.
    pub release_s: f64,
}

/// The gain curve that keeps `gain × peaks` at or below `ceiling` (linear): for every frame, the
/// smallest gain needed anywhere in the next look-ahead window, ramped in linearly over the window
/// and released exponentially. Every value is ≤ the gain its own frame needs, so applying the
/// curve guarantees the ceiling on the detector's peaks.
pub fn limiter_gain(
    peaks: &[f32],
    gain: f32,
    ceiling: f32,
    rate: f64,
    s: &LimiterSettings,
) -> Vec<f32> {
    let n = peaks.len();
    let look = ((s.lookahead_s * rate) as usize).max(1);
    // One buffer, rewritten in place by each stage: need → held → smoothed → released. Each
    // stage reads only values at or after the one it writes (the deque keeps the values it
    // compares, the smoother keeps its last `look + 1` inputs in a ring), so the curve costs
    // one frame-length buffer however long the programme.
    let mut out: Vec<f32> = peaks
        .iter()
        .map(|&p| {
            let p = p * gain;
            if p > ceiling {
                ceiling / p
            } else {
                1.0
            }
        })
        .collect();
    // held[j] = min(need[j ..= j + look]) via a monotonic deque of (frame, need).
    let mut dq: VecDeque<(usize, f32)> = VecDeque::new();
    let mut next = 0;
    for j in 0..n {
        let hi = (j + look).min(n - 1);
        while next <= hi {
            let v = out[next];
            while dq.back().is_some_and(|&(_, b)| b >= v) {
                dq.pop_back();
            }
            dq.push_back((next, v));
            next += 1;
        }
        while dq.front().is_some_and(|&(f, _)| f < j) {
            dq.pop_front();
        }
        out[j] = dq.front().map_or(1.0, |&(_, v)| v);
    }
    // smooth[i] = mean(held[i - look ..= i]); each window [j, j+look] with j in that range
    // contains i, so the mean is ≤ need[i]. Frames before 0 count as held[0], the least of
    // need[0 ..= look], so the bound holds from the first frame (counting them as gain 1 let a
    // programme that starts loud through the first look-ahead at full gain).
    let first = out.first().copied().unwrap_or(1.0);
    let mut ring = vec![first; look + 1];
    let mut acc = (look + 1) as f64 * first as f64;
    for (i, o) in out.iter_mut().enumerate() {
        let slot = i % (look + 1);
        acc += *o as f64;
        acc -= ring[slot] as f64;
        ring[slot] = *o;
        *o = (acc / (look + 1) as f64) as f32;
    }
    // Release: never rise faster than the release constant allows, never exceed the ramp.
    let rel = (-1.0 / (s.release_s * rate)).exp() as f32;
    let mut g = 1.0f32;
    for o in out.iter_mut() {
        let released = 1.0 - (1.0 - g) * rel;
        g = released.min(*o);
        *o = g;
    }
    out
}

/// TPDF dither of ±1 LSB at `bits`, from a fixed-seed xorshift so output is reproducible.
pub fn dither(channels: &mut [Vec<f32>], bits: u32) {
    let lsb = 1.0 / (1u64 << (bits - 1)) as f32;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut uniform = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    for ch in channels.iter_mut() {
        for s in ch.iter_mut() {
            *s += (uniform() + uniform()) * lsb;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: f64, freq: f64, amp: f64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (amp * (2.0 * PI * freq * i as f64 / rate).sin()) as f32)
            .collect()
    }

    fn rms(x: &[f32]) -> f64 {
        (x.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn shelves_and_filters_have_the_designed_gain() {
        let rate = 48_000.0;
        let n = 48_000;
        let low = sine(rate, 50.0, 0.5, n);
        let high = sine(rate, 15_000.0, 0.5, n);
        let gain =
            |f: Biquad, x: &[f32]| 20.0 * (rms(&f.apply(x)[n / 2..]) / rms(&x[n / 2..])).log10();
        assert!((gain(Biquad::low_shelf(rate, 150.0, 3.0), &low) - 3.0).abs() < 0.3);
        assert!(gain(Biquad::low_shelf(rate, 150.0, 3.0), &high).abs() < 0.1);
        assert!((gain(Biquad::high_shelf(rate, 5000.0, -2.0), &high) + 2.0).abs() < 0.3);
        assert!(gain(Biquad::high_shelf(rate, 5000.0, -2.0), &low).abs() < 0.1);
        assert!(gain(Biquad::highpass(rate, 20.0), &high).abs() < 0.05);
        assert!(gain(Biquad::lowpass(rate, 150.0), &high) < -40.0);
    }

    #[test]
    fn intersample_peak_of_a_quarter_rate_sine_is_found() {
        // fs/4 sine with 45° phase: samples sit at ±0.707·A, the true peak is A.
        let n = 4000;
        let x: Vec<f32> = (0..n)
            .map(|i| (2.0 * PI * (i as f64 / 4.0 + 0.125)).sin() as f32)
            .collect();
        let sample_peak = x.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        assert!((sample_peak - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-3);
        let p = intersample_peaks(&[x], &|| false).unwrap();
        let true_peak = p[100..n - 100].iter().fold(0.0f32, |m, &s| m.max(s));
        assert!(true_peak > 0.97 && true_peak < 1.03, "{true_peak}");
    }

    #[test]
    fn limiter_gain_never_lets_a_peak_through_and_recovers() {
        let rate = 44_100.0;
        let mut peaks = vec![0.1f32; 44_100];
        peaks[10_000] = 2.0;
        peaks[10_001] = 1.5;
        let s = LimiterSettings {
            lookahead_s: 0.002,
            release_s: 0.05,
        };
        let g = limiter_gain(&peaks, 1.0, 0.9, rate, &s);
        for (i, (&p, &gi)) in peaks.iter().zip(&g).enumerate() {
            assert!(p * gi <= 0.9 + 1e-6, "frame {i}: {}", p * gi);
            assert!(gi <= 1.0);
        }
        assert!(g[10_000] <= 0.45 + 1e-6);
        assert!(g[9_000] > 0.999, "untouched well before the peak");
        assert!(g[30_000] > 0.99, "released after the peak");
        // The ramp in is gradual, not a step: half-way through the look-ahead it is partway.
        let mid = g[10_000 - 44];
        assert!(mid < 0.99 && mid > 0.45, "{mid}");
    }

    /// A programme loud from its first frame: the look-ahead has nothing before frame 0 to ramp
    /// down in, so the first frames must start reduced (they once passed at full gain, +22 dBTP
    /// over a -1 dBTP ceiling).
    #[test]
    fn limiter_gain_holds_the_ceiling_from_the_first_frame() {
        let rate = 48_000.0;
        let peaks = vec![0.2f32; 4_800];
        let s = LimiterSettings {
            lookahead_s: 0.0015,
            release_s: 0.06,
        };
        let g = limiter_gain(&peaks, 171.0, 0.89, rate, &s);
        for (i, (&p, &gi)) in peaks.iter().zip(&g).enumerate() {
            assert!(
                p * 171.0 * gi <= 0.89 + 1e-4,
                "frame {i}: {}",
                p * 171.0 * gi
            );
        }
    }

    /// The curve is computed in one buffer rewritten in place; it must equal the definition
    /// computed the plain way (a minimum and a mean over each window, then the release).
    #[test]
    fn limiter_gain_in_place_equals_its_definition() {
        let rate = 8_000.0;
        let s = LimiterSettings {
            lookahead_s: 0.002,
            release_s: 0.01,
        };
        let look = (s.lookahead_s * rate) as usize;
        let mut seed = 7u64;
        let peaks: Vec<f32> = (0..3_000)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % 1000) as f32 / 500.0
            })
            .collect();
        let (gain, ceiling) = (1.3f32, 0.8f32);
        let n = peaks.len();
        let need: Vec<f32> = peaks
            .iter()
            .map(|&p| {
                if p * gain > ceiling {
                    ceiling / (p * gain)
                } else {
                    1.0
                }
            })
            .collect();
        let held: Vec<f32> = (0..n)
            .map(|j| {
                need[j..=(j + look).min(n - 1)]
                    .iter()
                    .fold(1.0f32, |m, &v| m.min(v))
            })
            .collect();
        let mut g = 1.0f32;
        let rel = (-1.0 / (s.release_s * rate)).exp() as f32;
        let expected: Vec<f32> = (0..n)
            .map(|i| {
                let sum: f64 = (0..=look)
                    .map(|k| if i >= k { held[i - k] } else { held[0] } as f64)
                    .sum();
                let smooth = (sum / (look + 1) as f64) as f32;
                g = (1.0 - (1.0 - g) * rel).min(smooth);
                g
            })
            .collect();
        let got = limiter_gain(&peaks, gain, ceiling, rate, &s);
        let worst = got
            .iter()
            .zip(&expected)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst < 1e-5, "largest difference {worst}");
        assert!(
            expected.iter().any(|&v| v < 0.7),
            "the test must limit something"
        );
    }

    #[test]
    fn a_biquad_run_in_blocks_equals_one_run() {
        let x = sine(44_100.0, 3_000.0, 0.7, 10_000);
        let f = Biquad::lowpass(44_100.0, 120.0);
        let whole = f.apply(&x);
        let mut blocks = x.clone();
        let mut state = BiquadState::default();
        for chunk in blocks.chunks_mut(777) {
            f.run_from(&mut state, chunk);
        }
        assert_eq!(whole, blocks);
    }

    #[test]
    fn compressor_reduces_only_loud_passages() {
        let rate = 44_100.0;
        let mut quiet = sine(rate, 200.0, 0.05, 44_100);
        let loud = sine(rate, 200.0, 0.9, 44_100);
        quiet.extend(&loud);
        let mut chans = vec![quiet.clone()];
        let s = CompressorSettings {
            threshold_db: -12.0,
            ratio: 3.0,
            knee_db: 6.0,
            attack_s: 0.005,
            release_s: 0.1,
        };
        let (max_gr, _) = compress(&mut chans, rate, &s);
        let before_q = rms(&quiet[20_000..40_000]);
        let after_q = rms(&chans[0][20_000..40_000]);
        assert!(
            (after_q / before_q - 1.0).abs() < 0.01,
            "quiet part untouched"
        );
        let before_l = rms(&quiet[60_000..80_000]);
        let after_l = rms(&chans[0][60_000..80_000]);
        let gr = 20.0 * (before_l / after_l).log10();
        // Envelope ≈ -1 dBFS, 11 dB over: 3:1 takes off ≈ 7.3 dB.
        assert!(gr > 6.0 && gr < 8.5, "{gr}");
        assert!(max_gr >= gr - 0.5);
    }
}
