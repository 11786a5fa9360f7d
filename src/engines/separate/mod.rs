//! Stem separation behind `/v1/separate`: split a mix into sources (vocals, drums, bass, other, or
//! vocals + accompaniment).
//!
//! - [`dsp`]: the classical separator, always available, reported as `"model": "dsp"`;
//! - [`htdemucs`]: Demucs v4 "HTDemucs" ported to candle, loaded from converted official
//!   checkpoints.

pub mod dsp;
pub mod htdemucs;

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::audio::{self, Format};
use crate::jobs::engine::{file_ref, Engine, EngineError, JobContext, JobKind, JobOutput};

/// `/v1/separate` with the DSP separator.
pub struct DspSeparateEngine;

impl Engine for DspSeparateEngine {
    fn kind(&self) -> JobKind {
        JobKind::Separate
    }

    fn name(&self) -> &str {
        "dsp"
    }

    /// `stems`: `2` or `4` (default 4); `format`: `wav16` (default), `wav24` or `float`.
    fn params(&self, fields: &BTreeMap<String, String>) -> Result<Value, String> {
        let stems = match fields.get("stems").map(|s| s.trim()) {
            None | Some("") | Some("4") => 4,
            Some("2") => 2,
            Some(other) => return Err(format!("stems must be 2 or 4, not {other:?}")),
        };
        let format = fields.get("format").map_or("wav16", |s| s.trim());
        match Format::parse(format, None) {
            Some(Format::Wav16 | Format::Wav24 | Format::WavFloat) => {}
            _ => {
                return Err(format!(
                    "format must be wav16, wav24 or float, not {format:?}"
                ))
            }
        }
        Ok(json!({ "stems": stems, "format": format }))
    }

    fn run(&self, ctx: &JobContext<'_>) -> Result<JobOutput, EngineError> {
        let two = ctx.params["stems"] == 2;
        let format = ctx.params["format"]
            .as_str()
            .and_then(|f| Format::parse(f, None))
            .unwrap_or(Format::Wav16);
        let input = audio::decode_with_progress(ctx.input, &|p| (ctx.progress)(0.1 * p))?;
        let stems = dsp::separate(
            &input,
            two,
            &|p| (ctx.progress)(0.1 + 0.8 * p),
            ctx.cancelled,
        )
        .map_err(|e| match e {
            dsp::Error::Cancelled => EngineError::Cancelled,
            dsp::Error::Empty => EngineError::InvalidInput("the audio has no samples".into()),
        })?;
        let mut urls = Map::new();
        for (name, stem) in &stems {
            let file = format!("{name}.wav");
            audio::encode(stem, format, &ctx.out_dir.join(&file))?;
            urls.insert(name.to_string(), file_ref(&file));
        }
        (ctx.progress)(1.0);
        Ok(JobOutput {
            result: json!({
                "stems": urls,
                "model": "dsp",
                "format": ctx.params["format"],
                "sample_rate": input.sample_rate,
                "duration": input.duration_secs(),
            }),
        })
    }
}
