//! CPU fast paths of [`super::model`]: the data movement around its matrix products, written as plain loops
//! over contiguous `f32` slices so that each layer is one pass to build the product's left operand, one
//! product (the `gemm` crate candle uses, multithreaded, reading overlapping rows in place) and one pass to lay the result out with bias and activation.
//!
//! The generic tensor-op versions in `model.rs` compute the same values (same products, same weights) and
//! run on any device; these are what the CPU uses, because candle's strided copies (pad, unfold, permute,
//! stack) cost more than the products themselves at these shapes.

use candle_core::{Result, Storage, Tensor};

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

/// The banded product's left operand for input `x` `[b, c, t, f]`, stored once per time step: row
/// `(b·n_blocks + block)·(t + 2·pt) + t'` (`pt = k_time/2`), column `ch·window + w` holds
/// `x[b, ch, t' − pt, block·stride·block_len + w − pad_left]`, zero outside the input ("same" padding in
/// time, explicit padding in frequency). The product's row for output frame `t'` is the `k_time`
/// consecutive stored rows from `t'`: an overlapping view with row stride `c·window` (see [`gemm_rows`]),
/// so the time taps are never copied.
pub fn pack_bands(x: &[f32], dims: (usize, usize, usize, usize), g: &BandGeometry) -> Vec<f32> {
    let (_, c, t, f) = dims;
    let n_blocks = g.n_blocks();
    let row_len = c * g.window;
    let pt = g.k_time / 2;
    let tp = t + 2 * pt;
    let mut cols = vec![0f32; dims.0 * n_blocks * tp * row_len];
    par_rows(&mut cols, row_len, |r, row| {
        let ts = (r % tp) as isize - pt as isize;
        let blk = (r / tp) % n_blocks;
        let bi = r / (tp * n_blocks);
        if ts < 0 || ts >= t as isize {
            return;
        }
        // Input column of the window's first element (may be negative: left padding).
        let f0 = (blk * g.stride * g.block) as isize - g.pad_left as isize;
        let lo = (-f0).max(0) as usize; // first window element inside the input
        let hi = ((f as isize - f0).max(0) as usize).min(g.window); // one past the last one
        if lo >= hi {
            return;
        }
        for ch in 0..c {
            let src = ((bi * c + ch) * t + ts as usize) * f;
            let dst = ch * g.window;
            let s0 = (src as isize + f0 + lo as isize) as usize;
            row[dst + lo..dst + hi].copy_from_slice(&x[s0..s0 + hi - lo]);
        }
    });
    cols
}

/// `m` rows of `lhs`, row `i` being `lhs[i·lhs_rs .. i·lhs_rs + k]` (rows may overlap), times `rhs`
/// `[k, n]`: a new `[m, n]` matrix, computed by the `gemm` crate on candle's thread count.
pub fn gemm_rows(
    lhs: &[f32],
    m: usize,
    k: usize,
    lhs_rs: usize,
    rhs: &[f32],
    n: usize,
) -> Vec<f32> {
    assert!(
        m == 0 || (m - 1) * lhs_rs + k <= lhs.len(),
        "gemm_rows: lhs too short"
    );
    assert_eq!(rhs.len(), k * n, "gemm_rows: rhs is not [k, n]");
    let mut dst: Vec<f32> = Vec::with_capacity(m * n);
    let threads = candle_core::utils::get_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every read inside `lhs` and `rhs`; `dst` has room for the m·n
    // values, which gemm writes without reading them (`read_dst` false) before `set_len` exposes them.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            1,
            lhs_rs as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
        dst.set_len(m * n);
    }
    dst
}

/// The banded product's result (rows as [`pack_bands`] stores them, `out_c·block` columns) laid out as
/// `[b, out_c, t, out_freq]`, with `bias[o]` added and the activation applied.
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
    let pt = g.k_time / 2;
    let mut out = vec![0f32; b * out_c * t * g.out_freq];
    let cols = out_c * g.block;
    // One output row is (batch, channel, frame).
    par_rows(&mut out, g.out_freq, |r, dst| {
        let (ti, o, bi) = (r % t, (r / t) % out_c, r / (t * out_c));
        let bias = bias[o];
        for blk in 0..n_blocks {
            let row = (bi * n_blocks + blk) * (t + 2 * pt) + ti;
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
