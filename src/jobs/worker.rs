//! The worker pool: N tasks that claim queued generations and jobs from SQLite, run their engine on
//! a blocking thread (device-bound engines one at a time), publish result files and finish the row,
//! its credits and its webhook event in one transaction. A run cut off by shutdown is re-queued;
//! one cut off by a crash is re-queued at the next start (`recover`).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::engine::{JobContext, JobKind, Resource};
use super::registry::Registry;
use super::{EngineError, GenerationInput};
use crate::audio::Audio;
use crate::faults::{Fault, Faults};
use crate::store::generations::Generation;
use crate::store::jobs::Job;
use crate::store::states::{FailCode, LedgerKind};
use crate::store::{self, credits, Store};
use crate::views::GenerationParameters;
use crate::webhooks::dispatch::Dispatcher;

/// Live progress of running jobs and generations, by id (in memory: a restart re-runs them).
pub type ProgressMap = Arc<Mutex<HashMap<String, f32>>>;

/// The stop signal of each run in progress, by id: a cancel (`DELETE`) fires it so the engine
/// stops between steps. The cancel itself ends the row; the run's own end is then a no-op.
pub type RunStops = Arc<Mutex<HashMap<String, CancellationToken>>>;

/// Bit rate of generated MP3s.
const MP3_KBPS: u32 = 192;
/// Sample rate of every generation's MP3.
const DELIVERY_RATE: u32 = 44_100;

/// Longest a worker sleeps without a wake-up before looking at the queue again.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// What the workers share.
#[derive(Clone)]
pub struct Workers {
    pub store: Store,
    pub registry: Arc<Registry>,
    pub dispatcher: Dispatcher,
    pub progress: ProgressMap,
    /// Stop signals of the runs in progress (see `jobs::cancel`).
    pub stops: RunStops,
    /// Woken by submits.
    pub wake: Arc<Notify>,
    /// Serialises device-bound engines (one GPU, one model at a time).
    pub device: Arc<tokio::sync::Mutex<()>>,
    /// Where inputs come from and results go (a directory, or object storage).
    pub media: crate::media::Media,
    pub public_url: String,
    pub result_ttl: Duration,
    pub generation_timeout: Duration,
    /// Fraction of runs failed as `internal_error` (`serve --fail-rate`).
    pub fail_rate: f64,
    /// How long a claim holds without renewal (`--lease-secs`): a run is renewed every third of
    /// it, and work whose worker stopped renewing is claimed again by another after it.
    pub lease: Duration,
    /// The engine and generator names these workers claim work for (a fleet node: the ones
    /// installed here, or `--engines`); `None` takes everything (a server alone: a job whose
    /// engine is gone is claimed and failed, never left queued).
    pub only: Option<Arc<[String]>>,
    pub shutdown: CancellationToken,
    /// How long a running engine has, once shutdown begins, to give its run back by itself
    /// ([`SHUTDOWN_GRACE`]); after it the worker gives the run back without it.
    pub shutdown_grace: Duration,
    /// This machine's directories, named in failure messages by what they are instead.
    pub local_paths: LocalPaths,
}

