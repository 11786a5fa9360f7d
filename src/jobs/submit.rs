//! The submit rule of the jobs API, in one transaction: an `Idempotency-Key` seen within 24 hours
//! with the same request answers with the job it made (a different request is a conflict); else
//! the job's price must be covered by the balance, the price is reserved, and the upload, the job
//! and the key are stored together. The HTTP handler only turns a [`Refusal`] into its envelope.

use crate::store::Tx;

use crate::store::jobs::{self as jobs_store, Job, NewJob, NewUpload};
use crate::store::states::LedgerKind;
use crate::store::{self, credits};

/// Idempotency keys are honoured for this long (seed: 24 hours).
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// The job a submission produced (or, for a replayed idempotency key, the earlier one).
#[derive(Debug, Clone)]
pub struct Admitted {
    pub job: Job,
    /// The balance after the reservation (for `_meta.credits_remaining`).
    pub balance: i64,
    /// True when the key named an earlier job: nothing new was stored.
    pub replayed: bool,
}

/// Why a submission was refused; nothing was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The key was used within the window for a different request.
    IdempotencyConflict,
    /// The balance does not cover the price.
    InsufficientCredits { price: i64, balance: i64 },
}

/// Applies the submit rule in the caller's transaction. `hash` identifies the request (endpoint,
/// parameters, audio, fault) for the idempotency comparison.
pub fn admit(
    tx: &dyn Tx,
    upload: &NewUpload,
    job: &NewJob,
    idem_key: Option<&str>,
    hash: &str,
) -> store::Result<Result<Admitted, Refusal>> {
    let now = store::now_ms();
    if let Some(key) = idem_key {
        if let Some(rec) = jobs_store::idempotency_get(tx, key)? {
            if now - rec.created_at < IDEMPOTENCY_WINDOW_MS {
                if rec.request_hash != hash {
                    return Ok(Err(Refusal::IdempotencyConflict));
                }
                if let Some(existing) = jobs_store::get(tx, &rec.job_id)? {
                    let balance = credits::balance(tx)?;
                    return Ok(Ok(Admitted {
                        job: existing,
                        balance,
                        replayed: true,
                    }));
                }
            }
        }
    }
    let balance = credits::balance(tx)?;
    if balance < job.price {
        return Ok(Err(Refusal::InsufficientCredits {
            price: job.price,
            balance,
        }));
    }
    jobs_store::insert(tx, upload, job)?;
    let balance = credits::record(tx, Some(&job.id), LedgerKind::Reserve, -job.price)?;
    if let Some(key) = idem_key {
        jobs_store::idempotency_put(tx, key, hash, &job.id, now)?;
    }
    let stored = jobs_store::get(tx, &job.id)?.expect("job just inserted");
    Ok(Ok(Admitted {
        job: stored,
        balance,
        replayed: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::states::JobStatus;
    use crate::store::Store;

    fn new(id: &str, price: i64) -> (NewUpload, NewJob) {
        (
            NewUpload {
                id: format!("upl_{id}"),
                path: format!("/tmp/{id}"),
                filename: None,
                size: 1,
                sha256: String::new(),
                data: None,
            },
            NewJob {
                id: id.into(),
                endpoint: "/v1/master".into(),
                engine: "master".into(),
                params: serde_json::json!({}),
                fault: None,
                trace_id: "t".into(),
                price,
                estimated_completion: "2026-01-01T00:00:00Z".into(),
            },
        )
    }

    /// The rule's three outcomes: admitted (reserved), replayed (same key, same request: the same
    /// job, nothing stored), refused (same key, other request; or too few credits: nothing stored).
    #[test]
    fn admits_replays_and_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        store.write_blocking(credits::ensure_initial_grant).unwrap();
        let (u, j) = new("job_a", 600);
        let a = store
            .write_blocking(|tx| admit(tx, &u, &j, Some("k"), "h1"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.job.status, a.balance, a.replayed),
            (JobStatus::Queued, 400, false)
        );
        let (u2, j2) = new("job_b", 600);
        let again = store
            .write_blocking(|tx| admit(tx, &u2, &j2, Some("k"), "h1"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (again.job.id.as_str(), again.replayed, again.balance),
            ("job_a", true, 400)
        );
        let conflict = store
            .write_blocking(|tx| admit(tx, &u2, &j2, Some("k"), "h2"))
            .unwrap();
        assert_eq!(conflict.unwrap_err(), Refusal::IdempotencyConflict);
        let broke = store
            .write_blocking(|tx| admit(tx, &u2, &j2, None, "h3"))
            .unwrap();
        assert_eq!(
            broke.unwrap_err(),
            Refusal::InsufficientCredits {
                price: 600,
                balance: 400
            }
        );
        let stored = store
            .write_blocking(|tx| jobs_store::get(tx, "job_b"))
            .unwrap();
        assert!(stored.is_none(), "a refused submit stores nothing");
    }
}
