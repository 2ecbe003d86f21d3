//! `Tokenizer`: one type for every source (GGUF `gpt2`, GGUF `llama`,
//! Hugging Face `tokenizer.json`), wrapping a `tokenizers::Tokenizer` plus
//! the model-level facts the crate does not hold (BOS/EOS policy, the ids
//! that end generation, the chat template).

use std::sync::OnceLock;

use serde_json::Value;
use tokenizers::Tokenizer as HfTokenizer;

use super::chat::CHATML_TEMPLATE;
use super::gguf_special::{token_type, TURN_END_TOKENS, TYPE_CONTROL};
use super::vocab::{GgufVocab, TokenizerSpec};
use super::{gguf_bpe, gguf_spm};
use crate::{HearthError, Result};

#[derive(Clone)]
pub struct Tokenizer {
    inner: HfTokenizer,
    /// `inner` with special-token parsing off, built on first use.
    literal: OnceLock<HfTokenizer>,
    /// One past the largest id (computed once: the crate's own count copies
    /// the whole vocabulary).
    vocab_size: usize,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    /// Appended when special tokens are added: EOS when the model asks for
    /// it, or what tokenizer.json's post-processor appends (embedders such
    /// as Qwen3-Embedding end every input with `<|endoftext|>` this way).
    suffix: Vec<u32>,
    eos_ids: Vec<u32>,
    chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos_ids", &self.eos_ids)
            .field("add_bos", &self.add_bos)
            .finish_non_exhaustive()
    }
}

fn tok_err(e: impl std::fmt::Display) -> HearthError {
    HearthError::Tokenizer(e.to_string())
}

/// The ids `inner`'s post-processor adds before and after one sequence,
/// found by framing a probe text (an empty one cannot tell a prefix from a
/// suffix).
fn post_processor_frame(inner: &HfTokenizer) -> Result<(Vec<u32>, Vec<u32>)> {
    let bare = inner.encode_fast("a", false).map_err(tok_err)?;
    let framed = inner.encode_fast("a", true).map_err(tok_err)?;
    let (body, all) = (bare.get_ids(), framed.get_ids());
    let at = all
        .windows(body.len().max(1))
        .position(|w| w == body)
        .filter(|_| !body.is_empty());
    Ok(match at {
        Some(i) => (all[..i].to_vec(), all[i + body.len()..].to_vec()),
        // The body is not found as it is: take a leading id as BOS when
        // framing added any.
        None if all.len() > body.len() => (all[..1].to_vec(), Vec::new()),
        None => (Vec::new(), Vec::new()),
    })
}

impl Tokenizer {
    pub fn from_spec(spec: &TokenizerSpec) -> Result<Tokenizer> {
        match spec {
            TokenizerSpec::Gguf(v) => Self::from_gguf(v),
            TokenizerSpec::HfJson {
                tokenizer_json,
                tokenizer_config_json,
                generation_config_json,
            } => Self::from_hf(
                tokenizer_json,
                tokenizer_config_json.as_deref(),
                generation_config_json.as_deref(),
            ),
        }
    }

