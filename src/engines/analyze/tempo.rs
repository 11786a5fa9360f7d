//! Tempo and beats from the onset-strength envelope, and the beats' phase from the harmony.
//!
//! 1. The envelope is detrended (minus a 1 s moving average) and its generalised autocorrelation
//!    taken by FFT: the inverse transform of the magnitude spectrum rather than the power
//!    spectrum (compression exponent 1 instead of 2, as in Tomić & Klapuri's and Percival &
//!    Tzanetakis's tempo estimators), which sharpens the periodicity peaks and lets a loud pulse
//!    dominate less.
//! 2. Each candidate period P (30–300 BPM, 1/8-frame steps) is scored by a comb over the
//!    autocorrelation at P, 2P, 3P, 4P (interpolated, equal weights, as Davies & Plumbley's
//!    shift-invariant comb filterbank: one 4/4 bar), weighted by a log-normal tempo prior centred
//!    on 120 BPM (one octave wide), which settles octave ambiguity the way listeners usually do.
//!    The comb favours slower metrical levels (their multiples include the faster level's), so
//!    the candidates at 2× and 3/2× the best win when their score is within
//!    [`FASTER_LEVEL_MARGIN`] of it, or within [`SUBDIVIDED_MARGIN`] when that faster level is
//!    itself subdivided (a level with a pulse of its own below it is more likely the beat than the
//!    fastest pulse of the piece, such as a ballad's eighths).
//! 3. Beats: dynamic programming over the envelope (Ellis 2007): each frame's best score is its
//!    onset strength plus the best predecessor score minus a penalty on the log-ratio of the
//!    interval to P; backtracking from the best final frame gives the beat frames. When the
//!    lowest register's onsets are clearly stronger between the beats than on them, the beats
//!    move to the midpoints ([`settle_phase`]): kick and bass tell the beat from a louder
//!    off-beat. Then the caller (`analyze::rhythm_and_key`) hands the beats and the signal to
//!    [`settle_phase_by_harmony`], which makes the same move when the harmony changes clearly
//!    more at the midpoints than on the beats: chords change on beats, and it catches
//!    straight-eighth grooves whose beats and off-beats sound alike. It reads the beats as the
//!    kick left them and may move them back; each move drops one beat.
//!
//! The tempo reported is the comb's period, sharpened from the autocorrelation's peaks
//! ([`sharpen`], at most 1%). Until 2026-12 it was refined by a line through the longest regular
//! run of beats, by up to 5%; on the tune part of `scripts/analysis_eval` that moved right
//! readings off (a march with dotted rhythms, a piece with a ritardando) more often than it
//! mended one (tune 346 → 347 of 400 within 2% without it; held-out unchanged, 149 of 190).
//!
//! Meter and downbeats are read from the beats by [`super::meter`].

use realfft::RealFftPlanner;

/// What the tempo stage found.
#[derive(Debug, Clone, Default)]
pub struct TempoResult {
    /// Tempo, beats per minute.
    pub bpm: f64,
    /// Estimated probability that `bpm` is within 2% of the tempo, 0…1: a logistic function of
    /// how far the chosen tempo's score stands above the best tempo unrelated to it (not ×1, ×2,
    /// ×½, ×3/2, ×2/3, ×3, ×⅓, ×4, ×¼), of how close its best rival metrical level (×2, ×½,
    /// ×3/2, ×2/3) comes to it and of how periodic the envelope is at its period, fitted on the
    /// tune part of `scripts/analysis_eval`.
    pub confidence: f64,
    /// Beat times, seconds.
    pub beats: Vec<f64>,
}

/// Tempo search range, BPM.
pub const MIN_BPM: f64 = 30.0;
pub const MAX_BPM: f64 = 300.0;

/// Multiples of a candidate period the comb reads, each with the same weight. Until 2026-12 this
/// was eight multiples weighted 1/k over the power autocorrelation; on the tune part of
/// `scripts/analysis_eval` four equal-weight multiples over the magnitude autocorrelation
/// ([`AC_EXPONENT`]) read 179 of 206 excerpts within 2% instead of 176 (slow ballads no longer
/// read at double time; a boogie-woogie at 140 now read at half), +1 and +2 on the two halves
/// of the part split by piece. With 1/k weights, or 8 multiples, the magnitude autocorrelation
/// alone did not gain.
const COMB_MULTIPLES: usize = 4;
/// The autocorrelation is the inverse FFT of `|X|^AC_EXPONENT` (2 is the ordinary
/// autocorrelation). 0.5 and 1 scored the same on the tune part (179), 1.5 one less, 2 four less.
const AC_EXPONENT: f64 = 1.0;

