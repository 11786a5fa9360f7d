//! The cross-domain transformer between the two U-Nets (`demucs/transformer.py`,
//! `CrossTransformerEncoder`): sinusoidal positional embeddings (2-d for the spectrogram branch, 1-d
//! for the waveform branch), then layers alternating self-attention in each branch with
//! cross-attention between them; pre-norm (`norm_first`), LayerScale, and a GroupNorm(1) over the
//! whole sequence at the end of each layer (`norm_out`).
//!
//! Sequences are batch-first `(B, N, C)`. The frequency branch `(B, C, F, T)` is flattened with the
//! frequency index moving fastest (`b c f t -> b (t f) c`), as the reference does.

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};

use super::cpu;
use super::layers::LayerScale;

/// `create_sin_embedding(length, dim)`, computed in `f32` the way torch does: `(length, dim)`.
pub fn sin_embedding_1d(
    length: usize,
    dim: usize,
    max_period: f64,
    device: &Device,
) -> Result<Tensor> {
    let half = dim / 2;
    let denom = (half as f32 - 1.0).max(1.0);
    let periods: Vec<f32> = (0..half)
        .map(|i| (max_period as f32).powf(i as f32 / denom))
        .collect();
    let mut out = Vec::with_capacity(length * dim);
    for t in 0..length {
        let phases = periods.iter().map(|p| t as f32 / p);
        out.extend(phases.clone().map(f32::cos));
        out.extend(phases.map(f32::sin));
    }
    Tensor::from_vec(out, (length, dim), device)
}

/// `create_2d_sin_embedding(dim, height=F, width=T)` flattened to `(T * F, dim)` in `(t f)` order.
pub fn sin_embedding_2d(
    dim: usize,
    freqs: usize,
    frames: usize,
    max_period: f64,
    device: &Device,
) -> Result<Tensor> {
    let half = dim / 2;
    let factor = -((max_period.ln()) / half as f64) as f32;
    let div: Vec<f32> = (0..half)
        .step_by(2)
        .map(|i| (i as f32 * factor).exp())
        .collect();
    let mut out = vec![0f32; frames * freqs * dim];
    for t in 0..frames {
        for f in 0..freqs {
            let row = &mut out[(t * freqs + f) * dim..(t * freqs + f + 1) * dim];
            for (k, d) in div.iter().enumerate() {
                let (pw, ph) = (t as f32 * d, f as f32 * d);
                row[2 * k] = pw.sin();
                row[2 * k + 1] = pw.cos();
                row[half + 2 * k] = ph.sin();
                row[half + 2 * k + 1] = ph.cos();
            }
        }
    }
    Tensor::from_vec(out, (frames * freqs, dim), device)
}

/// `nn.MultiheadAttention` (batch-first, packed `in_proj`, bias, no mask).
#[derive(Debug, Clone)]
pub struct MultiheadAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl MultiheadAttention {
    pub fn new(dim: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        let w = vb.get((3 * dim, dim), "in_proj_weight")?;
        let b = vb.get(3 * dim, "in_proj_bias")?;
        let part = |i: usize| -> Result<Linear> {
            Ok(Linear::new(
                w.narrow(0, i * dim, dim)?,
                Some(b.narrow(0, i * dim, dim)?),
            ))
        };
        let out = candle_nn::linear(dim, dim, vb.pp("out_proj"))?;
        Ok(MultiheadAttention {
            q: part(0)?,
            k: part(1)?,
            v: part(2)?,
            out,
            heads,
        })
    }

