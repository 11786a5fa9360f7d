//! Runs `tests/it/transcribe.rs` on its own until it joins the `it` integration binary.
#[path = "it/transcribe.rs"]
mod transcribe;