/// A candidate at 2× or 3/2× the best tempo wins when its score times this beats the best's:
/// on the tune part of `scripts/analysis_eval` tempo within 2% went from 80% to 84% (fast swing,
/// marches and reels read at half speed, and 3/2 readings, were the misses).
const FASTER_LEVEL_MARGIN: f64 = 1.1;
/// A faster candidate counts as subdivided when the autocorrelation at half or a third of its
/// period reaches this share of its value at the period; its margin is then
/// [`SUBDIVIDED_MARGIN`]. On the tune part of `scripts/analysis_eval` (`tune_lab.py`'s tempo
/// stage with this rule): within 2% 173 → 176 of 206 (fast swing and 180-bpm pieces read at ½ or
/// ⅔ now right, 3 slow pieces read at 3/2 or 2 instead), the same for any share from 0.2 to 0.8,
/// and a gain on each half of the part split by piece (+1, +2).
const SUBDIVIDED: f64 = 0.5;
const SUBDIVIDED_MARGIN: f64 = 1.3;
/// Logistic calibration of the confidence:
/// `1 / (1 + exp(-(A + B·distinctness + C·rival + D·ln(strength))))`, the maximum-likelihood fit
/// on the tune part (400 excerpts). `rival` is the best ×2, ×½, ×3/2 or ×2/3 level's score over
/// the chosen one's (above 1 when the faster-level rule passed over a stronger slower level);
/// `strength` the chosen period's comb score itself (the autocorrelation at its multiples, 0…1:
/// how periodic the envelope is at all). Both were added on 2026-12-06: until then the confidence
/// was blind to octave errors, most of the misses, and gave noise or a steady tone 0.4–0.5.
/// Tune: area under the ROC curve 0.62 (distinctness alone) → 0.71 (+ rival) → 0.75 (+ strength);
/// white noise now 0.33, a steady tone under 0.02.
const CONF_A: f64 = 6.5;
const CONF_B: f64 = 0.8;
const CONF_C: f64 = -3.1;
const CONF_D: f64 = 1.55;
/// [`settle_phase`]'s margin. The dynamic programme follows the strongest onsets, which in
/// grooves with hats, skanks or comping on the off-beat are not on the beat: on the tune part of
/// `scripts/analysis_eval`, about one in seven of the MMA excerpts whose tempo was right had
/// every beat on the "and". With the kick and bass deciding, beat F-measure (`rhythm.py`, 278
/// excerpts) 0.830 → 0.848 and downbeat F 0.760 → 0.783; held-out (82, measured once) beat F
/// 0.854 unchanged, downbeat F 0.725 → 0.733. The margin was swept with a trial tempo stage
/// (1.0 / 1.15 / 1.2 / 1.3 / 1.4 / 1.6 → beat F 0.824 / 0.848 / 0.851 / 0.864 / 0.864 / 0.857).
const OFFBEAT_MARGIN: f64 = 1.4;

/// [`settle_phase_by_harmony`]'s margin: the harmony must change this much more at the
/// midpoints than on the beats. On the tune part of `scripts/analysis_eval` about one MMA excerpt
/// in fourteen whose tempo was right still had every beat on the "and" after [`settle_phase`]
/// (straight-eighth rock, pop and house grooves: hats, bass and comping on every eighth, so
/// neither the whole envelope nor the low register tells beat from off-beat), while the chord
/// changes sat on the beats. Beat F-measure (`rhythm.py`, 278 excerpts) 0.849 → 0.883 / 0.880 /
/// 0.885 / 0.877 / 0.870 for margins 1.1 / 1.2 / 1.3 / 1.4 / 1.5 (the mean change instead of the
/// top quarter's: at most 0.874; the median's: at most 0.855) in the numpy model of
/// `scripts/analysis_eval`; 1.2 is the middle of the plateau, and the binary reads 0.880 with it
/// (essentia 0.882). Held-out (82, measured once) 0.866 unchanged: its phase errors are one groove
/// (son) the rule does not reach.
const HARMONY_MARGIN: f64 = 1.2;
/// The largest quarter of the changes at the midpoints must also reach this (1 − cosine between
/// unit pitch-class profiles): a held chord, a drone or a drum loop changes by noise alone, and a
/// ratio of two noises is no evidence.
const HARMONY_FLOOR: f64 = 0.05;
/// Fewest beat/midpoint pairs read before the harmony may move the beats.
const HARMONY_MIN_READINGS: usize = 16;
/// Longest stretch of signal whose pitch classes [`settle_phase_by_harmony`] reads on either
/// side of a beat or midpoint, samples (0.37 s at 22.05 kHz), and the FFT size (bins 2.7 Hz
/// apart). The stretch is a half-beat, so the true resolution is coarser: at 140 bpm (4,725
/// samples) the Hann window's main lobe is about 19 Hz wide, and semitones below ~300 Hz blur
/// into their neighbours, which is still enough to tell one chord from the next.
const HARMONY_FFT: usize = 8192;
/// Shortest half-beat read, samples (93 ms: tempi up to ~320 bpm); below it a profile means little.
const HARMONY_MIN_SAMPLES: usize = 2048;
/// Most beats [`settle_phase_by_harmony`] reads (evenly spread): bounds its cost on long tracks.
const HARMONY_BEATS: usize = 64;

