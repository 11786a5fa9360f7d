//! EnCodec's decoder half: residual-VQ codes → latent → SEANet decoder → waveform.
//!
//! Paper: Défossez, Copet, Synnaeve, Adi, "High Fidelity Neural Audio Compression" (arXiv:2210.13438).
//! Reference code: transformers `models/encodec/modeling_encodec.py` v4.57 (`EncodecConv1d`,
//! `EncodecConvTranspose1d`, `EncodecLSTM`, `EncodecResnetBlock`, `EncodecDecoder`,
//! `EncodecResidualVectorQuantizer.decode`, `EncodecModel._decode_frame`); weights under `audio_encoder.*`.
//!
//! Why not candle-transformers' `encodec.rs`: it cannot parse the checkpoints' `config.json` (norm/pad names),
//! has no reflect padding (the 32 kHz model's), never trims the transposed convolutions' padding (wrong output
//! length), and derives the number of quantizers with a formula that is only right for 1024-code books.
//! This file re-implements the decoder with those fixed, on candle-nn's convolutions and LSTM.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::rnn::{LSTMConfig, RNN};
use candle_nn::{Conv1d, Conv1dConfig, ConvTranspose1d, ConvTranspose1dConfig, VarBuilder, LSTM};

use super::config::EncodecConfig;

/// How a convolution pads its input (`pad_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    Reflect,
    Constant,
    Replicate,
}

impl PadMode {
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s {
            "reflect" => Ok(Self::Reflect),
            "constant" | "zero" => Ok(Self::Constant),
            "replicate" => Ok(Self::Replicate),
            other => Err(format!("audio_encoder.pad_mode {other:?} unsupported")),
        }
    }
}

/// Weight-normed weight `g · v / ‖v‖`, the norm taken per slice of dim 0 (torch's `weight_norm(dim=0)`).
/// Reads the published names (`weight_g`, `weight_v`) or the parametrization names newer transformers write.
fn weight_norm(vb: &VarBuilder, shape: (usize, usize, usize)) -> Result<Tensor> {
    let (g, v) = if vb.contains_tensor("weight_g") {
        (
            vb.get((shape.0, 1, 1), "weight_g")?,
            vb.get(shape, "weight_v")?,
        )
    } else {
        let p = vb.pp("parametrizations").pp("weight");
        (
            p.get((shape.0, 1, 1), "original0")?,
            p.get(shape, "original1")?,
        )
    };
    let norm = v.sqr()?.sum_keepdim((1, 2))?.sqrt()?;
    v.broadcast_mul(&(g / norm)?)
}

/// Pads the last dimension; `Reflect` on inputs shorter than the pad first zero-extends them on the right,
/// as the reference's `_pad1d` does.
pub fn pad1d(xs: &Tensor, left: usize, right: usize, mode: PadMode) -> Result<Tensor> {
    match mode {
        PadMode::Constant => xs.pad_with_zeros(D::Minus1, left, right),
        PadMode::Replicate => xs.pad_with_same(D::Minus1, left, right),
        PadMode::Reflect => {
            let len = xs.dim(D::Minus1)?;
            let max_pad = left.max(right);
            let (xs, extra) = if len <= max_pad {
                let extra = max_pad - len + 1;
                (xs.pad_with_zeros(D::Minus1, 0, extra)?, extra)
            } else {
                (xs.clone(), 0)
            };
            let n = len + extra;
            let idx: Vec<u32> = (0..left)
                .map(|i| (left - i) as u32)
                .chain((0..n).map(|i| i as u32))
                .chain((0..right).map(|i| (n - 2 - i) as u32))
                .collect();
            let idx = Tensor::from_vec(idx, left + n + right, xs.device())?;
            let padded = xs.index_select(&idx, xs.rank() - 1)?;
            let total = padded.dim(D::Minus1)?;
            padded.narrow(D::Minus1, 0, total - extra)
        }
    }
}

