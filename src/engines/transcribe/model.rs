//! The basic-pitch network in candle: harmonic CQT front end and the contour / note / onset heads.
//!
//! Paper: Bittner, Bosch, Rubinstein, Meseguer-Brocal, Ewert, "A Lightweight Instrument-Agnostic Model for
//! Polyphonic Note Transcription and Multipitch Estimation", ICASSP 2022 (arXiv:2203.09893).
//! Reference code: <https://github.com/spotify/basic-pitch> v0.4.0, `basic_pitch/models.py` (network),
//! `basic_pitch/layers/nnaudio.py` (CQT2010v2), `layers/signal.py` (NormalizedLog), `nn.py` (HarmonicStacking).
//! The weights are those of the package's ONNX export (`saved_models/icassp_2022/nmp.onnx`), converted by
//! `scripts/basic_pitch/convert.py`; in that export every batch norm that follows a convolution is folded into
//! the convolution, so the layers here are plain convolutions with bias.
//!
//! Tensors are laid out as in the ONNX graph: `[batch, channels, time, freq]`, time being 172 frames of one
//! 43,844-sample window. This module knows nothing about windowing, stitching or notes: see `super`.

use candle_core::{DType, Device, IndexOp, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::cpu::{self, Activation, BandGeometry};

/// Shape and signal parameters of the ICASSP 2022 checkpoint (`basic_pitch/constants.py`, `models.py`).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Input sample rate; the model only ever sees audio at this rate.
    pub sample_rate: u32,
    /// CQT hop in samples (`FFT_HOP`): one output frame per hop.
    pub hop: usize,
    /// Samples per model window (`AUDIO_N_SAMPLES` = 2 s · 22,050 − 256).
    pub window_samples: usize,
    /// Frames per model window (`ANNOT_N_FRAMES`).
    pub window_frames: usize,
    /// Lowest CQT bin, Hz (`ANNOTATIONS_BASE_FREQUENCY`, A0).
    pub fmin: f64,
    /// CQT resolution (`CONTOURS_BINS_PER_SEMITONE` · 12).
    pub bins_per_octave: usize,
    /// CQT bins actually kept: `min(88 + 12·⌈log2 8⌉, 103)` semitones · 3.
    pub n_cqt_bins: usize,
    /// Taps of the CQT kernels and of the anti-alias low-pass filter.
    pub kernel_len: usize,
    /// Harmonics stacked as input channels (`[0.5, 1, 2, …, 7]`).
    pub harmonics: Vec<f64>,
    /// Contour output bins (88 semitones · 3).
    pub n_contour_bins: usize,
    /// Note / onset output bins (88 piano keys).
    pub n_note_bins: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self::icassp_2022()
    }
}