/// Estimates tempo and beats from an onset envelope sampled at `fps` frames per second; `low`,
/// the onset strength of the lowest register at the same rate, settles the beats' phase (step 3
/// of the module notes; ignored unless it is as long as `onset`). The beats are final only after
/// [`settle_phase_by_harmony`], which needs the signal and is the caller's to run.
pub fn estimate(onset: &[f32], low: &[f32], fps: f64) -> TempoResult {
    let n = onset.len();
    if n < (fps * 2.0) as usize {
        return TempoResult::default();
    }
    let env = normalise(&detrend(onset, (fps as usize).max(1)));
    let ac = autocorrelation(&env);
    if ac[0] <= 0.0 {
        return TempoResult::default();
    }
    let min_lag = 60.0 * fps / MAX_BPM;
    let max_lag = (60.0 * fps / MIN_BPM).min((n / 2) as f64);
    let lags: Vec<f64> = (0..)
        .map(|i| min_lag + 0.125 * i as f64)
        .take_while(|&l| l <= max_lag)
        .collect();
    let comb = comb_scores(&ac, &lags);
    let mut best = (0.0f64, f64::MIN);
    // (bpm, score, lag) of every candidate.
    let mut all: Vec<(f64, f64, f64)> = Vec::with_capacity(lags.len());
    for (&lag, &c) in lags.iter().zip(&comb) {
        let bpm = 60.0 * fps / lag;
        let score = c * prior(bpm);
        all.push((bpm, score, lag));
        if score > best.1 {
            best = (lag, score);
        }
    }
    if best.0 <= 0.0 {
        return TempoResult::default();
    }
    // Best score among the candidates within 3% of `bpm`.
    let near = |bpm: f64| {
        all.iter()
            .filter(|(b, _, _)| (b / bpm - 1.0).abs() < 0.03)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .copied()
    };
    let b0 = 60.0 * fps / best.0;
    let mut pick = (best.1, best.1, best.0); // (weighted score, score, lag)
                                             // Largest normalised autocorrelation within ±3% of `lag` (0 outside the computed lags).
    let peak = |lag: f64| -> f64 {
        let lo = (lag * 0.97).floor() as usize;
        let hi = (lag * 1.03).ceil() as usize;
        if lo < 1 || hi >= ac.len() {
            return 0.0;
        }
        (ac[lo..=hi].iter().cloned().fold(f64::MIN, f64::max) / ac[0]).max(0.0)
    };
    let subdivided =
        |lag: f64| peak(lag / 2.0).max(peak(lag / 3.0)) > SUBDIVIDED * peak(lag).max(1e-6);
    for f in [2.0, 1.5] {
        if let Some((_, s, l)) = near(b0 * f) {
            let margin = if subdivided(l) {
                SUBDIVIDED_MARGIN
            } else {
                FASTER_LEVEL_MARGIN
            };
            if s * margin > pick.0 {
                pick = (s * margin, s, l);
            }
        }
    }
    let period = pick.2;
    let chosen = 60.0 * fps / period;
    let related = |b: f64| {
        [1.0, 2.0, 0.5, 1.5, 2.0 / 3.0, 3.0, 1.0 / 3.0, 4.0, 0.25]
            .iter()
            .any(|f| (b / (chosen * f) - 1.0).abs() < 0.04)
    };
    let unrelated = all
        .iter()
        .filter(|(b, _, _)| !related(*b))
        .map(|x| x.1)
        .fold(0.0f64, f64::max);
    let distinct = if pick.1 > 0.0 {
        1.0 - unrelated / pick.1
    } else {
        0.0
    };
    let rival = [2.0, 0.5, 1.5, 2.0 / 3.0]
        .iter()
        .filter_map(|f| near(chosen * f))
        .map(|(_, s, _)| s)
        .fold(0.0f64, f64::max);
    let rival = if pick.1 > 0.0 { rival / pick.1 } else { 0.0 };
    // The chosen period's comb score before the prior.
    let strength = pick.1 / prior(chosen);
    let z = CONF_A + CONF_B * distinct + CONF_C * rival + CONF_D * strength.max(1e-6).ln();
    let confidence = 1.0 / (1.0 + (-z).exp());
    let mut beat_frames = track_beats(&env, period);
    if low.len() == n {
        beat_frames = settle_phase(beat_frames, low);
    }
    let beats: Vec<f64> = beat_frames.iter().map(|&f| f as f64 / fps).collect();
    TempoResult {
        bpm: 60.0 * fps / sharpen(&ac, period),
        confidence,
        beats,
    }
}

