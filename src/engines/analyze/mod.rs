//! Music analysis: tempo and beats, key and mode, loudness, spectral features, tags — the
//! synchronous endpoints (`POST /v1/analyze`, `/v1/features`, `/v1/metadata`), the async
//! `/v1/analyze/upload` job ([`AnalyzeEngine`]) and `soundcheck analyze`.
//!
//! Each public function returns a serialisable report; each report has a `*_table` function
//! that renders it for the CLI. All of them run one shared front end ([`frontend`]) over a mono
//! 22.05 kHz copy of the input, so a 3-minute track takes a small fraction of a second.

pub mod frontend;
pub mod key;
pub mod meter;
pub mod tempo;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::JobParams;
use crate::audio::{self, loudness, Audio, Loudness, Measure, ProbeInfo};
use crate::jobs::engine::{Engine, EngineError, JobContext, JobKind, JobOutput};
use frontend::{Frontend, N_MELS, SR};

/// `POST /v1/analyze`: tempo and key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TempoKeyReport {
    /// Tempo, beats per minute, one decimal.
    pub bpm: f64,
    /// Estimated probability that `bpm` is within 2% of the tempo, 0…1 (a logistic fit on how far
    /// the tempo's periodicity stands above unrelated tempi and above its rival metrical levels,
    /// ×2, ×½, ×3/2, ×2/3, and how strong it is; fitted on the tune part of an independent set,
    /// `scripts/analysis_eval`, where it ranks readings better than chance but is still
    /// overconfident about octaves).
    pub bpm_confidence: f64,
    /// Key as `"A minor"` / `"F# major"`; `null` when nothing pitched was heard.
    pub key: Option<String>,
    /// Estimated probability that `key` is exactly right, 0…1 (a logistic fit on the key-profile
    /// correlation and its margin over the runner-up, calibrated the same way).
    pub key_confidence: f64,
    /// Tuning of the recording relative to A440, cents.
    pub tuning_cents: f64,
    /// Length, seconds.
    pub duration_secs: f64,
}

/// Mean and standard deviation of a per-frame descriptor.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct Stat {
    pub mean: f64,
    pub std: f64,
}

/// `POST /v1/features`: level and spectral descriptors, chroma and mel summaries. (Loudness per
/// BS.1770 is in the full report of `/v1/analyze/upload`; its K-weighting pass would cost a third
/// of the sync budget.)
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FeaturesReport {
    /// Length, seconds.
    pub duration_secs: f64,
    /// Sample rate of the input, Hz.
    pub sample_rate: u32,
    /// Channel count of the input.
    pub channels: usize,
    /// RMS level over all channels, dBFS.
    pub rms_dbfs: f64,
    /// Sample peak over all channels, dBFS.
    pub peak_dbfs: f64,
    /// Spectral centroid, Hz (brightness).
    pub spectral_centroid_hz: Stat,
    /// 85% spectral roll-off, Hz.
    pub spectral_rolloff_hz: Stat,
    /// Spectral flatness, 0 (tonal) … 1 (noise).
    pub spectral_flatness: Stat,
    /// Zero crossings per sample of the mono mix at 22.05 kHz, 0…1.
    pub zero_crossing_rate: f64,
    /// Detected note/percussion onsets per second.
    pub onset_rate_per_sec: f64,
    /// Mean pitch-class energy, C … B, normalised so the largest is 1.
    pub chroma: BTreeMap<&'static str, f64>,
    /// Mel-band summary (40 bands, 30 Hz – 11 kHz).
    pub mel: MelSummary,
}

/// Per-band statistics of the log-mel spectrogram.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MelSummary {
    /// Band count.
    pub bands: usize,
    /// Lowest band edge, Hz.
    pub fmin_hz: f64,
    /// Highest band edge, Hz.
    pub fmax_hz: f64,
    /// Mean log energy per band (low to high), dB.
    pub mean_db: Vec<f64>,
    /// Standard deviation of log energy per band, dB.
    pub std_db: Vec<f64>,
}

/// `POST /v1/metadata`: container, codec, bit rate, tags; see [`ProbeInfo`].
pub type MetadataReport = ProbeInfo;