impl Config {
    /// The configuration of the published checkpoint.
    pub fn icassp_2022() -> Self {
        Self {
            sample_rate: 22_050,
            hop: 256,
            window_samples: 43_844,
            window_frames: 172,
            fmin: 27.5,
            bins_per_octave: 36,
            n_cqt_bins: 309,
            kernel_len: 256,
            harmonics: vec![0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
            n_contour_bins: 264,
            n_note_bins: 88,
        }
    }

    /// Octaves the CQT covers; each octave below the top one is computed after a 2× decimation.
    pub fn n_octaves(&self) -> usize {
        self.n_cqt_bins.div_ceil(self.bins_per_octave)
    }

    /// Bin shift of each harmonic in the stack: `round(bins_per_octave · log2 h)`.
    pub fn harmonic_shifts(&self) -> Vec<isize> {
        self.harmonics
            .iter()
            .map(|h| (self.bins_per_octave as f64 * h.log2()).round() as isize)
            .collect()
    }
}

/// Reflection padding (numpy/torch "reflect": the edge sample is not repeated) on the last dimension.
fn reflect_pad_last(x: &Tensor, pad: usize) -> Result<Tensor> {
    let len = x.dim(D::Minus1)?;
    if pad >= len {
        candle_core::bail!("reflect padding {pad} needs more than {len} samples");
    }
    let idx: Vec<u32> = (0..len + 2 * pad)
        .map(|i| {
            let j = i as isize - pad as isize;
            let j = if j < 0 { -j } else { j };
            let j = if j >= len as isize {
                2 * (len as isize - 1) - j
            } else {
                j
            };
            j as u32
        })
        .collect();
    let idx = Tensor::from_vec(idx, len + 2 * pad, x.device())?;
    x.index_select(&idx, x.rank() - 1)
}

/// nnAudio's `CQT2010v2` as basic-pitch configures it: the top octave's 36 complex kernels are applied to
/// the audio, then to the audio low-passed and decimated by 2 for each lower octave (hop halving each time),
/// keeping the top `n_cqt_bins` bins, scaled by √(filter length) like librosa. Returns the magnitude.
#[derive(Debug, Clone)]
pub struct Cqt {
    /// Real and imaginary kernels stacked as one conv1d weight `[2·36, 1, 256]`.
    kernels: Tensor,
    /// The same as a row-major `[256, 2·36]` matrix on the host, the right operand of the CPU path.
    kernels_t: Vec<f32>,
    /// `sqrt_lengths` on the host, for the CPU path.
    sqrt_lengths_host: Vec<f32>,
    /// Anti-alias FIR (`lowpass`, 256 taps) with 2× decimation, as a banded product.
    decimate: BandedConv2d,
    /// `[n_cqt_bins, 1]` librosa normalisation.
    sqrt_lengths: Tensor,
    bins_per_octave: usize,
    n_bins: usize,
    n_octaves: usize,
    hop: usize,
    kernel_len: usize,
}

impl Cqt {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let (b, k) = (cfg.bins_per_octave, cfg.kernel_len);
        let real = vb.get((b, 1, k), "kernel_real")?;
        let imag = vb.get((b, 1, k), "kernel_imag")?;
        let n_octaves = cfg.n_octaves();
        if cfg.hop % (1 << (n_octaves - 1)) != 0 {
            candle_core::bail!("hop {} cannot be halved {} times", cfg.hop, n_octaves - 1);
        }
        let kernels = Tensor::cat(&[real, imag], 0)?;
        let sqrt_lengths = vb.get(cfg.n_cqt_bins, "sqrt_lengths")?;
        Ok(Self {
            kernels_t: kernels
                .reshape((2 * b, k))?
                .t()?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1()?,
            sqrt_lengths_host: sqrt_lengths.to_dtype(DType::F32)?.to_vec1()?,
            kernels,
            decimate: BandedConv2d::from_kernel(
                &vb.get((1, 1, k), "lowpass")?.unsqueeze(0)?,
                &Tensor::zeros(1, DType::F32, vb.device())?,
                2,
                (k - 1) / 2,
                1,
                64,
            )?,
            sqrt_lengths: sqrt_lengths.reshape((cfg.n_cqt_bins, 1))?,
            bins_per_octave: b,
            n_bins: cfg.n_cqt_bins,
            n_octaves,
            hop: cfg.hop,
            kernel_len: k,
        })
    }

    /// One octave: reflect-pad by half a kernel ("center"), then convolve with the kernels at `hop`.
    fn octave(&self, x: &Tensor, hop: usize) -> Result<Tensor> {
        let x = reflect_pad_last(x, self.kernel_len / 2)?;
        x.conv1d(&self.kernels, 0, hop, 1, 1)
    }
}

