//! The prompts of a request: chat's `messages` or completions' `prompt`
//! (text, texts, token ids or batches of them).

use hearth::text::ChatMessage;

use super::request::{Content, Message, PromptField};
use super::{PromptInput, MAX_N};
use crate::cmd::serve::errors::ApiError;

/// Chat's one prompt, from `messages` (required).
pub fn chat(messages: Option<Vec<Message>>) -> Result<PromptInput, ApiError> {
    let messages = messages.ok_or_else(|| {
        ApiError::invalid_param("messages", "Missing required parameter: `messages`.")
    })?;
    Ok(PromptInput::Chat(chat_messages(messages)?))
}

fn chat_messages(messages: Vec<Message>) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "`messages` must hold at least one message.",
        ));
    }
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let param = format!("messages[{i}]");
            let mut msg = ChatMessage::new(role(&param, m.role)?, content(&param, m.content)?);
            if let Some(calls) = m.tool_calls.filter(|c| !c.is_empty()) {
                if msg.role != "assistant" {
                    return Err(ApiError::invalid_param(
                        &format!("{param}.tool_calls"),
                        "Only assistant messages carry `tool_calls`.",
                    ));
                }
                msg.tool_calls = super::tools::message_calls(&param, &calls)?;
            }
            if msg.role == "tool" && m.tool_call_id.is_none() {
                return Err(ApiError::invalid_param(
                    &format!("{param}.tool_call_id"),
                    "Missing required parameter: `tool_call_id` (tool messages answer a call).",
                ));
            }
            msg.tool_call_id = m.tool_call_id;
            msg.name = m.name;
            Ok(msg)
        })
        .collect()
}

fn role(param: &str, role: String) -> Result<String, ApiError> {
    match role.as_str() {
        "system" | "user" | "assistant" | "tool" => Ok(role),
        // OpenAI's newer name for the system role; templates know `system`.
        "developer" => Ok("system".to_string()),
        other => Err(ApiError::invalid_param(
            &format!("{param}.role"),
            format!(
                "Role `{other}` is not supported (use system, developer, user, assistant or tool)."
            ),
        )),
    }
}

/// A message's text: text parts joined by newlines; other kinds of part
/// (images, audio) are refused rather than dropped.
fn content(param: &str, content: Option<Content>) -> Result<String, ApiError> {
    let parts = match content {
        None => return Ok(String::new()),
        Some(Content::Text(t)) => return Ok(t),
        Some(Content::Parts(parts)) => parts,
    };
    let mut texts = Vec::with_capacity(parts.len());
    for (j, p) in parts.into_iter().enumerate() {
        match (p.kind.as_str(), p.text) {
            ("text", Some(t)) => texts.push(t),
            ("text", None) => {
                return Err(ApiError::invalid_param(
                    &format!("{param}.content[{j}].text"),
                    "A text content part needs `text`.",
                ))
            }
            (kind, _) => {
                return Err(ApiError::invalid_param(
                    &format!("{param}.content[{j}].type"),
                    format!("Content parts of type `{kind}` are not supported; only `text`."),
                ))
            }
        }
    }
    Ok(texts.join("\n"))
}

/// Completions' prompts, from `prompt` (required), at most [`MAX_N`]
/// choices in all with `n` each.
pub fn completions(prompt: Option<PromptField>, n: usize) -> Result<Vec<PromptInput>, ApiError> {
    let prompt = prompt.ok_or_else(|| {
        ApiError::invalid_param("prompt", "Missing required parameter: `prompt`.")
    })?;
    let prompts = match prompt {
        PromptField::Text(t) => vec![PromptInput::Text(t)],
        PromptField::Texts(ts) => ts.into_iter().map(PromptInput::Text).collect(),
        PromptField::Ids(ids) => vec![PromptInput::Ids(token_ids("prompt", &ids)?)],
        PromptField::IdsBatch(b) => b
            .iter()
            .map(|ids| token_ids("prompt", ids).map(PromptInput::Ids))
            .collect::<Result<_, _>>()?,
    };
    if prompts.is_empty() {
        return Err(ApiError::invalid_param(
            "prompt",
            "`prompt` must not be an empty array.",
        ));
    }
    if prompts.len() * n > MAX_N {
        return Err(ApiError::invalid_param(
            "prompt",
            format!(
                "{} prompts x n={n} ask for more than {MAX_N} choices in one request.",
                prompts.len()
            ),
        ));
    }
    Ok(prompts)
}

fn token_ids(field: &str, ids: &[i64]) -> Result<Vec<u32>, ApiError> {
    ids.iter()
        .map(|&t| {
            u32::try_from(t).map_err(|_| {
                ApiError::invalid_param(field, format!("Token id {t} in `{field}` is not valid."))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(v: Vec<PromptInput>) -> Vec<String> {
        v.into_iter()
            .map(|p| match p {
                PromptInput::Text(t) => t,
                PromptInput::Ids(ids) => format!("{ids:?}"),
                PromptInput::Chat(m) => format!("{m:?}"),
            })
            .collect()
    }

    #[test]
    fn completion_prompts_of_every_shape() {
        let one = completions(Some(PromptField::Text("a".into())), 1).unwrap();
        assert_eq!(texts(one), ["a"]);
        let batch = completions(Some(PromptField::IdsBatch(vec![vec![1, 2], vec![3]])), 2);
        assert_eq!(texts(batch.unwrap()), ["[1, 2]", "[3]"]);
        let e = completions(Some(PromptField::Ids(vec![5, -1])), 1).unwrap_err();
        assert_eq!(e.message, "Token id -1 in `prompt` is not valid.");
        let e = completions(Some(PromptField::Texts(vec![])), 1).unwrap_err();
        assert_eq!(e.message, "`prompt` must not be an empty array.");
        let e = completions(Some(PromptField::Texts(vec!["a".into(); 3])), 6).unwrap_err();
        assert_eq!(
            e.message,
            "3 prompts x n=6 ask for more than 16 choices in one request."
        );
        let e = completions(None, 1).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("prompt"));
    }

    #[test]
    fn content_parts_join_and_refuse_non_text() {
        let part = |kind: &str, text: Option<&str>| super::super::request::ContentPart {
            kind: kind.into(),
            text: text.map(Into::into),
        };
        let parts = Content::Parts(vec![part("text", Some("a")), part("text", Some("b"))]);
        assert_eq!(content("m", Some(parts)).unwrap(), "a\nb");
        assert_eq!(content("m", None).unwrap(), "");
        let e = content(
            "messages[1]",
            Some(Content::Parts(vec![part("text", None)])),
        );
        assert_eq!(
            e.unwrap_err().param.as_deref(),
            Some("messages[1].content[0].text")
        );
        assert_eq!(role("m", "developer".into()).unwrap(), "system");
        assert_eq!(
            role("messages[0]", "function".into()).unwrap_err().message,
            "Role `function` is not supported (use system, developer, user, assistant or tool)."
        );
    }
}