/// The log-normal tempo prior: centred on 120 BPM, one octave wide.
fn prior(bpm: f64) -> f64 {
    let octaves = (bpm / 120.0).log2();
    (-0.5 * octaves * octaves).exp()
}

/// Onset envelope minus its moving average over `win` frames, half-wave rectified.
fn detrend(x: &[f32], win: usize) -> Vec<f32> {
    let n = x.len();
    let mut prefix = vec![0.0f64; n + 1];
    for i in 0..n {
        prefix[i + 1] = prefix[i] + x[i] as f64;
    }
    (0..n)
        .map(|i| {
            let lo = i.saturating_sub(win / 2);
            let hi = (i + win / 2 + 1).min(n);
            let mean = (prefix[hi] - prefix[lo]) / (hi - lo) as f64;
            (x[i] as f64 - mean).max(0.0) as f32
        })
        .collect()
}

/// Scales to unit standard deviation (leaves an all-zero envelope alone).
fn normalise(x: &[f32]) -> Vec<f32> {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let sd = var.sqrt();
    if sd < 1e-12 {
        return x.to_vec();
    }
    x.iter().map(|&v| (v as f64 / sd) as f32).collect()
}

/// Generalised autocorrelation (unnormalised, lags 0..n) by FFT: the inverse transform of
/// `|X|^AC_EXPONENT`.
fn autocorrelation(x: &[f32]) -> Vec<f64> {
    let n = x.len();
    let size = (2 * n).next_power_of_two();
    let mut planner = RealFftPlanner::<f64>::new();
    let fwd = planner.plan_fft_forward(size);
    let inv = planner.plan_fft_inverse(size);
    let mut buf = fwd.make_input_vec();
    for (b, &v) in buf.iter_mut().zip(x) {
        *b = v as f64;
    }
    let mut spec = fwd.make_output_vec();
    if fwd.process(&mut buf, &mut spec).is_err() {
        return vec![0.0; n];
    }
    for c in spec.iter_mut() {
        *c = realfft::num_complex::Complex::new(c.norm().powf(AC_EXPONENT), 0.0);
    }
    let mut out = inv.make_output_vec();
    if inv.process(&mut spec, &mut out).is_err() {
        return vec![0.0; n];
    }
    out.truncate(n);
    out
}

/// The comb score of each candidate period in `lags` (frames): the mean of the autocorrelation
/// `ac`, normalised by its value at lag 0 and clipped at 0, at 1…[`COMB_MULTIPLES`] times the
/// period (linear interpolation between lags; multiples past the envelope's end are left out).
fn comb_scores(ac: &[f64], lags: &[f64]) -> Vec<f64> {
    let n = ac.len();
    let interp = |lag: f64| -> f64 {
        let i = lag.floor() as usize;
        if i + 1 >= n {
            return 0.0;
        }
        let frac = lag - i as f64;
        (ac[i] * (1.0 - frac) + ac[i + 1] * frac) / ac[0]
    };
    lags.iter()
        .map(|&lag| {
            let mut sum = 0.0;
            let mut count = 0.0;
            for k in 1..=COMB_MULTIPLES {
                let l = lag * k as f64;
                if l >= (n - 1) as f64 {
                    break;
                }
                sum += interp(l).max(0.0);
                count += 1.0;
            }
            if count > 0.0 {
                sum / count
            } else {
                0.0
            }
        })
        .collect()
}