impl Cqt {
    /// The CPU path of [`Cqt::forward`] for `batch` windows of `len` samples (row-major in `audio`):
    /// every octave's frames become rows of one product with the `[256, 72]` kernels, and the magnitude,
    /// bin selection and scaling are one pass. Returns `(magnitude [batch, frames, n_bins], frames)`.
    pub fn forward_slice(
        &self,
        audio: &[f32],
        batch: usize,
        len: usize,
    ) -> Result<(Vec<f32>, usize)> {
        let k = self.kernel_len;
        let n_oct = self.n_octaves;
        let frames = (len + 2 * (k / 2)).saturating_sub(k) / self.hop + 1;
        let mut cols = Vec::with_capacity(batch * n_oct * frames * k);
        let mut padded = Vec::new();
        let pad = (k - 1) / 2;
        for b in 0..batch {
            let mut sig = audio[b * len..(b + 1) * len].to_vec();
            let mut hop = self.hop;
            for oct in 0..n_oct {
                if oct > 0 {
                    hop /= 2;
                    let n = sig.len();
                    let out_len = (n + 2 * pad).saturating_sub(k) / 2 + 1;
                    sig = self.decimate.apply_slice(
                        &sig,
                        (1, 1, 1, n),
                        pad,
                        out_len,
                        Activation::None,
                    )?;
                }
                cpu::reflect_pad(&sig, k / 2, &mut padded);
                let n_fr = (padded.len() - k) / hop + 1;
                if n_fr != frames {
                    candle_core::bail!("octave {oct} has {n_fr} frames, not {frames}");
                }
                for fr in 0..frames {
                    cols.extend_from_slice(&padded[fr * hop..fr * hop + k]);
                }
            }
        }
        let bpo = self.bins_per_octave;
        let y = cpu::gemm_rows(
            &cols,
            batch * n_oct * frames,
            k,
            k,
            &self.kernels_t,
            2 * bpo,
        );
        drop(cols);
        let skip = n_oct * bpo - self.n_bins;
        let mag = {
            let mut mag = vec![0f32; batch * frames * self.n_bins];
            for b in 0..batch {
                for fr in 0..frames {
                    let dst = &mut mag[(b * frames + fr) * self.n_bins..][..self.n_bins];
                    for (j, d) in dst.iter_mut().enumerate() {
                        // Bins ascend in frequency: the last octave computed comes first.
                        let jj = j + skip;
                        let oct = n_oct - 1 - jj / bpo;
                        let row = &y[((b * n_oct + oct) * frames + fr) * 2 * bpo..][..2 * bpo];
                        let s = self.sqrt_lengths_host[j];
                        let (re, im) = (row[jj % bpo] * s, row[bpo + jj % bpo] * s);
                        *d = (re * re + im * im).sqrt();
                    }
                }
            }
            mag
        };
        Ok((mag, frames))
    }
}

impl Module for Cqt {
    /// `[batch, samples]` → CQT magnitude `[batch, frames, n_cqt_bins]`.
    fn forward(&self, audio: &Tensor) -> Result<Tensor> {
        let mut x = audio.unsqueeze(1)?;
        let mut hop = self.hop;
        // Octaves from the top down; each is [batch, 2·36, frames].
        let mut octaves = vec![self.octave(&x, hop)?];
        for _ in 1..self.n_octaves {
            hop /= 2;
            // Low-pass then keep every other sample ("match_torch_exactly": zero padding of 127 each side).
            let pad = (self.kernel_len - 1) / 2;
            let len = x.dim(2)?;
            let out_len = (len + 2 * pad).saturating_sub(self.kernel_len) / 2 + 1;
            x = self
                .decimate
                .apply(&x.unsqueeze(2)?, pad, out_len)?
                .squeeze(2)?;
            octaves.push(self.octave(&x, hop)?);
        }
        let b = self.bins_per_octave;
        let part = |offset: usize| -> Result<Tensor> {
            let parts = octaves
                .iter()
                .rev()
                .map(|o| o.narrow(1, offset, b))
                .collect::<Result<Vec<_>>>()?;
            let all = Tensor::cat(&parts, 1)?;
            let total = all.dim(1)?;
            all.narrow(1, total - self.n_bins, self.n_bins)?
                .broadcast_mul(&self.sqrt_lengths)
        };
        let (re, im) = (part(0)?, part(b)?);
        let mag = (re.sqr()? + im.sqr()?)?.sqrt()?;
        mag.transpose(1, 2)
    }
}

/// basic-pitch's `NormalizedLog`: power in dB, then min-max scaled to `0..=1` over each window
/// (`divide_no_nan`: a constant window gives zeros).
pub fn normalized_log(mag: &Tensor) -> Result<Tensor> {
    // Same op order as the reference graph: ln(p + 1e-10) · (1/ln 10) · 10.
    let power = mag.sqr()?;
    let log_power = ((power + 1e-10)?.log()? * 0.434_294_46_f64)? * 10.0;
    let log_power = log_power?;
    let min = log_power.min_keepdim(2)?.min_keepdim(1)?;
    let offset = log_power.broadcast_sub(&min)?;
    let max = offset.max_keepdim(2)?.max_keepdim(1)?;
    // max == 0 only when every offset is 0: dividing by 1 then gives the reference's 0.
    let denom = (&max + max.eq(0f64)?.to_dtype(max.dtype())?)?;
    offset.broadcast_div(&denom)
}

