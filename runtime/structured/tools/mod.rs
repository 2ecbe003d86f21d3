//! Tool calling (OpenAI's `tools` / `tool_choice`), written once for every
//! front end: the tools go into the prompt the way the model's chat template
//! expects them ([`render`]), `tool_choice` `required` or a named function
//! becomes a grammar the output must follow ([`grammar`]), and the output is
//! parsed back into calls, whole or as a stream of OpenAI-shaped deltas
//! ([`parse`]).
//!
//! The call syntax is the model's own, detected from its template
//! ([`ToolFormat::detect`]): Hermes/Qwen (`<tool_call>{...}</tool_call>`),
//! Llama 3.1/3.2 (`{"name": ..., "parameters": {...}}`, maybe after
//! `<|python_tag|>`) or Mistral (`[TOOL_CALLS][{...}]`). A template that
//! knows no tools gets the [`ToolFormat::Generic`] treatment: an instruction
//! listing the tools in the system message, and Hermes syntax.

mod grammar;
pub mod openai;
mod parse;
mod render;

pub use grammar::tool_grammar;
pub use parse::{parse_tool_calls, ToolCallDelta, ToolDelta, ToolParser};
pub use render::{
    generic_instruction, prepare_messages, py_json, template_message, template_tools,
};

use serde::{Deserialize, Serialize};

use crate::api::Prompt;
use crate::engine::Request;
use crate::structured::{Constraint, ConstraintCompiler};
use crate::text::chat::ChatTemplate;
use crate::text::Tokenizer;
use crate::{HearthError, Result};

/// A function the model may call: OpenAI's `function` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema of the arguments object.
    #[serde(default = "empty_object")]
    pub parameters: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({"type": "object", "properties": {}})
}

impl Tool {
    pub fn new(name: &str, description: Option<&str>, parameters: serde_json::Value) -> Tool {
        Tool {
            name: name.to_string(),
            description: description.map(str::to_string),
            parameters,
        }
    }
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// The model decides; the output is parsed after the fact.
    #[default]
    Auto,
    /// No call: the tools are left out of the prompt.
    None,
    /// At least one call (exactly one without parallel calls), forced by a grammar.
    Required,
    /// One call of this function, forced by a grammar.
    Function(String),
}

impl ToolChoice {
    /// Whether the output is forced to be calls.
    pub fn forces(&self) -> bool {
        matches!(self, ToolChoice::Required | ToolChoice::Function(_))
    }
}

/// A call the model made; `arguments` is JSON text, as OpenAI sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// OpenAI's wire shape: `{"id", "type": "function", "function": {"name", "arguments"}}`.
#[derive(Serialize, Deserialize)]
struct WireCall {
    #[serde(default)]
    id: String,
    #[serde(rename = "type", default = "function_type")]
    kind: String,
    function: WireFunction,
}

#[derive(Serialize, Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: String,
}

fn function_type() -> String {
    "function".into()
}

impl Serialize for ToolCall {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        WireCall {
            id: self.id.clone(),
            kind: function_type(),
            function: WireFunction {
                name: self.name.clone(),
                arguments: self.arguments.clone(),
            },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ToolCall {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let w = WireCall::deserialize(d)?;
        Ok(ToolCall {
            id: w.id,
            name: w.function.name,
            arguments: w.function.arguments,
        })
    }
}

/// How a model writes its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolFormat {
    /// Hermes, Qwen2.5, Qwen3: `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`.
    Hermes,
    /// Llama 3.1/3.2: `{"name": ..., "parameters": {...}}`, optionally after `<|python_tag|>`.
    Llama3,
    /// Mistral: `[TOOL_CALLS][{"name": ..., "arguments": {...}}]`.
    Mistral,
    /// Templates without tools: the tools are listed in the system message
    /// and the model is asked for Hermes syntax.
    Generic,
}

impl ToolFormat {
    /// The format a chat template's source implies.
    pub fn detect(template_source: &str) -> ToolFormat {
        let has = |s: &str| template_source.contains(s);
        if has("<tool_call>") {
            ToolFormat::Hermes
        } else if has("[TOOL_CALLS]") {
            ToolFormat::Mistral
        } else if has("<|python_tag|>") || (has("<|start_header_id|>") && has("tools")) {
            ToolFormat::Llama3
        } else {
            ToolFormat::Generic
        }
    }

