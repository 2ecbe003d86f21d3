//! OpenAI's request bodies for `/v1/completions` and `/v1/chat/completions`
//! and their validation into a [`Job`] for the engine. Every field a client
//! may send is named here: the ones Hearth implements, vLLM's sampling
//! extras (`top_k`, `min_p`, `repetition_penalty`, `ignore_eos`), and the
//! harmless ones it accepts deliberately (`user`, `stream_options`,
//! `response_format` of type text, empty `tools`); anything else is a 400
//! that names the field.

use hearth::engine::{Drafting, GenerateOptions, SamplingParams, SpecOptions};
use hearth::text::ChatMessage;
use serde::Deserialize;

use super::errors::ApiError;

/// Most choices one request may ask for (`n`).
pub const MAX_N: usize = 16;
/// Most alternatives per token in logprobs (`top_logprobs`, completions' `logprobs`).
pub const MAX_LOGPROBS: usize = 20;
/// Most stop strings per request.
pub const MAX_STOP: usize = 16;
/// OpenAI's default `max_tokens` for the legacy completions endpoint.
const COMPLETIONS_DEFAULT_MAX_TOKENS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Completions,
    Chat,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Completions => "/v1/completions",
            Endpoint::Chat => "/v1/chat/completions",
        }
    }
}

/// The union of both endpoints' fields; [`validate`] rejects the other
/// endpoint's own fields as unrecognized.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestBody {
    pub model: String,
    // Chat only.
    messages: Option<Vec<Message>>,
    max_completion_tokens: Option<i64>,
    top_logprobs: Option<i64>,
    response_format: Option<ResponseFormat>,
    tools: Option<Vec<serde_json::Value>>,
    tool_choice: Option<serde_json::Value>,
    parallel_tool_calls: Option<bool>,
    // Completions only.
    prompt: Option<PromptField>,
    echo: Option<bool>,
    suffix: Option<String>,
    best_of: Option<i64>,
    // Both.
    max_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    n: Option<i64>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    stop: Option<Stop>,
    seed: Option<i128>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    /// Chat: a boolean; completions: how many alternatives per token.
    logprobs: Option<serde_json::Value>,
    logit_bias: Option<serde_json::Map<String, serde_json::Value>>,
    #[allow(dead_code)] // accepted: end-user ids are the client's bookkeeping
    user: Option<String>,
    // vLLM's extras.
    top_k: Option<i64>,
    min_p: Option<f64>,
    repetition_penalty: Option<f64>,
    ignore_eos: Option<bool>,
    // Hearth's own: speculative decoding, "ngram", "model" (the server's
    // --draft-model) or "off".
    draft: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Message {
    role: String,
    #[serde(default)]
    content: Option<Content>,
    #[allow(dead_code)] // accepted: chat templates here do not use participant names
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
    #[allow(dead_code)] // only `text` is served; a schema comes with `json_schema`
    json_schema: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamOptions {
    include_usage: Option<bool>,
    /// vLLM's: usage on every chunk. Accepted; Hearth reports usage once, at the end.
    #[allow(dead_code)]
    continuous_usage_stats: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PromptField {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<i64>),
    IdsBatch(Vec<Vec<i64>>),
}

/// What one prompt of a request is, before tokenization (done by the engine,
/// which owns the tokenizer).
#[derive(Debug, Clone)]
pub enum PromptInput {
    Text(String),
    Chat(Vec<ChatMessage>),
    Ids(Vec<u32>),
}

/// A validated request: `prompts.len() * n` sequences, choice `p * n + i`
/// for sample `i` of prompt `p` (OpenAI's order).
#[derive(Debug, Clone)]
pub struct Job {
    pub endpoint: Endpoint,
    pub prompts: Vec<PromptInput>,
    pub n: usize,
    /// `None`: as many as the context leaves.
    pub max_tokens: Option<usize>,
    /// `max_tokens` here is a placeholder; the engine sets it per prompt.
    pub opts: GenerateOptions,
    /// Alternatives per token to report, when logprobs were asked for.
    pub logprobs: Option<usize>,
    /// Speculative decoding asked for (`None`: the server's default).
    pub draft: Option<Drafting>,
    pub stream: bool,
    pub include_usage: bool,
}

impl Job {
    pub fn choices(&self) -> usize {
        self.prompts.len() * self.n
    }
}

fn unrecognized(field: &str) -> ApiError {
    ApiError::invalid_param(
        field,
        format!("Unrecognized request argument supplied: {field}"),
    )
}

fn unsupported(field: &str, what: &str) -> ApiError {
    ApiError::invalid_param(field, format!("{what} is not supported by this server."))
}

fn int_in(field: &str, v: i64, lo: i64, hi: i64) -> Result<usize, ApiError> {
    if v < lo || v > hi {
        let range = if hi == i64::MAX {
            format!("at least {lo}")
        } else {
            format!("between {lo} and {hi}")
        };
        return Err(ApiError::invalid_param(
            field,
            format!("`{field}` must be {range}, got {v}."),
        ));
    }
    Ok(v as usize)
}

fn float_where(
    field: &str,
    v: Option<f64>,
    default: f64,
    ok: impl Fn(f64) -> bool,
    rule: &str,
) -> Result<f32, ApiError> {
    let x = v.unwrap_or(default);
    // The engine works in f32: a value beyond its range is out of range here.
    if !(x as f32).is_finite() || !ok(x) {
        return Err(ApiError::invalid_param(
            field,
            format!("`{field}` must be {rule}, got {x}."),
        ));
    }
    Ok(x as f32)
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
            let role = match m.role.as_str() {
                "system" | "user" | "assistant" => m.role.clone(),
                // OpenAI's newer name for the system role; templates know `system`.
                "developer" => "system".to_string(),
                other => {
                    return Err(ApiError::invalid_param(
                        &format!("{param}.role"),
                        format!("Role `{other}` is not supported (use system, developer, user or assistant)."),
                    ))
                }
            };
            let content = match m.content {
                None => String::new(),
                Some(Content::Text(t)) => t,
                Some(Content::Parts(parts)) => {
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
                    texts.join("\n")
                }
            };
            Ok(ChatMessage::new(role, content))
        })
        .collect()
}

