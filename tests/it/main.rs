//! One integration-test binary: each `e2e_*` module starts the real server on 127.0.0.1:0 with a
//! temp data dir and a shortened retry schedule, and talks to it over HTTP; the engine modules
//! check accuracy and parity against committed reference fixtures.

mod audio;
mod cli;
mod e2e_analysis;
mod e2e_api;
mod e2e_devtools;
mod e2e_faults;
mod e2e_first_contact;
mod e2e_fleet;
mod e2e_generations;
mod e2e_hardening;
mod e2e_jobs;
mod e2e_lifecycle;
mod e2e_listen;
mod e2e_logs;
mod e2e_openapi;
mod e2e_restart;
mod e2e_s3;
mod e2e_seed_clients;
mod e2e_webhooks;
mod generate;
mod models;
mod musicgen;
mod separate;
mod separate_engine;
mod synth;
mod transcribe;
mod util;
