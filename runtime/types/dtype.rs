//! Weight storage formats, named as GGUF names them.

use crate::{HearthError, Result};

/// Element or block formats a weight can be stored in, on the host and on the GPU.
/// Quantized formats follow GGUF's block semantics (32 elements per block,
/// 256 per super-block for the K-quants). Q5_0, Q5_1, Q4_K, Q5_K and Q6_K are
/// read from files but not produced ([`DType::can_quantize`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)] // ggml's names: Q4_K, not Q4K
pub enum DType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4_K,
    Q5_K,
    Q6_K,
}

impl DType {
    /// Elements per block (1 for plain floats).
    pub fn block_elems(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 => 1,
            DType::Q8_0 | DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 => 32,
            DType::Q4_K | DType::Q5_K | DType::Q6_K => 256,
        }
    }

    /// Bytes per block in the GGUF (host) byte layout.
    pub fn block_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Q8_0 => 34,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q5_0 => 22,
            DType::Q5_1 => 24,
            DType::Q4_K => 144,
            DType::Q5_K => 176,
            DType::Q6_K => 210,
        }
    }

    pub fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }

    /// Bytes that `n` elements take in the host layout; errors if `n` is not a
    /// whole number of blocks or the size overflows.
    pub fn bytes_for(self, n: usize) -> Result<usize> {
        let be = self.block_elems();
        if !n.is_multiple_of(be) {
            return Err(HearthError::InvalidFile(format!(
                "{n} elements is not a multiple of the {self:?} block size {be}"
            )));
        }
        (n / be).checked_mul(self.block_bytes()).ok_or_else(|| {
            HearthError::InvalidFile(format!("tensor size overflows ({n} elements)"))
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::Q8_0 => "q8_0",
            DType::Q4_0 => "q4_0",
            DType::Q4_1 => "q4_1",
            DType::Q5_0 => "q5_0",
            DType::Q5_1 => "q5_1",
            DType::Q4_K => "q4_k",
            DType::Q5_K => "q5_k",
            DType::Q6_K => "q6_k",
        }
    }

    /// Whether [`crate::quant::quantize`] can produce this format (the
    /// others are only read from files).
    pub fn can_quantize(self) -> bool {
        !matches!(self, DType::Q5_0 | DType::Q5_1 | DType::Q5_K)
    }

    /// The format a matrix with rows of `cols` elements gets when `self` is
    /// the requested target: the K-quants need whole 256-element
    /// super-blocks, so shorter or ragged rows fall back to Q4_1 (for Q4_K)
    /// or Q8_0 (for Q6_K), as llama.cpp falls back to other types for them.
    pub fn target_for(self, cols: usize) -> DType {
        match self {
            DType::Q4_K | DType::Q6_K if !cols.is_multiple_of(256) => {
                if self == DType::Q4_K {
                    DType::Q4_1
                } else {
                    DType::Q8_0
                }
            }
            d => d,
        }
    }

    /// Whether `--dtype self` converts a matrix stored as `source`: float
    /// matrices always; quantized ones only to a float form (dequantizing
    /// is exact, requantizing would add a second rounding).
    pub fn converts(self, source: DType) -> bool {
        !source.is_quantized() || !self.is_quantized()
    }

    /// A format [`DType::can_quantize`] produces, by name.
    pub fn parse(s: &str) -> Result<DType> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" => DType::F32,
            "f16" => DType::F16,
            "bf16" => DType::BF16,
            "q8_0" | "q8" => DType::Q8_0,
            "q4_0" => DType::Q4_0,
            "q4_1" => DType::Q4_1,
            "q4_k" => DType::Q4_K,
            "q6_k" => DType::Q6_K,
            other => {
                return Err(HearthError::InvalidRequest(format!(
                "unknown dtype `{other}` (expected f32, f16, bf16, q8_0, q4_0, q4_1, q4_k or q6_k)"
            )))
            }
        })
    }
}
