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
    /// Anti-alias FIR `[1, 1, 256]` used before each decimation.
    lowpass: Tensor,
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
            lowpass: vb.get((1, 1, k), "lowpass")?,
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
            x = x.conv1d(&self.lowpass, (self.kernel_len - 1) / 2, 2, 1, 1)?;
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

/// A Keras `Conv2D(padding="same")` over `[batch, ch, time, freq]` with stride 1 in time and `stride` in
/// frequency. candle's conv2d takes one stride for both axes, so a frequency stride `s > 1` is computed as a
/// stride-1 convolution over the `s` polyphase components of the input (kernel re-arranged once at load);
/// the arithmetic is the same, only the summation order differs.
#[derive(Debug, Clone)]
pub struct SameConv2d {
    /// `[out, in·stride, k_time, ⌈k_freq/stride⌉]` (polyphase layout when `stride > 1`).
    weight: Tensor,
    /// `[1, out, 1, 1]`.
    bias: Tensor,
    stride: usize,
    pad_time: usize,
    /// TF "same" padding in frequency: (left, right).
    pad_freq: (usize, usize),
    /// Output frequency bins: `⌈n_freq_in / stride⌉`.
    out_freq: usize,
    /// Polyphase component length each input frequency axis is padded to.
    phase_len: usize,
}

impl SameConv2d {
    /// `n_freq_in`: the input's frequency size, needed for TF's stride-dependent "same" padding.
    pub fn new(
        in_c: usize,
        out_c: usize,
        kernel: (usize, usize),
        stride: usize,
        n_freq_in: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let (k_t, k_f) = kernel;
        if k_t % 2 == 0 || stride == 0 {
            candle_core::bail!("unsupported conv: kernel {kernel:?}, stride {stride}");
        }
        let w = vb.get((out_c, in_c, k_t, k_f), "weight")?;
        let bias = vb.get(out_c, "bias")?.reshape((1, out_c, 1, 1))?;
        let out_freq = n_freq_in.div_ceil(stride);
        let total = ((out_freq - 1) * stride + k_f).saturating_sub(n_freq_in);
        let pad_freq = (total / 2, total - total / 2);
        let taps = k_f.div_ceil(stride);
        let weight = if stride == 1 {
            w
        } else {
            // w'[o, c·s + r, t, a] = w[o, c, t, s·a + r] (zero beyond k_f).
            w.pad_with_zeros(3, 0, taps * stride - k_f)?
                .reshape((out_c, in_c, k_t, taps, stride))?
                .permute((0, 1, 4, 2, 3))?
                .reshape((out_c, in_c * stride, k_t, taps))?
                .contiguous()?
        };
        Ok(Self {
            weight,
            bias,
            stride,
            pad_time: k_t / 2,
            pad_freq,
            out_freq,
            phase_len: out_freq + taps - 1,
        })
    }
}

impl Module for SameConv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, t, _) = x.dims4()?;
        let s = self.stride;
        let x = x
            .pad_with_zeros(2, self.pad_time, self.pad_time)?
            .pad_with_zeros(3, self.pad_freq.0, self.pad_freq.1)?;
        let x = if s == 1 {
            x
        } else {
            let want = self.phase_len * s;
            let have = x.dim(3)?;
            let x = if have < want {
                x.pad_with_zeros(3, 0, want - have)?
            } else {
                x.narrow(3, 0, want)?
            };
            x.reshape((b, c, t + 2 * self.pad_time, self.phase_len, s))?
                .permute((0, 1, 4, 2, 3))?
                .reshape((b, c * s, t + 2 * self.pad_time, self.phase_len))?
        };
        let y = x.contiguous()?.conv2d(&self.weight, 0, 1, 1, 1)?;
        let y = if s == 1 {
            y
        } else {
            y.narrow(3, 0, self.out_freq)?
        };
        y.broadcast_add(&self.bias)
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
    contour_1: SameConv2d,
    contour_2: SameConv2d,
    note_1: SameConv2d,
    note_2: SameConv2d,
    onset_1: SameConv2d,
    onset_2: SameConv2d,
}

impl BasicPitchModel {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let h = cfg.harmonics.len();
        let (nc, nn) = (cfg.n_contour_bins, cfg.n_note_bins);
        if nc.div_ceil(3) != nn {
            candle_core::bail!("{nc} contour bins do not reduce to {nn} notes at stride 3");
        }
        let bn = vb.pp("cqt_bn");
        Ok(Self {
            cqt: Cqt::new(cfg, vb.pp("cqt"))?,
            bn_scale: bn.get(1, "scale")?,
            bn_shift: bn.get(1, "shift")?,
            stack: HarmonicStacking::new(cfg),
            contour_1: SameConv2d::new(h, 8, (3, 39), 1, nc, vb.pp("contour_1"))?,
            contour_2: SameConv2d::new(8, 1, (5, 5), 1, nc, vb.pp("contour_2"))?,
            note_1: SameConv2d::new(1, 32, (7, 7), 3, nc, vb.pp("note_1"))?,
            note_2: SameConv2d::new(32, 1, (7, 3), 1, nn, vb.pp("note_2"))?,
            onset_1: SameConv2d::new(h, 32, (5, 5), 3, nc, vb.pp("onset_1"))?,
            onset_2: SameConv2d::new(33, 1, (3, 3), 1, nn, vb.pp("onset_2"))?,
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
