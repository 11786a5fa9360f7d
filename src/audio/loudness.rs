//! Loudness per EBU R128 / ITU-R BS.1770-4 through the `ebur128` crate: integrated loudness,
//! loudness range and true peak. Nothing here is hand-written measurement; mastering and the
//! analysis report both read their numbers from this one place.

use serde::Serialize;

use super::error::{Error, Result};
use super::Audio;

/// Integrated loudness reported for silence or audio below the absolute gate (LUFS).
pub const FLOOR_LUFS: f64 = -70.0;
/// Peak reported for digital silence (dBFS / dBTP).
pub const FLOOR_DB: f64 = -120.0;

/// A BS.1770 measurement of a whole programme.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Loudness {
    /// Gated integrated loudness, LUFS; [`FLOOR_LUFS`] when nothing passes the gate.
    pub integrated_lufs: f64,
    /// Loudness range (EBU Tech 3342), LU; 0 for programmes too short to have one.
    pub lra_lu: f64,
    /// Highest true (4× oversampled) peak over all channels, dBTP.
    pub true_peak_dbtp: f64,
    /// Highest sample peak over all channels, dBFS.
    pub sample_peak_dbfs: f64,
}

/// Which measurements to run: true peak costs a 4× oversampling pass and LRA a short-term
/// history, so callers that only need integrated loudness ask for less.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Integrated loudness and sample peak only.
    Integrated,
    /// Everything in [`Loudness`].
    Full,
}

/// Lowest sample rate the meter is run at, Hz. BS.1770's K-weighting begins with a high shelf at
/// about 1.7 kHz, which a filter at under twice that rate cannot place (the meter's filter turns
/// unstable and every block reads as silence): audio below this rate is measured on a copy
/// upsampled by a whole factor to at least this rate, which adds nothing above its own Nyquist.
pub const MIN_METER_RATE: u32 = 8_000;

/// Measures `audio`. Channels beyond the sixth are ignored per BS.1770's 5.1 weighting (the
/// crate's default map: L, R, C, LFE (unweighted), Ls, Rs). Audio below [`MIN_METER_RATE`] is
/// metered on an upsampled copy; its sample peak is still read from its own samples.
pub fn measure(audio: &Audio, what: Measure) -> Result<Loudness> {
    if audio.sample_rate > 0 && audio.sample_rate < MIN_METER_RATE && !audio.channels.is_empty() {
        let factor = MIN_METER_RATE.div_ceil(audio.sample_rate);
        let up = super::resample::resample(
            audio,
            audio.sample_rate * factor,
            super::resample::Quality::High,
        )?;
        let mut l = measure(&up, what)?;
        let peak = audio
            .channels
            .iter()
            .flat_map(|c| c.iter())
            .fold(0.0f64, |m, &s| m.max((s as f64).abs()));
        l.sample_peak_dbfs = amp_to_db(peak);
        if what == Measure::Integrated {
            l.true_peak_dbtp = l.sample_peak_dbfs;
        }
        return Ok(l);
    }
    measure_at_rate(audio, what)
}

fn measure_at_rate(audio: &Audio, what: Measure) -> Result<Loudness> {
    if audio.channels.is_empty() || audio.sample_rate == 0 {
        return Err(Error::Invalid("no channels or zero sample rate".into()));
    }
    let mut meter = Meter::new(audio.channels.len(), audio.sample_rate, what)?;
    // Feed in blocks so the meter's internal buffers stay small.
    let frames = audio.frames();
    let mut pos = 0;
    while pos < frames {
        let end = (pos + BLOCK).min(frames);
        let planes: Vec<&[f32]> = audio.channels.iter().map(|c| &c[pos..end]).collect();
        meter.add(&planes)?;
        pos = end;
    }
    meter.finish()
}

/// Frames a whole programme is fed to the meter in; callers that render blocks themselves use
/// the same size, so the two paths read identical numbers.
pub const BLOCK: usize = 1 << 16;

/// A BS.1770 meter fed block by block, for a programme that is never held whole (mastering
/// measures each gain it tries as it renders it). [`measure`] is this meter over a whole
/// [`Audio`]. Below [`MIN_METER_RATE`] the blocks are kept and measured at the end through
/// [`measure`]'s upsampled copy, so the reading is the same either way.
pub struct Meter {
    what: Measure,
    inner: Inner,
}

enum Inner {
    Direct(ebur128::EbuR128),
    Kept(Audio),
}

