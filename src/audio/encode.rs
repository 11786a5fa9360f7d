//! Encoding [`Audio`] to files: WAV (16-bit, 24-bit, 32-bit float) through hound, MP3 through
//! LAME (`mp3lame-encoder`, in [`super::mp3`]), FLAC (16/24-bit) through `flacenc`. Every format keeps the duration
//! exact to the sample: WAV and FLAC store the frame count, MP3 gets a LAME/Info tag carrying the
//! encoder delay and padding, which gapless decoders (symphonia included) use to trim.

use std::fs;
use std::io::BufWriter;
use std::path::Path;

use super::error::{Error, Result};
use super::Audio;

/// An output file format, as clients name it in the `format` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// 16-bit PCM WAV (CD quality; the caller dithers if it wants to).
    Wav16,
    /// 24-bit PCM WAV.
    Wav24,
    /// 32-bit IEEE float WAV: lossless for our `f32` samples.
    WavFloat,
    /// Constant-bit-rate MP3 at this many kbit/s (one of LAME's rates, 32–320).
    Mp3 { kbps: u32 },
    /// 16-bit FLAC.
    Flac16,
    /// 24-bit FLAC.
    Flac24,
}

/// MP3 bit rates LAME accepts, kbit/s.
pub const MP3_BITRATES: [u32; 16] = [
    8, 16, 24, 32, 40, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
];

impl Format {
    /// Parses the names the API and CLI accept: `wav16`/`wav`, `wav24`, `float`/`wav32f`, `mp3`
    /// (320 kbit/s unless `mp3_kbps` says otherwise), `flac`/`flac16`, `flac24`.
    pub fn parse(name: &str, mp3_kbps: Option<u32>) -> Option<Format> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "wav" | "wav16" => Format::Wav16,
            "wav24" => Format::Wav24,
            "float" | "wav32f" | "wavfloat" => Format::WavFloat,
            "mp3" => Format::Mp3 {
                kbps: mp3_kbps.unwrap_or(320),
            },
            "flac" | "flac16" => Format::Flac16,
            "flac24" => Format::Flac24,
            _ => return None,
        })
    }

    /// The canonical name, as reported back in results.
    pub fn name(self) -> &'static str {
        match self {
            Format::Wav16 => "wav16",
            Format::Wav24 => "wav24",
            Format::WavFloat => "float",
            Format::Mp3 { .. } => "mp3",
            Format::Flac16 => "flac",
            Format::Flac24 => "flac24",
        }
    }

    /// File extension without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Wav16 | Format::Wav24 | Format::WavFloat => "wav",
            Format::Mp3 { .. } => "mp3",
            Format::Flac16 | Format::Flac24 => "flac",
        }
    }

    /// Integer bit depth, when the format quantises (the caller dithers to it).
    pub fn bit_depth(self) -> Option<u32> {
        match self {
            Format::Wav16 | Format::Flac16 => Some(16),
            Format::Wav24 | Format::Flac24 => Some(24),
            Format::WavFloat | Format::Mp3 { .. } => None,
        }
    }
}

/// Writes `audio` to `path` in `format`. Samples outside `-1..=1` are clipped by integer formats.
pub fn encode(audio: &Audio, format: Format, path: &Path) -> Result<()> {
    encode_with_progress(audio, format, path, &|_| {})
}

/// [`encode`] reporting progress in `0.0..=1.0` (MP3 is the slow one).
pub fn encode_with_progress(
    audio: &Audio,
    format: Format,
    path: &Path,
    progress: &dyn Fn(f32),
) -> Result<()> {
    check(audio)?;
    match format {
        Format::Wav16 | Format::Wav24 | Format::WavFloat => {
            let mut w = WavWriter::create(path, format, audio.channels.len(), audio.sample_rate)?;
            w.write(&audio.channels)?;
            w.finish()?;
        }
        Format::Flac16 => write_flac(audio, path, 16)?,
        Format::Flac24 => write_flac(audio, path, 24)?,
        // LAME's "-h": good quality at a reasonable speed.
        Format::Mp3 { kbps } => super::mp3::write(
            audio,
            path,
            kbps,
            mp3lame_encoder::Quality::NearBest,
            1,
            progress,
        )?,
    }
    progress(1.0);
    Ok(())
}

