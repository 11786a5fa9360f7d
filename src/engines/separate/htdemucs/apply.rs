//! Running HTDemucs over a whole track: `demucs.apply.apply_model` (segments of the training length
//! with overlap and triangular cross-fade weights, optional random-shift averaging) and the
//! normalisation `demucs.separate` wraps around it.
//!
//! A segment shorter than the training length (the track's tail) is padded from its neighbours'
//! samples where the track has them, as the reference's `TensorChunk.padded` does, not with zeros.
//!
//! Unlike the reference, which cross-fades into whole-track tensors, segments are added in order
//! into buffers that keep only the samples later segments still reach, and final samples are handed
//! on as they come ([`BagOfModels::separate_into`]): the same values, in memory that does not grow
//! with the track. Several segments may be computed at once ([`SeparateOptions::parallel`]).

use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use super::{Error, HTDemucs};

/// Options of `apply_model` / `separate`. The defaults are the demucs command line's.
#[derive(Debug, Clone, PartialEq)]
pub struct SeparateOptions {
    /// Random time shifts to average over (0 = one pass, deterministic; demucs' default is 1).
    pub shifts: usize,
    /// Overlap between consecutive segments, as a fraction of the segment, in `[0, 1)`.
    pub overlap: f64,
    /// Exponent of the triangular cross-fade (>= 1; 1 = linear).
    pub transition_power: f64,
    /// Seed of the shift offsets, so a job is reproducible.
    pub seed: u64,
    /// Segments computed at once (each model call also splits its own work over the cores; more
    /// than one costs one more segment's activations each). The result does not depend on it.
    pub parallel: usize,
}

impl Default for SeparateOptions {
    fn default() -> Self {
        SeparateOptions {
            shifts: 1,
            overlap: 0.25,
            transition_power: 1.0,
            seed: 0,
            parallel: 1,
        }
    }
}

/// Planar audio `[channel][sample]`.
pub type Planar = Vec<Vec<f32>>;

/// Separated stems: `(source name, [channel][sample])`, in the model's source order.
pub type Stems = Vec<(String, Planar)>;

/// A window `[offset, offset + length)` into a longer signal, like demucs' `TensorChunk`. The
/// window may start before the signal or run past its end; samples there read as zeros (the shift
/// trick's padding, without a padded copy of the track).
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [Vec<f32>],
    offset: isize,
    length: usize,
}

impl<'a> View<'a> {
    fn whole(data: &'a [Vec<f32>]) -> Self {
        View {
            data,
            offset: 0,
            length: data.first().map_or(0, Vec::len),
        }
    }

    /// A sub-window relative to this one, clipped to this window's end (`TensorChunk` of a chunk).
    fn sub(&self, offset: usize, length: usize) -> Self {
        View {
            data: self.data,
            offset: self.offset + offset as isize,
            length: length.min(self.length - offset),
        }
    }

    /// `TensorChunk.padded(target)`: centre the window in `target` samples, taking the extra samples
    /// from the underlying signal where it has them and zeros beyond.
    fn padded(&self, target: usize) -> Planar {
        let delta = target - self.length;
        let start = self.offset - (delta / 2) as isize;
        let total = self.data[0].len() as isize;
        self.data
            .iter()
            .map(|chan| {
                (0..target as isize)
                    .map(|i| {
                        let j = start + i;
                        if (0..total).contains(&j) {
                            chan[j as usize]
                        } else {
                            0.0
                        }
                    })
                    .collect()
            })
            .collect()
    }
}

/// One model call on exactly `training_length` samples: `[source][channel][sample]`.
fn run_segment(model: &HTDemucs, segment: &Planar) -> Result<Vec<Planar>, Error> {
    let (c, l) = (segment.len(), segment[0].len());
    let flat: Vec<f32> = segment.iter().flatten().copied().collect();
    let x = Tensor::from_vec(flat, (1, c, l), model.device())?;
    let y = model.forward(&x)?.squeeze(0)?;
    Ok(y.to_device(&candle_core::Device::Cpu)?.to_vec3::<f32>()?)
}

