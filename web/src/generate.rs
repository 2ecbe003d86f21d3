//! One generation as the JS API runs it: submit to the engine's driver,
//! hand each token's text to the page's callback, and resolve to the result
//! (with the tool calls the reply made, parsed in the model's format).

use std::cell::RefCell;
use std::rc::Rc;

use hearth::engine::Request;
use hearth::structured::tools::{ToolCall, ToolDelta, ToolFormat, ToolParser};
use hearth::{EngineHandle, Event, FinishReason, Generation, HearthError};
use js_sys::Function;
use serde::Serialize;
use wasm_bindgen::prelude::*;
use web_time::Instant;

use crate::engine::{serialize, to_js, LastRun, Stats};

#[derive(Serialize)]
struct TokenOut<'a> {
    text: &'a str,
    token_id: u32,
}

#[derive(Serialize)]
struct ResultOut<'a> {
    /// The reply's text; with tools, the text outside its calls.
    text: &'a str,
    token_ids: &'a [u32],
    /// The calls the reply made (with `tools`), in OpenAI's shape.
    tool_calls: &'a [ToolCall],
    prompt_tokens: usize,
    completion_tokens: usize,
    /// "stop", "length", "cancelled", or "tool_calls" when the reply made calls.
    finish_reason: &'a str,
    prefill_tok_s: f64,
    decode_tok_s: f64,
    ttft_ms: f64,
}

/// Pieces of text the callback gets: all of it, or with tools only the
/// text outside calls (the calls come whole in the result).
struct Text {
    parser: Option<ToolParser>,
    calls: Vec<ToolCall>,
}

impl Text {
    fn shown(&mut self, deltas: Vec<ToolDelta>) -> String {
        let mut out = String::new();
        for d in deltas {
            match d {
                ToolDelta::Content(c) => out.push_str(&c),
                ToolDelta::Call(c) => c.merge_into(&mut self.calls),
            }
        }
        out
    }

    fn push(&mut self, piece: &str) -> String {
        match self.parser.as_mut() {
            Some(p) => {
                let d = p.feed(piece);
                self.shown(d)
            }
            None => piece.to_string(),
        }
    }

    fn finish(&mut self) -> String {
        match self.parser.as_mut() {
            Some(p) => {
                let d = p.finish();
                self.shown(d)
            }
            None => String::new(),
        }
    }
}

fn emit(on_token: &Function, text: &str, token_id: u32) -> bool {
    let out = serialize(&TokenOut { text, token_id });
    // A throwing callback stops the generation like `false` does.
    match on_token.call1(&JsValue::NULL, &out) {
        Ok(v) => v.as_bool() != Some(false),
        Err(_) => false,
    }
}

/// Runs `req` (its prompt already the ids `prompt_ids`); `calls`: parse the
/// reply for tool calls in this format.
pub(crate) async fn run(
    handle: EngineHandle,
    stats: Rc<RefCell<Stats>>,
    mut req: Request,
    prompt_ids: Vec<u32>,
    calls: Option<ToolFormat>,
    on_token: Function,
) -> Result<JsValue, JsValue> {
    let t0 = Instant::now();
    // As `Engine::generate`: max_tokens is capped by the context.
    req.cap_to_context(prompt_ids.len(), handle.info().context_length);
    let seed = req.sampling.seed.unwrap_or(0);
    let mut stream = handle.submit(req).await.map_err(to_js)?;
    let mut g = Generation::started(prompt_ids);
    let mut text = Text {
        parser: calls.map(|f| ToolParser::new(f, seed)),
        calls: Vec::new(),
    };
    let mut first = None;
    let mut stopped = false;
    let mut finished = false;
    while let Some(ev) = stream.next_event().await {
        match ev {
            Event::Token { token, .. } if !stopped => {
                first.get_or_insert_with(Instant::now);
                g.ids.push(token.id);
                let shown = text.push(&token.text);
                g.text.push_str(&shown);
                if !emit(&on_token, &shown, token.id) {
                    stopped = true;
                    handle.abort(stream.id);
                }
            }
            Event::Token { .. } => {}
            Event::Finished { finish, .. } => {
                g.finish_reason = finish.reason;
                g.spec = finish.spec;
                g.cached_tokens = finish.cached_tokens;
                finished = true;
            }
            Event::Failed(e) => return Err(to_js(e)),
            // The page submits generations only.
            Event::Embedding(_) => {}
        }
    }
    if !finished {
        return Err(to_js(HearthError::Stopped(
            "the engine was unloaded".into(),
        )));
    }
    let rest = text.finish();
    if !rest.is_empty() {
        g.text.push_str(&rest);
        if let Some(&last) = g.ids.last() {
            emit(&on_token, &rest, last);
        }
    }
    let end = Instant::now();
    let first = first.unwrap_or(end);
    g.prefill_secs = (first - t0).as_secs_f64();
    g.decode_secs = (end - first).as_secs_f64();
    stats.borrow_mut().last = Some(LastRun {
        prefill_tok_s: g.prefill_tok_s(),
        decode_tok_s: g.decode_tok_s(),
        prompt_tokens: g.prompt_ids.len(),
        completion_tokens: g.ids.len(),
        spec: g.spec,
    });
    let finish_reason = if text.calls.is_empty() || g.finish_reason != FinishReason::Stop {
        g.finish_reason.as_str()
    } else {
        "tool_calls"
    };
    Ok(serialize(&ResultOut {
        text: &g.text,
        token_ids: &g.ids,
        tool_calls: &text.calls,
        prompt_tokens: g.prompt_ids.len(),
        completion_tokens: g.ids.len(),
        finish_reason,
        prefill_tok_s: g.prefill_tok_s(),
        decode_tok_s: g.decode_tok_s(),
        ttft_ms: g.prefill_secs * 1e3,
    }))
}
