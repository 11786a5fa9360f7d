//! CPU fast paths of [`super::layers`] and [`super::transformer`]: each fused block is one or two
//! products by the `gemm` crate (the GEMM candle itself runs, reading strided views in place) and
//! plain loops over contiguous `f32` slices for everything around them, split over the cores.
//!
//! The tensor-op versions beside them compute the same functions on any device and stay the
//! reference: the unit tests at the bottom check each fast path against them. On the CPU those
//! spend most of a forward pass in data movement, not arithmetic: permuted copies to put the
//! convolved axis last, padding copies, one full pass over a segment's activations per elementwise
//! op (GLU alone is three), each into freshly allocated and page-faulted memory, and attention
//! matrices of hundreds of MB. Here a `DConv` branch is three passes over tiles that stay in
//! cache, a convolution is an im2col (or a strided view) and one product, a transposed convolution
//! a product and one overlap-add, and attention is computed in blocks of queries.

use std::cell::Cell;

use candle_core::{DType, Device, Result, Storage, Tensor};
use rayon::prelude::*;

thread_local! {
    /// Off inside [`with_tensor_ops`] on this thread.
    static ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Runs `f` with the fast paths off on this thread, so the model runs its tensor ops even on the
/// CPU (to compare the two).
pub fn with_tensor_ops<R>(f: impl FnOnce() -> R) -> R {
    let was = ENABLED.with(|e| e.replace(false));
    let out = f();
    ENABLED.with(|e| e.set(was));
    out
}

/// Whether `t` takes the fast paths: `f32` in CPU memory (and not inside [`with_tensor_ops`]).
pub fn is_cpu_f32(t: &Tensor) -> bool {
    ENABLED.with(Cell::get) && t.device().is_cpu() && t.dtype() == DType::F32
}

/// Calls `f` with the values of a CPU `f32` tensor as one contiguous slice (copied only if the
/// tensor is not contiguous).
pub fn with_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("htdemucs cpu path: not a CPU tensor")
    };
    let data = cpu.as_slice::<f32>()?;
    let Some((a, b)) = layout.contiguous_offsets() else {
        candle_core::bail!("htdemucs cpu path: not contiguous")
    };
    f(&data[a..b])
}

/// The values of a (small) tensor, e.g. a layer's weights.
pub fn values(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()
}

/// A CPU tensor from its values.
pub fn tensor(v: Vec<f32>, dims: &[usize]) -> Result<Tensor> {
    Tensor::from_vec(v, dims, &Device::Cpu)
}

/// A strided matrix inside a slice: element `(i, j)` is at `off + i * rs + j * cs`.
#[derive(Debug, Clone, Copy)]
pub struct View {
    pub off: usize,
    pub rs: usize,
    pub cs: usize,
}

impl View {
    /// A row-major matrix with rows `rs` apart.
    pub fn rows(off: usize, rs: usize) -> Self {
        View { off, rs, cs: 1 }
    }

    /// One past the last element of an `rows × cols` matrix (both non-zero).
    fn end(&self, rows: usize, cols: usize) -> usize {
        self.off + (rows - 1) * self.rs + (cols - 1) * self.cs + 1
    }
}

/// `dst = lhs · rhs` (or `dst += lhs · rhs` with `acc`) for an `m × k` `lhs` and a `k × n` `rhs`,
/// by the `gemm` crate on `threads` threads (1 inside work that is already split over the cores).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    d: View,
    acc: bool,
    lhs: &[f32],
    l: View,
    rhs: &[f32],
    r: View,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(d.end(m, n) <= dst.len(), "gemm: dst out of bounds");
    if k == 0 {
        if !acc {
            for i in 0..m {
                for j in 0..n {
                    dst[d.off + i * d.rs + j * d.cs] = 0.0;
                }
            }
        }
        return;
    }
    assert!(l.end(m, k) <= lhs.len(), "gemm: lhs out of bounds");
    assert!(r.end(k, n) <= rhs.len(), "gemm: rhs out of bounds");
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every element the three views address inside their slices;
    // `dst` is borrowed mutably, so it overlaps neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().add(d.off),
            d.cs as isize,
            d.rs as isize,
            acc,
            lhs.as_ptr().add(l.off),
            l.cs as isize,
            l.rs as isize,
            rhs.as_ptr().add(r.off),
            r.cs as isize,
            r.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// The threads candle's own kernels use (`RAYON_NUM_THREADS`, else every core).
