//! What the engine hands back: per-step outputs of the steppable core, and
//! the summary of one [`crate::Engine::generate`] call.

use super::request::FinishReason;
use super::speculative::SpecStats;
use crate::HearthError;

/// The engine's id of a request (all its choices).
pub type RequestId = u64;

/// One generated token.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub id: u32,
    /// Text that became final with this token (may be empty while UTF-8 or a
    /// possible stop string is incomplete).
    pub text: String,
    /// The top-`logprobs` candidates as `(token id, natural-log probability)`,
    /// best first (empty without `logprobs`).
    pub top_logprobs: Vec<(u32, f32)>,
}

/// How a choice ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finish {
    pub reason: FinishReason,
    pub prompt_tokens: usize,
    /// Of `prompt_tokens`, those whose K/V the prefix cache served when the
    /// request was admitted (whole KV blocks of an earlier prompt that this
    /// one starts with), so its prefill computed `prompt_tokens -
    /// cached_tokens`. A sequence preempted later is recomputed in full; this
    /// still counts its first admission.
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    /// Drafted and accepted tokens (speculative decoding).
    pub spec: SpecStats,
}

/// One thing a step produced.
#[derive(Debug, Clone)]
pub enum Output {
    Token {
        request: RequestId,
        choice: usize,
        token: Token,
    },
    /// Choice `choice` is over; when every choice of a request is, the
    /// request is gone from the engine and its blocks are free.
    Finished {
        request: RequestId,
        choice: usize,
        finish: Finish,
    },
    /// An embedding request's vector (`hidden_size` floats, pooled and
    /// normalized as the model declares); its `Finished` follows.
    Embedding {
        request: RequestId,
        embedding: Vec<f32>,
    },
    /// The request failed (a failed GPU step, or a queue head the KV cache
    /// can never admit); it is gone from the engine, no more outputs follow.
    Failed {
        request: RequestId,
        error: HearthError,
    },
}

impl Output {
    pub fn request(&self) -> RequestId {
        match self {
            Output::Token { request, .. }
            | Output::Embedding { request, .. }
            | Output::Finished { request, .. }
            | Output::Failed { request, .. } => *request,
        }
    }
}

/// One generated token as [`crate::Engine::generate`]'s callback sees it.
pub struct TokenEvent<'a> {
    pub id: u32,
    pub text: &'a str,
    pub top_logprobs: &'a [(u32, f32)],
}

/// Everything one [`crate::Engine::generate`] call produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    /// Prompt tokens the prefix cache served (see [`Finish::cached_tokens`]).
    pub cached_tokens: usize,
    pub ids: Vec<u32>,
    pub text: String,
    pub top_logprobs: Vec<Vec<(u32, f32)>>,
    pub finish_reason: FinishReason,
    /// From the call to the first token (the prompt's prefill).
    pub prefill_secs: f64,
    /// From the first token to the last.
    pub decode_secs: f64,
    /// Drafted and accepted tokens (speculative decoding).
    pub spec: SpecStats,
}

impl Generation {
    /// Nothing generated yet from `prompt_ids` (what a caller fills in as
    /// the tokens come).
    pub fn started(prompt_ids: Vec<u32>) -> Generation {
        Generation {
            prompt_ids,
            cached_tokens: 0,
            ids: Vec::new(),
            text: String::new(),
            top_logprobs: Vec::new(),
            finish_reason: FinishReason::Length,
            prefill_secs: 0.0,
            decode_secs: 0.0,
            spec: SpecStats::default(),
        }
    }

    pub fn prefill_tok_s(&self) -> f64 {
        self.prompt_ids.len() as f64 / self.prefill_secs.max(1e-9)
    }

    /// Decode rate over the tokens after the first (the first comes out of prefill).
    pub fn decode_tok_s(&self) -> f64 {
        self.ids.len().saturating_sub(1) as f64 / self.decode_secs.max(1e-9)
    }
}

/// The engine's state, for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStats {
    /// Sequences (choices) admitted to the KV cache, and waiting for it.
    pub running: usize,
    pub waiting: usize,
    pub kv_used: u32,
    pub kv_free: u32,
    pub kv_cached: u32,
    pub kv_total: u32,
    /// Blocks the draft model's pool has in use (0 without a draft model).
    pub draft_kv_used: u32,
    pub prefix_query_tokens: u64,
    pub prefix_hit_tokens: u64,
    pub prefix_evictions: u64,
    pub preemptions: u64,
    /// Choices that ended cancelled (aborted, or their stream dropped).
    pub cancelled: u64,
}
