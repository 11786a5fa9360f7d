//! Pure compute behind the APIs, one folder per engine. Nothing here knows about HTTP or SQLite:
//! each engine implements `jobs::Engine` (async jobs) or `jobs::Generator` (generations).

pub mod analyze;
pub mod compose;
pub mod master;
pub mod musicgen;
pub mod random;
pub mod separate;
pub mod transcribe;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::audio;
use crate::config::Config;
use crate::jobs::registry::Registry;
use crate::jobs::EngineError;
use crate::models::{self, Family};

/// A job endpoint's parameters: one type per endpoint, used four ways. The submit handler reads
/// them from the form's text fields with [`from_fields`](JobParams::from_fields), the endpoint's
/// validation; they are stored with the job as JSON (`Serialize`, [`store`](JobParams::store));
/// the engine reads them back with [`stored`](JobParams::stored); and the OpenAPI document shows
/// them as the form's fields beside `audio` (`ToSchema`, through `api::docs::Upload`).
pub trait JobParams: Serialize + DeserializeOwned + ToSchema + Sized {
    /// Parses the multipart text fields of a submission (all but the `audio` file): absent or
    /// empty fields take their defaults, fields the endpoint does not take are ignored. `Err` is
    /// the message of a `400 invalid_request`.
    fn from_fields(fields: &BTreeMap<String, String>) -> Result<Self, String>;

    /// Checks what a type cannot say: ranges, and rules between fields.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }

    /// Validates the text fields into the JSON stored with the job (what `Engine::params`
    /// returns).
    fn store(fields: &BTreeMap<String, String>) -> Result<Value, String> {
        serde_json::to_value(Self::from_fields(fields)?).map_err(|e| e.to_string())
    }

    /// The stored parameters, read back and checked again by the engine that runs the job.
    fn stored(params: &Value) -> Result<Self, EngineError> {
        let bad = |e: String| EngineError::InvalidInput(format!("bad stored parameters: {e}"));
        let p: Self = serde_json::from_value(params.clone()).map_err(|e| bad(e.to_string()))?;
        p.validate().map_err(bad)?;
        Ok(p)
    }
}

/// The engines this build installs, given the configuration and the models under
/// `<data dir>/models/`. A `--generator` that is not installed falls back to `procedural` with a
/// warning here; `serve` refuses to start instead (see [`try_registry`]).
pub fn registry(config: &Config) -> Registry {
    match try_registry(config) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("{e:#}; using the procedural generator");
            let mut fallback = config.clone();
            fallback.generator = "procedural".into();
            try_registry(&fallback).expect("the procedural generator is always installed")
        }
    }
}

/// [`registry`], failing when `--generator` names a model that is not installed.
pub fn try_registry(config: &Config) -> anyhow::Result<Registry> {
    // The device is chosen (and a GPU's context created) now, at start-up, not by the first job
    // that asks on an async worker thread.
    choose_device(config.device)?;
    let mut r = Registry::default();
    r.add_generator(Arc::new(compose::Procedural::new()));
    r.add_engine(Arc::new(analyze::AnalyzeEngine));
    r.add_engine(Arc::new(master::MasterEngine));
    r.add_engine(Arc::new(separate::DspSeparateEngine));
    r.add_engine(Arc::new(transcribe::job::TranscribeEngine::new(Arc::new(
        |p: &Path| decode_mono(p, 22_050),
    ))));
    let installed = models::installed(&config.data_dir);
    let mut musicgens = Vec::new();
    for m in installed
        .iter()
        .filter(|m| m.manifest.family == Family::MusicGen)
    {
        let id = m.manifest.id.clone();
        r.add_generator(Arc::new(musicgen::LazyMusicGen::new(
            &id,
            &m.dir,
            default_device(),
        )));
        musicgens.push(id);
    }
    // One separator serves /v1/separate: the best installed HTDemucs, else the DSP one.
    for id in ["htdemucs_ft", "htdemucs", "htdemucs_6s"] {
        if let Some(m) = installed.iter().find(|m| m.manifest.id == id) {
            let engine = separate::HtdemucsSeparateEngine::load(&m.dir, id, &default_device())
                .map_err(|e| anyhow::anyhow!("model {id} in {}: {e}", m.dir.display()))?;
            r.add_engine(Arc::new(engine));
            break;
        }
    }
    let wanted = match config.generator.as_str() {
        "auto" => ["musicgen-small", "musicgen-medium"]
            .into_iter()
            .map(str::to_string)
            .chain(musicgens.iter().cloned())
            .find(|id| musicgens.contains(id))
            .unwrap_or_else(|| "procedural".into()),
        other => other.to_string(),
    };
    if r.set_default_generator(&wanted).is_err() {
        anyhow::bail!(
            "--generator {wanted}: not installed (installed: procedural{}); \
             run `soundcheck models pull {wanted}` or `soundcheck models list`",
            musicgens
                .iter()
                .map(|m| format!(", {m}"))
                .collect::<String>()
        );
    }
    Ok(r)
}