pub(super) fn check(audio: &Audio) -> Result<()> {
    if audio.channels.is_empty() || audio.sample_rate == 0 {
        return Err(Error::Invalid("no channels or zero sample rate".into()));
    }
    let n = audio.frames();
    if audio.channels.iter().any(|c| c.len() != n) {
        return Err(Error::Invalid("channels differ in length".into()));
    }
    Ok(())
}

/// Rounds a `-1..=1` sample to a signed integer of `bits` bits, clipping.
fn quantise(s: f32, bits: u32) -> i32 {
    let scale = (1i64 << (bits - 1)) as f64;
    let v = (s as f64 * scale).round();
    v.clamp(-scale, scale - 1.0) as i32
}

/// A WAV file (16-bit, 24-bit or float) written a block of planar samples at a time, so audio
/// too long to hold whole can be written as it is produced (the separation engine writes its stems
/// segment by segment). [`encode`] writes its WAVs through it too; the bytes are the same.
pub struct WavWriter {
    inner: hound::WavWriter<BufWriter<fs::File>>,
    /// Integer bit depth; `None` for float.
    bits: Option<u32>,
    channels: usize,
}

impl WavWriter {
    /// Creates (truncates) `path`; `format` must be one of the WAV formats.
    pub fn create(path: &Path, format: Format, channels: usize, sample_rate: u32) -> Result<Self> {
        let (bits, float) = match format {
            Format::Wav16 => (16, false),
            Format::Wav24 => (24, false),
            Format::WavFloat => (32, true),
            other => {
                return Err(Error::Invalid(format!(
                    "{} is not a WAV format",
                    other.name()
                )))
            }
        };
        if channels == 0 || sample_rate == 0 {
            return Err(Error::Invalid("no channels or zero sample rate".into()));
        }
        let spec = hound::WavSpec {
            channels: u16::try_from(channels)
                .map_err(|_| Error::Invalid("too many channels for WAV".into()))?,
            sample_rate,
            bits_per_sample: bits,
            sample_format: if float {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        };
        let file = BufWriter::new(fs::File::create(path)?);
        let inner = hound::WavWriter::new(file, spec).map_err(hound_err)?;
        Ok(WavWriter {
            inner,
            bits: (!float).then_some(bits as u32),
            channels,
        })
    }

    /// Appends `block`, planar (`[channel][sample]`, equal lengths, the writer's channel count).
    pub fn write(&mut self, block: &[Vec<f32>]) -> Result<()> {
        let n = block.first().map_or(0, Vec::len);
        if block.len() != self.channels || block.iter().any(|c| c.len() != n) {
            return Err(Error::Invalid("channels differ in count or length".into()));
        }
        for i in 0..n {
            for ch in block {
                match self.bits {
                    None => self.inner.write_sample(ch[i]),
                    Some(bits) => self.inner.write_sample(quantise(ch[i], bits)),
                }
                .map_err(hound_err)?;
            }
        }
        Ok(())
    }

    /// Writes the header's final lengths and flushes.
    pub fn finish(self) -> Result<()> {
        self.inner.finalize().map_err(hound_err)
    }
}

fn hound_err(e: hound::Error) -> Error {
    match e {
        hound::Error::IoError(e) => Error::Io(e),
        other => Error::Encode(format!("wav: {other}")),
    }
}

/// Highest sample rate the FLAC encoder writes.
pub const FLAC_MAX_RATE: u32 = 96_000;

/// The rate a FLAC file of `rate` audio is written at: its own up to [`FLAC_MAX_RATE`], above it
/// 88.2 kHz for a multiple of 44.1 kHz and 96 kHz for anything else.
pub fn flac_rate(rate: u32) -> u32 {
    match rate {
        r if r <= FLAC_MAX_RATE => r,
        r if r % 44_100 == 0 => 88_200,
        _ => FLAC_MAX_RATE,
    }
}

fn write_flac(audio: &Audio, path: &Path, bits: usize) -> Result<()> {
    use flacenc::component::BitRepr;
    use flacenc::error::Verify;

    if audio.channels.len() > 8 {
        return Err(Error::Invalid("FLAC holds at most 8 channels".into()));
    }
    // flacenc writes at most 96 kHz: a higher rate goes to 88.2 kHz (from the 44.1 kHz family)
    // or 96 kHz, as MP3 takes an odd rate to a standard one.
    let resampled;
    let audio = match flac_rate(audio.sample_rate) {
        rate if rate == audio.sample_rate => audio,
        rate => {
            resampled = super::resample::resample(audio, rate, super::resample::Quality::High)?;
            &resampled
        }
    };
    let n_ch = audio.channels.len();
    let mut interleaved = Vec::with_capacity(audio.frames() * n_ch);
    for i in 0..audio.frames() {
        for ch in &audio.channels {
            interleaved.push(quantise(ch[i], bits as u32));
        }
    }
    let config = flacenc::config::Encoder::default()
        .into_verified()
        .map_err(|(_, e)| Error::Encode(format!("flac config: {e}")))?;
    let source = flacenc::source::MemSource::from_samples(
        &interleaved,
        n_ch,
        bits,
        audio.sample_rate as usize,
    );
    let mut stream = flacenc::encode_with_fixed_block_size(&config, source, config.block_size)
        .map_err(|e| Error::Encode(format!("flac: {e}")))?;
    // flacenc records the short last block as the minimum block size; the format excludes the
    // last block, and readers (symphonia) treat min != max as variable blocking and fail. A
    // single-block stream declares its own length (at least 16, the format's minimum).
    let declared = if audio.frames() > config.block_size {
        config.block_size
    } else {
        audio.frames().max(16)
    };
    stream
        .stream_info_mut()
        .set_block_sizes(declared, declared)
        .map_err(|e| Error::Encode(format!("flac: {e}")))?;
    let mut sink = flacenc::bitsink::ByteSink::new();
    stream
        .write(&mut sink)
        .map_err(|e| Error::Encode(format!("flac write: {e}")))?;
    fs::write(path, sink.as_slice())?;
    Ok(())
}

/// MP3 at LAME's quality 7 ("fast, ok quality": no noise shaping; about 2.5× faster than
/// [`Format::Mp3`]'s quality 2), encoded in [`QUICK_PIECES`] pieces on as many threads (see
/// [`super::mp3`]): for generated tracks, where the answer's speed matters more than the last bit
/// of transparency. Everything else (length, Info tag, rates, channels) is as [`encode`] with
/// [`Format::Mp3`].
pub fn encode_mp3_quick(audio: &Audio, kbps: u32, path: &Path) -> Result<()> {
    check(audio)?;
    super::mp3::write(
        audio,
        path,
        kbps,
        mp3lame_encoder::Quality::Ok,
        QUICK_PIECES,
        &|_| {},
    )
}

/// Pieces of a quick MP3: a fixed number, not the machine's core count, so the same audio gives
/// the same bytes on every machine (a seeded generation's promise); 4 keeps 2–4 cores busy, and
/// each piece past the first costs 20 frames of extra encoding (0.5 s of audio).
const QUICK_PIECES: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::decode::decode;