/// [`normalized_log`] over one window's `[frames, bins]` magnitudes, in place, same op order.
pub fn normalized_log_slice(x: &mut [f32]) {
    let (mut min, mut max) = (f32::INFINITY, f32::NEG_INFINITY);
    for v in x.iter_mut() {
        let power = *v * *v;
        *v = ((power + 1e-10).ln() * 0.434_294_46_f32) * 10.0;
        min = min.min(*v);
    }
    for v in x.iter_mut() {
        *v -= min;
        max = max.max(*v);
    }
    let denom = if max == 0.0 { 1.0 } else { max };
    for v in x.iter_mut() {
        *v /= denom;
    }
}

/// `HarmonicStacking`: channel `i` is the CQT shifted down by harmonic `i`'s bin offset (zero-filled), cut to
/// the first `n_out` bins. `[batch, frames, n_cqt_bins]` → `[batch, harmonics, frames, n_out]`.
#[derive(Debug, Clone)]
pub struct HarmonicStacking {
    shifts: Vec<isize>,
    n_out: usize,
}

impl HarmonicStacking {
    pub fn new(cfg: &Config) -> Self {
        Self {
            shifts: cfg.harmonic_shifts(),
            n_out: cfg.n_contour_bins,
        }
    }
}

impl HarmonicStacking {
    /// The CPU path: `[frames, n_in]` of one window → `[harmonics, frames, n_out]` appended to `out`.
    pub fn stack_slice(&self, x: &[f32], frames: usize, n_in: usize, out: &mut Vec<f32>) {
        for &s in &self.shifts {
            for fr in 0..frames {
                let row = &x[fr * n_in..(fr + 1) * n_in];
                out.extend((0..self.n_out).map(|j| {
                    let i = j as isize + s;
                    if i >= 0 && (i as usize) < n_in {
                        row[i as usize]
                    } else {
                        0.0
                    }
                }));
            }
        }
    }
}

