//! The convolutional building blocks of HTDemucs (`demucs/hdemucs.py`, `demucs/demucs.py`):
//! `HEncLayer` / `HDecLayer` for both branches, the `DConv` residual branch with `LayerScale`, the
//! frequency `ScaledEmbedding`, and the small ops they share (GroupNorm, GLU, exact GELU).
//!
//! Frequency-branch tensors are `(B, C, F, T)`; PyTorch runs their `[K, 1]` convolutions as Conv2d,
//! here they run as Conv1d over the frequency axis with time folded into the batch.
//!
//! On the CPU, `HEncLayer`, `HDecLayer` and `DConv` run fused kernels from [`super::cpu`] instead of
//! these tensor ops (same functions; the ops stay as the reference and for other devices).

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Module, Result, Shape, Tensor, D};
use candle_nn::VarBuilder;

use super::cpu;

/// `nn.GroupNorm(groups, channels)` (eps 1e-5) over `(B, C, *)`.
///
/// On the CPU this is one fused kernel (statistics in f64, then normalise and scale in one pass,
/// split over the available cores); elsewhere it is composed from tensor ops.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn new(groups: usize, channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(GroupNorm {
            weight: vb.get(channels, "weight")?,
            bias: vb.get(channels, "bias")?,
            groups,
            eps: 1e-5,
        })
    }

    fn forward_composed(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (b, c) = (dims[0], dims[1]);
        let xs = x.reshape((b, self.groups, ()))?;
        let mean = xs.mean_keepdim(2)?;
        let xc = xs.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(2)?;
        let xn = xc
            .broadcast_div(&(var + self.eps)?.sqrt()?)?
            .reshape(dims.as_slice())?;
        let mut shape = vec![1usize; dims.len()];
        shape[1] = c;
        xn.broadcast_mul(&self.weight.reshape(shape.as_slice())?)?
            .broadcast_add(&self.bias.reshape(shape.as_slice())?)
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            let op = GroupNormOp {
                groups: self.groups,
                eps: self.eps,
            };
            x.contiguous()?.apply_op3_no_bwd(
                &self.weight.contiguous()?,
                &self.bias.contiguous()?,
                &op,
            )
        } else {
            self.forward_composed(x)
        }
    }
}

