//! The MusicGen language model: a pre-LayerNorm transformer decoder over the sum of the codebooks'
//! embeddings, with causal self-attention (KV cache), cross-attention to the text states and one linear
//! head per codebook.
//!
//! Paper: Copet et al., "Simple and Controllable Music Generation", NeurIPS 2023 (arXiv:2306.05284).
//! Reference code: transformers `models/musicgen/modeling_musicgen.py` (`MusicgenSinusoidalPositionalEmbedding`,
//! `MusicgenAttention`, `MusicgenDecoderLayer`, `MusicgenDecoder`, `MusicgenForCausalLM`), v4.57; weights under
//! `decoder.model.decoder.*` and `decoder.lm_heads.*`.
//!
//! Tensors: codes `[batch, codebooks, time]` (u32), hidden `[batch, time, hidden]`, logits
//! `[batch, codebooks, time, vocab]`. The cache lives outside the model ([`DecoderState`]), so one loaded model
//! serves concurrent generations.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::kv_cache::KvCache;
use candle_nn::{Activation, Embedding, LayerNorm, VarBuilder};

use super::config::DecoderConfig;
use super::linear::Linear;

/// Initial KV-cache capacity in positions; it grows by this much when a window runs longer.
const KV_CACHE_CHUNK: usize = 512;

fn linear_no_bias(d_in: usize, d_out: usize, vb: VarBuilder) -> Result<Linear> {
    let w = vb.get((d_out, d_in), "weight")?;
    Ok(Linear::new(w, None))
}

/// The reference's sinusoidal table row for `pos` (cos half then sin half), computed in f32 the way torch
/// does, so positions far into a 30 s window match bit for bit rather than to 1e-4.
pub fn sinusoidal_rows(start: usize, len: usize, dim: usize, device: &Device) -> Result<Tensor> {
    let half = dim / 2;
    let scale = (10000f64.ln() / (half as f64 - 1.0)) as f32;
    let freqs: Vec<f32> = (0..half).map(|i| (i as f32 * -scale).exp()).collect();
    let mut data = Vec::with_capacity(len * dim);
    for pos in start..start + len {
        let p = pos as f32;
        data.extend(freqs.iter().map(|f| (p * f).cos()));
        data.extend(freqs.iter().map(|f| (p * f).sin()));
        if dim % 2 == 1 {
            data.push(0.0);
        }
    }
    Tensor::from_vec(data, (len, dim), device)
}

/// `MusicgenAttention`: multi-head attention without biases, queries scaled by `head_dim^-0.5`.
#[derive(Debug, Clone)]
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
    scaling: f64,
}

impl Attention {
    pub fn new(cfg: &DecoderConfig, kv_dim: usize, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let head_dim = d / cfg.num_attention_heads;
        Ok(Self {
            q_proj: linear_no_bias(d, d, vb.pp("q_proj"))?,
            k_proj: linear_no_bias(kv_dim, d, vb.pp("k_proj"))?,
            v_proj: linear_no_bias(kv_dim, d, vb.pp("v_proj"))?,
            out_proj: linear_no_bias(d, d, vb.pp("out_proj"))?,
            num_heads: cfg.num_attention_heads,
            head_dim,
            scaling: (head_dim as f64).powf(-0.5),
        })
    }

