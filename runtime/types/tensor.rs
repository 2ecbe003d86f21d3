//! Host-side tensors as they come out of a model file, before they go to the GPU.

use std::borrow::Cow;

use super::DType;
use crate::{HearthError, Result};

/// A tensor borrowed from (or decoded out of) a model file.
/// `shape` is row-major, outermost first, as PyTorch writes it: a linear
/// layer's weight is `[out_features, in_features]`; GGUF's reversed dims are
/// turned around by the GGUF reader.
#[derive(Debug, Clone)]
pub struct HostTensor<'a> {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Cow<'a, [u8]>,
}

impl HostTensor<'_> {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// `[rows, cols]` for a 2-D tensor, `[1, n]` for a vector.
    pub fn rows_cols(&self) -> (usize, usize) {
        match self.shape.as_slice() {
            [n] => (1, *n),
            [r, c] => (*r, *c),
            _ => (
                self.shape[..self.shape.len() - 1].iter().product(),
                *self.shape.last().unwrap_or(&1),
            ),
        }
    }

    pub fn expect_shape(&self, expected: &[usize]) -> Result<()> {
        if self.shape != expected {
            return Err(HearthError::ShapeMismatch {
                name: self.name.clone(),
                expected: expected.to_vec(),
                found: self.shape.clone(),
            });
        }
        Ok(())
    }
}
