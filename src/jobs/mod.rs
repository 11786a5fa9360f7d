//! Jobs and generations: the engine interfaces, the worker pool and crash recovery.

pub mod cancel;
pub mod engine;
pub mod generator;
pub mod janitor;

pub use engine::{Engine, EngineError, JobContext, JobKind, JobOutput, Resource};
pub use generator::{GenerationInput, Generator};
pub mod registry;
pub mod submit;
pub mod worker;
