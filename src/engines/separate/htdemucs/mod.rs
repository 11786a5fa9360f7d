//! HTDemucs (Demucs v4), the hybrid spectrogram/waveform U-Net joined by a cross-domain transformer.
//!
//! Paper: Simon Rouard, Francisco Massa, Alexandre Défossez, "Hybrid Transformers for Music Source
//! Separation", ICASSP 2023 (<https://arxiv.org/abs/2211.08553>). Reference code: `demucs` 4.0.1,
//! `demucs/htdemucs.py`, `hdemucs.py`, `transformer.py`, `spec.py`, `apply.py`
//! (<https://github.com/facebookresearch/demucs>). Parameter names are the PyTorch state-dict keys.
//!
//! This module owns the model and its inference: [`config`] (the checkpoint's kwargs), [`stft`],
//! [`layers`] (encoder/decoder blocks), [`transformer`], [`apply`] (segmenting a whole track,
//! `separate`), [`checkpoint`] (reading demucs `.th` files without Python, converting them to
//! safetensors + JSON, loading those) and [`install`] (an installed bag of models: its directory
//! layout, installing one from `.th` files, the official bags). Only [`checkpoint`] and [`install`]
//! touch files.

pub mod apply;
pub mod checkpoint;
pub mod config;
pub mod cpu;
pub mod install;
pub mod layers;
pub mod stft;
pub mod transformer;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::VarBuilder;

pub use apply::{
    apply_model, apply_model_with, four_stems, separate, two_stems, BagOfModels, Planar,
    SeparateOptions, Stems, FOUR_STEMS,
};
pub use config::{Config, Segment};

use layers::{Conv1d, DConvSpec, HDecLayer, HEncLayer, LayerSpec, ScaledEmbedding};
use stft::{Spectrogram, Stft};
use transformer::{CrossTransformerEncoder, LayerOptions, TransformerOptions};

/// What can go wrong loading or running HTDemucs. `Input` is the caller's to fix (bad audio);
/// `Config` and `Checkpoint` mean the model files are unusable; `Cancelled` is the caller's own
/// cancel check; the rest are bugs or I/O.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unsupported or invalid HTDemucs configuration: {0}")]
    Config(String),
    #[error("invalid demucs checkpoint: {0}")]
    Checkpoint(String),
    #[error("invalid input audio: {0}")]
    Input(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
    /// The caller's cancel check turned true between two segments.
    #[error("cancelled")]
    Cancelled,
}

impl From<Error> for crate::jobs::EngineError {
    fn from(e: Error) -> Self {
        use crate::jobs::EngineError;
        match e {
            Error::Input(m) => EngineError::InvalidInput(m),
            Error::Cancelled => EngineError::Cancelled,
            // The installed model files are unusable: the engine cannot serve until reinstalled.
            e @ (Error::Config(_) | Error::Checkpoint(_) | Error::Io(_)) => {
                EngineError::Unavailable(e.to_string())
            }
            e @ (Error::Candle(_) | Error::Internal(_)) => EngineError::Internal(e.to_string()),
        }
    }
}

/// The 1x1 projections to and from `bottom_channels` around the transformer.
#[derive(Debug, Clone)]
struct Bottom {
    up: Conv1d,
    down: Conv1d,
    up_t: Conv1d,
    down_t: Conv1d,
}

/// Named intermediate tensors of one forward call, for parity tests and debugging.
pub type Trace = Vec<(String, Tensor)>;

/// An HTDemucs model with its weights, ready to run on `device`.
#[derive(Debug, Clone)]
pub struct HTDemucs {
    cfg: Config,
    /// Frequency-branch encoder, outermost first (`encoder.i`).
    encoder: Vec<HEncLayer>,
    /// Time-branch encoder (`tencoder.i`).
    tencoder: Vec<HEncLayer>,
    /// Frequency-branch decoder, innermost first (`decoder.i`), as the reference stores it.
    decoder: Vec<HDecLayer>,
    tdecoder: Vec<HDecLayer>,
    /// Frequency embedding added after the first layer, with its weight (`freq_emb`).
    freq_emb: Option<(ScaledEmbedding, f64)>,
    bottom: Option<Bottom>,
    transformer: Option<CrossTransformerEncoder>,
    stft: Stft,
    device: Device,
}