/// `EncodecConv1d`: padding ("same" length, asymmetric for even kernels, or causal), then the convolution.
#[derive(Debug, Clone)]
pub struct EncodecConv1d {
    conv: Conv1d,
    causal: bool,
    pad_mode: PadMode,
    kernel: usize,
    stride: usize,
}

impl EncodecConv1d {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &EncodecConfig,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        dilation: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let vb = vb.pp("conv");
        let weight = match cfg.norm_type.as_str() {
            "weight_norm" => weight_norm(&vb, (c_out, c_in, kernel))?,
            other => candle_core::bail!("audio_encoder.norm_type {other:?} unsupported"),
        };
        let bias = vb.get(c_out, "bias")?;
        let conv_cfg = Conv1dConfig {
            stride,
            dilation,
            ..Default::default()
        };
        Ok(Self {
            conv: Conv1d::new(weight, Some(bias), conv_cfg),
            causal: cfg.use_causal_conv,
            pad_mode: PadMode::parse(&cfg.pad_mode).map_err(candle_core::Error::Msg)?,
            kernel: (kernel - 1) * dilation + 1,
            stride,
        })
    }
}

impl Module for EncodecConv1d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let len = xs.dim(D::Minus1)?;
        let padding_total = self.kernel - self.stride;
        // `_get_extra_padding_for_conv1d`: pad so the last window is complete
        let n_frames =
            (len as f64 - self.kernel as f64 + padding_total as f64) / self.stride as f64 + 1.0;
        let ideal = (n_frames.ceil() as i64 - 1) * self.stride as i64 + self.kernel as i64
            - padding_total as i64;
        let extra = (ideal - len as i64).max(0) as usize;
        let xs = if self.causal {
            pad1d(xs, padding_total, extra, self.pad_mode)?
        } else {
            let right = padding_total / 2;
            let left = padding_total - right;
            pad1d(xs, left, right + extra, self.pad_mode)?
        };
        xs.apply(&self.conv)
    }
}

/// `EncodecConvTranspose1d`: the transposed convolution, then trimming its `kernel − stride` padding.
#[derive(Debug, Clone)]
pub struct EncodecConvTranspose1d {
    conv: ConvTranspose1d,
    trim_left: usize,
    trim_right: usize,
}

impl EncodecConvTranspose1d {
    pub fn new(
        cfg: &EncodecConfig,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let vb = vb.pp("conv");
        let weight = weight_norm(&vb, (c_in, c_out, kernel))?;
        let bias = vb.get(c_out, "bias")?;
        let conv_cfg = ConvTranspose1dConfig {
            stride,
            ..Default::default()
        };
        let total = kernel.saturating_sub(stride);
        let trim_right = if cfg.use_causal_conv {
            (total as f64 * cfg.trim_right_ratio).ceil() as usize
        } else {
            total / 2
        };
        Ok(Self {
            conv: ConvTranspose1d::new(weight, Some(bias), conv_cfg),
            trim_left: total - trim_right.min(total),
            trim_right,
        })
    }
}

impl Module for EncodecConvTranspose1d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let ys = xs.apply(&self.conv)?;
        let len = ys.dim(D::Minus1)?;
        ys.narrow(
            D::Minus1,
            self.trim_left,
            len - self.trim_left - self.trim_right,
        )
    }
}

/// `EncodecLSTM`: a stacked LSTM over time with a residual connection, on `[batch, channels, time]`.
#[derive(Debug, Clone)]
pub struct EncodecLstm {
    layers: Vec<LSTM>,
}

impl EncodecLstm {
    pub fn new(cfg: &EncodecConfig, dim: usize, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("lstm");
        let layers = (0..cfg.num_lstm_layers)
            .map(|layer_idx| {
                let c = LSTMConfig {
                    layer_idx,
                    ..Default::default()
                };
                candle_nn::lstm(dim, dim, c, vb.clone())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }
}

impl Module for EncodecLstm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // candle's LSTM is batch-first: [batch, time, channels]
        let input = xs.transpose(1, 2)?.contiguous()?;
        let mut h = input.clone();
        for layer in &self.layers {
            let states = layer.seq(&h)?;
            h = layer.states_to_tensor(&states)?;
        }
        (h + input)?.transpose(1, 2)?.contiguous()
    }
}

