//! Stem separation behind `/v1/separate`: split a mix into sources (vocals, drums, bass, other, or
//! vocals + accompaniment).
//!
//! - [`dsp`]: the classical separator, always available, reported as `"model": "dsp"`
//!   ([`DspSeparateEngine`]);
//! - [`htdemucs`]: Demucs v4 "HTDemucs" ported to candle, loaded from an installed bag of converted
//!   official checkpoints ([`HtdemucsSeparateEngine`], reported as `"model": "<bag id>"`).
//!
//! Both engines take the same job fields ([`SeparateParams`]) and write their stems the same way.

pub mod dsp;
pub mod htdemucs;

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use super::JobParams;
use crate::audio::{self, Audio, Format};
use crate::jobs::engine::{
    file_ref, Engine, EngineError, JobContext, JobKind, JobOutput, Resource,
};
use htdemucs::{BagOfModels, SeparateOptions};

/// WAV encoding of the stems; default `wav16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WavFormat {
    /// 16-bit PCM.
    #[default]
    Wav16,
    /// 24-bit PCM.
    Wav24,
    /// 32-bit float.
    Float,
}

impl WavFormat {
    /// A name [`Format::parse`] reads as a WAV format (aliases and any case, as the API always
    /// took them).
    pub fn parse(name: &str) -> Option<WavFormat> {
        match Format::parse(name, None)? {
            Format::Wav16 => Some(WavFormat::Wav16),
            Format::Wav24 => Some(WavFormat::Wav24),
            Format::WavFloat => Some(WavFormat::Float),
            _ => None,
        }
    }

    /// The encoder's format.
    pub fn format(self) -> Format {
        match self {
            WavFormat::Wav16 => Format::Wav16,
            WavFormat::Wav24 => Format::Wav24,
            WavFormat::Float => Format::WavFloat,
        }
    }
}

impl<'de> Deserialize<'de> for WavFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        WavFormat::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown WAV format {name:?}")))
    }
}

/// The fields of `POST /v1/separate` beside the `audio` file; each may be left out.
// The type every use of separation parameters shares (see `JobParams`), the same for every
// separator.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct SeparateParams {
    /// `2` (`vocals`, `accompaniment`) or `4` (`vocals`, `drums`, `bass`, `other`); default 4.
    #[schema(minimum = 2, maximum = 4, multiple_of = 2)]
    pub stems: u8,
    #[schema(inline)]
    pub format: WavFormat,
}

impl Default for SeparateParams {
    fn default() -> Self {
        SeparateParams {
            stems: 4,
            format: WavFormat::Wav16,
        }
    }
}

impl JobParams for SeparateParams {
    fn from_fields(fields: &BTreeMap<String, String>) -> Result<Self, String> {
        let stems = match fields.get("stems").map(|s| s.trim()) {
            None | Some("") | Some("4") => 4,
            Some("2") => 2,
            Some(other) => return Err(format!("stems must be 2 or 4, not {other:?}")),
        };
        let name = fields.get("format").map_or("wav16", |s| s.trim());
        let format = WavFormat::parse(name)
            .ok_or_else(|| format!("format must be wav16, wav24 or float, not {name:?}"))?;
        Ok(SeparateParams { stems, format })
    }

    fn validate(&self) -> Result<(), String> {
        match self.stems {
            2 | 4 => Ok(()),
            n => Err(format!("stems must be 2 or 4, not {n}")),
        }
    }
}

/// Writes each stem as `<name>.wav` in `out_dir` and returns `{name: {"$file": "<name>.wav"}}`.
fn write_stems<'a>(
    stems: impl IntoIterator<Item = (&'a str, &'a Audio)>,
    format: Format,
    out_dir: &Path,
) -> Result<Map<String, Value>, EngineError> {
    let mut urls = Map::new();
    for (name, stem) in stems {
        let file = format!("{name}.wav");
        audio::encode(stem, format, &out_dir.join(&file))?;
        urls.insert(name.to_string(), file_ref(&file));
    }
    Ok(urls)
}

/// `/v1/separate` with the DSP separator.
pub struct DspSeparateEngine;