/// The triangular weights of one segment, `(w / max w) ^ power`.
fn transition_weights(segment: usize, power: f64) -> Vec<f32> {
    let half = segment / 2;
    let raw: Vec<f32> = (1..=half)
        .chain((1..=segment - half).rev())
        .map(|v| v as f32)
        .collect();
    let max = raw.iter().copied().fold(0.0, f32::max);
    raw.iter()
        .map(|&w| {
            let w = w / max;
            if power == 1.0 {
                w
            } else {
                w.powf(power as f32)
            }
        })
        .collect()
}

/// Offsets at which segments start within `length` samples.
fn segment_offsets(length: usize, segment: usize, overlap: f64) -> Vec<usize> {
    let stride = (((1.0 - overlap) * segment as f64) as usize).max(1);
    (0..length).step_by(stride).collect()
}

/// One model's `apply_model(split=True)` pass over one (possibly shifted) window of the track,
/// advanced a segment at a time. Segments are cross-faded into a buffer that holds only the samples
/// a later segment still adds to; samples no later segment reaches are final, divided by their
/// summed weight and queued in `ready`. Same sums in the same order as cross-fading into
/// whole-length buffers, so the same values.
struct Lane<'a> {
    /// The model's index in the caller's list.
    model: usize,
    view: View<'a>,
    /// Leading samples of the window that are the shift's padding, dropped from the output.
    skip: usize,
    segment: usize,
    weight: Vec<f32>,
    offsets: Vec<usize>,
    /// Index of the next segment in `offsets`.
    next: usize,
    /// Window position of the first sample in `acc` and `sum_weight`.
    base: usize,
    /// `[source][channel]` weighted sums of the segments' estimates from `base` on.
    acc: Vec<Planar>,
    sum_weight: Vec<f32>,
    /// Final samples of the track not yet taken, `[source][channel]`.
    ready: Vec<Planar>,
}

impl<'a> Lane<'a> {
    fn new(
        index: usize,
        model: &HTDemucs,
        view: View<'a>,
        skip: usize,
        opts: &SeparateOptions,
    ) -> Self {
        let segment = model.config().training_length();
        let empty = vec![vec![Vec::new(); view.data.len()]; model.sources().len()];
        Lane {
            model: index,
            view,
            skip,
            segment,
            weight: transition_weights(segment, opts.transition_power),
            offsets: segment_offsets(view.length, segment, opts.overlap),
            next: 0,
            base: 0,
            acc: empty.clone(),
            sum_weight: Vec::new(),
            ready: empty,
        }
    }

    fn ready_len(&self) -> usize {
        self.ready[0][0].len()
    }

    /// The model input of segment `index`: its window, padded to the training length.
    fn input(&self, index: usize) -> Planar {
        self.view
            .sub(self.offsets[index], self.segment)
            .padded(self.segment)
    }

    /// Track samples final once the first `segments` segments are in.
    fn finished_after(&self, segments: usize) -> usize {
        if segments == 0 {
            return 0;
        }
        let end = self
            .offsets
            .get(segments)
            .copied()
            .unwrap_or(self.view.length);
        end.saturating_sub(self.skip)
    }

    /// Adds the next segment's estimate `y` (the model's output on [`Lane::input`]) and moves the
    /// samples it completes to `ready`.
    fn absorb(&mut self, y: Vec<Planar>) {
        let offset = self.offsets[self.next];
        let chunk = self.view.sub(offset, self.segment);
        // center_trim back to the chunk's own length.
        let trim = (self.segment - chunk.length) / 2;
        let (at, len) = (offset - self.base, chunk.length);
        for (src_acc, src_y) in self.acc.iter_mut().zip(&y) {
            for (chan_acc, chan_y) in src_acc.iter_mut().zip(src_y) {
                chan_acc.resize(at + len, 0.0);
                let dst = &mut chan_acc[at..at + len];
                let src = &chan_y[trim..trim + len];
                for ((d, s), w) in dst.iter_mut().zip(src).zip(&self.weight) {
                    *d += w * s;
                }
            }
        }
        self.sum_weight.resize(at + len, 0.0);
        for (s, w) in self.sum_weight[at..at + len].iter_mut().zip(&self.weight) {
            *s += w;
        }
        self.next += 1;
        // Later segments start at the next offset: everything before it is final.
        let end = self
            .offsets
            .get(self.next)
            .copied()
            .unwrap_or(self.view.length);
        let n = end - self.base;
        let drop = self.skip.saturating_sub(self.base).min(n);
        for (src_acc, src_ready) in self.acc.iter_mut().zip(&mut self.ready) {
            for (chan_acc, chan_ready) in src_acc.iter_mut().zip(src_ready.iter_mut()) {
                chan_ready.extend(
                    chan_acc[drop..n]
                        .iter()
                        .zip(&self.sum_weight[drop..n])
                        .map(|(v, w)| v / w),
                );
                chan_acc.drain(..n);
            }
        }
        self.sum_weight.drain(..n);
        self.base = end;
    }