/// The local directories a failure message may name (the data, model and media directories, the
/// temporary directory) and what a client reads in their place (`<data>`, `<models>`, …): the
/// API's `error.message` and `errorMessage` say which file went wrong without showing a client
/// this machine's file system. The server log keeps the full message.
#[derive(Debug, Clone, Default)]
pub struct LocalPaths(Arc<[(String, &'static str)]>);

impl LocalPaths {
    /// `dirs` as (directory, name); a directory is matched as given and as its canonical path.
    pub fn new(dirs: &[(&std::path::Path, &'static str)]) -> LocalPaths {
        let mut pairs: Vec<(String, &'static str)> = Vec::new();
        for &(dir, name) in dirs {
            let canonical = std::fs::canonicalize(dir).ok();
            for path in [Some(dir.to_path_buf()), canonical].into_iter().flatten() {
                let text = path.to_string_lossy().trim_end_matches('/').to_string();
                // A root or relative directory would match inside unrelated text.
                if path.is_absolute() && text.len() > 1 && !pairs.iter().any(|(p, _)| *p == text) {
                    pairs.push((text, name));
                }
            }
        }
        // The most specific first: the models directory lies inside the data directory.
        pairs.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        LocalPaths(pairs.into())
    }

    /// `message` with each local directory replaced by its name, where the directory stands
    /// whole: not inside a longer path or URL (`/srv/data` is not hidden in `/srv/database`,
    /// `/tmp` not in `/var/tmp` nor in `http://host/tmp/…`).
    pub fn hide(&self, message: &str) -> String {
        // A character that continues a path: the directory does not end (or begin) there.
        let in_name = |c: char| c.is_alphanumeric() || "-_~".contains(c);
        let mut out = message.to_string();
        for (path, name) in self.0.iter() {
            let mut rest = out.as_str();
            let mut hidden = String::with_capacity(out.len());
            while let Some(at) = rest.find(path.as_str()) {
                let before = rest[..at].chars().last().or(hidden.chars().last());
                let after = &rest[at + path.len()..];
                let mut next = after.chars();
                let ends = match next.next() {
                    None | Some('/') => true,
                    // A full stop ends a sentence, unless a name goes on after it (`/tmp.d`).
                    Some('.') => !next.next().is_some_and(|c| in_name(c) || c == '.'),
                    Some(c) => !in_name(c),
                };
                let begins = !before.is_some_and(|c| in_name(c) || "./:".contains(c));
                hidden.push_str(&rest[..at]);
                hidden.push_str(if begins && ends { name } else { path });
                rest = after;
            }
            hidden.push_str(rest);
            out = hidden;
        }
        out
    }
}

/// How long a running engine has to notice a shutdown and stop (engines look at the token at
/// least every few seconds); well inside the 30 s `serve` waits for its workers.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// What a lease is held on: a job or a generation, and which run of it.
#[derive(Debug, Clone)]
enum Leased {
    Job { id: String, run: i64 },
    Generation { id: String, run: i64 },
}

/// Renews a run's lease until dropped (the run ended, however it ended).
struct LeaseKeeper(CancellationToken);

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// How a run ended.
enum Outcome<T> {
    Done(T),
    Failed(EngineError),
    /// Shutdown (or a cancel) interrupted it: queue it again, unless a cancel already ended it.
    Requeue,
}

impl Workers {
    /// Runs one worker until shutdown.
    pub async fn run_one(self) {
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            let worked = match self.next_item().await {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!("worker could not claim work: {e}");
                    false
                }
            };
            if worked {
                continue;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
    }

    /// Claims and runs one generation or job (generations first: they are interactive).
    async fn next_item(&self) -> store::Result<bool> {
        // Leases are in the database's time, which every node of a fleet shares.
        let lease = self.lease.as_millis() as i64;
        let only = self.only.clone();
        if let Some(g) = self
            .store
            .write_atomic(move |tx| {
                let until = store::db::now_ms(tx)? + lease;
                store::generations::claim_next(tx, until, only.as_deref())
            })
            .await?
        {
            self.wake.notify_one(); // there may be more: let a sibling look
            tracing::info!(generation = %g.id, run = g.runs, pid = std::process::id(), "generation claimed");
            let _lease = self.keep_lease(Leased::Generation {
                id: g.id.clone(),
                run: g.runs,
            });
            self.run_generation(g).await?;
            return Ok(true);
        }
        let only = self.only.clone();
        if let Some(j) = self
            .store
            .write_atomic(move |tx| {
                let until = store::db::now_ms(tx)? + lease;
                store::jobs::claim_next(tx, until, only.as_deref())
            })
            .await?
        {
            self.wake.notify_one();
            // Which process runs what: in a fleet, the pid tells the nodes on one machine apart.
            tracing::info!(job = %j.id, run = j.runs, pid = std::process::id(), "job claimed");
            let _lease = self.keep_lease(Leased::Job {
                id: j.id.clone(),
                run: j.runs,
            });
            self.run_job(j).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Renews the lease of a claimed run every third of [`Workers::lease`] until the returned
    /// keeper is dropped. A renewal that finds the run no longer this worker's (its lease ran out
    /// while this process stalled and another worker claimed it again) stops the run here.
    fn keep_lease(&self, item: Leased) -> LeaseKeeper {
        let done = CancellationToken::new();
        let (store, stops, lease, token) = (
            self.store.clone(),
            self.stops.clone(),
            self.lease,
            done.clone(),
        );
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(lease / 3) => {}
                }
                let it = item.clone();
                let ms = lease.as_millis() as i64;
                let renewed = store
                    .write_atomic(move |tx| {
                        let until = store::db::now_ms(tx)? + ms;
                        match &it {
                            Leased::Job { id, run } => {
                                store::jobs::renew_lease(tx, id, *run, until)
                            }
                            Leased::Generation { id, run } => {
                                store::generations::renew_lease(tx, id, *run, until)
                            }
                        }
                    })
                    .await;
                let id = match &item {
                    Leased::Job { id, .. } | Leased::Generation { id, .. } => id,
                };
                match renewed {
                    Ok(true) => {}
                    // Ended (a cancel) or claimed again elsewhere: this run's end writes nothing.
                    Ok(false) => {
                        if !token.is_cancelled() {
                            tracing::warn!(%id, "the run's lease is no longer ours; stopping it");
                            if let Some(stop) = stops.lock().unwrap().get(id) {
                                stop.cancel();
                            }
                        }
                        return;
                    }
                    // The store cannot write now; the next tick tries again before the lease ends.
                    Err(e) => tracing::warn!(%id, "could not renew the run's lease: {e}"),
                }
            }
        });
        LeaseKeeper(done)
    }

    /// The fault a run gets: the one its request asked for, else `internal_error` for
    /// `--fail-rate` of the runs.
    fn run_fault(&self, stored: Option<&str>) -> Option<Fault> {
        Faults::stored(stored)
            .run
            .or_else(|| crate::faults::roll(self.fail_rate).then_some(Fault::InternalError))
    }

    fn set_progress(progress: &ProgressMap, id: &str, p: f32) {
        progress
            .lock()
            .unwrap()
            .insert(id.to_string(), p.clamp(0.0, 1.0));
    }

    /// Runs `work` on a blocking thread with progress and cancellation wired in, under the device
    /// lock when needed, with an optional timeout. Panics become `internal_error`.
    async fn execute<T, F>(
        &self,
        id: &str,
        resource: Resource,
        fault: Option<Fault>,
        timeout: Option<Duration>,
        work: F,
    ) -> Outcome<T>
    where
        T: Send + 'static,
        F: FnOnce(&(dyn Fn(f32) + Sync), &(dyn Fn() -> bool + Sync)) -> Result<T, EngineError>
            + Send
            + 'static,
    {
        let stop = CancellationToken::new();
        let _registered = StopGuard::register(&self.stops, id, &stop);
        match fault {
            Some(Fault::InternalError) => {
                return Outcome::Failed(EngineError::Internal(
                    "injected fault: internal_error".into(),
                ))
            }
            Some(Fault::ServiceUnavailable) => {
                return Outcome::Failed(EngineError::Unavailable(
                    "injected fault: service_unavailable".into(),
                ))
            }
            Some(Fault::Delay(d)) => {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return Outcome::Requeue,
                    _ = stop.cancelled() => return Outcome::Requeue,
                    _ = tokio::time::sleep(d) => {}
                }
            }
            _ => {}
        }
        let _device = match resource {
            Resource::Device => Some(self.device.lock().await),
            Resource::Cpu => None,
        };
        let shutdown = self.shutdown.clone();
        let progress = self.progress.clone();
        let stop_in = stop.clone();
        let id_in = id.to_string();
        let hang = fault == Some(Fault::Timeout);
        let task = tokio::task::spawn_blocking(move || {
            let report = |p: f32| Workers::set_progress(&progress, &id_in, p);
            let cancelled = || shutdown.is_cancelled() || stop_in.is_cancelled();
            if hang {
                // Injected timeout: behave like an engine that never finishes.
                while !cancelled() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return Err(EngineError::Cancelled);
            }
            std::panic::catch_unwind(AssertUnwindSafe(|| work(&report, &cancelled))).unwrap_or_else(
                |panic| {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "engine panicked".into());
                    Err(EngineError::Internal(format!("engine panicked: {msg}")))
                },
            )
        });
        let limited = async {
            match timeout {
                Some(limit) => tokio::time::timeout(limit, task).await.map_err(|_| limit),
                None => Ok(task.await),
            }
        };
        // At shutdown an engine has `shutdown_grace` to see the token and give its run back.
        // One that is still busy after that is given back here instead: a clean stop is not a
        // crash, so the run must not count towards the job's `MAX_RUNS` (the process exits
        // without waiting for the engine's thread, and its output is never read).
        let given_up = async {
            self.shutdown.cancelled().await;
            tokio::time::sleep(self.shutdown_grace).await;
        };
        let joined = tokio::select! {
            joined = limited => match joined {
                Ok(joined) => joined,
                Err(limit) => {
                    stop.cancel();
                    return Outcome::Failed(EngineError::Internal(timeout_message(
                        resource, limit,
                    )));
                }
            },
            _ = given_up => {
                self.progress.lock().unwrap().remove(id);
                tracing::warn!(
                    id,
                    "still running {:?} after shutdown began; its run is given back",
                    self.shutdown_grace
                );
                return Outcome::Requeue;
            }
        };
        // A finished engine's run shows 1.0 while its results are stored (an upload to object
        // storage can take a while); `commit_end` clears it with the end.
        match &joined {
            Ok(Ok(_)) => Workers::set_progress(&self.progress, id, 1.0),
            _ => {
                self.progress.lock().unwrap().remove(id);
            }
        }
        match joined {
            Ok(Ok(v)) => Outcome::Done(v),
            Ok(Err(EngineError::Cancelled)) => Outcome::Requeue,
            Ok(Err(e)) => Outcome::Failed(e),
            Err(e) => Outcome::Failed(EngineError::Internal(format!("worker task failed: {e}"))),
        }
    }

    async fn run_job(&self, job: Job) -> store::Result<()> {
        let kind = JobKind::from_endpoint(&job.endpoint);
        let engine = kind.and_then(|k| self.registry.engine(k).cloned());
        let Some(engine) = engine.filter(|e| e.name() == job.engine) else {
            let err = EngineError::Unavailable(format!(
                "engine {} for {} is no longer installed",
                job.engine, job.endpoint
            ));
            return self.finish_job(&job, Err(err)).await;
        };
        // Each run writes in a directory of its own: a stalled run whose job was claimed again
        // elsewhere can never overwrite or clear the files the job's final run published.
        let out_dir = self.media.run_dir(&job.id, job.runs);
        let ended = self.run_job_in(&job, engine, &out_dir).await;
        self.media.run_over(&out_dir).await;
        ended
    }

    async fn run_job_in(
        &self,
        job: &Job,
        engine: Arc<dyn crate::jobs::Engine>,
        out_dir: &Path,
    ) -> store::Result<()> {
        if let Err(e) = reset_dir(out_dir) {
            return self
                .finish_job(job, Err(EngineError::Internal(e.to_string())))
                .await;
        }
        if job.upload_inline {
            match self.materialize_upload(job).await {
                Ok(()) => {}
                // Shutting down while the store could not be reached: the run is left to the
                // lease (another node) or the next start's recovery, not failed.
                Err(Materialize::Stopped(e)) => return Err(e),
                Err(Materialize::Failed(e)) => {
                    return self.finish_job(job, Err(EngineError::Internal(e))).await
                }
            }
        }
        // With object storage, a scratch copy that goes when this returns.
        let local = match self.media.local_copy(&job.upload_path).await {
            Ok(local) => local,
            Err(e) => {
                return self
                    .finish_job(job, Err(EngineError::Internal(e.to_string())))
                    .await
            }
        };
        let fault = self.run_fault(job.fault.as_deref());
        let (input, params, dir) = (
            local.path.clone(),
            job.params.clone(),
            out_dir.to_path_buf(),
        );
        let timeout = (fault == Some(Fault::Timeout)).then_some(Duration::from_secs(1));
        let outcome = self
            .execute(
                &job.id,
                engine.resource(),
                fault,
                timeout,
                move |progress, cancelled| {
                    let ctx = JobContext {
                        input: &input,
                        params: &params,
                        out_dir: &dir,
                        progress,
                        cancelled,
                    };
                    engine.run(&ctx)
                },
            )
            .await;
        match outcome {
            Outcome::Done(output) => {
                let published = self
                    .publish(&job.id, job.runs, output.result, out_dir)
                    .await;
                self.finish_job(job, published).await
            }
            Outcome::Failed(e) => self.finish_job(job, Err(e)).await,
            Outcome::Requeue => {
                let (id, run) = (job.id.clone(), job.runs);
                self.store
                    .write(move |tx| store::jobs::requeue(tx, &id, run))
                    .await
            }
        }
    }

    /// Writes an upload kept in the database to its location, then forgets the bytes. Run again
    /// after a crash between the two steps, it rewrites the same file. The database steps are
    /// retried while the store cannot be reached or written (a fleet's database restarting, a
    /// full disk): a job is not failed for an outage it could wait out.
    async fn materialize_upload(&self, job: &Job) -> Result<(), Materialize> {
        let id = job.id.clone();
        let bytes = self
            .store_retrying(&job.id, move |store| {
                let id = id.clone();
                async move {
                    store
                        .read(move |c| store::jobs::inline_upload(c, &id))
                        .await
                }
            })
            .await?;
        if let Some(bytes) = bytes {
            self.media
                .write(&job.upload_path, bytes::Bytes::from(bytes))
                .await
                .map_err(|e| Materialize::Failed(format!("could not store the upload: {e}")))?;
        }
        let id = job.id.clone();
        self.store_retrying(&job.id, move |store| {
            let id = id.clone();
            async move {
                store
                    .write(move |tx| store::jobs::upload_written(tx, &id))
                    .await
            }
        })
        .await
    }

    /// Runs `op` until it succeeds or fails for good, waiting with backoff (as
    /// [`Workers::commit_end`] does) while its error is transient; gives up at shutdown.
    async fn store_retrying<T, F, Fut>(&self, id: &str, op: F) -> Result<T, Materialize>
    where
        F: Fn(Store) -> Fut,
        Fut: std::future::Future<Output = store::Result<T>>,
    {
        let mut delay = FINISH_RETRY_FIRST;
        loop {
            let error = match op(self.store.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) if !e.is_transient() => return Err(Materialize::Failed(e.to_string())),
                Err(e) => e,
            };
            tracing::warn!(
                id,
                retry_in_ms = delay.as_millis() as u64,
                "could not read or write the job's upload in the store: {error}"
            );
            if !self.back_off(&mut delay).await {
                return Err(Materialize::Stopped(error));
            }
        }
    }

    /// Waits `delay` before a store operation is tried again and doubles it (up to
    /// [`FINISH_RETRY_MAX`]); false when shutdown came first.
    async fn back_off(&self, delay: &mut Duration) -> bool {
        tokio::select! {
            _ = self.shutdown.cancelled() => return false,
            _ = tokio::time::sleep(*delay) => {}
        }
        *delay = (*delay * 2).min(FINISH_RETRY_MAX);
        true
    }

    /// Replaces every `{"$file": name}` in a result with an absolute, expiring media URL and adds
    /// `expires_at`; stores the files (object storage) and returns the result and the media rows
    /// to insert.
    async fn publish(
        &self,
        owner: &str,
        run: i64,
        mut result: Value,
        out_dir: &Path,
    ) -> Result<(Value, Vec<MediaRow>), EngineError> {
        let now = chrono::Utc::now();
        let expires_at = chrono::Duration::from_std(self.result_ttl)
            .ok()
            .and_then(|ttl| now.checked_add_signed(ttl))
            .unwrap_or_else(|| now + chrono::Duration::days(7));
        let mut rows = Vec::new();
        let mut error = None;
        replace_files(&mut result, &mut |name: &str| {
            let safe = !name.is_empty()
                && !name.contains(['/', '\\'])
                && name != ".."
                && out_dir.join(name).is_file();
            if !safe {
                error = Some(format!(
                    "engine referenced a missing or unsafe file {name:?}"
                ));
                return Value::Null;
            }
            let token = crate::ids::media_token();
            let url = format!("{}/media/{token}/{name}", self.public_url);
            rows.push(MediaRow {
                token,
                path: out_dir.join(name).to_string_lossy().into_owned(),
                filename: name.to_string(),
                owner: owner.to_string(),
                expires_at: expires_at.timestamp_millis(),
            });
            Value::String(url)
        });
        if let Some(e) = error {
            return Err(EngineError::Internal(e));
        }
        for row in &mut rows {
            row.path = self
                .media
                .publish(owner, run, Path::new(&row.path))
                .await
                .map_err(EngineError::Internal)?;
        }
        if let (false, Value::Object(map)) = (rows.is_empty(), &mut result) {
            map.entry("expires_at").or_insert_with(|| {
                json!(expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            });
        }
        Ok((result, rows))
    }

    /// Finishes a job in one transaction: its row, the credit movement and the webhook event.
    async fn finish_job(
        &self,
        job: &Job,
        outcome: Result<(Value, Vec<MediaRow>), EngineError>,
    ) -> store::Result<()> {
        match &outcome {
            Ok(_) => {
                tracing::info!(job = %job.id, run = job.runs, "run completed; recording the end")
            }
            Err(e) => {
                tracing::warn!(job = %job.id, run = job.runs, code = %e.code(), "run failed; recording the end: {e}")
            }
        }
        let end = match outcome {
            Ok((result, media)) => End::Completed(result, media),
            Err(e) => End::Failed {
                code: e.code(),
                message: e.to_string(),
            },
        };
        let (id, price, run) = (job.id.clone(), job.credits_reserved, job.runs);
        self.commit_end(&job.id, end, move |tx, end| {
            finish_job_tx(tx, &id, price, end, Some(run))
        })
        .await
    }

    /// Commits the end of a run, retrying with backoff while the store cannot write (a full disk,
    /// an I/O error): a finished run is never left `running` because one write failed. An end
    /// that cannot be stored for another reason is replaced by an `internal_error` failure.
    /// Gives up only at shutdown, leaving the row to the next start's recovery.
    async fn commit_end(
        &self,
        id: &str,
        end: End,
        write: impl Fn(&dyn crate::store::Tx, End) -> store::Result<()> + Clone + Send + 'static,
    ) -> store::Result<()> {
        let _clear = ClearProgress(&self.progress, id);
        let mut end = match end {
            End::Failed { code, message } => End::Failed {
                code,
                message: self.local_paths.hide(&message),
            },
            other => other,
        };
        let mut delay = FINISH_RETRY_FIRST;
        loop {
            let (attempt, write_once) = (end.clone(), write.clone());
            let error = match self
                .store
                .write(move |tx| write_once(tx, attempt.clone()))
                .await
            {
                Ok(()) => {
                    self.dispatcher.wake();
                    return Ok(());
                }
                Err(e) => e,
            };
            if !error.is_transient()
                && !matches!(
                    end,
                    End::Failed {
                        code: FailCode::InternalError,
                        ..
                    }
                )
            {
                tracing::error!(
                    id,
                    "could not record the end of the run ({error}); failing it"
                );
                end = End::Failed {
                    code: FailCode::InternalError,
                    message: self
                        .local_paths
                        .hide(&format!("the result could not be stored: {error}")),
                };
                continue;
            }
            tracing::error!(
                id,
                retry_in_ms = delay.as_millis() as u64,
                "could not record the end of the run: {error}"
            );
            if !self.back_off(&mut delay).await {
                return Err(error);
            }
        }
    }

    async fn run_generation(&self, g: Generation) -> store::Result<()> {
        let Some(generator) = self.registry.generator(&g.model).cloned() else {
            let msg = format!("generator {} is not installed", g.model);
            return self.finish_generation(&g, Err(msg)).await;
        };
        let params: GenerationParameters = match serde_json::from_value(g.parameters.clone()) {
            Ok(p) => p,
            Err(e) => {
                return self
                    .finish_generation(&g, Err(format!("stored parameters are invalid: {e}")))
                    .await
            }
        };
        let req = GenerationInput::new(g.prompt.clone(), params);
        let fault = self.run_fault(g.fault.as_deref());
        let dir = self.media.run_dir(&g.id, g.runs);
        let ended = async {
            if let Err(e) = reset_dir(&dir) {
                return self.finish_generation(&g, Err(e.to_string())).await;
            }
            let file = dir.join(format!("{}.mp3", g.id));
            let file_in = file.clone();
            let resource = generator.resource();
            let outcome = self
                .execute(
                    &g.id,
                    resource,
                    fault,
                    Some(self.generation_timeout),
                    move |progress, cancelled| {
                        let audio = generator.generate(&req, &|p| progress(p * 0.9), cancelled)?;
                        let seconds = write_mp3_atomically(&audio, &file_in)?;
                        progress(1.0);
                        Ok(seconds)
                    },
                )
                .await;
            match outcome {
                Outcome::Done(seconds) => {
                    let name = file.file_name().unwrap().to_string_lossy().into_owned();
                    match self
                        .publish(&g.id, g.runs, json!({ "$file": name }), &dir)
                        .await
                    {
                        Ok((Value::String(url), media)) => {
                            self.finish_generation(&g, Ok((url, seconds, media))).await
                        }
                        Ok(_) => {
                            self.finish_generation(&g, Err("publishing failed".into()))
                                .await
                        }
                        Err(e) => self.finish_generation(&g, Err(e.to_string())).await,
                    }
                }
                Outcome::Failed(e) => {
                    let _ = std::fs::remove_file(&file);
                    self.finish_generation(&g, Err(e.to_string())).await
                }
                Outcome::Requeue => {
                    let (id, run) = (g.id.clone(), g.runs);
                    self.store
                        .write(move |tx| store::generations::requeue(tx, &id, run))
                        .await
                }
            }
        }
        .await;
        self.media.run_over(&dir).await;
        ended
    }

    async fn finish_generation(
        &self,
        g: &Generation,
        outcome: Result<(String, f64, Vec<MediaRow>), String>,
    ) -> store::Result<()> {
        match &outcome {
            Ok(_) => {
                tracing::info!(generation = %g.id, run = g.runs, "run completed; recording the end")
            }
            Err(e) => {
                tracing::warn!(generation = %g.id, run = g.runs, "run failed; recording the end: {e}")
            }
        }
        let end = match outcome {
            Ok((url, seconds, media)) => End::Generated(url, seconds, media),
            Err(message) => End::Failed {
                code: FailCode::InternalError,
                message,
            },
        };
        let (id, run) = (g.id.clone(), g.runs);
        self.commit_end(&g.id, end, move |tx, end| {
            finish_generation_tx(tx, &id, end, Some(run))
        })
        .await
    }
}

/// Forgets a run's live progress when dropped: its end is committed (or left to recovery).
struct ClearProgress<'a>(&'a ProgressMap, &'a str);

impl Drop for ClearProgress<'_> {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(self.1);
    }
}

