//! Hugging Face Hub downloads: the repository's file list with each file's checksum
//! (`GET /api/models/{repo}/revision/{rev}?blobs=true`: LFS files carry their SHA-256, small files
//! their git blob id), then each file MusicGen needs from `/{repo}/resolve/{commit}/{file}`,
//! pinned to the commit the listing resolved so the files belong together.

use std::path::Path;

use serde::Deserialize;

use super::download::{self, Checksum, Remote};
use super::Error;
use crate::engines::musicgen::loader;

#[derive(Debug, Deserialize)]
struct RepoInfo {
    sha: String,
    siblings: Vec<Sibling>,
}

#[derive(Debug, Deserialize)]
struct Sibling {
    rfilename: String,
    size: Option<u64>,
    #[serde(rename = "blobId")]
    blob_id: Option<String>,
    lfs: Option<Lfs>,
}

#[derive(Debug, Deserialize)]
struct Lfs {
    sha256: String,
    size: u64,
}

/// Whether MusicGen's loader needs a repository file: configuration, tokenizer and safetensors
/// weights (single or sharded), not the PyTorch `.bin` copies.
fn wanted(name: &str) -> bool {
    matches!(
        name,
        loader::CONFIG_FILE
            | loader::GENERATION_CONFIG_FILE
            | loader::TOKENIZER_FILE
            | loader::WEIGHTS_FILE
            | loader::WEIGHTS_INDEX_FILE
    ) || (name.starts_with("model-") && name.ends_with(".safetensors") && !name.contains('/'))
}

/// Downloads a MusicGen repository's files into `dir`; returns the commit they came from.
/// The largest repository listing read (Hugging Face's are a few kB).
const MAX_LISTING_BYTES: usize = 4 * 1024 * 1024;

pub async fn download_musicgen(
    client: &reqwest::Client,
    base: &str,
    repo: &str,
    revision: &str,
    dir: &Path,
) -> Result<String, Error> {
    let base = base.trim_end_matches('/');
    let url = format!("{base}/api/models/{repo}/revision/{revision}?blobs=true");
    let resp = client
        .get(&url)
        .send()
        .await
        .map_err(|e| Error::network(&url, e))?;
    if !resp.status().is_success() {
        return Err(Error::Http {
            url,
            status: resp.status().as_u16(),
        });
    }
    // A listing is a few kB; one that goes on (a mirror streaming without end) is cut off
    // instead of read into memory.
    let mut resp = resp;
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| Error::network(&url, e))? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_LISTING_BYTES {
            return Err(Error::TooLarge {
                url,
                limit: MAX_LISTING_BYTES as u64,
            });
        }
    }
    let info: RepoInfo = serde_json::from_slice(&body)
        .map_err(|e| Error::Invalid(format!("{url}: unexpected listing: {e}")))?;
    if !info.sha.chars().all(|c| c.is_ascii_hexdigit()) || info.sha.is_empty() {
        return Err(Error::Invalid(format!(
            "{url}: bad commit id {:?}",
            info.sha
        )));
    }
    let files: Vec<&Sibling> = info
        .siblings
        .iter()
        .filter(|s| wanted(&s.rfilename))
        .collect();
    for required in [loader::CONFIG_FILE, loader::TOKENIZER_FILE] {
        if !files.iter().any(|s| s.rfilename == required) {
            return Err(Error::Invalid(format!("{repo} has no {required}")));
        }
    }
    for s in files {
        let checksum = match (&s.lfs, &s.blob_id) {
            (Some(lfs), _) => Checksum::Sha256(lfs.sha256.clone()),
            (None, Some(blob)) => Checksum::GitBlobSha1(blob.clone()),
            (None, None) => {
                return Err(Error::Invalid(format!(
                    "{repo}/{}: the listing gives no checksum",
                    s.rfilename
                )))
            }
        };
        let remote = Remote {
            url: format!("{base}/{repo}/resolve/{}/{}", info.sha, s.rfilename),
            size: s.lfs.as_ref().map(|l| l.size).or(s.size),
            checksum,
        };
        let bar = download::bar(&s.rfilename);
        download::fetch(client, &remote, &dir.join(&s.rfilename), &bar).await?;
        bar.finish();
    }
    Ok(info.sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_loader_reads_is_fetched() {
        for name in [
            "config.json",
            "generation_config.json",
            "tokenizer.json",
            "model.safetensors",
            "model.safetensors.index.json",
            "model-00001-of-00002.safetensors",
        ] {
            assert!(wanted(name), "{name}");
        }
        for name in [
            "pytorch_model.bin",
            "README.md",
            "state_dict.bin",
            "x/model-1.safetensors",
        ] {
            assert!(!wanted(name), "{name}");
        }
    }
}
