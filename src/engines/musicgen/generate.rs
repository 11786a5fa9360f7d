//! The sampling loop: delay pattern, KV-cached decoding with classifier-free guidance (a conditional and a
//! null-text row in one batch), per-step code choice, and audiocraft's windowed continuation past the
//! model's 30 s context.
//!
//! Reference code: transformers `MusicgenForConditionalGeneration.generate` v4.57 (one window: BOS + prompt,
//! `build_delay_pattern_mask`, `ClassifierFreeGuidanceLogitsProcessor`, pad filtering) and audiocraft
//! `models/genmodel.py` `BaseGenModel._generate_tokens` (windows of `max_duration` = 30 s advancing by
//! `extend_stride` = 18 s, each window prompted with the previous window's last 12 s of codes).

use candle_core::{Tensor, D};

use super::delay::DelayPattern;
use super::model::MusicgenModel;
use super::sampling::{guide, pick, Sampling, SeededRng};
use super::Error;

/// Everything that shapes one generation besides the text.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Code frames to produce in total (duration × frame rate).
    pub frames: usize,
    /// Classifier-free guidance coefficient; ≤ 1 runs the conditional row only.
    pub guidance_scale: f64,
    pub sampling: Sampling,
    /// Seeds every draw of the whole generation.
    pub seed: u64,
    /// Longest window the decoder sees, in frames (30 s · 50).
    pub max_window_frames: usize,
    /// How far each new window advances, in frames (18 s · 50); the rest of a window prompts the next.
    pub stride_frames: usize,
    /// The id at position 0 and in the pattern's empty cells (`decoder_start_token_id` = `pad_token_id`).
    pub start_id: u32,
    pub pad_id: u32,
}

impl GenerateOptions {
    /// Published MusicGen settings for `frames` frames at `frame_rate` frames/s: guidance 3.0, top-k 250,
    /// temperature 1.0, 30 s windows advancing by 18 s.
    pub fn published(frames: usize, frame_rate: usize, pad: u32, seed: u64) -> Self {
        Self {
            frames,
            guidance_scale: 3.0,
            sampling: Sampling::PUBLISHED,
            seed,
            max_window_frames: 30 * frame_rate,
            stride_frames: 18 * frame_rate,
            start_id: pad,
            pad_id: pad,
        }
    }
}

/// One window of the continuation schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Frames of the previous window given as prompt.
    pub prompt: usize,
    /// Total frames of this window, prompt included.
    pub frames: usize,
}

/// audiocraft's schedule: one window when `total ≤ max_window`, else windows of up to `max_window` frames,
/// each starting `stride` frames after the previous one and prompted with its overlap.
pub fn windows(total: usize, max_window: usize, stride: usize) -> Vec<Window> {
    let max_window = max_window.max(1);
    if total <= max_window {
        return vec![Window {
            prompt: 0,
            frames: total,
        }];
    }
    let stride = stride.clamp(1, max_window);
    let mut out = Vec::new();
    let (mut offset, mut prompt) = (0usize, 0usize);
    while offset + prompt < total {
        let frames = (total - offset).min(max_window);
        out.push(Window { prompt, frames });
        prompt = frames.saturating_sub(stride);
        offset += stride;
    }
    out
}

/// Decoder calls the whole generation makes (for progress): per window, the grid length minus the prefix.
pub fn total_steps(opts: &GenerateOptions, codebooks: usize) -> usize {
    windows(opts.frames, opts.max_window_frames, opts.stride_frames)
        .iter()
        .map(|w| w.frames.max(codebooks) + codebooks - 1 - w.prompt)
        .sum()
}

/// Generates `opts.frames` frames of codes (`[codebooks][frames]`) conditioned on `text_states`
/// (`[1, len, hidden]`, from [`MusicgenModel::encode_text`]). `on_step` runs after every decoder call with
/// the number of calls so far; `cancelled` is checked before each call.
pub fn generate_codes(
    model: &MusicgenModel,
    text_states: &Tensor,
    opts: &GenerateOptions,
    on_step: &mut dyn FnMut(usize),
    cancelled: &dyn Fn() -> bool,
) -> Result<Vec<Vec<u32>>, Error> {
    let codebooks = model.config().decoder.num_codebooks;
    let mut rng = SeededRng::new(opts.seed);
    let mut out: Vec<Vec<u32>> = vec![Vec::with_capacity(opts.frames); codebooks];
    let mut prompt: Vec<Vec<u32>> = vec![Vec::new(); codebooks];
    let mut steps = 0usize;
    let encoder_states = if opts.guidance_scale > 1.0 {
        Tensor::cat(&[text_states, &text_states.zeros_like()?], 0)?
    } else {
        text_states.clone()
    };
    for w in windows(opts.frames, opts.max_window_frames, opts.stride_frames) {
        let codes = generate_window(
            model,
            &encoder_states,
            &prompt,
            w.frames,
            opts,
            &mut rng,
            &mut |_| {
                steps += 1;
                on_step(steps);
            },
            cancelled,
        )?;
        for (o, c) in out.iter_mut().zip(&codes) {
            o.extend_from_slice(&c[w.prompt.min(c.len())..]);
        }
        let keep_from = opts.stride_frames.min(w.frames);
        prompt = codes
            .iter()
            .map(|c| c[keep_from.min(c.len())..].to_vec())
            .collect();
    }
    for o in out.iter_mut() {
        o.truncate(opts.frames);
    }
    Ok(out)
}

