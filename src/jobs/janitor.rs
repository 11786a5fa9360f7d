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

/// What one sweep handled: expired result links and old uploads (their files deleted), and
/// objects whose delete failed, left for the next sweep.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub results: usize,
    pub uploads: usize,
    pub retry_later: usize,
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
            Ok(s) if s.results + s.uploads > 0 => {
                tracing::info!(
                    results = s.results,
                    uploads = s.uploads,
                    not_deleted_yet = s.retry_later,
                    "janitor swept expired results and old uploads"
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
    Ok(swept)
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
