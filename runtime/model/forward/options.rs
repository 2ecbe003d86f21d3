//! How a model is laid out on the GPU, and what loading it reports.

use crate::kv::KvDtype;
use crate::types::DType;

/// How the model is laid out on the GPU.
#[derive(Debug, Clone)]
pub struct ForwardOptions {
    /// Weight form on the GPU (`None`: as stored in the file; BF16 becomes F16).
    pub dtype: Option<DType>,
    /// Bytes reserved for the paged KV cache.
    pub kv_memory: u64,
    pub kv_dtype: KvDtype,
    pub block_size: u32,
    /// Most token rows in one step (longer prompts are prefilled in chunks).
    pub max_step_tokens: u32,
    /// Most sequences in one step.
    pub max_seqs: u32,
    /// Most rows of one step that get logits (at least `max_seqs`): speculative
    /// verification and perplexity want logits for several rows of one sequence.
    pub max_logit_rows: u32,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        ForwardOptions {
            dtype: None,
            kv_memory: 256 << 20,
            kv_dtype: KvDtype::F16,
            block_size: crate::kv::DEFAULT_BLOCK_SIZE,
            max_step_tokens: 128,
            max_seqs: 1,
            // One token and 7 drafts (SpecOptions' default) per step.
            max_logit_rows: 8,
        }
    }
}

/// Progress while weights stream to the GPU.
#[derive(Debug, Clone, Copy)]
pub struct LoadProgress {
    pub done: usize,
    pub total: usize,
}