    /// Queries `(B, Nq, C)` attend to keys/values `(B, Nk, C)`.
    pub fn forward(&self, query: &Tensor, key: &Tensor) -> Result<Tensor> {
        let (b, nq, c) = query.dims3()?;
        let nk = key.dim(1)?;
        if cpu::is_cpu_f32(query) && cpu::is_cpu_f32(key) {
            // Blocks of queries against all keys, never the whole score matrix (see cpu::attention).
            let (q, k, v) = (
                self.q.forward(query)?,
                self.k.forward(key)?,
                self.v.forward(key)?,
            );
            let y = cpu::with_values(&q, |q| {
                cpu::with_values(&k, |k| {
                    cpu::with_values(&v, |v| {
                        Ok(cpu::attention(q, k, v, (b, nq, nk), self.heads, c))
                    })
                })
            })?;
            return self.out.forward(&cpu::tensor(y, &[b, nq, c])?);
        }
        let hd = c / self.heads;
        let split = |x: Tensor, n: usize| -> Result<Tensor> {
            x.reshape((b, n, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split((self.q.forward(query)? * (1.0 / (hd as f64).sqrt()))?, nq)?;
        let k = split(self.k.forward(key)?, nk)?;
        let v = split(self.v.forward(key)?, nk)?;
        let att = q.matmul(&k.t()?)?;
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b, nq, c))?;
        self.out.forward(&y)
    }
}

/// `MyGroupNorm(1, C)` on `(B, N, C)`: statistics over the whole sequence, affine per channel.
#[derive(Debug, Clone)]
pub struct SeqGroupNorm {
    weight: Tensor,
    bias: Tensor,
}

impl SeqGroupNorm {
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(SeqGroupNorm {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
        })
    }
}

impl Module for SeqGroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let xs = x.reshape((b, n * c))?;
        let mean = xs.mean_keepdim(1)?;
        let xc = xs.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(1)?;
        let xn = xc
            .broadcast_div(&(var + 1e-5)?.sqrt()?)?
            .reshape((b, n, c))?;
        xn.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

/// Feed-forward block: `linear2(act(linear1(x)))`.
#[derive(Debug, Clone)]
struct FeedForward {
    linear1: Linear,
    linear2: Linear,
    gelu: bool,
}

impl FeedForward {
    fn new(dim: usize, hidden: usize, gelu: bool, vb: &VarBuilder) -> Result<Self> {
        Ok(FeedForward {
            linear1: candle_nn::linear(dim, hidden, vb.pp("linear1"))?,
            linear2: candle_nn::linear(hidden, dim, vb.pp("linear2"))?,
            gelu,
        })
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.linear1.forward(x)?;
        let h = if self.gelu { h.gelu_erf()? } else { h.relu()? };
        self.linear2.forward(&h)
    }
}

/// The per-layer options shared by both layer kinds.
#[derive(Debug, Clone, Copy)]
pub struct LayerOptions {
    pub dim: usize,
    pub heads: usize,
    pub hidden: usize,
    pub norm_first: bool,
    pub norm_out: bool,
    pub layer_scale: bool,
    pub gelu: bool,
}

fn layer_norm(dim: usize, vb: VarBuilder) -> Result<LayerNorm> {
    candle_nn::layer_norm(dim, 1e-5, vb)
}

fn scaled(gamma: &Option<LayerScale>, x: Tensor) -> Result<Tensor> {
    match gamma {
        Some(g) => g.forward(&x),
        None => Ok(x),
    }
}

/// `MyTransformerEncoderLayer`: self-attention + feed-forward.
#[derive(Debug, Clone)]
pub struct SelfLayer {
    attn: MultiheadAttention,
    ff: FeedForward,
    norm1: LayerNorm,
    norm2: LayerNorm,
    norm_out: Option<SeqGroupNorm>,
    gamma_1: Option<LayerScale>,
    gamma_2: Option<LayerScale>,
    norm_first: bool,
}

fn gammas(o: &LayerOptions, vb: &VarBuilder) -> Result<(Option<LayerScale>, Option<LayerScale>)> {
    if o.layer_scale {
        Ok((
            Some(LayerScale::new(o.dim, true, vb.pp("gamma_1"))?),
            Some(LayerScale::new(o.dim, true, vb.pp("gamma_2"))?),
        ))
    } else {
        Ok((None, None))
    }
}

