//! A linear layer tuned for token-by-token decoding on the CPU.
//!
//! Each decoding step multiplies 2 rows (conditional and null-text under guidance) by every weight matrix:
//! the cost is streaming the weights from memory once. candle's general matmul packs the whole weight
//! matrix for such a product, reading and writing it again; here, for a handful of rows on the CPU, each
//! weight row is read once and dotted with every input row (parallel over output features). Larger inputs
//! (the prompt prefill, tests' teacher forcing) and other devices use candle's matmul. Only the summation
//! order differs from the matmul path (≈1e-7 relative).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Module, Result, Shape, Tensor};
use rayon::prelude::*;

/// Inputs with at most this many rows take the row-streaming path.
const MAX_STREAM_ROWS: usize = 4;
/// Output features per parallel task.
const BLOCK: usize = 32;

/// `y = x Wᵀ + b` with `W` stored `[out, in]` as in the checkpoints.
#[derive(Debug, Clone)]
pub struct Linear {
    inner: candle_nn::Linear,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            inner: candle_nn::Linear::new(weight, bias),
        }
    }

    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.inner.weight();
        let dims = x.dims().to_vec();
        let k = *dims.last().unwrap_or(&0);
        let rows = if k == 0 { 0 } else { x.elem_count() / k };
        let streamable = x.device().is_cpu()
            && x.dtype() == DType::F32
            && w.dtype() == DType::F32
            && w.is_contiguous()
            && rows > 0
            && rows <= MAX_STREAM_ROWS;
        if !streamable {
            return self.inner.forward(x);
        }
        let x2 = x.reshape((rows, k))?.contiguous()?;
        let y = x2.apply_op2_no_bwd(w, &RowsTimesWeightT)?;
        let y = match self.inner.bias() {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out_dims = dims;
        if let Some(last) = out_dims.last_mut() {
            *last = w.dim(0)?;
        }
        y.reshape(out_dims)
    }
}

/// `x [rows, k] · Wᵀ` for `W [n, k]`, both contiguous f32.
struct RowsTimesWeightT;

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    let mut s = (acc[0] + acc[4]) + (acc[1] + acc[5]) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("rows-times-weight needs contiguous inputs"),
    }
}

impl CustomOp2 for RowsTimesWeightT {
    fn name(&self) -> &'static str {
        "rows-times-weight-t"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, k) = l1.shape().dims2()?;
        let (n, k2) = l2.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("rows-times-weight: inner dims {k} vs {k2}");
        }
        let x = contiguous(s1, l1)?;
        let w = contiguous(s2, l2)?;
        // out_t[o][r], filled in parallel blocks of output features
        let mut out_t = vec![0f32; n * rows];
        out_t
            .par_chunks_mut(rows * BLOCK)
            .enumerate()
            .for_each(|(bi, chunk)| {
                for (oi, vals) in chunk.chunks_mut(rows).enumerate() {
                    let o = bi * BLOCK + oi;
                    let wrow = &w[o * k..(o + 1) * k];
                    for (r, v) in vals.iter_mut().enumerate() {
                        *v = dot(wrow, &x[r * k..(r + 1) * k]);
                    }
                }
            });
        let mut out = vec![0f32; rows * n];
        for o in 0..n {
            for r in 0..rows {
                out[r * n + o] = out_t[o * rows + r];
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, n))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn streaming_path_matches_matmul() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (37, 101), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 37, &dev).unwrap();
        let lin = Linear::new(w.clone(), Some(b.clone()));
        for shape in [(1usize, 1usize), (2, 1), (1, 3), (2, 2), (3, 5)] {
            let x = Tensor::randn(0f32, 1.0, (shape.0, shape.1, 101), &dev).unwrap();
            let got = lin.forward(&x).unwrap();
            let want = x
                .broadcast_matmul(&w.t().unwrap())
                .unwrap()
                .broadcast_add(&b)
                .unwrap();
            assert_eq!(got.dims(), &[shape.0, shape.1, 37]);
            let err = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(err < 1e-4, "{shape:?}: {err}");
        }
    }
}
