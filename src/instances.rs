//! Which servers run on this machine, so that client commands (`jobs`, `webhook`, `listen`,
//! `trigger`, `deliveries`, `credits`, `keys`) find theirs without flags. Each `serve` writes one
//! small JSON file (its URL, data directory and pid) into the per-user runtime directory
//! (`$XDG_RUNTIME_DIR/soundcheck/`, else the state directory `~/.local/state/soundcheck/`, else
//! the data directory's parent) once it listens, and removes it when it exits cleanly. A file left
//! by a crash is recognised as stale because its data directory's lock (`datadir`) is no longer
//! held by that pid — the kernel releases a dead process's lock — and is deleted when seen.
//!
//! [`resolve`] turns a client command's `--url` / `--data-dir` (either, both or neither) into the
//! server to talk to and the data directory whose keys it accepts, and says how it chose them,
//! so that a `401` can name the key's source.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The URL client commands use when nothing names a server (`serve`'s default address).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// What a running `serve` records about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Base URL clients use (`--public-url`, else `http://<bound address>`).
    pub url: String,
    /// Absolute data directory: where a client reads the keys this server accepts.
    pub data_dir: PathBuf,
    /// The server's process id; live while it holds `data_dir`'s lock.
    pub pid: u32,
    /// When it started (RFC 3339), to tell servers apart in listings.
    pub started_at: String,
}

/// The directory holding one file per running server (nothing is created).
pub fn state_dir() -> PathBuf {
    let dirs = directories::ProjectDirs::from("dev", "soundcheck", "soundcheck");
    match dirs {
        Some(d) => d
            .runtime_dir()
            .map(|r| r.join("servers"))
            .or_else(|| d.state_dir().map(|s| s.join("servers")))
            .unwrap_or_else(|| d.data_local_dir().join("servers")),
        None => std::env::temp_dir().join("soundcheck-servers"),
    }
}

/// A running server's entry; dropping it (a clean exit) removes the file.
#[derive(Debug)]
pub struct Registration {
    path: PathBuf,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Records this process as the server at `url` on `data_dir`. Written to a temporary name and
/// renamed, so a reader never sees half a file.
pub fn register(url: &str, data_dir: &Path) -> std::io::Result<Registration> {
    let dir = state_dir();
    std::fs::create_dir_all(&dir)?;
    let pid = std::process::id();
    let me = Instance {
        url: url.trim_end_matches('/').to_string(),
        data_dir: std::path::absolute(data_dir)?,
        pid,
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    let path = dir.join(format!("{pid}.json"));
    let tmp = dir.join(format!("{pid}.json.tmp"));
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&me).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, &path)?;
    Ok(Registration { path })
}

/// Largest server record read (a record is a few hundred bytes).
const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// The servers running now, oldest first. Stale entries (their pid no longer holds the data
/// directory) are deleted on the way.
pub fn running() -> Vec<Instance> {
    let Ok(entries) = std::fs::read_dir(state_dir()) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        // Only a small regular file is a record: a FIFO would block the read, a link to a device
        // would never end (the directory is the user's; anything else there is deleted).
        let record = std::fs::symlink_metadata(&path)
            .is_ok_and(|m| m.is_file() && m.len() <= MAX_RECORD_BYTES);
        let parsed = record
            .then(|| std::fs::read(&path).ok())
            .flatten()
            .and_then(|b| serde_json::from_slice::<Instance>(&b).ok());
        match parsed {
            Some(i) if crate::datadir::holder_pid(&i.data_dir) == Some(i.pid) => found.push(i),
            _ => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    found.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.pid.cmp(&b.pid)));
    found
}

/// The server a client command talks to and the data directory its keys come from.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub data_dir: PathBuf,
    /// How they were chosen, for messages ("the running server (pid 42)").
    pub how: String,
}

/// `http://localhost:8080/` and `http://127.0.0.1:8080` name the same server.
fn same_url(a: &str, b: &str) -> bool {
    let norm = |u: &str| {
        u.trim_end_matches('/')
            .replacen("://localhost", "://127.0.0.1", 1)
            .to_ascii_lowercase()
    };
    norm(a) == norm(b)
}

