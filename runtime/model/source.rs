//! The interface between file loaders and the rest of the runtime.

use super::{config::ModelConfig, DType, HostTensor};
use crate::Result;

/// A model file (or directory) that yields its config and its tensors by
/// canonical name, one at a time, so peak host memory stays near one tensor.
pub trait WeightSource {
    fn config(&self) -> &ModelConfig;
    fn has_tensor(&self, name: &str) -> bool;
    /// `HearthError::MissingTensor` when absent.
    fn tensor(&self, name: &str) -> Result<HostTensor<'_>>;
    /// Format and shape (PyTorch order) without touching the data, which a
    /// Blob-backed file would have to read; errors as [`WeightSource::tensor`].
    fn tensor_meta(&self, name: &str) -> Result<(DType, Vec<usize>)>;
}