fn norm_out(o: &LayerOptions, vb: &VarBuilder) -> Result<Option<SeqGroupNorm>> {
    if o.norm_first && o.norm_out {
        Ok(Some(SeqGroupNorm::new(o.dim, vb.pp("norm_out"))?))
    } else {
        Ok(None)
    }
}

impl SelfLayer {
    pub fn new(o: LayerOptions, vb: VarBuilder) -> Result<Self> {
        let (gamma_1, gamma_2) = gammas(&o, &vb)?;
        Ok(SelfLayer {
            attn: MultiheadAttention::new(o.dim, o.heads, vb.pp("self_attn"))?,
            ff: FeedForward::new(o.dim, o.hidden, o.gelu, &vb)?,
            norm1: layer_norm(o.dim, vb.pp("norm1"))?,
            norm2: layer_norm(o.dim, vb.pp("norm2"))?,
            norm_out: norm_out(&o, &vb)?,
            gamma_1,
            gamma_2,
            norm_first: o.norm_first,
        })
    }
}

impl Module for SelfLayer {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.norm_first {
            let h = self.norm1.forward(x)?;
            let x = (x + scaled(&self.gamma_1, self.attn.forward(&h, &h)?)?)?;
            let x = (&x + scaled(&self.gamma_2, self.ff.forward(&self.norm2.forward(&x)?)?)?)?;
            match &self.norm_out {
                Some(n) => n.forward(&x),
                None => Ok(x),
            }
        } else {
            let x = self
                .norm1
                .forward(&(x + scaled(&self.gamma_1, self.attn.forward(x, x)?)?)?)?;
            self.norm2
                .forward(&(&x + scaled(&self.gamma_2, self.ff.forward(&x)?)?)?)
        }
    }
}

/// `CrossTransformerEncoderLayer`: the queries of one branch attend to the other branch.
#[derive(Debug, Clone)]
pub struct CrossLayer {
    attn: MultiheadAttention,
    ff: FeedForward,
    norm1: LayerNorm,
    norm2: LayerNorm,
    norm3: LayerNorm,
    norm_out: Option<SeqGroupNorm>,
    gamma_1: Option<LayerScale>,
    gamma_2: Option<LayerScale>,
    norm_first: bool,
}

impl CrossLayer {
    pub fn new(o: LayerOptions, vb: VarBuilder) -> Result<Self> {
        let (gamma_1, gamma_2) = gammas(&o, &vb)?;
        Ok(CrossLayer {
            attn: MultiheadAttention::new(o.dim, o.heads, vb.pp("cross_attn"))?,
            ff: FeedForward::new(o.dim, o.hidden, o.gelu, &vb)?,
            norm1: layer_norm(o.dim, vb.pp("norm1"))?,
            norm2: layer_norm(o.dim, vb.pp("norm2"))?,
            norm3: layer_norm(o.dim, vb.pp("norm3"))?,
            norm_out: norm_out(&o, &vb)?,
            gamma_1,
            gamma_2,
            norm_first: o.norm_first,
        })
    }

    pub fn forward(&self, q: &Tensor, k: &Tensor) -> Result<Tensor> {
        if self.norm_first {
            let a = self
                .attn
                .forward(&self.norm1.forward(q)?, &self.norm2.forward(k)?)?;
            let x = (q + scaled(&self.gamma_1, a)?)?;
            let x = (&x + scaled(&self.gamma_2, self.ff.forward(&self.norm3.forward(&x)?)?)?)?;
            match &self.norm_out {
                Some(n) => n.forward(&x),
                None => Ok(x),
            }
        } else {
            let x = self
                .norm1
                .forward(&(q + scaled(&self.gamma_1, self.attn.forward(q, k)?)?)?)?;
            self.norm2
                .forward(&(&x + scaled(&self.gamma_2, self.ff.forward(&x)?)?)?)
        }
    }
}

#[derive(Debug, Clone)]
enum Layer {
    SelfAttn(SelfLayer),
    Cross(CrossLayer),
}