/// Chooses the server and data directory from what the user gave:
/// - both: as given;
/// - `--data-dir` only: the server running on it (its lock names its URL), an error if none;
/// - `--url` only: that URL, with the data directory of the running server at it (else the
///   default data directory);
/// - neither: the one running server; with several, an error listing them; with none, the
///   defaults (`DEFAULT_URL` and the per-user data directory).
///
/// `default_data_dir` is the per-user default (`DataArgs::path()` with no flag).
pub fn resolve(
    url: Option<&str>,
    data_dir: Option<&Path>,
    default_data_dir: &Path,
) -> anyhow::Result<Target> {
    let url = url.map(|u| u.trim_end_matches('/').to_string());
    match (url, data_dir) {
        (Some(url), Some(dir)) => Ok(Target {
            url,
            data_dir: dir.to_path_buf(),
            how: "--url and --data-dir".into(),
        }),
        (None, Some(dir)) => {
            // A mistyped directory is named as such first (and nothing is created).
            crate::config::DataArgs {
                data_dir: Some(dir.to_path_buf()),
            }
            .existing()?;
            let inst = running().into_iter().find(|i| same_dir(&i.data_dir, dir));
            match inst {
                Some(i) => Ok(Target {
                    how: format!(
                        "the server running on --data-dir {} (pid {})",
                        dir.display(),
                        i.pid
                    ),
                    url: i.url,
                    data_dir: dir.to_path_buf(),
                }),
                None => {
                    // A server from an older build records its URL in the lock only.
                    let from_lock = crate::datadir::holder_url(dir);
                    match from_lock {
                        Some(url) => Ok(Target {
                            url,
                            data_dir: dir.to_path_buf(),
                            how: format!("the server running on --data-dir {}", dir.display()),
                        }),
                        None => anyhow::bail!(
                            "no server is running on {}: start one with `soundcheck serve \
                             --data-dir {}`, or pass --url",
                            dir.display(),
                            dir.display()
                        ),
                    }
                }
            }
        }
        (Some(url), None) => match running().into_iter().find(|i| same_url(&i.url, &url)) {
            Some(i) => Ok(Target {
                how: format!(
                    "the server at {url} (pid {}, data directory {})",
                    i.pid,
                    i.data_dir.display()
                ),
                url,
                data_dir: i.data_dir,
            }),
            None => Ok(Target {
                how: format!(
                    "--url {url} with the default data directory (no server started on this \
                     machine records that URL)"
                ),
                url,
                data_dir: default_data_dir.to_path_buf(),
            }),
        },
        (None, None) => {
            let mut all = running();
            match all.len() {
                0 => Ok(Target {
                    url: DEFAULT_URL.into(),
                    data_dir: default_data_dir.to_path_buf(),
                    how: "the defaults (no running server found)".into(),
                }),
                1 => {
                    let i = all.remove(0);
                    Ok(Target {
                        how: format!(
                            "the running server (pid {}, data directory {})",
                            i.pid,
                            i.data_dir.display()
                        ),
                        url: i.url,
                        data_dir: i.data_dir,
                    })
                }
                _ => anyhow::bail!(several_message(&all, true)),
            }
        }
    }
}

/// The error of a client command that cannot choose among several running servers: how many,
/// and the flags that name each one (`with_url`: the command also takes `--url`).
pub fn several_message(all: &[Instance], with_url: bool) -> String {
    let list: Vec<String> = all
        .iter()
        .map(|i| {
            if with_url {
                format!("  --url {} --data-dir {}", i.url, i.data_dir.display())
            } else {
                format!("  --data-dir {}   (serves {})", i.data_dir.display(), i.url)
            }
        })
        .collect();
    format!(
        "{} soundcheck servers are running; name one with {}:\n{}\n(`soundcheck servers` lists them)",
        all.len(),
        if with_url {
            "--url or --data-dir"
        } else {
            "--data-dir"
        },
        list.join("\n")
    )
}

/// `soundcheck servers`: the running servers, one a line (or a JSON array).
pub fn print_running(json: bool) -> anyhow::Result<()> {
    let all = running();
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    if all.is_empty() {
        println!("no soundcheck server is running (start one with `soundcheck serve`)");
        return Ok(());
    }
    println!(
        "{:<28} {:>8}  {:<20}  DATA DIRECTORY",
        "URL", "PID", "STARTED"
    );
    for i in &all {
        println!(
            "{:<28} {:>8}  {:<20}  {}",
            i.url,
            i.pid,
            i.started_at,
            i.data_dir.display()
        );
    }
    Ok(())
}

/// Two spellings of one directory (relative, trailing slash, symlinked) compare equal.
fn same_dir(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon(a) == canon(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_compare_without_trailing_slash_and_localhost_spelling() {
        assert!(same_url("http://localhost:8080/", "http://127.0.0.1:8080"));
        assert!(!same_url("http://127.0.0.1:8081", "http://127.0.0.1:8080"));
    }

    #[test]
    fn both_flags_are_taken_as_given_and_a_data_dir_without_a_server_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let t = resolve(Some("http://x:1/"), Some(d.path()), Path::new("/default")).unwrap();
        assert_eq!(t.url, "http://x:1");
        assert_eq!(t.data_dir, d.path());
        let err = resolve(None, Some(d.path()), Path::new("/default")).unwrap_err();
        assert!(err.to_string().contains("no soundcheck database"), "{err}");
    }
}