/// The fused CPU kernel behind [`GroupNorm`].
struct GroupNormOp {
    groups: usize,
    eps: f64,
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "htdemucs-group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let slice = |s: &'_ CpuStorage, l: &Layout| -> Result<Vec<f32>> {
            match (s, l.contiguous_offsets()) {
                (CpuStorage::F32(v), Some((a, b))) => Ok(v[a..b].to_vec()),
                _ => candle_core::bail!("group norm: contiguous f32 tensors only"),
            }
        };
        let (x, w, bias) = (
            match (s1, l1.contiguous_offsets()) {
                (CpuStorage::F32(v), Some((a, b))) => &v[a..b],
                _ => candle_core::bail!("group norm: contiguous f32 input only"),
            },
            slice(s2, l2)?,
            slice(s3, l3)?,
        );
        let dims = l1.dims();
        let (b, c) = (dims[0], dims[1]);
        let rest: usize = dims[2..].iter().product();
        let g = self.groups;
        if c % g != 0 || w.len() != c || bias.len() != c {
            candle_core::bail!("group norm: {c} channels, {g} groups, {} weights", w.len());
        }
        let group_len = c / g * rest;
        let mut out = vec![0f32; x.len()];
        let units = b * g;
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(units)
            .max(1);
        let per = units.div_ceil(threads);
        let eps = self.eps;
        let (w, bias) = (&w, &bias);
        std::thread::scope(|scope| {
            for (t, out_chunk) in out.chunks_mut(per * group_len).enumerate() {
                let x_chunk = &x[t * per * group_len..][..out_chunk.len()];
                scope.spawn(move || {
                    for (u, (xs, ys)) in x_chunk
                        .chunks(group_len)
                        .zip(out_chunk.chunks_mut(group_len))
                        .enumerate()
                    {
                        let group = (t * per + u) % g;
                        let n = xs.len() as f64;
                        let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / n;
                        let var = xs.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
                        let inv = 1.0 / (var + eps).sqrt();
                        let first_channel = group * (c / g);
                        for (k, (xc, yc)) in xs.chunks(rest).zip(ys.chunks_mut(rest)).enumerate() {
                            let ch = first_channel + k;
                            let scale = (inv * w[ch] as f64) as f32;
                            let shift = (bias[ch] as f64 - mean * inv * w[ch] as f64) as f32;
                            for (xv, yv) in xc.iter().zip(yc.iter_mut()) {
                                *yv = xv * scale + shift;
                            }
                        }
                    }
                });
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `F.glu(x, dim)`: first half times the sigmoid of the second half.
pub fn glu(x: &Tensor, dim: usize) -> Result<Tensor> {
    let n = x.dim(dim)? / 2;
    let a = x.narrow(dim, 0, n)?;
    let b = x.narrow(dim, n, n)?;
    a * candle_nn::ops::sigmoid(&b)?
}

/// A 1-d convolution with PyTorch's `Conv1d` parameters.
#[derive(Debug, Clone)]
pub struct Conv1d {
    weight: Tensor,
    bias: Tensor,
    padding: usize,
    stride: usize,
    dilation: usize,
}

impl Conv1d {
    pub fn new(
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        dilation: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Conv1d {
            weight: vb.get((cout, cin, kernel), "weight")?,
            bias: vb.get(cout, "bias")?,
            padding,
            stride,
            dilation,
        })
    }

    /// A `Conv2d` with kernel `[k, 1]`, stride `[s, 1]`, padding `[p, 0]`, applied along the
    /// frequency axis (dimension 2) of `(B, C, F, T)` inputs.
    pub fn new_freq(
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = vb.get((cout, cin, kernel, 1), "weight")?.squeeze(3)?;
        Ok(Conv1d {
            weight,
            bias: vb.get(cout, "bias")?,
            padding,
            stride,
            dilation: 1,
        })
    }

    /// Convolve the frequency axis of `(B, C, F, T)`.
    pub fn forward_freq(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, f, t) = x.dims4()?;
        let xs = x
            .permute((0, 3, 1, 2))?
            .contiguous()?
            .reshape((b * t, c, f))?;
        let y = self.forward(&xs)?;
        let (_, o, f2) = y.dims3()?;
        y.reshape((b, t, o, f2))?
            .permute((0, 2, 3, 1))?
            .contiguous()
    }
}

impl Module for Conv1d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (o, c, k) = self.weight.dims3()?;
        let y = if k == 1 && self.stride == 1 && self.padding == 0 {
            // A pointwise convolution is a matmul over channels.
            self.weight.reshape((o, c))?.broadcast_matmul(x)?
        } else {
            x.conv1d(&self.weight, self.padding, self.stride, self.dilation, 1)?
        };
        y.broadcast_add(&self.bias.reshape((1, (), 1))?)
    }
}

/// A transposed 1-d convolution (`ConvTranspose1d`, no padding), also used along frequencies.
///
/// Computed as one matmul (every input step times every tap) followed by an overlap-add of the
/// taps, in blocks of `stride`. (candle 0.11's CPU `conv_transpose1d` mixes up batch items when the
/// batch is larger than one, which the frequency layers need.)
#[derive(Debug, Clone)]
pub struct ConvTr1d {
    /// `(cout * taps, cin)`, taps zero-padded to a multiple of the stride.
    weight_t: Tensor,
    bias: Tensor,
    cout: usize,
    kernel: usize,
    taps: usize,
    stride: usize,
}