/// Lines for the start-up banner: what is missing and how to get it.
pub fn hints(registry: &Registry) -> Vec<String> {
    let mut out = Vec::new();
    if registry.generator("musicgen-small").is_none()
        && registry.generator("musicgen-medium").is_none()
    {
        out.push("generations use the procedural composer; for MusicGen: soundcheck models pull musicgen-small".into());
    }
    if registry
        .engine(crate::jobs::JobKind::Separate)
        .is_some_and(|e| e.name() == "dsp")
    {
        out.push(
            "separation uses the DSP separator; for HTDemucs: soundcheck models pull htdemucs"
                .into(),
        );
    }
    out
}

/// Which device models run on (`--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The first CUDA GPU when the build has `cuda` and one opens, else the CPU.
    Auto,
    Cpu,
    /// This CUDA GPU, or an error at start (never a silent fall back to the CPU).
    Cuda(usize),
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| format!("{s:?}: expected auto, cpu, cuda or cuda:N")),
        }
    }
}

static DEVICE: OnceLock<candle_core::Device> = OnceLock::new();

/// The device models run on: the one [`choose_device`] chose, else as [`DeviceChoice::Auto`].
/// Decided once per process; a `cuda` build that falls back to the CPU says so, and why, in the
/// log (engines then count as CPU work: see [`crate::jobs::Resource`]).
pub fn default_device() -> candle_core::Device {
    DEVICE.get_or_init(pick_device).clone()
}

/// Opens the device `choice` names for this process, once. A CUDA GPU that cannot be opened, or a
/// build without CUDA, is an error; asking for another device than the one already in use too.
pub fn choose_device(choice: DeviceChoice) -> anyhow::Result<candle_core::Device> {
    use candle_core::DeviceLocation;
    if let Some(device) = DEVICE.get() {
        let same = match (choice, device.location()) {
            (DeviceChoice::Auto, _) => true,
            (DeviceChoice::Cpu, DeviceLocation::Cpu) => true,
            (DeviceChoice::Cuda(n), DeviceLocation::Cuda { gpu_id }) => n == gpu_id,
            _ => false,
        };
        anyhow::ensure!(
            same,
            "--device {choice:?}: this process already runs models on {:?}",
            device.location()
        );
        return Ok(device.clone());
    }
    let device = match choice {
        DeviceChoice::Auto => pick_device(),
        DeviceChoice::Cpu => candle_core::Device::Cpu,
        DeviceChoice::Cuda(n) => open_cuda(n)?,
    };
    Ok(DEVICE.get_or_init(|| device).clone())
}

#[cfg(feature = "cuda")]
fn open_cuda(n: usize) -> anyhow::Result<candle_core::Device> {
    candle_core::Device::new_cuda(n)
        .map_err(|e| anyhow::anyhow!("--device cuda:{n}: the GPU could not be opened ({e})"))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(n: usize) -> anyhow::Result<candle_core::Device> {
    anyhow::bail!(
        "--device cuda:{n}: this binary was built without CUDA (build it with \
         `cargo build --release --features cuda`), or use --device cpu"
    )
}

/// `cpu` or `cuda:N`, for banners.
pub fn device_name(device: &candle_core::Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
        candle_core::DeviceLocation::Cpu => "cpu".into(),
    }
}

fn pick_device() -> candle_core::Device {
    #[cfg(feature = "cuda")]
    match candle_core::Device::new_cuda(0) {
        Ok(device) => {
            tracing::info!("models run on CUDA GPU 0");
            return device;
        }
        Err(e) => tracing::warn!(
            "this build has CUDA, but GPU 0 could not be opened ({e}); models run on the CPU"
        ),
    }
    candle_core::Device::Cpu
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_choices_parse_and_a_missing_gpu_is_an_error() {
        assert_eq!("auto".parse(), Ok(DeviceChoice::Auto));
        assert_eq!("cpu".parse(), Ok(DeviceChoice::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceChoice::Cuda(3)));
        assert!("gpu".parse::<DeviceChoice>().is_err());
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        // Without CUDA, the CPU is chosen (again, however often) and a GPU is refused.
        if !cfg!(feature = "cuda") {
            assert_eq!(
                device_name(&choose_device(DeviceChoice::Cpu).unwrap()),
                "cpu"
            );
            let err = choose_device(DeviceChoice::Cuda(7))
                .unwrap_err()
                .to_string();
            assert!(err.contains("--device"), "{err}");
        }
    }
}
