//! The analysis front end: one pass that turns [`Audio`] into everything the estimators read —
//! a mono 22.05 kHz signal, a short-time spectrum (1024-point, hop 256, ≈86 frames/s) reduced on
//! the fly to an onset-strength envelope, spectral descriptors and 40 mel bands, and a long-window
//! chroma (8192-point, hop 4096, ≈5.4 frames/s) for key and harmony.
//!
//! Speed is the design constraint (a 3-minute track in well under 500 ms on two cores): the
//! signal is downmixed and decimated before any FFT, spectra are never stored, only per-frame
//! summaries.

use rayon::prelude::*;
use realfft::RealFftPlanner;

use crate::audio::{self, resample::resample_planar, Audio, Quality};

/// Analysis sample rate, Hz: enough bandwidth for spectral descriptors, 2× cheaper than 44.1 kHz.
pub const SR: u32 = 22_050;
/// Short-time FFT size and hop (samples at [`SR`]).
pub const N_FFT: usize = 1024;
pub const HOP: usize = 256;
/// Chroma FFT size and hop: 2.7 Hz bins resolve semitones down to ~100 Hz.
pub const CHROMA_FFT: usize = 8192;
pub const CHROMA_HOP: usize = 4096;
/// Mel bands of the mel summary and of the onset detector.
pub const N_MELS: usize = 40;
/// Weight of the h-th subharmonic vote in the chroma is `HARMONIC_DECAY^(h-1)`. 0.8 rather than
/// HPCP's 0.6: upper partials then count more fully towards their own note, which halved the
/// dominant/subdominant key confusions on the tune part of `scripts/analysis_eval` (12 -> 6 of
/// 114 excerpts, with energy-weighted frames).
const HARMONIC_DECAY: f32 = 0.8;

/// Per-frame results of the short-time pass, all the same length (one per hop).
#[derive(Debug, Clone, Default)]
pub struct Frames {
    /// Onset strength: rectified rise of log-mel energy, summed over bands.
    pub onset: Vec<f32>,
    /// Spectral centroid, Hz.
    pub centroid: Vec<f32>,
    /// Frequency below which 85% of the spectral energy lies, Hz.
    pub rolloff: Vec<f32>,
    /// Spectral flatness (geometric / arithmetic mean of power), 0…1.
    pub flatness: Vec<f32>,
    /// Frame energy (mean power), linear.
    pub energy: Vec<f32>,
    /// Log-mel energies, dB, `N_MELS` per frame, frame-major.
    pub mel_db: Vec<f32>,
    /// Low-band (< 200 Hz) onset strength, for downbeats.
    pub low_onset: Vec<f32>,
}

/// Everything the estimators need, computed once per input.
pub struct Frontend {
    /// Mono signal at [`SR`].
    pub mono: Vec<f32>,
    /// Short-time frames.
    pub frames: Frames,
    /// Chroma vectors (12 per frame, C first), each frame's energy per pitch class.
    pub chroma: Vec<[f32; 12]>,
    /// Estimated tuning offset of the recording from A440, in semitones (−0.5…0.5).
    pub tuning: f32,
}

impl Frontend {
    /// Frames per second of [`Frames`].
    pub fn frame_rate() -> f64 {
        SR as f64 / HOP as f64
    }

    /// Seconds per chroma frame.
    pub fn chroma_period() -> f64 {
        CHROMA_HOP as f64 / SR as f64
    }

    /// Runs the whole front end.
    pub fn new(audio: &Audio) -> Result<Frontend, audio::Error> {
        let mono = to_analysis_rate(audio)?;
        let band = band_bins(audio.sample_rate);
        let (frames, (chroma, tuning)) = rayon::join(|| short_time(&mono, band), || chroma(&mono));
        Ok(Frontend {
            mono,
            frames,
            chroma,
            tuning,
        })
    }
}

/// The STFT bins the spectral descriptors (centroid, roll-off, flatness) read for audio
/// recorded at `rate`: those up to its Nyquist frequency. Above it, a file resampled up to
/// [`SR`] holds only the resampler's and the window's leakage, which put an 8 kHz file's
/// centroid above 4 kHz.
pub fn band_bins(rate: u32) -> usize {
    let bins = N_FFT / 2 + 1;
    let bin_hz = SR as f64 / N_FFT as f64;
    if rate >= SR {
        return bins;
    }
    ((rate as f64 / 2.0 / bin_hz).floor() as usize + 1).clamp(1, bins)
}

