//! One file over HTTP into place: streamed to `<dest>.part`, resumed with a `Range` request when a
//! `.part` is already there (from an interrupted run, or a dropped connection a moment ago),
//! verified against the publisher's checksum, then renamed. A file that fails its checksum is
//! deleted, never installed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::Error;

/// Attempts per file when the connection drops part-way (each one resumes where the last stopped).
const ATTEMPTS: usize = 4;

/// What the finished file must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// SHA-256 of the content, hex (Hugging Face's LFS files).
    Sha256(String),
    /// Git's blob id, SHA-1 over `"blob <len>\0" + content`, hex (Hugging Face's small files).
    GitBlobSha1(String),
    /// The first hex digits of the SHA-256 (demucs names its checkpoints `<sig>-<sha256[..8]>.th`).
    Sha256Prefix(String),
}

impl Checksum {
    /// Whether `path`'s content matches.
    pub fn verify(&self, path: &Path) -> Result<bool, Error> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
        let hex = match self {
            Checksum::Sha256(_) | Checksum::Sha256Prefix(_) => {
                let mut h = Sha256::new();
                std::io::copy(&mut reader, &mut h).map_err(|e| Error::io(path, e))?;
                hex::encode(h.finalize())
            }
            Checksum::GitBlobSha1(_) => {
                let mut h = Sha1::new();
                h.update(format!("blob {len}\0").as_bytes());
                std::io::copy(&mut reader, &mut h).map_err(|e| Error::io(path, e))?;
                hex::encode(h.finalize())
            }
        };
        Ok(match self {
            Checksum::Sha256(want) | Checksum::GitBlobSha1(want) => hex.eq_ignore_ascii_case(want),
            Checksum::Sha256Prefix(p) => !p.is_empty() && hex.starts_with(&p.to_ascii_lowercase()),
        })
    }
}

/// A file to fetch.
#[derive(Debug, Clone)]
pub struct Remote {
    pub url: String,
    /// Size the publisher declares, for the progress bar and a final length check.
    pub size: Option<u64>,
    pub checksum: Checksum,
}

/// The most a file listed without a size may take (the largest weights file of a catalog model
/// without a listed size is a few hundred MB).
pub const MAX_UNLISTED_SIZE: u64 = 1 << 30;

/// `<dest>.part`: where an unfinished download lives between attempts and runs.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

/// Downloads `remote` to `dest` (resuming `<dest>.part`), verifies it and renames it into place.
/// A `dest` that already exists and verifies is kept as is. Returns the file's size.
pub async fn fetch(
    client: &reqwest::Client,
    remote: &Remote,
    dest: &Path,
    bar: &ProgressBar,
) -> Result<u64, Error> {
    if dest.exists() && remote.checksum.verify(dest)? {
        let len = std::fs::metadata(dest)
            .map_err(|e| Error::io(dest, e))?
            .len();
        bar.set_length(len);
        bar.set_position(len);
        return Ok(len);
    }
    let part = part_path(dest);
    if let Some(size) = remote.size {
        bar.set_length(size);
    }
    let mut last_err = None;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
        }
        match fetch_once(client, remote, &part, bar).await {
            Ok(()) => {
                last_err = None;
                break;
            }
            // The server's answer, not the network: retrying will not help.
            Err(e @ (Error::Http { .. } | Error::TooLarge { .. })) => return Err(e),
            Err(e) => last_err = Some(e),
        }
    }
    if let Some(e) = last_err {
        return Err(e);
    }
    let len = std::fs::metadata(&part)
        .map_err(|e| Error::io(&part, e))?
        .len();
    if remote.size.is_some_and(|s| s != len) || !remote.checksum.verify(&part)? {
        let _ = std::fs::remove_file(&part);
        return Err(Error::Checksum {
            url: remote.url.clone(),
        });
    }
    std::fs::rename(&part, dest).map_err(|e| Error::io(dest, e))?;
    Ok(len)
}

