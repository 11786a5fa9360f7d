//! Deterministic math and randomness for the composer: a seeded PRNG with labelled sub-streams, and
//! `sin`/`exp`/`tan` built from `+ - * /` only, so the same request renders bit-identical samples on
//! every platform (the standard library's transcendental functions may differ in the last bit).

use std::f64::consts::{FRAC_PI_2, LN_2, LOG2_E, PI, TAU};

/// Sine of `x` (radians); error below 1e-12 over any range a synthesiser uses.
pub fn sin(x: f64) -> f64 {
    let k = (x / TAU).round();
    let mut r = x - k * TAU;
    if r > FRAC_PI_2 {
        r = PI - r;
    } else if r < -FRAC_PI_2 {
        r = -PI - r;
    }
    let r2 = r * r;
    // Taylor series to r^17: |r| <= pi/2 keeps the remainder under 1e-13.
    let mut p = 1.0 / 355_687_428_096_000.0;
    p = 1.0 / 1_307_674_368_000.0 - r2 * p;
    p = 1.0 / 6_227_020_800.0 - r2 * p;
    p = 1.0 / 39_916_800.0 - r2 * p;
    p = 1.0 / 362_880.0 - r2 * p;
    p = 1.0 / 5_040.0 - r2 * p;
    p = 1.0 / 120.0 - r2 * p;
    p = 1.0 / 6.0 - r2 * p;
    r * (1.0 - r2 * p)
}

/// Cosine of `x` (radians).
pub fn cos(x: f64) -> f64 {
    sin(x + FRAC_PI_2)
}

/// Tangent of `x`, for filter coefficients (`x` well inside `(-pi/2, pi/2)`).
pub fn tan(x: f64) -> f64 {
    sin(x) / cos(x)
}

/// `e^x`, relative error below 1e-15; saturates to 0 / a huge value outside ±700.
pub fn exp(x: f64) -> f64 {
    if x < -700.0 {
        return 0.0;
    }
    let x = x.min(700.0);
    let k = (x * LOG2_E).round();
    let r = x - k * LN_2;
    // e^r for |r| <= ln2/2 by Horner's scheme on the Taylor series to r^13.
    let mut p = 1.0;
    for n in (1..=13).rev() {
        p = 1.0 + p * r / n as f64;
    }
    p * pow2i(k as i32)
}

/// `2^k` for an integer `k`, exactly.
fn pow2i(k: i32) -> f64 {
    let k = k.clamp(-1022, 1023);
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// `2^x`.
pub fn exp2(x: f64) -> f64 {
    exp(x * LN_2)
}

/// Frequency in Hz of a (possibly fractional) MIDI note number.
pub fn midi_hz(note: f64) -> f64 {
    440.0 * exp2((note - 69.0) / 12.0)
}

/// Linear gain of a level in decibels.
pub fn db(gain_db: f64) -> f64 {
    exp(gain_db * (std::f64::consts::LN_10 / 20.0))
}

/// Per-sample multiplier that decays by 1/e in `seconds` (a one-pole exponential envelope).
pub fn decay_coef(seconds: f64, sample_rate: f64) -> f32 {
    if seconds <= 0.0 {
        return 0.0;
    }
    exp(-1.0 / (seconds * sample_rate)) as f32
}

/// Cheap smooth saturation (a Padé approximation of `tanh`, exact at ±3 and flat beyond).
#[inline]
pub fn soft_clip(x: f32) -> f32 {
    let x = x.clamp(-3.0, 3.0);
    x * (27.0 + x * x) / (27.0 + 9.0 * x * x)
}

/// 64-bit FNV-1a of a label, to derive independent random streams by name.
pub fn hash_label(label: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in label.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64: small, fast, and its output is fixed by its definition (unlike `StdRng`, whose
/// algorithm may change between `rand` releases).
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A stream for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng {
            state: seed ^ 0x5851_f42d_4c95_7f2d,
        }
    }

    /// An independent stream named `label`: adding draws to one part never changes another.
    pub fn stream(seed: u64, label: &str) -> Self {
        let mut r = Rng::new(seed ^ hash_label(label));
        r.next_u64();
        r
    }

    /// A child stream of this one, named `label` (does not advance `self`).
    pub fn fork(&self, label: &str) -> Self {
        Rng::stream(self.state, label)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// An index drawn with the given non-negative weights (not all zero).
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut x = self.unit() * total;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }

    /// Roughly Gaussian (sum of four uniforms), mean 0, standard deviation `sd`.
    pub fn gauss(&mut self, sd: f64) -> f64 {
        let s = self.unit() + self.unit() + self.unit() + self.unit() - 2.0;
        s * sd * std::f64::consts::SQRT_2 * 1.224_744_871_391_589
    }

    /// A 32-bit seed for a per-note noise source.
    pub fn seed32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32 | 1
    }
}

/// Per-sample white noise (xorshift32) in `[-1, 1)`, seeded per note.
#[derive(Debug, Clone)]
pub struct Noise(u32);

impl Noise {
    pub fn new(seed: u32) -> Self {
        Noise(seed | 1)
    }

    #[inline]
    pub fn next(&mut self) -> f32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        (x as i32) as f32 * (1.0 / 2_147_483_648.0)
    }

    /// Uniform in `[0, 1)`.
    #[inline]
    pub fn unit(&mut self) -> f32 {
        self.next() * 0.5 + 0.5
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sin_cos_exp_match_std_closely() {
        let mut x = -50.0;
        while x < 50.0 {
            assert!((sin(x) - x.sin()).abs() < 1e-11, "sin({x})");
            assert!((cos(x) - x.cos()).abs() < 1e-11, "cos({x})");
            x += 0.0137;
        }
        let mut x = -60.0;
        while x < 60.0 {
            let rel = (exp(x) - x.exp()).abs() / x.exp();
            assert!(rel < 1e-13, "exp({x}) rel err {rel}");
            x += 0.071;
        }
        assert!((midi_hz(69.0) - 440.0).abs() < 1e-9);
        assert!((midi_hz(81.0) - 880.0).abs() < 1e-9);
        assert!((db(-6.0) - 0.501_187_233_627).abs() < 1e-9);
    }

    #[test]
    fn streams_are_reproducible_and_independent() {
        let draw = |mut r: Rng| (0..8).map(|_| r.next_u64()).collect::<Vec<_>>();
        let a = draw(Rng::stream(7, "drums"));
        let b = draw(Rng::stream(7, "drums"));
        let c = draw(Rng::stream(7, "bass"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut r = Rng::new(1);
        for _ in 0..1000 {
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
            assert!(r.below(7) < 7);
        }
        let mut n = Noise::new(3);
        let mean: f32 = (0..10_000).map(|_| n.next()).sum::<f32>() / 10_000.0;
        assert!(mean.abs() < 0.05);
    }
}
