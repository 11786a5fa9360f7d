//! soundcheck: the hosted music-AI APIs (generations; async jobs with signed webhooks), run locally.
//!
//! A map of the crate, in the order a request walks through it:
//! - [`config`]: defaults ← `SOUNDCHECK_*` env ← flags.
//! - [`app`]: `AppState`, the router, `run()` and graceful shutdown.
//! - [`api`]: one file per resource (generations, jobs, webhook admin, media); handlers validate and
//!   call a service function.
//! - [`error`]: `ApiError`, rendered as the contract's error envelope.
//! - [`store`]: the one SQLite file; no SQL lives anywhere else.
//! - [`jobs`]: the queue (claim, finish, recover), workers, the `Engine`/`Generator` interfaces and
//!   the registry of installed engines.
//! - [`webhooks`]: signing, the outbox dispatcher and the retry schedule.
//! - [`audio`]: decode, resample, encode, loudness — pure functions over samples.
//! - [`engines`]: pure compute behind the jobs and generations (analysis, mastering, models).

pub mod audio;
pub mod engines;
pub mod jobs;
