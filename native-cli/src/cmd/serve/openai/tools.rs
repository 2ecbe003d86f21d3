//! Chat's `tools`, `tool_choice` and `parallel_tool_calls`, and the tool
//! fields of messages (assistant `tool_calls`, `tool` results), checked into
//! the library's types; every fault is a 400 naming the field
//! (`tools[0].function.parameters`, `messages[2].tool_calls[0].id`, ...).

use hearth::structured::tools::{Tool, ToolCall, ToolChoice};
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

fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_param(param, message.into())
}

fn tool(i: usize, v: &Value) -> Result<Tool, ApiError> {
    let at = format!("tools[{i}]");
    let obj = v
        .as_object()
        .ok_or_else(|| bad(&at, format!("`{at}` must be an object.")))?;
    for k in obj.keys() {
        if k != "type" && k != "function" {
            return Err(bad(
                &format!("{at}.{k}"),
                format!("Unrecognized request argument supplied: {at}.{k}"),
            ));
        }
    }
    if obj.get("type").and_then(Value::as_str) != Some("function") {
        return Err(bad(
            &format!("{at}.type"),
            format!("`{at}.type` must be `function`."),
        ));
    }
    let f = obj
        .get("function")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            bad(
                &format!("{at}.function"),
                format!("Missing required parameter: `{at}.function`."),
            )
        })?;
    for k in f.keys() {
        if !["name", "description", "parameters", "strict"].contains(&k.as_str()) {
            return Err(bad(
                &format!("{at}.function.{k}"),
                format!("Unrecognized request argument supplied: {at}.function.{k}"),
            ));
        }
    }
    let name = match f.get("name") {
        Some(Value::String(s)) => s.clone(),
        _ => {
            return Err(bad(
                &format!("{at}.function.name"),
                format!("`{at}.function.name` must be a string."),
            ))
        }
    };
    let description = match f.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(bad(
                &format!("{at}.function.description"),
                format!("`{at}.function.description` must be a string."),
            ))
        }
    };
    let parameters = match f.get("parameters") {
        None | Some(Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return Err(bad(
                &format!("{at}.function.parameters"),
                format!("`{at}.function.parameters` must be a JSON Schema object."),
            ))
        }
    };
    let t = Tool {
        name,
        description,
        parameters,
    };
    // The library's own checks of one tool (name characters).
    if let Err(hearth::HearthError::InvalidField { message, .. }) =
        hearth::structured::tools::validate(std::slice::from_ref(&t), &ToolChoice::Auto)
    {
        let param = if message.contains("parameters") {
            "parameters"
        } else {
            "name"
        };
        return Err(bad(&format!("{at}.function.{param}"), message));
    }
    Ok(t)
}

fn choice(v: &Value, tools: &[Tool]) -> Result<ToolChoice, ApiError> {
    let c = match v {
        Value::Null => ToolChoice::Auto,
        Value::String(s) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(bad(
                    "tool_choice",
                    format!(
                        "Invalid value for `tool_choice`: `{other}` (use auto, none, required or \
                         {{\"type\": \"function\", \"function\": {{\"name\": ...}}}})."
                    ),
                ))
            }
        },
        Value::Object(o) => {
            let name = (o.get("type").and_then(Value::as_str) == Some("function"))
                .then(|| o.get("function")?.get("name")?.as_str())
                .flatten()
                .ok_or_else(|| {
                    bad(
                        "tool_choice",
                        "`tool_choice` must name a function as {\"type\": \"function\", \
                         \"function\": {\"name\": ...}}.",
                    )
                })?;
            ToolChoice::Function(name.to_string())
        }
        _ => {
            return Err(bad(
                "tool_choice",
                "`tool_choice` must be a string or an object.",
            ))
        }
    };
    match &c {
        ToolChoice::Required if tools.is_empty() => Err(bad(
            "tool_choice",
            "`tool_choice` `required` needs at least one tool in `tools`.",
        )),
        ToolChoice::Function(n) if !tools.iter().any(|t| &t.name == n) => Err(bad(
            "tool_choice",
            format!("`tool_choice` names the function `{n}`, which is not among the tools."),
        )),
        _ => Ok(c),
    }
}

/// `tools`, `tool_choice` and `parallel_tool_calls` of a chat request.
pub fn parse(body: &RequestBody) -> Result<Tools, ApiError> {
    let raw = body.tools.as_deref().unwrap_or(&[]);
    let tools = raw
        .iter()
        .enumerate()
        .map(|(i, v)| tool(i, v))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, t) in tools.iter().enumerate() {
        if tools[..i].iter().any(|o| o.name == t.name) {
            return Err(bad(
                &format!("tools[{i}].function.name"),
                format!("The function name `{}` is used by two tools.", t.name),
            ));
        }
    }
    let choice = match &body.tool_choice {
        None => ToolChoice::Auto,
        Some(v) => choice(v, &tools)?,
    };
    Ok(Tools {
        tools,
        choice,
        parallel: body.parallel_tool_calls.unwrap_or(true),
    })
}

/// An assistant message's `tool_calls` (at `param`).
pub fn message_calls(param: &str, calls: &[Value]) -> Result<Vec<ToolCall>, ApiError> {
    calls
        .iter()
        .enumerate()
        .map(|(j, v)| {
            let at = format!("{param}.tool_calls[{j}]");
            let id = v
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(&format!("{at}.id"), format!("`{at}.id` must be a string.")))?;
            let f = v.get("function").ok_or_else(|| {
                bad(
                    &format!("{at}.function"),
                    format!("Missing required parameter: `{at}.function`."),
                )
            })?;
            let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
                bad(
                    &format!("{at}.function.name"),
                    format!("`{at}.function.name` must be a string."),
                )
            })?;
            let arguments = match f.get("arguments") {
                Some(Value::String(s)) => s.clone(),
                _ => {
                    return Err(bad(
                        &format!("{at}.function.arguments"),
                        format!("`{at}.function.arguments` must be a string (JSON text)."),
                    ))
                }
            };
            Ok(ToolCall {
                id: id.to_string(),
                name: name.to_string(),
                arguments,
            })
        })
        .collect()
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
