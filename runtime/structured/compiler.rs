//! Compiling a [`Constraint`] into per-sequence parser state, and that
//! state's masks.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};

use super::{gbnf_to_lark, tok_env::tok_env, Constraint};
use crate::text::Tokenizer;
use crate::{HearthError, Result};

/// Compiles constraints for one tokenizer and logit width; the engine keeps
/// one and shares its token trie between every request.
#[derive(Clone)]
pub struct ConstraintCompiler {
    factory: Arc<ParserFactory>,
    words: usize,
}

impl std::fmt::Debug for ConstraintCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConstraintCompiler")
            .field("mask_words", &self.words)
            .finish_non_exhaustive()
    }
}

/// llguidance's messages end with a dump of the parser state; the first
/// part is the one a user can act on.
fn readable(e: impl std::fmt::Display) -> String {
    let s = e.to_string();
    let cut = s.find("\n<state>").unwrap_or(s.len());
    s[..cut].trim().to_string()
}

fn constraint_err(c: &Constraint, e: impl std::fmt::Display) -> HearthError {
    HearthError::InvalidField {
        field: "constraint".into(),
        message: format!("invalid {}: {}", c.kind(), readable(e)),
    }
}

/// Whitespace between JSON tokens: one space, or a newline and an indent
/// of at most 20 (llama.cpp's choice). llguidance's default, any run of
/// whitespace, lets a small model ramble in blank lines until `max_tokens`.
const JSON_WHITESPACE: &str = r"\x20|\x0A[\x20\x09]{0,20}";

/// `schema` with Hearth's JSON layout, unless it sets llguidance's options
/// (`x-guidance`) itself.
fn with_json_layout(mut schema: serde_json::Value) -> serde_json::Value {
    if let Some(o) = schema.as_object_mut() {
        o.entry("x-guidance")
            .or_insert_with(|| serde_json::json!({"whitespace_pattern": JSON_WHITESPACE}));
    }
    schema
}

impl ConstraintCompiler {
    /// For `tok`'s vocabulary and logit rows `width` wide (the model's
    /// `vocab_size`, which may pad past the tokenizer's).
    pub fn new(tok: &Tokenizer, width: usize) -> Result<ConstraintCompiler> {
        let env = tok_env(tok, width)?;
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| HearthError::Tokenizer(format!("constraint engine: {e}")))?;
        factory.quiet();
        Ok(ConstraintCompiler {
            factory: Arc::new(factory),
            words: width.div_ceil(32),
        })
    }

    /// `u32` words of one row's mask.
    pub fn mask_words(&self) -> usize {
        self.words
    }

    /// A fresh parser for `c`; a schema, regex or grammar that does not
    /// compile is `InvalidField { field: "constraint" }` naming the problem.
    pub fn compile(&self, c: &Constraint) -> Result<ConstraintState> {
        let grammar = match c {
            Constraint::JsonObject => TopLevelGrammar::from_json_schema(with_json_layout(
                serde_json::json!({"type": "object"}),
            )),
            Constraint::JsonSchema(schema) => {
                if !schema.is_object() && !schema.is_boolean() {
                    return Err(constraint_err(c, "a schema must be a JSON object"));
                }
                TopLevelGrammar::from_json_schema(with_json_layout(schema.clone()))
            }
            Constraint::Regex(rx) => TopLevelGrammar::from_regex(rx),
            Constraint::Lark(src) => TopLevelGrammar::from_lark(src.clone()),
            Constraint::Gbnf(src) => TopLevelGrammar::from_lark(gbnf_to_lark(src)?),
        };
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| constraint_err(c, e))?;
        let mut matcher = Matcher::new(Ok(parser));
        // Some grammars only fail once the first mask is asked for.
        let first = matcher.compute_mask().map_err(|e| constraint_err(c, e))?;
        if first.is_zero() {
            return Err(constraint_err(c, "no token can start the output"));
        }
        Ok(ConstraintState {
            matcher,
            words: self.words,
        })
    }
}

/// One sequence's position in its constraint.
#[derive(Clone)]
pub struct ConstraintState {
    matcher: Matcher,
    words: usize,
}

impl std::fmt::Debug for ConstraintState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConstraintState")
            .field("stopped", &self.matcher.is_stopped())
            .finish_non_exhaustive()
    }
}

fn failed(e: impl std::fmt::Display) -> HearthError {
    HearthError::InvalidRequest(format!("constrained decoding failed: {}", readable(e)))
}

impl ConstraintState {
    /// The tokens allowed next, as a bitmask (`mask_words` words; bit
    /// `t % 32` of word `t / 32` is token `t`). Once the constraint is
    /// complete, only end-of-sequence tokens.
    pub fn mask(&mut self) -> Result<Vec<u32>> {
        let m = self.matcher.compute_mask_or_eos().map_err(failed)?;
        let mut words = m.as_slice().to_vec();
        words.resize(self.words, 0);
        Ok(words)
    }

    /// Whether `token` may come next (without computing a whole mask).
    pub fn allows(&mut self, token: u32) -> Result<bool> {
        Ok(self.matcher.validate_tokens(&[token]).map_err(failed)? == 1)
    }

    /// Advances past `token`, which the last mask allowed.
    pub fn consume(&mut self, token: u32) -> Result<()> {
        self.matcher.consume_token(token).map_err(failed)
    }

    /// Takes back the last `n` tokens consumed.
    pub fn rollback(&mut self, n: usize) -> Result<()> {
        self.matcher.rollback(n).map_err(failed)
    }

    /// Puts the parser in its error state (tests of failure paths).
    #[doc(hidden)]
    pub fn debug_break(&mut self) {
        let _ = self.matcher.test_trigger_lexer_error();
    }

    /// The output is complete: nothing may follow it.
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped()
    }
}

/// Whether `mask` allows token `t`.
pub fn mask_allows(mask: &[u32], t: u32) -> bool {
    mask.get(t as usize / 32)
        .is_some_and(|w| (w >> (t % 32)) & 1 == 1)
}
