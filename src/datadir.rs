//! Who owns a data directory. One `serve` at a time may run jobs from a data directory: a second one
//! would re-queue the first one's running jobs (two charges, two webhooks with different event ids,
//! result URLs on the wrong server). The owner holds an exclusive `flock` on `soundcheck.lock` in
//! the directory for its whole life, and writes its pid and URL into the file so that whoever is
//! refused can be told who holds it. The kernel drops the lock when the process dies, `kill -9`
//! included, so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "soundcheck.lock";

/// The database file's name inside the data directory.
pub const DATABASE_FILE: &str = "soundcheck.sqlite";

/// An exclusive hold on a data directory, released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    file: File,
    dir: PathBuf,
}

/// Why a data directory could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it; `owner` is what that process recorded (pid, URL), if readable.
    #[error("data directory {dir} is in use by another soundcheck process ({owner}); stop it, or pass another --data-dir")]
    Held { dir: PathBuf, owner: String },
    #[error("could not lock data directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

impl DataDirLock {
    /// Takes the data directory or fails at once (never waits) naming the current owner.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
        let io = |source| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut owner = String::new();
                let _ = file.read_to_string(&mut owner);
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    owner: describe_owner(&owner),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let lock = DataDirLock {
            file,
            dir: dir.to_path_buf(),
        };
        lock.record(None).map_err(io)?;
        Ok(lock)
    }

    /// Writes this process's pid and, once it listens, its URL into the lock file.
    pub fn record(&self, url: Option<&str>) -> std::io::Result<()> {
        let mut f = &self.file;
        f.set_len(0)?;
        f.seek(SeekFrom::Start(0))?;
        let mut text = format!("pid={}\n", std::process::id());
        if let Some(url) = url {
            text.push_str(&format!("url={url}\n"));
        }
        f.write_all(text.as_bytes())?;
        f.flush()
    }

    /// The directory held.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// "pid 123, http://127.0.0.1:8080" from the lock file's `key=value` lines.
fn describe_owner(text: &str) -> String {
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    match (field("pid"), field("url")) {
        (Some(pid), Some(url)) => format!("pid {pid}, {url}"),
        (Some(pid), None) => format!("pid {pid}"),
        _ => "owner unknown".to_string(),
    }
}

/// True when a process holds the data directory right now (a server is running on it).
pub fn is_held(dir: &Path) -> bool {
    matches!(DataDirLock::acquire_probe(dir), Some(true))
}

impl DataDirLock {
    /// `Some(true)` if held by another process, `Some(false)` if free, `None` if there is no lock
    /// file (nobody ever served from it). Never creates anything.
    fn acquire_probe(dir: &Path) -> Option<bool> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .ok()?;
        match file.try_lock() {
            Ok(()) => Some(false),
            Err(TryLockError::WouldBlock) => Some(true),
            Err(TryLockError::Error(_)) => None,
        }
    }
}

/// The pid recorded by the process holding a data directory right now; `None` if nobody holds it
/// (the kernel released a crashed server's lock) or it recorded no pid.
pub fn holder_pid(dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join(LOCK_FILE)).ok()?;
    let pid = text
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .and_then(|v| v.trim().parse().ok())?;
    is_held(dir).then_some(pid)
}

/// The URL recorded by the process holding a data directory right now, if it listens yet.
pub fn holder_url(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(LOCK_FILE)).ok()?;
    let url = text
        .lines()
        .find_map(|l| l.strip_prefix("url="))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())?;
    is_held(dir).then_some(url)
}

/// The owner recorded in a held data directory's lock file ("pid 123, http://…"), if any.
pub fn owner(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(LOCK_FILE)).ok()?;
    is_held(dir).then(|| describe_owner(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_owner_named_and_the_lock_ends_with_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        first.record(Some("http://127.0.0.1:9999")).unwrap();
        assert!(is_held(dir.path()));
        let err = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("http://127.0.0.1:9999"), "{err}");
        assert_eq!(
            owner(dir.path()).unwrap(),
            format!("pid {}, http://127.0.0.1:9999", std::process::id())
        );
        drop(first);
        assert!(!is_held(dir.path()));
        assert!(owner(dir.path()).is_none());
        let again = DataDirLock::acquire(dir.path()).unwrap();
        assert_eq!(again.dir(), dir.path());
    }

    #[test]
    fn probing_a_directory_never_served_from_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_held(dir.path()));
        assert!(!dir.path().join(LOCK_FILE).exists());
    }
}