    /// The first `n` ready samples, `[source][channel]`.
    fn take(&mut self, n: usize) -> Vec<Planar> {
        self.ready
            .iter_mut()
            .map(|src| src.iter_mut().map(|c| c.drain(..n).collect()).collect())
            .collect()
    }
}

/// `apply_model(split=True, overlap, transition_power)` of several models over one track, run in
/// step: the track goes to `sink` in order as blocks of final samples, `[model][source][channel]`,
/// all of one length, each model's estimate averaged over its shifts. Memory stays at about two
/// segments per model and shift, whatever the track's length.
///
/// `shifts` empty is `shifts=0` (one pass over the track as it is); otherwise one pass per offset,
/// on the track padded by half a second of zeros on both sides and read from that offset, as
/// demucs' shift trick does (the same offsets for every model). The segment run next is always
/// that of the pass furthest behind. `progress` gets the fraction of segments done; `cancelled` is
/// checked before every segment.
fn stream(
    models: &[&HTDemucs],
    mix: &[Vec<f32>],
    opts: &SeparateOptions,
    shifts: &[usize],
    progress: &dyn Fn(f32),
    cancelled: &dyn Fn() -> bool,
    sink: &mut dyn FnMut(Vec<Vec<Planar>>) -> Result<(), Error>,
) -> Result<(), Error> {
    let length = mix.first().map_or(0, Vec::len);
    if length == 0 || mix.iter().any(|c| c.len() != length) {
        return Err(Error::Input(
            "audio must be non-empty with equal-length channels".into(),
        ));
    }
    if !(0.0..1.0).contains(&opts.overlap) || opts.transition_power < 1.0 {
        return Err(Error::Input(format!(
            "overlap {} must be in [0, 1) and transition_power {} >= 1",
            opts.overlap, opts.transition_power
        )));
    }
    let mut lanes = Vec::new();
    for (i, model) in models.iter().enumerate() {
        if shifts.is_empty() {
            lanes.push(Lane::new(i, model, View::whole(mix), 0, opts));
        }
        let max_shift = (0.5 * model.config().samplerate as f64) as usize;
        for &offset in shifts {
            let offset = offset.min(max_shift);
            let view = View {
                data: mix,
                offset: offset as isize - max_shift as isize,
                length: length + max_shift - offset,
            };
            lanes.push(Lane::new(i, model, view, max_shift - offset, opts));
        }
    }
    // The order segments are added in: always the next one of the pass furthest behind (the
    // first of those on a tie), so every pass's buffer stays short.
    let mut order = Vec::new();
    let mut next = vec![0usize; lanes.len()];
    while let Some(i) = (0..lanes.len())
        .filter(|&i| next[i] < lanes[i].offsets.len())
        .min_by_key(|&i| lanes[i].finished_after(next[i]))
    {
        order.push((i, next[i]));
        next[i] += 1;
    }
    let total = order.len();
    let width = opts.parallel.max(1);
    check(cancelled)?;
    let mut done = 0usize;
    let mut emitted = 0usize;
    for group in order.chunks(width) {
        // `width` segments computed at once, added in order: the same sums as one at a time.
        let inputs: Vec<(usize, Planar)> = group
            .iter()
            .map(|&(i, seg)| (i, lanes[i].input(seg)))
            .collect();
        let outputs: Vec<Result<Vec<Planar>, Error>> = if inputs.len() == 1 {
            vec![run_segment(models[lanes[inputs[0].0].model], &inputs[0].1)]
        } else {
            inputs
                .par_iter()
                .map(|(i, x)| run_segment(models[lanes[*i].model], x))
                .collect()
        };
        for (&(i, _), y) in group.iter().zip(outputs) {
            lanes[i].absorb(y?);
            done += 1;
            progress(done as f32 / total as f32);
        }
        check(cancelled)?;
        let n = lanes.iter().map(Lane::ready_len).min().unwrap_or(0);
        if n == 0 {
            continue;
        }
        let mut block = Vec::with_capacity(models.len());
        for i in 0..models.len() {
            let mut passes = lanes.iter_mut().filter(|l| l.model == i);
            let mut sum = passes.next().expect("a pass per model").take(n);
            for pass in passes {
                for (a, s) in sum.iter_mut().zip(pass.take(n)) {
                    for (ac, sc) in a.iter_mut().zip(s) {
                        for (v, w) in ac.iter_mut().zip(sc) {
                            *v += w;
                        }
                    }
                }
            }
            if !shifts.is_empty() {
                let k = shifts.len() as f32;
                for v in sum.iter_mut().flatten().flatten() {
                    *v /= k;
                }
            }
            block.push(sum);
        }
        emitted += n;
        sink(block)?;
    }
    debug_assert_eq!(emitted, length);
    Ok(())
}

