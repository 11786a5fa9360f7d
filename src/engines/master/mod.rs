//! Auto-mastering (`POST /v1/master`, `soundcheck master`): a gentle tilt EQ, a glue compressor
//! and an 8× oversampled true-peak limiter, driven to a target integrated loudness and a true-peak
//! ceiling, with a before/after report measured by [`crate::audio::loudness`].
//!
//! The chain, in order (see [`dsp`] for the blocks):
//! 1. 20 Hz high-pass (DC and rumble).
//! 2. Tilt EQ: low shelf at 120 Hz and high shelf at 6 kHz, each moving the band's share of the
//!    energy half-way towards a reference balance, at most ±2 dB.
//! 3. Compressor: 2:1, 6 dB soft knee, 10 ms attack, 150 ms release, threshold 8 dB above the
//!    programme's integrated loudness on a peak envelope, so only the loudest passages move.
//! 4. Gain and limiter: the gain is searched (secant steps on measured integrated loudness) so
//!    that after limiting the programme sits on the target; the limiter keeps inter-sample peaks
//!    under the ceiling with 1.5 ms look-ahead and 60 ms release.
//! 5. Encode, then decode the written file and measure it; lossy formats that overshoot the
//!    ceiling are redone with the ceiling lowered by the overshoot.

pub mod dsp;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::JobParams;
use crate::audio::{self, encode::Format, loudness, Audio, Loudness, Measure};
use crate::jobs::engine::{file_ref, Engine, EngineError, JobContext, JobKind, JobOutput};
use dsp::{Biquad, CompressorSettings, LimiterSettings};

/// What the client asks of a master.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MasterSettings {
    /// Integrated loudness to reach, LUFS (−30 … −6; default −14, the streaming norm).
    pub target_lufs: f64,
    /// True-peak ceiling, dBTP (−9 … 0; default −1).
    pub true_peak_db: f64,
    /// Apply the tilt EQ (default true).
    pub eq: bool,
    /// Apply the glue compressor (default true).
    pub compress: bool,
}

impl Default for MasterSettings {
    fn default() -> Self {
        MasterSettings {
            target_lufs: -14.0,
            true_peak_db: -1.0,
            eq: true,
            compress: true,
        }
    }
}

/// Allowed range of `target_lufs`.
pub const TARGET_LUFS_RANGE: (f64, f64) = (-30.0, -6.0);
/// Allowed range of `true_peak_db`.
pub const TRUE_PEAK_RANGE: (f64, f64) = (-9.0, 0.0);

/// What the chain did and what it measured, before and after; the job's `report`.
#[derive(Debug, Clone, Serialize)]
pub struct MasterReport {
    /// Loudness of the input as decoded.
    pub before: Loudness,
    /// Loudness of the output file as written and decoded again.
    pub after: Loudness,
    /// The requested integrated loudness, LUFS.
    pub target_lufs: f64,
    /// The requested true-peak ceiling, dBTP.
    pub true_peak_ceiling_db: f64,
    /// Low-shelf gain the tilt EQ applied, dB.
    pub eq_low_shelf_db: f64,
    /// High-shelf gain the tilt EQ applied, dB.
    pub eq_high_shelf_db: f64,
    /// Largest compressor gain reduction, dB.
    pub compressor_max_reduction_db: f64,
    /// Gain applied before the limiter, dB.
    pub gain_db: f64,
    /// Largest limiter gain reduction, dB.
    pub limiter_max_reduction_db: f64,
    /// Output format name (`wav16`, `mp3` …).
    pub format: String,
    /// Output sample rate, Hz.
    pub sample_rate: u32,
    /// Output channel count.
    pub channels: usize,
    /// Output length, seconds.
    pub duration_secs: f64,
}

/// Decodes `input`, masters it, writes `output` in `format` and checks the written file: its
/// integrated loudness within ±0.5 LU of the target and its true peak at or below the ceiling.
pub fn master_file(
    input: &Path,
    output: &Path,
    format: Format,
    settings: &MasterSettings,
    progress: &dyn Fn(f32),
) -> Result<MasterReport, audio::Error> {
    let audio = audio::decode_with_progress(input, &|p| progress(p * 0.15))?;
    master_audio_to_file(
        audio,
        output,
        format,
        settings,
        &|p| progress(0.15 + p * 0.85),
        &|| false,
    )
}

