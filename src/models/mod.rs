//! Model weights on disk: the catalog of checkpoints soundcheck can run, where installed ones live
//! (`<data dir>/models/<id>/`, each with a `soundcheck-model.json` manifest written last, so a
//! directory without one is an unfinished install and is ignored), and the three ways in:
//!
//! - [`pull`]: download the published files (Hugging Face for MusicGen, Meta's demucs bucket for
//!   HTDemucs) with resume and the publisher's checksums, printing the weights' licence;
//! - [`import`]: install from a local copy (a MusicGen directory in the Hugging Face layout, or
//!   demucs `.th` checkpoints), for machines that never go online;
//! - [`installed`]/[`list`]: what is here, for `models list`, the server's registry and its banner.
//!
//! Tests never download: they pull from a local server through `--mirror`, or import fixtures.

pub mod download;
pub mod hub;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engines::musicgen;
use crate::engines::separate::htdemucs;

/// The manifest that marks a finished install.
pub const MANIFEST: &str = "soundcheck-model.json";

/// Where the downloads come from unless `--mirror` says otherwise.
pub const HUGGING_FACE: &str = "https://huggingface.co";
pub const DEMUCS_BUCKET: &str = "https://dl.fbaipublicfiles.com";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown model {0:?}; `soundcheck models list` shows the catalog")]
    Unknown(String),
    /// A catalog model that is not installed here (`models remove` has nothing to delete).
    #[error("model {0:?} is not installed, so there is nothing to remove (`soundcheck models pull {0}` installs it)")]
    NotInstalled(String),
    #[error("{url}: the server answered HTTP {status}")]
    Http { url: String, status: u16 },
    #[error("{url}: {message}")]
    Network { url: String, message: String },
    /// The server sent more than the file (or listing) can hold; not retried.
    #[error("{url}: the server sent more than the {limit} bytes this file can have; the partial download was deleted")]
    TooLarge { url: String, limit: u64 },
    #[error("{url}: the downloaded file does not match the publisher's checksum; it was deleted")]
    Checksum { url: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a usable model: {0}")]
    Invalid(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn network(url: &str, e: reqwest::Error) -> Self {
        let message = if e.is_timeout() {
            "timed out: the server sent nothing for 30 s".to_string()
        } else {
            e.to_string()
        };
        Error::Network {
            url: url.to_string(),
            message,
        }
    }
}

/// What kind of engine a model feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// A text-to-music generator for `/v1/generations` (MusicGen).
    MusicGen,
    /// A separator for `/v1/separate` (HTDemucs).
    HtDemucs,
}

/// A checkpoint soundcheck knows how to fetch.
#[derive(Debug, Clone, Copy)]
pub struct CatalogEntry {
    pub id: &'static str,
    pub family: Family,
    pub description: &'static str,
    /// The weights' licence, printed at pull time.
    pub licence: &'static str,
    /// Approximate download size, for `models list`.
    pub approx_mb: u64,
    /// Hugging Face repository (MusicGen); demucs bags come from [`htdemucs::install::official`].
    pub repo: Option<&'static str>,
}

const MUSICGEN_LICENCE: &str = "CC-BY-NC 4.0 (non-commercial use only): \
     https://creativecommons.org/licenses/by-nc/4.0/ — Meta's MusicGen model card";
const DEMUCS_LICENCE: &str = "MIT (facebookresearch/demucs)";

pub const CATALOG: &[CatalogEntry] = &[
    CatalogEntry {
        id: "musicgen-small",
        family: Family::MusicGen,
        description: "MusicGen 300M, text to music, 32 kHz mono",
        licence: MUSICGEN_LICENCE,
        approx_mb: 2_400,
        repo: Some("facebook/musicgen-small"),
    },
    CatalogEntry {
        id: "musicgen-medium",
        family: Family::MusicGen,
        description: "MusicGen 1.5B, text to music, 32 kHz mono",
        licence: MUSICGEN_LICENCE,
        approx_mb: 8_000,
        repo: Some("facebook/musicgen-medium"),
    },
    CatalogEntry {
        id: "htdemucs",
        family: Family::HtDemucs,
        description: "HTDemucs (Demucs v4), 4 stems",
        licence: DEMUCS_LICENCE,
        approx_mb: 84,
        repo: None,
    },
    CatalogEntry {
        id: "htdemucs_ft",
        family: Family::HtDemucs,
        description: "HTDemucs fine-tuned, one model per stem (4× slower, better)",
        licence: DEMUCS_LICENCE,
        approx_mb: 336,
        repo: None,
    },
    CatalogEntry {
        id: "htdemucs_6s",
        family: Family::HtDemucs,
        description: "HTDemucs 6 sources (adds guitar, piano)",
        licence: DEMUCS_LICENCE,
        approx_mb: 55,
        repo: None,
    },
];