    fn from_gguf(v: &GgufVocab) -> Result<Tokenizer> {
        if v.tokens.is_empty() {
            return Err(HearthError::Tokenizer(
                "GGUF vocabulary has no tokens".into(),
            ));
        }
        if let Some(t) = &v.token_types {
            if t.len() < v.tokens.len() {
                return Err(HearthError::Tokenizer(format!(
                    "GGUF vocabulary has {} tokens but only {} token types",
                    v.tokens.len(),
                    t.len()
                )));
            }
        }
        let n = u32::try_from(v.tokens.len()).map_err(|_| {
            HearthError::Tokenizer(format!(
                "GGUF vocabulary has {} tokens, more than 32-bit ids can address",
                v.tokens.len()
            ))
        })?;
        let check = |what: &str, id: Option<u32>| -> Result<Option<u32>> {
            match id {
                Some(id) if id >= n => Err(HearthError::Tokenizer(format!(
                    "GGUF {what} token id {id} is outside the vocabulary ({n} tokens)"
                ))),
                _ => Ok(id),
            }
        };
        let bos = check("bos", v.bos_token_id)?;
        let eos = check("eos", v.eos_token_id)?;
        let eot = check("eot", v.eot_token_id)?;
        check("unknown", v.unknown_token_id)?;
        let (inner, add_bos_default) = match v.model.as_str() {
            "gpt2" => {
                let (t, recipe) = gguf_bpe::build(v)?;
                (t, recipe.add_bos_default)
            }
            "llama" => (gguf_spm::build(v)?, true),
            other => {
                return Err(HearthError::Unsupported(format!(
                    "GGUF tokenizer model \"{other}\" (supported: gpt2, llama)"
                )))
            }
        };
        let template = v.chat_template.clone();
        let mut eos_ids: Vec<u32> = [eos, eot].into_iter().flatten().collect();
        let source = template.as_deref().unwrap_or(CHATML_TEMPLATE);
        for (id, text) in v.tokens.iter().enumerate() {
            let id = id as u32;
            if TURN_END_TOKENS.contains(&text.as_str())
                && token_type(v, id) == TYPE_CONTROL
                && source.contains(text.as_str())
                && !eos_ids.contains(&id)
            {
                eos_ids.push(id);
            }
        }
        Ok(Tokenizer {
            inner,
            literal: OnceLock::new(),
            vocab_size: v.tokens.len(),
            bos,
            eos,
            add_bos: v.add_bos_token.unwrap_or(add_bos_default) && bos.is_some(),
            suffix: eos
                .filter(|_| v.add_eos_token.unwrap_or(false))
                .into_iter()
                .collect(),
            eos_ids,
            chat_template: template,
        })
    }

    fn from_hf(
        tokenizer_json: &str,
        config_json: Option<&str>,
        generation_json: Option<&str>,
    ) -> Result<Tokenizer> {
        let inner: HfTokenizer = tokenizer_json
            .parse()
            .map_err(|e| HearthError::Tokenizer(format!("tokenizer.json: {e}")))?;
        let config: Value = match config_json {
            Some(s) => serde_json::from_str(s)
                .map_err(|e| HearthError::Tokenizer(format!("tokenizer_config.json: {e}")))?,
            None => Value::Null,
        };
        let generation: Value = match generation_json {
            Some(s) => serde_json::from_str(s)
                .map_err(|e| HearthError::Tokenizer(format!("generation_config.json: {e}")))?,
            None => Value::Null,
        };
        // The special tokens tokenizer.json's post-processor puts before and
        // after a sequence: used when tokenizer_config.json does not say.
        let (prefix, post_suffix) = post_processor_frame(&inner)?;
        let post_bos = prefix.first().copied();

        let named = |key: &str| -> Option<u32> {
            let v = config.get(key)?;
            let text = v.as_str().or_else(|| v.get("content")?.as_str())?;
            inner.token_to_id(text)
        };
        let bos = named("bos_token").or(post_bos);
        let eos = named("eos_token");
        let add_bos = match config.get("add_bos_token").and_then(Value::as_bool) {
            Some(b) => b,
            None => post_bos.is_some() && post_bos == bos,
        } && bos.is_some();
        let suffix = match config.get("add_eos_token").and_then(Value::as_bool) {
            Some(add) => eos.filter(|_| add).into_iter().collect(),
            None => post_suffix,
        };

        let template = match config.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template")?.as_str())
                .map(str::to_string),
            _ => None,
        };

