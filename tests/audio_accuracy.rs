//! Temporary runner for `tests/it/audio.rs` until `tests/it/main.rs` declares `mod audio;`;
//! delete this file then.

#[path = "it/audio.rs"]
mod audio;
