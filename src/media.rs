//! Where uploads and results live: a directory (the data directory, or `--media-dir`, a
//! filesystem every node of a fleet mounts) or S3-compatible object storage (`--media
//! s3://bucket/prefix`).
//!
//! Engines read and write local files, so with object storage each node works in a scratch
//! directory of its own (`<data dir>/scratch/`) and moves files at the edges:
//!
//! * an upload goes to the bucket *before* its job is admitted, since any worker may claim it;
//!   small uploads still wait in the database and are put by the worker that claims them;
//! * a worker fetches its input into scratch before running, and puts the result files it
//!   publishes after;
//! * any node serves a result from the bucket, `Range` requests included.
//!
//! A file's *location*, what the database stores, is its absolute path or `s3://bucket/key` for
//! an object. Rows written before a switch from one to the other are still served from where they
//! are (a path from disk, an object from the bucket if this node has it configured).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};
use tokio::io::AsyncWriteExt;

use crate::error::{ApiError, ApiResult, Code};

/// The file in a media directory naming the fleet whose storage it is.
const MARKER_FILE: &str = ".soundcheck-fleet";
/// The same, as a key under a bucket's prefix.
const MARKER_KEY: &str = ".soundcheck/fleet";

/// The most of a marker read: a fleet id is ~32 bytes.
const MARKER_MAX: u64 = 1024;

/// What a storage's fleet marker says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    Absent,
    /// The id of the fleet whose storage it is.
    Fleet(String),
    /// Something that is not a fleet id (empty, binary, too long), described.
    Invalid(String),
}

impl Marker {
    fn parse(bytes: &[u8]) -> Marker {
        let Ok(text) = std::str::from_utf8(bytes) else {
            return Marker::Invalid("not text".into());
        };
        let id = text.trim();
        let valid = id.len() <= 64
            && id.strip_prefix("fleet_").is_some_and(|rest| {
                !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric())
            });
        if valid {
            Marker::Fleet(id.to_string())
        } else if id.is_empty() {
            Marker::Invalid("empty".into())
        } else {
            Marker::Invalid(format!(
                "{:?} is not a fleet id",
                id.chars().take(40).collect::<String>()
            ))
        }
    }
}

/// The media storage of one node.
#[derive(Clone, Debug)]
pub enum Media {
    /// A directory: uploads under `uploads/`, results under `results/`.
    Dir(PathBuf),
    /// A bucket (and key prefix) in S3-compatible object storage.
    S3(Arc<Bucket>),
}

/// An S3 bucket as this node uses it.
#[derive(Debug)]
pub struct Bucket {
    store: AmazonS3,
    /// `s3://bucket/prefix` as given, without a trailing slash.
    url: String,
    bucket: String,
    /// The key prefix, without leading or trailing slashes; may be empty.
    prefix: String,
    /// This node's own working directory for files on their way in or out.
    scratch: PathBuf,
    /// What looks wrong in the configuration, said if the bucket cannot be used.
    hints: Vec<String>,
}

/// What became of an object the janitor deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Deleted,
    /// Not in this node's bucket and prefix: left alone, for good.
    NotOurs,
    /// The storage refused or did not answer: worth another try.
    Failed,
}

/// A local copy of an input, removed when dropped if it was fetched for the occasion.
#[derive(Debug)]
pub struct LocalFile {
    pub path: PathBuf,
    temporary: bool,
}

impl LocalFile {
    /// A file removed when this is dropped (however the code holding it ends).
    pub fn temporary(path: PathBuf) -> LocalFile {
        LocalFile {
            path,
            temporary: true,
        }
    }

    /// Keeps the file: it is not removed on drop.
    pub fn keep(mut self) -> PathBuf {
        self.temporary = false;
        std::mem::take(&mut self.path)
    }
}

/// Why [`Media::local_copy`] has no copy to give.
#[derive(Debug)]
pub enum CopyError {
    /// The object (or file) is not there any more.
    Gone,
    /// The storage did not answer, or the copy could not be written; the detail is logged.
    Unavailable(String),
}

