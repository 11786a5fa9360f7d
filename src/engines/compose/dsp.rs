//! DSP building blocks for the voices: band-limited wavetables (built once per process from a sine
//! table, so they cost nothing per render), a phase-accumulator oscillator, the TPT state-variable
//! filter and one-pole filters. All per-sample work is allocation-free.

use std::sync::OnceLock;

use super::dmath;

/// Output sample rate of the composer.
pub const SR: f64 = 44_100.0;

/// Samples per wavetable cycle (a power of two: the phase's top bits index it).
const TABLE_BITS: u32 = 11;
const TABLE_LEN: usize = 1 << TABLE_BITS;
/// Lowest frequency of the first mip level; each level covers one octave.
const BASE_HZ: f64 = 20.0;
const LEVELS: usize = 11;

/// One waveform, one table per octave, each holding only harmonics below ~19 kHz for its octave.
pub struct WaveTable {
    levels: Vec<Vec<f32>>,
}

impl WaveTable {
    fn from_harmonics(sine: &[f32], amp: impl Fn(usize) -> f64) -> WaveTable {
        let mut levels = Vec::with_capacity(LEVELS);
        for k in 0..LEVELS {
            let top_hz = BASE_HZ * (2u32 << k) as f64;
            let max_h = ((19_000.0 / top_hz) as usize).clamp(1, TABLE_LEN / 2 - 1);
            let mut t = vec![0f64; TABLE_LEN];
            for h in 1..=max_h {
                let a = amp(h);
                if a == 0.0 {
                    continue;
                }
                for (i, v) in t.iter_mut().enumerate() {
                    *v += a * sine[(h * i) & (TABLE_LEN - 1)] as f64;
                }
            }
            let peak = t.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-9);
            let mut out: Vec<f32> = t.iter().map(|v| (v / peak) as f32).collect();
            out.push(out[0]);
            levels.push(out);
        }
        WaveTable { levels }
    }

    /// The table for a note of `hz`: the richest one that does not alias.
    #[inline]
    pub fn level(&self, hz: f64) -> &[f32] {
        let mut k = 0;
        let mut edge = BASE_HZ * 2.0;
        while hz >= edge && k + 1 < LEVELS {
            edge *= 2.0;
            k += 1;
        }
        &self.levels[k]
    }
}

/// Every table the voices use, built on first use and shared.
pub struct Tables {
    /// One sine cycle (`TABLE_LEN + 1` samples, last = first).
    pub sine: Vec<f32>,
    pub saw: WaveTable,
    pub square: WaveTable,
    pub triangle: WaveTable,
    /// Piano spectrum just after the hammer: many partials, a notch at the strike point.
    pub piano_bright: WaveTable,
    /// Piano spectrum once the upper partials have died away.
    pub piano_dark: WaveTable,
    /// Drawbar organ (8', 4', 2 2/3', 2', 1 1/3', 1'; no 1 3/5' tierce, whose major third would
    /// colour minor keys).
    pub organ: WaveTable,
}

/// The shared tables (about 1 ms to build the first time).
pub fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        // One cycle plus a guard sample equal to the first, for interpolation at the wrap.
        let sine: Vec<f32> = (0..=TABLE_LEN)
            .map(|i| dmath::sin(std::f64::consts::TAU * i as f64 / TABLE_LEN as f64) as f32)
            .collect();
        let strike = |h: usize| dmath::sin(std::f64::consts::PI * h as f64 / 7.3).abs();
        Tables {
            saw: WaveTable::from_harmonics(&sine, |h| 1.0 / h as f64),
            square: WaveTable::from_harmonics(
                &sine,
                |h| if h % 2 == 1 { 1.0 / h as f64 } else { 0.0 },
            ),
            triangle: WaveTable::from_harmonics(&sine, |h| {
                if h % 2 == 0 {
                    0.0
                } else if h % 4 == 1 {
                    1.0 / (h * h) as f64
                } else {
                    -1.0 / (h * h) as f64
                }
            }),
            piano_bright: WaveTable::from_harmonics(&sine, |h| {
                strike(h) * dmath::exp(-(h as f64) / 9.0) / (h as f64).sqrt()
            }),
            piano_dark: WaveTable::from_harmonics(&sine, |h| {
                if h > 8 {
                    0.0
                } else {
                    strike(h) / (h * h) as f64
                }
            }),
            organ: WaveTable::from_harmonics(&sine, |h| match h {
                1 => 1.0,
                2 => 0.7,
                3 => 0.5,
                4 => 0.45,
                6 => 0.25,
                8 => 0.2,
                _ => 0.0,
            }),
            sine,
        }
    })
}

/// Phase increment per sample for `hz` (a full cycle is 2^32).
#[inline]
pub fn inc(hz: f64) -> u32 {
    (hz.clamp(0.0, SR * 0.49) / SR * 4_294_967_296.0) as u32
}

