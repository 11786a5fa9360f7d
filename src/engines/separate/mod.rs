//! Stem separation: split a mix into sources (drums, bass, other, vocals, or vocals + accompaniment).
//!
//! - [`htdemucs`]: Demucs v4 "HTDemucs" ported to candle, loaded from converted official checkpoints.

pub mod htdemucs;
