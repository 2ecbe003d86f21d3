//! GGUF `gpt2` vocabularies: byte-level BPE from `tokens` + `merges`, with
//! the pre-tokenizer that `tokenizer.ggml.pre` names.

use std::collections::HashMap;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::Tokenizer as HfTokenizer;

use super::gguf_special::added_tokens;
use super::pretokenizers::{byte_level_pre_tokenizer, recipe_for, PreTokenizerRecipe};
use super::vocab::GgufVocab;
use crate::{HearthError, Result};

/// Builds the tokenizer; also returns the pre-tokenizer recipe (its
/// `add_bos_default` is needed by the caller).
pub fn build(v: &GgufVocab) -> Result<(HfTokenizer, PreTokenizerRecipe)> {
    let recipe = recipe_for(v.pre.as_deref())?;
    let merges_src = v.merges.as_ref().ok_or_else(|| {
        HearthError::Tokenizer("GGUF gpt2 vocabulary has no tokenizer.ggml.merges".into())
    })?;
    // The hasher type is inferred from `vocab_and_merges` (ahash's); later
    // duplicates win, as in llama.cpp's token_to_id.
    let vocab: HashMap<String, u32, _> = v
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let mut merges = Vec::with_capacity(merges_src.len());
    for m in merges_src {
        // Split at the first space after the first character, as llama.cpp
        // does: a merge's left side may itself be a lone space in
        // non-byte-level vocabularies.
        let Some(pos) = m
            .char_indices()
            .skip(1)
            .find(|(_, c)| *c == ' ')
            .map(|(i, _)| i)
        else {
            continue;
        };
        let (a, b) = (&m[..pos], &m[pos + 1..]);
        // Merges whose parts or result are not in the vocabulary can never
        // fire in llama.cpp either; the tokenizers crate rejects them.
        if vocab.contains_key(a) && vocab.contains_key(b) && vocab.contains_key(&format!("{a}{b}"))
        {
            merges.push((a.to_string(), b.to_string()));
        }
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(recipe.ignore_merges)
        .build()
        .map_err(|e| HearthError::Tokenizer(format!("building BPE model: {e}")))?;
    let mut tok = HfTokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(byte_level_pre_tokenizer(&recipe)?));
    tok.with_decoder(Some(ByteLevelDecoder::new(false, false, false)));
    let (special, user) = added_tokens(v);
    tok.add_special_tokens(&special);
    tok.add_tokens(&user);
    Ok((tok, recipe))
}