/// In a fleet, every node looks every half lease for work whose worker stopped renewing its
/// lease (killed, or its machine lost) and queues it again for any worker, or fails it once
/// [`MAX_RUNS`] runs were cut off. Several nodes may sweep at once: the store's serializable
/// writes make each piece of work recovered once.
///
/// A node sweeps only once it has reached the database for a whole lease without a failure: while
/// the database was away no worker could renew, so every lease it holds may have run out on the
/// database's clock although every worker is alive. After an outage the workers renew within a
/// third of a lease; what is still expired a lease later has really lost its worker. (Sweeping at
/// once restarted every long job after each outage longer than a lease, and failed it as "the
/// server stopped during each run" after two.) Reachability counts from an answer that came
/// within a third of a lease: a read held through a freeze once counted from when it was asked,
/// and the sweep took a job from its live worker the moment the freeze ended.
pub async fn sweep_expired_leases(workers: Workers) {
    let mut reachable_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = workers.shutdown.cancelled() => return,
            _ = tokio::time::sleep(workers.lease / 2) => {}
        }
        let asked = tokio::time::Instant::now();
        match workers.store.read(|c| store::db::now_ms(c)).await {
            // A read that was held (a frozen database, a partition) answers when the stall
            // ends: reachability counts from then, not from when it was asked, and a slow
            // answer counts as the stall's end, not as proof of a lease of reachability.
            Ok(_) if asked.elapsed() >= workers.lease / 3 => {
                reachable_since = None;
                continue;
            }
            Ok(_) => {
                let now = tokio::time::Instant::now();
                let since = *reachable_since.get_or_insert(now);
                if now.duration_since(since) < workers.lease {
                    continue;
                }
            }
            Err(e) => {
                if reachable_since.take().is_some() {
                    tracing::warn!("lease sweep paused: the database cannot be reached ({e})");
                }
                continue;
            }
        }
        let swept = workers
            .store
            .write(|tx| recover(tx, store::db::now_ms(tx)?))
            .await;
        match swept {
            Ok(r) if !r.is_empty() => {
                tracing::warn!(
                    requeued = %r.requeued.join(","),
                    failed = %r.failed.join(","),
                    "lease sweep: work whose worker stopped renewing its lease was recovered"
                );
                workers.wake.notify_waiters();
                workers.dispatcher.wake();
            }
            Ok(_) => {}
            Err(e) => {
                reachable_since = None;
                tracing::warn!("lease sweep failed: {e}");
            }
        }
    }
}

