//! Tools and tool messages as chat templates read them: the shapes
//! Hugging Face transformers hands its templates, and for templates that
//! know no tools, the generic instruction in the system message.

use serde_json::{json, Map, Value};

use super::{Tool, ToolFormat};
use crate::text::ChatMessage;

/// `tools` as transformers passes them: `{"type": "function", "function": {...}}`.
pub fn template_tools(tools: &[Tool]) -> Vec<Value> {
    tools.iter().map(template_tool).collect()
}

fn template_tool(t: &Tool) -> Value {
    let mut f = Map::new();
    f.insert("name".into(), Value::String(t.name.clone()));
    if let Some(d) = &t.description {
        f.insert("description".into(), Value::String(d.clone()));
    }
    f.insert("parameters".into(), t.parameters.clone());
    json!({"type": "function", "function": Value::Object(f)})
}

/// A call's arguments as templates read them: the object when the text
/// parses, else the text.
fn arguments_value(arguments: &str) -> Value {
    serde_json::from_str::<Value>(arguments)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| Value::String(arguments.to_string()))
}

/// One message as the template sees it: `role` and `content`, plus
/// `tool_calls` (OpenAI's shape, arguments parsed), `tool_call_id` and
/// `name` where set.
pub fn template_message(m: &ChatMessage) -> Value {
    let mut v = Map::new();
    v.insert("role".into(), Value::String(m.role.clone()));
    v.insert("content".into(), Value::String(m.content.clone()));
    if !m.tool_calls.is_empty() {
        let calls = m
            .tool_calls
            .iter()
            .map(|c| {
                json!({
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": arguments_value(&c.arguments)},
                })
            })
            .collect();
        v.insert("tool_calls".into(), Value::Array(calls));
    }
    if let Some(id) = &m.tool_call_id {
        v.insert("tool_call_id".into(), Value::String(id.clone()));
    }
    if let Some(n) = &m.name {
        v.insert("name".into(), Value::String(n.clone()));
    }
    Value::Object(v)
}

/// JSON as Python's `json.dumps(v, ensure_ascii=False, indent=indent)`
/// writes it (`", "` and `": "` separators on one line), which is what
/// transformers' `tojson` gives templates.
pub fn py_json(v: &Value, indent: Option<usize>) -> String {
    let mut out = String::new();
    write_py(&mut out, v, indent, 0);
    out
}

fn write_py(out: &mut String, v: &Value, indent: Option<usize>, depth: usize) {
    let newline = |out: &mut String, d: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * d));
        }
    };
    let sep = if indent.is_some() { "," } else { ", " };
    match v {
        Value::Array(a) if !a.is_empty() => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                write_py(out, x, indent, depth + 1);
            }
            newline(out, depth);
            out.push(']');
        }
        Value::Object(o) if !o.is_empty() => {
            out.push('{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                write_py(out, x, indent, depth + 1);
            }
            newline(out, depth);
            out.push('}');
        }
        v => out.push_str(&v.to_string()),
    }
}

/// The generic format's instruction: the tools as JSON and the call syntax.
pub fn generic_instruction(tools: &[Tool]) -> String {
    let mut s = String::from(
        "# Tools\n\nYou may call one or more functions to assist with the user query. \
         The functions are, as JSON signatures within <tools></tools> tags:\n<tools>",
    );
    for t in template_tools(tools) {
        s.push('\n');
        s.push_str(&py_json(&t, None));
    }
    s.push_str(
        "\n</tools>\n\nTo call a function, reply with a JSON object holding its name and \
         arguments within <tool_call></tool_call> tags:\n<tool_call>\n\
         {\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
    );
    s
}

/// The generic format's text of one call (Hermes syntax).
fn generic_call(name: &str, arguments: &str) -> String {
    let args = match arguments_value(arguments) {
        Value::String(s) => s,
        v => py_json(&v, None),
    };
    format!(
        "<tool_call>\n{{\"name\": {}, \"arguments\": {args}}}\n</tool_call>",
        Value::String(name.to_string())
    )
}

/// The messages to render for `format`: as they are for templates that
/// handle tools; for the generic format, the instruction joins the system
/// message (or becomes one), assistant calls are written into the content
/// and tool results become user messages in `<tool_response>` tags.
pub fn prepare_messages(
    format: ToolFormat,
    messages: &[ChatMessage],
    tools: &[Tool],
) -> Vec<ChatMessage> {
    if format.template_native() {
        return messages.to_vec();
    }
    let mut out = Vec::with_capacity(messages.len() + 1);
    if !tools.is_empty() {
        let instruction = generic_instruction(tools);
        match messages.first() {
            Some(m) if m.role == "system" => {
                let content = if m.content.is_empty() {
                    instruction
                } else {
                    format!("{}\n\n{instruction}", m.content)
                };
                out.push(ChatMessage::new("system", content));
            }
            _ => out.push(ChatMessage::new("system", instruction)),
        }
    }
    let skip =
        usize::from(!tools.is_empty() && messages.first().is_some_and(|m| m.role == "system"));
    for m in &messages[skip..] {
        if m.role == "tool" {
            out.push(ChatMessage::new(
                "user",
                format!("<tool_response>\n{}\n</tool_response>", m.content),
            ));
        } else if !m.tool_calls.is_empty() {
            let mut parts: Vec<String> = Vec::new();
            if !m.content.is_empty() {
                parts.push(m.content.clone());
            }
            parts.extend(
                m.tool_calls
                    .iter()
                    .map(|c| generic_call(&c.name, &c.arguments)),
            );
            out.push(ChatMessage::new(m.role.clone(), parts.join("\n")));
        } else {
            out.push(ChatMessage::new(m.role.clone(), m.content.clone()));
        }
    }
    out
}