pub fn threads() -> usize {
    candle_core::utils::get_num_threads().max(1)
}

/// A raw pointer that work split over threads writes through, each thread to its own elements.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: only used by loops whose threads write disjoint elements (see each use).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// `len` elements from `off`.
    ///
    /// # Safety
    /// No other thread may access these elements while the slice lives, and they must lie inside
    /// the buffer the pointer came from.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, off: usize, len: usize) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(off), len)
    }
}

/// `e^x` within 2 ulp over the `f32` range (Cephes' `expf`: `2^n · p(r)` with a degree-6
/// polynomial), branch-free so that loops over slices vectorise.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.336_55, 88.376_26);
    // n = round(x / ln 2), by the 1.5·2^23 trick (exact for |x / ln 2| < 2^22).
    let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    // r = x - n·ln 2 in two parts, so r is exact to f32.
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let p = p * r * r + r + 1.0;
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// The logistic sigmoid `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Exact GELU, `x · Φ(x)` with the error function, as `F.gelu`; the very expression of candle's
/// `gelu_erf`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    (candle_core::cpu::erf::erf_f32(x * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * x
}

/// `(Σ x, Σ x²)` in `f64`, eight lanes at a time.
fn sums(x: &[f32]) -> (f64, f64) {
    let mut s = [0f64; 8];
    let mut q = [0f64; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            let v = c[i] as f64;
            s[i] += v;
            q[i] += v * v;
        }
    }
    let (mut s1, mut q1) = (s.iter().sum::<f64>(), q.iter().sum::<f64>());
    for &v in tail {
        s1 += v as f64;
        q1 += v as f64 * v as f64;
    }
    (s1, q1)
}

/// GroupNorm(1) statistics of `n` values from their sums: `(mean, 1 / sqrt(var + eps))`.
fn norm_stats((s, q): (f64, f64), n: usize, eps: f64) -> (f64, f64) {
    let mean = s / n as f64;
    let var = (q / n as f64 - mean * mean).max(0.0);
    (mean, 1.0 / (var + eps).sqrt())
}

/// The affine map GroupNorm applies to one channel: `x · scale + shift`.
fn affine((mean, inv): (f64, f64), weight: f32, bias: f32) -> (f32, f32) {
    let scale = inv * weight as f64;
    ((scale) as f32, (bias as f64 - mean * scale) as f32)
}

/// One `DConv` layer's weights as plain vectors (see [`dconv`]).
pub struct DConvWeights {
    pub dilation: usize,
    /// `conv1`: `(hidden, chans, 3)` and `(hidden,)`.
    pub w1: Vec<f32>,
    pub b1: Vec<f32>,
    /// GroupNorm(1, hidden) affine.
    pub g1: Vec<f32>,
    pub beta1: Vec<f32>,
    /// `conv2` (1x1): `(2 chans, hidden)` and `(2 chans,)`.
    pub w2: Vec<f32>,
    pub b2: Vec<f32>,
    /// GroupNorm(1, 2 chans) affine.
    pub g2: Vec<f32>,
    pub beta2: Vec<f32>,
    /// LayerScale, `(chans,)`.
    pub scale: Vec<f32>,
    pub eps: f64,
}

