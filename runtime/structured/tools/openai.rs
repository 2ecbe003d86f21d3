//! Tools, tool choices and assistant tool calls in OpenAI's JSON shapes,
//! checked into the library's types; every fault is
//! `InvalidField { field, .. }` with the field's path (`tools[0].function.parameters`,
//! `messages[2].tool_calls[0].id`, ...). The OpenAI server and the JS API
//! both read their requests with these.

use serde_json::Value;

use super::{Tool, ToolCall, ToolChoice};
use crate::{HearthError, Result};

fn bad(param: &str, message: impl Into<String>) -> HearthError {
    HearthError::InvalidField {
        field: param.to_string(),
        message: message.into(),
    }
}

/// `tools`: a list of `{"type": "function", "function": {name, description, parameters}}`.
pub fn tools(raw: &[Value]) -> Result<Vec<Tool>> {
    let tools = raw
        .iter()
        .enumerate()
        .map(|(i, v)| tool(i, v))
        .collect::<Result<Vec<_>>>()?;
    for (i, t) in tools.iter().enumerate() {
        if tools[..i].iter().any(|o| o.name == t.name) {
            return Err(bad(
                &format!("tools[{i}].function.name"),
                format!("The function name `{}` is used by two tools.", t.name),
            ));
        }
    }
    Ok(tools)
}

fn tool(i: usize, v: &Value) -> Result<Tool> {
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
    if let Err(HearthError::InvalidField { message, .. }) =
        super::validate(std::slice::from_ref(&t), &ToolChoice::Auto)
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

/// `tool_choice`: `"auto"`, `"none"`, `"required"` or
/// `{"type": "function", "function": {"name": ...}}` naming one of `tools`.
pub fn tool_choice(v: &Value, tools: &[Tool]) -> Result<ToolChoice> {
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

/// An assistant message's `tool_calls` (at `param`).
pub fn message_tool_calls(param: &str, calls: &[Value]) -> Result<Vec<ToolCall>> {
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