/// The shift offsets of a run: none for `shifts=0`, else `shifts` offsets in `0..=max_shift`
/// drawn from the options' seed.
fn draw_shifts(model: &HTDemucs, opts: &SeparateOptions) -> Vec<usize> {
    if opts.shifts == 0 {
        return Vec::new();
    }
    let max_shift = (0.5 * model.config().samplerate as f64) as usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    (0..opts.shifts)
        .map(|_| rng.gen_range(0..=max_shift))
        .collect()
}

/// [`stream`] of one model, collected into whole-length sources.
fn collect(
    model: &HTDemucs,
    mix: &[Vec<f32>],
    opts: &SeparateOptions,
    shifts: &[usize],
    progress: &dyn Fn(f32),
    cancelled: &dyn Fn() -> bool,
) -> Result<Vec<Planar>, Error> {
    let length = mix.first().map_or(0, Vec::len);
    let mut out: Vec<Planar> =
        vec![vec![Vec::with_capacity(length); mix.len()]; model.sources().len()];
    stream(
        &[model],
        mix,
        opts,
        shifts,
        progress,
        cancelled,
        &mut |block| {
            for (src, b) in out.iter_mut().zip(&block[0]) {
                for (chan, bc) in src.iter_mut().zip(b) {
                    chan.extend_from_slice(bc);
                }
            }
            Ok(())
        },
    )?;
    Ok(out)
}

/// `demucs.apply.apply_model(model, mix, shifts, split=True, overlap, transition_power)` on one
/// planar track: `[source][channel][sample]`. `progress` gets the fraction of segments done.
pub fn apply_model(
    model: &HTDemucs,
    mix: &[Vec<f32>],
    opts: &SeparateOptions,
    progress: &dyn Fn(f32),
) -> Result<Vec<Planar>, Error> {
    apply_model_with(model, mix, opts, progress, &|| false)
}

/// [`apply_model`] that checks `cancelled` before every segment and returns [`Error::Cancelled`]
/// once it turns true, so a long track stops within one segment's work.
pub fn apply_model_with(
    model: &HTDemucs,
    mix: &[Vec<f32>],
    opts: &SeparateOptions,
    progress: &dyn Fn(f32),
    cancelled: &dyn Fn() -> bool,
) -> Result<Vec<Planar>, Error> {
    let shifts = draw_shifts(model, opts);
    collect(model, mix, opts, &shifts, progress, cancelled)
}

/// `Err(Cancelled)` once the caller's cancel check is true.
fn check(cancelled: &dyn Fn() -> bool) -> Result<(), Error> {
    if cancelled() {
        Err(Error::Cancelled)
    } else {
        Ok(())
    }
}

/// Separate a track into the model's sources, as `demucs.separate` does: normalise by the mean and
/// (unbiased) standard deviation of the mono mix, [`apply_model`], undo the normalisation.
///
/// `audio` is planar at the model's sample rate (44.1 kHz for the official models) with the model's
/// channel count; mono is duplicated to stereo as demucs does. A silent track is separated without
/// normalisation (demucs would divide by zero). Returns `(source name, [channel][sample])` in the
/// model's source order.
pub fn separate(
    model: &HTDemucs,
    audio: &[Vec<f32>],
    opts: &SeparateOptions,
    progress: &dyn Fn(f32),
) -> Result<Stems, Error> {
    let (normed, mean, std) = normalise(audio.to_vec(), model.config().audio_channels)?;
    let out = apply_model(model, &normed, opts, progress)?;
    Ok(denormalise(model.sources(), out, mean, std))
}

