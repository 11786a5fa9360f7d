//! An installed HTDemucs model: the directory `<data_dir>/models/<id>/` that `soundcheck models
//! pull/import` creates and the `/v1/separate` engine loads, the official bags it can be made from,
//! and [`install_th`], which makes one from demucs `.th` files.
//!
//! Layout, demucs' own `remote/<id>.yaml` + `<sig>-<checksum>.th` files in converted form:
//! ```text
//! <id>/bag.json            {"models": ["955717e8", …], "weights": null | [[f32; sources]; models],
//!                           "segment": null | seconds}
//! <id>/<name>.json         each model's constructor kwargs (checkpoint::convert_th)
//! <id>/<name>.safetensors  each model's state dict, dtype as stored (float16 for official files)
//! ```
//! `bag.json` is written last and the directory is renamed into place whole, so a directory that
//! has a `bag.json` is complete.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::apply::check_weights;
use super::checkpoint::{convert_th, verify_checksum};
use super::{BagOfModels, Error, HTDemucs};

/// The file naming the models of an installed bag and their weights.
pub const BAG_FILE: &str = "bag.json";

/// `bag.json`: which models an installed directory holds and how their estimates combine (demucs'
/// `remote/<id>.yaml`, with names that are files beside it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bag {
    /// Model names: `<name>.json` + `<name>.safetensors` beside `bag.json`. Official models are
    /// named by their 8-hex signature, as in demucs' yaml files.
    pub models: Vec<String>,
    /// `weights[model][source]`, the per-source weights of each model's estimate; `None` averages
    /// the models equally (demucs' default).
    #[serde(default)]
    pub weights: Option<Vec<Vec<f32>>>,
    /// demucs' bag `segment` override in seconds, kept for fidelity with the yaml. demucs applies
    /// it only to non-transformer models, so for HTDemucs it changes nothing, here as there.
    #[serde(default)]
    pub segment: Option<f64>,
}

/// An official pretrained bag as demucs publishes it: what `soundcheck models pull <id>` downloads
/// (from `<BUCKET>/<path>/<file>`, or the same path under a mirror) and installs with
/// [`install_th`]`(files, weights, segment, …)`.
///
/// Source: facebookresearch/demucs at e976d93 (2023-11-16), `demucs/remote/htdemucs.yaml`,
/// `htdemucs_ft.yaml`, `htdemucs_6s.yaml` (model signatures and weights; none sets a segment),
/// `demucs/remote/files.txt` (the file names, under `root: hybrid_transformer/`) and
/// `demucs/pretrained.py` (`ROOT_URL = "https://dl.fbaipublicfiles.com/demucs/"`). demucs is
/// released under the MIT license (its README).
#[derive(Debug, Clone, PartialEq)]
pub struct OfficialBag {
    /// The installed directory's name and the engine's `name()`.
    pub id: &'static str,
    /// One line for a catalog listing.
    pub description: &'static str,
    /// The files' folder under [`BUCKET`] (or a mirror), no leading or trailing `/`.
    pub path: &'static str,
    /// `<sig>-<sha256 prefix>.th`, in the bag's model order.
    pub files: &'static [&'static str],
    /// `weights[model][source]` as in the yaml, or `None` for equal weights.
    pub weights: Option<Vec<Vec<f32>>>,
    /// The yaml's `segment`, seconds (none of the official HTDemucs bags sets one).
    pub segment: Option<f64>,
}

impl OfficialBag {
    /// The download URL of each file at [`BUCKET`], in `files` order.
    pub fn urls(&self) -> Vec<String> {
        self.files
            .iter()
            .map(|f| format!("{BUCKET}/{}/{f}", self.path))
            .collect()
    }
}

/// Where demucs' `pretrained.py` downloads from (its `ROOT_URL` less the `demucs/` folder).
pub const BUCKET: &str = "https://dl.fbaipublicfiles.com";

/// The official HTDemucs bag ids, in catalog order.
pub const OFFICIAL_IDS: [&str; 3] = ["htdemucs", "htdemucs_ft", "htdemucs_6s"];