/// Runs of one job or generation that a crash may cut off before it is failed instead of queued
/// again: an input that kills the process must not keep the server down.
pub const MAX_RUNS: i64 = 2;

/// Why [`Workers::materialize_upload`] did not finish: the store could not be reached until
/// shutdown (the run is left, not failed), or anything else (the run fails with it).
enum Materialize {
    Stopped(store::Error),
    Failed(String),
}

/// First and longest wait between attempts to record a run's end while the store cannot write.
const FINISH_RETRY_FIRST: Duration = Duration::from_millis(100);
const FINISH_RETRY_MAX: Duration = Duration::from_secs(5);

/// Registers a run's stop signal for its whole run; removed however the run ends.
struct StopGuard<'a> {
    stops: &'a RunStops,
    id: String,
}

impl<'a> StopGuard<'a> {
    fn register(stops: &'a RunStops, id: &str, stop: &CancellationToken) -> StopGuard<'a> {
        stops.lock().unwrap().insert(id.to_string(), stop.clone());
        StopGuard {
            stops,
            id: id.to_string(),
        }
    }
}

impl Drop for StopGuard<'_> {
    fn drop(&mut self) {
        self.stops.lock().unwrap().remove(&self.id);
    }
}

/// How a run ended, in a form that can be written again if the first commit fails.
#[derive(Debug, Clone)]
pub(super) enum End {
    /// A job's result (with its `$file`s already turned into media rows).
    Completed(Value, Vec<MediaRow>),
    /// A generation's audio URL, length in seconds and media row.
    Generated(String, f64, Vec<MediaRow>),
    /// Either kind failed with this contract code.
    Failed { code: FailCode, message: String },
}

