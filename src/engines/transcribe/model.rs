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
        Ok(Self {
            kernels: Tensor::cat(&[real, imag], 0)?,
            decimate: BandedConv2d::from_kernel(
                &vb.get((1, 1, k), "lowpass")?.unsqueeze(0)?,
                &Tensor::zeros(1, DType::F32, vb.device())?,
                2,
                (k - 1) / 2,
                1,
                64,
            )?,
            sqrt_lengths: vb
                .get(cfg.n_cqt_bins, "sqrt_lengths")?
                .reshape((cfg.n_cqt_bins, 1))?,
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
    /// `[1, out, 1, 1]`.
    bias: Tensor,
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
            toeplitz: Tensor::from_vec(t, (rows, cols), weight.device())?,
            bias: bias.reshape((1, out_c, 1, 1))?,
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
    /// The convolution with another frequency geometry than the one built with (same kernel).
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

    /// `[batch, window_samples]` audio → posteriorgrams of `[batch, window_frames, _]`.
    pub fn forward(&self, audio: &Tensor) -> Result<Posteriorgrams> {
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
}
