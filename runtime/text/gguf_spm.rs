//! GGUF `llama` vocabularies (SentencePiece-style: tokens + scores + types,
//! byte tokens `<0xXX>`), built the way Hugging Face's LlamaTokenizerFast
//! converter builds them: a BPE whose merges are every split of a vocabulary
//! piece into two vocabulary pieces, ranked by the merged piece's score
//! (highest first). Merging the best-scoring adjacent pair first is what
//! SentencePiece's (and llama.cpp's) BPE does, so the two agree.

use std::collections::HashMap;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::{NormalizerWrapper, Tokenizer as HfTokenizer};

use super::gguf_special::added_tokens;
use super::vocab::GgufVocab;
use crate::{HearthError, Result};

const SPACE: &str = "\u{2581}";

pub fn build(v: &GgufVocab) -> Result<HfTokenizer> {
    let scores = v.scores.as_ref().ok_or_else(|| {
        HearthError::Tokenizer(
            "GGUF llama (SentencePiece) vocabulary has no tokenizer.ggml.scores".into(),
        )
    })?;
    if scores.len() < v.tokens.len() {
        return Err(HearthError::Tokenizer(format!(
            "GGUF vocabulary has {} tokens but only {} scores",
            v.tokens.len(),
            scores.len()
        )));
    }
    let vocab: HashMap<String, u32, _> = v
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();

    // Which prefixes and suffixes of a piece are vocabulary pieces, from two
    // byte tries (forward and reversed): linear in the piece's length,
    // where looking every split up in `vocab` hashes the piece once per
    // split (quadratic: one 1.5M-character token took minutes).
    let fwd = Trie::new(v.tokens.iter().map(|t| t.bytes()));
    let rev = Trie::new(v.tokens.iter().map(|t| t.bytes().rev()));
    let mut merges: Vec<(u32, u32, f32)> = Vec::new();
    let (mut prefix, mut suffix) = (Vec::new(), Vec::new());
    for (id, piece) in v.tokens.iter().enumerate() {
        let n = piece.len();
        fwd.ends(piece.bytes(), n, &mut prefix);
        rev.ends(piece.bytes().rev(), n, &mut suffix);
        // prefix[i]: the id of piece[..i]; suffix[j]: the id of the last j bytes.
        let mut local: Vec<(u32, u32, f32)> = piece
            .char_indices()
            .skip(1)
            .filter_map(|(i, _)| Some((prefix[i]?, suffix[n - i]?, scores[id])))
            .collect();
        local.sort_by_key(|&(l, r, _)| (l, r));
        merges.extend(local);
    }
    // Stable: equal scores keep vocabulary order, as in the HF converter.
    merges.sort_by(|a, b| b.2.total_cmp(&a.2));
    let merges = merges
        .into_iter()
        .map(|(l, r, _)| (v.tokens[l as usize].clone(), v.tokens[r as usize].clone()))
        .collect();

    let unk = v
        .unknown_token_id
        .and_then(|id| v.tokens.get(id as usize))
        .cloned()
        .or_else(|| vocab.contains_key("<unk>").then(|| "<unk>".to_string()));
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let bpe = builder
        .build()
        .map_err(|e| HearthError::Tokenizer(format!("building SentencePiece BPE model: {e}")))?;

    let add_prefix = v.add_space_prefix.unwrap_or(true);
    let replace = |from: &str, to: &str| {
        Replace::new(from, to).map_err(|e| HearthError::Tokenizer(format!("normalizer: {e}")))
    };
    let mut norm: Vec<NormalizerWrapper> = Vec::new();
    if add_prefix {
        norm.push(Prepend::new(SPACE.to_string()).into());
    }
    norm.push(replace(" ", SPACE)?.into());
    let mut dec: Vec<DecoderWrapper> = vec![
        replace(SPACE, " ")?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_prefix {
        dec.push(Strip::new(' ', 1, 0).into());
    }

    let mut tok = HfTokenizer::new(bpe);
    tok.with_normalizer(Some(NormalizerSequence::new(norm)));
    tok.with_decoder(Some(DecoderSequence::new(dec)));
    let (special, user) = added_tokens(v);
    tok.add_special_tokens(&special);
    tok.add_tokens(&user);
    Ok(tok)
}

/// A byte trie over the vocabulary; a node that ends a piece holds its id
/// (the last one when a piece repeats, as the `vocab` map keeps).
struct Trie {
    next: HashMap<(u32, u8), u32>,
    id: Vec<Option<u32>>,
}

impl Trie {
    fn new<I: Iterator<Item = u8>>(pieces: impl Iterator<Item = I>) -> Trie {
        let mut t = Trie {
            next: HashMap::new(),
            id: vec![None],
        };
        for (id, bytes) in pieces.enumerate() {
            let mut node = 0u32;
            for b in bytes {
                let fresh = t.id.len() as u32;
                node = *t.next.entry((node, b)).or_insert(fresh);
                if node == fresh {
                    t.id.push(None);
                }
            }
            t.id[node as usize] = Some(id as u32);
        }
        t
    }

    /// `out[k]` = the id of the piece spelled by the first `k` bytes of
    /// `bytes` (`n` of them), for k in 0..=n.
    fn ends(&self, bytes: impl Iterator<Item = u8>, n: usize, out: &mut Vec<Option<u32>>) {
        out.clear();
        out.resize(n + 1, None);
        let mut node = 0u32;
        for (k, b) in bytes.enumerate() {
            match self.next.get(&(node, b)) {
                Some(&child) => node = child,
                None => break,
            }
            out[k + 1] = self.id[node as usize];
        }
    }
}
