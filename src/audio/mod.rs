//! Audio in and out: decode (symphonia), resample, encode (WAV via hound, MP3, FLAC), loudness.
//! Pure functions over samples; no HTTP, no database.
//!
//! - [`decode`]: any container symphonia reads → [`Audio`]; [`probe`] for cheap upload checks.
//! - [`resample`]: rubato, exact output length.
//! - [`encode`]: WAV 16/24/float, MP3 (LAME; long tracks in parallel pieces), FLAC (flacenc).
//! - [`loudness`]: EBU R128 integrated loudness, loudness range and true peak (ebur128).
//! - [`Error`]: which failures are the client's (`unsupported_audio`, `corrupt_audio`).

pub mod decode;
pub mod encode;
pub mod error;
pub mod limits;
pub mod loudness;
mod mp3;
pub mod prescan;
pub mod resample;

pub use decode::{decode, decode_with_progress, probe, probe_bytes, ProbeInfo};
pub use encode::{encode, encode_mp3_quick, Format, WavWriter};
pub use error::{Error, Result};
pub use loudness::{measure, Loudness, Measure};
pub use resample::{resample, Quality};

/// Decoded audio: planar `f32` samples in `-1.0..=1.0`, one `Vec` per channel, all the same length.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    pub sample_rate: u32,
    pub channels: Vec<Vec<f32>>,
}

impl Audio {
    /// Number of sample frames (samples per channel).
    pub fn frames(&self) -> usize {
        self.channels.first().map_or(0, Vec::len)
    }

    /// Length in seconds.
    pub fn duration_secs(&self) -> f64 {
        self.frames() as f64 / self.sample_rate as f64
    }

    /// The average of all channels: what analysis listens to (tempo and key ignore panning).
    pub fn mono(&self) -> Vec<f32> {
        let n = self.frames();
        match self.channels.len() {
            0 => Vec::new(),
            1 => self.channels[0].clone(),
            k => {
                let mut out = vec![0.0f32; n];
                for ch in &self.channels {
                    for (o, &s) in out.iter_mut().zip(ch) {
                        *o += s;
                    }
                }
                let scale = 1.0 / k as f32;
                out.iter_mut().for_each(|o| *o *= scale);
                out
            }
        }
    }

    /// Folds any layout to two channels (even-numbered channels left, odd right, averaged) for
    /// formats that carry at most stereo; mono and stereo are returned unchanged.
    pub fn fold_to_stereo(&self) -> Audio {
        if self.channels.len() <= 2 {
            return self.clone();
        }
        let n = self.frames();
        let mut left = vec![0.0f32; n];
        let mut right = vec![0.0f32; n];
        let (mut nl, mut nr) = (0usize, 0usize);
        for (i, ch) in self.channels.iter().enumerate() {
            let (dst, count) = if i % 2 == 0 {
                (&mut left, &mut nl)
            } else {
                (&mut right, &mut nr)
            };
            *count += 1;
            for (o, &s) in dst.iter_mut().zip(ch) {
                *o += s;
            }
        }
        let (sl, sr) = (1.0 / nl as f32, 1.0 / nr as f32);
        left.iter_mut().for_each(|s| *s *= sl);
        right.iter_mut().for_each(|s| *s *= sr);
        Audio {
            sample_rate: self.sample_rate,
            channels: vec![left, right],
        }
    }

    /// Highest absolute sample value over all channels.
    pub fn peak(&self) -> f32 {
        self.channels
            .iter()
            .flat_map(|c| c.iter())
            .fold(0.0f32, |m, &s| m.max(s.abs()))
    }
}
