//! A [`WeightSource`] view with the matrices converted to another form, as
//! `--dtype` stores them on the GPU. The CPU reference runs on this view to
//! get the exact oracle for a quantized-on-load model.

use std::borrow::Cow;

use super::{DType, HostTensor, ModelConfig, WeightSource};
use crate::Result;

pub struct ConvertedSource<'a> {
    inner: &'a dyn WeightSource,
    dtype: DType,
}

impl<'a> ConvertedSource<'a> {
    /// Matrices (2-D tensors, and stacks of them such as experts) of `inner`
    /// as `dtype` where [`DType::converts`]
    /// says so; vectors (norms, biases) and quantized matrices asked to
    /// become another quantized form stay as they are, matching what the GPU
    /// loader does with `ForwardOptions::dtype`.
    pub fn new(inner: &'a dyn WeightSource, dtype: DType) -> Self {
        ConvertedSource { inner, dtype }
    }
}

/// Vectors, and MoE routers: a router is small and its logits pick the
/// experts, so it stays as stored (llama.cpp's quantizer leaves it alone too,
/// and the GPU forward reads it in f32).
pub fn keeps_form(name: &str, shape: &[usize]) -> bool {
    shape.len() < 2 || name.ends_with("ffn_gate_inp.weight")
}

impl WeightSource for ConvertedSource<'_> {
    fn config(&self) -> &ModelConfig {
        self.inner.config()
    }

    fn has_tensor(&self, name: &str) -> bool {
        self.inner.has_tensor(name)
    }

    fn tensor_meta(&self, name: &str) -> Result<(DType, Vec<usize>)> {
        let (dtype, shape) = self.inner.tensor_meta(name)?;
        if keeps_form(name, &shape) || !self.dtype.converts(dtype) {
            return Ok((dtype, shape));
        }
        Ok((self.dtype.target_for(shape[shape.len() - 1]), shape))
    }

    fn tensor(&self, name: &str) -> Result<HostTensor<'_>> {
        let t = self.inner.tensor(name)?;
        if keeps_form(name, &t.shape) || !self.dtype.converts(t.dtype) {
            return Ok(t);
        }
        let dtype = self.dtype.target_for(t.shape[t.shape.len() - 1]);
        if t.dtype == dtype {
            return Ok(t);
        }
        let data = crate::quant::quantize(dtype, &t.to_f32()?)?;
        Ok(HostTensor {
            name: t.name,
            dtype,
            shape: t.shape,
            data: Cow::Owned(data),
        })
    }
}
