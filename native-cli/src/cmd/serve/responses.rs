//! The engine's events turned into OpenAI's response bodies: one
//! `chat.completion` / `text_completion` object, or a stream of
//! `chat.completion.chunk` / `text_completion` chunks ending in `[DONE]`.

use hearth::engine::FinishReason;
use hearth::structured::tools::{parse_tool_calls, ToolDelta, ToolFormat, ToolParser};
use serde_json::{json, Value};

use super::engine::{Admitted, Event, TokenLogprobs};
use super::errors::ApiError;
use super::openai::Endpoint;

/// OpenAI's names; `abort` (vLLM's) marks a request the server ended, at
/// shutdown once the grace period is over.
pub fn finish_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Cancelled => "abort",
    }
}

/// What every response of one request shares.
#[derive(Debug, Clone)]
pub struct Meta {
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub choices: usize,
    pub admitted: Admitted,
    pub include_usage: bool,
    /// Whether logprobs were asked for (they are `null` otherwise).
    pub logprobs: bool,
    /// Chat with tools: outputs are parsed for calls in this format.
    pub tools: Option<ToolFormat>,
}

/// `finish_reason` of a choice that made `calls` tool calls.
fn choice_finish(r: FinishReason, calls: usize) -> &'static str {
    if calls > 0 && r == FinishReason::Stop {
        "tool_calls"
    } else {
        finish_reason(r)
    }
}

/// Seed of a request's call ids.
fn id_seed(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// A chat message: content, or the calls parsed out of it (content `null`
/// when there is only calls).
fn chat_message(meta: &Meta, text: &str) -> (Value, usize) {
    let Some(format) = meta.tools else {
        return (json!({"role": "assistant", "content": text}), 0);
    };
    let (content, calls) = parse_tool_calls(format, text);
    if calls.is_empty() {
        return (json!({"role": "assistant", "content": content}), 0);
    }
    let content = (!content.trim().is_empty()).then_some(content);
    let n = calls.len();
    (
        json!({"role": "assistant", "content": content, "tool_calls": calls}),
        n,
    )
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

fn chat_logprob_entry(t: &TokenLogprobs) -> Value {
    json!({
        "token": t.token.text,
        "logprob": t.logprob,
        "bytes": t.token.bytes,
        "top_logprobs": t.top.iter().map(|(p, lp)| json!({
            "token": p.text,
            "logprob": lp,
            "bytes": p.bytes,
        })).collect::<Vec<_>>(),
    })
}

/// Completions' logprobs for `tokens`, whose text starts at `offset`
/// characters into the completion; returns the offset after them.
fn completion_logprobs(tokens: &[TokenLogprobs], mut offset: usize) -> (Value, usize) {
    let mut text_offset = Vec::with_capacity(tokens.len());
    for t in tokens {
        text_offset.push(offset);
        offset += t.token.text.chars().count();
    }
    let v = json!({
        "tokens": tokens.iter().map(|t| t.token.text.clone()).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": tokens.iter().map(|t| {
            t.top.iter().map(|(p, lp)| (p.text.clone(), json!(lp))).collect::<serde_json::Map<_, _>>()
        }).collect::<Vec<_>>(),
        "text_offset": text_offset,
    });
    (v, offset)
}

#[derive(Default)]
struct ChoiceAcc {
    text: String,
    logprobs: Vec<TokenLogprobs>,
    finish: Option<FinishReason>,
}