/// A catalog entry by id.
pub fn catalog(id: &str) -> Option<&'static CatalogEntry> {
    CATALOG.iter().find(|e| e.id == id)
}

/// What `soundcheck-model.json` records about an install.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub id: String,
    pub family: Family,
    /// `pull <url>`, or `import <path>`.
    pub source: String,
    /// The resolved revision (a Hugging Face commit) when pulled.
    pub revision: Option<String>,
    pub licence: Option<String>,
    pub installed_at: String,
    /// Total bytes of the installed files.
    pub bytes: u64,
}

/// An installed model.
#[derive(Debug, Clone)]
pub struct Installed {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// `<data dir>/models`.
pub fn models_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("models")
}

/// Every finished install under `data_dir`, sorted by id. Directories without a readable
/// manifest (an interrupted pull, something else) are skipped.
pub fn installed(data_dir: &Path) -> Vec<Installed> {
    let Ok(entries) = std::fs::read_dir(models_dir(data_dir)) else {
        return Vec::new();
    };
    let mut out: Vec<Installed> = entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let dir = e.path();
            let text = std::fs::read_to_string(dir.join(MANIFEST)).ok()?;
            let manifest: Manifest = serde_json::from_str(&text).ok()?;
            Some(Installed { dir, manifest })
        })
        .collect();
    out.sort_by(|a, b| a.manifest.id.cmp(&b.manifest.id));
    out
}

/// One installed model by id.
pub fn find(data_dir: &Path, id: &str) -> Option<Installed> {
    installed(data_dir)
        .into_iter()
        .find(|i| i.manifest.id == id)
}

impl Family {
    /// The API a model of this family serves, as `models list` shows it.
    pub fn kind(self) -> &'static str {
        match self {
            Family::MusicGen => "generate",
            Family::HtDemucs => "separate",
        }
    }
}

/// One model as `models list` and the dashboard show it: a catalog entry, installed or not, or
/// something installed that the catalog does not name.
#[derive(Debug, Clone, Serialize)]
pub struct ModelRow {
    pub id: String,
    /// `generate` or `separate`: which API the model serves.
    pub kind: &'static str,
    /// The catalog's description, or the install's source for a model outside the catalog.
    pub description: String,
    pub installed: bool,
    /// Size on disk when installed, else the approximate download.
    pub size_mb: u64,
    /// The weights' licence, when known.
    pub licence: Option<String>,
}

/// The catalog, then anything else installed, each with whether it is here.
pub fn rows(data_dir: &Path) -> Vec<ModelRow> {
    let here = installed(data_dir);
    let installed_mb = |i: &Installed| i.manifest.bytes.div_ceil(1 << 20);
    let mut out: Vec<ModelRow> = CATALOG
        .iter()
        .map(|e| {
            let inst = here.iter().find(|i| i.manifest.id == e.id);
            ModelRow {
                id: e.id.to_string(),
                kind: e.family.kind(),
                description: e.description.to_string(),
                installed: inst.is_some(),
                size_mb: inst.map_or(e.approx_mb, installed_mb),
                licence: Some(e.licence.to_string()),
            }
        })
        .collect();
    out.extend(
        here.iter()
            .filter(|i| catalog(&i.manifest.id).is_none())
            .map(|i| ModelRow {
                id: i.manifest.id.clone(),
                kind: i.manifest.family.kind(),
                description: i.manifest.source.clone(),
                installed: true,
                size_mb: installed_mb(i),
                licence: i.manifest.licence.clone(),
            }),
    );
    out
}

/// The `models list` table: the catalog and anything else installed.
pub fn list_table(data_dir: &Path) -> String {
    let mut out = format!(
        "{:<18}{:<10}{:>10}  {:<10}{}\n",
        "MODEL", "KIND", "SIZE", "STATUS", "DESCRIPTION"
    );
    for r in rows(data_dir) {
        let (size, status) = if r.installed {
            (format!("{} MB", r.size_mb), "installed")
        } else {
            (format!("~{} MB", r.size_mb), "-")
        };
        out += &format!(
            "{:<18}{:<10}{size:>10}  {status:<10}{}\n",
            r.id, r.kind, r.description
        );
    }
    out
}

