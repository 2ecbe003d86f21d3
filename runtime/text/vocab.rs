//! Tokenizer description as GGUF metadata carries it (`tokenizer.ggml.*`).
//! The GGUF reader fills it; the tokenizer builder consumes it.

#[derive(Debug, Clone, Default)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: "gpt2" (byte-level BPE) or "llama" (SentencePiece-style).
    pub model: String,
    /// `tokenizer.ggml.pre`: pre-tokenizer name (gpt2 models), e.g. "llama-bpe", "qwen2", "smollm".
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type`: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    pub token_types: Option<Vec<i32>>,
    pub merges: Option<Vec<String>>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub eot_token_id: Option<u32>,
    pub unknown_token_id: Option<u32>,
    pub padding_token_id: Option<u32>,
    pub add_bos_token: Option<bool>,
    pub add_eos_token: Option<bool>,
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
}

/// Where a model's tokenizer comes from; the loaders produce it, `text::Tokenizer` consumes it.
#[derive(Debug, Clone)]
pub enum TokenizerSpec {
    /// Built from GGUF metadata.
    Gguf(GgufVocab),
    /// Hugging Face files, as text (the browser has no file system).
    HfJson {
        tokenizer_json: String,
        tokenizer_config_json: Option<String>,
        /// `generation_config.json`, whose `eos_token_id` may list several ids.
        generation_config_json: Option<String>,
    },
}