/// Checks every field and builds the engine's job.
pub fn validate(body: RequestBody, endpoint: Endpoint) -> Result<Job, ApiError> {
    let chat = endpoint == Endpoint::Chat;
    let foreign: &[(&str, bool)] = if chat {
        &[
            ("prompt", body.prompt.is_some()),
            ("echo", body.echo.is_some()),
            ("suffix", body.suffix.is_some()),
            ("best_of", body.best_of.is_some()),
        ]
    } else {
        &[
            ("messages", body.messages.is_some()),
            (
                "max_completion_tokens",
                body.max_completion_tokens.is_some(),
            ),
            ("top_logprobs", body.top_logprobs.is_some()),
            ("response_format", body.response_format.is_some()),
            ("tools", body.tools.is_some()),
            ("tool_choice", body.tool_choice.is_some()),
            ("parallel_tool_calls", body.parallel_tool_calls.is_some()),
        ]
    };
    if let Some((field, _)) = foreign.iter().find(|(_, present)| *present) {
        return Err(unrecognized(field));
    }

    let n = int_in("n", body.n.unwrap_or(1), 1, MAX_N as i64)?;
    let prompts = if chat {
        let messages = body.messages.ok_or_else(|| {
            ApiError::invalid_param("messages", "Missing required parameter: `messages`.")
        })?;
        vec![PromptInput::Chat(chat_messages(messages)?)]
    } else {
        let prompt = body.prompt.ok_or_else(|| {
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
        if body.echo == Some(true) {
            return Err(unsupported("echo", "`echo`"));
        }
        if body.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(unsupported("suffix", "`suffix`"));
        }
        if let Some(b) = body.best_of {
            if b != n as i64 {
                return Err(unsupported("best_of", "`best_of` other than `n`"));
            }
        }
        prompts
    };

    let max_tokens = match (chat, body.max_completion_tokens, body.max_tokens) {
        (true, Some(m), _) => Some(int_in("max_completion_tokens", m, 1, i64::MAX)?),
        (_, _, Some(m)) => Some(int_in("max_tokens", m, 1, i64::MAX)?),
        (true, None, None) => None,
        (false, _, None) => Some(COMPLETIONS_DEFAULT_MAX_TOKENS),
    };

    let top_k = match body.top_k {
        None | Some(-1) | Some(0) => 0,
        Some(k) => int_in("top_k", k, 1, i64::MAX).map_err(|_| {
            ApiError::invalid_param(
                "top_k",
                format!("`top_k` must be -1 (off) or at least 1, got {k}."),
            )
        })?,
    };
    let seed = match body.seed {
        None => None,
        Some(s) if (0..=u64::MAX as i128).contains(&s) => Some(s as u64),
        Some(s) if (i64::MIN as i128..0).contains(&s) => Some(s as i64 as u64),
        Some(s) => {
            return Err(ApiError::invalid_param(
                "seed",
                format!("`seed` {s} does not fit in 64 bits."),
            ))
        }
    };
    let sampling = SamplingParams {
        temperature: float_where(
            "temperature",
            body.temperature,
            1.0,
            |x| x >= 0.0,
            "at least 0",
        )?,
        top_k,
        top_p: float_where(
            "top_p",
            body.top_p,
            1.0,
            |x| x > 0.0 && x <= 1.0,
            "in (0, 1]",
        )?,
        min_p: float_where(
            "min_p",
            body.min_p,
            0.0,
            |x| (0.0..=1.0).contains(&x),
            "in [0, 1]",
        )?,
        repetition_penalty: float_where(
            "repetition_penalty",
            body.repetition_penalty,
            1.0,
            |x| x > 0.0,
            "greater than 0",
        )?,
        presence_penalty: float_where(
            "presence_penalty",
            body.presence_penalty,
            0.0,
            |x| (-2.0..=2.0).contains(&x),
            "between -2 and 2",
        )?,
        frequency_penalty: float_where(
            "frequency_penalty",
            body.frequency_penalty,
            0.0,
            |x| (-2.0..=2.0).contains(&x),
            "between -2 and 2",
        )?,
        seed,
    };

    let stop = match body.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stop.len() > MAX_STOP {
        return Err(ApiError::invalid_param(
            "stop",
            format!(
                "At most {MAX_STOP} stop sequences are allowed, got {}.",
                stop.len()
            ),
        ));
    }
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid_param(
            "stop",
            "Stop sequences must not be empty.",
        ));
    }

    let logprobs = if chat {
        let on = match &body.logprobs {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ApiError::invalid_param(
                    "logprobs",
                    "Invalid value for `logprobs`: expected a boolean (use `top_logprobs` for alternatives).",
                ))
            }
        };
        let top = body
            .top_logprobs
            .map(|k| int_in("top_logprobs", k, 0, MAX_LOGPROBS as i64))
            .transpose()?;
        match (on, top) {
            (false, Some(_)) => {
                return Err(ApiError::invalid_param(
                    "top_logprobs",
                    "`top_logprobs` needs `logprobs` set to true.",
                ))
            }
            (false, None) => None,
            (true, top) => Some(top.unwrap_or(0)),
        }
    } else {
        match &body.logprobs {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => match v.as_i64() {
                Some(k) => Some(int_in("logprobs", k, 0, MAX_LOGPROBS as i64)?),
                None => return Err(ApiError::invalid_param(
                    "logprobs",
                    "Invalid value for `logprobs`: expected an integer (alternatives per token).",
                )),
            },
        }
    };

    if body.logit_bias.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(unsupported("logit_bias", "`logit_bias`"));
    }
    if let Some(rf) = &body.response_format {
        if rf.kind != "text" {
            return Err(unsupported(
                "response_format",
                &format!("`response_format` of type `{}`", rf.kind),
            ));
        }
    }
    if body.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(unsupported("tools", "Tool calling"));
    }
    match &body.tool_choice {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(s)) if s == "none" || s == "auto" => {}
        Some(_) => return Err(unsupported("tool_choice", "Tool calling")),
    }

    let draft = match body.draft.as_deref() {
        None => None,
        Some(o) => Some(Drafting::parse(o).ok_or_else(|| {
            ApiError::invalid_param(
                "draft",
                format!("`draft` must be \"ngram\", \"model\" or \"off\", got {o:?}."),
            )
        })?),
    };
    let stream = body.stream.unwrap_or(false);
    let include_usage = stream
        && body
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
    // The sampled token's own log-probability must be among the candidates
    // reported, so ask for at least as many as the sampler draws from.
    let engine_logprobs = logprobs.map_or(0, |k| sampling.candidates_needed(k.max(1)));
    Ok(Job {
        endpoint,
        prompts,
        n,
        max_tokens,
        opts: GenerateOptions {
            sampling,
            max_tokens: 0,
            stop,
            ignore_eos: body.ignore_eos.unwrap_or(false),
            logprobs: engine_logprobs,
            speculative: SpecOptions::default(),
        },
        logprobs,
        draft,
        stream,
        include_usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::body::parse_json;

    fn job(endpoint: Endpoint, json: &str) -> Result<Job, ApiError> {
        validate(parse_json::<RequestBody>(json.as_bytes())?, endpoint)
    }

    fn param(endpoint: Endpoint, json: &str) -> String {
        job(endpoint, json).unwrap_err().param.unwrap_or_default()
    }

    #[test]
    fn accepts_what_clients_send() {
        let j = job(
            Endpoint::Chat,
            r#"{"model": "m", "messages": [{"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}], "name": "ann"}],
                "max_completion_tokens": 5, "stream": true, "stream_options": {"include_usage": true},
                "logprobs": true, "top_logprobs": 2, "response_format": {"type": "text"},
                "user": "u1", "seed": -3, "stop": "x", "n": 2, "top_k": -1, "tools": []}"#,
        )
        .unwrap();
        assert_eq!((j.n, j.max_tokens, j.logprobs), (2, Some(5), Some(2)));
        assert!(j.stream && j.include_usage);
        assert_eq!(j.opts.stop, vec!["x".to_string()]);
        assert_eq!(j.opts.sampling.seed, Some(-3i64 as u64));
        match &j.prompts[0] {
            PromptInput::Chat(m) => {
                assert_eq!(m[0].role, "system");
                assert_eq!(m[1].content, "hi");
            }
            p => panic!("{p:?}"),
        }
        let j = job(
            Endpoint::Completions,
            r#"{"model": "m", "prompt": [[1, 2], [3]], "logprobs": 3}"#,
        )
        .unwrap();
        assert_eq!(
            (j.prompts.len(), j.max_tokens, j.logprobs),
            (2, Some(16), Some(3))
        );
        assert!(j.opts.logprobs >= 3);
    }

    #[test]
    fn rejects_each_bad_field_by_name() {
        use Endpoint::{Chat, Completions};
        let cases = [
            (
                Completions,
                r#"{"model": "m", "prompt": "a", "max_tokens": -1}"#,
                "max_tokens",
            ),
            (
                Completions,
                r#"{"model": "m", "prompt": "a", "max_tokens": 0}"#,
                "max_tokens",
            ),
            (
                Completions,
                r#"{"model": "m", "prompt": "a", "n": 1000}"#,
                "n",
            ),
            (
                Completions,
                r#"{"model": "m", "prompt": "a", "temperature": -0.5}"#,
                "temperature",
            ),
            (
                Completions,
                r#"{"model": "m", "prompt": "a", "top_p": 0}"#,
                "top_p",
            ),
            (
                Completions,
                r#"{"model": "m", "prompt": "a", "temperature": 1e300}"#,
                "temperature",
            ),
            (
                Completions,
                r#"{"model": "m", "prompt": "a", "logprobs": true}"#,
                "logprobs",
            ),
            (
                Completions,
                r#"{"model": "m", "prompt": "a", "stop": ""}"#,
                "stop",
            ),
            (
                Completions,
                r#"{"model": "m", "prompt": "a", "echo": true}"#,
                "echo",
            ),
            (Completions, r#"{"model": "m", "prompt": [-1]}"#, "prompt"),
            (Completions, r#"{"model": "m", "messages": []}"#, "messages"),
            (
                Chat,
                r#"{"model": "m", "messages": [], "prompt": "a"}"#,
                "prompt",
            ),
            (Chat, r#"{"model": "m", "messages": []}"#, "messages"),
            (
                Chat,
                r#"{"model": "m", "messages": [{"role": "tool", "content": "x"}]}"#,
                "messages[0].role",
            ),
            (
                Chat,
                r#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}"#,
                "messages[0].content[0].type",
            ),
            (
                Chat,
                r#"{"model": "m", "messages": [{"role": "user", "content": "a"}], "top_logprobs": 2}"#,
                "top_logprobs",
            ),
            (
                Chat,
                r#"{"model": "m", "messages": [{"role": "user", "content": "a"}], "tools": [{}]}"#,
                "tools",
            ),
            (
                Chat,
                r#"{"model": "m", "messages": [{"role": "user", "content": "a"}], "response_format": {"type": "json_object"}}"#,
                "response_format",
            ),
        ];
        for (endpoint, body, want) in cases {
            assert_eq!(param(endpoint, body), want, "{body}");
        }
    }
}
