//! Structured output: token masks that keep generation inside a JSON
//! Schema, a regular expression or a grammar. The masks come from
//! `llguidance` (an Earley parser over a token trie; llama.cpp and vLLM use
//! it too); Hearth uploads them with the step and the GPU masks the logits
//! before top-K (see `shaders/logit_mask.wgsl`), so every candidate that
//! comes back is allowed.

mod compiler;
mod gbnf;
mod response_format;
mod tok_env;
pub mod tools;

pub use compiler::{mask_allows, ConstraintCompiler, ConstraintState};
pub use gbnf::gbnf_to_lark;
pub use response_format::{JsonSchemaFormat, ResponseFormat};

use serde::{Deserialize, Serialize};

/// What a request's output must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Constraint {
    /// Any JSON object (OpenAI's `response_format: {"type": "json_object"}`).
    JsonObject,
    /// A JSON Schema (draft 2020-12 subset; unsupported keywords are errors).
    JsonSchema(serde_json::Value),
    /// A regular expression the whole output matches.
    Regex(String),
    /// A grammar in llguidance's Lark syntax (`start` is the start rule;
    /// `%json {schema}` embeds a JSON Schema).
    Lark(String),
    /// A grammar in llama.cpp's GBNF (`root` is the start rule).
    Gbnf(String),
}

impl Constraint {
    /// The name of the kind, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Constraint::JsonObject => "JSON object",
            Constraint::JsonSchema(_) => "JSON schema",
            Constraint::Regex(_) => "regex",
            Constraint::Lark(_) => "Lark grammar",
            Constraint::Gbnf(_) => "GBNF grammar",
        }
    }
}