/// The period sharpened from the autocorrelation `ac`: the comb reads it by linear interpolation
/// between whole-frame lags, so its best candidate sits on a whole or half frame (0.5% at 166
/// BPM). At each multiple k·`period` (k = 1…[`COMB_MULTIPLES`]) the highest lag within ±2% is
/// refined by a parabola through it and its neighbours, and the estimate is the mean of
/// peak/k weighted by the peaks' heights; it is kept only within 1% of `period`.
fn sharpen(ac: &[f64], period: f64) -> f64 {
    let mut sum = 0.0;
    let mut weight = 0.0;
    for k in 1..=COMB_MULTIPLES {
        let l = period * k as f64;
        let lo = (l * 0.98).floor().max(1.0) as usize;
        let hi = (l * 1.02).ceil() as usize;
        if hi + 1 >= ac.len() {
            break;
        }
        let i = (lo..=hi)
            .max_by(|&a, &b| ac[a].total_cmp(&ac[b]))
            .unwrap_or(lo);
        let (a, b, c) = (ac[i - 1], ac[i], ac[i + 1]);
        let curve = a - 2.0 * b + c;
        if b <= 0.0 || curve >= 0.0 || i == lo || i == hi {
            continue; // not an interior peak
        }
        let peak = i as f64 + 0.5 * (a - c) / curve;
        sum += b * peak / k as f64;
        weight += b;
    }
    if weight <= 0.0 {
        return period;
    }
    let sharp = sum / weight;
    if (sharp / period - 1.0).abs() <= 0.01 {
        sharp
    } else {
        period
    }
}

/// Moves the beats to the midpoints between them when the lowest register's onsets (`low`: kick,
/// bass notes) are stronger there: by more than [`OFFBEAT_MARGIN`] times, their largest value
/// within ±2 frames averaged over the midpoints against the same over the beats.
fn settle_phase(beats: Vec<usize>, low: &[f32]) -> Vec<usize> {
    if beats.len() < 4 {
        return beats;
    }
    let at = |f: usize| -> f64 {
        let hi = (f + 3).min(low.len());
        low.get(f.saturating_sub(2)..hi)
            .map_or(0.0, |w| w.iter().cloned().fold(0.0f32, f32::max) as f64)
    };
    let mids: Vec<usize> = beats.windows(2).map(|w| (w[0] + w[1]) / 2).collect();
    let on = beats.iter().map(|&f| at(f)).sum::<f64>() / beats.len() as f64;
    let off = mids.iter().map(|&f| at(f)).sum::<f64>() / mids.len() as f64;
    if off <= OFFBEAT_MARGIN * on {
        return beats;
    }
    // Only the midpoints: a beat added before the first or after the last could fall in
    // silence, which the tracker trims.
    mids
}