/// Options of `models pull`.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Replaces `https://huggingface.co` and `https://dl.fbaipublicfiles.com` (a local mirror).
    pub mirror: Option<String>,
    /// Hugging Face revision (branch, tag or commit); default `main`.
    pub revision: Option<String>,
}

/// Downloads a catalog model into `<data dir>/models/<id>`. Partial files stay in
/// `<data dir>/models/.partial/<id>/` between runs, so a second `pull` resumes.
pub async fn pull(data_dir: &Path, id: &str, opts: &PullOptions) -> Result<Installed, Error> {
    let entry = catalog(id).ok_or_else(|| Error::Unknown(id.to_string()))?;
    let models = models_dir(data_dir);
    let staging = models.join(".partial").join(id);
    std::fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    let pulled = pull_into(data_dir, id, entry, &staging, opts).await;
    // Partial files stay for the next pull to resume; an attempt that got none, or a finished
    // install, leaves no empty directories behind (`remove_dir` removes only an empty one).
    let _ = std::fs::remove_dir(&staging);
    let _ = std::fs::remove_dir(models.join(".partial"));
    pulled
}

async fn pull_into(
    data_dir: &Path,
    id: &str,
    entry: &CatalogEntry,
    staging: &Path,
    opts: &PullOptions,
) -> Result<Installed, Error> {
    let staging = staging.to_path_buf();
    let client = reqwest::Client::builder()
        .user_agent(concat!("soundcheck/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(20))
        // A mirror that accepts and then says nothing fails the attempt (and is retried) instead
        // of holding the pull forever.
        .read_timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let (source, revision) = match entry.family {
        Family::MusicGen => {
            let base = opts.mirror.as_deref().unwrap_or(HUGGING_FACE);
            let repo = entry.repo.expect("musicgen entries name their repository");
            let rev = opts.revision.as_deref().unwrap_or("main");
            let resolved = hub::download_musicgen(&client, base, repo, rev, &staging).await?;
            validate_musicgen(&staging)?;
            (format!("pull {base}/{repo}"), Some(resolved))
        }
        Family::HtDemucs => {
            let bag = htdemucs::install::official(id).ok_or_else(|| Error::Unknown(id.into()))?;
            let base = opts.mirror.as_deref().unwrap_or(DEMUCS_BUCKET);
            let mut files = Vec::new();
            for name in bag.files.iter() {
                let url = format!("{}/{}/{name}", base.trim_end_matches('/'), bag.path);
                let sig = name
                    .rsplit_once('-')
                    .and_then(|(_, rest)| rest.strip_suffix(".th"))
                    .unwrap_or_default();
                let remote = download::Remote {
                    url,
                    size: None,
                    checksum: download::Checksum::Sha256Prefix(sig.to_string()),
                };
                let dest = staging.join(name);
                let bar = download::bar(name);
                download::fetch(&client, &remote, &dest, &bar).await?;
                bar.finish();
                files.push(dest);
            }
            let out = staging.with_extension("converted");
            remove_dir_if_exists(&out)?;
            htdemucs::install::install_th(&files, bag.weights.clone(), bag.segment, &out)
                .map_err(|e| Error::Invalid(e.to_string()))?;
            // The converted bag replaces the downloads in the staging directory.
            remove_dir_if_exists(&staging)?;
            std::fs::rename(&out, &staging).map_err(|e| Error::io(&staging, e))?;
            (format!("pull {base}/{}", bag.path), None)
        }
    };
    finish_install(
        data_dir,
        &staging,
        id,
        entry.family,
        source,
        revision,
        Some(entry.licence),
    )
}

/// Installs from a local copy: a MusicGen directory (Hugging Face layout), or one or more demucs
/// `.th` files (a single file, or a directory of them, forming one bag with equal weights). `id`
/// defaults to the directory or file name.
pub fn import(data_dir: &Path, src: &Path, id: Option<&str>) -> Result<Installed, Error> {
    let meta = std::fs::metadata(src).map_err(|e| Error::io(src, e))?;
    if !meta.is_dir() && !meta.is_file() {
        // A FIFO or a device would block the copy, or never end it.
        return Err(Error::Invalid(format!(
            "{}: not a regular file or a directory",
            src.display()
        )));
    }
    let th_files: Vec<PathBuf> = if meta.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(src)
            .map_err(|e| Error::io(src, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "th") && p.is_file())
            .collect();
        v.sort();
        v
    } else {
        vec![src.to_path_buf()]
    };
    let default_id = src
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let id = id.map(str::to_string).unwrap_or(default_id);
    check_id(&id)?;
    let models = models_dir(data_dir);
    let staging = models.join(".partial").join(&id);
    remove_dir_if_exists(&staging)?;
    std::fs::create_dir_all(staging.parent().unwrap()).map_err(|e| Error::io(&models, e))?;
    let staged = || {
        if meta.is_dir() {
            refuse_special_files(src)?;
        }
        if meta.is_dir() && src.join(musicgen::loader::CONFIG_FILE).exists() {
            // Checked where it is before anything is copied, and again once copied.
            validate_musicgen(src)?;
            copy_dir(src, &staging)?;
            validate_musicgen(&staging)?;
            Ok(Family::MusicGen)
        } else if th_files
            .iter()
            .any(|p| p.extension().is_some_and(|x| x == "th"))
        {
            htdemucs::install::install_th(&th_files, None, None, &staging)
                .map_err(|e| Error::Invalid(e.to_string()))?;
            Ok(Family::HtDemucs)
        } else {
            Err(Error::Invalid(format!(
                "{}: expected a MusicGen directory (config.json, tokenizer.json, \
                 model.safetensors) or demucs .th checkpoints",
                src.display()
            )))
        }
    };
    // A refused import leaves nothing behind (it once left a whole copy of the source).
    let family = staged().inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&staging);
        let _ = std::fs::remove_dir(staging.parent().unwrap());
    })?;
    let licence = catalog(&id).map(|e| e.licence);
    finish_install(
        data_dir,
        &staging,
        &id,
        family,
        format!("import {}", src.display()),
        None,
        licence,
    )
}

