//! The `Generator` interface text-to-music engines implement (procedural composer, MusicGen).
//!
//! A generator turns a fully resolved request (every default already chosen) into audio samples;
//! the generation worker encodes the MP3, publishes it and fires the webhook.

use crate::audio::Audio;
use crate::jobs::engine::{EngineError, Resource};

/// A generation request with every parameter resolved, exactly as reported in `parameters`.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    /// The `tags` text: genre, instruments, mood, texture.
    pub tags: String,
    /// Requested length in seconds (1–600).
    pub duration: u32,
    /// Tempo in beats per minute (30–300).
    pub bpm: u32,
    /// Key and mode as the contract writes it: `"A minor"`, `"F# major"`, `"Bb minor"`.
    pub keyscale: String,
    /// Beats per bar (2–12).
    pub timesignature: u32,
    /// Seed for every random choice (0–2^32-1): same request and seed, same audio.
    pub seed: u64,
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
        req: &GenerationRequest,
        progress: &(dyn Fn(f32) + Sync),
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<Audio, EngineError>;
}
