//! One request type for every front end, its one validation, and its one
//! set of defaults.
//!
//! # Defaults
//!
//! | field | default | why |
//! |---|---|---|
//! | `sampling` | greedy (temperature 0) | deterministic: the same prompt gives the same answer, and small models answer best greedily |
//! | `max_tokens` | 256 | a chat answer; `None` means as many as the context (and, alone, the KV pool) leaves |
//! | `n` | 1 | |
//! | `stop` | none | end-of-sequence tokens still stop |
//! | `logprobs` | 0 (none) | |
//! | `draft` | the engine's ([`super::EngineConfig::speculative`]) | |
//!
//! `hearth run`, the Rust API, the C ABI, the JS API and the demo page use
//! these. The OpenAI-compatible server alone keeps OpenAI's defaults
//! (temperature 1, `max_tokens` unlimited): clients written against OpenAI
//! rely on them when they omit a field.

use super::sampling::{SamplingParams, MAX_CANDIDATES};
use super::speculative::{Drafting, SpecOptions};
use crate::api::Prompt;
use crate::structured::tools::{Tool, ToolChoice};
use crate::structured::Constraint;
use crate::{HearthError, Result};

/// Most choices (`n`) one request may ask for.
pub const MAX_N: usize = 128;

/// A generation request: what to generate from, how to sample, when to stop.
#[derive(Debug, Clone)]
pub struct Request {
    pub prompt: Prompt,
    /// Tokens to generate at most per choice; `None`: as many as the context
    /// and the KV pool leave. A prompt plus `max_tokens` past the model's
    /// context is an error ([`HearthError::ContextLength`]).
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    /// Generation ends when the text contains one of these (it is cut before it).
    pub stop: Vec<String>,
    /// Keep going past end-of-sequence tokens.
    pub ignore_eos: bool,
    /// Top-K log-probabilities to report per generated token (0: none).
    pub logprobs: usize,
    /// Independent choices; choice `i` of a seeded request samples with
    /// seed `seed + i`.
    pub n: usize,
    /// Speculative decoding; `None`: the engine's default.
    pub draft: Option<Drafting>,
    /// What the output must match (JSON Schema, regex, grammar); `None`: free text.
    pub constraint: Option<Constraint>,
    /// Functions the model may call (see `hearth::structured::tools`).
    pub tools: Vec<Tool>,
    /// Whether it must call one (`Required`, `Function`: a grammar forces
    /// the call) or none (`None`: the tools stay out of the prompt).
    pub tool_choice: ToolChoice,
    /// `Required` allows several calls in one answer (default true).
    pub parallel_tool_calls: bool,
    /// Embed the prompt instead of generating: prefill only, then one
    /// [`crate::Output::Embedding`] pooled as the model declares
    /// ([`Request::embedding`]). Sampling, stopping and `max_tokens` are
    /// ignored; `n` must be 1, without tools or a constraint.
    pub embed: bool,
}

/// The default `max_tokens` of [`Request`] and [`GenerateOptions`].
pub const DEFAULT_MAX_TOKENS: usize = 256;

impl Default for Request {
    fn default() -> Self {
        Request {
            prompt: Prompt::Text(String::new()),
            max_tokens: Some(DEFAULT_MAX_TOKENS),
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            ignore_eos: false,
            logprobs: 0,
            n: 1,
            draft: None,
            constraint: None,
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            parallel_tool_calls: true,
            embed: false,
        }
    }
}

fn field(name: &str, message: impl Into<String>) -> HearthError {
    HearthError::InvalidField {
        field: name.to_string(),
        message: message.into(),
    }
}

impl Request {
    /// A request with the default options.
    pub fn new(prompt: Prompt) -> Request {
        Request {
            prompt,
            ..Default::default()
        }
    }

    /// An embedding of `input` (text is tokenized as it is, special tokens
    /// added as the tokenizer does; no chat template).
    pub fn embedding(input: Prompt) -> Request {
        Request {
            embed: true,
            ..Request::new(input)
        }
    }

    /// A chat request of one user message.
    pub fn chat(user: &str) -> Request {
        Request::new(Prompt::chat_user(user))
    }

    /// The request [`crate::Engine::generate`]'s options describe.
    pub fn from_options(prompt: Prompt, o: &GenerateOptions) -> Request {
        Request {
            prompt,
            max_tokens: Some(o.max_tokens),
            sampling: o.sampling.clone(),
            stop: o.stop.clone(),
            ignore_eos: o.ignore_eos,
            logprobs: o.logprobs,
            n: 1,
            draft: Some(o.speculative.drafting),
            constraint: o.constraint.clone(),
            ..Default::default()
        }
    }

