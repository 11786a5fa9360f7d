//! CPU fast paths of [`super::model`]: the data movement around its matrix products, written as plain loops
//! over contiguous `f32` slices so that each layer is one pass to build the product's left operand, one
//! product (candle's GEMM, multithreaded) and one pass to lay the result out with bias and activation.
//!
//! The generic tensor-op versions in `model.rs` compute the same values (same products, same weights) and
//! run on any device; these are what the CPU uses, because candle's strided copies (pad, unfold, permute,
//! stack) cost more than the products themselves at these shapes.

use candle_core::{Device, Result, Storage, Tensor};

/// Calls `f` with the tensor's data when it is a contiguous `f32` tensor in CPU memory.
pub fn with_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<Option<R>> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Ok(None);
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Ok(None);
    };
    let Ok(data) = cpu.as_slice::<f32>() else {
        return Ok(None);
    };
    Ok(Some(f(&data[start..end])))
}

/// Runs `f(row_index, row)` over the `row_len`-long rows of `buf`, split into contiguous runs over as many
/// threads as candle's GEMM uses (`RAYON_NUM_THREADS`, else every core), when there is enough work.
pub fn par_rows(buf: &mut [f32], row_len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    const MIN_PER_THREAD: usize = 1 << 16;
    let n_rows = buf.len() / row_len.max(1);
    let threads = candle_core::utils::get_num_threads()
        .min(buf.len() / MIN_PER_THREAD)
        .max(1);
    if threads == 1 || row_len == 0 {
        for (r, row) in buf.chunks_exact_mut(row_len.max(1)).enumerate() {
            f(r, row);
        }
        return;
    }
    let per = n_rows.div_ceil(threads);
    std::thread::scope(|scope| {
        for (i, part) in buf.chunks_mut(per * row_len).enumerate() {
            let f = &f;
            scope.spawn(move || {
                for (j, row) in part.chunks_exact_mut(row_len).enumerate() {
                    f(i * per + j, row);
                }
            });
        }
    });
}

/// Activation fused into a convolution's output pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    None,
    Relu,
    Sigmoid,
}

impl Activation {
    #[inline]
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Activation::None => v,
            Activation::Relu => v.max(0.0),
            // candle_nn::ops::sigmoid's formula, for identical rounding.
            Activation::Sigmoid => ((-v).exp() + 1.0).recip(),
        }
    }
}

/// Geometry of a banded 2-D convolution (see `model::BandedConv2d`).
#[derive(Debug, Clone, Copy)]
pub struct BandGeometry {
    pub k_time: usize,
    pub stride: usize,
    pub block: usize,
    pub window: usize,
    pub pad_left: usize,
    pub out_freq: usize,
}

impl BandGeometry {
    pub fn n_blocks(&self) -> usize {
        self.out_freq.div_ceil(self.block)
    }
}

/// Rows of the banded product for input `x` `[b, c, t, f]`: row `(b·t + t')·n_blocks + block`, column
/// `(dt·c + ch)·window + w` holds `x[b, ch, t' + dt − k_time/2, block·stride·block_len + w − pad_left]`,
/// zero outside the input ("same" padding in time, explicit padding in frequency).
pub fn pack_bands(x: &[f32], dims: (usize, usize, usize, usize), g: &BandGeometry) -> Vec<f32> {
    let (b, c, t, f) = dims;
    let n_blocks = g.n_blocks();
    let row_len = g.k_time * c * g.window;
    let pt = g.k_time / 2;
    let mut cols = vec![0f32; b * t * n_blocks * row_len];
    par_rows(&mut cols, row_len, |r, row| {
        let blk = r % n_blocks;
        let ti = (r / n_blocks) % t;
        let bi = r / (n_blocks * t);
        // Input column of the window's first element (may be negative: left padding).
        let f0 = (blk * g.stride * g.block) as isize - g.pad_left as isize;
        let lo = (-f0).max(0) as usize; // first window element inside the input
        let hi = ((f as isize - f0).max(0) as usize).min(g.window); // one past the last one
        if lo >= hi {
            return;
        }
        for dt in 0..g.k_time {
            let ts = ti as isize + dt as isize - pt as isize;
            if ts < 0 || ts >= t as isize {
                continue;
            }
            for ch in 0..c {
                let src = ((bi * c + ch) * t + ts as usize) * f;
                let dst = (dt * c + ch) * g.window;
                let s0 = (src as isize + f0 + lo as isize) as usize;
                row[dst + lo..dst + hi].copy_from_slice(&x[s0..s0 + hi - lo]);
            }
        }
    });
    cols
}

/// The banded product's result `[b·t·n_blocks, out_c·block]` laid out as `[b, out_c, t, out_freq]`, with
/// `bias[o]` added and the activation applied.
pub fn unpack_bands(
    y: &[f32],
    dims: (usize, usize, usize),
    out_c: usize,
    bias: &[f32],
    g: &BandGeometry,
    act: Activation,
) -> Vec<f32> {
    let (b, t, _) = dims;
    let n_blocks = g.n_blocks();
    let mut out = vec![0f32; b * out_c * t * g.out_freq];
    let cols = out_c * g.block;
    // One output row is (batch, channel, frame).
    par_rows(&mut out, g.out_freq, |r, dst| {
        let (ti, o, bi) = (r % t, (r / t) % out_c, r / (t * out_c));
        let bias = bias[o];
        for blk in 0..n_blocks {
            let row = (bi * t + ti) * n_blocks + blk;
            let src = &y[row * cols + o * g.block..][..g.block];
            let f0 = blk * g.block;
            let n = g.block.min(g.out_freq - f0);
            for (d, &s) in dst[f0..f0 + n].iter_mut().zip(&src[..n]) {
                *d = act.apply(s + bias);
            }
        }
    });
    out
}

/// `lhs [m, k] · rhs [k, n]` with candle's CPU GEMM; `lhs` is moved in, not copied.
pub fn matmul(lhs: Vec<f32>, m: usize, k: usize, rhs: &Tensor) -> Result<Tensor> {
    Tensor::from_vec(lhs, (m, k), &Device::Cpu)?.matmul(rhs)
}

/// numpy/torch "reflect" padding of `x` by `pad` on both sides, into `out` (cleared first).
pub fn reflect_pad(x: &[f32], pad: usize, out: &mut Vec<f32>) {
    let len = x.len() as isize;
    out.clear();
    out.extend((0..x.len() + 2 * pad).map(|i| {
        let j = i as isize - pad as isize;
        let j = if j < 0 { -j } else { j };
        let j = if j >= len { 2 * (len - 1) - j } else { j };
        x[j as usize]
    }));
}