impl Engine for DspSeparateEngine {
    fn kind(&self) -> JobKind {
        JobKind::Separate
    }

    fn name(&self) -> &str {
        "dsp"
    }

    /// See [`SeparateParams`].
    fn params(&self, fields: &BTreeMap<String, String>) -> Result<Value, String> {
        SeparateParams::store(fields)
    }

    fn run(&self, ctx: &JobContext<'_>) -> Result<JobOutput, EngineError> {
        let params = SeparateParams::stored(ctx.params)?;
        let (two, format) = (params.stems == 2, params.format.format());
        let input = audio::decode_with_progress(ctx.input, &|p| (ctx.progress)(0.1 * p))?;
        let stems = dsp::separate(
            &input,
            two,
            &|p| (ctx.progress)(0.1 + 0.8 * p),
            ctx.cancelled,
        )
        .map_err(|e| match e {
            dsp::Error::Cancelled => EngineError::Cancelled,
            dsp::Error::Empty => EngineError::InvalidInput("the audio has no samples".into()),
        })?;
        let urls = write_stems(stems.iter().map(|(n, a)| (*n, a)), format, ctx.out_dir)?;
        (ctx.progress)(1.0);
        Ok(JobOutput {
            result: json!({
                "stems": urls,
                "model": "dsp",
                "format": params.format,
                "sample_rate": input.sample_rate,
                "duration": input.duration_secs(),
            }),
        })
    }
}

/// `/v1/separate` with an installed HTDemucs bag (`htdemucs`, `htdemucs_ft`, `htdemucs_6s`; see
/// [`htdemucs::install`]), reported as `"model": "<id>"`.
///
/// The upload is read as demucs' command line reads it: the model's channel count (mono duplicated
/// to stereo, a multichannel file's first two channels, as `demucs.audio.convert_audio_channels`),
/// resampled to the model's rate (44.1 kHz for the official models) and separated with demucs'
/// defaults (one random shift, seeded so a job is reproducible; 25% overlap). Stems come back at
/// the model's rate, reported as `sample_rate`.
///
/// Four stems are `drums`, `bass`, `other`, `vocals`. A model with more sources (`htdemucs_6s`:
/// `guitar`, `piano`) has them summed into `other`, so the four stems still add up to the model's
/// whole estimate ([`htdemucs::four_stems`]). Two stems are `vocals` and `accompaniment`, the sum
/// of every other source ([`htdemucs::two_stems`]).
///
/// The stems are written segment by segment as they become final
/// ([`htdemucs::BagOfModels::separate_into`]): a run holds the decoded track and one segment's
/// work, whatever the track's length (a 10-minute stereo track stays well under 2 GB).
pub struct HtdemucsSeparateEngine {
    /// The installed bag's id, reported as the result's `model`.
    id: String,
    bag: BagOfModels,
    /// demucs' command-line defaults, fixed so the same upload always gives the same stems, with
    /// two segments computed at once where there are two cores (about 9% faster on two cores
    /// than one at a time, for one more segment's activations, ~0.4 GB; same stems).
    options: SeparateOptions,
}

impl HtdemucsSeparateEngine {
    /// Load the bag installed in `dir` (`<data_dir>/models/<id>`) onto `device`.
    pub fn load(dir: &Path, id: &str, device: &Device) -> Result<Self, htdemucs::Error> {
        Self::from_bag(id, htdemucs::install::load_bag(dir, device)?)
    }

    /// Serve an already-loaded bag as `id`. Its sources must include `drums`, `bass`, `other` and
    /// `vocals`, the contract's four stems.
    pub fn from_bag(id: &str, bag: BagOfModels) -> Result<Self, htdemucs::Error> {
        for needed in htdemucs::FOUR_STEMS {
            if !bag.sources().iter().any(|s| s == needed) {
                return Err(htdemucs::Error::Config(format!(
                    "the model has no {needed:?} source (it has {:?})",
                    bag.sources()
                )));
            }
        }
        Ok(HtdemucsSeparateEngine {
            id: id.to_string(),
            bag,
            options: SeparateOptions {
                parallel: candle_core::utils::get_num_threads().clamp(1, 2),
                ..SeparateOptions::default()
            },
        })
    }

