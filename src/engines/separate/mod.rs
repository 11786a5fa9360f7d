//! Stem separation behind `/v1/separate`: the DSP separator (always available) and HTDemucs
//! (when its weights are installed).

pub mod dsp;