impl ConvTr1d {
    fn from_weight(weight: Tensor, bias: Tensor, stride: usize) -> Result<Self> {
        let (cin, cout, kernel) = weight.dims3()?;
        let taps = kernel.div_ceil(stride) * stride;
        let weight = weight.pad_with_zeros(2, 0, taps - kernel)?;
        let weight_t = weight.reshape((cin, cout * taps))?.t()?.contiguous()?;
        Ok(ConvTr1d {
            weight_t,
            bias,
            cout,
            kernel,
            taps,
            stride,
        })
    }

    pub fn new(
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = vb.get((cin, cout, kernel), "weight")?;
        Self::from_weight(weight, vb.get(cout, "bias")?, stride)
    }

    /// `ConvTranspose2d` with kernel `[k, 1]` and stride `[s, 1]`.
    pub fn new_freq(
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = vb.get((cin, cout, kernel, 1), "weight")?.squeeze(3)?;
        Self::from_weight(weight, vb.get(cout, "bias")?, stride)
    }

    pub fn forward_freq(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, f, t) = x.dims4()?;
        let xs = x
            .permute((0, 3, 1, 2))?
            .contiguous()?
            .reshape((b * t, c, f))?;
        let y = self.forward(&xs)?;
        let (_, o, f2) = y.dims3()?;
        y.reshape((b, t, o, f2))?
            .permute((0, 2, 3, 1))?
            .contiguous()
    }
}

impl Module for ConvTr1d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, _, l) = x.dims3()?;
        let s = self.stride;
        let blocks = self.taps / s;
        // (N, cout * taps, L) -> (N, cout, blocks, s, L)
        let cols = self
            .weight_t
            .broadcast_matmul(x)?
            .reshape((n, self.cout, blocks, s, l))?;
        let full = l * s + self.taps - s;
        let mut out: Option<Tensor> = None;
        for j in 0..blocks {
            // Tap block j of input step i lands at output (i + j) * s .. (i + j + 1) * s.
            let part = cols
                .narrow(2, j, 1)?
                .squeeze(2)?
                .permute((0, 1, 3, 2))?
                .contiguous()?
                .reshape((n, self.cout, l * s))?
                .pad_with_zeros(2, j * s, (blocks - 1 - j) * s)?;
            out = Some(match out {
                None => part,
                Some(acc) => (acc + part)?,
            });
        }
        let out = out.expect("at least one tap block");
        debug_assert_eq!(out.dim(2)?, full);
        let out = out.narrow(2, 0, (l - 1) * s + self.kernel)?;
        out.broadcast_add(&self.bias.reshape((1, (), 1))?)
    }
}

/// A square-kernel, stride-1 `Conv2d` (the rewrite convolution of frequency layers).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    padding: usize,
}

impl Conv2d {
    pub fn new(
        cin: usize,
        cout: usize,
        kernel: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Conv2d {
            weight: vb.get((cout, cin, kernel, kernel), "weight")?,
            bias: vb.get(cout, "bias")?,
            padding,
        })
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, kh, _) = self.weight.dims4()?;
        let y = if kh == 1 {
            // A 1x1 convolution is a matmul over channels.
            let (b, c, f, t) = x.dims4()?;
            let (o, _, _, _) = self.weight.dims4()?;
            let w = self.weight.reshape((o, c))?;
            w.broadcast_matmul(&x.reshape((b, c, f * t))?)?
                .reshape((b, o, f, t))?
        } else {
            x.conv2d(&self.weight, self.padding, 1, 1, 1)?
        };
        y.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)
    }
}

/// `LayerScale` (Touvron et al. 2021): a learnt per-channel scale on `(B, C, T)`.
#[derive(Debug, Clone)]
pub struct LayerScale {
    scale: Tensor,
    channel_last: bool,
}

impl LayerScale {
    pub fn new(channels: usize, channel_last: bool, vb: VarBuilder) -> Result<Self> {
        Ok(LayerScale {
            scale: vb.get(channels, "scale")?,
            channel_last,
        })
    }
}

impl Module for LayerScale {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.channel_last {
            x.broadcast_mul(&self.scale)
        } else {
            x.broadcast_mul(&self.scale.reshape(((), 1))?)
        }
    }
}