/// One section of the track, split where timbre and harmony change.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    /// Start, seconds.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// Mean RMS level, dBFS.
    pub energy_db: f64,
}

/// Loudness over time.
#[derive(Debug, Clone, Serialize)]
pub struct EnergyCurve {
    /// Seconds between points.
    pub hop_secs: f64,
    /// RMS level per hop, dBFS.
    pub rms_db: Vec<f64>,
}

/// Tempo, beat grid and downbeats.
#[derive(Debug, Clone, Serialize)]
pub struct Rhythm {
    /// Beats per minute, one decimal.
    pub bpm: f64,
    /// 0…1, see [`TempoKeyReport::bpm_confidence`].
    pub confidence: f64,
    /// Beat times, seconds (three decimals).
    pub beats: Vec<f64>,
    /// Beats per bar (meter): 4 or 3; `null` when there are too few beats to tell.
    pub beats_per_bar: Option<usize>,
    /// Bar starts, seconds.
    pub downbeats: Vec<f64>,
}

/// Key estimate.
#[derive(Debug, Clone, Serialize)]
pub struct KeyReport {
    /// `"A minor"`, `"F# major"`, or `null`.
    pub name: Option<String>,
    /// 0…1, see [`TempoKeyReport::key_confidence`].
    pub confidence: f64,
    /// Tuning relative to A440, cents.
    pub tuning_cents: f64,
}

/// The `/v1/analyze/upload` job result: everything above plus beat grid and structure.
#[derive(Debug, Clone, Serialize)]
pub struct FullReport {
    pub rhythm: Rhythm,
    pub key: KeyReport,
    pub loudness: Loudness,
    pub features: FeaturesReport,
    pub energy_curve: EnergyCurve,
    pub sections: Vec<Section>,
}

fn round(x: f64, places: i32) -> f64 {
    let m = 10f64.powi(places);
    (x * m).round() / m
}

/// Tempo and key (the synchronous `POST /v1/analyze`).
pub fn tempo_key(audio: &Audio) -> Result<TempoKeyReport, audio::Error> {
    let fe = Frontend::new(audio)?;
    let (rhythm, key) = rhythm_and_key(&fe);
    Ok(TempoKeyReport {
        bpm: rhythm.bpm,
        bpm_confidence: rhythm.confidence,
        key: key.name,
        key_confidence: key.confidence,
        tuning_cents: key.tuning_cents,
        duration_secs: round(audio.duration_secs(), 3),
    })
}

/// Spectral and level features (the synchronous `POST /v1/features`).
pub fn features(audio: &Audio) -> Result<FeaturesReport, audio::Error> {
    let fe = Frontend::new(audio)?;
    features_from(audio, &fe)
}

/// Container, codec, bit rate and tags (the synchronous `POST /v1/metadata`). Headers only,
/// except when the container does not declare its length: then the file is decoded to count.
pub fn metadata(path: &Path) -> Result<MetadataReport, audio::Error> {
    let mut info = audio::probe(path)?;
    if info.frames.is_none() {
        let a = audio::decode(path)?;
        let frames = a.frames() as u64;
        let secs = a.duration_secs();
        info.frames = Some(frames);
        info.duration_secs = Some(secs);
        if secs > 0.0 {
            info.bit_rate_kbps = Some(info.file_size as f64 * 8.0 / secs / 1000.0);
        }
    }
    if let Some(b) = info.bit_rate_kbps.as_mut() {
        *b = round(*b, 1);
    }
    Ok(info)
}

/// Everything: the async `/v1/analyze/upload` job and `soundcheck analyze`.
pub fn full(audio: &Audio, progress: &dyn Fn(f32)) -> Result<FullReport, audio::Error> {
    let fe = Frontend::new(audio)?;
    progress(0.4);
    let (rhythm, key) = rhythm_and_key(&fe);
    progress(0.6);
    let loudness = loudness::measure(audio, Measure::Full)?;
    progress(0.8);
    let features = features_from(audio, &fe)?;
    let energy_curve = energy_curve(&fe.mono, 0.5);
    let sections = sections(&fe, &energy_curve);
    progress(1.0);
    Ok(FullReport {
        rhythm,
        key,
        loudness,
        features,
        energy_curve,
        sections,
    })
}