/// One request: continue `part` from its current length (or start it), stream to the end.
async fn fetch_once(
    client: &reqwest::Client,
    remote: &Remote,
    part: &Path,
    bar: &ProgressBar,
) -> Result<(), Error> {
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    if remote.size.is_some_and(|s| have == s) {
        return Ok(());
    }
    let mut req = client.get(&remote.url);
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let mut resp = req
        .send()
        .await
        .map_err(|e| Error::network(&remote.url, e))?;
    let status = resp.status();
    let append = match status.as_u16() {
        206 if have > 0 => true,
        200 => false,
        // The part already holds everything the server has.
        416 if have > 0 => return Ok(()),
        _ => {
            return Err(Error::Http {
                url: remote.url.clone(),
                status: status.as_u16(),
            })
        }
    };
    // Made again here: a failed pull of the same model beside this one removes its staging
    // directory when it holds nothing yet.
    if let Some(dir) = part.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| Error::io(dir, e))?;
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(part)
        .await
        .map_err(|e| Error::io(part, e))?;
    bar.set_position(if append { have } else { 0 });
    // A mirror that sends more than the file can hold (endless zeros) is cut off before it fills
    // the disk: at the listed size, or at `MAX_UNLISTED_SIZE` for a file listed without one.
    let limit = remote.size.unwrap_or(MAX_UNLISTED_SIZE);
    let mut written = if append { have } else { 0 };
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| Error::network(&remote.url, e))?
    {
        written += chunk.len() as u64;
        if written > limit {
            drop(file);
            let _ = std::fs::remove_file(part);
            return Err(Error::TooLarge {
                url: remote.url.clone(),
                limit,
            });
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| Error::io(part, e))?;
        bar.inc(chunk.len() as u64);
    }
    file.flush().await.map_err(|e| Error::io(part, e))?;
    let got = std::fs::metadata(part)
        .map_err(|e| Error::io(part, e))?
        .len();
    match remote.size {
        Some(size) if got < size => Err(Error::Network {
            url: remote.url.clone(),
            message: format!("connection closed after {got} of {size} bytes"),
        }),
        _ => Ok(()),
    }
}

/// A progress bar for one file (drawn on stderr only when it is a terminal).
pub fn bar(name: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:28} {bar:30} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>11} eta {eta}",
        )
        .expect("valid template"),
    );
    bar.set_message(name.to_string());
    bar
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A server that answers every request `200` with endless zeros and no length; returns its
    /// base URL and how many requests it took.
    pub(crate) async fn endless_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>)
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = served.clone();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    let head = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
                    if sock.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let zeros = vec![0u8; 64 * 1024];
                    while sock.write_all(&zeros).await.is_ok() {}
                });
            }
        });
        (base, served)
    }

    /// A mirror that streams more than the file's listed size (no Content-Length, endless
    /// zeros) is cut off at the size, its partial file deleted, and not asked again.
    #[tokio::test]
    async fn a_mirror_that_sends_too_much_is_cut_off() {
        let (base, served) = endless_server().await;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("model.th");
        let remote = Remote {
            url: format!("{base}/model.th"),
            size: Some(1_000_000),
            checksum: Checksum::Sha256Prefix("00000000".into()),
        };
        let client = reqwest::Client::new();
        let err = fetch(&client, &remote, &dest, &ProgressBar::hidden())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("sent more than the 1000000 bytes"), "{err}");
        assert!(!part_path(&dest).exists() && !dest.exists());
        // The server's answer, not the network: not retried.
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn checksums_of_each_kind() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello\n").unwrap();
        // `printf 'hello\n' | sha256sum` and `git hash-object`.
        let sha = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
        assert!(Checksum::Sha256(sha.into()).verify(&p).unwrap());
        assert!(Checksum::Sha256Prefix("5891b5b5".into())
            .verify(&p)
            .unwrap());
        assert!(!Checksum::Sha256Prefix("5891b5b6".into())
            .verify(&p)
            .unwrap());
        assert!(!Checksum::Sha256Prefix(String::new()).verify(&p).unwrap());
        let blob = "ce013625030ba8dba906f756967f9e9ca394464a";
        assert!(Checksum::GitBlobSha1(blob.into()).verify(&p).unwrap());
        assert!(!Checksum::Sha256(blob.into()).verify(&p).unwrap());
    }

    #[test]
    fn part_file_sits_beside_its_destination() {
        assert_eq!(
            part_path(Path::new("/m/x/model.safetensors")),
            PathBuf::from("/m/x/model.safetensors.part")
        );
    }
}