/// Downmixes to mono and resamples to [`SR`] with the fast FFT resampler.
pub fn to_analysis_rate(audio: &Audio) -> Result<Vec<f32>, audio::Error> {
    let mono = audio.mono();
    if audio.sample_rate == SR || mono.is_empty() {
        return Ok(mono);
    }
    let mut out = resample_planar(&[mono], audio.sample_rate, SR, Quality::Fast)?;
    Ok(out.pop().unwrap_or_default())
}

/// A periodic Hann window of `n` samples.
pub(crate) fn hann(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / n as f32).cos())
        .collect()
}

fn hz_to_mel(f: f64) -> f64 {
    2595.0 * (1.0 + f / 700.0).log10()
}

fn mel_to_hz(m: f64) -> f64 {
    700.0 * (10f64.powf(m / 2595.0) - 1.0)
}

/// Triangular mel filters over the `N_FFT/2+1` bins, as (first bin, weights) per band,
/// area-normalised so bands of different widths are comparable.
fn mel_filters() -> Vec<(usize, Vec<f32>)> {
    let bins = N_FFT / 2 + 1;
    let fmax = SR as f64 / 2.0;
    let (lo, hi) = (hz_to_mel(30.0), hz_to_mel(fmax));
    let edges: Vec<f64> = (0..N_MELS + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (N_MELS + 1) as f64))
        .collect();
    let bin_hz = SR as f64 / N_FFT as f64;
    (0..N_MELS)
        .map(|b| {
            let (l, c, r) = (edges[b], edges[b + 1], edges[b + 2]);
            let first = ((l / bin_hz).floor() as usize).min(bins - 1);
            let last = ((r / bin_hz).ceil() as usize).min(bins - 1);
            let norm = 2.0 / (r - l);
            let w = (first..=last)
                .map(|k| {
                    let f = k as f64 * bin_hz;
                    let v = if f <= l || f >= r {
                        0.0
                    } else if f <= c {
                        (f - l) / (c - l)
                    } else {
                        (r - f) / (r - c)
                    };
                    (v * norm) as f32
                })
                .collect();
            (first, w)
        })
        .collect()
}

/// A piece of the short-time pass given to one thread is at least this many frames (about 6 s).
const MIN_FRAMES_PER_PIECE: usize = 512;

/// The short-time pass: one FFT per hop, reduced immediately to per-frame summaries. Frames are
/// independent, so runs of them are computed in parallel; the onset envelope, which compares
/// each frame with the one before, is taken afterwards from the mel energies.
///
/// The spectral descriptors read the first `band` bins ([`band_bins`]); the energy and the mel
/// bands read them all.
pub fn short_time(mono: &[f32], band: usize) -> Frames {
    short_time_in(mono, band, rayon::current_num_threads())
}

fn short_time_in(mono: &[f32], band: usize, pieces: usize) -> Frames {
    let n_frames = if mono.is_empty() {
        0
    } else {
        mono.len() / HOP + 1
    };
    if n_frames == 0 {
        return Frames::default();
    }
    let win = hann(N_FFT);
    let filters = mel_filters();
    let pieces = pieces.clamp(1, n_frames.div_ceil(MIN_FRAMES_PER_PIECE));
    let parts: Vec<Frames> = (0..pieces)
        .into_par_iter()
        .map(|i| {
            describe(
                mono,
                n_frames * i / pieces..n_frames * (i + 1) / pieces,
                band,
                &win,
                &filters,
            )
        })
        .collect();
    let mut f = Frames::default();
    for part in parts {
        f.centroid.extend(part.centroid);
        f.rolloff.extend(part.rolloff);
        f.flatness.extend(part.flatness);
        f.energy.extend(part.energy);
        f.mel_db.extend(part.mel_db);
    }
    let bin_hz = SR as f32 / N_FFT as f32;
    let low_bands = filters
        .iter()
        .take_while(|(first, _)| (*first as f32 * bin_hz) < 200.0)
        .count()
        .max(1);
    onset_strength(&mut f, low_bands);
    f
}

