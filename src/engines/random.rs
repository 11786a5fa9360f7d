//! Random weights of the right shapes, for benchmarks and smoke tests of full-size models
//! without a download (`benches/musicgen.rs`, `benches/separate.rs`, the GPU check): the output is
//! noise, the speed is the real model's.

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

/// Serves every weight the model asks for as fresh random values: scaled normal matrices (std
/// `1/sqrt(fan_in)`), unit norm scales and weight-norm gains, zero biases. For benchmarks and smoke tests
/// of full-size shapes without a download; the output is noise, the speed is the real model's.
/// The names are PyTorch's: weight-norm gains are `weight_g` (or `original0`), and a
/// `parametrizations` key is reported absent, so a loader takes the published layout.
struct RandomWeights;

impl SimpleBackend for RandomWeights {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let dims = s.dims().to_vec();
        let leaf = name.rsplit('.').next().unwrap_or(name);
        let t = if leaf == "weight_g" || leaf == "original0" {
            Tensor::ones(s, DType::F32, dev)?
        } else if dims.len() >= 2 {
            let fan_in: usize = dims[1..].iter().product();
            Tensor::randn(0f32, 1.0 / (fan_in.max(1) as f32).sqrt(), s, dev)?
        } else if leaf == "weight" {
            Tensor::ones(s, DType::F32, dev)?
        } else {
            Tensor::zeros(s, DType::F32, dev)?
        };
        t.to_dtype(dtype)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights need a shape for {name}")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        // answer for the published key names (weight-norm as `weight_g`, T5's `shared` embedding)
        !name.contains("parametrizations")
    }
}

/// A `VarBuilder` of random weights in `dtype` on `device` (see `RandomWeights`).
pub fn random_weights(dtype: DType, device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(RandomWeights), dtype, device.clone())
}