/// Refuses a directory holding a FIFO, socket or device (directly, or through a link): reading
/// one as `config.json` would block the import forever.
fn refuse_special_files(dir: &Path) -> Result<(), Error> {
    for entry in std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
    {
        let path = entry.path();
        // Followed through links; a dangling link is left to the checks that read it.
        if let Ok(meta) = std::fs::metadata(&path) {
            if !meta.is_file() && !meta.is_dir() {
                return Err(Error::Invalid(format!(
                    "{}: not a regular file or a directory (a FIFO, socket or device)",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

/// Deletes an installed model.
pub fn remove(data_dir: &Path, id: &str) -> Result<(), Error> {
    let inst = find(data_dir, id).ok_or_else(|| match catalog(id) {
        Some(_) => Error::NotInstalled(id.to_string()),
        None => Error::Unknown(id.to_string()),
    })?;
    std::fs::remove_dir_all(&inst.dir).map_err(|e| Error::io(&inst.dir, e))
}

/// Ids become directory names: keep them plain.
fn check_id(id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "model id {id:?}: use letters, digits, '-', '_' and '.'"
        )))
    }
}

/// The cheap checks `load` would fail on: configuration, tokenizer, weight files present.
fn validate_musicgen(dir: &Path) -> Result<(), Error> {
    let cfg = musicgen::loader::read_config(dir).map_err(|e| Error::Invalid(e.to_string()))?;
    musicgen::loader::read_generation_config(dir, &cfg)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    musicgen::loader::read_tokenizer(dir).map_err(|e| Error::Invalid(e.to_string()))?;
    musicgen::loader::weight_files(dir).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(())
}

/// Writes the manifest into `staging` and moves it to `<models>/<id>`, replacing an older install.
fn finish_install(
    data_dir: &Path,
    staging: &Path,
    id: &str,
    family: Family,
    source: String,
    revision: Option<String>,
    licence: Option<&str>,
) -> Result<Installed, Error> {
    let bytes = dir_size(staging)?;
    let manifest = Manifest {
        id: id.to_string(),
        family,
        source,
        revision,
        licence: licence.map(str::to_string),
        installed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        bytes,
    };
    let text = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
    std::fs::write(staging.join(MANIFEST), text + "\n").map_err(|e| Error::io(staging, e))?;
    let dest = models_dir(data_dir).join(id);
    remove_dir_if_exists(&dest)?;
    std::fs::rename(staging, &dest).map_err(|e| Error::io(&dest, e))?;
    Ok(Installed {
        dir: dest,
        manifest,
    })
}

fn remove_dir_if_exists(dir: &Path) -> Result<(), Error> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(dir, e)),
        _ => Ok(()),
    }
}