/// `CrossTransformerEncoder` with the "sin" embedding (the only one the official models use).
#[derive(Debug, Clone)]
pub struct CrossTransformerEncoder {
    norm_in: Option<(LayerNorm, LayerNorm)>,
    /// Spectrogram-branch layers (`layers.i`) and waveform-branch layers (`layers_t.i`).
    layers: Vec<(Layer, Layer)>,
    max_period: f64,
    weight_pos_embed: f64,
}

/// What `CrossTransformerEncoder.__init__` takes.
#[derive(Debug, Clone, Copy)]
pub struct TransformerOptions {
    pub layer: LayerOptions,
    pub num_layers: usize,
    pub cross_first: bool,
    pub norm_in: bool,
    pub max_period: f64,
    pub weight_pos_embed: f64,
}

impl CrossTransformerEncoder {
    pub fn new(o: TransformerOptions, vb: VarBuilder) -> Result<Self> {
        let norm_in = if o.norm_in {
            Some((
                layer_norm(o.layer.dim, vb.pp("norm_in"))?,
                layer_norm(o.layer.dim, vb.pp("norm_in_t"))?,
            ))
        } else {
            None
        };
        let classic_parity = usize::from(o.cross_first);
        let mut layers = Vec::with_capacity(o.num_layers);
        for idx in 0..o.num_layers {
            let (vs, vt) = (
                vb.pp("layers").pp(idx.to_string()),
                vb.pp("layers_t").pp(idx.to_string()),
            );
            layers.push(if idx % 2 == classic_parity {
                (
                    Layer::SelfAttn(SelfLayer::new(o.layer, vs)?),
                    Layer::SelfAttn(SelfLayer::new(o.layer, vt)?),
                )
            } else {
                (
                    Layer::Cross(CrossLayer::new(o.layer, vs)?),
                    Layer::Cross(CrossLayer::new(o.layer, vt)?),
                )
            });
        }
        Ok(CrossTransformerEncoder {
            norm_in,
            layers,
            max_period: o.max_period,
            weight_pos_embed: o.weight_pos_embed,
        })
    }

    /// `x`: `(B, C, F, T1)` spectrogram branch, `xt`: `(B, C, T2)` waveform branch.
    pub fn forward(&self, x: &Tensor, xt: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, c, fr, t1) = x.dims4()?;
        let dev = x.device();
        let pos2 = sin_embedding_2d(c, fr, t1, self.max_period, dev)?;
        let mut x = x
            .permute((0, 3, 2, 1))?
            .contiguous()?
            .reshape((b, t1 * fr, c))?;
        let (_, _, t2) = xt.dims3()?;
        let pos1 = sin_embedding_1d(t2, c, self.max_period, dev)?;
        let mut xt = xt.transpose(1, 2)?.contiguous()?;
        if let Some((n, nt)) = &self.norm_in {
            x = n.forward(&x)?;
            xt = nt.forward(&xt)?;
        }
        x = x.broadcast_add(&(pos2 * self.weight_pos_embed)?.to_dtype(x.dtype())?)?;
        xt = xt.broadcast_add(&(pos1 * self.weight_pos_embed)?.to_dtype(xt.dtype())?)?;
        for (l, lt) in &self.layers {
            match (l, lt) {
                (Layer::SelfAttn(l), Layer::SelfAttn(lt)) => {
                    x = l.forward(&x)?;
                    xt = lt.forward(&xt)?;
                }
                (Layer::Cross(l), Layer::Cross(lt)) => {
                    let old_x = x;
                    x = l.forward(&old_x, &xt)?;
                    xt = lt.forward(&xt, &old_x)?;
                }
                _ => unreachable!("both branches alternate the same way"),
            }
        }
        let x = x
            .reshape((b, t1, fr, c))?
            .permute((0, 3, 2, 1))?
            .contiguous()?;
        let xt = xt.transpose(1, 2)?.contiguous()?;
        Ok((x, xt))
    }
}