/// `EncodecResnetBlock`: ELU → conv(k, dilation) → ELU → conv(1), plus the (identity or 1×1) shortcut.
#[derive(Debug, Clone)]
pub struct EncodecResnetBlock {
    conv1: EncodecConv1d,
    conv2: EncodecConv1d,
    shortcut: Option<EncodecConv1d>,
}

impl EncodecResnetBlock {
    pub fn new(cfg: &EncodecConfig, dim: usize, dilation: usize, vb: VarBuilder) -> Result<Self> {
        let hidden = dim / cfg.compress.max(1);
        // block.0 / block.2 are the ELUs
        let conv1 = EncodecConv1d::new(
            cfg,
            dim,
            hidden,
            cfg.residual_kernel_size,
            1,
            dilation,
            vb.pp("block").pp(1),
        )?;
        let conv2 = EncodecConv1d::new(cfg, hidden, dim, 1, 1, 1, vb.pp("block").pp(3))?;
        let shortcut = if cfg.use_conv_shortcut {
            Some(EncodecConv1d::new(
                cfg,
                dim,
                dim,
                1,
                1,
                1,
                vb.pp("shortcut"),
            )?)
        } else {
            None
        };
        Ok(Self {
            conv1,
            conv2,
            shortcut,
        })
    }
}

impl Module for EncodecResnetBlock {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let h = xs
            .elu(1.0)?
            .apply(&self.conv1)?
            .elu(1.0)?
            .apply(&self.conv2)?;
        match &self.shortcut {
            Some(s) => xs.apply(s)? + h,
            None => xs + h,
        }
    }
}

/// One upsampling stage of the SEANet decoder.
#[derive(Debug, Clone)]
struct UpStage {
    up: EncodecConvTranspose1d,
    resnets: Vec<EncodecResnetBlock>,
}

/// `EncodecDecoder` (SEANet): conv → LSTM → [ELU → transposed conv → resnets] per ratio → ELU → conv.
#[derive(Debug, Clone)]
pub struct SeanetDecoder {
    init_conv: EncodecConv1d,
    lstm: EncodecLstm,
    stages: Vec<UpStage>,
    final_conv: EncodecConv1d,
}

impl SeanetDecoder {
    /// `vb` is the `decoder` prefix; layer indices follow the reference's flat `nn.ModuleList`.
    pub fn new(cfg: &EncodecConfig, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("layers");
        let mut idx = 0;
        let mut scaling = 1usize << cfg.upsampling_ratios.len();
        let init_conv = EncodecConv1d::new(
            cfg,
            cfg.hidden_size,
            scaling * cfg.num_filters,
            cfg.kernel_size,
            1,
            1,
            vb.pp(idx),
        )?;
        idx += 1;
        let lstm = EncodecLstm::new(cfg, scaling * cfg.num_filters, vb.pp(idx))?;
        idx += 1;
        let mut stages = Vec::with_capacity(cfg.upsampling_ratios.len());
        for &ratio in &cfg.upsampling_ratios {
            let scale = scaling * cfg.num_filters;
            idx += 1; // ELU
            let up =
                EncodecConvTranspose1d::new(cfg, scale, scale / 2, ratio * 2, ratio, vb.pp(idx))?;
            idx += 1;
            let mut resnets = Vec::with_capacity(cfg.num_residual_layers);
            for j in 0..cfg.num_residual_layers {
                let dilation = cfg.dilation_growth_rate.pow(j as u32);
                resnets.push(EncodecResnetBlock::new(
                    cfg,
                    scale / 2,
                    dilation,
                    vb.pp(idx),
                )?);
                idx += 1;
            }
            stages.push(UpStage { up, resnets });
            scaling /= 2;
        }
        idx += 1; // ELU
        let final_conv = EncodecConv1d::new(
            cfg,
            cfg.num_filters,
            cfg.audio_channels,
            cfg.last_kernel_size,
            1,
            1,
            vb.pp(idx),
        )?;
        Ok(Self {
            init_conv,
            lstm,
            stages,
            final_conv,
        })
    }
}