    /// Whether the template renders `tools` and `tool_calls` itself.
    pub fn template_native(self) -> bool {
        self != ToolFormat::Generic
    }

    /// The key the arguments go under.
    pub fn arguments_key(self) -> &'static str {
        match self {
            ToolFormat::Llama3 => "parameters",
            _ => "arguments",
        }
    }
}

fn field(name: &str, message: impl Into<String>) -> HearthError {
    HearthError::InvalidField {
        field: name.to_string(),
        message: message.into(),
    }
}

/// Checks `tools` and `tool_choice`; the error names the field
/// (`tools` or `tool_choice`) and the problem.
pub fn validate(tools: &[Tool], choice: &ToolChoice) -> Result<()> {
    for (i, t) in tools.iter().enumerate() {
        if t.name.is_empty() {
            return Err(field("tools", format!("tool {i} has an empty name")));
        }
        if !t
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        {
            return Err(field(
                "tools",
                format!(
                    "tool {i}: the name `{}` may only hold letters, digits, `_`, `-` and `.`",
                    t.name
                ),
            ));
        }
        if tools[..i].iter().any(|o| o.name == t.name) {
            return Err(field(
                "tools",
                format!("tool {i}: the name `{}` is used twice", t.name),
            ));
        }
        if !t.parameters.is_object() {
            return Err(field(
                "tools",
                format!(
                    "tool {i} (`{}`): `parameters` must be a JSON Schema object",
                    t.name
                ),
            ));
        }
    }
    match choice {
        ToolChoice::Required if tools.is_empty() => Err(field(
            "tool_choice",
            "`required` needs at least one tool in `tools`",
        )),
        ToolChoice::Function(name) if !tools.iter().any(|t| &t.name == name) => Err(field(
            "tool_choice",
            format!("the function `{name}` is not among the tools"),
        )),
        _ => Ok(()),
    }
}

/// Call ids: `call_` and 24 letters and digits from a request's seed and a
/// counter (Mistral templates want exactly 9 letters and digits).
pub fn call_id(format: ToolFormat, seed: u64, index: usize) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut s = seed
        .wrapping_add((index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_mul(0xD134_2543_DE82_EF95)
        | 1;
    let len = if format == ToolFormat::Mistral { 9 } else { 24 };
    let chars: String = (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ABC[(s % ABC.len() as u64) as usize] as char
        })
        .collect();
    if format == ToolFormat::Mistral {
        chars
    } else {
        format!("call_{chars}")
    }
}

/// The chat prompt with `tools`, as `template` wants them (tools left out
/// with `tool_choice` none).
pub fn render_chat(
    template: &ChatTemplate,
    messages: &[crate::text::ChatMessage],
    tools: &[Tool],
    choice: &ToolChoice,
) -> Result<String> {
    let format = template.tool_format();
    let tools = if *choice == ToolChoice::None {
        &[][..]
    } else {
        tools
    };
    if tools.is_empty() && !messages.iter().any(|m| !m.tool_calls.is_empty()) {
        return template.render(messages, true);
    }
    let messages = prepare_messages(format, messages, tools);
    if format.template_native() {
        template.render_with_tools(&messages, tools, true)
    } else {
        template.render(&messages, true)
    }
}

/// What the engine does with a request's tools before it queues it: the
/// chat prompt rendered with them (the request's prompt becomes those ids)
/// and, for `required` or a named function, the grammar set as its
/// constraint (compiled with `compiler` when given, so that a bad schema is
/// an error now). Afterwards the request's `tool_choice` is `Auto`: the
/// forcing lives in the constraint, and preparing again changes nothing.
/// Returns the prompt's ids.
pub fn prepare_request(
    req: &mut Request,
    tokenizer: &Tokenizer,
    template: Option<&ChatTemplate>,
    compiler: Option<&ConstraintCompiler>,
) -> Result<Vec<u32>> {
    prepare_request_bounded(req, tokenizer, template, compiler, usize::MAX)
}