/// `DConv` in place on `(B, C, F, T)` values, every `(b, f)` an independent sequence along `T`
/// (the time branch is `F = 1`): per layer, `x += scale · glu(norm2(conv2(gelu(norm1(conv1(x))))))`.
///
/// Work is split into units of one sequence and a tile of steps. Each layer makes three passes: the
/// dilated convolution into a small hidden buffer (with its sums), normalise + GELU there and the
/// sums of the 1x1 convolution's output, then that output again, normalised, gated and added to
/// `x`. The `2C × T` output is never stored whole; it is recomputed (its product is the cheap one).
pub fn dconv(x: &mut [f32], dims: [usize; 4], layers: &[DConvWeights]) {
    let [b, c, f, t] = dims;
    assert_eq!(x.len(), b * c * f * t, "dconv: shape");
    let items = b * f;
    let tile = if t <= 4096 { t } else { 2048 };
    let ntiles = t.div_ceil(tile);
    let units = items * ntiles;
    let cs = f * t;
    let item_off = |it: usize| (it / f) * c * f * t + (it % f) * t;
    let span = |u: usize| {
        let t0 = (u % ntiles) * tile;
        (u / ntiles, t0, (t0 + tile).min(t))
    };
    for l in layers {
        let hid = l.b1.len();
        let eps = l.eps;
        let z_of = |h: &[f32], z: &mut [f32], n: usize| {
            for (o, row) in z.chunks_exact_mut(tile).enumerate() {
                row[..n].fill(l.b2[o]);
            }
            gemm(
                (2 * c, n, hid),
                z,
                View::rows(0, tile),
                true,
                &l.w2,
                View::rows(0, hid),
                h,
                View::rows(0, tile),
                1,
            );
        };
        // Pass 1: h = conv1(x), and its sums.
        let mut h = vec![0f32; units * hid * tile];
        let xr: &[f32] = x;
        let sums_h: Vec<(f64, f64)> = h
            .par_chunks_mut(hid * tile)
            .enumerate()
            .map(|(u, hb)| {
                let (it, t0, t1) = span(u);
                for (j, row) in hb.chunks_exact_mut(tile).enumerate() {
                    row[..t1 - t0].fill(l.b1[j]);
                }
                for k in 0..3 {
                    let shift = (k as isize - 1) * l.dilation as isize;
                    let lo = (t0 as isize).max(-shift);
                    let hi = (t1 as isize).min(t as isize - shift);
                    if lo >= hi {
                        continue;
                    }
                    gemm(
                        (hid, (hi - lo) as usize, c),
                        hb,
                        View::rows(lo as usize - t0, tile),
                        true,
                        &l.w1,
                        View {
                            off: k,
                            rs: 3 * c,
                            cs: 3,
                        },
                        xr,
                        View::rows(item_off(it) + (lo + shift) as usize, cs),
                        1,
                    );
                }
                hb.chunks_exact(tile).fold((0.0, 0.0), |acc, row| {
                    let s = sums(&row[..t1 - t0]);
                    (acc.0 + s.0, acc.1 + s.1)
                })
            })
            .collect();
        let stats_h = item_stats(&sums_h, ntiles, hid * t, eps);
        // Pass 2: h = gelu(norm1(h)) in place; the sums of conv2(h).
        let sums_z: Vec<(f64, f64)> = h
            .par_chunks_mut(hid * tile)
            .enumerate()
            .map(|(u, hb)| {
                let (it, t0, t1) = span(u);
                let n = t1 - t0;
                for (j, row) in hb.chunks_exact_mut(tile).enumerate() {
                    let (sc, sh) = affine(stats_h[it], l.g1[j], l.beta1[j]);
                    for v in &mut row[..n] {
                        *v = gelu(*v * sc + sh);
                    }
                }
                let mut z = vec![0f32; 2 * c * tile];
                z_of(hb, &mut z, n);
                z.chunks_exact(tile).fold((0.0, 0.0), |acc, row| {
                    let s = sums(&row[..n]);
                    (acc.0 + s.0, acc.1 + s.1)
                })
            })
            .collect();
        let stats_z = item_stats(&sums_z, ntiles, 2 * c * t, eps);
        // Pass 3: x += scale · glu(norm2(conv2(h))).
        let xs = SharedMut(x.as_mut_ptr());
        let h = &h;
        (0..units).into_par_iter().for_each(|u| {
            let (it, t0, t1) = span(u);
            let n = t1 - t0;
            let mut z = vec![0f32; 2 * c * tile];
            z_of(&h[u * hid * tile..][..hid * tile], &mut z, n);
            let (a, g) = z.split_at(c * tile);
            for o in 0..c {
                let (sa, ta) = affine(stats_z[it], l.g2[o], l.beta2[o]);
                let (sg, tg) = affine(stats_z[it], l.g2[c + o], l.beta2[c + o]);
                let ls = l.scale[o];
                // SAFETY: unit `u` alone covers sequence `it`, steps `t0..t1`; the row lies inside
                // `x` (asserted shape).
                let dst = unsafe { xs.slice(item_off(it) + o * cs + t0, n) };
                let (ar, gr) = (&a[o * tile..][..n], &g[o * tile..][..n]);
                for ((d, &av), &gv) in dst.iter_mut().zip(ar).zip(gr) {
                    *d += ls * ((av * sa + ta) * sigmoid(gv * sg + tg));
                }
            }
        });
    }
}

