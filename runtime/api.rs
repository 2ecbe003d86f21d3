//! The embedding API: open a model into an [`Engine`], turn a prompt into
//! ids, and [`Engine::generate`], one request with a streaming callback, as
//! sugar over the steppable core. For many requests at once use
//! `add_request`/`step` or the async handle ([`Engine::spawn`] /
//! [`Engine::into_driver`]).
//!
//! ```no_run
//! # fn main() -> hearth::Result<()> {
//! use hearth::{Hearth, EngineOptions, Prompt, GenerateOptions};
//! let mut h = Hearth::open("models/SmolLM2-135M-Instruct.Q4_1.gguf".as_ref(), &EngineOptions::default(), &mut |_| {})?;
//! let ids = h.prompt_ids(&Prompt::chat_user("Which ocean is the largest?"))?;
//! let out = h.generate_blocking(&ids, &GenerateOptions::default(), &mut |ev| {
//!     print!("{}", ev.text);
//!     true
//! })?;
//! println!("\n{} tokens", out.ids.len());
//! # Ok(()) }
//! ```

use std::sync::Arc;

use web_time::Instant;

use crate::engine::{
    Engine, EngineConfig, GenerateOptions, Generation, Output, Request, TokenEvent,
};
use crate::gpu::{GpuContext, GpuOptions};
use crate::model::forward::{ForwardOptions, GpuModel, LoadProgress};
use crate::model::load::LoadedModel;
use crate::text::chat::{ChatMessage, ChatTemplate};
use crate::text::Tokenizer;
use crate::{HearthError, Result};

/// The engine, by the crate's name: what `Hearth::open` returns.
pub type Hearth = Engine;

#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    pub gpu: GpuOptions,
    pub forward: ForwardOptions,
    /// [`Engine::open`] uploads random weights in the model's shapes and
    /// formats instead of its data (benchmarks; see
    /// [`crate::model::dummy`]): a `.gguf` may then be only its header.
    pub dummy_weights: bool,
}

/// What to generate from.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// Raw text; special-token markup in it (e.g. `<|im_start|>`) is parsed as special tokens.
    Text(String),
    /// Messages rendered with the model's chat template.
    Chat(Vec<ChatMessage>),
    /// Token ids, as they are.
    Ids(Vec<u32>),
}

impl Prompt {
    pub fn chat_user(content: &str) -> Prompt {
        Prompt::Chat(vec![ChatMessage::new("user", content)])
    }
}

/// A prompt's token ids: raw text with special-token markup parsed, chat
/// messages through `template`, or ids as they are. An empty result is an
/// error naming the prompt. The engine uses it, and so does the browser
/// worker, which tokenizes before handing ids to the engine's driver.
pub fn encode_prompt(
    tokenizer: &Tokenizer,
    template: Option<&ChatTemplate>,
    prompt: &Prompt,
) -> Result<Vec<u32>> {
    let ids = match prompt {
        Prompt::Text(t) => tokenizer.encode(t, true)?,
        Prompt::Chat(messages) => {
            let tpl = template.ok_or_else(|| {
                HearthError::Template("the model has no usable chat template".into())
            })?;
            let text = tpl.render(messages, true)?;
            // The template writes BOS itself where the model wants one.
            tokenizer.encode(&text, false)?
        }
        Prompt::Ids(ids) => ids.clone(),
    };
    if ids.is_empty() {
        return Err(HearthError::InvalidField {
            field: "prompt".into(),
            message: "the prompt is empty (no tokens)".into(),
        });
    }
    Ok(ids)
}