/// [`prepare_request`], refusing a prompt whose text (after the chat
/// template) is longer than `max_text_bytes` before tokenizing it: an
/// `InvalidField` naming `prompt`.
pub fn prepare_request_bounded(
    req: &mut Request,
    tokenizer: &Tokenizer,
    template: Option<&ChatTemplate>,
    compiler: Option<&ConstraintCompiler>,
    max_text_bytes: usize,
) -> Result<Vec<u32>> {
    validate_request(&req.tools, &req.tool_choice, req.constraint.as_ref())?;
    let uses_tools = !req.tools.is_empty() && req.tool_choice != ToolChoice::None;
    let template_or_err = || {
        template
            .ok_or_else(|| HearthError::Template("the model has no usable chat template".into()))
    };
    // The text to tokenize and whether the tokenizer adds BOS (a template
    // writes it itself where the model wants one).
    let (text, add_special) = match &req.prompt {
        Prompt::Chat(messages) if uses_tools || messages.iter().any(|m| m.has_tool_fields()) => (
            render_chat(template_or_err()?, messages, &req.tools, &req.tool_choice)?,
            false,
        ),
        Prompt::Chat(messages) => (template_or_err()?.render(messages, true)?, false),
        Prompt::Text(t) => (t.clone(), true),
        Prompt::Ids(_) => (String::new(), false),
    };
    if text.len() > max_text_bytes {
        return Err(field(
            "prompt",
            format!(
                "the prompt is {} bytes of text, more than the {max_text_bytes} that can fit in \
                 the model's context",
                text.len()
            ),
        ));
    }
    let ids = match &req.prompt {
        Prompt::Ids(ids) => ids.clone(),
        _ => tokenizer.encode(&text, add_special)?,
    };
    if ids.is_empty() {
        return Err(field("prompt", "the prompt is empty (no tokens)"));
    }
    if req.tool_choice.forces() {
        let format = template.map_or(ToolFormat::Generic, ChatTemplate::tool_format);
        let c = tool_grammar(
            format,
            &req.tools,
            &req.tool_choice,
            req.parallel_tool_calls,
            Some(tokenizer),
        );
        if let Some(comp) = compiler {
            comp.compile(&c).map_err(|e| match e {
                HearthError::InvalidField { message, .. } => field(
                    "tools",
                    format!("the tools' parameters do not compile: {message}"),
                ),
                e => e,
            })?;
        }
        req.constraint = Some(c);
        req.tool_choice = ToolChoice::Auto;
    }
    req.prompt = Prompt::Ids(ids.clone());
    Ok(ids)
}

impl crate::Engine {
    /// How this engine's model writes tool calls (from its chat template;
    /// the generic format without one): what front ends parse outputs with.
    pub fn tool_format(&self) -> ToolFormat {
        self.template
            .as_ref()
            .map_or(ToolFormat::Generic, ChatTemplate::tool_format)
    }

    /// A request's prompt ids, its tools applied ([`prepare_request`]; a
    /// forced call's grammar is compiled now, so a bad schema is an error
    /// of the submit, naming `tools`).
    pub(crate) fn request_prompt_ids(&mut self, req: &mut Request) -> Result<Vec<u32>> {
        let compiler = if req.tool_choice.forces() {
            Some(self.constraint_compiler()?.clone())
        } else {
            None
        };
        prepare_request(
            req,
            &self.tokenizer,
            self.template.as_ref(),
            compiler.as_ref(),
        )
    }
}

/// Shorthand for a [`Constraint`] check in [`Request::validate`].
pub(crate) fn validate_request(
    tools: &[Tool],
    choice: &ToolChoice,
    constraint: Option<&Constraint>,
) -> Result<()> {
    validate(tools, choice)?;
    if choice.forces() && constraint.is_some() {
        return Err(field(
            "tool_choice",
            format!(
                "a forced tool call (`{}`) cannot be combined with a {} constraint",
                match choice {
                    ToolChoice::Function(n) => n.as_str(),
                    _ => "required",
                },
                constraint.map_or("", Constraint::kind)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
