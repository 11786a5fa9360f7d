//! Stand-alone runner for the MusicGen parity tests until they join the `it` binary (`mod musicgen;` in
//! tests/it/main.rs); then this file goes.

#[path = "it/musicgen.rs"]
mod musicgen;