fn rhythm_and_key(fe: &Frontend) -> (Rhythm, KeyReport) {
    let fps = Frontend::frame_rate();
    let mut t = tempo::estimate(&fe.frames.onset, &fe.frames.low_onset, fps);
    t.beats = tempo::settle_phase_by_harmony(t.beats, &fe.mono, frontend::SR as f64, fe.tuning);
    // Chroma frame i covers CHROMA_FFT samples from i·CHROMA_HOP: its centre is half a window in.
    let bars = meter::bars(
        &t.beats,
        &fe.frames.low_onset,
        fps,
        &fe.chroma,
        Frontend::chroma_period(),
        frontend::CHROMA_FFT as f64 / 2.0 / frontend::SR as f64,
    );
    let rhythm = Rhythm {
        bpm: round(t.bpm, 1),
        confidence: round(t.confidence, 3),
        beats: t.beats.iter().map(|&b| round(b, 3)).collect(),
        beats_per_bar: bars.beats_per_bar,
        downbeats: bars
            .downbeats
            .iter()
            .map(|&i| round(t.beats[i], 3))
            .collect(),
    };
    let k = key::estimate(&fe.chroma);
    let key = KeyReport {
        name: k.map(|k| k.key.name()),
        confidence: k.map_or(0.0, |k| round(k.confidence, 3)),
        tuning_cents: round(fe.tuning as f64 * 100.0, 1),
    };
    (rhythm, key)
}

fn stat(x: &[f32]) -> Stat {
    if x.is_empty() {
        return Stat {
            mean: 0.0,
            std: 0.0,
        };
    }
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    Stat {
        mean: round(mean, 4),
        std: round(var.sqrt(), 4),
    }
}

fn features_from(audio: &Audio, fe: &Frontend) -> Result<FeaturesReport, audio::Error> {
    let total: usize = audio.channels.iter().map(Vec::len).sum();
    let sum_sq: f64 = audio
        .channels
        .iter()
        .flat_map(|c| c.iter())
        .map(|&s| (s as f64) * (s as f64))
        .sum();
    let rms = if total > 0 {
        (sum_sq / total as f64).sqrt()
    } else {
        0.0
    };
    let zc = fe
        .mono
        .windows(2)
        .filter(|w| (w[0] >= 0.0) != (w[1] >= 0.0))
        .count();
    let zcr = zc as f64 / fe.mono.len().saturating_sub(1).max(1) as f64;
    let duration = audio.duration_secs();
    let onsets = count_onsets(&fe.frames.onset);
    let prof = key::profile(&fe.chroma);
    let pmax = prof.iter().cloned().fold(0.0f64, f64::max);
    let chroma = key::PITCH_CLASSES
        .iter()
        .zip(prof)
        .map(|(&n, v)| (n, if pmax > 0.0 { round(v / pmax, 4) } else { 0.0 }))
        .collect();
    let frames = fe.frames.onset.len();
    let mut mean_db = vec![0.0f64; N_MELS];
    let mut std_db = vec![0.0f64; N_MELS];
    if frames > 0 {
        for f in fe.frames.mel_db.chunks_exact(N_MELS) {
            for (m, &v) in mean_db.iter_mut().zip(f) {
                *m += v as f64;
            }
        }
        mean_db.iter_mut().for_each(|m| *m /= frames as f64);
        for f in fe.frames.mel_db.chunks_exact(N_MELS) {
            for ((s, &v), m) in std_db.iter_mut().zip(f).zip(&mean_db) {
                *s += (v as f64 - m).powi(2);
            }
        }
        std_db
            .iter_mut()
            .for_each(|s| *s = (*s / frames as f64).sqrt());
    }
    Ok(FeaturesReport {
        duration_secs: round(duration, 3),
        sample_rate: audio.sample_rate,
        channels: audio.channels.len(),
        rms_dbfs: round(loudness::amp_to_db(rms), 2),
        peak_dbfs: round(loudness::amp_to_db(audio.peak() as f64), 2),
        spectral_centroid_hz: stat(&fe.frames.centroid),
        spectral_rolloff_hz: stat(&fe.frames.rolloff),
        spectral_flatness: stat(&fe.frames.flatness),
        zero_crossing_rate: round(zcr, 5),
        onset_rate_per_sec: if duration > 0.0 {
            round(onsets as f64 / duration, 3)
        } else {
            0.0
        },
        chroma,
        mel: MelSummary {
            bands: N_MELS,
            fmin_hz: 30.0,
            fmax_hz: SR as f64 / 2.0,
            mean_db: mean_db.iter().map(|&v| round(v, 2)).collect(),
            std_db: std_db.iter().map(|&v| round(v, 2)).collect(),
        },
    })
}