/// What start-up recovery did with the work a crash interrupted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Jobs and generations queued again (their ids).
    pub requeued: Vec<String>,
    /// Jobs and generations failed because [`MAX_RUNS`] runs were all cut off.
    pub failed: Vec<String>,
}

impl Recovered {
    pub fn is_empty(&self) -> bool {
        self.requeued.is_empty() && self.failed.is_empty()
    }
}

/// In one transaction, the work whose worker stopped renewing its lease before `now` (it
/// crashed): what a crash cut off [`MAX_RUNS`] times ends `failed` (`internal_error`, refunded,
/// webhook sent); the rest is queued again. A server starting on its own SQLite file passes
/// `i64::MAX` (the data directory's lock proves no other process runs anything); fleet nodes
/// pass the current time, so that only expired leases count.
pub fn recover(tx: &dyn crate::store::Tx, now: i64) -> store::Result<Recovered> {
    let mut done = Recovered::default();
    let poison = |runs: i64| End::Failed {
        code: FailCode::InternalError,
        message: format!(
            "The server stopped during each of this request's {runs} runs; it is not run again \
             in case its input is what stops it."
        ),
    };
    for job in store::jobs::interrupted_too_often(tx, MAX_RUNS, now)? {
        tracing::error!(job = %job.id, runs = job.runs, "failing a job that every run crashed");
        finish_job_tx(tx, &job.id, job.credits_reserved, poison(job.runs), None)?;
        done.failed.push(job.id);
    }
    for id in store::generations::interrupted_too_often(tx, MAX_RUNS, now)? {
        tracing::error!(generation = %id, "failing a generation that every run crashed");
        finish_generation_tx(tx, &id, poison(MAX_RUNS), None)?;
        done.failed.push(id);
    }
    done.requeued = store::jobs::recover(tx, now)?;
    done.requeued.extend(store::generations::recover(tx, now)?);
    Ok(done)
}

