//! Block formats: CPU conversion to and from GGUF's byte layouts.

pub mod pack;

use crate::model::DType;
use crate::{HearthError, Result};

/// Converts `n` elements stored as `dtype` (GGUF byte layout) to f32.
pub fn dequantize(dtype: DType, data: &[u8], n: usize) -> Result<Vec<f32>> {
    let need = dtype.bytes_for(n)?;
    if data.len() < need {
        return Err(HearthError::InvalidFile(format!(
            "{} data holds {} bytes, {need} needed for {n} elements",
            dtype.name(),
            data.len()
        )));
    }
    match dtype {
        DType::F32 => Ok(bytemuck::pod_collect_to_vec::<u8, f32>(&data[..need])),
        _ => Err(HearthError::Unsupported(format!(
            "dequantize {} (not implemented yet)",
            dtype.name()
        ))),
    }
}