/// Peaks of the onset envelope that stand out from their surroundings: a local maximum within
/// ±35 ms, above the local mean (±0.5 s) by half the global standard deviation, at least 50 ms
/// after the previous onset.
fn count_onsets(onset: &[f32]) -> usize {
    let n = onset.len();
    if n < 3 {
        return 0;
    }
    let mean = onset.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let sd = (onset
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n as f64)
        .sqrt();
    let mut prefix = vec![0.0f64; n + 1];
    for i in 0..n {
        prefix[i + 1] = prefix[i] + onset[i] as f64;
    }
    let fps = Frontend::frame_rate();
    let peak_w = (0.035 * fps).round() as usize;
    let mean_w = (0.5 * fps) as usize;
    let gap = (0.05 * fps).round() as usize;
    let mut last: Option<usize> = None;
    let mut count = 0;
    for t in 0..n {
        let lo = t.saturating_sub(peak_w);
        let hi = (t + peak_w + 1).min(n);
        if onset[lo..hi].iter().any(|&v| v > onset[t]) {
            continue;
        }
        let mlo = t.saturating_sub(mean_w);
        let mhi = (t + mean_w + 1).min(n);
        let local = (prefix[mhi] - prefix[mlo]) / (mhi - mlo) as f64;
        if (onset[t] as f64) < local + 0.5 * sd || onset[t] <= 0.0 {
            continue;
        }
        if last.is_some_and(|l| t - l < gap) {
            continue;
        }
        last = Some(t);
        count += 1;
    }
    count
}

fn energy_curve(mono: &[f32], hop_secs: f64) -> EnergyCurve {
    let hop = ((hop_secs * SR as f64) as usize).max(1);
    let rms_db = mono
        .chunks(hop)
        .map(|c| {
            let ms = c.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / c.len() as f64;
            round(loudness::amp_to_db(ms.sqrt()), 2)
        })
        .collect();
    EnergyCurve { hop_secs, rms_db }
}