/// Collects every event of a non-streaming request into its response body.
pub async fn collect(meta: &Meta, mut events: super::engine::JobEvents) -> Result<Value, ApiError> {
    let mut acc: Vec<ChoiceAcc> = (0..meta.choices).map(|_| ChoiceAcc::default()).collect();
    let mut completion_tokens = 0;
    while let Some(ev) = events.recv().await {
        match ev {
            Event::Token {
                choice,
                text,
                logprobs,
            } => {
                let a = &mut acc[choice];
                a.text.push_str(&text);
                a.logprobs.extend(logprobs);
            }
            Event::Finished {
                choice,
                reason,
                completion_tokens: n,
            } => {
                acc[choice].finish = Some(reason);
                completion_tokens += n;
            }
            Event::Failed(e) => return Err(e),
        }
    }
    if acc.iter().any(|a| a.finish.is_none()) {
        return Err(ApiError::internal(
            "The inference engine stopped before the request finished.",
        ));
    }
    if acc
        .iter()
        .any(|a| a.finish == Some(FinishReason::Cancelled))
    {
        // Only the shutdown deadline cancels a request whose client is still there.
        return Err(ApiError::shutting_down());
    }
    let choices: Vec<Value> = acc
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let reason = a.finish.map(finish_reason);
            match meta.endpoint {
                Endpoint::Chat => {
                    let (message, calls) = chat_message(meta, &a.text);
                    json!({
                        "index": i,
                        "message": message,
                        "logprobs": meta.logprobs.then(|| json!({
                            "content": a.logprobs.iter().map(chat_logprob_entry).collect::<Vec<_>>(),
                        })),
                        "finish_reason": a.finish.map(|r| choice_finish(r, calls)),
                    })
                }
                Endpoint::Completions => json!({
                    "index": i,
                    "text": a.text,
                    "logprobs": meta.logprobs.then(|| completion_logprobs(&a.logprobs, 0).0),
                    "finish_reason": reason,
                }),
            }
        })
        .collect();
    let object = match meta.endpoint {
        Endpoint::Chat => "chat.completion",
        Endpoint::Completions => "text_completion",
    };
    Ok(json!({
        "id": meta.id,
        "object": object,
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": Value::Null,
        "choices": choices,
        "usage": usage(meta.admitted.prompt_tokens, completion_tokens),
    }))
}

/// Turns a streaming request's events into SSE `data:` payloads.
pub struct Streamer {
    meta: Meta,
    completion_tokens: usize,
    /// Characters of each choice's text so far (completions' `text_offset`).
    offsets: Vec<usize>,
    open: usize,
    ended: bool,
    /// Chat with tools: each choice's call parser.
    parsers: Vec<ToolParser>,
}

impl Streamer {
    pub fn new(meta: Meta) -> Streamer {
        let seed = id_seed(&meta.id);
        Streamer {
            parsers: match meta.tools {
                Some(f) => (0..meta.choices)
                    .map(|i| ToolParser::new(f, seed.wrapping_add(i as u64)))
                    .collect(),
                None => Vec::new(),
            },
            offsets: vec![0; meta.choices],
            open: meta.choices,
            meta,
            completion_tokens: 0,
            ended: false,
        }
    }

    pub fn ended(&self) -> bool {
        self.ended
    }