impl std::fmt::Display for CopyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CopyError::Gone => f.write_str("the input is no longer stored"),
            CopyError::Unavailable(why) => f.write_str(why),
        }
    }
}

impl Drop for LocalFile {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Splits `s3://bucket/prefix` into the bucket's name and the prefix (without outer slashes).
pub fn parse_s3_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| format!("{url:?} is not an s3://bucket/prefix URL"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid_bucket {
        return Err(format!(
            "{bucket:?} is not an S3 bucket name (3-63 lowercase letters, digits, '-' and '.')"
        ));
    }
    let prefix = prefix.trim_matches('/');
    if prefix
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
        && !prefix.is_empty()
    {
        return Err(format!(
            "the key prefix {prefix:?} has an empty, '.' or '..' part"
        ));
    }
    // Keys are written as given: characters an object path would have to escape are refused.
    if let Some(c) = prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')))
    {
        return Err(format!(
            "the key prefix {prefix:?} has {c:?}: use letters, digits, '-', '_', '.' and '/'"
        ));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

impl Media {
    /// The media storage `--media` / `--media-dir` describe. An S3 URL takes its endpoint and
    /// credentials from the usual `AWS_*` variables (`AWS_ENDPOINT`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP` for a plain-HTTP endpoint).
    pub fn new(url: Option<&str>, dir: &Path, scratch: &Path) -> anyhow::Result<Media> {
        match url {
            None => Ok(Media::Dir(dir.to_path_buf())),
            Some(url) => Media::s3(url, scratch, &[]),
        }
    }

    /// A bucket, configured from the `AWS_*` environment and then `settings`: object_store's
    /// S3 configuration keys and values (e.g. `("aws_endpoint", "http://127.0.0.1:9000")`).
    pub fn s3(url: &str, scratch: &Path, settings: &[(&str, &str)]) -> anyhow::Result<Media> {
        let (bucket, prefix) = parse_s3_url(url).map_err(|e| anyhow::anyhow!("--media: {e}"))?;
        // Rides out a storage outage of up to about 45 s (backing off to 15 s between tries);
        // longer, and the request fails: a submit with 503, a run as `internal_error`, refunded.
        let retry = object_store::RetryConfig {
            max_retries: 8,
            retry_timeout: Duration::from_secs(45),
            ..Default::default()
        };
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_retry(retry);
        for (key, value) in settings {
            let key = key
                .parse()
                .map_err(|e| anyhow::anyhow!("S3 setting {key}: {e}"))?;
            builder = builder.with_config(key, *value);
        }
        let store = builder
            .build()
            .map_err(|e| anyhow::anyhow!("--media {url}: {e}"))?;
        let set = |key: &str| {
            std::env::var_os(key.to_ascii_uppercase()).is_some_and(|v| !v.is_empty())
                || settings.iter().any(|(k, _)| k.eq_ignore_ascii_case(key))
        };
        let mut hints = Vec::new();
        if !set("aws_access_key_id") || !set("aws_secret_access_key") {
            hints.push(
                "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (without them \
                 the client asks a cloud instance's metadata service, 169.254.169.254)"
                    .to_string(),
            );
        }
        let endpoint = std::env::var("AWS_ENDPOINT")
            .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
            .unwrap_or_default();
        let allow_http = std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v == "true")
            || settings
                .iter()
                .any(|(k, v)| *k == "aws_allow_http" && *v == "true");
        if endpoint.starts_with("http://") && !allow_http {
            hints.push(format!(
                "AWS_ENDPOINT {endpoint} is plain HTTP: set AWS_ALLOW_HTTP=true to allow it"
            ));
        }
        Ok(Media::S3(Arc::new(Bucket {
            store,
            url: url.trim_end_matches('/').to_string(),
            bucket,
            prefix,
            scratch: scratch.join("scratch"),
            hints,
        })))
    }

    /// Fails early, with the reason, when the bucket cannot be written, read and deleted from.
    pub async fn check(&self) -> anyhow::Result<()> {
        let Media::S3(b) = self else {
            return Ok(());
        };
        // What a killed run left in transit here: this node's own (its data directory is locked).
        let _ = tokio::fs::remove_dir_all(&b.scratch).await;
        let key = b.key(&format!(".soundcheck/probe-{}", crate::ids::new_id("node")));
        let fail = |what: &str, e: object_store::Error| {
            let hints = if b.hints.is_empty() {
                "check the bucket exists and the AWS_ENDPOINT / AWS_ACCESS_KEY_ID / \
                 AWS_SECRET_ACCESS_KEY / AWS_REGION settings"
                    .to_string()
            } else {
                b.hints.join("; ")
            };
            anyhow::anyhow!(
                "--media {}: could not {what} an object: {hints} ({e})",
                b.url
            )
        };
        b.store
            .put(&key, PutPayload::from_static(b"soundcheck"))
            .await
            .map_err(|e| fail("write", e))?;
        b.store.head(&key).await.map_err(|e| fail("read", e))?;
        b.store.delete(&key).await.map_err(|e| fail("delete", e))?;
        Ok(())
    }

    /// For banners and logs.
    pub fn describe(&self) -> String {
        match self {
            Media::Dir(dir) => dir.display().to_string(),
            Media::S3(b) => b.url.clone(),
        }
    }

    /// The local directories this node writes uploads and run outputs under (the media
    /// directory, or a bucket's scratch directory), for the janitor's sweep of what a crash left.
    pub fn local_roots(&self) -> Vec<PathBuf> {
        match self {
            Media::Dir(dir) => vec![dir.clone()],
            Media::S3(b) => vec![b.scratch.clone()],
        }
    }

    /// The local file an upload is received into: its final place in a directory; a scratch file
    /// for a bucket (put by [`Media::store_upload`]).
    pub fn upload_path(&self, id: &str) -> PathBuf {
        match self {
            // Sharded by the id's random tail: concurrent creates in one directory contend on
            // its lock (the kernel's, not ours).
            Media::Dir(dir) => dir.join("uploads").join(shard(id)).join(id),
            Media::S3(b) => b.scratch.join("uploads").join(id),
        }
    }

    /// Makes a received upload reachable by every worker before its job is admitted, and returns
    /// its location. `on_disk` says whether it is at `local` (else its bytes wait in the
    /// database, and the claiming worker puts them with [`Media::write`]).
    pub async fn store_upload(&self, id: &str, local: &Path, on_disk: bool) -> ApiResult<String> {
        match self {
            Media::Dir(_) => Ok(local.to_string_lossy().into_owned()),
            Media::S3(b) => {
                let key = b.key(&format!("uploads/{}/{id}", shard(id)));
                if on_disk {
                    b.put_file(&key, local).await.map_err(storage_error)?;
                }
                Ok(b.location(&key))
            }
        }
    }

    /// Removes what [`Media::store_upload`] stored, after a refused or replayed submission.
    pub async fn discard(&self, location: &str) {
        match self.object(location) {
            Some((b, key)) => {
                let _ = b.store.delete(&key).await;
            }
            None if !is_object(location) => {
                let _ = tokio::fs::remove_file(location).await;
            }
            None => {}
        }
    }

    /// Writes bytes at a location (an upload that waited in the database).
    pub async fn write(&self, location: &str, bytes: bytes::Bytes) -> Result<(), String> {
        match self.object(location) {
            Some((b, key)) => b
                .store
                .put(&key, PutPayload::from(bytes))
                .await
                .map(|_| ())
                .map_err(|e| {
                    tracing::warn!(%key, "could not store an upload: {e}");
                    "the media storage did not take it (see the server log)".to_string()
                }),
            None if is_object(location) => Err(not_configured(location)),
            None => {
                let path = PathBuf::from(location);
                tokio::task::spawn_blocking(move || crate::store::jobs::write_upload(&path, &bytes))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// A local file with the content at `location`: the file itself, or a scratch copy of the
    /// object that goes when the returned value is dropped.
    pub async fn local_copy(&self, location: &str) -> Result<LocalFile, CopyError> {
        match self.object(location) {
            Some((b, key)) => {
                let path = b.scratch.join("inputs").join(crate::ids::new_id("in"));
                let file = LocalFile {
                    path,
                    temporary: true,
                };
                match b.get_file(&key, &file.path).await {
                    Ok(()) => Ok(file),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(CopyError::Gone),
                    Err(e) => {
                        // The endpoint and key stay in the log, not in what clients see.
                        tracing::warn!(%location, "could not fetch from the media storage: {e}");
                        Err(CopyError::Unavailable(
                            "could not fetch the input from the media storage (see the server \
                             log)"
                                .into(),
                        ))
                    }
                }
            }
            None if is_object(location) => Err(CopyError::Unavailable(not_configured(location))),
            None => Ok(LocalFile {
                path: PathBuf::from(location),
                temporary: false,
            }),
        }
    }

    /// The local directory a run of `id` writes its files in. A directory per run: a stalled run
    /// whose work was claimed again elsewhere can never overwrite the files the final run
    /// published.
    pub fn run_dir(&self, id: &str, run: i64) -> PathBuf {
        let root = match self {
            Media::Dir(dir) => dir.clone(),
            Media::S3(b) => b.scratch.clone(),
        };
        root.join("results").join(id).join(format!("run{run}"))
    }

    /// Publishes a file a run wrote in its [`Media::run_dir`]: returns the location to serve it
    /// from (the file itself, or the object it was put to).
    pub async fn publish(&self, id: &str, run: i64, file: &Path) -> Result<String, String> {
        match self {
            Media::Dir(_) => Ok(file.to_string_lossy().into_owned()),
            Media::S3(b) => {
                let name = file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let key = b.key(&format!("results/{id}/run{run}/{name}"));
                b.put_file(&key, file).await.map_err(|e| {
                    tracing::warn!(%key, "could not store a result: {e}");
                    format!("could not store the result {name} in the media storage (see the server log)")
                })?;
                Ok(b.location(&key))
            }
        }
    }

    /// Called when a run is over: a bucket's scratch run directory goes (its files were put or
    /// are not wanted); a directory's stays (it is where the results are served from), but the
    /// directories of the item's earlier runs go: runs cut off by a crash, a shutdown or a lost
    /// lease, whose files no link names.
    pub async fn run_over(&self, run_dir: &Path) {
        if let Media::Dir(_) = self {
            let run = run_dir
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("run"))
                .and_then(|n| n.parse::<i64>().ok());
            if let (Some(item), Some(run)) = (run_dir.parent(), run) {
                for earlier in 1..run {
                    let _ = tokio::fs::remove_dir_all(item.join(format!("run{earlier}"))).await;
                }
            }
        }
        if let Media::S3(_) = self {
            let _ = tokio::fs::remove_dir_all(run_dir).await;
            // The item's directory too, once its last run's is gone (fails while another runs).
            if let Some(item) = run_dir.parent() {
                let _ = tokio::fs::remove_dir(item).await;
            }
        }
    }

    /// Deletes an object the janitor found expired (already gone counts as deleted).
    pub async fn remove_object(&self, location: &str) -> Removal {
        match self.object(location) {
            Some((b, key)) => match b.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Removal::Deleted,
                Err(e) => {
                    tracing::warn!("could not delete {location}: {e}");
                    Removal::Failed
                }
            },
            None => Removal::NotOurs,
        }
    }

    /// What this storage's marker says (see [`Marker`]): how a fleet's nodes tell that they
    /// share one storage, whatever path or URL each was given. At most 1 KiB is read.
    pub async fn read_marker(&self) -> anyhow::Result<Marker> {
        use tokio::io::AsyncReadExt;
        let bytes = match self {
            Media::Dir(dir) => {
                let path = dir.join(MARKER_FILE);
                let file = match tokio::fs::File::open(&path).await {
                    Ok(file) => file,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Ok(Marker::Absent)
                    }
                    Err(e) => anyhow::bail!("reading {}: {e}", path.display()),
                };
                let mut bytes = Vec::new();
                if let Err(e) = file.take(MARKER_MAX).read_to_end(&mut bytes).await {
                    return Ok(Marker::Invalid(format!("unreadable ({e})")));
                }
                bytes
            }
            Media::S3(b) => {
                let key = b.key(MARKER_KEY);
                let options = GetOptions {
                    range: Some(GetRange::Bounded(0..MARKER_MAX)),
                    ..Default::default()
                };
                match b.store.get_opts(&key, options).await {
                    Ok(got) => got.bytes().await?.to_vec(),
                    Err(object_store::Error::NotFound { .. }) => return Ok(Marker::Absent),
                    Err(e) => anyhow::bail!("--media {}: reading {MARKER_KEY}: {e}", b.url),
                }
            }
        };
        Ok(Marker::parse(&bytes))
    }

    /// Marks this storage as the fleet `fleet_id`'s (a file is written whole, then renamed
    /// into place, so a kill never leaves half a marker).
    pub async fn write_marker(&self, fleet_id: &str) -> anyhow::Result<()> {
        let text = format!("{fleet_id}\n");
        match self {
            Media::Dir(dir) => {
                let path = dir.join(MARKER_FILE);
                let partial = dir.join(format!("{MARKER_FILE}.partial"));
                let write = async {
                    tokio::fs::create_dir_all(dir).await?;
                    tokio::fs::write(&partial, text).await?;
                    tokio::fs::rename(&partial, &path).await
                };
                write
                    .await
                    .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
            }
            Media::S3(b) => {
                b.store
                    .put(&b.key(MARKER_KEY), PutPayload::from(text.into_bytes()))
                    .await
                    .map_err(|e| anyhow::anyhow!("--media {}: writing {MARKER_KEY}: {e}", b.url))?;
                Ok(())
            }
        }
    }

    /// Where the marker is, for messages.
    pub fn marker_location(&self) -> String {
        match self {
            Media::Dir(dir) => dir.join(MARKER_FILE).display().to_string(),
            Media::S3(b) => b.location(&b.key(MARKER_KEY)),
        }
    }

    /// Serves what is at `location` (a result, or an upload for the dashboard), with `Range`.
    pub async fn serve(&self, location: &str, req: Request) -> ApiResult<Response> {
        if !is_object(location) {
            let is_file = tokio::fs::metadata(location)
                .await
                .is_ok_and(|m| m.is_file());
            if !is_file {
                return Err(ApiError::not_found("This file is no longer stored."));
            }
            return crate::api::media::serve_file(location, req).await;
        }
        let (b, key) = self
            .object(location)
            .ok_or_else(|| ApiError::new(Code::ServiceUnavailable, not_configured(location)))?;
        b.serve(&key, req).await
    }

    fn object(&self, location: &str) -> Option<(&Bucket, ObjectPath)> {
        match self {
            Media::S3(b) => b.key_of(location).map(|k| (b.as_ref(), k)),
            Media::Dir(_) => None,
        }
    }
}

/// Whether a stored location names an object rather than a path.
pub fn is_object(location: &str) -> bool {
    location.starts_with("s3://")
}

fn shard(id: &str) -> String {
    id[id.len().saturating_sub(2)..].to_ascii_lowercase()
}

fn not_configured(location: &str) -> String {
    format!("{location} is in object storage this node is not configured for (--media)")
}

fn storage_error(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!("object storage: {e}");
    ApiError::new(
        Code::ServiceUnavailable,
        "The media storage did not answer; try again shortly.",
    )
}

impl Bucket {
    fn key(&self, rest: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(rest)
        } else {
            ObjectPath::from(format!("{}/{rest}", self.prefix))
        }
    }

    fn location(&self, key: &ObjectPath) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// The key of a location in this bucket under this prefix; `None` for anything else.
    fn key_of(&self, location: &str) -> Option<ObjectPath> {
        let key = location
            .strip_prefix("s3://")?
            .strip_prefix(self.bucket.as_str())?
            .strip_prefix('/')?;
        let inside = self.prefix.is_empty()
            || key
                .strip_prefix(self.prefix.as_str())
                .is_some_and(|rest| rest.starts_with('/'));
        let path = ObjectPath::parse(key).ok()?;
        inside.then_some(path)
    }

    /// Puts a local file, streaming it (multipart above a few MB).
    async fn put_file(&self, key: &ObjectPath, file: &Path) -> std::io::Result<()> {
        let store: Arc<dyn ObjectStore> = Arc::new(self.store.clone());
        let mut writer = object_store::buffered::BufWriter::new(store, key.clone());
        let mut input = tokio::fs::File::open(file).await?;
        match tokio::io::copy(&mut input, &mut writer).await {
            Ok(_) => writer.shutdown().await,
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    /// Gets an object into a local file (written whole, then renamed into place).
    async fn get_file(&self, key: &ObjectPath, file: &Path) -> std::io::Result<()> {
        if let Some(dir) = file.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let partial = file.with_extension("partial");
        let result = async {
            let got = self.store.get(key).await.map_err(|e| match e {
                object_store::Error::NotFound { .. } => {
                    std::io::Error::new(std::io::ErrorKind::NotFound, e)
                }
                e => std::io::Error::other(e),
            })?;
            let mut out = tokio::fs::File::create(&partial).await?;
            let mut stream = got.into_stream();
            while let Some(chunk) = stream.next().await {
                out.write_all(&chunk.map_err(std::io::Error::other)?)
                    .await?;
            }
            out.flush().await?;
            tokio::fs::rename(&partial, file).await
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        result
    }

    /// Serves an object: `200` whole, `206` for one satisfiable byte range, `416` otherwise, with
    /// the same `Range`/`If-Range` rules as files on disk.
    async fn serve(&self, key: &ObjectPath, mut req: Request) -> ApiResult<Response> {
        let meta = match self.store.head(key).await {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(ApiError::not_found("This file is no longer stored."))
            }
            Err(e) => return Err(storage_error(e)),
        };
        let modified = SystemTime::from(meta.last_modified);
        crate::api::media::range_preconditions(req.headers_mut(), Some(modified));
        let size = meta.size;
        let range = req
            .headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(|v| byte_range(v, size));
        let name = key.filename().unwrap_or_default();
        let mime = mime_guess::from_path(name).first_or_octet_stream();
        let mut builder = Response::builder()
            .header(header::ACCEPT_RANGES, "bytes")
            .header(header::CONTENT_TYPE, mime.as_ref())
            .header(header::LAST_MODIFIED, httpdate::fmt_http_date(modified));
        let span = match range {
            None => 0..size,
            Some(Some(ref r)) => r.clone(),
            Some(None) => return Ok(crate::api::media::not_satisfiable(size)),
        };
        builder = match range {
            Some(_) => builder.status(StatusCode::PARTIAL_CONTENT).header(
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{size}", span.start, span.end - 1),
            ),
            None => builder.status(StatusCode::OK),
        };
        builder = builder.header(header::CONTENT_LENGTH, span.end - span.start);
        let body = if req.method() == Method::HEAD || span.is_empty() {
            Body::empty()
        } else {
            let options = GetOptions {
                range: Some(GetRange::Bounded(span.clone())),
                // The object the head described, not one replaced since.
                if_match: meta.e_tag.clone(),
                ..Default::default()
            };
            let got = self
                .store
                .get_opts(key, options)
                .await
                .map_err(storage_error)?;
            Body::from_stream(got.into_stream())
        };
        let mut resp = builder.body(body).map_err(ApiError::internal)?;
        resp.headers_mut()
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("private, max-age=3600"));
        Ok(resp)
    }
}

/// The byte span a single `bytes=` range asks of a body of `size` bytes (RFC 9110 §14.1.2: a
/// suffix longer than the body is all of it, a last position past the end is the end); `None` when
/// it is unsatisfiable or unreadable (`416`). Only what `range_preconditions` lets through gets
/// here, for objects in a bucket and files on disk alike.
pub(crate) fn byte_range(value: &str, size: u64) -> Option<Range<u64>> {
    // A position is digits; one too large for 64 bits is past any file, not an error (§14.1.1:
    // "recipients … MUST anticipate potentially large decimal numerals").
    let position = |digits: &str| -> Option<u64> {
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().unwrap_or(u64::MAX))
    };
    let set = value.strip_prefix("bytes=")?.trim();
    let (first, last) = set.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let span = if first.is_empty() {
        let n = position(last)?;
        (n > 0).then(|| size.saturating_sub(n)..size)?
    } else {
        let start = position(first)?;
        let end = if last.is_empty() {
            size
        } else {
            let last = position(last)?;
            if last < start {
                return None;
            }
            last.saturating_add(1).min(size)
        };
        start..end
    };
    (span.start < size && !span.is_empty()).then_some(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_are_a_bucket_and_a_clean_prefix() {
        assert_eq!(
            parse_s3_url("s3://media-bucket/soundcheck/prod/").unwrap(),
            ("media-bucket".into(), "soundcheck/prod".into())
        );
        assert_eq!(
            parse_s3_url("s3://media").unwrap(),
            ("media".into(), "".into())
        );
        assert!(parse_s3_url("https://media/x").is_err());
        assert!(parse_s3_url("s3://Upper/x").is_err());
        assert!(parse_s3_url("s3://ab").is_err());
        assert!(parse_s3_url("s3://media/a/../b").is_err());
        assert!(parse_s3_url("s3://media/a//b").is_err());
        for odd in ["team~1", "a%20b", "x#y", "q?", "s p", "a*b", "é"] {
            assert!(parse_s3_url(&format!("s3://media/{odd}")).is_err(), "{odd}");
        }
        assert!(parse_s3_url("s3://media/Team_1/v2.0-a").is_ok());
    }

    #[test]
    fn byte_ranges_follow_rfc_9110() {
        assert_eq!(byte_range("bytes=0-99", 1000), Some(0..100));
        assert_eq!(byte_range("bytes=990-2000", 1000), Some(990..1000));
        assert_eq!(byte_range("bytes=500-", 1000), Some(500..1000));
        assert_eq!(byte_range("bytes=-100", 1000), Some(900..1000));
        assert_eq!(byte_range("bytes=-5000", 1000), Some(0..1000));
        assert_eq!(byte_range("bytes=1000-", 1000), None);
        assert_eq!(byte_range("bytes=-0", 1000), None);
        assert_eq!(byte_range("bytes=5-4", 1000), None);
        assert_eq!(byte_range("bytes=x-4", 1000), None);
        assert_eq!(byte_range("bytes=0-0", 0), None);
        let huge = "99999999999999999999";
        assert_eq!(byte_range(&format!("bytes=-{huge}"), 1000), Some(0..1000));
        assert_eq!(
            byte_range(&format!("bytes=10-{huge}"), 1000),
            Some(10..1000)
        );
        assert_eq!(byte_range(&format!("bytes={huge}-"), 1000), None);
        assert_eq!(byte_range("bytes=+5-9", 1000), None);
    }

    #[test]
    fn only_locations_under_the_prefix_are_ours() {
        let media = Media::S3(Arc::new(Bucket {
            store: AmazonS3Builder::new()
                .with_bucket_name("media")
                .with_region("us-east-1")
                .build()
                .unwrap(),
            url: "s3://media/sc".into(),
            bucket: "media".into(),
            prefix: "sc".into(),
            scratch: PathBuf::from("/tmp/x"),
            hints: Vec::new(),
        }));
        let Media::S3(b) = &media else { unreachable!() };
        let key = b.key("results/job_1/run1/a.wav");
        assert_eq!(key.as_ref(), "sc/results/job_1/run1/a.wav");
        assert_eq!(b.location(&key), "s3://media/sc/results/job_1/run1/a.wav");
        assert_eq!(b.key_of(&b.location(&key)), Some(key));
        assert_eq!(b.key_of("s3://media/scx/a.wav"), None);
        assert_eq!(b.key_of("s3://other/sc/a.wav"), None);
        assert_eq!(b.key_of("/data/results/a.wav"), None);
        assert!(is_object("s3://media/sc/a") && !is_object("/data/a"));
        assert_eq!(
            media.run_dir("job_1", 2),
            PathBuf::from("/tmp/x/results/job_1/run2")
        );
    }
}