/// Moves the beats (seconds) to the midpoints between them when the harmony of `mono` (sampled at
/// `sr`, tuned `tuning` semitones from A440) changes more there: the pitch-class profile of each
/// half-beat either side of a beat and of a midpoint is compared (1 − cosine), and when the
/// largest quarter of the changes at the midpoints averages more than [`HARMONY_MARGIN`] times
/// the same at the beats, and at least [`HARMONY_FLOOR`], the midpoints are the beats (one fewer:
/// a beat added before the first or after the last could fall in silence). Chord changes are
/// sparse (once a bar or two), hence the largest quarter rather than the mean.
pub fn settle_phase_by_harmony(beats: Vec<f64>, mono: &[f32], sr: f64, tuning: f32) -> Vec<f64> {
    if beats.len() < 8 || sr <= 0.0 {
        return beats;
    }
    let mut gaps: Vec<f64> = beats.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_by(f64::total_cmp);
    let half = gaps[gaps.len() / 2] / 2.0;
    let mut planner = RealFftPlanner::<f32>::new();
    let fft = planner.plan_fft_forward(HARMONY_FFT);
    let mut input = fft.make_input_vec();
    let mut spec = fft.make_output_vec();
    let mut scratch = fft.make_scratch_vec();
    let bin_hz = sr / HARMONY_FFT as f64;
    let lo = (65.0 / bin_hz).ceil() as usize;
    let hi = ((2100.0 / bin_hz) as usize).min(HARMONY_FFT / 2);
    let class: Vec<usize> = (0..=hi)
        .map(|k| (12.0 * (k.max(1) as f64 * bin_hz / 440.0).log2() - tuning as f64).round() as i64)
        .map(|p| p.rem_euclid(12) as usize)
        .collect();
    // Each half-beat is read over its first `n` samples (at most HARMONY_FFT), Hann-windowed.
    let n = ((half * sr) as usize).min(HARMONY_FFT);
    if n < HARMONY_MIN_SAMPLES {
        return beats;
    }
    let window = super::frontend::hann(n);
    // Unit pitch-class profile of the half-beat from `start` seconds; None when it is silent or
    // runs past the signal.
    let mut profile = |start: f64| -> Option<[f64; 12]> {
        if start < 0.0 {
            return None;
        }
        let a = (start * sr).round() as usize;
        let signal = mono.get(a..a.checked_add(n)?)?;
        for ((x, &v), &w) in input.iter_mut().zip(signal).zip(&window) {
            *x = v * w;
        }
        input[n..].iter_mut().for_each(|x| *x = 0.0);
        fft.process_with_scratch(&mut input, &mut spec, &mut scratch)
            .ok()?;
        let mut c = [0.0f64; 12];
        for k in lo..=hi {
            c[class[k]] += spec[k].norm_sqr() as f64;
        }
        let norm = c.iter().map(|v| v * v).sum::<f64>().sqrt();
        (norm > 1e-12).then(|| c.map(|v| v / norm))
    };
    let change =
        |a: &[f64; 12], b: &[f64; 12]| 1.0 - a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let (mut on, mut off) = (Vec::new(), Vec::new());
    // Beats with a successor, HARMONY_BEATS of them at most, evenly spread.
    let count = beats.len() - 1;
    let take = count.min(HARMONY_BEATS);
    for j in 0..take {
        let i = j * count / take;
        let (b, m) = (beats[i], (beats[i] + beats[i + 1]) / 2.0);
        let (Some(before), Some(first), Some(second)) = (profile(b - half), profile(b), profile(m))
        else {
            continue;
        };
        on.push(change(&before, &first));
        off.push(change(&first, &second));
    }
    let top_quarter = |mut v: Vec<f64>| -> f64 {
        v.sort_by(|a, b| b.total_cmp(a));
        let k = (v.len() / 4).max(1);
        v.iter().take(k).sum::<f64>() / k as f64
    };
    if on.len() < HARMONY_MIN_READINGS {
        return beats;
    }
    let (at_beats, at_midpoints) = (top_quarter(on), top_quarter(off));
    if at_midpoints < HARMONY_FLOOR || at_midpoints <= HARMONY_MARGIN * at_beats {
        return beats;
    }
    beats.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect()
}

/// Ellis's dynamic-programming beat tracker; returns beat frame indices.
fn track_beats(env: &[f32], period: f64) -> Vec<usize> {
    let n = env.len();
    // Smooth the envelope with a Gaussian of width period/32 so near-misses still score.
    let sigma = (period / 32.0).max(0.5);
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|i| (-0.5 * (i as f64 / sigma).powi(2)).exp() as f32)
        .collect();
    let local: Vec<f32> = (0..n as isize)
        .map(|t| {
            kernel
                .iter()
                .enumerate()
                .map(|(k, w)| {
                    let j = t + k as isize - radius;
                    if j >= 0 && (j as usize) < n {
                        env[j as usize] * w
                    } else {
                        0.0
                    }
                })
                .sum()
        })
        .collect();
    const TIGHTNESS: f64 = 100.0;
    let lo = (period / 2.0).round().max(1.0) as usize;
    let hi = (period * 2.0).round() as usize;
    let mut score = vec![0.0f64; n];
    let mut back = vec![usize::MAX; n];
    // Penalty per candidate interval, precomputed.
    let penalty: Vec<f64> = (0..=hi)
        .map(|d| {
            if d == 0 {
                f64::INFINITY
            } else {
                TIGHTNESS * (d as f64 / period).ln().powi(2)
            }
        })
        .collect();
    for t in 0..n {
        let mut best = 0.0f64;
        let mut arg = usize::MAX;
        if t >= lo {
            let start = t.saturating_sub(hi);
            for p in start..=t - lo {
                let s = score[p] - penalty[t - p];
                if s > best || arg == usize::MAX {
                    best = s;
                    arg = p;
                }
            }
        }
        // Starting a new chain is allowed when no predecessor helps.
        if arg != usize::MAX && best > 0.0 {
            score[t] = local[t] as f64 + best;
            back[t] = arg;
        } else {
            score[t] = local[t] as f64;
        }
    }
    // Best end point within the last period, weighted towards strong cumulative scores.
    let tail_start = n.saturating_sub(period.ceil() as usize + 1);
    let mut end = tail_start;
    for t in tail_start..n {
        if score[t] > score[end] {
            end = t;
        }
    }
    let mut beats = vec![end];
    let mut t = end;
    while back[t] != usize::MAX {
        t = back[t];
        beats.push(t);
    }
    beats.reverse();
    // Drop leading/trailing beats in silence (local score near zero).
    let strong = local.iter().cloned().fold(0.0f32, f32::max) * 0.02;
    while beats.first().is_some_and(|&b| local[b] <= strong) {
        beats.remove(0);
    }
    while beats.last().is_some_and(|&b| local[b] <= strong) {
        beats.pop();
    }
    beats
}