/// A job's end in the caller's transaction: its row, its media, the credit movement (failures on
/// our side are refunded, a bad input is charged) and the webhook event. `run` is the run that
/// ended (`None`: a cancel or recovery, which end whichever run there is).
pub(super) fn finish_job_tx(
    tx: &dyn crate::store::Tx,
    job_id: &str,
    price: i64,
    end: End,
    run: Option<i64>,
) -> store::Result<()> {
    // Checked in the writing transaction: a run that ends after a cancel ended its job (or the
    // other way round), or after its lease ran out and another worker claimed the job again,
    // writes nothing, so every job ends once, with one webhook.
    match store::jobs::get(tx, job_id)? {
        Some(j) if !j.status.is_final() && run.is_none_or(|r| r == j.runs) => {}
        _ => {
            tracing::info!(job = %job_id, "the job had already ended or been claimed again; run end ignored");
            return Ok(());
        }
    }
    match end {
        End::Completed(result, media) => {
            insert_media(tx, &media)?;
            store::jobs::complete(tx, job_id, &result, price)?;
            credits::record(tx, Some(job_id), LedgerKind::Charge, 0)?;
        }
        End::Generated(..) => unreachable!("a job does not end as a generation"),
        End::Failed { code, message } => {
            // Our failures and cancels are refunded; a bad input is charged.
            let ours = code.refunded();
            let used = if ours { 0 } else { price };
            store::jobs::fail(tx, job_id, code, &message, used)?;
            let kind = if ours {
                LedgerKind::Refund
            } else {
                LedgerKind::Charge
            };
            credits::record(tx, Some(job_id), kind, if ours { price } else { 0 })?;
        }
    }
    let job = store::jobs::get(tx, job_id)?.expect("job exists");
    crate::webhooks::enqueue_job_event(tx, &job)
}

/// A generation's end in the caller's transaction: its row, its media and its webhook event.
pub(super) fn finish_generation_tx(
    tx: &dyn crate::store::Tx,
    id: &str,
    end: End,
    run: Option<i64>,
) -> store::Result<()> {
    match store::generations::get(tx, id)? {
        Some(g) if !g.status.is_final() && run.is_none_or(|r| r == g.runs) => {}
        _ => {
            tracing::info!(generation = %id, "the generation had already ended or been claimed again; run end ignored");
            return Ok(());
        }
    }
    let finished = match end {
        End::Generated(url, seconds, media) => {
            insert_media(tx, &media)?;
            store::generations::complete(tx, id, &url, seconds, &Value::Null)?
        }
        End::Failed { message, .. } => store::generations::fail(tx, id, &message)?,
        End::Completed(..) => unreachable!("a generation does not end as a job"),
    };
    crate::webhooks::enqueue_generation_event(tx, &finished)
}

fn insert_media(tx: &dyn crate::store::Tx, media: &[MediaRow]) -> store::Result<()> {
    for m in media {
        store::media::insert(tx, &m.token, &m.path, &m.filename, &m.owner, m.expires_at)?;
    }
    Ok(())
}

/// A media row to insert with the finishing transaction.
#[derive(Debug, Clone)]
pub(super) struct MediaRow {
    token: String,
    path: String,
    filename: String,
    owner: String,
    expires_at: i64,
}

/// Calls `f` on every `{"$file": name}` object and replaces it with what `f` returns.
fn replace_files(v: &mut Value, f: &mut dyn FnMut(&str) -> Value) {
    match v {
        Value::Object(map) => {
            if let (1, Some(Value::String(name))) = (map.len(), map.get("$file")) {
                let name = name.clone();
                *v = f(&name);
            } else {
                map.values_mut().for_each(|x| replace_files(x, f));
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|x| replace_files(x, f)),
        _ => {}
    }
}

/// Empties (or creates) a run's output directory: a re-run after a crash starts clean.
fn reset_dir(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)
}

/// The seed's wording: "GPU job timed out after 240s".
fn timeout_message(resource: Resource, limit: Duration) -> String {
    let device = match resource {
        Resource::Device if cfg!(feature = "cuda") => "GPU",
        Resource::Device => "Device",
        Resource::Cpu => "CPU",
    };
    format!("{device} job timed out after {}s", limit.as_secs())
}

/// Every generation is served as 44.1 kHz stereo, whatever the engine renders (MusicGen: 32 kHz
/// mono): resampled with the audio layer's high-quality setting, mono duplicated to both sides.
fn delivery_format(audio: &Audio) -> Result<Audio, EngineError> {
    let mut out = if audio.sample_rate == DELIVERY_RATE {
        audio.fold_to_stereo()
    } else {
        crate::audio::resample(
            &audio.fold_to_stereo(),
            DELIVERY_RATE,
            crate::audio::Quality::High,
        )
        .map_err(|e| EngineError::Internal(format!("resampling failed: {e}")))?
    };
    if out.channels.len() == 1 {
        let mono = out.channels[0].clone();
        out.channels.push(mono);
    }
    Ok(out)
}