/// [`master_file`] for audio already decoded. It takes the audio to shape it in place: at its
/// peak the chain holds two programme-sized buffers (the shaped programme and one rendered try or
/// the decoded file), plus frame-length gain curves. `cancelled` is looked at between the
/// chain's steps and gain tries (a second or so of work apart); it ends the master with
/// [`audio::Error::Cancelled`].
pub fn master_audio_to_file(
    audio: Audio,
    output: &Path,
    format: Format,
    settings: &MasterSettings,
    progress: &dyn Fn(f32),
    cancelled: &dyn Fn() -> bool,
) -> Result<MasterReport, audio::Error> {
    let check = || {
        if cancelled() {
            Err(audio::Error::Cancelled)
        } else {
            Ok(())
        }
    };
    let before = loudness::measure(&audio, Measure::Full)?;
    check()?;
    let plan = Plan::new(audio, &before, settings, &|p| progress(p * 0.4), &check)?;
    // Lossy encoders add overshoot and lose a little loudness: after each attempt, lower the
    // limiter's ceiling by what the file measured over, and aim off the target by what it missed.
    let mut ceiling = settings.true_peak_db
        - match format {
            Format::Mp3 { .. } => 0.6,
            _ => 0.1,
        };
    let mut aim = settings.target_lufs;
    let mut last = None;
    for attempt in 0..5 {
        let (mut out, rendered) = plan.render(ceiling, aim, &check)?;
        if let Some(bits) = format.bit_depth() {
            dsp::dither(&mut out.channels, bits);
        }
        progress(0.5 + 0.1 * attempt as f32);
        audio::encode::encode(&out, format, output)?;
        drop(out);
        check()?;
        let written = audio::decode(output)?;
        let after = loudness::measure(&written, Measure::Full)?;
        let report = MasterReport {
            before,
            after,
            target_lufs: settings.target_lufs,
            true_peak_ceiling_db: settings.true_peak_db,
            eq_low_shelf_db: round2(plan.eq_low_db),
            eq_high_shelf_db: round2(plan.eq_high_db),
            compressor_max_reduction_db: round2(plan.comp_max_db),
            gain_db: round2(rendered.gain_db),
            limiter_max_reduction_db: round2(rendered.limiter_max_reduction_db),
            format: format.name().to_string(),
            sample_rate: written.sample_rate,
            channels: written.channels.len(),
            duration_secs: written.duration_secs(),
        };
        drop(written);
        let over = report.after.true_peak_dbtp - settings.true_peak_db;
        let miss = settings.target_lufs - report.after.integrated_lufs;
        last = Some(report);
        if over <= 0.0 && miss.abs() <= 0.2 {
            break;
        }
        if over > 0.0 {
            ceiling -= over + 0.05;
        }
        if miss.abs() > 0.1 {
            aim += miss;
        }
    }
    progress(1.0);
    last.ok_or_else(|| audio::Error::Encode("mastering produced no output".into()))
}

/// The analysed, EQ'd and compressed programme, ready for the gain/limiter search.
struct Plan {
    rate: f64,
    /// Channels after high-pass, EQ and compression.
    shaped: Vec<Vec<f32>>,
    /// Inter-sample peaks of `shaped` (scale linearly with gain).
    peaks: Vec<f32>,
    /// Integrated loudness of `shaped`.
    shaped_lufs: f64,
    eq_low_db: f64,
    eq_high_db: f64,
    comp_max_db: f64,
}

/// What one render chose.
struct Rendered {
    /// Gain before the limiter, dB.
    gain_db: f64,
    /// Largest limiter gain reduction, dB (positive).
    limiter_max_reduction_db: f64,
}

/// Share of energy below 120 Hz and above 6 kHz, dB re total, that the tilt EQ aims for: a
/// balance typical of finished pop/rock masters (bass-heavy, highs ~15 dB down).
const REF_LOW_DB: f64 = -5.0;
const REF_HIGH_DB: f64 = -15.0;
/// Largest shelf move, dB: "gentle".
const MAX_SHELF_DB: f64 = 2.0;