#[cfg(test)]
mod tests {
    use super::*;

    const FPS: f64 = 22_050.0 / 256.0;

    /// An onset envelope of `secs` seconds at `bpm`: `pattern` gives the strength of each eighth
    /// note over one 4/4 bar (8 values), each onset two frames long.
    fn envelope(bpm: f64, pattern: [f32; 8], secs: f64) -> Vec<f32> {
        let n = (secs * FPS) as usize;
        let mut x = vec![0.0f32; n];
        let eighth = 60.0 / bpm / 2.0;
        let mut i = 0usize;
        while (i as f64) * eighth < secs - 0.01 {
            let f = ((i as f64) * eighth * FPS).round() as usize;
            if f < n {
                x[f] += pattern[i % 8];
            }
            if f + 1 < n {
                x[f + 1] += 0.5 * pattern[i % 8];
            }
            i += 1;
        }
        x
    }

    #[test]
    fn generalised_autocorrelation_peaks_at_the_period() {
        let x = envelope(120.0, [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0], 20.0);
        let ac = autocorrelation(&x);
        let period = (60.0 / 120.0 * FPS).round() as usize;
        assert!(ac[0] > 0.0 && ac.iter().all(|&v| v <= ac[0] + 1e-9));
        let around = |l: usize| ac[l - 2..=l + 2].iter().cloned().fold(f64::MIN, f64::max);
        // The beat lag stands well above the half-beat lag, where nothing repeats.
        assert!(
            around(period) > 3.0 * around(period / 2).max(0.0),
            "{}",
            around(period)
        );
    }

    #[test]
    fn a_ballad_bar_is_read_at_its_beat_and_a_rock_bar_at_its_tempo() {
        // Kick on 1 and 3, snare on 2 and 4, quiet eighths between: the beat is the quarter.
        let ballad = [1.0, 0.3, 0.8, 0.3, 0.7, 0.3, 0.8, 0.3];
        let r = estimate(&envelope(80.0, ballad, 30.0), &[], FPS);
        assert!((r.bpm / 80.0 - 1.0).abs() < 0.02, "{}", r.bpm);
        let rock = [1.0, 0.5, 0.9, 0.5, 1.0, 0.5, 0.9, 0.5];
        let r = estimate(&envelope(128.0, rock, 30.0), &[], FPS);
        assert!((r.bpm / 128.0 - 1.0).abs() < 0.02, "{}", r.bpm);
        assert!(
            r.confidence > 0.5 && r.confidence <= 1.0,
            "{}",
            r.confidence
        );
        assert!(!r.beats.is_empty());
        assert_eq!(estimate(&[0.0; 10], &[], FPS).bpm, 0.0);
    }

    #[test]
    fn the_tempo_is_read_to_a_fifth_of_a_percent() {
        // The comb alone lands on whole or half frames (up to 0.5% off at these tempi).
        for bpm in [98.5, 120.0, 132.0, 133.0, 143.0, 166.0, 177.0] {
            let r = estimate(
                &envelope(bpm, [1.0, 0.3, 0.8, 0.3, 1.0, 0.3, 0.8, 0.3], 30.0),
                &[],
                FPS,
            );
            assert!((r.bpm / bpm - 1.0).abs() < 0.002, "{bpm}: {}", r.bpm);
        }
    }

    /// `secs` of triads at 22.05 kHz, one chord per 4/4 bar at `bpm` (C, F, G, A minor, over and
    /// over), each note with two overtones; `changes` false holds the first chord throughout.
    fn chords(bpm: f64, secs: f64, changes: bool) -> Vec<f32> {
        const SR: f64 = 22_050.0;
        let bar = 4.0 * 60.0 / bpm;
        let triads: [[f64; 3]; 4] = [
            [60.0, 64.0, 67.0],
            [65.0, 69.0, 72.0],
            [67.0, 71.0, 74.0],
            [57.0, 60.0, 64.0],
        ];
        (0..(secs * SR) as usize)
            .map(|i| {
                let t = i as f64 / SR;
                let chord = if changes { (t / bar) as usize % 4 } else { 0 };
                let mut x = 0.0;
                for &note in &triads[chord] {
                    let f = 440.0 * 2f64.powf((note - 69.0) / 12.0);
                    for h in 1..=3 {
                        x += (2.0 * std::f64::consts::PI * f * h as f64 * t).sin() / h as f64;
                    }
                }
                (0.1 * x) as f32
            })
            .collect()
    }

