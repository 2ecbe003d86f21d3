//! Options as JavaScript passes them, with OpenAI's names.

use hearth::engine::{Drafting, Request, SamplingParams};
use hearth::structured::tools::{openai, ToolChoice};
use hearth::structured::{Constraint, ResponseFormat};
use hearth::{HearthError, Prompt};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadOptions {
    pub no_f16: bool,
    pub no_subgroups: bool,
    pub web_subgroups: bool,
    pub kv_memory_mib: Option<u32>,
    /// KV cache element type: "f16" (default), "q8", "q4" or "f32".
    pub kv_dtype: Option<String>,
}

/// `stop` may be one string or a list, as in OpenAI's API.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenOptions {
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub min_p: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Option<Stop>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub ignore_eos: bool,
    /// Speculative decoding: "ngram" (prompt lookup), "model" (the draft
    /// model of `attach_draft`) or "off" (default).
    pub draft: Option<Drafting>,
    /// OpenAI's `response_format`: `{type: "json_object"}` or
    /// `{type: "json_schema", json_schema: {name, schema}}`.
    pub response_format: Option<serde_json::Value>,
    /// A grammar in llama.cpp's GBNF the output must match.
    pub grammar: Option<String>,
    /// OpenAI's `tools`: `[{type: "function", function: {name, description, parameters}}]`.
    pub tools: Option<Vec<serde_json::Value>>,
    /// `"auto"` (default), `"none"`, `"required"` or `{type: "function", function: {name}}`.
    pub tool_choice: Option<serde_json::Value>,
    /// More than one call per reply (default true).
    pub parallel_tool_calls: Option<bool>,
}

impl GenOptions {
    /// The library request; unset fields take the library's defaults (the
    /// same as every front end but the OpenAI server), and its validation
    /// checks the values, the same for every host.
    pub fn to_request(&self, prompt: Prompt) -> Result<Request, HearthError> {
        let d = Request::default();
        let s = SamplingParams::default();
        let mut constraint = match &self.response_format {
            Some(v) => ResponseFormat::from_value(v)?.constraint()?,
            None => None,
        };
        if let Some(g) = &self.grammar {
            if constraint.is_some() {
                return Err(HearthError::InvalidField {
                    field: "grammar".into(),
                    message: "give either response_format or grammar, not both".into(),
                });
            }
            constraint = Some(Constraint::Gbnf(g.clone()));
        }
        let tools = openai::tools(self.tools.as_deref().unwrap_or(&[]))?;
        let tool_choice = match &self.tool_choice {
            Some(v) => openai::tool_choice(v, &tools)?,
            None => ToolChoice::Auto,
        };
        Ok(Request {
            prompt,
            tools,
            tool_choice,
            parallel_tool_calls: self.parallel_tool_calls.unwrap_or(true),
            sampling: SamplingParams {
                temperature: self.temperature.unwrap_or(s.temperature),
                top_k: self.top_k.map_or(s.top_k, |k| k as usize),
                top_p: self.top_p.unwrap_or(s.top_p),
                min_p: self.min_p.unwrap_or(s.min_p),
                repetition_penalty: self.repetition_penalty.unwrap_or(s.repetition_penalty),
                presence_penalty: self.presence_penalty.unwrap_or(s.presence_penalty),
                frequency_penalty: self.frequency_penalty.unwrap_or(s.frequency_penalty),
                seed: self.seed,
            },
            max_tokens: self.max_tokens.map(|m| m as usize).or(d.max_tokens),
            stop: match &self.stop {
                None => Vec::new(),
                Some(Stop::One(s)) => vec![s.clone()],
                Some(Stop::Many(v)) => v.clone(),
            },
            ignore_eos: self.ignore_eos,
            draft: Some(self.draft.unwrap_or_default()),
            constraint,
            ..d
        })
    }
}
