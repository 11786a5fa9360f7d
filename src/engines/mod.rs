//! Pure compute behind the APIs, one folder per engine. Nothing here knows about HTTP or SQLite:
//! each engine implements `jobs::Engine` (async jobs) or `jobs::Generator` (generations).

pub mod musicgen;
pub mod transcribe;

use crate::config::Config;
use crate::jobs::registry::Registry;

/// The engines this build installs, given the configuration.
pub fn registry(_config: &Config) -> Registry {
    Registry::default()
}
