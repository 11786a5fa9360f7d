//! The worker pool: N tasks that claim queued generations and jobs from SQLite, run their engine on
//! a blocking thread (device-bound engines one at a time), publish result files and finish the row,
//! its credits and its webhook event in one transaction. A run cut off by shutdown is re-queued;
//! one cut off by a crash is re-queued at the next start (`recover`).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::engine::{JobContext, JobKind, Resource};
use super::registry::Registry;
use super::{EngineError, GenerationRequest};
use crate::audio::Audio;
use crate::faults::{Fault, Faults};
use crate::store::generations::Generation;
use crate::store::jobs::Job;
use crate::store::{self, credits, Store};
use crate::views::GenerationParameters;
use crate::webhooks::dispatch::Dispatcher;

/// Live progress of running jobs and generations, by id (in memory: a restart re-runs them).
pub type ProgressMap = Arc<Mutex<HashMap<String, f32>>>;

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
    /// Woken by submits.
    pub wake: Arc<Notify>,
    /// Serialises device-bound engines (one GPU, one model at a time).
    pub device: Arc<tokio::sync::Mutex<()>>,
    pub data_dir: PathBuf,
    pub public_url: String,
    pub result_ttl: Duration,
    pub generation_timeout: Duration,
    /// Fraction of runs failed as `internal_error` (`serve --fail-rate`).
    pub fail_rate: f64,
    pub shutdown: CancellationToken,
}

