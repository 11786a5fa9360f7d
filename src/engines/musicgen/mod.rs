//! MusicGen text-to-music (`musicgen-small`, `musicgen-medium`) in candle, behind the `Generator` interface.
//!
//! Paper: Copet, Kreuk, Gat, Remez, Kant, Synnaeve, Adi, Défossez, "Simple and Controllable Music
//! Generation", NeurIPS 2023 (arXiv:2306.05284). Reference code: transformers v4.57
//! `models/musicgen/modeling_musicgen.py` (network, delay pattern, guidance), `models/encodec/` (codec), and
//! audiocraft `models/genmodel.py` (windowed generation past 30 s). Weights: facebook/musicgen-small and
//! -medium, CC-BY-NC 4.0, installed as a Hugging Face model directory (see [`loader`]).
//!
//! The path of a request: [`prompt_text`] writes tags, bpm and key the way MusicGen users do → T5 encodes it
//! ([`model`]) → [`generate`] samples codes window by window ([`decoder`] LM, [`delay`] pattern,
//! [`sampling`]: guidance 3.0, top-k 250, temperature 1, seeded) → [`encodec`] decodes them to 32 kHz audio.

pub mod config;
pub mod decoder;
pub mod delay;
pub mod encodec;
pub mod generate;
pub mod linear;
pub mod loader;
pub mod model;
pub mod sampling;

use std::path::{Path, PathBuf};

use candle_core::Device;
use candle_nn::VarBuilder;
use tokenizers::Tokenizer;

use crate::audio::Audio;
use crate::jobs::engine::{EngineError, Resource};
use crate::jobs::generator::{GenerationInput, Generator};

pub use config::{Config, GenerationConfig};
pub use generate::GenerateOptions;
pub use model::MusicgenModel;
pub use sampling::Sampling;

/// Share of the progress bar given to token generation; the EnCodec decode takes the rest.
const TOKENS_PROGRESS_SHARE: f32 = 0.95;

/// Why loading or generating failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model file could not be read (missing directory, file or shard): fix the installation.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `config.json` or the index is malformed or describes an unsupported model: not retryable.
    #[error("model configuration: {0}")]
    Config(String),
    /// `tokenizer.json` could not be loaded or the prompt not tokenized.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A tensor operation failed (missing weight, shape mismatch, device error): our side.
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
    /// The request cannot be generated as asked (e.g. zero duration): the caller's input.
    #[error("{0}")]
    InvalidRequest(String),
    /// The caller's cancel check turned true between two steps.
    #[error("cancelled")]
    Cancelled,
}

impl Error {
    /// An I/O failure on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<Error> for EngineError {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidRequest(m) => EngineError::InvalidInput(m),
            Error::Cancelled => EngineError::Cancelled,
            e @ (Error::Io { .. } | Error::Config(_) | Error::Tokenizer(_)) => {
                EngineError::Unavailable(e.to_string())
            }
            e @ Error::Model(_) => EngineError::Internal(e.to_string()),
        }
    }
}

/// The text MusicGen is conditioned on: the tags, then tempo and key as users write them
/// ("lofi chill, piano, 80 bpm, A minor").
pub fn prompt_text(req: &GenerationInput) -> String {
    let mut parts: Vec<String> = Vec::new();
    let tags = req.tags.split_whitespace().collect::<Vec<_>>().join(" ");
    let tags = tags.trim_matches(|c: char| c == ',' || c.is_whitespace());
    if !tags.is_empty() {
        parts.push(tags.to_string());
    }
    parts.push(format!("{} bpm", req.parameters.bpm));
    let key = req.parameters.keyscale.trim();
    if !key.is_empty() {
        parts.push(key.to_string());
    }
    parts.join(", ")
}

/// A loaded MusicGen checkpoint ready to serve generations; cheap to share (`Arc`) across threads, each
/// generation keeps its own caches.
pub struct MusicGen {
    name: String,
    model: MusicgenModel,
    tokenizer: Tokenizer,
    generation: GenerationConfig,
}