    fn test_audio(rate: u32, channels: usize, frames: usize) -> Audio {
        Audio {
            sample_rate: rate,
            channels: (0..channels)
                .map(|c| {
                    (0..frames)
                        .map(|i| {
                            let t = i as f32 / rate as f32;
                            0.4 * (2.0 * std::f32::consts::PI * (330.0 + 110.0 * c as f32) * t)
                                .sin()
                        })
                        .collect()
                })
                .collect(),
        }
    }

    #[test]
    fn every_format_round_trips_to_the_sample() {
        let dir = tempfile::tempdir().unwrap();
        // An odd length that is no multiple of any block or frame size.
        for &(rate, ch, frames) in &[
            (44_100, 2, 44_100 + 777),
            (48_000, 1, 12_345),
            (22_050, 2, 5_000),
            (32_000, 1, 1_000),
        ] {
            let audio = test_audio(rate, ch, frames);
            for format in [
                Format::Wav16,
                Format::Wav24,
                Format::WavFloat,
                Format::Flac16,
                Format::Flac24,
                Format::Mp3 { kbps: 192 },
            ] {
                let path = dir.path().join(format!("t{rate}.{}", format.extension()));
                encode(&audio, format, &path).unwrap();
                let back = decode(&path).unwrap();
                assert_eq!(back.sample_rate, rate, "{format:?}");
                assert_eq!(back.channels.len(), ch, "{format:?}");
                assert_eq!(back.frames(), frames, "{format:?} {rate} Hz length");
                // Lossless formats match to their quantisation step; MP3 to a coarse tolerance
                // once its delay has been trimmed correctly (a misalignment would be large).
                let tol = match format {
                    Format::Wav16 | Format::Flac16 => 1.0 / 32768.0 + 1e-6,
                    Format::Wav24 | Format::Flac24 => 1.0 / 8_388_608.0 + 1e-6,
                    Format::WavFloat => 0.0,
                    Format::Mp3 { .. } => 0.2,
                };
                let lo = frames / 10;
                let hi = frames * 9 / 10;
                let err = (lo..hi)
                    .map(|i| (back.channels[0][i] - audio.channels[0][i]).abs())
                    .fold(0.0f32, f32::max);
                assert!(err <= tol, "{format:?} {rate}: max error {err}");
            }
        }
    }

