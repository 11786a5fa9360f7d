//! The engines installed in this server: at most one `Engine` per job endpoint, and the
//! generators (`procedural`, `musicgen-*`) with the default one. An endpoint without an engine
//! answers `501 engine_unavailable`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Engine, Generator, JobKind};

/// What the server can run; built once at start and shared read-only.
#[derive(Clone, Default)]
pub struct Registry {
    engines: BTreeMap<JobKind, Arc<dyn Engine>>,
    generators: Vec<Arc<dyn Generator>>,
    default_generator: Option<String>,
}

impl Registry {
    /// Installs `engine` for its endpoint (replacing any earlier one).
    pub fn add_engine(&mut self, engine: Arc<dyn Engine>) {
        self.engines.insert(engine.kind(), engine);
    }

    /// Installs a generator; the first one added is the default until `set_default_generator`.
    pub fn add_generator(&mut self, generator: Arc<dyn Generator>) {
        if self.default_generator.is_none() {
            self.default_generator = Some(generator.name().to_string());
        }
        self.generators.push(generator);
    }

    /// Chooses the generator used when a request names none.
    pub fn set_default_generator(&mut self, name: &str) -> Result<(), String> {
        if self.generator(name).is_none() {
            return Err(format!("generator {name} is not installed"));
        }
        self.default_generator = Some(name.to_string());
        Ok(())
    }

    /// The engine serving an endpoint, if installed.
    pub fn engine(&self, kind: JobKind) -> Option<&Arc<dyn Engine>> {
        self.engines.get(&kind)
    }

    /// A generator by name.
    pub fn generator(&self, name: &str) -> Option<&Arc<dyn Generator>> {
        self.generators.iter().find(|g| g.name() == name)
    }

    /// The default generator, if any is installed.
    pub fn default_generator(&self) -> Option<&Arc<dyn Generator>> {
        self.default_generator
            .as_deref()
            .and_then(|n| self.generator(n))
    }

    /// Names of installed engines and generators, for the start-up banner and the dashboard.
    pub fn describe(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .engines
            .values()
            .map(|e| (e.kind().endpoint().to_string(), e.name().to_string()))
            .collect();
        for g in &self.generators {
            out.push(("/v1/generations".to_string(), g.name().to_string()));
        }
        out
    }
}