impl Plan {
    /// Shapes `audio` in place (high-pass, tilt EQ, compressor) and finds its peaks.
    fn new(
        audio: Audio,
        before: &Loudness,
        settings: &MasterSettings,
        progress: &dyn Fn(f32),
        check: &dyn Fn() -> Result<(), audio::Error>,
    ) -> Result<Plan, audio::Error> {
        if before.integrated_lufs <= loudness::FLOOR_LUFS + 0.01 {
            return Err(audio::Error::Invalid(
                "input is silent or shorter than 0.4 s; nothing to master".into(),
            ));
        }
        let rate = audio.sample_rate as f64;
        let hp = Biquad::highpass(rate, 20.0);
        let mut shaped = audio.channels;
        for c in shaped.iter_mut() {
            hp.run(c);
        }
        progress(0.1);
        check()?;
        let (mut eq_low_db, mut eq_high_db) = (0.0, 0.0);
        if settings.eq && rate > 13_000.0 {
            let (low_db, high_db) = band_shares(&shaped, rate);
            eq_low_db = ((REF_LOW_DB - low_db) * 0.5).clamp(-MAX_SHELF_DB, MAX_SHELF_DB);
            eq_high_db = ((REF_HIGH_DB - high_db) * 0.5).clamp(-MAX_SHELF_DB, MAX_SHELF_DB);
            let ls = Biquad::low_shelf(rate, 120.0, eq_low_db);
            let hs = Biquad::high_shelf(rate, 6000.0, eq_high_db);
            for c in shaped.iter_mut() {
                ls.run(c);
                hs.run(c);
            }
        }
        progress(0.3);
        check()?;
        let mut comp_max_db = 0.0;
        if settings.compress {
            let s = CompressorSettings {
                threshold_db: before.integrated_lufs + 8.0,
                ratio: 2.0,
                knee_db: 6.0,
                attack_s: 0.010,
                release_s: 0.150,
            };
            comp_max_db = dsp::compress(&mut shaped, rate, &s).0;
        }
        progress(0.5);
        check()?;
        // Measured in place (moved into an `Audio` and back), not on a copy.
        let shaped_audio = Audio {
            sample_rate: audio.sample_rate,
            channels: shaped,
        };
        let shaped_lufs = loudness::measure(&shaped_audio, Measure::Integrated)?.integrated_lufs;
        let shaped = shaped_audio.channels;
        let peaks =
            dsp::intersample_peaks(&shaped, &|| check().is_err()).ok_or(audio::Error::Cancelled)?;
        progress(1.0);
        Ok(Plan {
            rate,
            shaped,
            peaks,
            shaped_lufs,
            eq_low_db,
            eq_high_db,
            comp_max_db,
        })
    }

    /// Searches the pre-limiter gain that lands on `aim_lufs` after limiting to `ceiling_db`
    /// and renders the result. Each try is metered as it is rendered, block by block, so the
    /// search holds no programme-sized buffer of its own; only the chosen gain is rendered whole.
    fn render(
        &self,
        ceiling_db: f64,
        aim_lufs: f64,
        check: &dyn Fn() -> Result<(), audio::Error>,
    ) -> Result<(Audio, Rendered), audio::Error> {
        let ceiling = loudness::db_to_amp(ceiling_db) as f32;
        let mut gain_db = aim_lufs - self.shaped_lufs;
        let mut prev: Option<(f64, f64)> = None; // (gain, measured)
        let mut best: Option<(f64, f64)> = None; // (measured, gain)
        for _ in 0..8 {
            check()?;
            let curve = self.limiter_curve(gain_db, ceiling);
            let measured = self.meter(gain_db, &curve)?;
            drop(curve);
            let miss = aim_lufs - measured;
            if best.is_none_or(|(m, _)| (aim_lufs - m).abs() > miss.abs()) {
                best = Some((measured, gain_db));
            }
            if miss.abs() < 0.05 {
                break;
            }
            // Secant step on the loudness-vs-gain curve; the limiter makes its slope ≤ 1.
            let slope = match prev {
                Some((pg, pm)) if (gain_db - pg).abs() > 1e-6 => {
                    ((measured - pm) / (gain_db - pg)).clamp(0.1, 1.0)
                }
                _ => 1.0,
            };
            prev = Some((gain_db, measured));
            gain_db += (miss / slope).clamp(-12.0, 12.0);
        }
        let (_, gain_db) = best.ok_or_else(|| audio::Error::Encode("gain search failed".into()))?;
        check()?;
        // The limiter is deterministic: the best try's curve is computed again, not kept.
        let curve = self.limiter_curve(gain_db, ceiling);
        let g = loudness::db_to_amp(gain_db) as f32;
        let out = Audio {
            sample_rate: self.rate as u32,
            channels: self
                .shaped
                .iter()
                .map(|c| c.iter().zip(&curve).map(|(&s, &k)| s * g * k).collect())
                .collect(),
        };
        let min_gain = curve.iter().fold(1.0f32, |m, &k| m.min(k));
        let rendered = Rendered {
            gain_db,
            // A curve that never moved reads 0, not -0.
            limiter_max_reduction_db: if min_gain < 1.0 {
                -loudness::amp_to_db(min_gain as f64)
            } else {
                0.0
            },
        };
        Ok((out, rendered))
    }

