//! Stand-alone runner for the HTDemucs parity tests until `tests/it/main.rs` declares
//! `mod separate;` (the same file then runs inside the single integration binary).

#[path = "it/separate.rs"]
mod separate;
