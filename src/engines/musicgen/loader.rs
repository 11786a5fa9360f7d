//! Reads a MusicGen model directory in the published Hugging Face layout — `config.json`,
//! `generation_config.json` (optional), `model.safetensors` or sharded `model-0000x-of-0000y.safetensors` with
//! `model.safetensors.index.json`, and `tokenizer.json` — into a [`MusicGen`]. The only file access of the
//! engine; everything else works on the `VarBuilder` and the parsed configuration.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use tokenizers::Tokenizer;

use super::config::{Config, GenerationConfig};
use super::{Error, MusicGen};

/// The files a model directory must (or may) hold.
pub const CONFIG_FILE: &str = "config.json";
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const WEIGHTS_INDEX_FILE: &str = "model.safetensors.index.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// Parses `config.json`.
pub fn read_config(dir: &Path) -> Result<Config, Error> {
    let path = dir.join(CONFIG_FILE);
    let cfg: Config = serde_json::from_str(&read(&path)?)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    cfg.validate()
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    Ok(cfg)
}

/// Parses `generation_config.json`, or the published defaults when the file is absent.
pub fn read_generation_config(dir: &Path, cfg: &Config) -> Result<GenerationConfig, Error> {
    let path = dir.join(GENERATION_CONFIG_FILE);
    if !path.exists() {
        return Ok(GenerationConfig::published(cfg.decoder.pad_token_id));
    }
    serde_json::from_str(&read(&path)?)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

/// The safetensors files holding the weights: the single file, or every shard named in the index.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let single = dir.join(WEIGHTS_FILE);
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = dir.join(WEIGHTS_INDEX_FILE);
    if !index.exists() {
        return Err(Error::Config(format!(
            "{}: neither {WEIGHTS_FILE} nor {WEIGHTS_INDEX_FILE}",
            dir.display()
        )));
    }
    let v: serde_json::Value = serde_json::from_str(&read(&index)?)
        .map_err(|e| Error::Config(format!("{}: {e}", index.display())))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::Config(format!("{}: no weight_map", index.display())))?;
    let names: BTreeSet<&str> = map.values().filter_map(|f| f.as_str()).collect();
    let mut files = Vec::with_capacity(names.len());
    for name in names {
        // shard names are plain file names; refuse anything that would leave the directory
        if name.contains('/') || name.contains('\\') || name.contains("..") {
            return Err(Error::Config(format!(
                "{}: bad shard name {name:?}",
                index.display()
            )));
        }
        let p = dir.join(name);
        if !p.exists() {
            return Err(Error::io(
                p,
                std::io::Error::new(std::io::ErrorKind::NotFound, "shard missing"),
            ));
        }
        files.push(p);
    }
    if files.is_empty() {
        return Err(Error::Config(format!(
            "{}: empty weight_map",
            index.display()
        )));
    }
    Ok(files)
}

/// Loads `tokenizer.json`.
pub fn read_tokenizer(dir: &Path) -> Result<Tokenizer, Error> {
    let path = dir.join(TOKENIZER_FILE);
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer missing"),
        ));
    }
    Tokenizer::from_file(&path).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))
}

/// A model directory → a ready generator named after the checkpoint's size.
pub fn load(dir: &Path, device: &Device) -> Result<MusicGen, Error> {
    let cfg = read_config(dir)?;
    let gen_cfg = read_generation_config(dir, &cfg)?;
    let tokenizer = read_tokenizer(dir)?;
    let files = weight_files(dir)?;
    // SAFETY: the files are memory-mapped read-only; like every safetensors loader we assume nobody
    // truncates them while the model is being built (tensors are copied out of the mapping).
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, device) }?;
    let name = MusicGen::default_name(&cfg, dir);
    MusicGen::from_parts(name, &cfg, gen_cfg, tokenizer, vb)
}

/// A `VarBuilder` of random weights for MusicGen's published key names (weight-norm as
/// `weight_g`, T5's `shared` embedding): see [`crate::engines::random`].
pub use crate::engines::random::random_weights;
