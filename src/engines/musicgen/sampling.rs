//! Choosing each step's codes from the logits: classifier-free guidance, temperature, top-k, and a seeded
//! draw — transformers' `ClassifierFreeGuidanceLogitsProcessor`, `TemperatureLogitsWarper`,
//! `TopKLogitsWarper` and multinomial sampling (audiocraft `LMModel._sample_next_token` does the same).
//!
//! The random source is our own SplitMix64, not torch's generator: the same seed gives the same codes on
//! every build and platform, but not the same codes as PyTorch (greedy decoding is what parity tests check).

/// How a step's code is picked from the guided logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// The most likely code (first on ties): deterministic, used by the parity tests.
    Greedy,
    /// Softmax over the `top_k` largest logits divided by `temperature`, then one seeded draw.
    TopK { top_k: usize, temperature: f64 },
}

impl Sampling {
    /// MusicGen's published defaults: top-k 250, temperature 1.0.
    pub const PUBLISHED: Sampling = Sampling::TopK {
        top_k: 250,
        temperature: 1.0,
    };
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and fixed forever, so seeds stay reproducible.
#[derive(Debug, Clone)]
pub struct SeededRng {
    state: u64,
}

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// `uncond + (cond - uncond) * scale`, element by element in f32 as the reference computes it.
pub fn guide(cond: &[f32], uncond: &[f32], scale: f32) -> Vec<f32> {
    cond.iter()
        .zip(uncond)
        .map(|(&c, &u)| u + (c - u) * scale)
        .collect()
}

/// The index of the largest logit, first on ties (`torch.argmax`); NaNs are never chosen.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best: Option<usize> = None;
    for (i, &v) in logits.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        match best {
            Some(b) if v <= logits[b] => {}
            _ => best = Some(i),
        }
    }
    best.unwrap_or(0) as u32
}

/// Picks one code from `logits` (one codebook's row).
pub fn pick(logits: &[f32], sampling: Sampling, rng: &mut SeededRng) -> u32 {
    match sampling {
        Sampling::Greedy => argmax(logits),
        Sampling::TopK { top_k, temperature } => sample_top_k(logits, top_k, temperature, rng),
    }
}

/// Temperature, then top-k (ties with the k-th value kept, as `TopKLogitsWarper`), softmax, one draw.
/// Degenerate inputs (no finite logit, temperature ≤ 0) fall back to the argmax instead of failing.
pub fn sample_top_k(logits: &[f32], top_k: usize, temperature: f64, rng: &mut SeededRng) -> u32 {
    if logits.is_empty() {
        return 0;
    }
    if temperature <= 0.0 || !temperature.is_finite() || top_k == 1 {
        return argmax(logits);
    }
    let inv_t = (1.0 / temperature) as f32;
    let scaled: Vec<f32> = logits.iter().map(|&l| l * inv_t).collect();
    // candidates sorted by value (descending), index ascending on ties: a fixed order for the draw
    let mut order: Vec<usize> = (0..scaled.len())
        .filter(|&i| scaled[i].is_finite())
        .collect();
    if order.is_empty() {
        return argmax(logits);
    }
    order.sort_by(|&a, &b| scaled[b].total_cmp(&scaled[a]).then(a.cmp(&b)));
    let k = if top_k == 0 {
        order.len()
    } else {
        top_k.min(order.len())
    };
    let kth = scaled[order[k - 1]];
    let keep = order.iter().take_while(|&&i| scaled[i] >= kth).count();
    let kept = &order[..keep];
    let max = scaled[kept[0]] as f64;
    let weights: Vec<f64> = kept
        .iter()
        .map(|&i| (scaled[i] as f64 - max).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.next_f64() * total;
    for (&i, w) in kept.iter().zip(&weights) {
        if u < *w {
            return i as u32;
        }
        u -= w;
    }
    kept[kept.len() - 1] as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_reproducible_and_uniform_enough() {
        let mut a = SeededRng::new(42);
        let mut b = SeededRng::new(42);
        let xs: Vec<f64> = (0..10_000).map(|_| a.next_f64()).collect();
        let ys: Vec<f64> = (0..10_000).map(|_| b.next_f64()).collect();
        assert_eq!(xs, ys);
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        assert_ne!(SeededRng::new(1).next_u64(), SeededRng::new(2).next_u64());
    }

    #[test]
    fn guidance_extrapolates_from_unconditional() {
        assert_eq!(guide(&[2.0, 0.0], &[1.0, 1.0], 3.0), vec![4.0, -2.0]);
    }

    #[test]
    fn top_k_never_leaves_the_top_k() {
        let logits: Vec<f32> = (0..100).map(|i| i as f32 * 0.01).collect();
        let mut rng = SeededRng::new(7);
        for _ in 0..2000 {
            let t = sample_top_k(&logits, 5, 1.0, &mut rng);
            assert!(t >= 95, "{t}");
        }
    }

    #[test]
    fn sampling_follows_the_softmax() {
        // p(1) = e^1 / (e^0 + e^1) ≈ 0.731
        let mut rng = SeededRng::new(3);
        let n = 20_000;
        let ones = (0..n)
            .filter(|_| sample_top_k(&[0.0, 1.0], 250, 1.0, &mut rng) == 1)
            .count();
        let p = ones as f64 / n as f64;
        assert!((p - 0.7311).abs() < 0.015, "{p}");
        // temperature 0.5 sharpens: p(1) = e^2 / (1 + e^2) ≈ 0.881
        let ones = (0..n)
            .filter(|_| sample_top_k(&[0.0, 1.0], 250, 0.5, &mut rng) == 1)
            .count();
        let p = ones as f64 / n as f64;
        assert!((p - 0.8808).abs() < 0.015, "{p}");
    }

    #[test]
    fn degenerate_logits_do_not_panic() {
        let mut rng = SeededRng::new(0);
        assert_eq!(sample_top_k(&[], 250, 1.0, &mut rng), 0);
        assert_eq!(sample_top_k(&[f32::NAN, f32::NAN], 250, 1.0, &mut rng), 0);
        assert_eq!(
            sample_top_k(&[0.0, f32::NEG_INFINITY, 5.0], 250, 0.0, &mut rng),
            2
        );
        assert_eq!(argmax(&[f32::NAN, 1.0, 1.0]), 1);
    }
}