    /// The limiter's gain curve for the programme at `gain_db` under `ceiling` (linear).
    fn limiter_curve(&self, gain_db: f64, ceiling: f32) -> Vec<f32> {
        let lim = LimiterSettings {
            lookahead_s: 0.0015,
            release_s: 0.060,
        };
        let g = loudness::db_to_amp(gain_db) as f32;
        dsp::limiter_gain(&self.peaks, g, ceiling, self.rate, &lim)
    }

    /// Integrated loudness of the programme at `gain_db` through `curve`, rendered and metered
    /// one block at a time.
    fn meter(&self, gain_db: f64, curve: &[f32]) -> Result<f64, audio::Error> {
        let g = loudness::db_to_amp(gain_db) as f32;
        let mut meter =
            loudness::Meter::new(self.shaped.len(), self.rate as u32, Measure::Integrated)?;
        let mut block: Vec<Vec<f32>> = vec![Vec::with_capacity(loudness::BLOCK); self.shaped.len()];
        for start in (0..curve.len()).step_by(loudness::BLOCK) {
            let end = (start + loudness::BLOCK).min(curve.len());
            for (b, c) in block.iter_mut().zip(&self.shaped) {
                b.clear();
                b.extend(
                    c[start..end]
                        .iter()
                        .zip(&curve[start..end])
                        .map(|(&s, &k)| s * g * k),
                );
            }
            let planes: Vec<&[f32]> = block.iter().map(Vec::as_slice).collect();
            meter.add(&planes)?;
        }
        Ok(meter.finish()?.integrated_lufs)
    }
}

/// Share of the programme's energy below 120 Hz and above 6 kHz, dB re total, read from its mono
/// sum one block at a time (the filters carry their state across blocks).
fn band_shares(channels: &[Vec<f32>], rate: f64) -> (f64, f64) {
    let n = channels.first().map_or(0, Vec::len);
    let scale = 1.0 / channels.len().max(1) as f32;
    let (lp, hp) = (Biquad::lowpass(rate, 120.0), Biquad::highpass(rate, 6000.0));
    let (mut lp_state, mut hp_state) = (dsp::BiquadState::default(), dsp::BiquadState::default());
    let energy = |acc: f64, x: &[f32]| x.iter().fold(acc, |a, &s| a + (s as f64).powi(2));
    let (mut total, mut low, mut high) = (0.0f64, 0.0f64, 0.0f64);
    let mut mono = Vec::with_capacity(loudness::BLOCK);
    let mut band = Vec::with_capacity(loudness::BLOCK);
    for start in (0..n).step_by(loudness::BLOCK) {
        let end = (start + loudness::BLOCK).min(n);
        mono.clear();
        mono.resize(end - start, 0.0f32);
        if channels.len() == 1 {
            mono.copy_from_slice(&channels[0][start..end]);
        } else {
            for c in channels {
                for (m, &s) in mono.iter_mut().zip(&c[start..end]) {
                    *m += s;
                }
            }
            mono.iter_mut().for_each(|m| *m *= scale);
        }
        total = energy(total, &mono);
        band.clear();
        band.extend_from_slice(&mono);
        lp.run_from(&mut lp_state, &mut band);
        low = energy(low, &band);
        band.copy_from_slice(&mono);
        hp.run_from(&mut hp_state, &mut band);
        high = energy(high, &band);
    }
    let share = |e: f64| 10.0 * ((e + 1e-20) / (total + 1e-20)).log10();
    (share(low), share(high))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The CLI's readable before/after table.
pub fn report_table(r: &MasterReport) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{:<22}{:>12}{:>12}{:>12}\n",
        "", "before", "after", "target"
    ));
    s.push_str(&format!(
        "{:<22}{:>12.2}{:>12.2}{:>12.2}\n",
        "integrated (LUFS)", r.before.integrated_lufs, r.after.integrated_lufs, r.target_lufs
    ));
    s.push_str(&format!(
        "{:<22}{:>12.2}{:>12.2}{:>12}\n",
        "true peak (dBTP)",
        r.before.true_peak_dbtp,
        r.after.true_peak_dbtp,
        format!("≤ {:.2}", r.true_peak_ceiling_db)
    ));
    s.push_str(&format!(
        "{:<22}{:>12.2}{:>12.2}{:>12}\n",
        "loudness range (LU)", r.before.lra_lu, r.after.lra_lu, ""
    ));
    s.push_str(&format!(
        "{:<22}{:>12.2}{:>12.2}{:>12}\n",
        "sample peak (dBFS)", r.before.sample_peak_dbfs, r.after.sample_peak_dbfs, ""
    ));
    s.push_str(&format!(
        "\nEQ low shelf {:+.2} dB, high shelf {:+.2} dB; compressor up to {:.2} dB; \
         gain {:+.2} dB; limiter up to {:.2} dB\n",
        r.eq_low_shelf_db,
        r.eq_high_shelf_db,
        r.compressor_max_reduction_db,
        r.gain_db,
        r.limiter_max_reduction_db
    ));
    s.push_str(&format!(
        "output: {}, {} Hz, {} ch, {:.3} s\n",
        r.format, r.sample_rate, r.channels, r.duration_secs
    ));
    s
}

