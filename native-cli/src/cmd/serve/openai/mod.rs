//! OpenAI's request bodies for `/v1/completions` and `/v1/chat/completions`
//! and their validation into a [`Job`] for the engine. Every field a client
//! may send is named here: the ones Hearth implements, vLLM's sampling
//! extras (`top_k`, `min_p`, `repetition_penalty`, `ignore_eos`), and the
//! harmless ones it accepts deliberately (`user`, `stream_options`);
//! structured output (`response_format`, `grammar`: [`constraint`]); tool
//! calling (`tools`, `tool_choice`, `parallel_tool_calls`: [`tools`]);
//! anything else is a 400 that names the field.
//!
//! - [`request`]: the body's fields; [`checks`]: one value's range or form
//! - [`prompt`]: `messages` and `prompt`; [`sampling`]: sampling and `draft`
//! - [`output`]: `max_tokens`, `stop`, `logprobs`; [`unsupported`]: what is refused

mod checks;
mod constraint;
mod output;
mod prompt;
mod request;
mod sampling;
mod tools;
mod unsupported;

use hearth::engine::{Drafting, GenerateOptions, SpecOptions};
use hearth::text::ChatMessage;

pub use self::output::COMPLETIONS_DEFAULT_MAX_TOKENS;
pub use self::request::RequestBody;
pub use self::tools::Tools;
use super::errors::ApiError;

/// Most choices one request may ask for (`n`).
pub const MAX_N: usize = 16;
/// Most alternatives per token in logprobs (`top_logprobs`, completions' `logprobs`).
pub const MAX_LOGPROBS: usize = 20;
/// Most stop strings per request.
pub const MAX_STOP: usize = 16;

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
    /// Chat's tools (none for completions).
    pub tools: Tools,
    /// The field `opts.constraint` came from (`response_format` or
    /// `grammar`), for the 400 when it does not compile.
    pub constraint_param: &'static str,
}

impl Job {
    pub fn choices(&self) -> usize {
        self.prompts.len() * self.n
    }
}

/// Checks every field and builds the engine's job. The checks run in a
/// fixed order, so that a body with several faults is always refused for
/// the same one.
pub fn validate(mut body: RequestBody, endpoint: Endpoint) -> Result<Job, ApiError> {
    unsupported::foreign_fields(&body, endpoint)?;
    let n = checks::int_in("n", body.n.unwrap_or(1), 1, MAX_N as i64)?;
    let prompts = match endpoint {
        Endpoint::Chat => vec![prompt::chat(body.messages.take())?],
        Endpoint::Completions => {
            let prompts = prompt::completions(body.prompt.take(), n)?;
            unsupported::completions_options(&body, n)?;
            prompts
        }
    };
    let max_tokens = output::max_tokens(&body, endpoint)?;
    let sampling = sampling::params(&body)?;
    let stop = output::stop(body.stop.take())?;
    let logprobs = output::logprobs(&body, endpoint)?;
    unsupported::features(&body)?;
    let tools = tools::parse(&body)?;
    let constraint = constraint::constraint(&body)?;
    let draft = sampling::draft(body.draft.as_deref())?;
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
            constraint: constraint.as_ref().map(|c| c.0.clone()),
        },
        logprobs,
        draft,
        stream,
        include_usage,
        tools,
        constraint_param: constraint.map_or("response_format", |c| c.1),
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
                r#"{"model": "m", "messages": [{"role": "function", "content": "x"}]}"#,
                "messages[0].role",
            ),
            (
                Chat,
                r#"{"model": "m", "messages": [{"role": "tool", "content": "x"}]}"#,
                "messages[0].tool_call_id",
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
                "tools[0].type",
            ),
            (
                Chat,
                r#"{"model": "m", "messages": [{"role": "user", "content": "a"}], "response_format": {"type": "json"}}"#,
                "response_format",
            ),
            (
                Completions,
                r#"{"model": "m", "prompt": "a", "grammar": "root ::= \"a\"", "response_format": {"type": "json_object"}}"#,
                "grammar",
            ),
        ];
        for (endpoint, body, want) in cases {
            assert_eq!(param(endpoint, body), want, "{body}");
        }
    }
}
