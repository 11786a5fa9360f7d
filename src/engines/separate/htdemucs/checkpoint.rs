//! demucs checkpoints without Python: read the `.th` file demucs writes (`torch.save` of
//! `serialize_model(...)`: a zip archive holding a pickle `{"klass", "args", "kwargs", "state",
//! "training_args"}` and the raw tensor storages), convert it once to `NAME.safetensors` (the state
//! dict, dtype kept) + `NAME.json` (the kwargs), and load those.
//!
//! The pickle is interpreted with `candle_core::pickle` (a stack machine that builds values, never
//! executes anything), so a checkpoint cannot run code. Official file names end in `-XXXXXXXX.th`,
//! the first 8 hex digits of the file's sha256; [`verify_checksum`] checks it.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::pickle::Object;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{Config, Error, HTDemucs};

/// What a demucs `.th` file holds, with the model's kwargs as JSON.
#[derive(Debug)]
pub struct Checkpoint {
    /// `(module, class)` of `package["klass"]`, e.g. `("demucs.htdemucs", "HTDemucs")`.
    pub class: (String, String),
    /// `package["kwargs"]` as JSON (fractions as `"n/d"` strings).
    pub kwargs: Map<String, Value>,
    /// `package["state"]`: state-dict name -> tensor, in the stored dtype (float16 for official files).
    pub state: HashMap<String, Tensor>,
}

/// The two files [`convert_th`] writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    pub config: PathBuf,
    pub weights: PathBuf,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Checkpoint(msg.into())
}

/// The top-level pickle of a torch zip checkpoint.
fn read_pickle(path: &Path) -> Result<Object, Error> {
    let file = std::fs::File::open(path)?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| bad(format!("{}: not a torch zip file ({e})", path.display())))?;
    let name = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .find(|n| n.ends_with("data.pkl"))
        .ok_or_else(|| bad("no data.pkl in the archive"))?;
    let mut bytes = Vec::new();
    zip.by_name(&name)
        .map_err(|e| bad(format!("reading {name}: {e}")))?
        .read_to_end(&mut bytes)?;
    let mut stack = candle_core::pickle::Stack::empty();
    stack
        .read_loop(&mut std::io::Cursor::new(bytes))
        .map_err(|e| bad(format!("unpickling: {e}")))?;
    stack
        .finalize()
        .map_err(|e| bad(format!("unpickling: {e}")))
}

/// A pickled `fractions.Fraction`: `(num, den)` ints (Python >= 3.11) or its `"n/d"` string.
fn fraction(args: &Object) -> Option<String> {
    let Object::Tuple(items) = args else {
        return None;
    };
    match items.as_slice() {
        [Object::Unicode(s)] => Some(if s.contains('/') {
            s.clone()
        } else {
            format!("{s}/1")
        }),
        [n, d] => {
            let int = |o: &Object| match o {
                Object::Int(v) => Some(*v as i64),
                Object::Long(v) => Some(*v),
                _ => None,
            };
            Some(format!("{}/{}", int(n)?, int(d)?))
        }
        _ => None,
    }
}

/// Plain pickled Python values (the kwargs) to JSON.
fn to_json(obj: &Object) -> Result<Value, Error> {
    Ok(match obj {
        Object::None => Value::Null,
        Object::Bool(b) => Value::Bool(*b),
        Object::Int(i) => Value::from(*i),
        Object::Long(i) => Value::from(*i),
        Object::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| bad(format!("non-finite number {f} in kwargs")))?,
        Object::Unicode(s) => Value::String(s.clone()),
        Object::Tuple(items) | Object::List(items) => {
            Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?)
        }
        Object::Dict(items) => {
            let mut map = Map::new();
            for (k, v) in items {
                let Object::Unicode(k) = k else {
                    return Err(bad(format!("non-string key {k:?} in kwargs")));
                };
                map.insert(k.clone(), to_json(v)?);
            }
            Value::Object(map)
        }
        Object::Reduce { callable, args } => match callable.as_ref() {
            Object::Class {
                module_name,
                class_name,
            } if module_name == "fractions" && class_name == "Fraction" => {
                Value::String(fraction(args).ok_or_else(|| bad("malformed Fraction"))?)
            }
            other => return Err(bad(format!("unsupported object {other:?} in kwargs"))),
        },
        other => return Err(bad(format!("unsupported value {other:?} in kwargs"))),
    })
}