impl std::fmt::Debug for MusicGen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MusicGen")
            .field("name", &self.name)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl MusicGen {
    /// Loads a model directory in the published Hugging Face layout (see [`loader`]).
    pub fn load(dir: &Path, device: &Device) -> Result<Self, Error> {
        loader::load(dir, device)
    }

    /// Builds the generator from already-opened parts (the loader's last step; benches use random weights).
    pub fn from_parts(
        name: String,
        cfg: &Config,
        generation: GenerationConfig,
        tokenizer: Tokenizer,
        vb: VarBuilder,
    ) -> Result<Self, Error> {
        let model = MusicgenModel::new(cfg, vb)?;
        Ok(Self {
            name,
            model,
            tokenizer,
            generation,
        })
    }

    /// `musicgen-small` / `musicgen-medium` / `musicgen-large` for the published shapes, else
    /// `musicgen-<directory name>`.
    pub fn default_name(cfg: &Config, dir: &Path) -> String {
        let d = &cfg.decoder;
        match (d.hidden_size, d.num_hidden_layers) {
            (1024, 24) => "musicgen-small".into(),
            (1536, 48) => "musicgen-medium".into(),
            (2048, 48) => "musicgen-large".into(),
            _ => {
                let base = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "custom".into());
                if base.starts_with("musicgen") {
                    base
                } else {
                    format!("musicgen-{base}")
                }
            }
        }
    }

    /// Renames the engine (e.g. when installed under another id).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn model(&self) -> &MusicgenModel {
        &self.model
    }

    pub fn generation_config(&self) -> &GenerationConfig {
        &self.generation
    }

    /// Output sample rate (EnCodec's: 32 kHz).
    pub fn sample_rate(&self) -> u32 {
        self.model.config().audio_encoder.sampling_rate
    }

    /// Code frames per second (50).
    pub fn frame_rate(&self) -> usize {
        self.model.config().audio_encoder.frame_rate()
    }

    /// Token ids of a prompt, with the `</s>` the T5 tokenizer appends.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, Error> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The checkpoint's sampling settings for `seconds` of audio and a seed.
    pub fn options(&self, seconds: f64, seed: u64) -> GenerateOptions {
        let rate = self.frame_rate();
        let frames = (seconds.max(0.0) * rate as f64).round() as usize;
        let g = &self.generation;
        let sampling = if g.do_sample {
            Sampling::TopK {
                top_k: g.top_k,
                temperature: g.temperature,
            }
        } else {
            Sampling::Greedy
        };
        GenerateOptions {
            frames,
            guidance_scale: g.guidance_scale,
            sampling,
            seed,
            max_window_frames: 30 * rate,
            stride_frames: 18 * rate,
            start_id: g.decoder_start_token_id,
            pad_id: g.pad_token_id,
        }
    }

    /// Codes for a text prompt (`[codebooks][frames]`); `progress` gets `0.0..=1.0` of the token phase.
    pub fn generate_codes(
        &self,
        text: &str,
        opts: &GenerateOptions,
        progress: &dyn Fn(f32),
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Vec<Vec<u32>>, Error> {
        if opts.frames == 0 {
            return Err(Error::InvalidRequest("duration must be positive".into()));
        }
        let ids = self.tokenize(text)?;
        let states = self.model.encode_text(&ids)?;
        let codebooks = self.model.config().decoder.num_codebooks;
        let total = generate::total_steps(opts, codebooks).max(1);
        generate::generate_codes(
            &self.model,
            &states,
            opts,
            &mut |done| progress(done as f32 / total as f32),
            cancelled,
        )
    }

    /// Text → mono audio at [`Self::sample_rate`].
    pub fn generate_audio(
        &self,
        text: &str,
        opts: &GenerateOptions,
        progress: &dyn Fn(f32),
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Audio, Error> {
        let codes = self.generate_codes(
            text,
            opts,
            &|p| progress(p * TOKENS_PROGRESS_SHARE),
            cancelled,
        )?;
        if cancelled() {
            return Err(Error::Cancelled);
        }
        let samples = self.model.decode_audio(&codes)?;
        progress(1.0);
        Ok(Audio {
            sample_rate: self.sample_rate(),
            channels: vec![samples],
        })
    }
}

impl Generator for MusicGen {
    fn name(&self) -> &str {
        &self.name
    }

    fn resource(&self) -> Resource {
        if self.model.device().is_cpu() {
            Resource::Cpu
        } else {
            Resource::Device
        }
    }

    fn generate(
        &self,
        req: &GenerationInput,
        progress: &(dyn Fn(f32) + Sync),
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<Audio, EngineError> {
        let p = &req.parameters;
        if p.duration == 0 {
            return Err(EngineError::InvalidInput(
                "duration must be positive".into(),
            ));
        }
        let text = prompt_text(req);
        let opts = self.options(p.duration as f64, p.seed);
        tracing::info!(engine = %self.name, prompt = %text, frames = opts.frames, "musicgen generation");
        Ok(self.generate_audio(&text, &opts, progress, cancelled)?)
    }
}

/// An installed MusicGen that loads its weights on first use, so `serve` starts at once and a
/// model nobody asks for costs no memory. Its name is the install id (`musicgen-small` …).
pub struct LazyMusicGen {
    name: String,
    dir: PathBuf,
    device: Device,
    loaded: std::sync::OnceLock<Result<MusicGen, String>>,
}

impl LazyMusicGen {
    pub fn new(name: &str, dir: &Path, device: Device) -> Self {
        LazyMusicGen {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            device,
            loaded: std::sync::OnceLock::new(),
        }
    }

    /// The model, loading it on the first call (a failure is remembered and reported each time).
    pub fn get(&self) -> Result<&MusicGen, EngineError> {
        let loaded = self.loaded.get_or_init(|| {
            tracing::info!(model = %self.name, dir = %self.dir.display(), "loading MusicGen weights");
            MusicGen::load(&self.dir, &self.device)
                .map(|m| m.with_name(self.name.clone()))
                .map_err(|e| format!("model {} could not be loaded: {e}", self.name))
        });
        loaded
            .as_ref()
            .map_err(|e| EngineError::Internal(e.clone()))
    }
}

impl Generator for LazyMusicGen {
    fn name(&self) -> &str {
        &self.name
    }

    fn resource(&self) -> Resource {
        if self.device.is_cpu() {
            Resource::Cpu
        } else {
            Resource::Device
        }
    }

    fn generate(
        &self,
        req: &GenerationInput,
        progress: &(dyn Fn(f32) + Sync),
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<Audio, EngineError> {
        self.get()?.generate(req, progress, cancelled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::GenerationParameters;

    fn req(tags: &str, bpm: u32, key: &str) -> GenerationInput {
        GenerationInput::new(
            tags,
            GenerationParameters {
                duration: 10,
                bpm,
                keyscale: key.into(),
                timesignature: 4,
                seed: 1,
            },
        )
    }

    #[test]
    fn prompt_puts_bpm_and_key_after_the_tags() {
        assert_eq!(
            prompt_text(&req("lofi chill, piano", 80, "A minor")),
            "lofi chill, piano, 80 bpm, A minor"
        );
        assert_eq!(
            prompt_text(&req("  techno,  ", 130, "F# major")),
            "techno, 130 bpm, F# major"
        );
        assert_eq!(prompt_text(&req("", 90, "")), "90 bpm");
    }

    #[test]
    fn published_shapes_get_published_names() {
        let dir = Path::new("/models/whatever");
        assert_eq!(
            MusicGen::default_name(&Config::musicgen_small(), dir),
            "musicgen-small"
        );
        assert_eq!(
            MusicGen::default_name(&Config::musicgen_medium(), dir),
            "musicgen-medium"
        );
        let mut tiny = Config::musicgen_small();
        tiny.decoder.hidden_size = 32;
        assert_eq!(MusicGen::default_name(&tiny, dir), "musicgen-whatever");
    }

    #[test]
    fn errors_map_to_engine_errors() {
        assert!(matches!(
            EngineError::from(Error::Cancelled),
            EngineError::Cancelled
        ));
        assert!(matches!(
            EngineError::from(Error::InvalidRequest("x".into())),
            EngineError::InvalidInput(_)
        ));
        assert!(matches!(
            EngineError::from(Error::Config("x".into())),
            EngineError::Unavailable(_)
        ));
    }
}