/// Splits the track where a checkerboard kernel over the self-similarity of 1-second
/// timbre+harmony vectors peaks (Foote's novelty), sections at least 8 s long.
fn sections(fe: &Frontend, curve: &EnergyCurve) -> Vec<Section> {
    let duration = fe.mono.len() as f64 / SR as f64;
    let fps = Frontend::frame_rate();
    let per_sec = fps.round() as usize;
    let n_sec = (fe.frames.onset.len() / per_sec.max(1)).max(1);
    let chroma_per_sec = 1.0 / Frontend::chroma_period();
    // One feature vector per second: mean log-mel (z-scored later) + mean normalised chroma.
    let mut feats: Vec<Vec<f64>> = Vec::with_capacity(n_sec);
    for s in 0..n_sec {
        let mut v = vec![0.0f64; N_MELS + 12];
        let frames = fe
            .frames
            .mel_db
            .chunks_exact(N_MELS)
            .skip(s * per_sec)
            .take(per_sec);
        let mut count = 0.0;
        for f in frames {
            for (a, &b) in v.iter_mut().zip(f) {
                *a += b as f64;
            }
            count += 1.0;
        }
        if count > 0.0 {
            v[..N_MELS].iter_mut().for_each(|a| *a /= count);
        }
        let c0 = (s as f64 * chroma_per_sec) as usize;
        let c1 = (((s + 1) as f64 * chroma_per_sec) as usize).max(c0 + 1);
        for c in fe.chroma.iter().take(c1).skip(c0) {
            let m = c.iter().cloned().fold(0.0f32, f32::max).max(1e-9);
            for (a, &b) in v[N_MELS..].iter_mut().zip(c) {
                *a += (b / m) as f64 * 10.0;
            }
        }
        feats.push(v);
    }
    // Centre and scale each dimension, then unit-normalise vectors for cosine similarity.
    let dims = N_MELS + 12;
    for d in 0..dims {
        let mean = feats.iter().map(|v| v[d]).sum::<f64>() / n_sec as f64;
        let sd = (feats.iter().map(|v| (v[d] - mean).powi(2)).sum::<f64>() / n_sec as f64)
            .sqrt()
            .max(1e-9);
        feats.iter_mut().for_each(|v| v[d] = (v[d] - mean) / sd);
    }
    for v in feats.iter_mut() {
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-9);
        v.iter_mut().for_each(|x| *x /= n);
    }
    let sim =
        |i: usize, j: usize| -> f64 { feats[i].iter().zip(&feats[j]).map(|(a, b)| a * b).sum() };
    const HALF: usize = 6;
    let mut novelty = vec![0.0f64; n_sec];
    for (t, nv) in novelty.iter_mut().enumerate() {
        if t < HALF || t + HALF > n_sec {
            continue;
        }
        let mut acc = 0.0;
        for i in t - HALF..t + HALF {
            for j in t - HALF..t + HALF {
                let same_side = (i < t) == (j < t);
                acc += if same_side { sim(i, j) } else { -sim(i, j) };
            }
        }
        *nv = acc / (4 * HALF * HALF) as f64;
    }
    let mean = novelty.iter().sum::<f64>() / n_sec as f64;
    let sd = (novelty.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n_sec as f64).sqrt();
    let mut bounds = vec![0.0f64];
    const MIN_LEN: usize = 8;
    let mut last = 0usize;
    for t in 1..n_sec.saturating_sub(1) {
        let lo = t.saturating_sub(MIN_LEN / 2);
        let hi = (t + MIN_LEN / 2 + 1).min(n_sec);
        let is_peak = novelty[lo..hi].iter().all(|&v| v <= novelty[t]);
        if is_peak
            && novelty[t] > mean + 0.5 * sd
            && novelty[t] > 0.0
            && t - last >= MIN_LEN
            && n_sec - t >= MIN_LEN
        {
            bounds.push(t as f64);
            last = t;
        }
    }
    bounds.push(duration);
    bounds
        .windows(2)
        .map(|w| {
            let a = (w[0] / curve.hop_secs) as usize;
            let b = ((w[1] / curve.hop_secs).ceil() as usize).min(curve.rms_db.len());
            let slice = curve.rms_db.get(a..b.max(a)).unwrap_or(&[]);
            // Mean power, not mean dB: a silent gap should not drag a loud section down.
            let power = slice.iter().map(|&d| 10f64.powf(d / 10.0)).sum::<f64>()
                / slice.len().max(1) as f64;
            Section {
                start: round(w[0], 3),
                end: round(w[1], 3),
                energy_db: round(10.0 * power.max(1e-12).log10(), 2),
            }
        })
        .collect()
}

/// CLI table for [`TempoKeyReport`].
pub fn tempo_key_table(r: &TempoKeyReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<18}{:.1} BPM (confidence {:.2})",
        "tempo", r.bpm, r.bpm_confidence
    );
    let _ = writeln!(
        s,
        "{:<18}{} (confidence {:.2}, tuning {:+.0} cents)",
        "key",
        r.key.as_deref().unwrap_or("none"),
        r.key_confidence,
        r.tuning_cents
    );
    let _ = writeln!(s, "{:<18}{:.3} s", "duration", r.duration_secs);
    s
}