/// Read a demucs `.th` checkpoint: class, kwargs and state (no code is executed).
pub fn read_th(path: &Path) -> Result<Checkpoint, Error> {
    let Object::Dict(items) = read_pickle(path)? else {
        return Err(bad(
            "top-level object is not a dict (not written by demucs' serialize_model)",
        ));
    };
    let get = |key: &str| {
        items
            .iter()
            .find(|(k, _)| matches!(k, Object::Unicode(s) if s == key))
            .map(|(_, v)| v)
    };
    let class = match get("klass") {
        Some(Object::Class {
            module_name,
            class_name,
        }) => (module_name.clone(), class_name.clone()),
        _ => return Err(bad("no model class (klass) in the checkpoint")),
    };
    match get("args") {
        Some(Object::Tuple(a)) | Some(Object::List(a)) if a.is_empty() => {}
        None => {}
        Some(_) => return Err(bad("positional constructor arguments are not supported")),
    }
    let kwargs = match get("kwargs").map(to_json).transpose()? {
        Some(Value::Object(m)) => m,
        _ => return Err(bad("no kwargs dict in the checkpoint")),
    };
    match get("state") {
        Some(Object::Dict(state)) => {
            if state
                .iter()
                .any(|(k, _)| matches!(k, Object::Unicode(s) if s == "__quantized"))
            {
                return Err(bad("quantized (diffq) checkpoints are not supported"));
            }
        }
        _ => return Err(bad("no state dict in the checkpoint")),
    }
    let state: HashMap<String, Tensor> =
        candle_core::pickle::read_all_with_key(path, Some("state"))
            .map_err(|e| bad(format!("reading tensors: {e}")))?
            .into_iter()
            .collect();
    if state.is_empty() {
        return Err(bad("the state dict holds no tensors"));
    }
    Ok(Checkpoint {
        class,
        kwargs,
        state,
    })
}

/// Check the `-XXXXXXXX` sha256 prefix that official checkpoint names carry. Returns `Ok(false)`
/// when the name carries none, an error when it does not match.
pub fn verify_checksum(path: &Path) -> Result<bool, Error> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let Some((_, sig)) = stem.rsplit_once('-') else {
        return Ok(false);
    };
    if sig.len() != 8 || !sig.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(false);
    }
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(path)?;
    std::io::copy(&mut file, &mut hasher)?;
    let digest = hex::encode(hasher.finalize());
    if digest.starts_with(&sig.to_ascii_lowercase()) {
        Ok(true)
    } else {
        Err(bad(format!(
            "{}: sha256 {}… does not match the name's {sig}",
            path.display(),
            &digest[..8]
        )))
    }
}

/// Convert a demucs HTDemucs `.th` into `out_dir/NAME.safetensors` + `out_dir/NAME.json`, after
/// checking the file name's checksum (if any) and that the config is one this port runs.
pub fn convert_th(th: &Path, out_dir: &Path, name: &str) -> Result<Converted, Error> {
    verify_checksum(th)?;
    let ckpt = read_th(th)?;
    if ckpt.class.1 != "HTDemucs" {
        return Err(bad(format!(
            "model class {}.{} is not HTDemucs",
            ckpt.class.0, ckpt.class.1
        )));
    }
    Config::from_json(Value::Object(ckpt.kwargs.clone()))?;
    std::fs::create_dir_all(out_dir)?;
    let converted = Converted {
        config: out_dir.join(format!("{name}.json")),
        weights: out_dir.join(format!("{name}.safetensors")),
    };
    candle_core::safetensors::save(&ckpt.state, &converted.weights)?;
    let json = serde_json::to_string_pretty(&Value::Object(ckpt.kwargs))
        .map_err(|e| Error::Internal(e.to_string()))?;
    std::fs::write(&converted.config, json + "\n")?;
    Ok(converted)
}

impl HTDemucs {
    /// Load a converted model: the kwargs JSON and the safetensors state dict (any float dtype,
    /// computed in f32).
    pub fn load(config: &Path, weights: &Path, device: &Device) -> Result<HTDemucs, Error> {
        let text = std::fs::read_to_string(config)?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", config.display())))?;
        let cfg = Config::from_json(value)?;
        // SAFETY: the file is memory-mapped read-only; soundcheck never writes to a model file
        // while it is loaded (conversion writes new files before they are ever opened).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, device)? };
        HTDemucs::new(cfg, vb)
    }

    /// Build the model straight from a demucs `.th` (no files written).
    pub fn from_th(th: &Path, device: &Device) -> Result<HTDemucs, Error> {
        let ckpt = read_th(th)?;
        let cfg = Config::from_json(Value::Object(ckpt.kwargs))?;
        let vb = VarBuilder::from_tensors(ckpt.state, DType::F32, device);
        HTDemucs::new(cfg, vb)
    }
}