/// One window: `prompt` (`[codebooks][p]`) then `frames − p` new frames; returns all `frames` frames.
/// `encoder_states` has one row (no guidance) or two (conditional, null).
#[allow(clippy::too_many_arguments)]
pub fn generate_window(
    model: &MusicgenModel,
    encoder_states: &Tensor,
    prompt: &[Vec<u32>],
    frames: usize,
    opts: &GenerateOptions,
    rng: &mut SeededRng,
    on_step: &mut dyn FnMut(usize),
    cancelled: &dyn Fn() -> bool,
) -> Result<Vec<Vec<u32>>, Error> {
    let decoder = model.decoder();
    let codebooks = decoder.config().num_codebooks;
    let device = model.device();
    let batch = encoder_states.dim(0)?;
    let guided = batch == 2;
    let scale = opts.guidance_scale as f32;
    // shorter than the pattern's minimum: generate the minimum, cut afterwards
    let grid_frames = frames.max(codebooks);
    let len = grid_frames + codebooks;
    let prefix: Vec<Vec<u32>> = (0..codebooks)
        .map(|k| {
            std::iter::once(opts.start_id)
                .chain(prompt.get(k).into_iter().flatten().copied())
                .collect()
        })
        .collect();
    let pattern = DelayPattern::new(&prefix, opts.pad_id, len)
        .ok_or_else(|| Error::InvalidRequest("generation window too short".into()))?;
    let first = pattern.first_free();
    let mut grid = pattern.prefix();
    let mut state = decoder.start(encoder_states)?;

    let column_tensor = |cols: &[Vec<u32>], from: usize, n: usize| -> candle_core::Result<Tensor> {
        let one: Vec<u32> = cols
            .iter()
            .flat_map(|row| row[from..from + n].iter().copied())
            .collect();
        let t = Tensor::from_vec(one, (1, codebooks, n), device)?;
        if batch > 1 {
            t.repeat((batch, 1, 1))
        } else {
            Ok(t)
        }
    };
    let mut input = column_tensor(&grid, 0, first)?;
    for j in first..len {
        if cancelled() {
            return Err(Error::Cancelled);
        }
        let logits = decoder.forward_last(&input, &mut state)?; // [batch, codebooks, vocab]
        let rows = logits.to_vec3::<f32>()?;
        for (k, row) in grid.iter_mut().enumerate() {
            let tok = match pattern.fixed(k, j) {
                Some(f) => f,
                None if guided => pick(&guide(&rows[0][k], &rows[1][k], scale), opts.sampling, rng),
                None => pick(&rows[0][k], opts.sampling, rng),
            };
            row.push(tok);
        }
        on_step(j + 1 - first);
        if j + 1 < len {
            input = column_tensor(&grid, j, 1)?;
        }
    }
    let mut codes = pattern.revert(&grid);
    for c in codes.iter_mut() {
        c.truncate(frames);
    }
    Ok(codes)
}

/// Teacher-forced logits for a whole code grid (`[codebooks][t]`, pattern already applied), with or without
/// guidance: `[codebooks, t, vocab]` (what the parity fixtures record).
pub fn teacher_forced_logits(
    model: &MusicgenModel,
    text_states: &Tensor,
    grid: &[Vec<u32>],
    guidance_scale: Option<f64>,
) -> Result<Tensor, Error> {
    let codebooks = grid.len();
    let t = grid.first().map_or(0, Vec::len);
    let flat: Vec<u32> = grid.iter().flatten().copied().collect();
    let codes = Tensor::from_vec(flat, (1, codebooks, t), model.device())?;
    let decoder = model.decoder();
    match guidance_scale {
        None => {
            let mut st = decoder.start(text_states)?;
            Ok(decoder.forward(&codes, &mut st)?.squeeze(0)?)
        }
        Some(scale) => {
            let enc = Tensor::cat(&[text_states, &text_states.zeros_like()?], 0)?;
            let mut st = decoder.start(&enc)?;
            let both = decoder.forward(&codes.repeat((2, 1, 1))?, &mut st)?;
            let cond = both.get(0)?;
            let uncond = both.get(1)?;
            Ok((&uncond + ((cond - &uncond)? * scale)?)?)
        }
    }
}

/// Largest absolute difference between two tensors of the same shape (test and bench helper).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> candle_core::Result<f32> {
    (a - b)?
        .abs()?
        .flatten_all()?
        .max(D::Minus1)?
        .to_scalar::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_requests_are_one_window() {
        assert_eq!(
            windows(1500, 1500, 900),
            vec![Window {
                prompt: 0,
                frames: 1500
            }]
        );
        assert_eq!(windows(50, 1500, 900).len(), 1);
    }

    #[test]
    fn sixty_seconds_follow_audiocrafts_schedule() {
        // 3000 frames: [0, 1500) then +900 new with a 600-frame prompt, then the last 600 new
        let w = windows(3000, 1500, 900);
        assert_eq!(
            w,
            vec![
                Window {
                    prompt: 0,
                    frames: 1500
                },
                Window {
                    prompt: 600,
                    frames: 1500
                },
                Window {
                    prompt: 600,
                    frames: 1200
                },
            ]
        );
        let new: usize = w.iter().map(|w| w.frames - w.prompt).sum();
        assert_eq!(new, 3000);
    }

    #[test]
    fn every_schedule_covers_the_request_exactly() {
        for total in [1, 49, 1500, 1501, 2399, 2400, 2401, 4444, 30_000] {
            let w = windows(total, 1500, 900);
            let new: usize = w.iter().map(|w| w.frames - w.prompt).sum();
            assert_eq!(new, total, "total {total}");
            assert!(w.iter().all(|w| w.frames <= 1500 && w.prompt < w.frames));
        }
    }
}