/// Spectral descriptors and log-mel energies of frames `range` (all of [`Frames`] but the onset
/// envelopes).
fn describe(
    mono: &[f32],
    range: std::ops::Range<usize>,
    band: usize,
    win: &[f32],
    filters: &[(usize, Vec<f32>)],
) -> Frames {
    let mut planner = RealFftPlanner::<f32>::new();
    let fft = planner.plan_fft_forward(N_FFT);
    let mut input = fft.make_input_vec();
    let mut spec = fft.make_output_vec();
    let mut scratch = fft.make_scratch_vec();
    let bins = N_FFT / 2 + 1;
    let bin_hz = SR as f32 / N_FFT as f32;
    let mut power = vec![0.0f32; bins];
    let n = range.len();
    let mut f = Frames {
        centroid: Vec::with_capacity(n),
        rolloff: Vec::with_capacity(n),
        flatness: Vec::with_capacity(n),
        energy: Vec::with_capacity(n),
        mel_db: Vec::with_capacity(n * N_MELS),
        ..Frames::default()
    };
    let half = N_FFT as isize / 2;
    for t in range {
        // Frames are centred: frame t covers samples around t·HOP.
        let start = (t * HOP) as isize - half;
        for (i, x) in input.iter_mut().enumerate() {
            let j = start + i as isize;
            *x = if j >= 0 && (j as usize) < mono.len() {
                mono[j as usize] * win[i]
            } else {
                0.0
            };
        }
        if fft
            .process_with_scratch(&mut input, &mut spec, &mut scratch)
            .is_err()
        {
            break;
        }
        let mut total = 0.0f64;
        let mut band_total = 0.0f64;
        let mut weighted = 0.0f64;
        let mut mag_sum = 0.0f64;
        let mut log_sum = 0.0f64;
        // The flatness's log-sum is taken over products of 16 bins: one logarithm per 16 bins
        // instead of one per bin, which was a tenth of the whole tempo/key analysis. A product
        // stays inside f64's range: each factor is at least 1e-10 (≥ 1e-160 for 16), and at
        // most (1024 · 512)² ≈ 3e11 for samples within the decoder's ±1024 limit
        // (`audio::limits::MAX_SAMPLE_MAGNITUDE`) under a Hann window summing to 512 (≤ 1e184).
        let mut product = 1.0f64;
        for (k, (p, c)) in power.iter_mut().zip(&spec).enumerate() {
            *p = c.norm_sqr();
            total += *p as f64;
            if k >= band {
                continue;
            }
            band_total += *p as f64;
            let mag = p.sqrt();
            mag_sum += mag as f64;
            weighted += (mag * k as f32 * bin_hz) as f64;
            product *= (*p + 1e-10) as f64;
            if k % 16 == 15 {
                log_sum += product.ln();
                product = 1.0;
            }
        }
        log_sum += product.ln();
        let mean_power = total / bins as f64;
        f.energy.push(mean_power as f32);
        f.centroid.push(if mag_sum > 1e-9 {
            (weighted / mag_sum) as f32
        } else {
            0.0
        });
        let band_mean = band_total / band as f64;
        f.flatness.push(if band_mean > 1e-10 {
            ((log_sum / band as f64).exp() / (band_mean + 1e-10)) as f32
        } else {
            1.0
        });
        let mut acc = 0.0f64;
        let mut roll = 0.0f32;
        for (k, &p) in power[..band].iter().enumerate() {
            acc += p as f64;
            if acc >= 0.85 * band_total {
                roll = k as f32 * bin_hz;
                break;
            }
        }
        f.rolloff.push(roll);
        for (first, w) in filters {
            let e: f32 = w.iter().zip(&power[*first..]).map(|(a, b)| a * b).sum();
            f.mel_db.push(10.0 * (e + 1e-10).log10());
        }
    }
    f
}