/// CLI table for [`FeaturesReport`].
pub fn features_table(r: &FeaturesReport) -> String {
    let mut s = String::new();
    let row = |s: &mut String, k: &str, v: String| {
        let _ = writeln!(s, "{k:<22}{v}");
    };
    row(&mut s, "duration", format!("{:.3} s", r.duration_secs));
    row(
        &mut s,
        "format",
        format!("{} Hz, {} ch", r.sample_rate, r.channels),
    );
    row(
        &mut s,
        "rms / peak",
        format!("{:.2} / {:.2} dBFS", r.rms_dbfs, r.peak_dbfs),
    );
    let st = |x: &Stat, unit: &str| format!("{:.1} ± {:.1}{unit}", x.mean, x.std);
    row(
        &mut s,
        "spectral centroid",
        st(&r.spectral_centroid_hz, " Hz"),
    );
    row(
        &mut s,
        "spectral rolloff",
        st(&r.spectral_rolloff_hz, " Hz"),
    );
    row(
        &mut s,
        "spectral flatness",
        format!(
            "{:.4} ± {:.4}",
            r.spectral_flatness.mean, r.spectral_flatness.std
        ),
    );
    row(
        &mut s,
        "zero-crossing rate",
        format!("{:.4}", r.zero_crossing_rate),
    );
    row(
        &mut s,
        "onset rate",
        format!("{:.2} /s", r.onset_rate_per_sec),
    );
    let chroma: Vec<String> = key::PITCH_CLASSES
        .iter()
        .map(|p| format!("{p}:{:.2}", r.chroma.get(p).copied().unwrap_or(0.0)))
        .collect();
    row(&mut s, "chroma", chroma.join(" "));
    let mel: Vec<String> = r.mel.mean_db.iter().map(|v| format!("{v:.0}")).collect();
    row(&mut s, "mel mean (dB)", mel.join(" "));
    s
}

/// CLI table for [`MetadataReport`].
pub fn metadata_table(r: &MetadataReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{:<18}{}", "container", r.container);
    let _ = writeln!(s, "{:<18}{}", "codec", r.codec);
    let _ = writeln!(s, "{:<18}{} Hz, {} ch", "format", r.sample_rate, r.channels);
    if let Some(b) = r.bits_per_sample {
        let _ = writeln!(s, "{:<18}{b}", "bits per sample");
    }
    if let Some(d) = r.duration_secs {
        let _ = writeln!(s, "{:<18}{d:.3} s", "duration");
    }
    if let Some(b) = r.bit_rate_kbps {
        let _ = writeln!(s, "{:<18}{b:.1} kbit/s", "bit rate");
    }
    let _ = writeln!(s, "{:<18}{} bytes", "size", r.file_size);
    for (k, v) in &r.tags {
        let _ = writeln!(s, "{:<18}{v}", format!("tag {k}"));
    }
    s
}

/// CLI table for [`FullReport`].
pub fn full_table(r: &FullReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<22}{:.1} BPM (confidence {:.2}), {} beats, {} bars{}",
        "tempo",
        r.rhythm.bpm,
        r.rhythm.confidence,
        r.rhythm.beats.len(),
        r.rhythm.downbeats.len(),
        r.rhythm
            .beats_per_bar
            .map_or(String::new(), |m| format!(" of {m} beats"))
    );
    let _ = writeln!(
        s,
        "{:<22}{} (confidence {:.2}, tuning {:+.0} cents)",
        "key",
        r.key.name.as_deref().unwrap_or("none"),
        r.key.confidence,
        r.key.tuning_cents
    );
    let _ = writeln!(
        s,
        "{:<22}{:.2} LUFS, LRA {:.2} LU, true peak {:.2} dBTP",
        "loudness", r.loudness.integrated_lufs, r.loudness.lra_lu, r.loudness.true_peak_dbtp
    );
    s.push_str(&features_table(&r.features));
    let secs: Vec<String> = r
        .sections
        .iter()
        .map(|x| format!("{:.1}–{:.1} s ({:.1} dB)", x.start, x.end, x.energy_db))
        .collect();
    let _ = writeln!(s, "{:<22}{}", "sections", secs.join(", "));
    s
}

/// The analyses take the `audio` file alone, with no options.
// `/v1/analyze/upload`'s parameters (see `JobParams`): none. The job ignores every text field
// and stores `{}`; the synchronous analyses refuse text fields.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct AnalyzeParams {}

impl JobParams for AnalyzeParams {
    fn from_fields(_fields: &BTreeMap<String, String>) -> Result<Self, String> {
        Ok(AnalyzeParams {})
    }
}

/// The `/v1/analyze/upload` job engine.
pub struct AnalyzeEngine;

impl Engine for AnalyzeEngine {
    fn kind(&self) -> JobKind {
        JobKind::Analyze
    }

    fn name(&self) -> &str {
        "dsp"
    }

    /// See [`AnalyzeParams`].
    fn params(&self, fields: &BTreeMap<String, String>) -> Result<Value, String> {
        AnalyzeParams::store(fields)
    }