    /// The loaded models.
    pub fn bag(&self) -> &BagOfModels {
        &self.bag
    }

    /// The options every run separates with.
    pub fn options(&self) -> &SeparateOptions {
        &self.options
    }

    /// The rate the models run at and the stems are written at.
    pub fn sample_rate(&self) -> u32 {
        self.bag.models()[0].config().samplerate
    }

    /// The upload's channels as the model takes them (`demucs.audio.convert_audio_channels`).
    fn model_channels(&self, mut input: Audio) -> Result<Audio, EngineError> {
        let want = self.bag.models()[0].config().audio_channels;
        match input.channels.len() {
            have if have == want => {}
            _ if want == 1 => input.channels = vec![input.mono()],
            1 => input.channels = vec![input.channels[0].clone(); want],
            have if have > want => input.channels.truncate(want),
            have => {
                return Err(EngineError::InvalidInput(format!(
                    "the model takes {want} channels or mono, the audio has {have}"
                )))
            }
        }
        Ok(input)
    }
}

impl Engine for HtdemucsSeparateEngine {
    fn kind(&self) -> JobKind {
        JobKind::Separate
    }

    fn name(&self) -> &str {
        &self.id
    }

    /// One separation at a time per device: a run holds the models' activations (and the track;
    /// the stems go to disk as they are made).
    fn resource(&self) -> Resource {
        Resource::Device
    }

    /// See [`SeparateParams`].
    fn params(&self, fields: &BTreeMap<String, String>) -> Result<Value, String> {
        SeparateParams::store(fields)
    }

    fn run(&self, ctx: &JobContext<'_>) -> Result<JobOutput, EngineError> {
        let params = SeparateParams::stored(ctx.params)?;
        let (two, format) = (params.stems == 2, params.format.format());
        let input = audio::decode_with_progress(ctx.input, &|p| (ctx.progress)(0.05 * p))?;
        if input.frames() == 0 || input.channels.is_empty() {
            return Err(EngineError::InvalidInput("the audio has no samples".into()));
        }
        let rate = self.sample_rate();
        let input = self.model_channels(input)?;
        // Moved, not copied, when already at the model's rate: a long track is held once.
        let mix = if input.sample_rate == rate {
            input
        } else {
            audio::resample(&input, rate, audio::Quality::High)?
        };
        let duration = mix.duration_secs();
        if (ctx.cancelled)() {
            return Err(EngineError::Cancelled);
        }
        (ctx.progress)(0.1);
        // Stems are written as the separation makes them final, never held whole.
        let names: Vec<&str> = if two {
            vec!["vocals", "accompaniment"]
        } else {
            htdemucs::FOUR_STEMS.to_vec()
        };
        let mut writers = names
            .iter()
            .map(|name| {
                let path = ctx.out_dir.join(format!("{name}.wav"));
                audio::WavWriter::create(&path, format, mix.channels.len(), rate)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut write_error = None;
        let separated = self.bag.separate_into(
            mix.channels,
            &self.options,
            &|p| (ctx.progress)(0.1 + 0.85 * p),
            ctx.cancelled,
            &mut |block| {
                let block = if two {
                    htdemucs::two_stems(block, "vocals")?
                } else {
                    htdemucs::four_stems(block)?
                };
                for ((_, channels), w) in block.iter().zip(&mut writers) {
                    if let Err(e) = w.write(channels) {
                        write_error = Some(e);
                        return Err(htdemucs::Error::Internal("writing a stem".into()));
                    }
                }
                Ok(())
            },
        );
        if let Some(e) = write_error {
            return Err(e.into());
        }
        separated?;
        let mut urls = Map::new();
        for (name, w) in names.iter().zip(writers) {
            w.finish()?;
            urls.insert(name.to_string(), file_ref(&format!("{name}.wav")));
        }
        (ctx.progress)(1.0);
        Ok(JobOutput {
            result: json!({
                "stems": urls,
                "model": self.id,
                "format": params.format,
                "sample_rate": rate,
                "duration": duration,
            }),
        })
    }
}