/// Linear-interpolated read of a table at a 32-bit phase.
#[inline]
pub fn read(t: &[f32], phase: u32) -> f32 {
    let idx = (phase >> (32 - TABLE_BITS)) as usize;
    let frac = (phase & ((1 << (32 - TABLE_BITS)) - 1)) as f32
        * (1.0 / (1u32 << (32 - TABLE_BITS)) as f32);
    let a = t[idx];
    a + (t[idx + 1] - a) * frac
}

/// Phase offset (for phase modulation) of `x` cycles, wrapped.
#[inline]
pub fn cycles_to_phase(x: f32) -> u32 {
    (x as f64 * 4_294_967_296.0) as i64 as u32
}

/// Zero-delay-feedback state-variable filter (Simper's TPT form): low, band and high outputs.
#[derive(Debug, Clone, Default)]
pub struct Svf {
    ic1: f32,
    ic2: f32,
    a1: f32,
    a2: f32,
    a3: f32,
    k: f32,
}

/// One sample of every SVF output.
pub struct SvfOut {
    pub low: f32,
    pub band: f32,
    pub high: f32,
}

impl Svf {
    /// A filter at `hz` with resonance `q` (0.5 … 10).
    pub fn new(hz: f64, q: f64) -> Svf {
        let mut f = Svf::default();
        f.set(hz, q);
        f
    }

    /// Retunes (cheap enough for every 32 samples, not every sample).
    pub fn set(&mut self, hz: f64, q: f64) {
        let g = dmath::tan(std::f64::consts::PI * hz.clamp(10.0, SR * 0.45) / SR);
        let k = 1.0 / q;
        let a1 = 1.0 / (1.0 + g * (g + k));
        self.a1 = a1 as f32;
        self.a2 = (g * a1) as f32;
        self.a3 = (g * g * a1) as f32;
        self.k = k as f32;
    }

    #[inline]
    pub fn tick(&mut self, x: f32) -> SvfOut {
        let v3 = x - self.ic2;
        let v1 = self.a1 * self.ic1 + self.a2 * v3;
        let v2 = self.ic2 + self.a2 * self.ic1 + self.a3 * v3;
        self.ic1 = 2.0 * v1 - self.ic1;
        self.ic2 = 2.0 * v2 - self.ic2;
        SvfOut {
            low: v2,
            band: v1,
            high: x - self.k * v1 - v2,
        }
    }

    #[inline]
    pub fn low(&mut self, x: f32) -> f32 {
        self.tick(x).low
    }

    #[inline]
    pub fn high(&mut self, x: f32) -> f32 {
        self.tick(x).high
    }

    #[inline]
    pub fn band(&mut self, x: f32) -> f32 {
        self.tick(x).band
    }
}

/// One-pole low-pass (6 dB/octave), also used as a smoother.
#[derive(Debug, Clone, Default)]
pub struct OnePole {
    a: f32,
    y: f32,
}

impl OnePole {
    pub fn new(hz: f64) -> OnePole {
        OnePole {
            a: (1.0 - dmath::exp(-std::f64::consts::TAU * hz / SR)) as f32,
            y: 0.0,
        }
    }

    #[inline]
    pub fn low(&mut self, x: f32) -> f32 {
        self.y += self.a * (x - self.y);
        self.y
    }

    #[inline]
    pub fn high(&mut self, x: f32) -> f32 {
        x - self.low(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oscillator_reads_the_pitch_it_was_given() {
        let t = tables();
        // Count upward zero crossings of a 441 Hz sine over one second.
        let mut phase = 0u32;
        let step = inc(441.0);
        let mut prev = 0.0;
        let mut crossings = 0;
        for _ in 0..SR as usize {
            phase = phase.wrapping_add(step);
            let x = read(&t.sine, phase);
            if prev < 0.0 && x >= 0.0 {
                crossings += 1;
            }
            prev = x;
        }
        assert!((440..=442).contains(&crossings), "{crossings}");
        // Band-limiting: high levels hold fewer harmonics, every level peaks at 1.
        for w in [&t.saw, &t.square, &t.piano_bright, &t.organ] {
            for hz in [30.0, 440.0, 5000.0] {
                let lvl = w.level(hz);
                let peak = lvl.iter().fold(0f32, |m, v| m.max(v.abs()));
                assert!((peak - 1.0).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn svf_lowpass_attenuates_highs() {
        let mut lo = Svf::new(500.0, 0.707);
        let mut hi = Svf::new(500.0, 0.707);
        let t = tables();
        let (mut e_lo, mut e_hi) = (0.0f64, 0.0f64);
        let (mut p1, mut p2) = (0u32, 0u32);
        for i in 0..20_000 {
            p1 = p1.wrapping_add(inc(100.0));
            p2 = p2.wrapping_add(inc(8000.0));
            let a = lo.low(read(&t.sine, p1));
            let b = hi.low(read(&t.sine, p2));
            if i > 2000 {
                e_lo += (a * a) as f64;
                e_hi += (b * b) as f64;
            }
        }
        assert!(e_lo > 100.0 * e_hi, "{e_lo} vs {e_hi}");
    }
}