/// The onset envelopes from the log-mel energies: the rectified rise of each band from the frame
/// before, averaged over all bands and over the lowest `low_bands` (below 200 Hz).
fn onset_strength(f: &mut Frames, low_bands: usize) {
    let n = f.mel_db.len() / N_MELS;
    f.onset = Vec::with_capacity(n);
    f.low_onset = Vec::with_capacity(n);
    let mut prev: &[f32] = &[0.0; N_MELS];
    for (t, mel) in f.mel_db.chunks_exact(N_MELS).enumerate() {
        let mut flux = 0.0f32;
        let mut low_flux = 0.0f32;
        if t > 0 {
            for (b, (&l, &p)) in mel.iter().zip(prev).enumerate() {
                // Compress the floor so near-silence does not produce onsets.
                let rise = (l.max(-80.0) - p.max(-80.0)).max(0.0);
                flux += rise;
                if b < low_bands {
                    low_flux += rise;
                }
            }
        }
        f.onset.push(flux / N_MELS as f32);
        f.low_onset.push(low_flux / low_bands as f32);
        prev = mel;
    }
}

/// Long-window harmonic pitch-class profile with tuning compensation. Each spectral peak between
/// 65 Hz and 4.2 kHz adds its magnitude to the pitch class it lies in (and to those it is an
/// overtone of), weighted by how close it is to the semitone centre. Peaks only, rather than every
/// bin: on the tune part of `scripts/analysis_eval` key exact went from 103 to 105 of 114 (two
/// excerpts gained, none lost); a median-floor subtraction instead gave 104, both together 105.
pub fn chroma(mono: &[f32]) -> (Vec<[f32; 12]>, f32) {
    if mono.len() < CHROMA_FFT / 4 {
        return (Vec::new(), 0.0);
    }
    let win = hann(CHROMA_FFT);
    let bin_hz = SR as f64 / CHROMA_FFT as f64;
    let lo = (65.0 / bin_hz).ceil() as usize;
    let hi = ((4200.0 / bin_hz) as usize).min(CHROMA_FFT / 2);
    // MIDI pitch of each bin, computed once.
    let pitch: Vec<f32> = (0..=hi)
        .map(|k| {
            if k == 0 {
                0.0
            } else {
                (69.0 + 12.0 * (k as f64 * bin_hz / 440.0).log2()) as f32
            }
        })
        .collect();
    let n_frames = mono.len().saturating_sub(CHROMA_FFT) / CHROMA_HOP + 1;
    // Each frame's spectral peaks (magnitudes, zero elsewhere), frames in parallel. Only peaks are
    // kept (as HPCP does): a partial is one peak, while the broadband floor between partials
    // (drums, noise, a window's skirts) is not pitch.
    let mags: Vec<Vec<f32>> = {
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(CHROMA_FFT);
        (0..n_frames)
            .into_par_iter()
            .map_init(
                || {
                    (
                        fft.make_input_vec(),
                        fft.make_output_vec(),
                        fft.make_scratch_vec(),
                    )
                },
                |(input, spec, scratch), t| {
                    let start = t * CHROMA_HOP;
                    for (i, x) in input.iter_mut().enumerate() {
                        *x = mono.get(start + i).copied().unwrap_or(0.0) * win[i];
                    }
                    let mut peaks = vec![0.0f32; hi + 1];
                    if fft.process_with_scratch(input, spec, scratch).is_err() {
                        return peaks;
                    }
                    let m: Vec<f32> = spec[..=hi].iter().map(|c| c.norm()).collect();
                    for k in lo.max(1)..hi {
                        if m[k] > m[k - 1] && m[k] >= m[k + 1] {
                            peaks[k] = m[k];
                        }
                    }
                    peaks
                },
            )
            .collect()
    };
    // Tuning: magnitude-weighted circular mean of spectral peaks' deviation from the 440 grid
    // (summed in frame order, so the result does not depend on the threads).
    let (mut tc, mut ts) = (0.0f64, 0.0f64);
    for peaks in &mags {
        for k in lo.max(1)..hi {
            if peaks[k] > 0.0 {
                let dev = (pitch[k] - pitch[k].round()) as f64;
                let ang = dev * 2.0 * std::f64::consts::PI;
                tc += peaks[k] as f64 * ang.cos();
                ts += peaks[k] as f64 * ang.sin();
            }
        }
    }
    let tuning = if tc == 0.0 && ts == 0.0 {
        0.0
    } else {
        (ts.atan2(tc) / (2.0 * std::f64::consts::PI)) as f32
    };
    // Each bin also votes for the pitches it would be the 2nd…4th harmonic of (weights
    // HARMONIC_DECAY^(h-1), as in Gómez's HPCP), so a note's overtones count towards the note
    // itself and not only towards its fifth and third.
    // The voting weights depend only on the bin, so they are computed once: (pitch class,
    // weight) pairs per bin, flattened.
    let mut votes: Vec<(usize, u8, f32)> = Vec::with_capacity((hi - lo + 1) * 4);
    for (k, &pk) in pitch.iter().enumerate().take(hi + 1).skip(lo) {
        for h in 1..=4i32 {
            let p = pk - tuning - 12.0 * (h as f32).log2();
            if p < 33.0 {
                break; // below A1: no fundamental there
            }
            let nearest = p.round();
            let dev = (p - nearest).abs();
            // Raised-cosine weight: 1 at the semitone centre, 0 at ±0.5.
            let w = 0.5 + 0.5 * (std::f32::consts::PI * dev * 2.0).cos();
            let pc = (nearest as i64).rem_euclid(12) as u8;
            votes.push((k, pc, HARMONIC_DECAY.powi(h - 1) * w));
        }
    }
    let chroma = mags
        .par_iter()
        .map(|m| {
            let mut c = [0.0f32; 12];
            for &(k, pc, w) in &votes {
                c[pc as usize] += w * m[k];
            }
            c
        })
        .collect();
    (chroma, tuning)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Noise bursts over a tone: onsets, spectra and mel energies that change frame to frame.
    fn signal(secs: f32) -> Vec<f32> {
        let n = (SR as f32 * secs) as usize;
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let noise = (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                let burst = if (i / 5000) % 3 == 0 { noise } else { 0.0 };
                0.3 * (i as f32 * 0.05).sin() + burst
            })
            .collect()
    }

    /// Audio recorded at 8 kHz has nothing above 4 kHz: its centroid and roll-off stay below
    /// that, from a single sample to a second of a tone at its Nyquist frequency (the
    /// resampler's and the window's leakage above it once read 4.1–4.9 kHz). At the analysis
    /// rate and above, every bin counts.
    #[test]
    fn spectral_descriptors_stay_below_the_recordings_nyquist() {
        for frames in [1, 3, 800, 8000] {
            let audio = Audio {
                sample_rate: 8000,
                channels: vec![(0..frames)
                    .map(|i| if i % 2 == 0 { 0.6 } else { -0.6 })
                    .collect()],
            };
            let fe = Frontend::new(&audio).unwrap();
            for (name, v) in [
                ("centroid", &fe.frames.centroid),
                ("rolloff", &fe.frames.rolloff),
            ] {
                let top = v.iter().cloned().fold(0.0f32, f32::max);
                // A lone sample is a click (flat up to 4 kHz); longer, the tone's 4 kHz.
                let floor = if frames > 3 { 3000.0 } else { 1000.0 };
                assert!(
                    top > floor && top <= 4000.0,
                    "{frames} frames: {name} {top}"
                );
            }
        }
        assert_eq!(band_bins(SR), N_FFT / 2 + 1);
        assert_eq!(band_bins(48_000), N_FFT / 2 + 1);
        assert_eq!(band_bins(1), 1);
    }

    #[test]
    fn short_time_in_pieces_is_the_one_pass_result() {
        let mono = signal(30.0);
        let one = short_time_in(&mono, N_FFT / 2 + 1, 1);
        assert_eq!(one.onset.len(), mono.len() / HOP + 1);
        assert!(one.onset.iter().any(|&o| o > 1.0), "the bursts are onsets");
        for pieces in [2, 3, 5] {
            let many = short_time_in(&mono, N_FFT / 2 + 1, pieces);
            for (name, a, b) in [
                ("onset", &one.onset, &many.onset),
                ("low_onset", &one.low_onset, &many.low_onset),
                ("centroid", &one.centroid, &many.centroid),
                ("rolloff", &one.rolloff, &many.rolloff),
                ("flatness", &one.flatness, &many.flatness),
                ("energy", &one.energy, &many.energy),
                ("mel_db", &one.mel_db, &many.mel_db),
            ] {
                assert!(a == b, "{name} differs in {pieces} pieces");
            }
        }
        // Shorter than a piece, and empty: one piece, no panic.
        assert_eq!(
            short_time_in(&mono[..1000], N_FFT / 2 + 1, 4).onset.len(),
            1000 / HOP + 1
        );
        assert!(short_time_in(&[], N_FFT / 2 + 1, 4).onset.is_empty());
    }
}