/// Per-sequence GroupNorm statistics from per-unit sums (`ntiles` consecutive units a sequence).
fn item_stats(sums: &[(f64, f64)], ntiles: usize, n: usize, eps: f64) -> Vec<(f64, f64)> {
    sums.chunks(ntiles)
        .map(|parts| {
            let s = parts.iter().fold((0.0, 0.0), |a, p| (a.0 + p.0, a.1 + p.1));
            norm_stats(s, n, eps)
        })
        .collect()
}

/// Columns per product chunk: products and im2col buffers stay near 16 MB.
fn chunk_cols(rows: usize, per_step: usize) -> usize {
    ((1usize << 22) / (rows * per_step).max(1)).max(1)
}

/// A strided convolution along axis `L` of `(B, C, L, I)` values with zero padding `pad` at both
/// ends, then bias and exact GELU: `(B, O, out_len, I)`. `w` is `(O, C, K)`. (HEncLayer's `conv` and
/// `gelu`, `norm1` being the identity: on the frequency axis with `I = T`, on time with `I = 1`.)
pub fn conv_gelu(
    x: &[f32],
    [b, c, l, i]: [usize; 4],
    w: &[f32],
    bias: &[f32],
    (k, stride, pad): (usize, usize, usize),
    out_len: usize,
) -> Vec<f32> {
    let o = bias.len();
    assert_eq!(w.len(), o * c * k, "conv: weight shape");
    let mut out = vec![0f32; b * o * out_len * i];
    let step = chunk_cols(c * k, i);
    for bi in 0..b {
        let xb = &x[bi * c * l * i..][..c * l * i];
        let mut lo0 = 0;
        while lo0 < out_len {
            let n = step.min(out_len - lo0);
            // cols[(c, k), (lo, i)] = x[c, lo * stride + k - pad, i]
            let mut cols = vec![0f32; c * k * n * i];
            cols.par_chunks_mut(n * i)
                .enumerate()
                .for_each(|(row, dst)| {
                    let (ci, ki) = (row / k, row % k);
                    for (j, d) in dst.chunks_exact_mut(i).enumerate() {
                        let src = ((lo0 + j) * stride + ki) as isize - pad as isize;
                        if (0..l as isize).contains(&src) {
                            d.copy_from_slice(&xb[(ci * l + src as usize) * i..][..i]);
                        }
                    }
                });
            gemm(
                (o, n * i, c * k),
                &mut out,
                View::rows(bi * o * out_len * i + lo0 * i, out_len * i),
                false,
                w,
                View::rows(0, c * k),
                &cols,
                View::rows(0, n * i),
                threads(),
            );
            lo0 += n;
        }
    }
    out.par_chunks_mut(out_len * i)
        .enumerate()
        .for_each(|(row, dst)| {
            let bv = bias[row % o];
            for v in dst {
                *v = gelu(*v + bv);
            }
        });
    out
}