        let mut eos_ids: Vec<u32> = eos.into_iter().collect();
        let mut push = |id: u32| {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        };
        let listed: Vec<u64> = match generation.get("eos_token_id") {
            Some(Value::Number(n)) => n.as_u64().into_iter().collect(),
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).collect(),
            _ => Vec::new(),
        };
        for id in listed {
            let id = u32::try_from(id).map_err(|_| {
                HearthError::Tokenizer(format!(
                    "generation_config.json eos_token_id {id} is outside the vocabulary"
                ))
            })?;
            push(id);
        }
        let source = template.as_deref().unwrap_or(CHATML_TEMPLATE);
        let added = inner.get_added_tokens_decoder();
        let mut terminators: Vec<(u32, &str)> = added
            .iter()
            .filter(|(_, t)| t.special && TURN_END_TOKENS.contains(&t.content.as_str()))
            .filter(|(_, t)| source.contains(t.content.as_str()))
            .map(|(id, t)| (*id, t.content.as_str()))
            .collect();
        terminators.sort_unstable();
        terminators.into_iter().for_each(|(id, _)| push(id));
        let vocab_size = inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&m| m as usize + 1);
        if let Some(bad) = eos_ids.iter().find(|id| **id as usize >= vocab_size) {
            return Err(HearthError::Tokenizer(format!(
                "eos token id {bad} is outside the vocabulary ({vocab_size} tokens)"
            )));
        }

        Ok(Tokenizer {
            inner,
            literal: OnceLock::new(),
            vocab_size,
            bos,
            eos,
            add_bos,
            suffix,
            eos_ids,
            chat_template: template,
        })
    }

    /// Token ids of `text`. Special-token text in `text` (e.g. `<|im_start|>`)
    /// becomes the special token. With `add_special`, BOS is prepended when
    /// the model asks for it (and the text does not already start with BOS,
    /// as chat templates that write `bos_token` do) and EOS appended when
    /// the model asks for that.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        self.encode_with(text, add_special, true)
    }

    /// Like `encode`, but with `parse_special == false` the text of control
    /// tokens is tokenized as plain text (llama.cpp's `parse_special`;
    /// user-defined tokens are still matched, as there).
    pub fn encode_with(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>> {
        let tok = if parse_special {
            &self.inner
        } else {
            self.literal.get_or_init(|| {
                let mut t = self.inner.clone();
                t.set_encode_special_tokens(true);
                t
            })
        };
        let enc = tok.encode_fast(text, false).map_err(tok_err)?;
        let body = enc.get_ids();
        let mut ids = Vec::with_capacity(body.len() + 2);
        if add_special && self.add_bos {
            if let Some(bos) = self.bos {
                if body.first() != Some(&bos) {
                    ids.push(bos);
                }
            }
        }
        ids.extend_from_slice(body);
        if add_special {
            ids.extend_from_slice(&self.suffix);
        }
        Ok(ids)
    }

    /// Text of `ids`. With `skip_special`, control tokens are left out.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let n = self.vocab_size() as u64;
        if let Some(bad) = ids.iter().find(|id| u64::from(**id) >= n) {
            return Err(HearthError::Tokenizer(format!(
                "token id {bad} is outside the vocabulary ({n} tokens)"
            )));
        }
        self.inner.decode(ids, skip_special).map_err(tok_err)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// Whether `encode(.., add_special = true)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Every id that ends generation: the model's EOS and EOT, the ids that
    /// generation_config.json lists, and the known turn-end tokens
    /// (`<|im_end|>`, `<|eot_id|>`, `<|endoftext|>`, ...) that are special
    /// tokens of this vocabulary *and* appear in the chat template (ChatML's
    /// when the model has none). The last rule is deliberately conservative:
    /// a turn-end token the template never writes is not something the model
    /// was trained to stop on, and some vocabularies reuse such names for
    /// padding or document separators.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids.contains(&id)
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The vocabulary entry of `id` (byte-level or `▁` form, not decoded text).
    pub fn token_str(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The model's own template (GGUF `tokenizer.chat_template` or
    /// tokenizer_config.json `chat_template`); `None` when it has none, in
    /// which case `chat::ChatTemplate::for_tokenizer` falls back to ChatML.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Text of a special token id, for chat templates (`bos_token`, `eos_token`).
    pub fn special_text(&self, id: Option<u32>) -> String {
        id.and_then(|id| self.inner.id_to_token(id))
            .unwrap_or_default()
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// The underlying `tokenizers::Tokenizer` (e.g. to serialize it as tokenizer.json).
    pub fn hf(&self) -> &HfTokenizer {
        &self.inner
    }
}
