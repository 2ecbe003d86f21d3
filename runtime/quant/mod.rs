//! Block formats: CPU conversion to and from GGUF's byte layouts.

pub mod blocks;
pub mod pack;

use crate::types::{DType, HostTensor};
use crate::{HearthError, Result};

pub use blocks::quantize;

/// Converts `n` elements stored as `dtype` (GGUF byte layout) to f32.
pub fn dequantize(dtype: DType, data: &[u8], n: usize) -> Result<Vec<f32>> {
    // Size checked against the data before allocating, so a bogus `n` cannot allocate.
    let need = dtype.bytes_for(n)?;
    if data.len() < need {
        return Err(HearthError::InvalidFile(format!(
            "{} data holds {} bytes, {need} needed for {n} elements",
            dtype.name(),
            data.len()
        )));
    }
    let mut out = vec![0.0f32; n];
    blocks::dequantize_into(dtype, data, &mut out)?;
    Ok(out)
}

// Defined here rather than beside `HostTensor` so that `types`, which every
// layer imports, imports nothing above it.
impl HostTensor<'_> {
    /// Dequantized/converted copy as f32 (for the CPU reference and for re-quantization).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        dequantize(self.dtype, &self.data, self.numel())
    }
}