impl Module for HarmonicStacking {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let n_in = x.dim(2)?;
        let channels = self
            .shifts
            .iter()
            .map(|&s| {
                if s >= 0 {
                    let s = s as usize;
                    let take = n_in.saturating_sub(s).min(self.n_out);
                    if take == 0 {
                        let (b, t, _) = x.dims3()?;
                        return Tensor::zeros((b, t, self.n_out), x.dtype(), x.device());
                    }
                    x.narrow(2, s, take)?
                        .pad_with_zeros(2, 0, self.n_out - take)
                } else {
                    let s = s.unsigned_abs().min(self.n_out);
                    x.narrow(2, 0, (self.n_out - s).min(n_in))?.pad_with_zeros(
                        2,
                        s,
                        self.n_out - s - (self.n_out - s).min(n_in),
                    )
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::stack(&channels, 1)
    }
}

/// A 2-D convolution over `[batch, ch, time, freq]` (stride 1 in time with "same" zero padding, stride
/// `s` in frequency with explicit zero padding) computed as one large matrix product, which is what a CPU
/// does fast. The frequency axis is cut into blocks of `block` outputs; each block reads a window of
/// `s·(block−1) + k_freq` inputs (an overlapping, strided view: `unfold`), for every channel and time
/// tap, and the kernel becomes one banded (Toeplitz) matrix shared by all blocks:
/// `[rows = time tap · channel · window position, cols = out channel · output in block]`.
/// Same arithmetic as the reference convolution, in another summation order; `block` trades the zeros
/// in the band (wasted multiplies) against matrix size.
#[derive(Debug, Clone)]
pub struct BandedConv2d {
    /// `[k_time · in · window, out · block]`.
    toeplitz: Tensor,
    /// The same on the host (row-major), for the CPU path.
    toeplitz_host: Vec<f32>,
    /// `[1, out, 1, 1]`.
    bias: Tensor,
    /// The bias on the host, for the CPU path.
    bias_host: Vec<f32>,
    /// Input channels.
    in_c: usize,
    out_c: usize,
    k_time: usize,
    stride: usize,
    block: usize,
    /// Inputs one block reads.
    window: usize,
    /// Zero padding before the first input bin.
    pad_left: usize,
    /// Output bins.
    out_freq: usize,
}

impl BandedConv2d {
    /// Builds from a `[out, in, k_time, k_freq]` kernel and `[out]` bias; `pad_left` and `out_freq` fix the
    /// frequency geometry (see [`BandedConv2d::same`] for Keras' "same").
    #[allow(clippy::too_many_arguments)]
    pub fn from_kernel(
        weight: &Tensor,
        bias: &Tensor,
        stride: usize,
        pad_left: usize,
        out_freq: usize,
        block: usize,
    ) -> Result<Self> {
        let (out_c, in_c, k_t, k_f) = weight.dims4()?;
        if k_t % 2 == 0 || stride == 0 || block == 0 || out_freq == 0 {
            candle_core::bail!(
                "unsupported conv: kernel {k_t}x{k_f}, stride {stride}, block {block}"
            );
        }
        let window = stride * (block - 1) + k_f;
        let w = weight
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let (rows, cols) = (k_t * in_c * window, out_c * block);
        let mut t = vec![0f32; rows * cols];
        for dt in 0..k_t {
            for c in 0..in_c {
                for fo in 0..block {
                    for df in 0..k_f {
                        let row = (dt * in_c + c) * window + stride * fo + df;
                        for o in 0..out_c {
                            t[row * cols + o * block + fo] =
                                w[((o * in_c + c) * k_t + dt) * k_f + df];
                        }
                    }
                }
            }
        }
        Ok(Self {
            toeplitz: Tensor::from_vec(t.clone(), (rows, cols), weight.device())?,
            toeplitz_host: t,
            bias: bias.reshape((1, out_c, 1, 1))?,
            bias_host: bias.to_dtype(DType::F32)?.to_vec1()?,
            in_c,
            out_c,
            k_time: k_t,
            stride,
            block,
            window,
            pad_left,
            out_freq,
        })
    }

    /// A Keras `Conv2D(padding="same", strides=(1, stride))` read from `vb` (`weight`, `bias`).
    pub fn same(
        in_c: usize,
        out_c: usize,
        kernel: (usize, usize),
        stride: usize,
        n_freq_in: usize,
        block: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let (k_t, k_f) = kernel;
        let weight = vb.get((out_c, in_c, k_t, k_f), "weight")?;
        let bias = vb.get(out_c, "bias")?;
        let out_freq = n_freq_in.div_ceil(stride);
        let total = ((out_freq - 1) * stride + k_f).saturating_sub(n_freq_in);
        Self::from_kernel(&weight, &bias, stride, total / 2, out_freq, block)
    }
}

impl BandedConv2d {
    /// The CPU path on a row-major `[b, c, t, f]` slice: one packing pass, one product, one pass that adds
    /// the bias and applies `act`. Returns `[b, out, t, out_freq]`.
    pub fn apply_slice(
        &self,
        x: &[f32],
        dims: (usize, usize, usize, usize),
        pad_left: usize,
        out_freq: usize,
        act: Activation,
    ) -> Result<Vec<f32>> {
        let (b, c, t, f) = dims;
        if c != self.in_c || x.len() != b * c * t * f || out_freq == 0 {
            candle_core::bail!(
                "banded conv: input {dims:?} ({} values) for {} channels",
                x.len(),
                self.in_c
            );
        }
        let g = BandGeometry {
            k_time: self.k_time,
            stride: self.stride,
            block: self.block,
            window: self.window,
            pad_left,
            out_freq,
        };
        let cols = cpu::pack_bands(x, dims, &g);
        // Stored rows: (t + 2·pt) per block; the last 2·pt of them start no product row.
        let row_len = c * self.window;
        let rows = cols.len() / row_len - 2 * (self.k_time / 2);
        let y = cpu::gemm_rows(
            &cols,
            rows,
            self.k_time * row_len,
            row_len,
            &self.toeplitz_host,
            self.out_c * self.block,
        );
        drop(cols);
        Ok(cpu::unpack_bands(
            &y,
            (b, t, f),
            self.out_c,
            &self.bias_host,
            &g,
            act,
        ))
    }

    /// [`Module::forward`] followed by `act`, on the CPU path when `x` is a contiguous CPU tensor.
    pub fn forward_act(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        let (b, _, t, _) = x.dims4()?;
        let (pad_left, out_freq) = (self.pad_left, self.out_freq);
        if let Some(y) = cpu::with_slice(x, |s| {
            self.apply_slice(s, x.dims4()?, pad_left, out_freq, act)
        })? {
            return Tensor::from_vec(y?, (b, self.out_c, t, out_freq), &Device::Cpu);
        }
        let y = self.apply(x, pad_left, out_freq)?;
        match act {
            Activation::None => Ok(y),
            Activation::Relu => y.relu(),
            Activation::Sigmoid => candle_nn::ops::sigmoid(&y),
        }
    }

    /// The convolution with another frequency geometry than the one built with (same kernel), with
    /// candle tensor ops (any device).
    pub fn apply(&self, x: &Tensor, pad_left: usize, out_freq: usize) -> Result<Tensor> {
        let (b, c, t, f) = x.dims4()?;
        if out_freq == 0 {
            candle_core::bail!("convolution with no output");
        }
        let n_blocks = out_freq.div_ceil(self.block);
        let needed = self.stride * self.block * (n_blocks - 1) + self.window;
        let pt = self.k_time / 2;
        let x = x.pad_with_zeros(2, pt, pt)?;
        let x = if pad_left + f >= needed {
            x.pad_with_zeros(3, pad_left, 0)?.narrow(3, 0, needed)?
        } else {
            x.pad_with_zeros(3, pad_left, needed - pad_left - f)?
        };
        // [b, c, t + 2·pt, n_blocks, window] as a view, then one copy into rows of the product.
        let u = x.unfold(3, self.window, self.stride * self.block)?;
        let taps = (0..self.k_time)
            .map(|dt| u.narrow(2, dt, t)?.permute((0, 2, 3, 1, 4)))
            .collect::<Result<Vec<_>>>()?;
        let cols =
            Tensor::stack(&taps, 3)?.reshape((b * t * n_blocks, self.k_time * c * self.window))?;
        let y = cols.matmul(&self.toeplitz)?;
        y.reshape((b, t, n_blocks, self.out_c, self.block))?
            .permute((0, 3, 1, 2, 4))?
            .reshape((b, self.out_c, t, n_blocks * self.block))?
            .narrow(3, 0, out_freq)?
            .broadcast_add(&self.bias)
    }
}

impl Module for BandedConv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, self.pad_left, self.out_freq)
    }
}