    #[test]
    fn chord_changes_put_the_beats_on_the_beat() {
        let (bpm, secs) = (100.0, 30.0);
        let period = 60.0 / bpm;
        let on: Vec<f64> = (1..48).map(|k| k as f64 * period).collect();
        let off: Vec<f64> = on.iter().map(|b| b + period / 2.0).collect();
        let near_beat = |beats: &[f64]| {
            beats
                .iter()
                .filter(|&&b| ((b / period) - (b / period).round()).abs() * period < 0.01)
                .count()
        };
        let music = chords(bpm, secs, true);
        // Beats on the "and" move onto the chord changes; beats already there stay.
        let moved = settle_phase_by_harmony(off.clone(), &music, 22_050.0, 0.0);
        assert_eq!(moved.len(), off.len() - 1);
        assert_eq!(near_beat(&moved), moved.len(), "{moved:?}");
        assert_eq!(
            settle_phase_by_harmony(on.clone(), &music, 22_050.0, 0.0),
            on
        );
        // A quarter-tone sharp (every pitch half a semitone up, the beats 3% sooner), read with
        // that tuning: the same.
        let ratio = 2f64.powf(0.5 / 12.0);
        let sharp: Vec<f32> = (0..music.len())
            .map(|i| music[((i as f64 * ratio) as usize).min(music.len() - 1)])
            .collect();
        let off_sharp: Vec<f64> = off.iter().map(|b| b / ratio).collect();
        let moved = settle_phase_by_harmony(off_sharp.clone(), &sharp, 22_050.0, 0.5);
        assert_eq!(moved.len(), off_sharp.len() - 1);
        // One chord throughout: nothing tells beat from off-beat, so nothing moves; nor over ten
        // beats.
        let held = chords(bpm, secs, false);
        assert_eq!(
            settle_phase_by_harmony(off.clone(), &held, 22_050.0, 0.0),
            off
        );
        let short = off[..10].to_vec();
        assert_eq!(
            settle_phase_by_harmony(short.clone(), &held, 22_050.0, 0.0),
            short
        );
        // Silence as long as the music, too few beats, a signal shorter than the beats, no
        // sample rate, beats out of order: unchanged, no panic.
        let silence = vec![0.0; music.len()];
        for (beats, signal, sr) in [
            (off.clone(), &silence[..], 22_050.0),
            (off.clone(), &music[..1000], 22_050.0),
            (off[..5].to_vec(), &music[..], 22_050.0),
            (off.clone(), &music[..], 0.0),
            (off.iter().rev().copied().collect(), &music[..], 22_050.0),
        ] {
            assert_eq!(
                settle_phase_by_harmony(beats.clone(), signal, sr, 0.0),
                beats
            );
        }
    }

    #[test]
    fn the_kick_puts_the_beats_on_the_beat_when_the_off_beats_are_louder() {
        // A skank: chords on every off-beat, louder than the kick on every beat.
        let bpm = 100.0;
        let kick = envelope(bpm, [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0], 30.0);
        let chords = envelope(bpm, [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0], 30.0);
        let full: Vec<f32> = (0..kick.len()).map(|i| 0.3 * kick[i] + chords[i]).collect();
        let period = 60.0 / bpm;
        // Distance of a time from the nearest beat (multiples of the period), in periods.
        let phase = |t: &f64| {
            let x = t / period;
            (x - x.round()).abs()
        };
        let on_beat = |beats: &[f64]| beats.iter().filter(|t| phase(t) < 0.1).count();
        let alone = estimate(&full, &[], FPS);
        assert!((alone.bpm / bpm - 1.0).abs() < 0.02, "{}", alone.bpm);
        assert_eq!(on_beat(&alone.beats), 0, "{:?}", alone.beats);
        let with = estimate(&full, &kick, FPS);
        assert!((with.bpm / bpm - 1.0).abs() < 0.02, "{}", with.bpm);
        assert!(with.beats.len() > 40, "{}", with.beats.len());
        assert_eq!(on_beat(&with.beats), with.beats.len(), "{:?}", with.beats);
    }
}
