//! The janitor: deletes from disk what nobody can ask for any more, so a server that runs for months
//! does not fill its disk. Result files go when their links expire (`--result-ttl-hours`); an
//! upload goes once its job has been finished for as long. It runs shortly after start and then
//! every [`EVERY`], a bounded batch at a time, the database first (so a link never points at a file
//! that is gone without also being gone itself). Files on disk are deleted only under the media
//! directory, objects only under the bucket prefix this node was given.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::media::{self, Media};
use crate::store::{self, Store};

/// How often the janitor looks.
pub const EVERY: Duration = Duration::from_secs(600);
/// Wait after start before the first look (start-up has better things to do).
const FIRST_AFTER: Duration = Duration::from_secs(5);
/// Rows handled per transaction.
const BATCH: usize = 500;
/// How long a file the database does not know of is left alone: an upload still arriving (its
/// file is written as its bytes come, so it is never this old) or a run still writing.
pub const ORPHAN_AGE: Duration = Duration::from_secs(3600);

/// What one sweep handled: expired result links and old uploads (their files deleted), objects
/// whose delete failed, left for the next sweep, and files no row leads to (left by a crash).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub results: usize,
    pub uploads: usize,
    pub retry_later: usize,
    pub orphans: usize,
}

/// Sweeps every [`EVERY`] until shutdown.
pub async fn run(
    store: Store,
    media: Media,
    media_dir: PathBuf,
    ttl: Duration,
    shutdown: CancellationToken,
) {
    let mut wait = FIRST_AFTER;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = EVERY;
        match sweep(&store, &media, &media_dir, ttl, store::now_ms()).await {
            Ok(s) if s.results + s.uploads + s.orphans > 0 => {
                tracing::info!(
                    results = s.results,
                    uploads = s.uploads,
                    orphans = s.orphans,
                    not_deleted_yet = s.retry_later,
                    "janitor swept expired results, old uploads and files left by crashes"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("janitor: {e}"),
        }
    }
}

/// Deletes result files whose links expired before `now_ms`, and uploads of jobs finished more
/// than `ttl` before it. `media_dir` bounds what may be deleted on disk.
pub async fn sweep(
    store: &Store,
    media: &Media,
    media_dir: &Path,
    ttl: Duration,
    now_ms: i64,
) -> store::Result<Swept> {
    let mut swept = Swept::default();
    if store.dialect() == store::db::Dialect::Postgres {
        // A fleet's shared poll marks: only the last second's matter.
        store
            .write(move |tx| store::jobs::forget_polls(tx, now_ms - 60_000))
            .await?;
    }
    loop {
        let expired = store
            .write(move |tx| {
                let rows = store::media::expired(tx, now_ms, BATCH)?;
                let tokens: Vec<String> = rows.iter().map(|(t, _)| t.clone()).collect();
                store::media::delete(tx, &tokens)?;
                Ok(rows)
            })
            .await?;
        if expired.is_empty() {
            break;
        }
        swept.results += expired.len();
        let results_root = media_dir.join("results");
        let (paths, failed) = remove_objects(media, expired.into_iter().map(|(_, p)| p)).await;
        tokio::task::spawn_blocking(move || {
            for path in paths {
                remove_file(&path, &results_root, true);
            }
        })
        .await
        .map_err(|e| store::Error::Join(e.to_string()))?;
        swept.retry_later += failed.len();
        retry_later(store, failed, now_ms).await?;
    }
    let now = chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
    let cutoff = store::rfc3339(
        chrono::Duration::from_std(ttl)
            .ok()
            .and_then(|ttl| now.checked_sub_signed(ttl))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC),
    );
    loop {
        let cutoff = cutoff.clone();
        let stale = store
            .write(move |tx| {
                let rows = store::jobs::stale_uploads(tx, &cutoff, BATCH)?;
                let ids: Vec<String> = rows.iter().map(|(id, _)| id.clone()).collect();
                store::jobs::uploads_deleted(tx, &ids)?;
                Ok(rows)
            })
            .await?;
        if stale.is_empty() {
            break;
        }
        swept.uploads += stale.len();
        let uploads_root = media_dir.join("uploads");
        let (paths, failed) = remove_objects(media, stale.into_iter().map(|(_, p)| p)).await;
        tokio::task::spawn_blocking(move || {
            for path in paths {
                remove_file(&path, &uploads_root, false);
            }
        })
        .await
        .map_err(|e| store::Error::Join(e.to_string()))?;
        swept.retry_later += failed.len();
        retry_later(store, failed, now_ms).await?;
    }
    for root in media.local_roots() {
        swept.orphans += sweep_orphans(store, &root, now_ms).await?;
    }
    Ok(swept)
}

