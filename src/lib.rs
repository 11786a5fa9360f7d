//! soundcheck: the hosted music-AI APIs (generations; async jobs with signed webhooks), run locally.
//!
//! A map of the crate, in the order a request walks through it:
//! - [`config`]: defaults ← `SOUNDCHECK_*` env ← flags.
//! - [`datadir`]: one server per data directory (an exclusive lock naming its owner).
//! - [`instances`]: which servers run on this machine, so client commands find theirs.
//! - [`app`]: `AppState`, the router, `run()` and graceful shutdown.
//! - [`http`]: the HTTP/1.1 listener with header-read and idle timeouts.
//! - [`api`]: one file per resource (generations, jobs, webhook admin, credits, media); handlers
//!   validate and call the store or a service.
//! - [`error`]: `ApiError`, rendered as the contract's error envelope.
//! - [`views`]: the contracts' JSON shapes, field for field.
//! - [`store`]: the database (the SQLite file, or a fleet's PostgreSQL); no SQL lives anywhere else.
//! - [`media`]: where uploads and results live (a directory, or S3-compatible object storage).
//! - [`jobs`]: the `Engine`/`Generator` interfaces, the registry and the worker pool.
//! - [`webhooks`]: signing, URL rules, the outbox dispatcher and the retry schedule.
//! - [`cli`]: offline commands (analyze, master, transcribe, separate) with progress bars.
//! - [`dashboard`]: the developer dashboard at `/` (embedded HTML/JS/CSS over the API).
//! - [`remote`]: developer tools over the API (listen, trigger, jobs, deliveries, webhook).
//! - [`faults`]: on-demand failures through the real failure paths.
//! - [`audio`]: decode, resample, encode, loudness — pure functions over samples.
//! - [`models`]: installed model weights: the catalog, `models pull/import/list`.
//! - [`engines`]: pure compute behind the jobs and generations (analysis, mastering, models).

pub mod api;
pub mod app;
pub mod audio;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod datadir;
pub mod engines;
pub mod error;
pub mod faults;
pub mod http;
pub mod ids;
pub mod instances;
pub mod jobs;
pub mod media;
pub mod models;
pub mod remote;
pub mod store;
pub mod views;
pub mod webhooks;