/// The three posteriorgrams of one batch of windows, each `[batch, frames, bins]`, values in `0..=1`.
#[derive(Debug, Clone)]
pub struct Posteriorgrams {
    /// Multipitch salience at 1/3 semitone (`n_contour_bins`).
    pub contour: Tensor,
    /// Note activity per piano key.
    pub note: Tensor,
    /// Note onset per piano key.
    pub onset: Tensor,
}

/// The whole network (`basic_pitch.models.model()`, ICASSP 2022 weights).
#[derive(Debug, Clone)]
pub struct BasicPitchModel {
    cfg: Config,
    cqt: Cqt,
    /// Folded `batch_normalization` on the log-CQT: a scalar scale and shift.
    bn_scale: Tensor,
    bn_shift: Tensor,
    stack: HarmonicStacking,
    contour_1: BandedConv2d,
    contour_2: BandedConv2d,
    note_1: BandedConv2d,
    note_2: BandedConv2d,
    onset_1: BandedConv2d,
    onset_2: BandedConv2d,
}

impl BasicPitchModel {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let h = cfg.harmonics.len();
        let (nc, nn) = (cfg.n_contour_bins, cfg.n_note_bins);
        if nc.div_ceil(3) != nn {
            candle_core::bail!("{nc} contour bins do not reduce to {nn} notes at stride 3");
        }
        let bn = vb.pp("cqt_bn");
        // Block sizes (last argument) picked by timing each layer on a 2-core x86-64 machine.
        Ok(Self {
            cqt: Cqt::new(cfg, vb.pp("cqt"))?,
            bn_scale: bn.get(1, "scale")?,
            bn_shift: bn.get(1, "shift")?,
            stack: HarmonicStacking::new(cfg),
            contour_1: BandedConv2d::same(h, 8, (3, 39), 1, nc, 16, vb.pp("contour_1"))?,
            contour_2: BandedConv2d::same(8, 1, (5, 5), 1, nc, 24, vb.pp("contour_2"))?,
            note_1: BandedConv2d::same(1, 32, (7, 7), 3, nc, 1, vb.pp("note_1"))?,
            note_2: BandedConv2d::same(32, 1, (7, 3), 1, nn, 24, vb.pp("note_2"))?,
            onset_1: BandedConv2d::same(h, 32, (5, 5), 3, nc, 4, vb.pp("onset_1"))?,
            onset_2: BandedConv2d::same(33, 1, (3, 3), 1, nn, 11, vb.pp("onset_2"))?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        self.bn_scale.device()
    }

    /// `[batch, window_samples]` audio → posteriorgrams of `[batch, window_frames, _]`. On the CPU this is
    /// [`BasicPitchModel::forward_cpu`], elsewhere [`BasicPitchModel::forward_generic`].
    pub fn forward(&self, audio: &Tensor) -> Result<Posteriorgrams> {
        if self.device().is_cpu() {
            self.forward_cpu(audio)
        } else {
            self.forward_generic(audio)
        }
    }

    /// The network as candle tensor ops, on any device.
    pub fn forward_generic(&self, audio: &Tensor) -> Result<Posteriorgrams> {
        let audio = audio.to_dtype(DType::F32)?;
        let cqt = normalized_log(&self.cqt.forward(&audio)?)?;
        let x = cqt
            .broadcast_mul(&self.bn_scale)?
            .broadcast_add(&self.bn_shift)?;
        let x = self.stack.forward(&x)?;

        let contour = self.contour_1.forward(&x)?.relu()?;
        let contour = candle_nn::ops::sigmoid(&self.contour_2.forward(&contour)?)?;

        let note = self.note_1.forward(&contour)?.relu()?;
        let note = candle_nn::ops::sigmoid(&self.note_2.forward(&note)?)?;

        let onset = self.onset_1.forward(&x)?.relu()?;
        let onset = Tensor::cat(&[&note, &onset], 1)?;
        let onset = candle_nn::ops::sigmoid(&self.onset_2.forward(&onset)?)?;

        Ok(Posteriorgrams {
            contour: contour.i((.., 0))?,
            note: note.i((.., 0))?,
            onset: onset.i((.., 0))?,
        })
    }

    /// The same network on host slices (see [`super::cpu`]): the same products in the same order, with
    /// every copy between them a single pass and activations fused into the products' output pass.
    pub fn forward_cpu(&self, audio: &Tensor) -> Result<Posteriorgrams> {
        let (batch, len) = audio.dims2()?;
        let audio = audio
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let (mut mag, frames) = self.cqt.forward_slice(&audio, batch, len)?;
        let n_bins = self.cfg.n_cqt_bins;
        let (scale, shift) = (
            self.bn_scale.to_vec1::<f32>()?[0],
            self.bn_shift.to_vec1::<f32>()?[0],
        );
        let (h, nc, nn) = (
            self.cfg.harmonics.len(),
            self.cfg.n_contour_bins,
            self.cfg.n_note_bins,
        );
        let mut x = Vec::with_capacity(batch * h * frames * nc);
        for window in mag.chunks_exact_mut(frames * n_bins) {
            normalized_log_slice(window);
            for v in window.iter_mut() {
                *v = *v * scale + shift;
            }
            self.stack.stack_slice(window, frames, n_bins, &mut x);
        }
        drop(mag);
        let conv = |layer: &BandedConv2d, x: &[f32], c: usize, f: usize, act| {
            layer.apply_slice(
                x,
                (batch, c, frames, f),
                layer.pad_left,
                layer.out_freq,
                act,
            )
        };
        let contour = conv(&self.contour_1, &x, h, nc, Activation::Relu)?;
        let contour = conv(&self.contour_2, &contour, 8, nc, Activation::Sigmoid)?;
        let note = conv(&self.note_1, &contour, 1, nc, Activation::Relu)?;
        let note = conv(&self.note_2, &note, 32, nn, Activation::Sigmoid)?;
        let onset = conv(&self.onset_1, &x, h, nc, Activation::Relu)?;
        drop(x);
        // Channel 0 is the note posteriorgram, then the 32 onset features (`concatenate` in the graph).
        let per = frames * nn;
        let mut cat = Vec::with_capacity(batch * 33 * per);
        for b in 0..batch {
            cat.extend_from_slice(&note[b * per..(b + 1) * per]);
            cat.extend_from_slice(&onset[b * 32 * per..(b + 1) * 32 * per]);
        }
        drop(onset);
        let onset = conv(&self.onset_2, &cat, 33, nn, Activation::Sigmoid)?;
        let dev = &Device::Cpu;
        Ok(Posteriorgrams {
            contour: Tensor::from_vec(contour, (batch, frames, nc), dev)?,
            note: Tensor::from_vec(note, (batch, frames, nn), dev)?,
            onset: Tensor::from_vec(onset, (batch, frames, nn), dev)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic test audio: two tones and a little pseudo-random noise.
    fn audio(batch: usize, len: usize) -> Tensor {
        let mut seed = 12345u32;
        let v: Vec<f32> = (0..batch * len)
            .map(|i| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                let t = (i % len) as f32 / 22_050.0;
                let f = 220.0 * (1 + i / len) as f32;
                0.3 * (std::f32::consts::TAU * f * t).sin()
                    + 0.2 * (std::f32::consts::TAU * 1.5 * f * t).sin()
                    + 0.01 * noise
            })
            .collect();
        Tensor::from_vec(v, (batch, len), &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// The CPU path and the tensor-op path (what CUDA runs) compute the same network.
    #[test]
    fn cpu_path_matches_tensor_ops() {
        let vb =
            VarBuilder::from_slice_safetensors(super::super::WEIGHTS, DType::F32, &Device::Cpu)
                .unwrap();
        let cfg = Config::icassp_2022();
        let model = BasicPitchModel::new(&cfg, vb).unwrap();
        let x = audio(2, cfg.window_samples);
        let fast = model.forward_cpu(&x).unwrap();
        let slow = model.forward_generic(&x).unwrap();
        for (name, a, b) in [
            ("contour", &fast.contour, &slow.contour),
            ("note", &fast.note, &slow.note),
            ("onset", &fast.onset, &slow.onset),
        ] {
            assert_eq!(a.dims(), &[2, cfg.window_frames, b.dim(2).unwrap()]);
            let d = max_diff(a, b);
            assert!(d < 1e-5, "{name}: max abs difference {d}");
        }
    }

    /// Packing pads with zeros exactly where the input ends, whatever the geometry.
    #[test]
    fn banded_conv_slice_matches_tensor_ops_on_odd_geometry() {
        let (o, c, kt, kf) = (3, 2, 3, 5);
        let w = Tensor::arange(0f32, (o * c * kt * kf) as f32, &Device::Cpu)
            .unwrap()
            .affine(0.01, -0.2)
            .unwrap()
            .reshape((o, c, kt, kf))
            .unwrap();
        let bias = Tensor::new(&[0.1f32, -0.2, 0.3], &Device::Cpu).unwrap();
        let x = audio(1, 2 * c * 7 * 23).reshape((2, c, 7, 23)).unwrap();
        for (stride, block, pad_left, out_freq) in [(1, 4, 2, 23), (3, 2, 1, 8), (2, 5, 0, 9)] {
            let conv =
                BandedConv2d::from_kernel(&w, &bias, stride, pad_left, out_freq, block).unwrap();
            let fast = conv.forward_act(&x, Activation::Relu).unwrap();
            let slow = conv.apply(&x, pad_left, out_freq).unwrap().relu().unwrap();
            let d = max_diff(&fast, &slow);
            assert!(d < 1e-6, "stride {stride} block {block}: {d}");
        }
    }
}