/// A transposed convolution along axis `L` of `(B, C, L, I)` values (stride `s`, no padding), kept
/// from `crop` for `out_len` steps, plus bias, then exact GELU if `gelu_after`: `(B, O, out_len, I)`.
/// `w_t` is the weight transposed to `(O · K, C)`. (HDecLayer's `conv_tr`, crop and GELU, `norm2`
/// being the identity.)
pub fn conv_tr(
    x: &[f32],
    [b, c, l, i]: [usize; 4],
    w_t: &[f32],
    bias: &[f32],
    (k, stride): (usize, usize),
    (crop, out_len): (usize, usize),
    gelu_after: bool,
) -> Vec<f32> {
    let o = bias.len();
    assert_eq!(w_t.len(), c * o * k, "conv_tr: weight shape");
    let mut out = vec![0f32; b * o * out_len * i];
    for (row, dst) in out.chunks_exact_mut(out_len * i).enumerate() {
        dst.fill(bias[row % o]);
    }
    let step = chunk_cols(o * k, i);
    for bi in 0..b {
        let mut l0 = 0;
        while l0 < l {
            let n = step.min(l - l0);
            // y[(o, k), (l, i)] = Σ_c w[c, o, k] x[c, l, i]
            let mut y = vec![0f32; o * k * n * i];
            gemm(
                (o * k, n * i, c),
                &mut y,
                View::rows(0, n * i),
                false,
                w_t,
                View::rows(0, c),
                x,
                View::rows(bi * c * l * i + l0 * i, l * i),
                threads(),
            );
            // Input step l, tap k lands on output step l * stride + k - crop.
            out[bi * o * out_len * i..][..o * out_len * i]
                .par_chunks_mut(out_len * i)
                .enumerate()
                .for_each(|(oi, dst)| {
                    for li in 0..n {
                        for ki in 0..k {
                            let p = (l0 + li) * stride + ki;
                            if p < crop || p >= crop + out_len {
                                continue;
                            }
                            let src = &y[((oi * k + ki) * n + li) * i..][..i];
                            for (d, s) in dst[(p - crop) * i..][..i].iter_mut().zip(src) {
                                *d += s;
                            }
                        }
                    }
                });
            l0 += n;
        }
    }
    if gelu_after {
        out.par_chunks_mut(1 << 14).for_each(|part| {
            for v in part {
                *v = gelu(*v);
            }
        });
    }
    out
}

