//! Cancelling a job or a generation (`DELETE /v1/jobs/{id}`, `DELETE /v1/generations/{id}`). The
//! item ends `failed` — the seeds' clients know only `completed` and `failed` — with the error code
//! `cancelled` (jobs) or `errorMessage` "cancelled" (generations), in one transaction that also
//! refunds a job's reservation and queues its webhook, exactly as any other end: the same
//! `finish_*_tx` the worker uses. A queued item is then never claimed (claims take `queued` rows
//! only); a running one's stop signal fires, so its engine stops between steps, and the run's own
//! end finds the row final and writes nothing.

use super::worker::{finish_generation_tx, finish_job_tx, End};
use crate::store;
use crate::store::states::FailCode;

/// The `errorMessage` of a cancelled generation (a job's `error.code` is [`FailCode::Cancelled`]).
pub const CANCELLED: &str = "cancelled";

/// What a cancel found.
#[derive(Debug)]
pub enum Cancel<T> {
    /// It was queued or running and is now failed with `cancelled`.
    Cancelled(T),
    /// It had already ended with this status; nothing changed.
    AlreadyFinal(T),
    NotFound,
}

/// Cancels a job in the caller's transaction: row, refund and `job.failed` event together.
pub fn job_tx(tx: &dyn crate::store::Tx, id: &str) -> store::Result<Cancel<store::jobs::Job>> {
    let Some(job) = store::jobs::get(tx, id)? else {
        return Ok(Cancel::NotFound);
    };
    if job.status.is_final() {
        return Ok(Cancel::AlreadyFinal(job));
    }
    let end = End::Failed {
        code: FailCode::Cancelled,
        message: format!(
            "Cancelled at the client's request (DELETE /v1/jobs/{id}); the reserved credits \
             were refunded."
        ),
    };
    finish_job_tx(tx, id, job.credits_reserved, end, None)?;
    let ended = store::jobs::get(tx, id)?.expect("job exists");
    Ok(Cancel::Cancelled(ended))
}

/// Cancels a generation in the caller's transaction: row and (if it asked for one) its webhook.
pub fn generation_tx(
    tx: &dyn crate::store::Tx,
    id: &str,
) -> store::Result<Cancel<store::generations::Generation>> {
    let Some(g) = store::generations::get(tx, id)? else {
        return Ok(Cancel::NotFound);
    };
    if g.status.is_final() {
        return Ok(Cancel::AlreadyFinal(g));
    }
    let end = End::Failed {
        code: FailCode::Cancelled,
        message: CANCELLED.into(),
    };
    finish_generation_tx(tx, id, end, None)?;
    let ended = store::generations::get(tx, id)?.expect("generation exists");
    Ok(Cancel::Cancelled(ended))
}
