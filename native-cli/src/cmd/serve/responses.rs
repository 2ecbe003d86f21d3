//! The engine's events turned into OpenAI's response bodies: one
//! `chat.completion` / `text_completion` object, or a stream of
//! `chat.completion.chunk` / `text_completion` chunks ending in `[DONE]`.

use hearth::engine::FinishReason;
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
                Endpoint::Chat => json!({
                    "index": i,
                    "message": {"role": "assistant", "content": a.text},
                    "logprobs": meta.logprobs.then(|| json!({
                        "content": a.logprobs.iter().map(chat_logprob_entry).collect::<Vec<_>>(),
                    })),
                    "finish_reason": reason,
                }),
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
}

impl Streamer {
    pub fn new(meta: Meta) -> Streamer {
        Streamer {
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

    pub fn on_event(&mut self, ev: Event) -> Vec<String> {
        match ev {
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
                let c = match self.meta.endpoint {
                    Endpoint::Chat => json!({
                        "index": choice,
                        "delta": {},
                        "logprobs": Value::Null,
                        "finish_reason": finish_reason(reason),
                    }),
                    Endpoint::Completions => json!({
                        "index": choice,
                        "text": "",
                        "logprobs": Value::Null,
                        "finish_reason": finish_reason(reason),
                    }),
                };
                vec![self.chunk(vec![c])]
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
