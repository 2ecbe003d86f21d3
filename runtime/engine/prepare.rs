//! A request made ready before the engine sees it, off the engine's
//! thread: its prompt bounded in bytes, rendered through the chat template
//! (with its tools) and tokenized, checked against the context, and its
//! constraint compiled. The engine takes the result (`Prompt::Ids`, a forced
//! call's grammar already set as the constraint) without templating or
//! tokenizing, so one huge prompt or a slow template cannot stall the
//! requests running. A front end holds one [`Preparer`] (cheap to clone)
//! and calls it on its own workers; `hearth serve` does.

use std::sync::Arc;

use super::llm_engine::Engine;
use super::request::Request;
use crate::api::Prompt;
use crate::structured::tools::prepare_request_bounded;
use crate::structured::ConstraintCompiler;
use crate::text::chat::ChatTemplate;
use crate::text::Tokenizer;
use crate::{HearthError, Result};

/// Prompt text bytes per context token that are always let through to the
/// tokenizer, whatever the vocabulary's longest token.
const MIN_BYTES_PER_TOKEN: usize = 16;

/// What preparing a request needs of the engine: its tokenizer, chat
/// template, constraint compiler and context length.
#[derive(Clone)]
pub struct Preparer {
    inner: Arc<Inner>,
}

struct Inner {
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    /// `None` when the vocabulary cannot be indexed for constraints: the
    /// engine reports that per request, as before.
    compiler: Option<ConstraintCompiler>,
    context_length: usize,
    max_text_bytes: usize,
}

impl std::fmt::Debug for Preparer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preparer")
            .field("context_length", &self.inner.context_length)
            .field("max_text_bytes", &self.inner.max_text_bytes)
            .finish_non_exhaustive()
    }
}

impl Preparer {
    /// A preparer for `engine`'s model (builds its constraint compiler,
    /// which the engine keeps too).
    pub fn new(engine: &mut Engine) -> Preparer {
        let compiler = engine.constraint_compiler().ok().cloned();
        let tokenizer = engine.tokenizer.clone();
        let context_length = engine.model.config.max_position_embeddings;
        let longest = (0..tokenizer.vocab_size() as u32)
            .filter_map(|id| tokenizer.token_str(id))
            .map(|t| t.len())
            .max()
            .unwrap_or(0);
        Preparer {
            inner: Arc::new(Inner {
                template: engine.template.clone(),
                compiler,
                context_length,
                max_text_bytes: max_text_bytes(context_length, longest),
                tokenizer,
            }),
        }
    }

    /// The most prompt text (after the chat template) that could fit in the
    /// context: longer prompts are refused without tokenizing.
    pub fn max_text_bytes(&self) -> usize {
        self.inner.max_text_bytes
    }

    pub fn context_length(&self) -> usize {
        self.inner.context_length
    }

    /// Validates `req`, turns its prompt into ids (refusing text longer
    /// than [`Preparer::max_text_bytes`] first), checks prompt plus
    /// `max_tokens` against the context and compiles its constraint.
    /// Returns the prompt's token count. The errors are the engine's
    /// (`InvalidField` naming the field, `ContextLength`, `Template`).
    pub fn prepare(&self, req: &mut Request) -> Result<usize> {
        let p = &self.inner;
        req.validate()?;
        let max = p.max_text_bytes;
        let input_bytes: usize = match &req.prompt {
            Prompt::Text(t) => t.len(),
            Prompt::Chat(m) => m.iter().map(|m| m.content.len()).sum(),
            Prompt::Ids(_) => 0,
        };
        if input_bytes > max {
            return Err(HearthError::InvalidField {
                field: "prompt".into(),
                message: format!(
                    "the prompt is {input_bytes} bytes of text; the model's context of {} tokens \
                     holds at most {max}",
                    p.context_length
                ),
            });
        }
        let compiler = p.compiler.as_ref();
        // A response format or grammar the request brought (a forced call's
        // grammar is compiled as it is made).
        let own_constraint = req.constraint.clone();
        let ids = prepare_request_bounded(req, &p.tokenizer, p.template.as_ref(), compiler, max)?;
        let completion = req.max_tokens.unwrap_or(1);
        if ids.len() + completion > p.context_length {
            return Err(HearthError::ContextLength {
                prompt: ids.len(),
                completion,
                context: p.context_length,
            });
        }
        if let (Some(c), Some(comp)) = (&own_constraint, compiler) {
            comp.compile(c)?;
        }
        Ok(ids.len())
    }
}

/// The prompt text that could fit in `context` tokens when no token is
/// longer than `longest` bytes (token strings are at least as long as the
/// text they cover: GPT-2's byte characters and SentencePiece's `▁` and
/// `<0xHH>` are longer).
fn max_text_bytes(context: usize, longest: usize) -> usize {
    context.saturating_mul(longest.max(MIN_BYTES_PER_TOKEN))
}

#[cfg(test)]
mod tests {
    use super::max_text_bytes;

    #[test]
    fn text_bound_is_context_times_the_longest_token() {
        assert_eq!(max_text_bytes(256, 1), 256 * 16);
        assert_eq!(max_text_bytes(4096, 40), 4096 * 40);
        assert_eq!(max_text_bytes(usize::MAX, 20), usize::MAX);
    }
}