impl Meter {
    /// A meter for `channels` planes at `rate` Hz.
    pub fn new(channels: usize, rate: u32, what: Measure) -> Result<Meter> {
        use ebur128::{EbuR128, Mode};

        if channels == 0 || rate == 0 {
            return Err(Error::Invalid("no channels or zero sample rate".into()));
        }
        let inner = if rate < MIN_METER_RATE {
            Inner::Kept(Audio {
                sample_rate: rate,
                channels: vec![Vec::new(); channels],
            })
        } else {
            let mode = match what {
                Measure::Integrated => Mode::I | Mode::SAMPLE_PEAK,
                Measure::Full => Mode::I | Mode::LRA | Mode::TRUE_PEAK | Mode::SAMPLE_PEAK,
            };
            Inner::Direct(EbuR128::new(channels as u32, rate, mode).map_err(meter_err)?)
        };
        Ok(Meter { what, inner })
    }

    /// Adds one block: a slice per channel, all the same length.
    pub fn add(&mut self, planes: &[&[f32]]) -> Result<()> {
        match &mut self.inner {
            Inner::Direct(meter) => meter.add_frames_planar_f32(planes).map_err(meter_err),
            Inner::Kept(audio) => {
                if planes.len() != audio.channels.len() {
                    return Err(Error::Invalid("block has the wrong channel count".into()));
                }
                for (c, p) in audio.channels.iter_mut().zip(planes) {
                    c.extend_from_slice(p);
                }
                Ok(())
            }
        }
    }

    /// The programme's measurement.
    pub fn finish(self) -> Result<Loudness> {
        let meter = match self.inner {
            Inner::Direct(meter) => meter,
            Inner::Kept(audio) => return measure(&audio, self.what),
        };
        let integrated = meter.loudness_global().map_err(meter_err)?;
        let lra = match self.what {
            Measure::Full => meter.loudness_range().map_err(meter_err)?,
            Measure::Integrated => 0.0,
        };
        let mut sample_peak = 0.0f64;
        let mut true_peak = 0.0f64;
        for c in 0..meter.channels() {
            sample_peak = sample_peak.max(meter.sample_peak(c).map_err(meter_err)?);
            if self.what == Measure::Full {
                true_peak = true_peak.max(meter.true_peak(c).map_err(meter_err)?);
            }
        }
        if self.what == Measure::Integrated {
            true_peak = sample_peak;
        }
        Ok(Loudness {
            integrated_lufs: finite_or(integrated, FLOOR_LUFS).max(FLOOR_LUFS),
            lra_lu: finite_or(lra, 0.0),
            true_peak_dbtp: amp_to_db(true_peak),
            sample_peak_dbfs: amp_to_db(sample_peak),
        })
    }
}

fn meter_err(e: ebur128::Error) -> Error {
    Error::Encode(format!("ebur128: {e:?}"))
}

/// Linear amplitude to dB, floored at [`FLOOR_DB`].
pub fn amp_to_db(a: f64) -> f64 {
    if a > 0.0 {
        (20.0 * a.log10()).max(FLOOR_DB)
    } else {
        FLOOR_DB
    }
}

/// dB to linear amplitude.
pub fn db_to_amp(db: f64) -> f64 {
    10f64.powf(db / 20.0)
}