impl Engine {
    pub fn from_loaded(
        ctx: Arc<GpuContext>,
        loaded: LoadedModel,
        opts: ForwardOptions,
        progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<Engine> {
        let tokenizer = Tokenizer::from_spec(&loaded.tokenizer)?;
        let model = GpuModel::load(ctx, &*loaded.weights, opts, progress)?;
        if tokenizer.vocab_size() > model.config.vocab_size {
            return Err(HearthError::Config(format!(
                "the tokenizer has {} tokens but the model's vocabulary is {}",
                tokenizer.vocab_size(),
                model.config.vocab_size
            )));
        }
        let template = ChatTemplate::for_tokenizer(&tokenizer).ok();
        Ok(Engine::new(
            model,
            tokenizer,
            template,
            loaded.source_desc,
            EngineConfig::default(),
        ))
    }

    /// Opens a GGUF file or a Hugging Face directory and uploads it.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(
        path: &std::path::Path,
        opts: &EngineOptions,
        progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<Engine> {
        let loaded = if opts.dummy_weights {
            crate::model::load::open_dummy(path)?
        } else {
            crate::model::load::open(path)?
        };
        let ctx = GpuContext::new_blocking(&opts.gpu)?;
        Self::from_loaded(ctx, loaded, opts.forward.clone(), progress)
    }

    /// Load options for a draft model of this one: the same step and batch
    /// sizes and KV dtype, one logit row per sequence (a draft step wants
    /// the next token only), `kv_memory` bytes of KV cache of its own.
    pub fn draft_forward_options(&self, kv_memory: u64) -> ForwardOptions {
        let seqs = self.model.max_seqs();
        ForwardOptions {
            kv_memory,
            kv_dtype: self.model.kv_dtype(),
            max_step_tokens: self.model.max_step_tokens(),
            max_seqs: seqs,
            max_logit_rows: seqs,
            ..ForwardOptions::default()
        }
    }

    /// Generates from `prompt_ids` as one request and waits for it; the
    /// callback returns `false` to stop early (the result then ends as
    /// cancelled). `max_tokens` is capped by the context.
    pub async fn generate(
        &mut self,
        prompt_ids: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(TokenEvent) -> bool,
    ) -> Result<Generation> {
        let req = Request::from_options(crate::Prompt::Ids(prompt_ids.to_vec()), opts);
        self.generate_request(req, on_token).await
    }

    /// Runs one request of one choice to its end, streaming its tokens to
    /// `on_token` (`false` stops it: the result then ends as cancelled).
    /// Unlike `add_request`, a `max_tokens` past the context is capped to it.
    /// Other requests in the engine advance meanwhile; their outputs wait
    /// for the next `step`.
    pub async fn generate_request(
        &mut self,
        mut req: Request,
        on_token: &mut dyn FnMut(TokenEvent) -> bool,
    ) -> Result<Generation> {
        if req.n != 1 {
            return Err(HearthError::InvalidField {
                field: "n".into(),
                message: "generate runs one choice; submit requests with n > 1 to the engine"
                    .into(),
            });
        }
        let prompt_ids = self.request_prompt_ids(&mut req)?;
        req.cap_to_context(prompt_ids.len(), self.model.config.max_position_embeddings);
        let t0 = Instant::now();
        let (id, _) = self.add_request(req)?;
        let mut g = Generation::started(prompt_ids);
        let mut first: Option<Instant> = None;
        let mut stopped = false;
        loop {
            for out in self.step().await {
                if out.request() != id {
                    self.stash.push(out);
                    continue;
                }
                match out {
                    // Tokens a step produced past the one the callback stopped at.
                    Output::Token { .. } if stopped => {}
                    Output::Token { token, .. } => {
                        first.get_or_insert_with(Instant::now);
                        let go_on = on_token(TokenEvent {
                            id: token.id,
                            text: &token.text,
                            top_logprobs: &token.top_logprobs,
                        });
                        g.ids.push(token.id);
                        g.text.push_str(&token.text);
                        g.top_logprobs.push(token.top_logprobs);
                        if !go_on {
                            stopped = true;
                            self.abort(id);
                        }
                    }
                    Output::Finished { finish, .. } => {
                        let end = Instant::now();
                        let first = first.unwrap_or(end);
                        g.finish_reason = finish.reason;
                        g.spec = finish.spec;
                        g.cached_tokens = finish.cached_tokens;
                        g.prefill_secs = (first - t0).as_secs_f64();
                        g.decode_secs = (end - first).as_secs_f64();
                        return Ok(g);
                    }
                    Output::Failed { error, .. } => return Err(error),
                    Output::Embedding { .. } => {}
                }
            }
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn generate_request_blocking(
        &mut self,
        req: Request,
        on_token: &mut dyn FnMut(TokenEvent) -> bool,
    ) -> Result<Generation> {
        pollster::block_on(self.generate_request(req, on_token))
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn generate_blocking(
        &mut self,
        prompt_ids: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(TokenEvent) -> bool,
    ) -> Result<Generation> {
        pollster::block_on(self.generate(prompt_ids, opts, on_token))
    }
}