/// Encodes the MP3 next to its final name and renames it into place, so no reader ever sees a
/// half-written file. Returns the encoded length in seconds.
pub(crate) fn write_mp3_atomically(audio: &Audio, path: &Path) -> Result<f64, EngineError> {
    let delivered = delivery_format(audio)?;
    let audio = &delivered;
    let part = path.with_extension("mp3.part");
    crate::audio::encode_mp3_quick(audio, MP3_KBPS, &part)
        .map_err(|e| EngineError::Internal(format!("MP3 encoding failed: {e}")))?;
    std::fs::rename(&part, path).map_err(|e| EngineError::Internal(e.to_string()))?;
    Ok(audio.duration_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::jobs::{NewJob, NewUpload};
    use crate::store::states::JobStatus;

    #[test]
    fn failure_messages_name_local_directories_by_what_they_are() {
        let data = tempfile::tempdir().unwrap();
        let models = data.path().join("models");
        std::fs::create_dir_all(&models).unwrap();
        let paths = LocalPaths::new(&[(&models, "<models>"), (data.path(), "<data>")]);
        let d = data.path().display();
        let msg = format!(
            "musicgen-small: {d}/models/musicgen-small/config.json: EOF; writing {d}/out.mp3; \
             {d}; {d}x/other; /elsewhere/file"
        );
        assert_eq!(
            paths.hide(&msg),
            "musicgen-small: <models>/musicgen-small/config.json: EOF; writing <data>/out.mp3; \
             <data>; "
                .to_string()
                + &format!("{d}x/other; /elsewhere/file")
        );
        // The canonical spelling of a directory is hidden too (a data dir under a symlink).
        let canonical = std::fs::canonicalize(data.path()).unwrap();
        assert_eq!(
            paths.hide(&format!("{}/a.wav", canonical.display())),
            "<data>/a.wav"
        );
        // No directories: nothing changes.
        assert_eq!(LocalPaths::default().hide(&msg), msg);
        // Only a whole directory: not inside a longer path or a URL; a full stop ends it.
        let tmp = LocalPaths::new(&[(std::path::Path::new("/tmp"), "<tmp>")]);
        for kept in [
            "/var/tmp/x.wav",
            "http://h:8000/tmp/a.mp3",
            "s3://bucket/tmp/x",
            "/tmpfiles/a",
            "/tmp.d/a",
            "./tmp/a",
        ] {
            assert_eq!(tmp.hide(kept), kept);
        }
        assert_eq!(
            tmp.hide("cannot write /tmp. (/tmp/a.wav, '/tmp/b')"),
            "cannot write <tmp>. (<tmp>/a.wav, '<tmp>/b')"
        );
    }

    fn queued_job(store: &Store, id: &str) {
        insert_job(store, id, "/nonexistent", None)
    }

    /// A queued job whose upload is at `path`, or still in the database when `data` is given.
    fn insert_job(store: &Store, id: &str, path: &str, data: Option<&[u8]>) {
        store
            .write_blocking(|tx| {
                store::credits::ensure_initial_grant(tx)?;
                store::webhooks::endpoint_ensure(tx, "whsec_dGVzdA==")?;
                store::webhooks::endpoint_set_url(tx, Some("http://127.0.0.1:9/hook"))?;
                store::jobs::insert(
                    tx,
                    &NewUpload {
                        id: format!("upl_{id}"),
                        path: path.into(),
                        filename: None,
                        size: data.map_or(1, |d| d.len() as i64),
                        sha256: String::new(),
                        data: data.map(bytes::Bytes::copy_from_slice),
                    },
                    &NewJob {
                        id: id.into(),
                        endpoint: "/v1/separate".into(),
                        engine: "dsp".into(),
                        params: json!({}),
                        fault: None,
                        trace_id: "t".into(),
                        price: 10,
                        estimated_completion: "2026-01-01T00:00:00Z".into(),
                    },
                )?;
                credits::record(tx, Some(id), LedgerKind::Reserve, -10)?;
                Ok(())
            })
            .unwrap();
    }

    fn status(store: &Store, id: &str) -> (JobStatus, i64, Option<String>) {
        store
            .write_blocking(|tx| {
                let j = store::jobs::get(tx, id)?.unwrap();
                Ok((j.status, j.runs, j.error_code))
            })
            .unwrap()
    }

    /// Workers on `store`, with media in `dir` and no engines.
    fn test_workers(store: Store, dir: &Path) -> Workers {
        let dispatcher = Dispatcher::new(
            store.clone(),
            crate::webhooks::dispatch::DispatchConfig {
                time_scale: 1.0,
                timeout: Duration::from_secs(1),
                strict: false,
            },
        );
        Workers {
            store,
            registry: Arc::default(),
            dispatcher,
            progress: ProgressMap::default(),
            stops: RunStops::default(),
            wake: Arc::default(),
            device: Arc::default(),
            media: crate::media::Media::new(None, dir, dir).unwrap(),
            public_url: "http://127.0.0.1:9".into(),
            result_ttl: Duration::from_secs(3600),
            generation_timeout: Duration::from_secs(3600),
            fail_rate: 0.0,
            lease: Duration::from_secs(30),
            only: None,
            shutdown: CancellationToken::new(),
            shutdown_grace: Duration::from_millis(200),
            local_paths: LocalPaths::default(),
        }
    }

    /// A run that brings its upload out of the database while the store cannot write (a
    /// fleet's database restarting; here a simulated full disk) waits for it instead of failing
    /// the job: a CI run saw a job end `internal_error: postgres: connection closed` this way.
    #[tokio::test]
    async fn an_upload_kept_in_the_store_waits_out_a_store_that_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        let path = dir.path().join("upload.wav");
        let bytes = b"RIFF and some bytes".to_vec();
        insert_job(&store, "job_a", path.to_str().unwrap(), Some(&bytes));
        let job = store
            .write_blocking(|tx| Ok(store::jobs::get(tx, "job_a")?.unwrap()))
            .unwrap();
        assert!(job.upload_inline);
        let workers = test_workers(store.clone(), dir.path());
        store.simulate_disk_full(true);
        let task = tokio::spawn(async move { workers.materialize_upload(&job).await.is_ok() });
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!task.is_finished(), "it waits for the store");
        store.simulate_disk_full(false);
        let done = tokio::time::timeout(Duration::from_secs(10), task).await;
        assert!(done.expect("it goes on once the store writes").unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        let kept = store
            .write_blocking(|tx| store::jobs::inline_upload(tx, "job_a"))
            .unwrap();
        assert_eq!(kept, None, "the bytes are forgotten once written");
    }

    /// An engine that does not look at the shutdown token is not waited on past the grace: its
    /// run is given back (not counted as a crash), and the worker returns at once.
    #[tokio::test]
    async fn an_engine_that_ignores_shutdown_is_given_back_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        let workers = test_workers(store, dir.path());
        let busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let busy_in = busy.clone();
        let started = std::time::Instant::now();
        let run = workers.execute("job_a", Resource::Cpu, None, None, move |_, _| {
            busy_in.store(true, std::sync::atomic::Ordering::SeqCst);
            // Never looks at the token.
            std::thread::sleep(Duration::from_secs(3));
            Ok(())
        });
        let stop = async {
            while !busy.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            workers.shutdown.cancel();
        };
        let (outcome, ()) = tokio::join!(run, stop);
        assert!(matches!(outcome, Outcome::Requeue));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(workers.progress.lock().unwrap().is_empty());
    }

    /// A job whose runs are all cut off by crashes (a poison input) is run at most MAX_RUNS times:
    /// then recovery fails it as internal_error, refunds it and queues its webhook. A graceful
    /// give-back at shutdown does not count as a run.
    #[test]
    fn a_job_every_run_of_which_crashes_ends_failed_and_refunded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        queued_job(&store, "job_a");
        let claim = |s: &Store| {
            s.write_blocking(|tx| store::jobs::claim_next(tx, store::now_ms() + 30_000, None))
                .unwrap()
                .unwrap()
        };
        // A crashed server's own recovery: everything left running is its.
        let crashed = |tx: &dyn crate::store::Tx| recover(tx, i64::MAX);
        // Given back at shutdown: not counted.
        let run = claim(&store).runs;
        store
            .write_blocking(|tx| store::jobs::requeue(tx, "job_a", run))
            .unwrap();
        assert_eq!(status(&store, "job_a"), (JobStatus::Queued, 0, None));
        // First crash: queued again.
        claim(&store);
        let r = store.write_blocking(crashed).unwrap();
        assert_eq!(
            r,
            Recovered {
                requeued: vec!["job_a".into()],
                failed: vec![]
            }
        );
        assert_eq!(status(&store, "job_a").0, JobStatus::Queued);
        // Second crash: failed, refunded, webhook queued.
        claim(&store);
        let r = store.write_blocking(crashed).unwrap();
        assert_eq!(
            r,
            Recovered {
                requeued: vec![],
                failed: vec!["job_a".into()]
            }
        );
        assert_eq!(
            status(&store, "job_a"),
            (JobStatus::Failed, MAX_RUNS, Some("internal_error".into()))
        );
        let (balance, kinds, events): (i64, Vec<String>, i64) = store
            .write_blocking(|tx| {
                let kinds = credits::recent(tx, 50)?
                    .into_iter()
                    .rev()
                    .filter(|m| m.job_id.as_deref() == Some("job_a"))
                    .map(|m| m.kind.to_string())
                    .collect();
                let events = store::webhooks::events_for(tx, "job_a")?.len() as i64;
                Ok((credits::balance(tx)?, kinds, events))
            })
            .unwrap();
        assert_eq!(balance, 1000);
        assert_eq!(kinds, vec!["reserve", "refund"]);
        assert_eq!(events, 1);
        // Recovery again finds nothing to do.
        assert_eq!(store.write_blocking(crashed).unwrap(), Recovered::default());
    }

    /// A fleet node claims only jobs of the engines it names: another engine's job stays queued
    /// for a node that has it.
    #[test]
    fn claims_follow_the_engine_filter() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        queued_job(&store, "job_a"); // engine "dsp"
        let until = store::now_ms() + 30_000;
        let gpu_only = vec!["htdemucs".to_string()];
        let none = store
            .write_blocking(|tx| store::jobs::claim_next(tx, until, Some(&gpu_only)))
            .unwrap();
        assert!(none.is_none());
        let nothing: Vec<String> = vec![];
        assert!(store
            .write_blocking(|tx| store::jobs::claim_next(tx, until, Some(&nothing)))
            .unwrap()
            .is_none());
        let dsp = vec!["htdemucs".to_string(), "dsp".to_string()];
        let got = store
            .write_blocking(|tx| store::jobs::claim_next(tx, until, Some(&dsp)))
            .unwrap()
            .unwrap();
        assert_eq!(got.id, "job_a");
    }

    /// In a fleet a running job belongs to its worker while the lease holds: a sweep before it
    /// runs out leaves it alone, one after queues it again, and the first worker's late end
    /// (its run number is no longer the job's) writes nothing, so the job ends once.
    #[test]
    fn expired_leases_requeue_and_a_stale_run_cannot_finish() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        queued_job(&store, "job_a");
        let t0 = store::now_ms();
        let first = store
            .write_blocking(|tx| store::jobs::claim_next(tx, t0 + 1_000, None))
            .unwrap()
            .unwrap();
        let alive = store.write_blocking(|tx| recover(tx, t0 + 500)).unwrap();
        assert_eq!(alive, Recovered::default(), "a live lease is not recovered");
        assert!(store
            .write_blocking(|tx| store::jobs::renew_lease(tx, "job_a", first.runs, t0 + 2_000))
            .unwrap());
        let expired = store.write_blocking(|tx| recover(tx, t0 + 2_001)).unwrap();
        assert_eq!(expired.requeued, vec!["job_a".to_string()]);
        let second = store
            .write_blocking(|tx| store::jobs::claim_next(tx, t0 + 60_000, None))
            .unwrap()
            .unwrap();
        assert_eq!(second.runs, first.runs + 1);
        // The first worker wakes up: it cannot renew, and its end is ignored.
        assert!(!store
            .write_blocking(|tx| store::jobs::renew_lease(tx, "job_a", first.runs, t0 + 9_000))
            .unwrap());
        let stale = End::Failed {
            code: FailCode::InternalError,
            message: "late".into(),
        };
        store
            .write_blocking(|tx| finish_job_tx(tx, "job_a", 10, stale.clone(), Some(first.runs)))
            .unwrap();
        assert_eq!(status(&store, "job_a").0, JobStatus::Running);
        store
            .write_blocking(|tx| {
                finish_job_tx(
                    tx,
                    "job_a",
                    10,
                    End::Completed(json!({}), vec![]),
                    Some(second.runs),
                )
            })
            .unwrap();
        assert_eq!(status(&store, "job_a").0, JobStatus::Completed);
        let events = store
            .write_blocking(|tx| store::webhooks::events_for(tx, "job_a"))
            .unwrap();
        assert_eq!(events.len(), 1, "one end, one webhook");
    }

    #[test]
    fn replace_files_rewrites_nested_references_only() {
        let mut v = json!({"stems": {"vocals": {"$file": "v.wav"}, "n": 3}, "list": [{"$file": "a.mid"}],
                           "other": {"$file": "x", "extra": 1}});
        let mut seen = Vec::new();
        replace_files(&mut v, &mut |n| {
            seen.push(n.to_string());
            json!(format!("url:{n}"))
        });
        assert_eq!(seen, vec!["v.wav", "a.mid"], "in document order");
        assert_eq!(v["stems"]["vocals"], "url:v.wav");
        assert_eq!(v["list"][0], "url:a.mid");
        assert_eq!(v["other"]["$file"], "x");
    }
}
