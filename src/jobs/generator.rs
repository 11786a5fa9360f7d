//! The `Generator` interface text-to-music engines implement (procedural composer, MusicGen).
//!
//! A generator turns a fully resolved request (every default already chosen) into audio samples;
//! the generation worker encodes the MP3, publishes it and fires the webhook.

use crate::audio::Audio;
use crate::jobs::engine::{EngineError, Resource};
use crate::views::GenerationParameters;

/// What a generator renders: the prompt's `tags` (genre, instruments, mood, texture) and the
/// resolved `parameters`, the same type the API reports and the store keeps (duration 1–600 s,
/// bpm 30–300, keyscale as the contract writes it — `"A minor"`, `"F# major"` —, beats per bar
/// 2–12, and the seed of every random choice: same input, same audio).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationInput {
    pub tags: String,
    pub parameters: GenerationParameters,
}

impl GenerationInput {
    pub fn new(tags: impl Into<String>, parameters: GenerationParameters) -> GenerationInput {
        GenerationInput {
            tags: tags.into(),
            parameters,
        }
    }
}

/// A text-to-music engine.
pub trait Generator: Send + Sync {
    /// Engine name (`"procedural"`, `"musicgen-small"` …), accepted in the request's `model` field.
    fn name(&self) -> &str;
    /// CPU engines may run in parallel; device engines run one at a time per device.
    fn resource(&self) -> Resource {
        Resource::Cpu
    }
    /// Renders the request. Blocking: called on a blocking thread. `progress` takes `0.0..=1.0`;
    /// `cancelled` turns true on shutdown (return `EngineError::Cancelled`).
    fn generate(
        &self,
        req: &GenerationInput,
        progress: &(dyn Fn(f32) + Sync),
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<Audio, EngineError>;
}