    /// Above the encoder's 96 kHz, FLAC is written at 88.2 kHz (44.1 kHz family) or 96 kHz, the
    /// same length in seconds and the same tone; at or below it, at the input's rate.
    #[test]
    fn flac_above_96_khz_is_written_at_88_2_or_96() {
        assert_eq!(flac_rate(96_000), 96_000);
        assert_eq!(flac_rate(44_100), 44_100);
        let dir = tempfile::tempdir().unwrap();
        for (rate, written) in [(192_000, 96_000), (176_400, 88_200), (768_000, 96_000)] {
            let audio = test_audio(rate, 2, rate as usize / 2);
            for format in [Format::Flac16, Format::Flac24] {
                let path = dir.path().join(format!("t{rate}.flac"));
                encode(&audio, format, &path).unwrap();
                let back = decode(&path).unwrap();
                assert_eq!(back.sample_rate, written, "{rate} {format:?}");
                assert_eq!(back.frames(), written as usize / 2, "{rate} {format:?}");
                // The 330 Hz tone survives: compare with the same tone made at the new rate.
                let want = test_audio(written, 2, written as usize / 2);
                let (lo, hi) = (back.frames() / 10, back.frames() * 9 / 10);
                let err = (lo..hi)
                    .map(|i| (back.channels[0][i] - want.channels[0][i]).abs())
                    .fold(0.0f32, f32::max);
                assert!(err < 1e-3, "{rate} {format:?}: max error {err}");
            }
        }
    }

    #[test]
    fn format_names_parse() {
        assert_eq!(Format::parse("wav24", None), Some(Format::Wav24));
        assert_eq!(
            Format::parse("MP3", Some(128)),
            Some(Format::Mp3 { kbps: 128 })
        );
        assert_eq!(Format::parse("flac", None), Some(Format::Flac16));
        assert_eq!(Format::parse("ogg", None), None);
    }

    #[test]
    fn refuses_inconsistent_audio() {
        let dir = tempfile::tempdir().unwrap();
        let bad = Audio {
            sample_rate: 44_100,
            channels: vec![vec![0.0; 10], vec![0.0; 9]],
        };
        assert!(encode(&bad, Format::Wav16, &dir.path().join("x.wav")).is_err());
        let rate = Audio {
            sample_rate: 44_100,
            channels: vec![vec![0.0; 10]],
        };
        assert!(encode(&rate, Format::Mp3 { kbps: 100 }, &dir.path().join("x.mp3")).is_err());
    }
}