fn finite_or(v: f64, fallback: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        fallback
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, freq: f64, amp: f64, secs: f64, channels: usize) -> Audio {
        let n = (rate as f64 * secs) as usize;
        let ch: Vec<f32> = (0..n)
            .map(|i| {
                (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin()) as f32
            })
            .collect();
        Audio {
            sample_rate: rate,
            channels: vec![ch; channels],
        }
    }

    #[test]
    fn one_khz_stereo_sine_at_minus_18_dbfs_reads_minus_18_lufs() {
        // EBU Tech 3341 case 1: a 1 kHz sine at -18 dBFS in both channels is -18 LUFS... when
        // "dBFS" means RMS relative to a full-scale sine; i.e. peak amplitude 10^(-18/20).
        let a = sine(48_000, 1000.0, db_to_amp(-18.0), 20.0, 2);
        let l = measure(&a, Measure::Full).unwrap();
        assert!((l.integrated_lufs + 18.0).abs() < 0.1, "{l:?}");
        assert!((l.true_peak_dbtp + 18.0).abs() < 0.2, "{l:?}");
        assert!((l.sample_peak_dbfs + 18.0).abs() < 0.05, "{l:?}");
        assert!(l.lra_lu < 0.5, "{l:?}");
    }

    /// The meter fed in uneven blocks reads what [`measure`] reads on the whole programme, at
    /// a normal rate (streamed) and at a low one (kept, then upsampled).
    #[test]
    fn meter_fed_in_blocks_reads_what_measure_reads() {
        for rate in [2_000, 44_100] {
            let mut a = sine(rate, 440.0, db_to_amp(-20.0), 3.0, 2);
            // Louder second half, so the gate and the range have something to read.
            let n = a.frames();
            for c in a.channels.iter_mut() {
                c[n / 2..].iter_mut().for_each(|s| *s *= 3.0);
            }
            for what in [Measure::Integrated, Measure::Full] {
                let whole = measure(&a, what).unwrap();
                let mut meter = Meter::new(2, rate, what).unwrap();
                let mut pos = 0;
                for len in [1, 999, 4_096, 70_000].iter().cycle() {
                    if pos >= n {
                        break;
                    }
                    let end = (pos + len).min(n);
                    let planes: Vec<&[f32]> = a.channels.iter().map(|c| &c[pos..end]).collect();
                    meter.add(&planes).unwrap();
                    pos = end;
                }
                let blocks = meter.finish().unwrap();
                assert!(
                    (blocks.integrated_lufs - whole.integrated_lufs).abs() < 1e-9
                        && (blocks.true_peak_dbtp - whole.true_peak_dbtp).abs() < 1e-9
                        && (blocks.lra_lu - whole.lra_lu).abs() < 1e-9,
                    "{rate} Hz {what:?}: {blocks:?} vs {whole:?}"
                );
                assert!(whole.integrated_lufs > -20.0, "{whole:?}");
            }
        }
        assert!(Meter::new(0, 48_000, Measure::Full).is_err());
    }

    /// Below about 3.4 kHz the meter's K-weighting cannot be built at the file's rate: a
    /// -18 dBFS tone there once read as silence (-70 LUFS), and mastering refused it as silent.
    /// Measured on the upsampled copy, a 300 Hz tone reads what it reads at 48 kHz.
    #[test]
    fn low_sample_rates_are_metered_on_an_upsampled_copy() {
        // Faded in and out over 0.1 s: an abrupt start overshoots between samples, which a true
        // peak rightly reads.
        let tone = |rate: u32| {
            let mut a = sine(rate, 300.0, db_to_amp(-18.0), 10.0, 1);
            let fade = rate as usize / 10;
            let n = a.channels[0].len();
            for i in 0..fade {
                let g = 0.5 - 0.5 * (std::f32::consts::PI * i as f32 / fade as f32).cos();
                a.channels[0][i] *= g;
                a.channels[0][n - 1 - i] *= g;
            }
            a
        };
        let reference = measure(&tone(48_000), Measure::Full)
            .unwrap()
            .integrated_lufs;
        for rate in [1_000, 2_000, 3_000, 4_000, 7_999] {
            let l = measure(&tone(rate), Measure::Full).unwrap();
            // The shelf placed at 8 kHz instead of 48 kHz moves a 300 Hz tone by about 0.2 LU.
            assert!(
                (l.integrated_lufs - reference).abs() < 0.3,
                "{rate} Hz: {l:?} vs {reference}"
            );
            assert!(
                l.sample_peak_dbfs <= -17.99 && l.sample_peak_dbfs > -18.5,
                "{rate}: {l:?}"
            );
            assert!((l.true_peak_dbtp + 18.0).abs() < 0.2, "{rate} Hz: {l:?}");
        }
    }

    #[test]
    fn loudness_range_sees_a_level_step() {
        // 20 s at -20 then 20 s at -30: LRA near 10 LU (Tech 3342 case 1 shape).
        let mut a = sine(48_000, 1000.0, db_to_amp(-20.0), 20.0, 2);
        let b = sine(48_000, 1000.0, db_to_amp(-30.0), 20.0, 2);
        for (x, y) in a.channels.iter_mut().zip(b.channels) {
            x.extend(y);
        }
        let l = measure(&a, Measure::Full).unwrap();
        assert!((l.lra_lu - 10.0).abs() < 1.0, "{l:?}");
    }

    #[test]
    fn silence_is_floored_not_infinite() {
        let a = Audio {
            sample_rate: 44_100,
            channels: vec![vec![0.0; 44_100]; 2],
        };
        let l = measure(&a, Measure::Full).unwrap();
        assert_eq!(l.integrated_lufs, FLOOR_LUFS);
        assert_eq!(l.true_peak_dbtp, FLOOR_DB);
        assert!(serde_json::to_string(&l).is_ok());
    }
}