/// `glu(conv(x) + bias, dim = 1)` for a stride-1 `(kf, kt)` kernel with "same" zero padding on
/// `(B, C, F, T)` values: `(B, O / 2, F, T)`. `w` is `(O, C, kf, kt)`. (The rewrite convolution and
/// GLU of both layer kinds, the norm between them being the identity: 3x3 or 1x1 on frequency
/// layers, `(1, 3)` or `(1, 1)` on time layers with `F = 1`.)
///
/// Each tap is one product reading the padded input shifted in place; the output rows carry the
/// padding's columns, dropped by the GLU pass.
pub fn conv_glu(
    x: &[f32],
    [b, c, f, t]: [usize; 4],
    w: &[f32],
    bias: &[f32],
    (kf, kt): (usize, usize),
) -> Vec<f32> {
    let o = bias.len();
    assert!(
        o % 2 == 0 && w.len() == o * c * kf * kt,
        "conv_glu: weight shape"
    );
    let (pf, pt) = (kf / 2, kt / 2);
    let (fp, tp) = (f + 2 * pf, t + 2 * pt);
    let half = o / 2;
    let mut out = vec![0f32; b * half * f * t];
    let step = chunk_cols(o, tp);
    for bi in 0..b {
        let xb = &x[bi * c * f * t..][..c * f * t];
        let padded;
        let xp: &[f32] = if pf == 0 && pt == 0 {
            xb
        } else {
            let mut p = vec![0f32; c * fp * tp];
            p.par_chunks_mut(fp * tp).enumerate().for_each(|(ci, dst)| {
                for fi in 0..f {
                    dst[(fi + pf) * tp + pt..][..t].copy_from_slice(&xb[(ci * f + fi) * t..][..t]);
                }
            });
            padded = p;
            &padded
        };
        let mut f0 = 0;
        while f0 < f {
            let nf = step.min(f - f0);
            // Columns (f, t) of the padded grid, up to the last real step of the last row.
            let n = (nf - 1) * tp + t;
            let mut y = vec![0f32; o * n];
            for (tap, (i, j)) in (0..kf)
                .flat_map(|i| (0..kt).map(move |j| (i, j)))
                .enumerate()
            {
                gemm(
                    (o, n, c),
                    &mut y,
                    View::rows(0, n),
                    tap > 0,
                    w,
                    View {
                        off: i * kt + j,
                        rs: c * kf * kt,
                        cs: kf * kt,
                    },
                    xp,
                    View::rows((f0 + i) * tp + j, fp * tp),
                    threads(),
                );
            }
            let y = &y;
            out[bi * half * f * t..][..half * f * t]
                .par_chunks_mut(f * t)
                .enumerate()
                .for_each(|(oi, dst)| {
                    let (ba, bg) = (bias[oi], bias[half + oi]);
                    for fi in 0..nf {
                        let a = &y[oi * n + fi * tp..][..t];
                        let g = &y[(half + oi) * n + fi * tp..][..t];
                        let d = &mut dst[(f0 + fi) * t..][..t];
                        for ((d, &av), &gv) in d.iter_mut().zip(a).zip(g) {
                            *d = (av + ba) * sigmoid(gv + bg);
                        }
                    }
                });
            f0 += nf;
        }
    }
    out
}