/// Output format; default `wav16`. An `mp3` is encoded at `bitrate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MasterFormat {
    #[default]
    Wav16,
    Wav24,
    Float,
    Mp3,
    Flac,
    Flac24,
}

impl MasterFormat {
    /// A name [`Format::parse`] reads (aliases and any case, as the API always took them).
    pub fn parse(name: &str) -> Option<MasterFormat> {
        Some(match Format::parse(name, None)? {
            Format::Wav16 => MasterFormat::Wav16,
            Format::Wav24 => MasterFormat::Wav24,
            Format::WavFloat => MasterFormat::Float,
            Format::Mp3 { .. } => MasterFormat::Mp3,
            Format::Flac16 => MasterFormat::Flac,
            Format::Flac24 => MasterFormat::Flac24,
        })
    }
}

impl<'de> Deserialize<'de> for MasterFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        MasterFormat::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown format {name:?}")))
    }
}

/// The fields of `POST /v1/master` beside the `audio` file; each may be left out.
// The type every use of master parameters shares: see `JobParams`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct MasterParams {
    /// Integrated loudness to reach, LUFS; default −14.
    #[schema(minimum = -30, maximum = -6)]
    pub target_lufs: f64,
    /// True-peak ceiling, dBTP; default −1.
    #[schema(minimum = -9, maximum = 0)]
    pub true_peak_db: f64,
    #[schema(inline)]
    pub format: MasterFormat,
    /// Apply the tilt EQ; default true.
    pub eq: bool,
    /// Apply the glue compressor; default true.
    pub compress: bool,
    /// MP3 kbit/s, one of LAME's rates (8, 16, 24, 32, 40, 48, 64, 80, 96, 112, 128, 160, 192,
    /// 224, 256, 320); only with `format=mp3`, default 320.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 8, maximum = 320)]
    pub bitrate: Option<u32>,
}

impl MasterParams {
    /// Loudness targets and chain switches.
    pub fn settings(&self) -> MasterSettings {
        MasterSettings {
            target_lufs: self.target_lufs,
            true_peak_db: self.true_peak_db,
            eq: self.eq,
            compress: self.compress,
        }
    }

    /// The encoder's format.
    pub fn format(&self) -> Format {
        match self.format {
            MasterFormat::Wav16 => Format::Wav16,
            MasterFormat::Wav24 => Format::Wav24,
            MasterFormat::Float => Format::WavFloat,
            MasterFormat::Mp3 => Format::Mp3 {
                kbps: self.bitrate.unwrap_or(320),
            },
            MasterFormat::Flac => Format::Flac16,
            MasterFormat::Flac24 => Format::Flac24,
        }
    }
}

impl Default for MasterParams {
    fn default() -> Self {
        let s = MasterSettings::default();
        MasterParams {
            target_lufs: s.target_lufs,
            true_peak_db: s.true_peak_db,
            format: MasterFormat::Wav16,
            eq: s.eq,
            compress: s.compress,
            bitrate: None,
        }
    }
}

