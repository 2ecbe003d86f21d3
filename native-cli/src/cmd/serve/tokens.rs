//! A token as OpenAI's logprobs show it: its text and its exact bytes. A
//! byte-level BPE piece (`Ġthe`) or a SentencePiece byte token (`<0xE2>`)
//! may hold part of a UTF-8 character, so the bytes come from the
//! vocabulary entry, not from decoding the token alone (which would give
//! U+FFFD for such halves).

use hearth::text::Tokenizer;
use tokenizers::DecoderWrapper;

#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// The token's text; `bytes:\xNN...` when its bytes are not valid UTF-8 (vLLM's form).
    pub text: String,
    pub bytes: Vec<u8>,
}

pub struct PieceDecoder {
    byte_level: bool,
    /// GPT-2's byte-to-character table inverted (byte-level vocabularies).
    byte_of: std::collections::HashMap<char, u8>,
}

/// GPT-2's `bytes_to_unicode`: printable bytes map to themselves, the rest
/// to code points from U+0100 on.
fn gpt2_byte_chars() -> std::collections::HashMap<char, u8> {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    let mut next = 256u32;
    (0..=255u8)
        .map(|b| {
            if printable(b) {
                (char::from(b), b)
            } else {
                let c = char::from_u32(next).expect("below U+0200");
                next += 1;
                (c, b)
            }
        })
        .collect()
}

fn is_byte_level(d: &DecoderWrapper) -> bool {
    match d {
        DecoderWrapper::ByteLevel(_) => true,
        DecoderWrapper::Sequence(s) => s.get_decoders().iter().any(is_byte_level),
        _ => false,
    }
}

impl PieceDecoder {
    pub fn new(tok: &Tokenizer) -> PieceDecoder {
        PieceDecoder {
            byte_level: tok.hf().get_decoder().is_some_and(is_byte_level),
            byte_of: gpt2_byte_chars(),
        }
    }

    pub fn bytes(&self, tok: &Tokenizer, id: u32) -> Vec<u8> {
        let Some(s) = tok.token_str(id) else {
            return Vec::new();
        };
        if let Some(b) = s
            .strip_prefix("<0x")
            .and_then(|r| r.strip_suffix('>'))
            .filter(|h| h.len() == 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            return vec![b];
        }
        if self.byte_level {
            if let Some(b) = s.chars().map(|c| self.byte_of.get(&c).copied()).collect() {
                return b;
            }
        }
        // SentencePiece pieces mark spaces with U+2581; special tokens are as written.
        s.replace('\u{2581}', " ").into_bytes()
    }

    pub fn piece(&self, tok: &Tokenizer, id: u32) -> Piece {
        let bytes = self.bytes(tok, id);
        let text = match std::str::from_utf8(&bytes) {
            Ok(s) => s.to_string(),
            Err(_) => {
                let mut t = String::from("bytes:");
                for b in &bytes {
                    t.push_str(&format!("\\x{b:02x}"));
                }
                t
            }
        };
        Piece { text, bytes }
    }
}

#[cfg(test)]
mod tests {
    use super::gpt2_byte_chars;

    #[test]
    fn gpt2_table_is_a_bijection_with_the_usual_space() {
        let t = gpt2_byte_chars();
        assert_eq!(t.len(), 256);
        assert_eq!(t[&'Ġ'], b' ');
        assert_eq!(t[&'Ċ'], b'\n');
        assert_eq!(t[&'a'], b'a');
    }
}
