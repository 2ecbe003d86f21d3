//! The tokenizer as llguidance sees it: every id's bytes in a token trie.
//!
//! The bytes come from the vocabulary's own encoding rather than from
//! decoding each id: byte-level BPE maps bytes to printable characters
//! (GPT-2's table), SentencePiece writes spaces as `▁` and raw bytes as
//! `<0xHH>`. Special (control) tokens carry llguidance's marker byte so
//! that only a grammar that names them can produce them. Ids past the
//! tokenizer's vocabulary (logit rows the model pads to) get unmatchable
//! marker entries, so they are never allowed.

use std::collections::HashMap;
use std::sync::Arc;

use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

use crate::text::Tokenizer;
use crate::{HearthError, Result};

/// How vocabulary strings encode bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Encoding {
    /// GPT-2's byte-to-character table.
    ByteLevel,
    /// SentencePiece: `▁` for space, `<0xHH>` for raw bytes.
    SentencePiece,
}

fn encoding_of(tok: &Tokenizer) -> Encoding {
    let decoder = serde_json::to_value(tok.hf().get_decoder()).unwrap_or_default();
    let mentions = |kind: &str| {
        decoder["type"] == kind
            || decoder["decoders"]
                .as_array()
                .is_some_and(|d| d.iter().any(|x| x["type"] == kind))
    };
    if mentions("ByteLevel") {
        Encoding::ByteLevel
    } else {
        Encoding::SentencePiece
    }
}

/// GPT-2's printable stand-in for every byte, inverted.
fn byte_level_table() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    printable
        .into_iter()
        .zip(chars)
        .filter_map(|(b, c)| Some((char::from_u32(c)?, b as u8)))
        .collect()
}

fn piece_bytes(piece: &str, enc: Encoding, table: &HashMap<char, u8>) -> Vec<u8> {
    match enc {
        Encoding::ByteLevel => {
            let mapped: Option<Vec<u8>> = piece.chars().map(|c| table.get(&c).copied()).collect();
            // A piece outside the table (a hand-added token) is its own text.
            mapped.unwrap_or_else(|| piece.as_bytes().to_vec())
        }
        Encoding::SentencePiece => {
            let hex = piece
                .strip_prefix("<0x")
                .and_then(|h| h.strip_suffix('>'))
                .filter(|h| h.len() == 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => vec![b],
                None => piece.replace('\u{2581}', " ").into_bytes(),
            }
        }
    }
}

/// Every id's bytes, `width` of them (the model's logit row width).
fn token_bytes(tok: &Tokenizer, width: usize) -> Vec<Vec<u8>> {
    let enc = encoding_of(tok);
    let table = byte_level_table();
    let marker = |s: &str| {
        let mut b = vec![TokTrie::SPECIAL_TOKEN_MARKER];
        b.extend_from_slice(s.as_bytes());
        b
    };
    let added = tok.hf().get_added_tokens_decoder();
    (0..width)
        .map(|id| {
            let id32 = id as u32;
            if let Some(t) = added.get(&id32) {
                return if t.special {
                    marker(&t.content)
                } else {
                    t.content.as_bytes().to_vec()
                };
            }
            match tok.token_str(id32) {
                Some(piece) if !piece.is_empty() => piece_bytes(&piece, enc, &table),
                // Padding rows and holes: a special token no grammar names.
                _ => marker(&format!("<[{id}]>")),
            }
        })
        .collect()
}

struct HearthTokEnv {
    trie: TokTrie,
    tokenizer: Tokenizer,
}

impl TokenizerEnv for HearthTokEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.tokenize_with_greedy_fallback(s, |text| {
            // Unencodable text falls back to the trie's greedy tokenization.
            self.tokenizer
                .encode_with(text, false, false)
                .unwrap_or_else(|_| self.trie.greedy_tokenize(text.as_bytes()))
        })
    }
}

/// The token environment of `tok` for logit rows `width` wide.
pub(crate) fn tok_env(tok: &Tokenizer, width: usize) -> Result<TokEnv> {
    if width < tok.vocab_size() {
        return Err(HearthError::InvalidRequest(format!(
            "the model's {width} logits do not cover the tokenizer's {} tokens",
            tok.vocab_size()
        )));
    }
    let bytes = token_bytes(tok, width);
    let eos = tok.eos_ids();
    // Without an end-of-sequence token, grammars still end by stopping.
    let first = eos.first().copied().unwrap_or((width - 1) as u32);
    let info = TokRxInfo::new(width as u32, first);
    let mut trie = TokTrie::from(&info, &bytes);
    if eos.len() > 1 {
        trie = trie.with_eos_tokens(eos);
    }
    Ok(Arc::new(HearthTokEnv {
        trie,
        tokenizer: tok.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_table_is_a_bijection() {
        let t = byte_level_table();
        assert_eq!(t.len(), 256);
        assert_eq!(t[&'!'], b'!');
        // GPT-2 writes a space as Ġ (U+0120) and a newline as Ċ (U+010A).
        assert_eq!(t[&'\u{120}'], b' ');
        assert_eq!(t[&'\u{10A}'], b'\n');
        let mut bytes: Vec<u8> = t.values().copied().collect();
        bytes.sort_unstable();
        bytes.dedup();
        assert_eq!(bytes.len(), 256);
    }

    #[test]
    fn sentencepiece_pieces_decode_to_bytes() {
        let t = byte_level_table();
        let sp = Encoding::SentencePiece;
        assert_eq!(piece_bytes("\u{2581}the", sp, &t), b" the");
        assert_eq!(piece_bytes("<0x0A>", sp, &t), b"\n");
        assert_eq!(piece_bytes("<0xZZ>", sp, &t), b"<0xZZ>");
        assert_eq!(
            piece_bytes("\u{120}hello", Encoding::ByteLevel, &t),
            b" hello"
        );
    }
}