impl JobParams for MasterParams {
    /// The multipart text fields of `POST /v1/master`: numbers as text, `true`/`false` (or
    /// `1`/`0`) for the switches. Other fields are ignored (the API may pass its own, e.g. a
    /// webhook URL).
    fn from_fields(fields: &BTreeMap<String, String>) -> Result<MasterParams, String> {
        let get = |name: &str| fields.get(name).map(|s| s.trim()).filter(|s| !s.is_empty());
        let num = |name: &str, default: f64, (lo, hi): (f64, f64)| -> Result<f64, String> {
            match get(name) {
                None => Ok(default),
                Some(v) => match v.parse::<f64>() {
                    Ok(x) if x.is_finite() && (lo..=hi).contains(&x) => Ok(x),
                    _ => Err(format!(
                        "{name} must be a number from {lo} to {hi}, got {v:?}"
                    )),
                },
            }
        };
        let flag = |name: &str| -> Result<bool, String> {
            match fields.get(name).map(|s| s.trim().to_ascii_lowercase()) {
                None => Ok(true),
                Some(v) if v.is_empty() || v == "true" || v == "1" => Ok(true),
                Some(v) if v == "false" || v == "0" => Ok(false),
                Some(v) => Err(format!("{name} must be true or false, got {v:?}")),
            }
        };
        let d = MasterParams::default();
        let target_lufs = num("target_lufs", d.target_lufs, TARGET_LUFS_RANGE)?;
        let true_peak_db = num("true_peak_db", d.true_peak_db, TRUE_PEAK_RANGE)?;
        let format_name = get("format").unwrap_or("wav16");
        let bitrate = match get("bitrate") {
            None => None,
            Some(v) => match v.parse::<u32>() {
                Ok(k) if audio::encode::MP3_BITRATES.contains(&k) => Some(k),
                _ => {
                    return Err(format!(
                        "bitrate must be one of {:?} kbit/s, got {v:?}",
                        audio::encode::MP3_BITRATES
                    ))
                }
            },
        };
        let format = MasterFormat::parse(format_name).ok_or_else(|| {
            format!("format must be wav16, wav24, float, mp3, flac or flac24, got {format_name:?}")
        })?;
        if bitrate.is_some() && format != MasterFormat::Mp3 {
            return Err("bitrate applies only to format=mp3".into());
        }
        Ok(MasterParams {
            target_lufs,
            true_peak_db,
            format,
            eq: flag("eq")?,
            compress: flag("compress")?,
            // MP3's rate is always stored, so the job says what it was encoded at.
            bitrate: (format == MasterFormat::Mp3).then(|| bitrate.unwrap_or(320)),
        })
    }

    fn validate(&self) -> Result<(), String> {
        let in_range = |x: f64, (lo, hi): (f64, f64)| x.is_finite() && (lo..=hi).contains(&x);
        if !in_range(self.target_lufs, TARGET_LUFS_RANGE) {
            return Err(format!(
                "target_lufs must be a number from {} to {}",
                TARGET_LUFS_RANGE.0, TARGET_LUFS_RANGE.1
            ));
        }
        if !in_range(self.true_peak_db, TRUE_PEAK_RANGE) {
            return Err(format!(
                "true_peak_db must be a number from {} to {}",
                TRUE_PEAK_RANGE.0, TRUE_PEAK_RANGE.1
            ));
        }
        match (self.format, self.bitrate) {
            (MasterFormat::Mp3, Some(k)) if !audio::encode::MP3_BITRATES.contains(&k) => {
                Err(format!(
                    "bitrate must be one of {:?} kbit/s",
                    audio::encode::MP3_BITRATES
                ))
            }
            (MasterFormat::Mp3, _) | (_, None) => Ok(()),
            (_, Some(_)) => Err("bitrate applies only to format=mp3".into()),
        }
    }
}

/// The shortest audio mastering can measure: one 400 ms block of the loudness meter.
const MIN_SECS: f64 = 0.4;

/// The `/v1/master` job engine.
pub struct MasterEngine;

impl Engine for MasterEngine {
    fn kind(&self) -> JobKind {
        JobKind::Master
    }

    fn name(&self) -> &str {
        "dsp"
    }

    /// See [`MasterParams`].
    fn params(&self, fields: &BTreeMap<String, String>) -> Result<Value, String> {
        MasterParams::store(fields)
    }

    /// What the headers already show would fail the run: FLAC asked of more than 8 channels, or
    /// audio shorter than the loudness meter's 0.4 s block (when the container gives a length).
    fn check_input(&self, params: &Value, input: &audio::ProbeInfo) -> Result<(), String> {
        let params = MasterParams::stored(params).map_err(|e| e.to_string())?;
        if matches!(params.format, MasterFormat::Flac | MasterFormat::Flac24) && input.channels > 8
        {
            return Err(format!(
                "format {} holds at most 8 channels and this audio has {}; ask for wav16, wav24, \
                 float or mp3 (folded to stereo)",
                params.format().name(),
                input.channels
            ));
        }
        if let Some(secs) = input.duration_secs.filter(|&s| s < MIN_SECS) {
            return Err(format!(
                "the audio is {secs:.3} s long; mastering needs at least {MIN_SECS} s (one \
                 loudness block)"
            ));
        }
        Ok(())
    }