/// Deletes, under a local media root, what a crash left and no row leads to, once it is
/// [`ORPHAN_AGE`] old at `now_ms`:
/// - `uploads/<shard>/<upl_id>` with no upload row (the server was killed while receiving it);
/// - `results/<id>/run<N>` of a job or generation whose current run is not `N` (a run cut off by
///   a crash, or a stale fleet run whose end was ignored), or that does not exist at all.
///
/// Files a row points at are never touched here, and the current run's directory is left alone
/// however old it is (a long run may write early and finish late).
async fn sweep_orphans(store: &Store, root: &Path, now_ms: i64) -> store::Result<usize> {
    let root = root.to_path_buf();
    let (uploads, runs) = tokio::task::spawn_blocking(move || orphan_candidates(&root, now_ms))
        .await
        .map_err(|e| store::Error::Join(e.to_string()))?;
    // Decided against the database here; deleted on a blocking thread below, as the sweeps
    // above delete theirs.
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    for (id, path) in uploads {
        let known = {
            let id = id.clone();
            store
                .read(move |tx| store::jobs::upload_known(tx, &id))
                .await?
        };
        if !known {
            tracing::info!(path = %path.display(), "janitor: an upload no row knows of (left by a crash); deleted");
            files.push(path);
        }
    }
    for (id, run, dir) in runs {
        let owner = {
            let id = id.clone();
            store
                .read(move |tx| {
                    Ok(match id.split_once('_').map(|(prefix, _)| prefix) {
                        Some("job") => store::jobs::get(tx, &id)?.map(|j| j.runs),
                        Some("gen") => store::generations::get(tx, &id)?.map(|g| g.runs),
                        // Not a job's or a generation's directory: left alone.
                        _ => Some(run),
                    })
                })
                .await?
        };
        if owner == Some(run) {
            continue;
        }
        tracing::info!(dir = %dir.display(), "janitor: output of a run that can no longer finish; deleted");
        dirs.push(dir);
    }
    tokio::task::spawn_blocking(move || {
        let mut removed = files
            .iter()
            .filter(|f| std::fs::remove_file(f).is_ok())
            .count();
        for dir in &dirs {
            if std::fs::remove_dir_all(dir).is_ok() {
                removed += 1;
            }
            if let Some(parent) = dir.parent() {
                // Fails (as it should) while the item has other runs.
                let _ = std::fs::remove_dir(parent);
            }
        }
        removed
    })
    .await
    .map_err(|e| store::Error::Join(e.to_string()))
}

/// Uploads (id, path) and run directories (id, run, path) under `root` last modified
/// [`ORPHAN_AGE`] or more before `now_ms`; the database decides which of them are orphans.
#[allow(clippy::type_complexity)]
fn orphan_candidates(
    root: &Path,
    now_ms: i64,
) -> (Vec<(String, PathBuf)>, Vec<(String, i64, PathBuf)>) {
    let cutoff = now_ms.saturating_sub(ORPHAN_AGE.as_millis() as i64);
    let old = |p: &Path| {
        std::fs::symlink_metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .is_some_and(|t| (t.as_millis() as i64) <= cutoff)
    };
    let entries = |dir: &Path| -> Vec<(String, PathBuf)> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
            .collect()
    };
    // A directory's uploads are sharded (`uploads/<shard>/<id>`); a bucket's scratch files are
    // not (`uploads/<id>`).
    let mut uploads = Vec::new();
    let mut consider = |name: String, path: PathBuf| {
        if name.starts_with("upl_") && path.is_file() && old(&path) {
            uploads.push((name, path));
        }
    };
    for (name, path) in entries(&root.join("uploads")) {
        if path.is_dir() {
            entries(&path).into_iter().for_each(|(n, p)| consider(n, p));
        } else {
            consider(name, path);
        }
    }
    let mut runs = Vec::new();
    for (id, item) in entries(&root.join("results")) {
        for (name, path) in entries(&item) {
            let run = name.strip_prefix("run").and_then(|n| n.parse::<i64>().ok());
            if let Some(run) = run.filter(|_| path.is_dir() && old(&path)) {
                runs.push((id.clone(), run, path));
            }
        }
    }
    (uploads, runs)
}

/// Deletes the objects among `locations`; returns the others (paths for [`remove_file`]) and the
/// objects whose delete failed.
async fn remove_objects(
    media: &Media,
    locations: impl Iterator<Item = String>,
) -> (Vec<PathBuf>, Vec<String>) {
    let (mut paths, mut failed) = (Vec::new(), Vec::new());
    for location in locations {
        if media::is_object(&location) {
            match media.remove_object(&location).await {
                media::Removal::Deleted => {}
                media::Removal::NotOurs => {
                    tracing::warn!(%location, "janitor: not in this node's bucket and prefix; left alone")
                }
                media::Removal::Failed => {
                    tracing::warn!(%location, "janitor: not deleted; tried again at the next sweep");
                    failed.push(location);
                }
            }
        } else {
            paths.push(PathBuf::from(location));
        }
    }
    (paths, failed)
}

/// Objects whose delete failed (the storage was down, or another node's bucket) go back into the
/// expired media rows under a fresh token nobody holds, so the next sweep tries them again;
/// expiring at `now_ms`, they are not picked up again by this one.
async fn retry_later(store: &Store, failed: Vec<String>, now_ms: i64) -> store::Result<()> {
    if failed.is_empty() {
        return Ok(());
    }
    store
        .write(move |tx| {
            for location in &failed {
                let token = crate::ids::new_id("retry");
                store::media::insert(tx, &token, location, "", "janitor", now_ms)?;
            }
            Ok(())
        })
        .await
}

/// Removes a file (already gone is fine), never anything outside `root`; with `parent`, also its
/// directory once empty (a result's per-run directory; never an upload shard, which a concurrent
/// upload may be about to write into).
fn remove_file(path: &Path, root: &Path, parent: bool) {
    if !path.starts_with(root) {
        tracing::warn!(path = %path.display(), "janitor: not under {}; left alone", root.display());
        return;
    }
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), "janitor: {e}");
        }
    }
    if let Some(dir) = path.parent().filter(|d| parent && *d != root) {
        // Fails (as it should) while the directory holds other files.
        let _ = std::fs::remove_dir(dir);
    }
}
