//! Chat's `tools`, `tool_choice` and `parallel_tool_calls`, and the tool
//! fields of messages (assistant `tool_calls`, `tool` results), checked into
//! the library's types; every fault is a 400 naming the field
//! (`tools[0].function.parameters`, `messages[2].tool_calls[0].id`, ...).

use hearth::structured::tools::{openai, Tool, ToolCall, ToolChoice};
use serde_json::Value;

use super::request::RequestBody;
use crate::cmd::serve::errors::ApiError;

/// The request's tools as the engine takes them.
#[derive(Debug, Clone, Default)]
pub struct Tools {
    pub tools: Vec<Tool>,
    pub choice: ToolChoice,
    pub parallel: bool,
}

impl Tools {
    /// Whether the output is to be parsed for calls.
    pub fn active(&self) -> bool {
        !self.tools.is_empty() && self.choice != ToolChoice::None
    }
}

/// Maps the library's field error onto a 400 naming the same field.
fn api(e: hearth::HearthError) -> ApiError {
    match e {
        hearth::HearthError::InvalidField { field, message } => {
            ApiError::invalid_param(&field, message)
        }
        e => ApiError::invalid_param("tools", e.to_string()),
    }
}

/// `tools`, `tool_choice` and `parallel_tool_calls` of a chat request.
pub fn parse(body: &RequestBody) -> Result<Tools, ApiError> {
    let tools = openai::tools(body.tools.as_deref().unwrap_or(&[])).map_err(api)?;
    let choice = match &body.tool_choice {
        None => ToolChoice::Auto,
        Some(v) => openai::tool_choice(v, &tools).map_err(api)?,
    };
    Ok(Tools {
        tools,
        choice,
        parallel: body.parallel_tool_calls.unwrap_or(true),
    })
}

/// An assistant message's `tool_calls` (at `param`).
pub fn message_calls(param: &str, calls: &[Value]) -> Result<Vec<ToolCall>, ApiError> {
    openai::message_tool_calls(param, calls).map_err(api)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::body::parse_json;

    fn tools(json: &str) -> Result<Tools, ApiError> {
        parse(&parse_json::<RequestBody>(json.as_bytes()).unwrap())
    }

    #[test]
    fn tools_and_choices_parse() {
        let t = tools(
            r#"{"model": "m", "tools": [{"type": "function", "function": {"name": "f",
                "description": "d", "parameters": {"type": "object"}}}],
                "tool_choice": {"type": "function", "function": {"name": "f"}},
                "parallel_tool_calls": false}"#,
        )
        .unwrap();
        assert_eq!(t.tools[0].name, "f");
        assert_eq!(t.choice, ToolChoice::Function("f".into()));
        assert!(!t.parallel && t.active());
        let t = tools(r#"{"model": "m", "tools": [{"type": "function", "function": {"name": "g"}}], "tool_choice": "none"}"#).unwrap();
        assert!(!t.active());
    }

    #[test]
    fn faults_name_the_field() {
        let param = |json: &str| tools(json).unwrap_err().param.unwrap_or_default();
        let f = |body: &str| format!(r#"{{"model": "m", "tools": [{body}]}}"#);
        assert_eq!(
            param(&f(r#"{"type": "x", "function": {"name": "f"}}"#)),
            "tools[0].type"
        );
        assert_eq!(param(&f(r#"{"type": "function"}"#)), "tools[0].function");
        assert_eq!(
            param(&f(r#"{"type": "function", "function": {"name": 3}}"#)),
            "tools[0].function.name"
        );
        assert_eq!(
            param(&f(r#"{"type": "function", "function": {"name": "a b"}}"#)),
            "tools[0].function.name"
        );
        assert_eq!(
            param(&f(
                r#"{"type": "function", "function": {"name": "f", "parameters": []}}"#
            )),
            "tools[0].function.parameters"
        );
        assert_eq!(
            param(&f(
                r#"{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}"#
            )),
            "tools[1].function.name"
        );
        assert_eq!(
            param(r#"{"model": "m", "tool_choice": "required"}"#),
            "tool_choice"
        );
        assert_eq!(
            param(r#"{"model": "m", "tool_choice": "sometimes"}"#),
            "tool_choice"
        );
        assert_eq!(
            param(
                r#"{"model": "m", "tool_choice": {"type": "function", "function": {"name": "zz"}}}"#
            ),
            "tool_choice"
        );
        let e = message_calls(
            "messages[1]",
            &[serde_json::json!({"id": "c", "function": {"name": "f", "arguments": {}}})],
        );
        assert_eq!(
            e.unwrap_err().param.as_deref(),
            Some("messages[1].tool_calls[0].function.arguments")
        );
    }
}