    fn chunk(&self, choices: Vec<Value>) -> String {
        let object = match self.meta.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completions => "text_completion",
        };
        let mut v = json!({
            "id": self.meta.id,
            "object": object,
            "created": self.meta.created,
            "model": self.meta.model,
            "system_fingerprint": Value::Null,
            "choices": choices,
        });
        if self.meta.include_usage {
            // OpenAI sends `usage: null` on every chunk but the last when usage is asked for.
            v["usage"] = Value::Null;
        }
        v.to_string()
    }

    /// The opening payloads: chat streams announce the assistant role per choice.
    pub fn start(&self) -> Vec<String> {
        match self.meta.endpoint {
            Endpoint::Chat => (0..self.meta.choices)
                .map(|i| {
                    self.chunk(vec![json!({
                        "index": i,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": Value::Null,
                        "finish_reason": Value::Null,
                    })])
                })
                .collect(),
            Endpoint::Completions => Vec::new(),
        }
    }

    /// A chat chunk per tool-parser delta; the first carries `logprobs`.
    fn tool_chunks(
        &self,
        choice: usize,
        deltas: Vec<ToolDelta>,
        mut lp: Option<Value>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for d in deltas {
            let delta = match d {
                ToolDelta::Content(c) => json!({"content": c}),
                ToolDelta::Call(c) => {
                    let mut call =
                        json!({"index": c.index, "function": {"arguments": c.arguments}});
                    if let (Some(id), Some(name)) = (c.id, c.name) {
                        call["id"] = json!(id);
                        call["type"] = json!("function");
                        call["function"]["name"] = json!(name);
                    }
                    json!({"tool_calls": [call]})
                }
            };
            out.push(self.chunk(vec![json!({
                "index": choice,
                "delta": delta,
                "logprobs": lp.take(),
                "finish_reason": Value::Null,
            })]));
        }
        if let Some(lp) = lp {
            out.push(self.chunk(vec![json!({
                "index": choice,
                "delta": {"content": ""},
                "logprobs": lp,
                "finish_reason": Value::Null,
            })]));
        }
        out
    }

    pub fn on_event(&mut self, ev: Event) -> Vec<String> {
        match ev {
            Event::Token {
                choice,
                text,
                logprobs,
            } if !self.parsers.is_empty() => {
                let deltas = self.parsers[choice].feed(&text);
                let lp = logprobs.map(|t| json!({"content": [chat_logprob_entry(&t)]}));
                self.tool_chunks(choice, deltas, lp)
            }
            Event::Token {
                choice,
                text,
                logprobs,
            } => {
                // Text held back (a partial character or stop string) makes no chunk
                // unless the token's logprobs must be reported.
                if text.is_empty() && logprobs.is_none() {
                    return Vec::new();
                }
                let lp = logprobs.map(|t| match self.meta.endpoint {
                    Endpoint::Chat => json!({"content": [chat_logprob_entry(&t)]}),
                    Endpoint::Completions => {
                        let (v, next) =
                            completion_logprobs(std::slice::from_ref(&t), self.offsets[choice]);
                        self.offsets[choice] = next;
                        v
                    }
                });
                let c = match self.meta.endpoint {
                    Endpoint::Chat => json!({
                        "index": choice,
                        "delta": {"content": text},
                        "logprobs": lp,
                        "finish_reason": Value::Null,
                    }),
                    Endpoint::Completions => json!({
                        "index": choice,
                        "text": text,
                        "logprobs": lp,
                        "finish_reason": Value::Null,
                    }),
                };
                vec![self.chunk(vec![c])]
            }
            Event::Finished {
                choice,
                reason,
                completion_tokens,
            } => {
                self.completion_tokens += completion_tokens;
                self.open = self.open.saturating_sub(1);
                let mut out = Vec::new();
                let mut calls = 0;
                if !self.parsers.is_empty() {
                    let deltas = self.parsers[choice].finish();
                    out = self.tool_chunks(choice, deltas, None);
                    calls = self.parsers[choice].calls();
                }
                let c = match self.meta.endpoint {
                    Endpoint::Chat => json!({
                        "index": choice,
                        "delta": {},
                        "logprobs": Value::Null,
                        "finish_reason": choice_finish(reason, calls),
                    }),
                    Endpoint::Completions => json!({
                        "index": choice,
                        "text": "",
                        "logprobs": Value::Null,
                        "finish_reason": finish_reason(reason),
                    }),
                };
                out.push(self.chunk(vec![c]));
                out
            }
            Event::Failed(e) => {
                self.ended = true;
                vec![e.body().to_string(), "[DONE]".to_string()]
            }
        }
    }

    /// The engine closed the request's channel: the closing payloads.
    pub fn on_close(&mut self) -> Vec<String> {
        if self.ended {
            return Vec::new();
        }
        self.ended = true;
        let mut out = Vec::new();
        if self.open > 0 {
            let e = ApiError::internal("The inference engine stopped before the request finished.");
            out.push(e.body().to_string());
        } else if self.meta.include_usage {
            let mut v: Value = serde_json::from_str(&self.chunk(Vec::new())).expect("own JSON");
            v["usage"] = usage(self.meta.admitted.prompt_tokens, self.completion_tokens);
            out.push(v.to_string());
        }
        out.push("[DONE]".to_string());
        out
    }
}