    /// `[b, t, d]` → `[b, heads, t, head_dim]`.
    fn split_heads(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        xs.reshape((b, t, self.num_heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Keys and values of the text states, computed once per generation.
    pub fn cross_kv(&self, encoder_states: &Tensor) -> Result<(Tensor, Tensor)> {
        let k = self.split_heads(&encoder_states.apply(&self.k_proj)?)?;
        let v = self.split_heads(&encoder_states.apply(&self.v_proj)?)?;
        Ok((k, v))
    }

    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, _, t, _) = q.dims4()?;
        let scores = (q.matmul(&k.t()?)? * self.scaling)?;
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        probs
            .matmul(v)?
            .transpose(1, 2)?
            .reshape((b, t, self.num_heads * self.head_dim))?
            .apply(&self.out_proj)
    }

    /// Causal self-attention over the cached past plus `xs`; `mask` is `[t, past + t]` (None when t = 1).
    pub fn self_attention(
        &self,
        xs: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let q = self.split_heads(&xs.apply(&self.q_proj)?)?;
        let k = self.split_heads(&xs.apply(&self.k_proj)?)?;
        let v = self.split_heads(&xs.apply(&self.v_proj)?)?;
        let (k, v) = cache.append(&k, &v)?;
        self.attend(&q, &k, &v, mask)
    }

    /// Cross-attention to precomputed text keys/values.
    pub fn cross_attention(&self, xs: &Tensor, kv: &(Tensor, Tensor)) -> Result<Tensor> {
        let q = self.split_heads(&xs.apply(&self.q_proj)?)?;
        self.attend(&q, &kv.0, &kv.1, None)
    }
}

/// `MusicgenDecoderLayer`: self-attention, cross-attention, GELU MLP, each pre-normed and residual.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    encoder_attn: Attention,
    encoder_attn_layer_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    final_layer_norm: LayerNorm,
    activation: Activation,
}

impl DecoderLayer {
    pub fn new(cfg: &DecoderConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let kv_dim = cfg.cross_attention_hidden_size.unwrap_or(d);
        Ok(Self {
            self_attn: Attention::new(cfg, d, vb.pp("self_attn"))?,
            self_attn_layer_norm: candle_nn::layer_norm(d, 1e-5, vb.pp("self_attn_layer_norm"))?,
            encoder_attn: Attention::new(cfg, kv_dim, vb.pp("encoder_attn"))?,
            encoder_attn_layer_norm: candle_nn::layer_norm(
                d,
                1e-5,
                vb.pp("encoder_attn_layer_norm"),
            )?,
            fc1: linear_no_bias(d, cfg.ffn_dim, vb.pp("fc1"))?,
            fc2: linear_no_bias(cfg.ffn_dim, d, vb.pp("fc2"))?,
            final_layer_norm: candle_nn::layer_norm(d, 1e-5, vb.pp("final_layer_norm"))?,
            activation: cfg.activation_function,
        })
    }

    pub fn forward(
        &self,
        xs: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
        cross_kv: &(Tensor, Tensor),
    ) -> Result<Tensor> {
        let h = xs.apply(&self.self_attn_layer_norm)?;
        let xs = (xs + self.self_attn.self_attention(&h, mask, cache)?)?;
        let h = xs.apply(&self.encoder_attn_layer_norm)?;
        let xs = (&xs + self.encoder_attn.cross_attention(&h, cross_kv)?)?;
        let h = xs
            .apply(&self.final_layer_norm)?
            .apply(&self.fc1)?
            .apply(&self.activation)?
            .apply(&self.fc2)?;
        xs + h
    }
}

/// Per-generation state: each layer's self-attention cache and cross-attention keys/values, and the
/// number of positions already consumed (the next position's index).
#[derive(Debug, Clone)]
pub struct DecoderState {
    self_kv: Vec<KvCache>,
    cross_kv: Vec<(Tensor, Tensor)>,
    /// Positions processed so far.
    pub offset: usize,
}

/// `MusicgenForCausalLM`: embeddings, sinusoidal positions, the layers, a final LayerNorm, the heads.
#[derive(Debug, Clone)]
pub struct MusicgenDecoder {
    embed_tokens: Vec<Embedding>,
    layers: Vec<DecoderLayer>,
    layer_norm: LayerNorm,
    lm_heads: Vec<Linear>,
    cfg: DecoderConfig,
    device: Device,
}