/// How a run ended.
enum Outcome<T> {
    Done(T),
    Failed(EngineError),
    /// Shutdown interrupted it: queue it again.
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
        if let Some(g) = self
            .store
            .write(|tx| store::generations::claim_next(tx))
            .await?
        {
            self.wake.notify_one(); // there may be more: let a sibling look
            self.run_generation(g).await?;
            return Ok(true);
        }
        if let Some(j) = self.store.write(|tx| store::jobs::claim_next(tx)).await? {
            self.wake.notify_one();
            self.run_job(j).await?;
            return Ok(true);
        }
        Ok(false)
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
                    _ = tokio::time::sleep(d) => {}
                }
            }
            _ => {}
        }
        let _device = match resource {
            Resource::Device => Some(self.device.lock().await),
            Resource::Cpu => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let shutdown = self.shutdown.clone();
        let progress = self.progress.clone();
        let stop_in = stop.clone();
        let id_in = id.to_string();
        let hang = fault == Some(Fault::Timeout);
        let task = tokio::task::spawn_blocking(move || {
            let report = |p: f32| Workers::set_progress(&progress, &id_in, p);
            let cancelled = || shutdown.is_cancelled() || stop_in.load(Ordering::Relaxed);
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
        let joined = match timeout {
            Some(limit) => match tokio::time::timeout(limit, task).await {
                Ok(joined) => joined,
                Err(_) => {
                    stop.store(true, Ordering::Relaxed);
                    return Outcome::Failed(EngineError::Internal(timeout_message(
                        resource, limit,
                    )));
                }
            },
            None => task.await,
        };
        self.progress.lock().unwrap().remove(id);
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
        let out_dir = self.data_dir.join("results").join(&job.id);
        if let Err(e) = reset_dir(&out_dir) {
            return self
                .finish_job(&job, Err(EngineError::Internal(e.to_string())))
                .await;
        }
        if job.upload_inline {
            if let Err(e) = self.materialize_upload(&job).await {
                return self.finish_job(&job, Err(EngineError::Internal(e))).await;
            }
        }
        let fault = self.run_fault(job.fault.as_deref());
        let (input, params, dir) = (
            PathBuf::from(&job.upload_path),
            job.params.clone(),
            out_dir.clone(),
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
                let published = self.publish(&job.id, output.result, &out_dir);
                self.finish_job(&job, published).await
            }
            Outcome::Failed(e) => self.finish_job(&job, Err(e)).await,
            Outcome::Requeue => {
                let id = job.id.clone();
                self.store
                    .write(move |tx| store::jobs::requeue(tx, &id))
                    .await
            }
        }
    }

    /// Writes an upload kept in the database to its path, then forgets the bytes. Run again
    /// after a crash between the two steps, it rewrites the same file.
    async fn materialize_upload(&self, job: &Job) -> Result<(), String> {
        let id = job.id.clone();
        let bytes = self
            .store
            .read(move |c| store::jobs::inline_upload(c, &id))
            .await
            .map_err(|e| e.to_string())?;
        if let Some(bytes) = bytes {
            let path = PathBuf::from(&job.upload_path);
            tokio::task::spawn_blocking(move || store::jobs::write_upload(&path, &bytes))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("could not write the upload to disk: {e}"))?;
        }
        let id = job.id.clone();
        self.store
            .write(move |tx| store::jobs::upload_written(tx, &id))
            .await
            .map_err(|e| e.to_string())
    }

    /// Replaces every `{"$file": name}` in a result with an absolute, expiring media URL and adds
    /// `expires_at`; returns the result and the media rows to insert.
    fn publish(
        &self,
        owner: &str,
        mut result: Value,
        out_dir: &Path,
    ) -> Result<(Value, Vec<MediaRow>), EngineError> {
        let expires_at = chrono::Utc::now()
            + chrono::Duration::from_std(self.result_ttl).unwrap_or(chrono::Duration::days(7));
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
        let job_id = job.id.clone();
        let price = job.credits_reserved;
        match &outcome {
            Ok(_) => tracing::info!(job = %job_id, "job completed"),
            Err(e) => tracing::warn!(job = %job_id, code = e.code(), "job failed: {e}"),
        }
        self.store
            .write(move |tx| {
                match outcome {
                    Ok((result, media)) => {
                        for m in &media {
                            store::media::insert(
                                tx,
                                &m.token,
                                &m.path,
                                &m.filename,
                                &m.owner,
                                m.expires_at,
                            )?;
                        }
                        store::jobs::complete(tx, &job_id, &result, price)?;
                        credits::record(tx, Some(&job_id), "charge", 0)?;
                    }
                    Err(e) => {
                        // Failures on our side are refunded; a bad input is charged.
                        let ours = matches!(e.code(), "internal_error" | "service_unavailable");
                        let used = if ours { 0 } else { price };
                        store::jobs::fail(tx, &job_id, e.code(), &e.to_string(), used)?;
                        let kind = if ours { "refund" } else { "charge" };
                        credits::record(tx, Some(&job_id), kind, if ours { price } else { 0 })?;
                    }
                }
                let job = store::jobs::get(tx, &job_id)?.expect("job exists");
                crate::webhooks::enqueue_job_event(tx, &job)
            })
            .await?;
        self.dispatcher.wake();
        Ok(())
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
        let req = GenerationRequest {
            tags: g.prompt.clone(),
            duration: params.duration,
            bpm: params.bpm,
            keyscale: params.keyscale,
            timesignature: params.timesignature,
            seed: params.seed,
        };
        let fault = self.run_fault(g.fault.as_deref());
        let dir = self.data_dir.join("results").join(&g.id);
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
                match self.publish(&g.id, json!({ "$file": name }), &dir) {
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
                let id = g.id.clone();
                self.store
                    .write(move |tx| store::generations::requeue(tx, &id))
                    .await
            }
        }
    }

    async fn finish_generation(
        &self,
        g: &Generation,
        outcome: Result<(String, f64, Vec<MediaRow>), String>,
    ) -> store::Result<()> {
        let id = g.id.clone();
        match &outcome {
            Ok(_) => tracing::info!(generation = %id, "generation completed"),
            Err(e) => tracing::warn!(generation = %id, "generation failed: {e}"),
        }
        self.store
            .write(move |tx| {
                let finished = match outcome {
                    Ok((url, seconds, media)) => {
                        for m in &media {
                            store::media::insert(
                                tx,
                                &m.token,
                                &m.path,
                                &m.filename,
                                &m.owner,
                                m.expires_at,
                            )?;
                        }
                        store::generations::complete(tx, &id, &url, seconds, &Value::Null)?
                    }
                    Err(message) => store::generations::fail(tx, &id, &message)?,
                };
                crate::webhooks::enqueue_generation_event(tx, &finished)
            })
            .await?;
        self.dispatcher.wake();
        Ok(())
    }
}

/// A media row to insert with the finishing transaction.
struct MediaRow {
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