/// Softmax of `scale · row` in place, with [`exp`].
fn softmax_scaled(row: &mut [f32], scale: f32) {
    let mut m = [f32::NEG_INFINITY; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            m[i] = m[i].max(c[i]);
        }
    }
    let max = tail.iter().fold(
        m.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        |a, &v| a.max(v),
    );
    let mut s = [0f32; 8];
    let mut chunks = row.chunks_exact_mut(8);
    for c in &mut chunks {
        for i in 0..8 {
            c[i] = exp((c[i] - max) * scale);
            s[i] += c[i];
        }
    }
    let mut sum: f32 = s.iter().sum();
    for v in chunks.into_remainder() {
        *v = exp((*v - max) * scale);
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// Multi-head scaled dot-product attention, no mask: `q` is `(B, Nq, H·D)`, `k` and `v` are
/// `(B, Nk, H·D)` with heads side by side (as the input projections produce them); returns
/// `softmax(q kᵀ / √D) v` as `(B, Nq, H·D)`, heads side by side again (as the output projection
/// takes them).
///
/// Work is split over blocks of queries; a block computes its scores against every key for one
/// head at a time (a few MB), never the whole `Nq × Nk` matrix.
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    (b, nq, nk): (usize, usize, usize),
    heads: usize,
    dim: usize,
) -> Vec<f32> {
    let hd = dim / heads;
    assert_eq!(q.len(), b * nq * dim, "attention: q shape");
    assert_eq!(k.len(), b * nk * dim, "attention: k shape");
    assert_eq!(v.len(), b * nk * dim, "attention: v shape");
    let scale = 1.0 / (hd as f32).sqrt();
    const BLOCK: usize = 64;
    let mut out = vec![0f32; b * nq * dim];
    let blocks = nq.div_ceil(BLOCK);
    // Units of (batch item, block of queries); each writes its own rows of `out`.
    let outp = SharedMut(out.as_mut_ptr());
    (0..b * blocks).into_par_iter().for_each(|u| {
        let (bi, q0) = (u / blocks, (u % blocks) * BLOCK);
        let rows = BLOCK.min(nq - q0);
        let mut s = vec![0f32; rows * nk];
        // SAFETY: unit `u` alone covers batch item `bi`, queries `q0..q0 + rows`; inside `out`.
        let dst = unsafe { outp.slice((bi * nq + q0) * dim, rows * dim) };
        for h in 0..heads {
            gemm(
                (rows, nk, hd),
                &mut s,
                View::rows(0, nk),
                false,
                q,
                View::rows((bi * nq + q0) * dim + h * hd, dim),
                k,
                View {
                    off: bi * nk * dim + h * hd,
                    rs: 1,
                    cs: dim,
                },
                1,
            );
            for row in s.chunks_exact_mut(nk) {
                softmax_scaled(row, scale);
            }
            gemm(
                (rows, hd, nk),
                dst,
                View::rows(h * hd, dim),
                false,
                &s,
                View::rows(0, nk),
                v,
                View::rows(bi * nk * dim + h * hd, dim),
                1,
            );
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - want) / want).abs());
            x += 0.0037;
        }
        // 2 ulp of f32 is 2.4e-7 relative.
        assert!(worst < 2.4e-7, "exp relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-200.0) >= 0.0 && exp(-200.0) < 1e-37);
        assert!(sigmoid(-1e4) >= 0.0 && sigmoid(1e4) == 1.0);
    }

    /// Deterministic values in about `[-1, 1]`.
    fn noise(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn attention_matches_tensor_ops_on_ragged_blocks() {
        // Two batch items, queries not a multiple of the block, keys fewer than a block.
        let (b, nq, nk, heads, dim) = (2, 70, 33, 4, 32);
        let (q, k, v) = (
            noise(b * nq * dim, 1),
            noise(b * nk * dim, 2),
            noise(b * nk * dim, 3),
        );
        let got = attention(&q, &k, &v, (b, nq, nk), heads, dim);
        let hd = dim / heads;
        let split = |x: &[f32], n: usize| {
            tensor(x.to_vec(), &[b, n, dim])
                .unwrap()
                .reshape((b, n, heads, hd))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (qt, kt, vt) = (split(&q, nq), split(&k, nk), split(&v, nk));
        let att = (qt.matmul(&kt.t().unwrap()).unwrap() / (hd as f64).sqrt()).unwrap();
        let att = candle_nn::ops::softmax_last_dim(&att).unwrap();
        let want = att
            .matmul(&vt)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, nq, dim))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let err = max_diff(&got, &want);
        assert!(err < 1e-6, "attention max abs error {err:e}");
    }

    #[test]
    fn transposed_conv_matches_tensor_ops_across_chunks() {
        // Long enough along L that the product is split into several chunks.
        let (b, c, l, o, k, s) = (2, 3, 40_000, 4, 8, 4);
        let x = noise(b * c * l, 4);
        let w = noise(c * o * k, 5);
        let bias = noise(o, 6);
        let xt = tensor(x.clone(), &[b, c, l]).unwrap();
        let wt = tensor(w.clone(), &[c, o, k]).unwrap();
        // candle's CPU conv_transpose1d mixes batch items up (see layers::ConvTr1d): one at a time.
        let items: Vec<Tensor> = (0..b)
            .map(|i| {
                xt.narrow(0, i, 1)
                    .unwrap()
                    .conv_transpose1d(&wt, 0, 0, s, 1, 1)
                    .unwrap()
            })
            .collect();
        let full = Tensor::cat(&items, 0).unwrap();
        let (crop, len) = (2, (l - 1) * s + k - 4);
        let want = full
            .narrow(2, crop, len)
            .unwrap()
            .broadcast_add(&tensor(bias.clone(), &[1, o, 1]).unwrap())
            .unwrap()
            .gelu_erf()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // The kernel takes the weight as (O·K, C).
        let w_t = wt
            .permute((1, 2, 0))
            .unwrap()
            .contiguous()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got = conv_tr(&x, [b, c, l, 1], &w_t, &bias, (k, s), (crop, len), true);
        let err = max_diff(&got, &want);
        assert!(err < 1e-5, "conv_tr max abs error {err:e}");
    }
}