impl Module for SeanetDecoder {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = xs.apply(&self.init_conv)?.apply(&self.lstm)?;
        for stage in &self.stages {
            xs = xs.elu(1.0)?.apply(&stage.up)?;
            for r in &stage.resnets {
                xs = xs.apply(r)?;
            }
        }
        xs.elu(1.0)?.apply(&self.final_conv)
    }
}

/// The codes-to-waveform half of `EncodecModel`.
#[derive(Debug, Clone)]
pub struct EncodecDecoder {
    /// One `[codebook_size, codebook_dim]` table per quantizer (`quantizer.layers.{i}.codebook.embed`).
    codebooks: Vec<Tensor>,
    decoder: SeanetDecoder,
    cfg: EncodecConfig,
}

impl EncodecDecoder {
    /// `vb` is the checkpoint's `audio_encoder` prefix.
    pub fn new(cfg: &EncodecConfig, vb: VarBuilder) -> Result<Self> {
        let q = vb.pp("quantizer").pp("layers");
        let codebooks = (0..cfg.num_quantizers())
            .map(|i| {
                q.pp(i)
                    .pp("codebook")
                    .get((cfg.codebook_size, cfg.codebook_dim()), "embed")
            })
            .collect::<Result<Vec<_>>>()?;
        let decoder = SeanetDecoder::new(cfg, vb.pp("decoder"))?;
        Ok(Self {
            codebooks,
            decoder,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &EncodecConfig {
        &self.cfg
    }

    /// Sum of the quantizers' code vectors: codes `[batch, n_q, frames]` → latent `[batch, dim, frames]`.
    pub fn dequantize(&self, codes: &Tensor) -> Result<Tensor> {
        let (b, n_q, t) = codes.dims3()?;
        if n_q > self.codebooks.len() {
            candle_core::bail!(
                "{n_q} codebooks given, the codec has {}",
                self.codebooks.len()
            );
        }
        let mut out: Option<Tensor> = None;
        for (i, table) in self.codebooks.iter().take(n_q).enumerate() {
            let ids = codes.narrow(1, i, 1)?.flatten_all()?;
            let q = table
                .index_select(&ids, 0)?
                .reshape((b, t, ()))?
                .transpose(1, 2)?;
            out = Some(match out {
                None => q,
                Some(acc) => (acc + q)?,
            });
        }
        out.ok_or_else(|| candle_core::Error::Msg("no codebooks given".into()))
    }

    /// Codes `[batch, n_q, frames]` (u32, each `< codebook_size`) → audio `[batch, channels, frames·hop]`.
    pub fn decode(&self, codes: &Tensor) -> Result<Tensor> {
        let latent = self.dequantize(codes)?;
        self.decoder.forward(&latent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn reflect_pad_matches_torch() {
        let x = Tensor::new(&[[[1f32, 2.0, 3.0, 4.0]]], &Device::Cpu).unwrap();
        let y = pad1d(&x, 2, 3, PadMode::Reflect).unwrap();
        // torch.nn.functional.pad(x, (2, 3), "reflect") = [3, 2, 1, 2, 3, 4, 3, 2, 1]
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 2.0, 1.0]
        );
        // input no longer than the pad: zero-extended first (EnCodec's `_pad1d`)
        let x = Tensor::new(&[[[1f32, 2.0]]], &Device::Cpu).unwrap();
        let y = pad1d(&x, 3, 3, PadMode::Reflect).unwrap();
        // pad [1,2,0,0] by (3,3) reflect → [0,0,2 | 1,2,0,0 | 0,2,1], then drop the 2 extra at the end
        // (the values torch gives for `EncodecConv1d._pad1d`)
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![0.0, 0.0, 2.0, 1.0, 2.0, 0.0, 0.0, 0.0]
        );
    }
}
