//! What audio soundcheck agrees to decode: a sample rate, channel count and length inside documented
//! bounds, and finite samples. Checked from the headers before anything is allocated (a 144-byte WAV
//! may declare 4 GHz or four billion frames) and again on what the decoder actually produces, so no
//! engine downstream ever sizes a buffer or an FFT from a hostile header.
//!
//! The duration cap is the one limit an operator may want to move (`serve --max-duration-secs`);
//! it is process-wide because every decode, in the server and the offline commands, must obey it.

use std::sync::atomic::{AtomicU64, Ordering};

use super::error::{Error, Result};

/// Lowest sample rate accepted, Hz (telephone audio is 8 kHz; below 1 kHz is not music).
pub const MIN_SAMPLE_RATE: u32 = 1_000;
/// Highest sample rate accepted, Hz (the highest rate DAWs and DXD recordings use).
pub const MAX_SAMPLE_RATE: u32 = 768_000;
/// Most channels accepted: symphonia's channel map has 26 speaker positions, and each of its
/// readers maps a file's channels onto them (more cannot be decoded, in any container).
pub const MAX_CHANNELS: usize = 26;
/// Default longest accepted audio, in seconds (1 hour). Decoded audio is held in memory as `f32`
/// (an hour of 44.1 kHz stereo is 1.3 GB) and the engines work on copies of it, while a few
/// hundred kilobytes of FLAC can declare nothing and decode to hours: the default fits a laptop,
/// and `--max-duration-secs` raises it where the memory is.
pub const DEFAULT_MAX_DURATION_SECS: u64 = 3600;

/// The duration cap in force; `serve --max-duration-secs` sets it once at start.
static MAX_DURATION_SECS: AtomicU64 = AtomicU64::new(DEFAULT_MAX_DURATION_SECS);

/// Sets the longest accepted audio for this process (seconds, at least 1).
pub fn set_max_duration_secs(secs: u64) {
    MAX_DURATION_SECS.store(secs.max(1), Ordering::Relaxed);
}

/// The longest accepted audio, in seconds.
pub fn max_duration_secs() -> u64 {
    MAX_DURATION_SECS.load(Ordering::Relaxed)
}

/// Refuses a sample rate or channel count outside the bounds, naming the field.
pub fn check_format(sample_rate: u32, channels: usize) -> Result<()> {
    if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&sample_rate) {
        return Err(Error::Unsupported(format!(
            "sample_rate {sample_rate} Hz is outside the supported {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz"
        )));
    }
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(Error::Unsupported(format!(
            "channels {channels} is outside the supported 1-{MAX_CHANNELS}"
        )));
    }
    Ok(())
}

/// Most samples (all channels together) one decode may produce: about 3.4 hours of 44.1 kHz
/// stereo, 4 GiB of `f32`. A memory bound beside the duration cap (many channels at a high rate
/// reach it sooner: 1,000 s of 8-channel 192 kHz is 1.5 billion samples).
pub const MAX_SAMPLES: u64 = 1 << 30;

/// Refuses audio of `frames` frames of `channels` channels at `sample_rate` that is longer than the
/// duration cap or holds more than [`MAX_SAMPLES`]. `declared` says whether the length comes from
/// the headers (refused before decoding) or from decoding.
pub fn check_length(frames: u64, sample_rate: u32, channels: usize, declared: bool) -> Result<()> {
    let cap = max_duration_secs();
    let max_frames = cap.saturating_mul(sample_rate as u64);
    let how = if declared { "declares" } else { "decodes to" };
    if frames > max_frames {
        let secs = frames as f64 / sample_rate.max(1) as f64;
        return Err(Error::Unsupported(format!(
            "duration: the file {how} {secs:.0} s, longer than the {cap} s limit (--max-duration-secs)"
        )));
    }
    let samples = frames.saturating_mul(channels.max(1) as u64);
    if samples > MAX_SAMPLES {
        return Err(Error::Unsupported(format!(
            "samples: the file {how} {samples} samples ({frames} frames x {channels} channels), \
             more than the {MAX_SAMPLES} one decode may hold"
        )));
    }
    Ok(())
}

