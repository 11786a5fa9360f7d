//! Pure compute behind the APIs, one folder per engine. Nothing here knows about HTTP or SQLite:
//! each engine implements `jobs::Engine` (async jobs) or `jobs::Generator` (generations).

pub mod analyze;
pub mod compose;
pub mod master;
pub mod musicgen;
pub mod separate;
pub mod transcribe;

use std::path::Path;
use std::sync::Arc;

use crate::audio;
use crate::config::Config;
use crate::jobs::registry::Registry;
use crate::jobs::EngineError;

/// The engines this build installs, given the configuration.
pub fn registry(_config: &Config) -> Registry {
    let mut r = Registry::default();
    r.add_generator(Arc::new(compose::Procedural::new()));
    r.add_engine(Arc::new(analyze::AnalyzeEngine));
    r.add_engine(Arc::new(master::MasterEngine));
    r.add_engine(Arc::new(separate::DspSeparateEngine));
    r.add_engine(Arc::new(transcribe::job::TranscribeEngine::new(Arc::new(
        |p: &Path| decode_mono(p, 22_050),
    ))));
    r
}

/// Decodes a file to mono at `rate` Hz: what single-channel models listen to.
pub fn decode_mono(path: &Path, rate: u32) -> Result<Vec<f32>, EngineError> {
    let decoded = audio::decode(path)?;
    let mono = audio::Audio {
        sample_rate: decoded.sample_rate,
        channels: vec![decoded.mono()],
    };
    Ok(audio::resample(&mono, rate, audio::Quality::High)?
        .channels
        .remove(0))
}
