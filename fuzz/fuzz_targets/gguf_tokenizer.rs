//! Any bytes as a GGUF file whose `tokenizer.ggml.*` metadata builds a
//! tokenizer (gpt2 byte-level BPE or llama SentencePiece), which then
//! encodes and decodes a little text.
#![no_main]

use hearth::model::gguf::GgufFile;
use hearth::text::vocab::TokenizerSpec;
use hearth::text::Tokenizer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    let Ok(vocab) = file.vocab() else {
        return;
    };
    if let Ok(tok) = Tokenizer::from_spec(&TokenizerSpec::Gguf(vocab)) {
        if let Ok(ids) = tok.encode("Hello, world! <|im_end|> 123", true) {
            let _ = tok.decode(&ids, false);
        }
    }
});
