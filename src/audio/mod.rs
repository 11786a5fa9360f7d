//! Audio in and out: decode (symphonia), resample, encode (WAV via hound, MP3, FLAC), loudness.
//! Pure functions over samples; no HTTP, no database.

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
}