    fn run(&self, ctx: &JobContext<'_>) -> Result<JobOutput, EngineError> {
        let params = MasterParams::stored(ctx.params)?;
        let format = params.format();
        let audio = audio::decode_with_progress(ctx.input, &|p| (ctx.progress)(p * 0.15))?;
        if (ctx.cancelled)() {
            return Err(EngineError::Cancelled);
        }
        let name = format!("mastered.{}", format.extension());
        let out = ctx.out_dir.join(&name);
        let report = master_audio_to_file(
            audio,
            &out,
            format,
            &params.settings(),
            &|p| (ctx.progress)(0.15 + p * 0.85),
            ctx.cancelled,
        )?;
        if (ctx.cancelled)() {
            return Err(EngineError::Cancelled);
        }
        let report_json =
            serde_json::to_value(&report).map_err(|e| EngineError::Internal(e.to_string()))?;
        Ok(JobOutput {
            result: json!({
                "mastered": file_ref(&name),
                "format": format.name(),
                "report": report_json,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn params_have_documented_defaults_and_ranges() {
        let parse_params = MasterParams::from_fields;
        let p = parse_params(&fields(&[])).unwrap();
        assert_eq!(p.settings(), MasterSettings::default());
        assert_eq!(p.format(), Format::Wav16);
        let p = parse_params(&fields(&[
            ("target_lufs", "-9.5"),
            ("true_peak_db", "-0.3"),
            ("format", "mp3"),
            ("bitrate", "192"),
            ("eq", "false"),
            ("webhook_url", "ignored"),
        ]))
        .unwrap();
        assert_eq!(p.settings().target_lufs, -9.5);
        assert!(!p.eq && p.compress);
        assert_eq!(p.format(), Format::Mp3 { kbps: 192 });
        let stored = serde_json::to_value(&p).unwrap();
        assert_eq!(MasterParams::stored(&stored).unwrap(), p);
        // The stored form clients have always seen: MP3's rate included, no bitrate otherwise.
        assert_eq!(
            serde_json::to_value(parse_params(&fields(&[("format", "MP3")])).unwrap()).unwrap(),
            json!({"target_lufs": -14.0, "true_peak_db": -1.0, "format": "mp3", "eq": true,
                   "compress": true, "bitrate": 320})
        );
        assert_eq!(
            serde_json::to_value(parse_params(&fields(&[("format", "flac16")])).unwrap()).unwrap(),
            json!({"target_lufs": -14.0, "true_peak_db": -1.0, "format": "flac", "eq": true,
                   "compress": true})
        );
        for bad in [
            ("target_lufs", "-3"),
            ("target_lufs", "loud"),
            ("target_lufs", "NaN"),
            ("true_peak_db", "1"),
            ("format", "ogg"),
            ("bitrate", "100"),
            ("eq", "maybe"),
        ] {
            assert!(parse_params(&fields(&[bad])).is_err(), "{bad:?} accepted");
        }
        assert!(parse_params(&fields(&[("format", "wav24"), ("bitrate", "320")])).is_err());
    }

    fn song(rate: u32, secs: f64) -> Audio {
        // Bass + chord tones with a slow level swell, so EQ, compressor and limiter all act.
        let n = (rate as f64 * secs) as usize;
        let ch: Vec<f32> = (0..n)
            .map(|i| {
                let t = i as f64 / rate as f64;
                let swell = 0.3 + 0.7 * (0.5 - 0.5 * (t * 0.8).cos());
                let v = 0.3 * (2.0 * std::f64::consts::PI * 55.0 * t).sin()
                    + 0.1 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()
                    + 0.05 * (2.0 * std::f64::consts::PI * 3520.0 * t).sin();
                (v * swell * 0.3) as f32
            })
            .collect();
        Audio {
            sample_rate: rate,
            channels: vec![ch.clone(), ch],
        }
    }

    #[test]
    fn engine_masters_a_file_to_target() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.flac");
        crate::audio::encode(&song(48_000, 8.0), Format::Flac24, &input).unwrap();
        let out_dir = dir.path().join("out");
        std::fs::create_dir(&out_dir).unwrap();
        let engine = MasterEngine;
        let params = engine
            .params(&fields(&[("target_lufs", "-12"), ("format", "wav24")]))
            .unwrap();
        let last = std::sync::Mutex::new(0.0f32);
        let ctx = JobContext {
            input: &input,
            params: &params,
            out_dir: &out_dir,
            progress: &|p| *last.lock().unwrap() = p,
            cancelled: &|| false,
        };
        let out = engine.run(&ctx).unwrap();
        assert_eq!(out.result["mastered"], file_ref("mastered.wav"));
        assert_eq!(*last.lock().unwrap(), 1.0);
        let written = crate::audio::decode(&out_dir.join("mastered.wav")).unwrap();
        assert_eq!(written.frames(), 8 * 48_000);
        let l = loudness::measure(&written, Measure::Full).unwrap();
        assert!((l.integrated_lufs + 12.0).abs() <= 0.5, "{l:?}");
        assert!(l.true_peak_dbtp <= -1.0, "{l:?}");
        let after = &out.result["report"]["after"]["integrated_lufs"];
        assert!((after.as_f64().unwrap() - l.integrated_lufs).abs() < 0.01);
        assert!(
            out.result["report"]["before"]["integrated_lufs"]
                .as_f64()
                .unwrap()
                < -20.0
        );
    }

    /// A cancel is seen between the chain's steps and between gain tries: raised at any look,
    /// it ends the master there with `Cancelled` (the engine gives the run back).
    #[test]
    fn cancel_is_seen_between_steps_and_tries() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.wav");
        let looks = std::cell::Cell::new(0usize);
        let count = || {
            looks.set(looks.get() + 1);
            false
        };
        let settings = MasterSettings::default();
        master_audio_to_file(
            song(44_100, 4.0),
            &out,
            Format::Wav16,
            &settings,
            &|_| {},
            &count,
        )
        .unwrap();
        let total = looks.get();
        assert!(total >= 8, "looked {total} times");
        for stop_at in 1..=total {
            let seen = std::cell::Cell::new(0usize);
            let r = master_audio_to_file(
                song(44_100, 4.0),
                &out,
                Format::Wav16,
                &settings,
                &|_| {},
                &|| {
                    seen.set(seen.get() + 1);
                    seen.get() >= stop_at
                },
            );
            assert!(
                matches!(r, Err(audio::Error::Cancelled)),
                "stop at look {stop_at}: {r:?}"
            );
        }
        let err: EngineError = audio::Error::Cancelled.into();
        assert!(matches!(err, EngineError::Cancelled));
    }

    /// A master that never needs the limiter says so with a plain 0 (it once wrote `-0.0`).
    #[test]
    fn an_unlimited_master_reports_zero_reduction() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("quiet.wav");
        let settings = MasterSettings {
            target_lufs: -28.0,
            ..Default::default()
        };
        let r = master_audio_to_file(
            song(44_100, 4.0),
            &out,
            Format::WavFloat,
            &settings,
            &|_| {},
            &|| false,
        )
        .unwrap();
        assert!((r.after.integrated_lufs + 28.0).abs() <= 0.5, "{r:?}");
        assert_eq!(r.limiter_max_reduction_db, 0.0);
        assert!(r.limiter_max_reduction_db.is_sign_positive());
    }

    #[test]
    fn engine_refuses_garbage_and_silence_with_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let params = MasterEngine.params(&BTreeMap::new()).unwrap();
        let garbage = dir.path().join("x.wav");
        std::fs::write(&garbage, b"RIFF....WAVEjunkjunkjunk").unwrap();
        let silent = dir.path().join("s.wav");
        let quiet = Audio {
            sample_rate: 44_100,
            channels: vec![vec![0.0; 44_100]],
        };
        crate::audio::encode(&quiet, Format::Wav16, &silent).unwrap();
        for (input, code) in [
            (&garbage, "unsupported_audio"),
            (&silent, "invalid_request"),
        ] {
            let ctx = JobContext {
                input,
                params: &params,
                out_dir: dir.path(),
                progress: &|_| {},
                cancelled: &|| false,
            };
            let err = MasterEngine.run(&ctx).unwrap_err();
            let got = err.code().as_str();
            assert!(
                got == code || (code == "unsupported_audio" && got == "corrupt_audio"),
                "{}: {err}",
                err.code()
            );
        }
    }
}