impl MusicgenDecoder {
    /// `vb` is the checkpoint's `decoder` prefix.
    pub fn new(cfg: &DecoderConfig, vb: VarBuilder) -> Result<Self> {
        let vb_d = vb.pp("model").pp("decoder");
        let embed_tokens = (0..cfg.num_codebooks)
            .map(|i| {
                candle_nn::embedding(
                    cfg.vocab_size + 1,
                    cfg.hidden_size,
                    vb_d.pp("embed_tokens").pp(i),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(cfg, vb_d.pp("layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let layer_norm = candle_nn::layer_norm(cfg.hidden_size, 1e-5, vb_d.pp("layer_norm"))?;
        let lm_heads = (0..cfg.num_codebooks)
            .map(|i| linear_no_bias(cfg.hidden_size, cfg.vocab_size, vb.pp("lm_heads").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed_tokens,
            layers,
            layer_norm,
            lm_heads,
            cfg: cfg.clone(),
            device: vb.device().clone(),
        })
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.cfg
    }

    /// A fresh state for text states `[batch, text_len, width]` (already projected to the decoder's width
    /// unless `cross_attention_hidden_size` is set).
    pub fn start(&self, encoder_states: &Tensor) -> Result<DecoderState> {
        let cross_kv = self
            .layers
            .iter()
            .map(|l| l.encoder_attn.cross_kv(encoder_states))
            .collect::<Result<Vec<_>>>()?;
        Ok(DecoderState {
            self_kv: (0..self.layers.len())
                .map(|_| KvCache::new(2, KV_CACHE_CHUNK))
                .collect(),
            cross_kv,
            offset: 0,
        })
    }

    /// Runs `codes` (`[batch, codebooks, t]`, ids ≤ vocab_size) after the positions already in `state`;
    /// returns the final hidden states `[batch, t, hidden]` (after the last LayerNorm).
    pub fn forward_hidden(&self, codes: &Tensor, state: &mut DecoderState) -> Result<Tensor> {
        let (_, ncb, t) = codes.dims3()?;
        if ncb != self.cfg.num_codebooks {
            candle_core::bail!(
                "codes have {ncb} codebooks, the decoder {}",
                self.cfg.num_codebooks
            );
        }
        // sum of the codebook embeddings, left to right as the reference's `sum([...])`
        let mut xs: Option<Tensor> = None;
        for (k, emb) in self.embed_tokens.iter().enumerate() {
            let e = emb.forward(&codes.narrow(1, k, 1)?.squeeze(1)?)?;
            xs = Some(match xs {
                None => e,
                Some(acc) => (acc + e)?,
            });
        }
        let mut xs = xs.ok_or_else(|| candle_core::Error::Msg("no codebooks".into()))?;
        if self.cfg.scale_embedding {
            xs = (xs * (self.cfg.hidden_size as f64).sqrt())?;
        }
        let pos = sinusoidal_rows(state.offset, t, self.cfg.hidden_size, &self.device)?
            .to_dtype(xs.dtype())?;
        let mut xs = xs.broadcast_add(&pos)?;
        let mask = if t > 1 {
            Some(causal_mask(t, state.offset, &self.device)?.to_dtype(xs.dtype())?)
        } else {
            None
        };
        for ((layer, cache), cross) in self
            .layers
            .iter()
            .zip(state.self_kv.iter_mut())
            .zip(state.cross_kv.iter())
        {
            xs = layer.forward(&xs, mask.as_ref(), cache, cross)?;
        }
        state.offset += t;
        xs.apply(&self.layer_norm)
    }

    /// Per-codebook logits of hidden states `[batch, t, hidden]` → `[batch, codebooks, t, vocab]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let heads = self
            .lm_heads
            .iter()
            .map(|h| hidden.apply(h))
            .collect::<Result<Vec<_>>>()?;
        Tensor::stack(&heads, 1)
    }

    /// `forward_hidden` then the heads on every position.
    pub fn forward(&self, codes: &Tensor, state: &mut DecoderState) -> Result<Tensor> {
        let h = self.forward_hidden(codes, state)?;
        self.logits(&h)
    }

    /// `forward_hidden` then the heads on the last position only: `[batch, codebooks, vocab]`, f32.
    pub fn forward_last(&self, codes: &Tensor, state: &mut DecoderState) -> Result<Tensor> {
        let h = self.forward_hidden(codes, state)?;
        let t = h.dim(1)?;
        let last = h.narrow(1, t - 1, 1)?;
        self.logits(&last)?.squeeze(2)?.to_dtype(DType::F32)
    }
}

/// Additive mask `[t, past + t]`: query i (absolute position past + i) sees keys ≤ past + i.
fn causal_mask(t: usize, past: usize, device: &Device) -> Result<Tensor> {
    let kv = past + t;
    let data: Vec<f32> = (0..t)
        .flat_map(|i| (0..kv).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(data, (t, kv), device)
}

/// The index of the largest value of the last dimension, first on ties (as `torch.argmax`).
pub fn argmax_last(xs: &Tensor) -> Result<Vec<u32>> {
    let xs = xs.to_dtype(DType::F32)?;
    let n = xs.dim(D::Minus1)?;
    let flat = xs.flatten_all()?.to_vec1::<f32>()?;
    Ok(flat
        .chunks(n.max(1))
        .map(|row| {
            let mut best = 0;
            for (i, v) in row.iter().enumerate() {
                if *v > row[best] {
                    best = i;
                }
            }
            best as u32
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    fn tiny() -> DecoderConfig {
        let mut c = super::super::config::Config::musicgen_small().decoder;
        c.vocab_size = 16;
        c.hidden_size = 8;
        c.ffn_dim = 16;
        c.num_attention_heads = 2;
        c.num_hidden_layers = 2;
        c.pad_token_id = 16;
        c.bos_token_id = 16;
        c
    }

    #[test]
    fn sinusoid_is_cos_then_sin() {
        let t = sinusoidal_rows(3, 1, 6, &Device::Cpu).unwrap();
        let row = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = 10000f64.ln() / 2.0;
        for i in 0..3 {
            let f = (-(i as f64) * scale).exp();
            assert!((row[i] as f64 - (3.0 * f).cos()).abs() < 1e-6);
            assert!((row[3 + i] as f64 - (3.0 * f).sin()).abs() < 1e-6);
        }
    }

    #[test]
    fn incremental_decoding_matches_full_sequence() {
        let cfg = tiny();
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        // random weights: VarMap initialises from the hints; overwrite every variable with noise
        let dec = MusicgenDecoder::new(&cfg, vb).unwrap();
        for (_, var) in vm.data().lock().unwrap().iter() {
            let r = Tensor::randn(0f32, 0.5, var.shape(), &Device::Cpu).unwrap();
            var.set(&r).unwrap();
        }
        let dec = {
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
            let _ = dec;
            MusicgenDecoder::new(&cfg, vb).unwrap()
        };
        let enc = Tensor::randn(0f32, 1.0, (1, 5, 8), &Device::Cpu).unwrap();
        let codes: Vec<u32> = (0..4 * 7).map(|i| (i * 7 % 17) as u32).collect();
        let codes = Tensor::from_vec(codes, (1, 4, 7), &Device::Cpu).unwrap();
        let mut full_state = dec.start(&enc).unwrap();
        let full = dec.forward(&codes, &mut full_state).unwrap();
        let mut st = dec.start(&enc).unwrap();
        let first = dec
            .forward(&codes.narrow(2, 0, 3).unwrap(), &mut st)
            .unwrap();
        let mut steps = vec![first];
        for t in 3..7 {
            steps.push(
                dec.forward(&codes.narrow(2, t, 1).unwrap(), &mut st)
                    .unwrap(),
            );
        }
        let inc = Tensor::cat(&steps, 2).unwrap();
        let diff = (full - inc)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "incremental vs full: {diff}");
        assert_eq!(st.offset, 7);
    }

    #[test]
    fn argmax_takes_first_of_ties() {
        let t = Tensor::new(&[[1f32, 3.0, 3.0], [5.0, 0.0, 5.0]], &Device::Cpu).unwrap();
        assert_eq!(argmax_last(&t).unwrap(), vec![1, 0]);
    }
}
