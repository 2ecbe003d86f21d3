//! Incremental detokenization for streaming output.
//!
//! Decoding token by token and concatenating is wrong twice over: a
//! character split across byte tokens (`<0xE2><0x82><0xAC>`, or byte-level
//! BPE pieces) decodes to U+FFFD halves, and SentencePiece decoders strip the
//! leading space of whatever they decode first. So each step decodes a short
//! window that starts with already-printed tokens and prints only what the
//! window adds beyond their text; text that ends in an incomplete character
//! is held back until a later token completes it (or `finish` flushes it).
//! The concatenated chunks equal `decode(all ids)`.

use super::tokenizer::Tokenizer;
use crate::Result;

#[derive(Debug, Clone, Default)]
pub struct StreamDecoder {
    skip_special: bool,
    /// The window: printed context tokens followed by pending ones.
    ids: Vec<u32>,
    /// Decoded text of `ids[..prefix_index]`, already printed.
    prefix: String,
    prefix_index: usize,
}

impl StreamDecoder {
    pub fn new(skip_special: bool) -> Self {
        StreamDecoder {
            skip_special,
            ..Default::default()
        }
    }

    /// Feeds one id; returns the text it completes (often empty while a
    /// character is incomplete).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        if self.prefix.is_empty() && !self.ids.is_empty() {
            let p = tok.decode(&self.ids, self.skip_special)?;
            if !p.ends_with('\u{FFFD}') {
                self.prefix = p;
                self.prefix_index = self.ids.len();
            }
        }
        self.ids.push(id);
        let text = tok.decode(&self.ids, self.skip_special)?;
        if text.len() <= self.prefix.len() || text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let chunk = self.new_text(&text);
        // Keep the last printed tokens as context for the next window.
        let keep = self.ids.split_off(self.prefix_index);
        self.prefix_index = keep.len();
        self.ids = keep;
        self.prefix = tok.decode(&self.ids, self.skip_special)?;
        Ok(chunk)
    }

    /// Flushes what is still held back (an incomplete character at the very
    /// end decodes to U+FFFD, as `decode` does).
    pub fn finish(&mut self, tok: &Tokenizer) -> Result<String> {
        if self.ids.len() == self.prefix_index {
            return Ok(String::new());
        }
        let text = tok.decode(&self.ids, self.skip_special)?;
        let chunk = if text.len() > self.prefix.len() {
            self.new_text(&text)
        } else {
            String::new()
        };
        *self = StreamDecoder::new(self.skip_special);
        Ok(chunk)
    }

    fn new_text(&self, text: &str) -> String {
        if let Some(rest) = text.strip_prefix(self.prefix.as_str()) {
            return rest.to_string();
        }
        // Only a decoder whose output for a token depends on what follows
        // could get here (none that GGUF or common tokenizer.json files
        // use); print what differs rather than fail the stream.
        tracing::warn!("stream decoder: window text does not extend the printed text");
        let common = text
            .char_indices()
            .zip(self.prefix.chars())
            .take_while(|((_, a), b)| a == b)
            .last()
            .map(|((i, c), _)| i + c.len_utf8())
            .unwrap_or(0);
        text[common..].to_string()
    }
}