/// The official bag named `id` (one of [`OFFICIAL_IDS`]).
pub fn official(id: &str) -> Option<OfficialBag> {
    const PATH: &str = "demucs/hybrid_transformer";
    let bag = match id {
        "htdemucs" => OfficialBag {
            id: "htdemucs",
            description: "HTDemucs (Demucs v4): drums, bass, other, vocals; one model",
            path: PATH,
            files: &["955717e8-8726e21a.th"],
            weights: None,
            segment: None,
        },
        "htdemucs_ft" => OfficialBag {
            id: "htdemucs_ft",
            description: "HTDemucs fine-tuned: four models, each serving one of drums, bass, \
                          other, vocals (4x slower, slightly better)",
            path: PATH,
            files: &[
                "f7e0c4bc-ba3fe64a.th",
                "d12395a8-e57c48e6.th",
                "92cfc3b6-ef3bcb9c.th",
                "04573f0d-f3cf25b2.th",
            ],
            // Model i serves source i only (identity), in the sources' order drums, bass, other,
            // vocals.
            weights: Some(
                (0..4)
                    .map(|i| (0..4).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
                    .collect(),
            ),
            segment: None,
        },
        "htdemucs_6s" => OfficialBag {
            id: "htdemucs_6s",
            description: "HTDemucs, experimental six sources (adds guitar and piano, folded into \
                          other for four stems)",
            path: PATH,
            files: &["5c90dfd2-34c22ccb.th"],
            weights: None,
            segment: None,
        },
        _ => return None,
    };
    Some(bag)
}

/// The model name of a `.th` file, as demucs' `LocalRepo` reads it: the stem up to its first `-`
/// (the signature; the rest is the checksum), or the whole stem when it has none.
fn model_name(th: &Path) -> Result<String, Error> {
    let stem = th
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| Error::Config(format!("{}: not a usable file name", th.display())))?;
    let name = stem.split_once('-').map_or(stem, |(sig, _)| sig);
    check_name(name)?;
    Ok(name.to_string())
}

/// A model name must be a plain file stem that cannot escape the directory or shadow `bag.json`.
fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name != "bag"
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!("{name:?} is not a valid model name")))
    }
}

/// An I/O error that names the path it happened on.
fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        ))
    }
}

/// A sibling of `target` that no other install uses: `.<name>.<what>-<pid>-<n>`.
fn sibling(target: &Path, what: &str) -> Result<PathBuf, Error> {
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Config(format!("{}: not a directory name", target.display())))?;
    let parent = target.parent().unwrap_or(Path::new("."));
    let pid = std::process::id();
    (0..1000)
        .map(|n| parent.join(format!(".{name}.{what}-{pid}-{n}")))
        .find(|p| !p.exists())
        .ok_or_else(|| Error::Internal(format!("no free {what} directory beside {name}")))
}

/// A directory being filled; removed on drop unless [`Staging::commit`] moved it into place.
struct Staging {
    path: PathBuf,
    done: bool,
}

impl Staging {
    fn new(target: &Path) -> Result<Self, Error> {
        let path = sibling(target, "installing")?;
        std::fs::create_dir(&path).map_err(io_at(&path))?;
        Ok(Staging { path, done: false })
    }

    /// Rename into `target`, replacing an existing install (moved aside first, removed after).
    fn commit(mut self, target: &Path) -> Result<(), Error> {
        let old = if target.exists() {
            let old = sibling(target, "replaced")?;
            std::fs::rename(target, &old).map_err(io_at(target))?;
            Some(old)
        } else {
            None
        };
        if let Err(e) = std::fs::rename(&self.path, target) {
            if let Some(old) = &old {
                let _ = std::fs::rename(old, target);
            }
            return Err(io_at(target)(e));
        }
        self.done = true;
        if let Some(old) = old {
            // The new install is in place; a leftover old copy is only wasted space.
            let _ = std::fs::remove_dir_all(old);
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Install demucs `.th` checkpoints as one bag in `out_dir` (e.g. `<data_dir>/models/htdemucs`).
///
/// Every file's name checksum (`-XXXXXXXX`, the sha256 prefix) is verified before anything is
/// written, and a mismatch refuses the install. Each file is converted to `<name>.json` +
/// `<name>.safetensors` (`name` = the signature before the first `-`, or the stem when there is
/// none) and loaded once on the CPU to prove its weights fit its config; the models must share
/// sources, sample rate and channels, and `weights` must hold one row per model and one weight per
/// source with a positive total for every source. All of it happens in a temporary sibling
/// directory, `bag.json` last, renamed to `out_dir` at the end (replacing an existing install), so
/// a failed install leaves nothing behind.
pub fn install_th(
    th_files: &[PathBuf],
    weights: Option<Vec<Vec<f32>>>,
    segment: Option<f64>,
    out_dir: &Path,
) -> Result<(), Error> {
    if th_files.is_empty() {
        return Err(Error::Config("a bag needs at least one .th file".into()));
    }
    if let Some(s) = segment {
        if !(s.is_finite() && s > 0.0) {
            return Err(Error::Config(format!(
                "segment must be a positive number of seconds, not {s}"
            )));
        }
    }
    let names = th_files
        .iter()
        .map(|p| model_name(p))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(Error::Config(format!(
                "two files carry the model name {name:?}"
            )));
        }
    }
    for th in th_files {
        verify_checksum(th).map_err(|e| match e {
            Error::Checkpoint(m) => Error::Checkpoint(format!("refusing to install: {m}")),
            e => e,
        })?;
    }
    if let Some(parent) = out_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_at(parent))?;
    }
    let staging = Staging::new(out_dir)?;
    let mut first: Option<(Vec<String>, u32, usize)> = None;
    for (th, name) in th_files.iter().zip(&names) {
        let conv = convert_th(th, &staging.path, name)?;
        // Loaded and dropped one at a time: a four-model bag never holds more than one in memory.
        let model = HTDemucs::load(&conv.config, &conv.weights, &Device::Cpu)?;
        let cfg = model.config();
        let shape = (cfg.sources.clone(), cfg.samplerate, cfg.audio_channels);
        match &first {
            None => first = Some(shape),
            Some(f) if *f == shape => {}
            Some(_) => {
                return Err(Error::Config(format!(
                    "{}: models of a bag must share sources, sample rate and channels",
                    th.display()
                )))
            }
        }
    }
    let (sources, _, _) = first.expect("at least one model");
    if let Some(w) = &weights {
        check_weights(w, names.len(), &sources)?;
    }
    let bag = Bag {
        models: names,
        weights,
        segment,
    };
    let json = serde_json::to_string_pretty(&bag).map_err(|e| Error::Internal(e.to_string()))?;
    let bag_path = staging.path.join(BAG_FILE);
    std::fs::write(&bag_path, json + "\n").map_err(io_at(&bag_path))?;
    staging.commit(out_dir)
}