/// Channel-match and normalise a track as `demucs.separate` does, in place; returns
/// `(audio, mean, std)`.
fn normalise(audio: Planar, want: usize) -> Result<(Planar, f32, f32), Error> {
    let mut audio: Vec<Vec<f32>> = match audio.len() {
        n if n == want => audio,
        1 => vec![audio.into_iter().next().expect("one channel"); want],
        n => {
            return Err(Error::Input(format!(
                "model takes {want} channels (or mono), got {n}"
            )))
        }
    };
    let length = audio[0].len();
    if length == 0 || audio.iter().any(|c| c.len() != length) {
        return Err(Error::Input(
            "audio must be non-empty with equal-length channels".into(),
        ));
    }
    if audio.iter().flatten().any(|v| !v.is_finite()) {
        return Err(Error::Input(
            "audio contains NaN or infinite samples".into(),
        ));
    }
    // Statistics in f64; torch computes them in f32, the difference is far below 1e-6.
    let mono: Vec<f64> = (0..length)
        .map(|i| audio.iter().map(|c| c[i] as f64).sum::<f64>() / want as f64)
        .collect();
    let mean = mono.iter().sum::<f64>() / length as f64;
    let var = mono.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (length.max(2) - 1) as f64;
    let std = var.sqrt();
    let (mean, std) = if std > 1e-12 {
        (mean as f32, std as f32)
    } else {
        (0.0, 1.0)
    };
    for v in audio.iter_mut().flatten() {
        *v = (*v - mean) / std;
    }
    Ok((audio, mean, std))
}

fn denormalise(sources: &[String], out: Vec<Planar>, mean: f32, std: f32) -> Stems {
    sources
        .iter()
        .cloned()
        .zip(out)
        .map(|(name, src)| {
            let src = src
                .into_iter()
                .map(|c| c.into_iter().map(|v| v * std + mean).collect())
                .collect();
            (name, src)
        })
        .collect()
}

/// A bag's `weights[model][source]` must hold one finite weight per model and source, with a
/// positive total for every source (it divides the weighted sum).
pub(crate) fn check_weights(
    weights: &[Vec<f32>],
    n_models: usize,
    sources: &[String],
) -> Result<(), Error> {
    if weights.len() != n_models || weights.iter().any(|w| w.len() != sources.len()) {
        return Err(Error::Config(format!(
            "weights must be {n_models} rows (one per model) of {} (one per source)",
            sources.len()
        )));
    }
    if weights.iter().flatten().any(|w| !w.is_finite()) {
        return Err(Error::Config("weights must be finite".into()));
    }
    for (k, source) in sources.iter().enumerate() {
        if weights.iter().map(|w| w[k]).sum::<f32>() <= 0.0 {
            return Err(Error::Config(format!(
                "source {source} has no positive weight"
            )));
        }
    }
    Ok(())
}

/// `demucs.apply.BagOfModels`: several models with the same sources whose estimates are averaged
/// per source with weights (the fine-tuned `htdemucs_ft` is four models, one per source).
#[derive(Debug, Clone)]
pub struct BagOfModels {
    models: Vec<HTDemucs>,
    /// `weights[model][source]`.
    weights: Vec<Vec<f32>>,
}

impl BagOfModels {
    /// `weights` defaults to all ones; every source needs a positive total weight.
    pub fn new(models: Vec<HTDemucs>, weights: Option<Vec<Vec<f32>>>) -> Result<Self, Error> {
        let first = models
            .first()
            .ok_or_else(|| Error::Config("a bag needs at least one model".into()))?;
        let (sources, cfg) = (first.sources(), first.config());
        for m in &models {
            if m.sources() != sources
                || m.config().samplerate != cfg.samplerate
                || m.config().audio_channels != cfg.audio_channels
            {
                return Err(Error::Config(
                    "models of a bag must share sources, sample rate and channels".into(),
                ));
            }
        }
        let weights = weights.unwrap_or_else(|| vec![vec![1.0; sources.len()]; models.len()]);
        check_weights(&weights, models.len(), sources)?;
        Ok(BagOfModels { models, weights })
    }

    pub fn models(&self) -> &[HTDemucs] {
        &self.models
    }