/// One `DConv` layer: dilated conv -> GroupNorm(1) -> GELU -> 1x1 conv -> GroupNorm(1) -> GLU ->
/// LayerScale; state keys `layers.{d}.{0,1,3,4,6}`.
#[derive(Debug, Clone)]
struct DConvLayer {
    conv1: Conv1d,
    norm1: GroupNorm,
    conv2: Conv1d,
    norm2: GroupNorm,
    scale: LayerScale,
}

/// `DConv`: the residual branch of dilated convolutions in every layer (no LSTM/attention, as in
/// HTDemucs).
#[derive(Debug, Clone)]
pub struct DConv {
    layers: Vec<DConvLayer>,
}

impl DConv {
    pub fn new(channels: usize, compress: f64, depth: usize, vb: VarBuilder) -> Result<Self> {
        let hidden = (channels as f64 / compress) as usize;
        let vb = vb.pp("layers");
        let layers = (0..depth)
            .map(|d| {
                let dilation = 1usize << d;
                let vb = vb.pp(d.to_string());
                Ok(DConvLayer {
                    conv1: Conv1d::new(channels, hidden, 3, 1, dilation, dilation, vb.pp("0"))?,
                    norm1: GroupNorm::new(1, hidden, vb.pp("1"))?,
                    conv2: Conv1d::new(hidden, 2 * channels, 1, 1, 0, 1, vb.pp("3"))?,
                    norm2: GroupNorm::new(1, 2 * channels, vb.pp("4"))?,
                    scale: LayerScale::new(channels, false, vb.pp("6"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(DConv { layers })
    }

    /// Apply along time to the `(B, C, F, T)` frequency branch, each bin independently.
    fn forward_freq(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, f, t) = x.dims4()?;
        if cpu::is_cpu_f32(x) {
            return self.forward_cpu(x, [b, c, f, t]);
        }
        let y = x
            .permute((0, 2, 1, 3))?
            .contiguous()?
            .reshape((b * f, c, t))?;
        let y = self.forward(&y)?;
        y.reshape((b, f, c, t))?.permute((0, 2, 1, 3))?.contiguous()
    }

    /// The fused CPU kernel on `(B, C, F, T)` values (`F = 1` for `(B, C, T)`), shaped as `x`.
    fn forward_cpu(&self, x: &Tensor, dims: [usize; 4]) -> Result<Tensor> {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                let (_, _, k) = l.conv1.weight.dims3()?;
                if k != 3 || l.conv1.padding != l.conv1.dilation || l.conv1.stride != 1 {
                    candle_core::bail!("dconv: expected a dilated 3-tap convolution");
                }
                Ok(cpu::DConvWeights {
                    dilation: l.conv1.dilation,
                    w1: cpu::values(&l.conv1.weight)?,
                    b1: cpu::values(&l.conv1.bias)?,
                    g1: cpu::values(&l.norm1.weight)?,
                    beta1: cpu::values(&l.norm1.bias)?,
                    w2: cpu::values(&l.conv2.weight)?,
                    b2: cpu::values(&l.conv2.bias)?,
                    g2: cpu::values(&l.norm2.weight)?,
                    beta2: cpu::values(&l.norm2.bias)?,
                    scale: cpu::values(&l.scale.scale)?,
                    eps: l.norm1.eps,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut out = cpu::with_values(x, |v| Ok(v.to_vec()))?;
        cpu::dconv(&mut out, dims, &layers);
        cpu::tensor(out, x.dims())
    }
}

impl Module for DConv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if cpu::is_cpu_f32(x) {
            let (b, c, t) = x.dims3()?;
            return self.forward_cpu(x, [b, c, 1, t]);
        }
        let mut x = x.clone();
        for l in &self.layers {
            let y = l.norm1.forward(&l.conv1.forward(&x)?)?.gelu_erf()?;
            let y = glu(&l.norm2.forward(&l.conv2.forward(&y)?)?, 1)?;
            x = (x + l.scale.forward(&y)?)?;
        }
        Ok(x)
    }
}

/// The shared shape of one encoder or decoder layer.
#[derive(Debug, Clone, Copy)]
pub struct LayerSpec {
    pub chin: usize,
    pub chout: usize,
    pub kernel: usize,
    pub stride: usize,
    /// Acts on the frequency axis of `(B, C, F, T)` (else on time of `(B, C, T)`).
    pub freq: bool,
    /// GroupNorm(norm_groups) after the convolutions (else identity).
    pub norm: Option<usize>,
    pub dconv: Option<DConvSpec>,
    pub rewrite: bool,
    /// Rewrite convolution context (kernel `1 + 2 * context`).
    pub context: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct DConvSpec {
    pub compress: f64,
    pub depth: usize,
}

fn opt_norm(groups: Option<usize>, channels: usize, vb: VarBuilder) -> Result<Option<GroupNorm>> {
    groups.map(|g| GroupNorm::new(g, channels, vb)).transpose()
}

fn apply_norm(norm: &Option<GroupNorm>, x: Tensor) -> Result<Tensor> {
    match norm {
        Some(n) => n.forward(&x),
        None => Ok(x),
    }
}

/// A rewrite convolution: 2-d square on frequency layers, 1-d on time layers.
#[derive(Debug, Clone)]
enum Rewrite {
    Freq(Conv2d),
    Time(Conv1d),
}

impl Rewrite {
    fn new(freq: bool, cin: usize, cout: usize, context: usize, vb: VarBuilder) -> Result<Self> {
        let k = 1 + 2 * context;
        Ok(if freq {
            Rewrite::Freq(Conv2d::new(cin, cout, k, context, vb)?)
        } else {
            Rewrite::Time(Conv1d::new(cin, cout, k, 1, context, 1, vb)?)
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Rewrite::Freq(c) => c.forward(x),
            Rewrite::Time(c) => c.forward(x),
        }
    }

    /// `glu(conv(x), 1)` by the fused CPU kernel, on `(B, C, F, T)` or `(B, C, T)`.
    fn forward_glu_cpu(&self, x: &Tensor) -> Result<Tensor> {
        let (weight, bias, kernel) = match self {
            Rewrite::Freq(c) => {
                let (_, _, kh, kw) = c.weight.dims4()?;
                (&c.weight, &c.bias, (kh, kw))
            }
            Rewrite::Time(c) => {
                let (_, _, k) = c.weight.dims3()?;
                (&c.weight, &c.bias, (1, k))
            }
        };
        let (dims, mut shape) = match x.rank() {
            4 => {
                let (b, c, f, t) = x.dims4()?;
                ([b, c, f, t], vec![b, 0, f, t])
            }
            _ => {
                let (b, c, t) = x.dims3()?;
                ([b, c, 1, t], vec![b, 0, t])
            }
        };
        let bias = cpu::values(bias)?;
        shape[1] = bias.len() / 2;
        let y = cpu::with_values(x, |xv| {
            cpu::with_values(weight, |w| Ok(cpu::conv_glu(xv, dims, w, &bias, kernel)))
        })?;
        cpu::tensor(y, &shape)
    }
}

/// `HEncLayer`: strided conv -> norm -> GELU -> DConv -> rewrite + GLU.
#[derive(Debug, Clone)]
pub struct HEncLayer {
    spec: LayerSpec,
    conv: Conv1d,
    norm1: Option<GroupNorm>,
    rewrite: Option<(Rewrite, Option<GroupNorm>)>,
    dconv: Option<DConv>,
}

impl HEncLayer {
    pub fn new(spec: LayerSpec, vb: VarBuilder) -> Result<Self> {
        let pad = spec.kernel / 4;
        let conv = if spec.freq {
            Conv1d::new_freq(
                spec.chin,
                spec.chout,
                spec.kernel,
                spec.stride,
                pad,
                vb.pp("conv"),
            )?
        } else {
            Conv1d::new(
                spec.chin,
                spec.chout,
                spec.kernel,
                spec.stride,
                pad,
                1,
                vb.pp("conv"),
            )?
        };
        let norm1 = opt_norm(spec.norm, spec.chout, vb.pp("norm1"))?;
        let rewrite = if spec.rewrite {
            let conv = Rewrite::new(
                spec.freq,
                spec.chout,
                2 * spec.chout,
                spec.context,
                vb.pp("rewrite"),
            )?;
            Some((conv, opt_norm(spec.norm, 2 * spec.chout, vb.pp("norm2"))?))
        } else {
            None
        };
        let dconv = spec
            .dconv
            .map(|d| DConv::new(spec.chout, d.compress, d.depth, vb.pp("dconv")))
            .transpose()?;
        Ok(HEncLayer {
            spec,
            conv,
            norm1,
            rewrite,
            dconv,
        })
    }

    /// `(B, C, F, T)` (frequency layer) or `(B, C, T)` (time layer, right-padded to a multiple of
    /// the stride). The reference's `inject` argument only serves the branch-merging layer of
    /// deeper configurations, which [`super::Config::validate`] rejects.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let plain = self.norm1.is_none() && self.rewrite.as_ref().is_none_or(|(_, n)| n.is_none());
        if plain && cpu::is_cpu_f32(x) {
            return self.forward_cpu(x);
        }
        let y = if self.spec.freq {
            self.conv.forward_freq(x)?
        } else {
            let le = x.dim(D::Minus1)?;
            let x = if le % self.spec.stride != 0 {
                x.pad_with_zeros(D::Minus1, 0, self.spec.stride - le % self.spec.stride)?
            } else {
                x.clone()
            };
            self.conv.forward(&x)?
        };
        let mut y = apply_norm(&self.norm1, y)?.gelu_erf()?;
        if let Some(dconv) = &self.dconv {
            y = if self.spec.freq {
                dconv.forward_freq(&y)?
            } else {
                dconv.forward(&y)?
            };
        }
        match &self.rewrite {
            Some((conv, norm)) => glu(&apply_norm(norm, conv.forward(&y)?)?, 1),
            None => Ok(y),
        }
    }

    /// [`HEncLayer::forward`] by the fused CPU kernels (no norms).
    fn forward_cpu(&self, x: &Tensor) -> Result<Tensor> {
        let (k, s) = (self.spec.kernel, self.spec.stride);
        let pad = k / 4;
        let (dims, out_len) = if self.spec.freq {
            let (b, c, f, t) = x.dims4()?;
            ([b, c, f, t], (f + 2 * pad - k) / s + 1)
        } else {
            // Right-padded with zeros to a multiple of the stride: reads past the end are zeros.
            let (b, c, t) = x.dims3()?;
            ([b, c, t, 1], (t.div_ceil(s) * s + 2 * pad - k) / s + 1)
        };
        let bias = cpu::values(&self.conv.bias)?;
        let o = bias.len();
        let y = cpu::with_values(x, |xv| {
            cpu::with_values(&self.conv.weight, |w| {
                Ok(cpu::conv_gelu(xv, dims, w, &bias, (k, s, pad), out_len))
            })
        })?;
        let [b, _, _, t] = dims;
        let mut y = if self.spec.freq {
            cpu::tensor(y, &[b, o, out_len, t])?
        } else {
            cpu::tensor(y, &[b, o, out_len])?
        };
        if let Some(dconv) = &self.dconv {
            y = if self.spec.freq {
                dconv.forward_freq(&y)?
            } else {
                dconv.forward(&y)?
            };
        }
        match &self.rewrite {
            Some((conv, _)) => conv.forward_glu_cpu(&y),
            None => Ok(y),
        }
    }
}

/// `HDecLayer`: (+ skip) -> rewrite + GLU -> DConv -> transposed conv -> norm -> crop -> GELU.
#[derive(Debug, Clone)]
pub struct HDecLayer {
    spec: LayerSpec,
    /// The outermost decoder: no GELU on the output.
    last: bool,
    conv_tr: ConvTr1d,
    norm2: Option<GroupNorm>,
    rewrite: Option<(Rewrite, Option<GroupNorm>)>,
    dconv: Option<DConv>,
}

impl HDecLayer {
    pub fn new(spec: LayerSpec, last: bool, vb: VarBuilder) -> Result<Self> {
        let conv_tr = if spec.freq {
            ConvTr1d::new_freq(
                spec.chin,
                spec.chout,
                spec.kernel,
                spec.stride,
                vb.pp("conv_tr"),
            )?
        } else {
            ConvTr1d::new(
                spec.chin,
                spec.chout,
                spec.kernel,
                spec.stride,
                vb.pp("conv_tr"),
            )?
        };
        let norm2 = opt_norm(spec.norm, spec.chout, vb.pp("norm2"))?;
        let rewrite = if spec.rewrite {
            let conv = Rewrite::new(
                spec.freq,
                spec.chin,
                2 * spec.chin,
                spec.context,
                vb.pp("rewrite"),
            )?;
            Some((conv, opt_norm(spec.norm, 2 * spec.chin, vb.pp("norm1"))?))
        } else {
            None
        };
        let dconv = spec
            .dconv
            .map(|d| DConv::new(spec.chin, d.compress, d.depth, vb.pp("dconv")))
            .transpose()?;
        Ok(HDecLayer {
            spec,
            last,
            conv_tr,
            norm2,
            rewrite,
            dconv,
        })
    }

    /// `length` is the time length to crop to (time layers only).
    pub fn forward(&self, x: &Tensor, skip: &Tensor, length: usize) -> Result<Tensor> {
        let x = (x + skip)?;
        let plain = self.norm2.is_none() && self.rewrite.as_ref().is_none_or(|(_, n)| n.is_none());
        if plain && cpu::is_cpu_f32(&x) {
            return self.forward_cpu(&x, length);
        }
        let mut y = match &self.rewrite {
            Some((conv, norm)) => glu(&apply_norm(norm, conv.forward(&x)?)?, 1)?,
            None => x,
        };
        if let Some(dconv) = &self.dconv {
            y = if self.spec.freq {
                dconv.forward_freq(&y)?
            } else {
                dconv.forward(&y)?
            };
        }
        let pad = self.spec.kernel / 4;
        let z = if self.spec.freq {
            let z = apply_norm(&self.norm2, self.conv_tr.forward_freq(&y)?)?;
            let f = z.dim(2)?;
            z.narrow(2, pad, f - 2 * pad)?
        } else {
            let z = apply_norm(&self.norm2, self.conv_tr.forward(&y)?)?;
            z.narrow(D::Minus1, pad, length)?
        };
        if self.last {
            Ok(z)
        } else {
            z.gelu_erf()
        }
    }

    /// [`HDecLayer::forward`] after the skip connection, by the fused CPU kernels (no norms).
    fn forward_cpu(&self, x: &Tensor, length: usize) -> Result<Tensor> {
        let mut y = match &self.rewrite {
            Some((conv, _)) => conv.forward_glu_cpu(x)?,
            None => x.clone(),
        };
        if let Some(dconv) = &self.dconv {
            y = if self.spec.freq {
                dconv.forward_freq(&y)?
            } else {
                dconv.forward(&y)?
            };
        }
        let ct = &self.conv_tr;
        let pad = self.spec.kernel / 4;
        let (dims, crop) = if self.spec.freq {
            let (b, c, f, t) = y.dims4()?;
            let full = (f - 1) * ct.stride + ct.kernel;
            ([b, c, f, t], (pad, full - 2 * pad))
        } else {
            let (b, c, t) = y.dims3()?;
            ([b, c, t, 1], (pad, length))
        };
        let bias = cpu::values(&ct.bias)?;
        let z = cpu::with_values(&y, |yv| {
            cpu::with_values(&ct.weight_t, |w| {
                Ok(cpu::conv_tr(
                    yv,
                    dims,
                    w,
                    &bias,
                    (ct.taps, ct.stride),
                    crop,
                    !self.last,
                ))
            })
        })?;
        let [b, _, _, t] = dims;
        if self.spec.freq {
            cpu::tensor(z, &[b, ct.cout, crop.1, t])
        } else {
            cpu::tensor(z, &[b, ct.cout, crop.1])
        }
    }
}

/// `hdemucs.ScaledEmbedding`: an embedding table whose output is multiplied by `scale`.
#[derive(Debug, Clone)]
pub struct ScaledEmbedding {
    weight: Tensor,
    scale: f64,
}

impl ScaledEmbedding {
    pub fn new(num: usize, dim: usize, scale: f64, vb: VarBuilder) -> Result<Self> {
        Ok(ScaledEmbedding {
            weight: vb.pp("embedding").get((num, dim), "weight")?,
            scale,
        })
    }

    /// The embeddings of positions `0..n`, `(n, dim)`.
    pub fn first(&self, n: usize) -> Result<Tensor> {
        self.weight.narrow(0, 0, n)? * self.scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Direct definition: `y[n, o, i * s + k] += x[n, c, i] * w[c, o, k]`.
    fn naive_conv_tr(x: &[Vec<Vec<f32>>], w: &[Vec<Vec<f32>>], s: usize) -> Vec<Vec<Vec<f32>>> {
        let (cin, cout, k) = (w.len(), w[0].len(), w[0][0].len());
        let l = x[0][0].len();
        let mut y = vec![vec![vec![0f32; (l - 1) * s + k]; cout]; x.len()];
        for (n, xn) in x.iter().enumerate() {
            for c in 0..cin {
                for o in 0..cout {
                    for i in 0..l {
                        for t in 0..k {
                            y[n][o][i * s + t] += xn[c][i] * w[c][o][t];
                        }
                    }
                }
            }
        }
        y
    }

    #[test]
    fn fused_group_norm_matches_the_composed_one() {
        let dev = Device::Cpu;
        for (groups, shape) in [
            (1, vec![3, 6, 50]),
            (2, vec![2, 4, 3, 7]),
            (4, vec![5, 8, 9]),
        ] {
            let c = shape[1];
            let x = Tensor::randn(0.5f32, 3., shape.as_slice(), &dev).unwrap();
            let norm = GroupNorm {
                weight: Tensor::randn(1f32, 0.3, c, &dev).unwrap(),
                bias: Tensor::randn(0f32, 0.3, c, &dev).unwrap(),
                groups,
                eps: 1e-5,
            };
            let fused = norm.forward(&x).unwrap();
            let composed = norm.forward_composed(&x).unwrap();
            let err = (fused - composed)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(err < 1e-5, "groups {groups}: {err}");
        }
    }

    #[test]
    fn transposed_conv_matches_its_definition_for_batches() {
        let dev = Device::Cpu;
        for (k, s) in [(8, 4), (6, 4), (4, 2)] {
            let x = Tensor::randn(0f32, 1., (3, 5, 7), &dev).unwrap();
            let w = Tensor::randn(0f32, 1., (5, 2, k), &dev).unwrap();
            let conv = ConvTr1d::from_weight(
                w.clone(),
                Tensor::zeros(2, candle_core::DType::F32, &dev).unwrap(),
                s,
            )
            .unwrap();
            let got = conv.forward(&x).unwrap().to_vec3::<f32>().unwrap();
            let want = naive_conv_tr(&x.to_vec3().unwrap(), &w.to_vec3().unwrap(), s);
            assert_eq!(got.len(), want.len());
            let err = got
                .iter()
                .flatten()
                .flatten()
                .zip(want.iter().flatten().flatten())
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert_eq!(got[0][0].len(), want[0][0].len());
            assert!(err < 1e-5, "k {k} s {s}: {err}");
        }
    }
}
