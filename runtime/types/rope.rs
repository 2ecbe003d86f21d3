//! The RoPE pair layout: the model config names it, the RoPE kernel applies it.

use serde::{Deserialize, Serialize};

/// Which dimensions RoPE rotates together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RopeLayout {
    /// Pairs (2i, 2i+1): GGUF `llama` files, whose Q/K rows were permuted on conversion.
    Interleaved,
    /// Pairs (i, i + d/2): Hugging Face checkpoints and GGUF `qwen2` (NeoX style).
    HalfSplit,
}