impl HTDemucs {
    /// Build the model from its config and weights (names as in the PyTorch state dict).
    pub fn new(cfg: Config, vb: VarBuilder) -> Result<Self, Error> {
        cfg.validate()?;
        let device = vb.device().clone();
        let levels = cfg.levels();
        let freqs = cfg.level_freqs();
        let depth = cfg.depth;
        let n_src = cfg.sources.len();
        let dconv = |on: bool| {
            on.then_some(DConvSpec {
                compress: cfg.dconv_comp,
                depth: cfg.dconv_depth,
            })
        };
        let mut encoder = Vec::with_capacity(depth);
        let mut tencoder = Vec::with_capacity(depth);
        let mut decoder = Vec::with_capacity(depth);
        let mut tdecoder = Vec::with_capacity(depth);
        for (index, level) in levels.iter().enumerate() {
            let norm = level.norm.then_some(cfg.norm_groups);
            let enc = LayerSpec {
                chin: level.chin_z,
                chout: level.chout_z,
                kernel: cfg.kernel_size,
                stride: cfg.stride,
                freq: true,
                norm,
                dconv: dconv(cfg.dconv_mode & 1 != 0),
                rewrite: cfg.rewrite,
                context: cfg.context_enc,
            };
            encoder.push(HEncLayer::new(enc, vb.pp("encoder").pp(index.to_string()))?);
            let tenc = LayerSpec {
                chin: level.chin,
                chout: level.chout,
                freq: false,
                ..enc
            };
            tencoder.push(HEncLayer::new(
                tenc,
                vb.pp("tencoder").pp(index.to_string()),
            )?);
            // The decoder of level `index` is stored at position `depth - 1 - index`.
            let (dec_out, tdec_out) = if index == 0 {
                (n_src * cfg.audio_channels * 2, n_src * cfg.audio_channels)
            } else {
                (level.chin_z, level.chin)
            };
            let pos = (depth - 1 - index).to_string();
            let dec = LayerSpec {
                chin: level.chout_z,
                chout: dec_out,
                dconv: dconv(cfg.dconv_mode & 2 != 0),
                context: cfg.context,
                ..enc
            };
            decoder.push(HDecLayer::new(dec, index == 0, vb.pp("decoder").pp(&pos))?);
            let tdec = LayerSpec {
                chin: level.chout,
                chout: tdec_out,
                freq: false,
                ..dec
            };
            tdecoder.push(HDecLayer::new(
                tdec,
                index == 0,
                vb.pp("tdecoder").pp(&pos),
            )?);
        }
        decoder.reverse();
        tdecoder.reverse();

        let freq_emb = if cfg.freq_emb != 0.0 {
            let emb = ScaledEmbedding::new(
                freqs[0] / cfg.stride,
                levels[0].chout_z,
                cfg.emb_scale,
                vb.pp("freq_emb"),
            )?;
            Some((emb, cfg.freq_emb))
        } else {
            None
        };
        let tin = cfg.transformer_input_channels();
        let dim = cfg.transformer_channels();
        let bottom = if cfg.bottom_channels > 0 {
            let bc = cfg.bottom_channels;
            let conv = |cin, cout, name: &str| Conv1d::new(cin, cout, 1, 1, 0, 1, vb.pp(name));
            Some(Bottom {
                up: conv(tin, bc, "channel_upsampler")?,
                down: conv(bc, tin, "channel_downsampler")?,
                up_t: conv(tin, bc, "channel_upsampler_t")?,
                down_t: conv(bc, tin, "channel_downsampler_t")?,
            })
        } else {
            None
        };
        let transformer = if cfg.t_layers > 0 {
            let opts = TransformerOptions {
                layer: LayerOptions {
                    dim,
                    heads: cfg.t_heads,
                    hidden: (dim as f64 * cfg.t_hidden_scale) as usize,
                    norm_first: cfg.t_norm_first,
                    norm_out: cfg.t_norm_out,
                    layer_scale: cfg.t_layer_scale,
                    gelu: cfg.t_gelu,
                },
                num_layers: cfg.t_layers,
                cross_first: cfg.t_cross_first,
                norm_in: cfg.t_norm_in,
                max_period: cfg.t_max_period,
                weight_pos_embed: cfg.t_weight_pos_embed,
            };
            Some(CrossTransformerEncoder::new(
                opts,
                vb.pp("crosstransformer"),
            )?)
        } else {
            None
        };
        let stft = Stft::new(cfg.nfft)?;
        Ok(HTDemucs {
            cfg,
            encoder,
            tencoder,
            decoder,
            tdecoder,
            freq_emb,
            bottom,
            transformer,
            stft,
            device,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn sources(&self) -> &[String] {
        &self.cfg.sources
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The encoder layers (frequency, time), outermost first.
    pub fn encoders(&self) -> (&[HEncLayer], &[HEncLayer]) {
        (&self.encoder, &self.tencoder)
    }

    pub fn transformer(&self) -> Option<&CrossTransformerEncoder> {
        self.transformer.as_ref()
    }

    /// `HTDemucs.forward` in eval mode: `(B, C, L)` with `L <= training_length` (shorter input is
    /// zero-padded and the output cropped back) to `(B, S, C, L)`.
    pub fn forward(&self, mix: &Tensor) -> Result<Tensor, Error> {
        self.forward_traced(mix, None)
    }

    /// [`HTDemucs::forward`], recording intermediates under the names the parity fixtures use.
    pub fn forward_traced(
        &self,
        mix: &Tensor,
        mut trace: Option<&mut Trace>,
    ) -> Result<Tensor, Error> {
        let mut record = |name: String, t: &Tensor| {
            if let Some(tr) = trace.as_deref_mut() {
                tr.push((name, t.clone()));
            }
        };
        let (b, c, length) = mix.dims3()?;
        if c != self.cfg.audio_channels {
            return Err(Error::Input(format!(
                "model expects {} channels, got {c}",
                self.cfg.audio_channels
            )));
        }
        let training_length = self.cfg.training_length();
        if length > training_length {
            return Err(Error::Input(format!(
                "segment of {length} samples is longer than the training length {training_length}"
            )));
        }
        let mix = mix.to_dtype(DType::F32)?;
        let mix = if length < training_length {
            mix.pad_with_zeros(D::Minus1, 0, training_length - length)?
        } else {
            mix
        };

        // Frequency branch input: the complex spectrogram with (re, im) as channels.
        let samples = mix.to_device(&Device::Cpu)?.to_vec3::<f32>()?;
        let frames = self.stft.frames_for(training_length);
        let bins = self.cfg.nfft / 2;
        let mut mag = Vec::with_capacity(b * c * 2 * bins * frames);
        for batch in &samples {
            for chan in batch {
                let z = self.stft.spec(chan)?;
                mag.extend_from_slice(&z.re);
                mag.extend_from_slice(&z.im);
            }
        }
        let x = Tensor::from_vec(mag, (b, 2 * c, bins, frames), &self.device)?;
        let (x, mean, std) = normalize(&x)?;
        let mix = mix.to_device(&self.device)?;
        let (mut xt, meant, stdt) = normalize(&mix)?;
        let mut x = x;

        let mut saved = Vec::with_capacity(self.cfg.depth);
        let mut saved_t = Vec::with_capacity(self.cfg.depth);
        let mut lengths_t = Vec::with_capacity(self.cfg.depth);
        for (idx, (enc, tenc)) in self.encoder.iter().zip(&self.tencoder).enumerate() {
            lengths_t.push(xt.dim(D::Minus1)?);
            xt = tenc.forward(&xt)?;
            record(format!("tenc.{idx}"), &xt);
            saved_t.push(xt.clone());
            x = enc.forward(&x)?;
            record(format!("enc.{idx}"), &x);
            if idx == 0 {
                if let Some((emb, weight)) = &self.freq_emb {
                    let fr = x.dim(2)?;
                    // (F, C) -> (1, C, F, 1), broadcast over batch and time.
                    let e = emb.first(fr)?.t()?.unsqueeze(0)?.unsqueeze(3)?;
                    x = x.broadcast_add(&(e * *weight)?)?;
                }
            }
            saved.push(x.clone());
        }

        if let Some(transformer) = &self.transformer {
            let (bb, cc, f, t) = x.dims4()?;
            if let Some(bottom) = &self.bottom {
                let y = bottom.up.forward(&x.reshape((bb, cc, f * t))?)?;
                x = y.reshape((bb, (), f, t))?;
                xt = bottom.up_t.forward(&xt)?;
            }
            record("xf.in_x".into(), &x);
            record("xf.in_xt".into(), &xt);
            let (y, yt) = transformer.forward(&x, &xt)?;
            record("xf.out_x".into(), &y);
            record("xf.out_xt".into(), &yt);
            x = y;
            xt = yt;
            if let Some(bottom) = &self.bottom {
                let c2 = x.dim(1)?;
                let y = bottom.down.forward(&x.reshape((bb, c2, f * t))?)?;
                x = y.reshape((bb, (), f, t))?;
                xt = bottom.down_t.forward(&xt)?;
            }
        }

        for (idx, (dec, tdec)) in self.decoder.iter().zip(&self.tdecoder).enumerate() {
            let skip = saved.pop().expect("one skip per level");
            x = dec.forward(&x, &skip, 0)?;
            record(format!("dec.{idx}"), &x);
            let skip_t = saved_t.pop().expect("one skip per level");
            let length_t = lengths_t.pop().expect("one length per level");
            xt = tdec.forward(&xt, &skip_t, length_t)?;
            record(format!("tdec.{idx}"), &xt);
        }

        let n_src = self.cfg.sources.len();
        // Undo the normalisation, then read (re, im) pairs back as complex spectrograms.
        let x = x
            .reshape((b, n_src, 2 * c, bins, frames))?
            .broadcast_mul(&std.unsqueeze(1)?)?
            .broadcast_add(&mean.unsqueeze(1)?)?;
        let spec = x.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        let plane = bins * frames;
        let mut wave = Vec::with_capacity(b * n_src * c * training_length);
        for bsc in 0..b * n_src * c {
            let base = bsc * 2 * plane;
            let z = Spectrogram {
                bins,
                frames,
                re: spec[base..base + plane].to_vec(),
                im: spec[base + plane..base + 2 * plane].to_vec(),
            };
            wave.extend(self.stft.ispec(&z, training_length)?);
        }
        let x = Tensor::from_vec(wave, (b, n_src, c, training_length), &self.device)?;
        let xt = xt
            .reshape((b, n_src, c, training_length))?
            .broadcast_mul(&stdt.unsqueeze(1)?)?
            .broadcast_add(&meant.unsqueeze(1)?)?;
        let out = (xt + x)?;
        record("output".into(), &out);
        if length < training_length {
            Ok(out.narrow(D::Minus1, 0, length)?)
        } else {
            Ok(out)
        }
    }
}

/// `(x - mean) / (1e-5 + std)` over all but the batch dimension, with the unbiased std as torch
/// computes it; returns the statistics shaped to broadcast back, `(B, 1, ..)`.
fn normalize(x: &Tensor) -> Result<(Tensor, Tensor, Tensor), Error> {
    let dims = x.dims().to_vec();
    let b = dims[0];
    let n = x.elem_count() / b;
    let flat = x.reshape((b, n))?;
    let mean = flat.mean_keepdim(1)?;
    let centred = flat.broadcast_sub(&mean)?;
    let std = (centred.sqr()?.sum_keepdim(1)? / (n.saturating_sub(1).max(1)) as f64)?.sqrt()?;
    let out = centred
        .broadcast_div(&(&std + 1e-5)?)?
        .reshape(dims.as_slice())?;
    let mut shape = vec![1usize; dims.len()];
    shape[0] = b;
    Ok((
        out,
        mean.reshape(shape.as_slice())?,
        std.reshape(shape.as_slice())?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The official configuration builds the full-size model: 42.0 M parameters, as demucs 4.0.1
    /// counts for the same kwargs (`scripts/demucs/bench_reference.py`), whose checkpoint this
    /// configuration loads; so the random-weights benchmark times the model users run.
    #[test]
    fn the_official_configuration_has_the_full_size_parameter_count() {
        let vars = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
        let model = HTDemucs::new(Config::htdemucs_official(), vb).unwrap();
        assert_eq!(model.config().training_length(), 343_980);
        let params: usize = vars.all_vars().iter().map(|v| v.elem_count()).sum();
        assert!((41_950_000..42_050_000).contains(&params), "{params}");
    }

    /// Every stage of the fixture model (a reduced HTDemucs with random weights) through the CPU
    /// kernels against the tensor ops, on two different batch items at once.
    #[test]
    fn cpu_kernels_match_tensor_ops_at_every_stage() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/htdemucs");
        let th = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "th"))
            .unwrap();
        let model = HTDemucs::from_th(&th, &Device::Cpu).unwrap();
        let len = model.config().training_length();
        let mix: Vec<f32> = (0..2 * 2 * len)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * (1.0 + (i % 3) as f32))
            .collect();
        let mix = Tensor::from_vec(mix, (2, 2, len), &Device::Cpu).unwrap();
        let mut fast = Vec::new();
        model.forward_traced(&mix, Some(&mut fast)).unwrap();
        let mut ops = Vec::new();
        cpu::with_tensor_ops(|| model.forward_traced(&mix, Some(&mut ops)).unwrap());
        assert_eq!(fast.len(), ops.len());
        for ((name, a), (_, b)) in fast.iter().zip(&ops) {
            let scale = b
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let err = (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                err <= 1e-5 * scale.max(1.0),
                "{name}: {err:e} (values up to {scale})"
            );
        }
    }
}