    /// Caps `max_tokens` (`None`: unlimited) at what the context leaves
    /// after `prompt_tokens`: the lenient policy of `Engine::generate` and
    /// the JS API, where `add_request` alone would refuse the request.
    pub fn cap_to_context(&mut self, prompt_tokens: usize, context: usize) {
        let room = context.saturating_sub(prompt_tokens);
        self.max_tokens = Some(self.max_tokens.map_or(room, |m| m.min(room)));
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.n == 0 || self.n > MAX_N {
            return Err(field(
                "n",
                format!("must be between 1 and {MAX_N}, got {}", self.n),
            ));
        }
        if self.logprobs > MAX_CANDIDATES {
            return Err(field(
                "logprobs",
                format!("must be at most {MAX_CANDIDATES}, got {}", self.logprobs),
            ));
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(field("stop", "stop strings must not be empty"));
        }
        if let Prompt::Ids(ids) = &self.prompt {
            if ids.is_empty() {
                return Err(field("prompt", "the prompt is empty (no tokens)"));
            }
        }
        if self.embed {
            if self.n != 1 {
                return Err(field("n", "an embedding request has one choice"));
            }
            if !self.tools.is_empty() || self.constraint.is_some() {
                return Err(field(
                    "embed",
                    "an embedding request generates nothing: no tools or constraint",
                ));
            }
        }
        crate::structured::tools::validate_request(
            &self.tools,
            &self.tool_choice,
            self.constraint.as_ref(),
        )?;
        self.sampling.validate()
    }

    /// The per-choice options, with `max_tokens` resolved to `max_new`.
    pub(crate) fn choice_options(
        &self,
        choice: usize,
        max_new: usize,
        speculative: SpecOptions,
    ) -> GenerateOptions {
        let mut sampling = self.sampling.clone();
        sampling.seed = sampling.seed.map(|s| s.wrapping_add(choice as u64));
        GenerateOptions {
            sampling,
            max_tokens: max_new,
            stop: self.stop.clone(),
            ignore_eos: self.ignore_eos,
            logprobs: self.logprobs,
            speculative: SpecOptions {
                drafting: self.draft.unwrap_or(speculative.drafting),
                ..speculative
            },
            constraint: self.constraint.clone(),
        }
    }
}

/// One sequence's options, as the scheduler runs it (and the options of the
/// [`crate::Engine::generate`] convenience call).
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    /// Generation ends when the text contains one of these (it is cut before it).
    pub stop: Vec<String>,
    /// Keep going past end-of-sequence tokens.
    pub ignore_eos: bool,
    /// Top-K log-probabilities to report per generated token (0: none).
    pub logprobs: usize,
    /// Speculative decoding (off by default).
    pub speculative: SpecOptions,
    /// What the output must match; `None`: free text.
    pub constraint: Option<Constraint>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            sampling: SamplingParams::default(),
            max_tokens: DEFAULT_MAX_TOKENS,
            stop: Vec::new(),
            ignore_eos: false,
            logprobs: 0,
            speculative: SpecOptions::default(),
            constraint: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End-of-sequence token or stop string.
    Stop,
    /// `max_tokens` or the context length reached.
    Length,
    /// Aborted: by the caller, a dropped stream or the engine's shutdown.
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad_field(r: &Request) -> String {
        match r.validate() {
            Err(HearthError::InvalidField { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn validation_names_the_bad_field() {
        let ok = Request::chat("hi");
        ok.validate().unwrap();
        let with = |f: &dyn Fn(&mut Request)| {
            let mut r = ok.clone();
            f(&mut r);
            bad_field(&r)
        };
        assert_eq!(with(&|r| r.n = 0), "n");
        assert_eq!(with(&|r| r.n = MAX_N + 1), "n");
        assert_eq!(with(&|r| r.logprobs = MAX_CANDIDATES + 1), "logprobs");
        assert_eq!(with(&|r| r.stop = vec![String::new()]), "stop");
        assert_eq!(with(&|r| r.prompt = Prompt::Ids(vec![])), "prompt");
        let embed = |f: &dyn Fn(&mut Request)| {
            let mut r = Request::embedding(Prompt::Text("hi".into()));
            r.validate().unwrap();
            f(&mut r);
            bad_field(&r)
        };
        assert_eq!(embed(&|r| r.n = 2), "n");
        assert_eq!(
            embed(&|r| r.constraint = Some(Constraint::JsonObject)),
            "embed"
        );
        assert_eq!(with(&|r| r.sampling.temperature = -1.0), "temperature");
        assert_eq!(with(&|r| r.sampling.temperature = f32::NAN), "temperature");
        assert_eq!(with(&|r| r.sampling.top_p = 0.0), "top_p");
        assert_eq!(with(&|r| r.sampling.min_p = 1.5), "min_p");
        assert_eq!(
            with(&|r| r.sampling.repetition_penalty = 0.0),
            "repetition_penalty"
        );
        assert_eq!(
            with(&|r| r.sampling.presence_penalty = f32::INFINITY),
            "presence_penalty"
        );
        assert_eq!(
            with(&|r| r.sampling.frequency_penalty = f32::NAN),
            "frequency_penalty"
        );
    }

    #[test]
    fn defaults_are_greedy_with_a_chat_sized_limit() {
        let r = Request::default();
        assert!(r.sampling.is_greedy());
        assert_eq!(r.max_tokens, Some(DEFAULT_MAX_TOKENS));
        assert_eq!(r.n, 1);
        assert_eq!(GenerateOptions::default().max_tokens, DEFAULT_MAX_TOKENS);
    }

    #[test]
    fn choices_draw_their_own_seeds() {
        let mut r = Request::chat("hi");
        r.sampling.seed = Some(7);
        let spec = SpecOptions::default();
        assert_eq!(r.choice_options(0, 5, spec).sampling.seed, Some(7));
        assert_eq!(r.choice_options(2, 5, spec).sampling.seed, Some(9));
        assert_eq!(r.choice_options(2, 5, spec).max_tokens, 5);
    }
}
