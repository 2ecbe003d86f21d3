//! The request body both endpoints deserialize: every field a client may
//! send, so that serde's `deny_unknown_fields` turns any other into a 400
//! that names it.

use serde::Deserialize;

/// The union of both endpoints' fields; [`super::validate`] rejects the
/// other endpoint's own fields as unrecognized.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestBody {
    pub model: String,
    // Chat only.
    pub(super) messages: Option<Vec<Message>>,
    pub(super) max_completion_tokens: Option<i64>,
    pub(super) top_logprobs: Option<i64>,
    pub(super) tools: Option<Vec<serde_json::Value>>,
    pub(super) tool_choice: Option<serde_json::Value>,
    pub(super) parallel_tool_calls: Option<bool>,
    // Completions only.
    pub(super) prompt: Option<PromptField>,
    pub(super) echo: Option<bool>,
    pub(super) suffix: Option<String>,
    pub(super) best_of: Option<i64>,
    // Both.
    /// Structured output: `text`, `json_object` or `json_schema`, parsed
    /// by the library's `hearth::structured::ResponseFormat`.
    pub(super) response_format: Option<serde_json::Value>,
    /// llama.cpp's: a GBNF grammar the output must match.
    pub(super) grammar: Option<String>,
    pub(super) max_tokens: Option<i64>,
    pub(super) temperature: Option<f64>,
    pub(super) top_p: Option<f64>,
    pub(super) n: Option<i64>,
    pub(super) stream: Option<bool>,
    pub(super) stream_options: Option<StreamOptions>,
    pub(super) stop: Option<Stop>,
    pub(super) seed: Option<i128>,
    pub(super) presence_penalty: Option<f64>,
    pub(super) frequency_penalty: Option<f64>,
    /// Chat: a boolean; completions: how many alternatives per token.
    pub(super) logprobs: Option<serde_json::Value>,
    pub(super) logit_bias: Option<serde_json::Map<String, serde_json::Value>>,
    #[allow(dead_code)] // accepted: end-user ids are the client's bookkeeping
    pub(super) user: Option<String>,
    // vLLM's extras.
    pub(super) top_k: Option<i64>,
    pub(super) min_p: Option<f64>,
    pub(super) repetition_penalty: Option<f64>,
    pub(super) ignore_eos: Option<bool>,
    // Hearth's own: speculative decoding, "ngram", "model" (the server's
    // --draft-model) or "off".
    pub(super) draft: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Message {
    pub(super) role: String,
    #[serde(default)]
    pub(super) content: Option<Content>,
    /// Passed to the template (tool messages: the function's name).
    pub(super) name: Option<String>,
    /// An assistant message's calls.
    pub(super) tool_calls: Option<Vec<serde_json::Value>>,
    /// A tool message: the call it answers.
    pub(super) tool_call_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub(super) struct ContentPart {
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamOptions {
    pub(super) include_usage: Option<bool>,
    /// vLLM's: usage on every chunk. Accepted; Hearth reports usage once, at the end.
    #[allow(dead_code)]
    pub(super) continuous_usage_stats: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum PromptField {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<i64>),
    IdsBatch(Vec<Vec<i64>>),
}
