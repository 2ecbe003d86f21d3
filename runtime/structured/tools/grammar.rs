//! `tool_choice` `required` or a named function as a grammar: a Lark
//! program (llguidance's syntax) whose every sentence is one call (or, for
//! `required` with parallel calls, one or more) in the model's own syntax,
//! the arguments held to the tool's `parameters` by `%json`.

use serde_json::Value;

use super::{Tool, ToolChoice, ToolFormat};
use crate::structured::Constraint;
use crate::text::Tokenizer;

/// A Lark string literal (JSON string syntax).
fn lit(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// A marker as Lark: the special token by id where the vocabulary has one
/// (only a grammar that names a special token can produce it), else its text.
fn marker(tok: Option<&Tokenizer>, text: &str) -> String {
    let special = tok.and_then(|t| {
        t.hf()
            .get_added_tokens_decoder()
            .into_iter()
            .find(|(_, a)| a.special && a.content == text)
            .map(|(id, _)| id)
    });
    match special {
        Some(id) => format!("<[{id}]>"),
        None => lit(text),
    }
}

/// The schema with llguidance's output options: Python's separators and no
/// free whitespace (so the arguments look as the template writes them, and
/// a model cannot wander off into spaces), unless the schema sets its own.
fn schema_for(params: &Value) -> Value {
    let mut s = params.clone();
    if let Some(o) = s.as_object_mut() {
        o.entry("x-guidance").or_insert_with(|| {
            serde_json::json!({
                "whitespace_flexible": false,
                "item_separator": ", ",
                "key_separator": ": ",
            })
        });
    }
    s
}

/// The grammar forcing `choice` (`Required` or `Function`) over `tools` in
/// `format`; `parallel`: `Required` allows several calls (not in the Llama 3
/// format, whose templates take one call per message). `tok` names special
/// marker tokens by id.
pub fn tool_grammar(
    format: ToolFormat,
    tools: &[Tool],
    choice: &ToolChoice,
    parallel: bool,
    tok: Option<&Tokenizer>,
) -> Constraint {
    let chosen: Vec<(usize, &Tool)> = match choice {
        ToolChoice::Function(name) => tools
            .iter()
            .enumerate()
            .filter(|(_, t)| &t.name == name)
            .collect(),
        _ => tools.iter().enumerate().collect(),
    };
    let many = parallel && *choice == ToolChoice::Required && format != ToolFormat::Llama3;
    let key = format.arguments_key();
    let mut rules = Vec::new();
    let (open, close, sep) = match format {
        ToolFormat::Hermes | ToolFormat::Generic => (String::new(), String::new(), lit("\n")),
        ToolFormat::Llama3 => (String::new(), String::new(), lit("; ")),
        ToolFormat::Mistral => (
            format!("{} {}", marker(tok, "[TOOL_CALLS]"), lit("[")),
            lit("]"),
            lit(", "),
        ),
    };
    let start = if many {
        format!("{open} call ({sep} call)* {close}")
    } else {
        format!("{open} call {close}")
    };
    rules.push(format!("start: {}", start.trim()));
    let alts: Vec<String> = chosen.iter().map(|(i, _)| format!("call_{i}")).collect();
    rules.push(format!("call: {}", alts.join(" | ")));
    for (i, t) in &chosen {
        let head = format!("{{\"name\": {}, \"{key}\": ", lit(&t.name));
        let body = match format {
            ToolFormat::Hermes | ToolFormat::Generic => format!(
                "{} {} args_{i} {} {}",
                marker(tok, "<tool_call>"),
                lit(&format!("\n{head}")),
                lit("}\n"),
                marker(tok, "</tool_call>")
            ),
            ToolFormat::Llama3 | ToolFormat::Mistral => {
                format!("{} args_{i} {}", lit(&head), lit("}"))
            }
        };
        rules.push(format!("call_{i}: {body}"));
        rules.push(format!("args_{i}: %json {}", schema_for(&t.parameters)));
    }
    Constraint::Lark(rules.join("\n"))
}