    fn run(&self, ctx: &JobContext<'_>) -> Result<JobOutput, EngineError> {
        let meta = metadata(ctx.input)?;
        let audio = audio::decode_with_progress(ctx.input, &|p| (ctx.progress)(p * 0.5))?;
        if (ctx.cancelled)() {
            return Err(EngineError::Cancelled);
        }
        let report = full(&audio, &|p| (ctx.progress)(0.5 + p * 0.5))?;
        let mut result =
            serde_json::to_value(&report).map_err(|e| EngineError::Internal(e.to_string()))?;
        result["metadata"] =
            serde_json::to_value(&meta).map_err(|e| EngineError::Internal(e.to_string()))?;
        Ok(JobOutput { result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::Format;

    /// Clicks at `bpm` over a sustained A-minor triad.
    fn clip(bpm: f64, secs: f64) -> Audio {
        let rate = 44_100;
        let n = (secs * rate as f64) as usize;
        let period = (60.0 / bpm * rate as f64) as usize;
        let ch: Vec<f32> = (0..n)
            .map(|i| {
                let t = i as f64 / rate as f64;
                let k = i % period;
                let click = if k < 400 {
                    (-(k as f64) / 60.0).exp() * (2.0 * std::f64::consts::PI * 2000.0 * t).sin()
                } else {
                    0.0
                };
                let chord: f64 = [220.0, 261.63, 329.63]
                    .iter()
                    .map(|f| (2.0 * std::f64::consts::PI * f * t).sin())
                    .sum();
                (0.5 * click + 0.05 * chord) as f32
            })
            .collect();
        Audio {
            sample_rate: rate,
            channels: vec![ch],
        }
    }

    #[test]
    fn tempo_key_and_features_on_a_known_clip() {
        let r = tempo_key(&clip(100.0, 20.0)).unwrap();
        assert!((r.bpm / 100.0 - 1.0).abs() < 0.02, "{}", r.bpm);
        assert_eq!(r.key.as_deref(), Some("A minor"));
        let f = features(&clip(100.0, 20.0)).unwrap();
        assert_eq!(f.channels, 1);
        assert!((f.duration_secs - 20.0).abs() < 1e-6);
        assert!(
            (f.onset_rate_per_sec - 100.0 / 60.0).abs() < 0.3,
            "{}",
            f.onset_rate_per_sec
        );
        assert!(f.peak_dbfs <= 0.0 && f.rms_dbfs < f.peak_dbfs);
        assert!(!tempo_key_table(&r).is_empty() && features_table(&f).contains("chroma"));
    }

    #[test]
    fn silence_and_tiny_inputs_do_not_fail() {
        for frames in [0usize, 10, 4_000, 44_100 * 3] {
            let a = Audio {
                sample_rate: 44_100,
                channels: vec![vec![0.0; frames]; 2],
            };
            let r = full(&a, &|_| {}).unwrap();
            assert_eq!(r.key.name, None);
            assert!(r.rhythm.beats.is_empty());
            assert!(serde_json::to_string(&r).is_ok());
        }
    }

    #[test]
    fn engine_runs_on_an_mp3_and_reports_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.mp3");
        crate::audio::encode(&clip(120.0, 12.0), Format::Mp3 { kbps: 128 }, &input).unwrap();
        let params = AnalyzeEngine.params(&BTreeMap::new()).unwrap();
        let ctx = JobContext {
            input: &input,
            params: &params,
            out_dir: dir.path(),
            progress: &|_| {},
            cancelled: &|| false,
        };
        let out = AnalyzeEngine.run(&ctx).unwrap();
        let bpm = out.result["rhythm"]["bpm"].as_f64().unwrap();
        assert!((bpm / 120.0 - 1.0).abs() < 0.02, "{bpm}");
        assert_eq!(out.result["metadata"]["codec"], "mp3");
        assert_eq!(out.result["metadata"]["container"], "mp3");
        assert!(out.result["beats"].is_null() && out.result["rhythm"]["beats"].is_array());
        let kbps = out.result["metadata"]["bit_rate_kbps"].as_f64().unwrap();
        assert!((kbps - 128.0).abs() < 10.0, "{kbps}");
    }
}