/// Largest accepted sample magnitude (full scale is 1.0). Float files may go over full scale, by a
/// few dB in real masters; 1024 is +60 dB, past anything that is music rather than damage, and far
/// below what would overflow the FFTs downstream (which sum thousands of samples).
pub const MAX_SAMPLE_MAGNITUDE: f32 = 1024.0;

/// Refuses a buffer holding NaN, infinity or a sample beyond [`MAX_SAMPLE_MAGNITUDE`]: no engine is
/// asked to make sense of them, and a float file that carries them is damaged.
pub fn check_finite(samples: &[f32], channel: usize, first_frame: usize) -> Result<()> {
    let bad = |s: &f32| !s.is_finite() || s.abs() > MAX_SAMPLE_MAGNITUDE;
    match samples.iter().position(bad) {
        None => Ok(()),
        Some(i) => Err(Error::Corrupt(format!(
            "samples: frame {} of channel {channel} is not a finite number in range \
             (NaN, infinity, or beyond ±{MAX_SAMPLE_MAGNITUDE}; full scale is ±1)",
            first_frame + i
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_inside_the_bounds_pass_and_outside_name_the_field() {
        assert!(check_format(8_000, 1).is_ok());
        assert!(check_format(768_000, 26).is_ok());
        assert!(check_format(1_000, 2).is_ok());
        for (rate, ch, field) in [
            (999, 2, "sample_rate"),
            (768_001, 2, "sample_rate"),
            (u32::MAX, 2, "sample_rate"),
            (134_228_753, 1, "sample_rate"),
            (44_100, 0, "channels"),
            (44_100, 27, "channels"),
        ] {
            let e = check_format(rate, ch).unwrap_err();
            assert_eq!(e.code(), "unsupported_audio");
            assert!(e.to_string().contains(field), "{e}");
        }
    }

    #[test]
    fn length_cap_counts_seconds_at_the_file_rate() {
        let cap = max_duration_secs();
        assert!(check_length(cap * 48_000, 48_000, 2, true).is_ok());
        let e = check_length(cap * 48_000 + 1, 48_000, 2, true).unwrap_err();
        assert!(e.to_string().contains("duration"), "{e}");
        assert!(check_length(u64::MAX, 1_000, 1, false).is_err());
    }

    #[test]
    fn sample_cap_counts_every_channel() {
        // 1,000 s of 8-channel 192 kHz: inside the hour, but 1.5 billion samples.
        let frames = 1_000 * 192_000;
        assert!(check_length(frames, 192_000, 2, true).is_ok());
        let e = check_length(frames, 192_000, 8, true).unwrap_err();
        assert!(e.to_string().contains("samples: the file declares"), "{e}");
        assert!(check_length(MAX_SAMPLES / 4, 192_000, 4, false).is_ok());
        assert!(check_length(MAX_SAMPLES / 4 + 1, 192_000, 4, false).is_err());
    }

    #[test]
    fn non_finite_samples_are_corrupt_with_their_position() {
        assert!(check_finite(&[0.0, 1.0, -1.0], 0, 0).is_ok());
        let e = check_finite(&[0.0, f32::NAN], 1, 10).unwrap_err();
        assert_eq!(e.code(), "corrupt_audio");
        assert!(e.to_string().contains("frame 11 of channel 1"), "{e}");
        assert!(check_finite(&[f32::INFINITY], 0, 0).is_err());
        assert!(check_finite(&[f32::NEG_INFINITY], 0, 0).is_err());
        assert!(
            check_finite(&[1.9, -3.0, 1024.0], 0, 0).is_ok(),
            "over full scale is fine"
        );
        assert!(check_finite(&[0.0, 1.0e30], 0, 0).is_err());
        assert!(check_finite(&[-1025.0], 0, 0).is_err());
    }
}