fn copy_dir(src: &Path, dest: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dest).map_err(|e| Error::io(dest, e))?;
    for entry in std::fs::read_dir(src)
        .map_err(|e| Error::io(src, e))?
        .flatten()
    {
        let from = entry.path();
        let to = dest.join(entry.file_name());
        // Links to files are followed (a Hugging Face cache snapshot is made of them); links to
        // directories are not (`self -> .` would copy forever), nor is anything but a file.
        let linked_dir = entry.file_type().is_ok_and(|t| t.is_symlink()) && from.is_dir();
        if linked_dir {
            continue;
        } else if from.is_dir() {
            copy_dir(&from, &to)?;
        } else if from.is_file() {
            std::fs::copy(&from, &to).map_err(|e| Error::io(&from, e))?;
        } else {
            return Err(Error::Invalid(format!(
                "{}: not a regular file; a model directory holds files",
                from.display()
            )));
        }
    }
    Ok(())
}

fn dir_size(dir: &Path) -> Result<u64, Error> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
    {
        let p = entry.path();
        total += if p.is_dir() {
            dir_size(&p)?
        } else {
            entry.metadata().map(|m| m.len()).unwrap_or(0)
        };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mirror whose repository listing never ends is cut off at 4 MiB (it was read into memory
    /// without limit: 7 GB in 20 s).
    #[tokio::test]
    async fn an_endless_listing_is_cut_off() {
        let (base, served) = download::tests::endless_server().await;
        let dir = tempfile::tempdir().unwrap();
        let opts = PullOptions {
            mirror: Some(base),
            revision: None,
        };
        let err = pull(dir.path(), "musicgen-small", &opts)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("sent more than the 4194304 bytes"), "{err}");
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Nothing was downloaded, so no empty staging directory is left for `models list` to
        // skip and a user to wonder about.
        assert!(!models_dir(dir.path()).join(".partial").exists());
    }

    /// A refused import leaves no copy behind, a FIFO is refused before it is read (it once
    /// blocked forever), and a directory link is not followed when copying (`self -> .` once
    /// made a tree 40 levels deep).
    #[test]
    fn refused_imports_leave_nothing_and_special_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let src = dir.path().join("proj");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("config.json"), br#"{"name":"my-node-app"}"#).unwrap();
        std::fs::write(src.join("big.bin"), vec![0u8; 1 << 20]).unwrap();
        assert!(import(&data, &src, None).is_err());
        let partial = models_dir(&data).join(".partial");
        assert!(!partial.exists(), "{} was left behind", partial.display());

        #[cfg(unix)]
        {
            let fifo = dir.path().join("fifo.th");
            let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
            // SAFETY: a NUL-terminated path; mkfifo only creates the node.
            assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
            let err = import(&data, &fifo, None).unwrap_err().to_string();
            assert!(err.contains("not a regular file"), "{err}");
            // A FIFO inside a directory, where the import reads its configuration.
            let inside = dir.path().join("musicgen-fifo");
            std::fs::create_dir_all(&inside).unwrap();
            let name =
                std::ffi::CString::new(inside.join("config.json").to_str().unwrap()).unwrap();
            // SAFETY: as above.
            assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
            let err = import(&data, &inside, None).unwrap_err().to_string();
            assert!(err.contains("config.json: not a regular file"), "{err}");
            let tree = dir.path().join("tree");
            std::fs::create_dir_all(tree.join("sub")).unwrap();
            std::fs::write(tree.join("sub/w.bin"), b"w").unwrap();
            std::os::unix::fs::symlink(".", tree.join("self")).unwrap();
            std::os::unix::fs::symlink("sub/w.bin", tree.join("linked.bin")).unwrap();
            let copy = dir.path().join("copy");
            copy_dir(&tree, &copy).unwrap();
            assert!(copy.join("sub/w.bin").is_file());
            assert_eq!(std::fs::read(copy.join("linked.bin")).unwrap(), b"w");
            assert!(!copy.join("self").exists());
        }
    }

    #[test]
    fn ids_stay_plain_directory_names() {
        for ok in ["htdemucs", "musicgen-small", "my_model.v2"] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../x", "a/b", ".hidden", "sp ace"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unfinished_installs_are_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let models = models_dir(dir.path());
        std::fs::create_dir_all(models.join("half")).unwrap();
        std::fs::create_dir_all(models.join(".partial/musicgen-small")).unwrap();
        assert!(installed(dir.path()).is_empty());
        assert!(list_table(dir.path()).contains("musicgen-small"));
    }
}