    pub fn sources(&self) -> &[String] {
        self.models[0].sources()
    }

    /// [`separate`] with every model, the estimates weighted per source. Models with zero weight
    /// for every source are skipped.
    pub fn separate(
        &self,
        audio: &[Vec<f32>],
        opts: &SeparateOptions,
        progress: &dyn Fn(f32),
    ) -> Result<Stems, Error> {
        self.separate_with(audio, opts, progress, &|| false)
    }

    /// [`BagOfModels::separate`] that stops with [`Error::Cancelled`] once `cancelled` is true
    /// (checked before every segment of every model).
    pub fn separate_with(
        &self,
        audio: &[Vec<f32>],
        opts: &SeparateOptions,
        progress: &dyn Fn(f32),
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Stems, Error> {
        let mut stems: Option<Stems> = None;
        self.separate_into(audio.to_vec(), opts, progress, cancelled, &mut |block| {
            match &mut stems {
                None => stems = Some(block),
                Some(acc) => {
                    for ((_, src), (_, b)) in acc.iter_mut().zip(block) {
                        for (chan, bc) in src.iter_mut().zip(b) {
                            chan.extend_from_slice(&bc);
                        }
                    }
                }
            }
            Ok(())
        })?;
        Ok(stems.expect("a non-empty track gives at least one block"))
    }

    /// [`BagOfModels::separate_with`] for tracks of any length: takes the track by value (it is
    /// normalised in place) and hands `sink` the stems in order, a block of final samples at a
    /// time (`(source name, [channel][sample])` blocks of one length), so neither the models'
    /// estimates nor the stems are ever held whole. The models run in step, segment by segment
    /// (see `stream`); the values are those [`BagOfModels::separate`] returns.
    pub fn separate_into(
        &self,
        audio: Planar,
        opts: &SeparateOptions,
        progress: &dyn Fn(f32),
        cancelled: &dyn Fn() -> bool,
        sink: &mut dyn FnMut(Stems) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let first = &self.models[0];
        let (normed, mean, std) = normalise(audio, first.config().audio_channels)?;
        let used: Vec<usize> = (0..self.models.len())
            .filter(|&i| self.weights[i].iter().any(|&w| w != 0.0))
            .collect();
        let mut totals = vec![0f32; self.sources().len()];
        for &i in &used {
            for (t, w) in totals.iter_mut().zip(&self.weights[i]) {
                *t += w;
            }
        }
        let models: Vec<&HTDemucs> = used.iter().map(|&i| &self.models[i]).collect();
        let shifts = draw_shifts(first, opts);
        stream(
            &models,
            &normed,
            opts,
            &shifts,
            progress,
            cancelled,
            &mut |block| {
                // Per source: the weighted sum over models, over the total weight, de-normalised.
                let stems = self
                    .sources()
                    .iter()
                    .enumerate()
                    .map(|(k, name)| {
                        let chans = (0..normed.len())
                            .map(|c| {
                                let mut acc = vec![0f32; block[0][k][c].len()];
                                for (est, &i) in block.iter().zip(&used) {
                                    let w = self.weights[i][k];
                                    for (a, s) in acc.iter_mut().zip(&est[k][c]) {
                                        *a += w * s;
                                    }
                                }
                                for v in acc.iter_mut() {
                                    *v /= totals[k];
                                    *v = *v * std + mean;
                                }
                                acc
                            })
                            .collect();
                        (name.clone(), chans)
                    })
                    .collect();
                sink(stems)
            },
        )
    }
}

/// `demucs --two-stems STEM` writes `STEM` and `no_STEM`; here they are `STEM` and
/// `accompaniment`, the sum of every other source (the contract's two-stem names).
pub fn two_stems(stems: Stems, keep: &str) -> Result<Stems, Error> {
    let mut kept = None;
    let mut rest: Option<Planar> = None;
    for (name, audio) in stems {
        if name == keep {
            kept = Some(audio);
        } else if let Some(acc) = rest.as_mut() {
            for (a, c) in acc.iter_mut().zip(&audio) {
                for (x, y) in a.iter_mut().zip(c) {
                    *x += y;
                }
            }
        } else {
            rest = Some(audio);
        }
    }
    let kept = kept.ok_or_else(|| Error::Input(format!("the model has no {keep:?} source")))?;
    let rest = rest.ok_or_else(|| Error::Input("nothing to sum into the accompaniment".into()))?;
    Ok(vec![
        (keep.to_string(), kept),
        ("accompaniment".to_string(), rest),
    ])
}

/// The contract's four stems, in demucs' source order.
pub const FOUR_STEMS: [&str; 4] = ["drums", "bass", "other", "vocals"];

/// The contract's four stems from any model that has them: `drums`, `bass`, `other`, `vocals`, in
/// that order, with every further source (`htdemucs_6s`' `guitar` and `piano`) summed into
/// `other`, so the stems still add up to the model's whole estimate.
pub fn four_stems(stems: Stems) -> Result<Stems, Error> {
    let mut out: Vec<(String, Option<Planar>)> =
        FOUR_STEMS.iter().map(|n| (n.to_string(), None)).collect();
    let other = 2;
    let mut extra: Vec<Planar> = Vec::new();
    for (name, audio) in stems {
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, slot)) => *slot = Some(audio),
            None => extra.push(audio),
        }
    }
    if let Some(acc) = out[other].1.as_mut() {
        for audio in &extra {
            for (a, c) in acc.iter_mut().zip(audio) {
                for (x, y) in a.iter_mut().zip(c) {
                    *x += y;
                }
            }
        }
    }
    out.into_iter()
        .map(|(name, audio)| match audio {
            Some(a) => Ok((name, a)),
            None => Err(Error::Input(format!("the model has no {name:?} source"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_the_reference_triangle() {
        let w = transition_weights(6, 1.0);
        assert_eq!(
            w,
            vec![1.0 / 3.0, 2.0 / 3.0, 1.0, 1.0, 2.0 / 3.0, 1.0 / 3.0]
        );
        let w = transition_weights(5, 2.0);
        assert_eq!(w.len(), 5);
        assert!((w[2] - 1.0).abs() < 1e-7 && (w[0] - 1.0 / 9.0).abs() < 1e-7);
    }

    #[test]
    fn offsets_follow_the_overlap() {
        assert_eq!(segment_offsets(35280, 17640, 0.25), vec![0, 13230, 26460]);
        assert_eq!(segment_offsets(10, 4, 0.0), vec![0, 4, 8]);
    }

    /// The committed parity fixture: a reduced HTDemucs with random weights.
    fn fixture_model() -> HTDemucs {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/htdemucs");
        let th = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "th"))
            .unwrap();
        HTDemucs::from_th(&th, &candle_core::Device::Cpu).unwrap()
    }

    #[test]
    fn a_full_shift_reproduces_the_unshifted_run() {
        let model = fixture_model();
        let mix: Vec<Vec<f32>> = (0..2)
            .map(|c| {
                (0..20000)
                    .map(|i| ((i * (c + 3)) as f32 * 0.013).sin() * 0.5)
                    .collect()
            })
            .collect();
        let opts = SeparateOptions {
            shifts: 0,
            ..SeparateOptions::default()
        };
        let base = apply_model(&model, &mix, &opts, &|_| {}).unwrap();
        let diff = |a: &[Planar], b: &[Planar]| {
            a.iter()
                .flatten()
                .flatten()
                .zip(b.iter().flatten().flatten())
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max)
        };
        // Starting at the full shift reads exactly the original samples, zeros around them.
        let same = collect(&model, &mix, &opts, &[22050], &|_| {}, &|| false).unwrap();
        assert_eq!(diff(&base, &same), 0.0);
        // Any other offset moves the segment boundaries, so the output changes.
        let moved = collect(&model, &mix, &opts, &[0, 22050], &|_| {}, &|| false).unwrap();
        assert!(diff(&base, &moved) > 1e-4);
    }

    #[test]
    fn segments_at_once_give_the_same_stems() {
        let model = fixture_model();
        let mix: Vec<Vec<f32>> = (0..2)
            .map(|c| {
                (0..50000)
                    .map(|i| ((i * (c + 5)) as f32 * 0.007).sin() * 0.4)
                    .collect()
            })
            .collect();
        let bag = BagOfModels::new(
            vec![model.clone(), model],
            Some(vec![vec![1.0, 0.0, 3.0, 0.5], vec![0.0, 1.0, 1.0, 0.5]]),
        )
        .unwrap();
        let one = bag
            .separate(&mix, &SeparateOptions::default(), &|_| {})
            .unwrap();
        for parallel in [2, 3] {
            let opts = SeparateOptions {
                parallel,
                ..SeparateOptions::default()
            };
            let ticks = std::cell::RefCell::new(Vec::new());
            let many = bag
                .separate(&mix, &opts, &|p| ticks.borrow_mut().push(p))
                .unwrap();
            assert_eq!(one, many, "parallel {parallel}");
            let ticks = ticks.into_inner();
            assert!(ticks.windows(2).all(|w| w[0] < w[1]) && ticks.last() == Some(&1.0));
        }
    }

    #[test]
    fn two_stems_sums_the_other_sources() {
        let stem = |v: f32| vec![vec![v, 2.0 * v], vec![-v, 0.0]];
        let stems = vec![
            ("drums".to_string(), stem(1.0)),
            ("bass".to_string(), stem(2.0)),
            ("other".to_string(), stem(4.0)),
            ("vocals".to_string(), stem(8.0)),
        ];
        let two = two_stems(stems.clone(), "vocals").unwrap();
        assert_eq!(two[0], ("vocals".to_string(), stem(8.0)));
        assert_eq!(two[1], ("accompaniment".to_string(), stem(7.0)));
        assert!(two_stems(stems, "piano").is_err());
    }

    #[test]
    fn four_stems_folds_extra_sources_into_other() {
        let stem = |v: f32| vec![vec![v, 2.0 * v], vec![-v, 0.0]];
        let six = ["drums", "bass", "other", "vocals", "guitar", "piano"];
        let stems: Stems = six
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), stem((1 << i) as f32)))
            .collect();
        let four = four_stems(stems.clone()).unwrap();
        let names: Vec<&str> = four.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, FOUR_STEMS);
        assert_eq!(four[0].1, stem(1.0));
        assert_eq!(four[2].1, stem(4.0 + 16.0 + 32.0));
        assert_eq!(four[3].1, stem(8.0));
        // Already four: unchanged, reordered to the contract's order.
        let mut shuffled = stems[..4].to_vec();
        shuffled.reverse();
        assert_eq!(four_stems(shuffled).unwrap(), stems[..4].to_vec());
        assert!(four_stems(stems[1..].to_vec()).is_err());
    }

    #[test]
    fn a_bag_weights_each_source_across_models() {
        let model = fixture_model();
        let mix: Vec<Vec<f32>> = (0..2)
            .map(|c| {
                (0..9000)
                    .map(|i| ((i * (c + 2)) as f32 * 0.02).sin())
                    .collect()
            })
            .collect();
        let opts = SeparateOptions {
            shifts: 0,
            ..SeparateOptions::default()
        };
        let single = separate(&model, &mix, &opts, &|_| {}).unwrap();
        // Two copies of one model: any positive weighting must give that model's estimate back.
        let bag = BagOfModels::new(
            vec![model.clone(), model.clone()],
            Some(vec![vec![1.0, 0.0, 3.0, 0.5], vec![0.0, 1.0, 1.0, 0.5]]),
        )
        .unwrap();
        let ticks = std::cell::RefCell::new(Vec::new());
        let both = bag
            .separate(&mix, &opts, &|p| ticks.borrow_mut().push(p))
            .unwrap();
        for ((n1, a), (n2, b)) in single.iter().zip(&both) {
            assert_eq!(n1, n2);
            let err = a
                .iter()
                .flatten()
                .zip(b.iter().flatten())
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(err < 1e-6, "{n1}: {err}");
        }
        assert_eq!(*ticks.borrow(), vec![0.5, 1.0]);
        let no_bass = BagOfModels::new(vec![model], Some(vec![vec![1.0, 0.0, 1.0, 1.0]]));
        assert!(no_bass.is_err());
    }

    #[test]
    fn padded_views_read_neighbours_then_zeros() {
        let data = vec![(0..10).map(|v| v as f32).collect::<Vec<_>>()];
        let tail = View::whole(&data).sub(8, 4);
        assert_eq!(tail.length, 2);
        assert_eq!(tail.padded(4), vec![vec![7.0, 8.0, 9.0, 0.0]]);
        let head = View::whole(&data).sub(0, 3);
        assert_eq!(head.padded(5), vec![vec![0.0, 0.0, 1.0, 2.0, 3.0]]);
    }
}
