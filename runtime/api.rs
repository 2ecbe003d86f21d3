//! The embedding API: load a model, turn a prompt into ids, generate with a
//! streaming callback. This is what the CLI, the server and desktop apps use.
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

use crate::engine::{generate, GenerateOptions, Generation, TokenEvent};
use crate::gpu::{GpuContext, GpuOptions};
use crate::model::forward::{ForwardOptions, GpuModel, LoadProgress};
use crate::model::load::LoadedModel;
use crate::text::chat::{ChatMessage, ChatTemplate};
use crate::text::Tokenizer;
use crate::{HearthError, Result};

#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    pub gpu: GpuOptions,
    pub forward: ForwardOptions,
    /// [`Hearth::open`] uploads random weights in the model's shapes and
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
}

impl Prompt {
    pub fn chat_user(content: &str) -> Prompt {
        Prompt::Chat(vec![ChatMessage::new("user", content)])
    }
}

pub struct Hearth {
    pub model: GpuModel,
    pub tokenizer: Tokenizer,
    pub template: Option<ChatTemplate>,
    pub source_desc: String,
}

impl Hearth {
    pub fn from_loaded(
        ctx: Arc<GpuContext>,
        loaded: LoadedModel,
        opts: ForwardOptions,
        progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<Hearth> {
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
        Ok(Hearth {
            model,
            tokenizer,
            template,
            source_desc: loaded.source_desc,
        })
    }

    /// Opens a GGUF file or a Hugging Face directory and uploads it.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(
        path: &std::path::Path,
        opts: &EngineOptions,
        progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<Hearth> {
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
            kv_dtype: self.model.pool.dtype(),
            max_step_tokens: self.model.max_step_tokens(),
            max_seqs: seqs,
            max_logit_rows: seqs,
            ..ForwardOptions::default()
        }
    }

    /// Makes `draft` this model's draft model for speculative decoding
    /// (`Drafting::Model`). Its tokenizer must be the target's, token for
    /// token; load it on the same device (`Hearth::from_loaded` with
    /// `self.model.ctx`) with its own KV budget.
    pub fn attach_draft(&mut self, draft: Hearth) -> Result<()> {
        crate::engine::draft_model::check_tokenizers_match(&self.tokenizer, &draft.tokenizer)?;
        self.model.draft = Some(Box::new(draft.model));
        Ok(())
    }

    pub fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        let ids = match prompt {
            Prompt::Text(t) => self.tokenizer.encode(t, true)?,
            Prompt::Chat(messages) => {
                let tpl = self.template.as_ref().ok_or_else(|| {
                    HearthError::Template("the model has no usable chat template".into())
                })?;
                let text = tpl.render(messages, true)?;
                // The template writes BOS itself where the model wants one.
                self.tokenizer.encode(&text, false)?
            }
        };
        if ids.is_empty() {
            return Err(HearthError::InvalidRequest(
                "the prompt is empty (no tokens)".into(),
            ));
        }
        Ok(ids)
    }

    pub async fn generate(
        &mut self,
        prompt_ids: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(TokenEvent) -> bool,
    ) -> Result<Generation> {
        generate(&mut self.model, &self.tokenizer, prompt_ids, opts, on_token).await
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