/// Read `dir/bag.json`.
pub fn read_bag(dir: &Path) -> Result<Bag, Error> {
    let path = dir.join(BAG_FILE);
    let text = std::fs::read_to_string(&path).map_err(io_at(&path))?;
    let bag: Bag = serde_json::from_str(&text)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    if bag.models.is_empty() {
        return Err(Error::Config(format!("{}: no models", path.display())));
    }
    for name in &bag.models {
        check_name(name)?;
    }
    Ok(bag)
}

/// Load an installed bag (see the module header) onto `device`.
pub fn load_bag(dir: &Path, device: &Device) -> Result<BagOfModels, Error> {
    let bag = read_bag(dir)?;
    let mut models = Vec::with_capacity(bag.models.len());
    for name in &bag.models {
        let config = dir.join(format!("{name}.json"));
        let weights = dir.join(format!("{name}.safetensors"));
        for p in [&config, &weights] {
            if !p.is_file() {
                return Err(Error::Config(format!(
                    "{}: missing from the installed bag",
                    p.display()
                )));
            }
        }
        models.push(HTDemucs::load(&config, &weights, device)?);
    }
    BagOfModels::new(models, bag.weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_bags_are_demucs_yaml() {
        for id in OFFICIAL_IDS {
            let bag = official(id).unwrap();
            assert_eq!(bag.id, id);
            for f in bag.files {
                assert_eq!(model_name(Path::new(f)).unwrap().len(), 8, "{f}");
            }
        }
        let ft = official("htdemucs_ft").unwrap();
        assert_eq!(ft.files.len(), 4);
        let w = ft.weights.unwrap();
        assert_eq!(w.len(), 4);
        for (i, row) in w.iter().enumerate() {
            assert_eq!(row.len(), 4);
            for (j, &v) in row.iter().enumerate() {
                assert_eq!(v, if i == j { 1.0 } else { 0.0 });
            }
        }
        assert_eq!(
            official("htdemucs").unwrap().urls(),
            ["https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/955717e8-8726e21a.th"]
        );
        assert!(official("htdemucs_6s").unwrap().weights.is_none());
        assert!(official("mdx").is_none());
    }

    #[test]
    fn model_names_follow_demucs_local_repo() {
        let name = |p: &str| model_name(Path::new(p));
        assert_eq!(name("/x/955717e8-8726e21a.th").unwrap(), "955717e8");
        assert_eq!(name("htdemucs_tiny-b10f9334.th").unwrap(), "htdemucs_tiny");
        assert_eq!(name("mine.th").unwrap(), "mine");
        assert!(name("bag.th").is_err());
        assert!(name("-abc.th").is_err());
        assert!(check_name("../x").is_err());
    }

    #[test]
    fn bag_json_round_trips_with_nulls() {
        let bag = Bag {
            models: vec!["955717e8".into()],
            weights: None,
            segment: None,
        };
        let text = serde_json::to_string(&bag).unwrap();
        assert_eq!(
            text,
            r#"{"models":["955717e8"],"weights":null,"segment":null}"#
        );
        let back: Bag = serde_json::from_str(r#"{"models":["a"]}"#).unwrap();
        assert_eq!(back.weights, None);
        assert_eq!(serde_json::from_str::<Bag>(&text).unwrap(), bag);
    }
}
