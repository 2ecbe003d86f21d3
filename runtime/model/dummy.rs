//! Random weights with a real model's shapes and formats, for benchmarking a
//! model without its weights (vLLM calls this `--load-format dummy`). Speed
//! does not depend on the values, so a GGUF cut off after its tensor table
//! (a few MiB: tokenizer, template, shapes) stands in for the whole file,
//! e.g. on a machine the weights cannot reach.
//!
//! Matrices get values uniform in ±0.0346 (standard deviation 0.02, as
//! random-initialised models use) stored in the tensor's own format; norm
//! weights are 1, so activations stay finite and every kernel runs on the
//! data shapes it would see. The text generated is meaningless.

use std::borrow::Cow;

use super::{DType, HostTensor, ModelConfig, WeightSource};
use crate::{HearthError, Result};

/// Most elements one dummy tensor may have: its values are made in f32
/// first, so this bounds that allocation (16 GiB) whatever a file claims.
const MAX_ELEMENTS: u64 = 1 << 32;
const HALF_RANGE: f32 = 0.0346;

pub struct DummyWeights {
    inner: Box<dyn WeightSource>,
}

impl DummyWeights {
    /// Keeps `inner`'s config, names, formats and shapes; never reads its data.
    pub fn new(inner: Box<dyn WeightSource>) -> Self {
        DummyWeights { inner }
    }
}

/// Deterministic per tensor name (FNV-1a), so two runs upload the same bytes.
fn seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    }) | 1
}

/// `n` values uniform in ±HALF_RANGE (xorshift64).
pub fn dummy_values(name: &str, n: usize) -> Vec<f32> {
    let mut s = seed(name);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * HALF_RANGE
        })
        .collect()
}

impl WeightSource for DummyWeights {
    fn config(&self) -> &ModelConfig {
        self.inner.config()
    }

    fn has_tensor(&self, name: &str) -> bool {
        self.inner.has_tensor(name)
    }

    fn tensor_meta(&self, name: &str) -> Result<(DType, Vec<usize>)> {
        self.inner.tensor_meta(name)
    }

    fn tensor(&self, name: &str) -> Result<HostTensor<'_>> {
        let (dtype, shape) = self.inner.tensor_meta(name)?;
        let n = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
            .filter(|&n| n <= MAX_ELEMENTS)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| {
                HearthError::Unsupported(format!(
                    "dummy weights for `{name}` {shape:?}: more elements than this machine makes at once ({MAX_ELEMENTS} at most)"
                ))
            })?;
        if !dtype.can_quantize() {
            return Err(HearthError::Unsupported(format!(
                "dummy weights for `{name}`: Hearth reads {} but cannot write it; \
                 benchmark a file whose matrices are F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q4_K/Q6_K",
                dtype.name()
            )));
        }
        let values = if shape.len() == 1 && name.contains("norm") {
            vec![1.0; n]
        } else {
            dummy_values(name, n)
        };
        Ok(HostTensor {
            name: name.to_string(),
            dtype,
            shape,
            data: Cow::Owned(crate::quant::quantize(dtype, &values)?),
        })
    }
}
