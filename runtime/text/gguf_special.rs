//! Which GGUF vocabulary entries become added tokens, so that they are cut
//! out of the input text before normal tokenization (as llama.cpp and
//! Hugging Face tokenizers do).

use tokenizers::AddedToken;

use super::vocab::GgufVocab;

/// `tokenizer.ggml.token_type` values.
pub const TYPE_NORMAL: i32 = 1;
pub const TYPE_UNKNOWN: i32 = 2;
pub const TYPE_CONTROL: i32 = 3;
pub const TYPE_USER_DEFINED: i32 = 4;
pub const TYPE_BYTE: i32 = 6;

/// Turn-ending tokens that llama.cpp treats as control tokens even when a
/// converter forgot to mark them so.
pub const TURN_END_TOKENS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|eom_id|>",
    "<EOT>",
];

/// The effective type of token `id`: the GGUF's type, with llama.cpp's
/// overrides (bos/eos/eot/unk and the known turn-end tokens are control).
pub fn token_type(v: &GgufVocab, id: u32) -> i32 {
    let declared = v
        .token_types
        .as_ref()
        .and_then(|t| t.get(id as usize).copied())
        .unwrap_or(TYPE_NORMAL);
    if declared == TYPE_USER_DEFINED || declared == TYPE_UNKNOWN || declared == TYPE_BYTE {
        return declared;
    }
    let named = [v.bos_token_id, v.eos_token_id, v.eot_token_id].contains(&Some(id));
    let text = v.tokens.get(id as usize).map(String::as_str).unwrap_or("");
    if named && v.token_types.is_none() || TURN_END_TOKENS.contains(&text) {
        return TYPE_CONTROL;
    }
    declared
}

/// Added tokens for the control, unknown and user-defined entries. Control
/// and unknown tokens are "special" (skipped by `decode(.., skip_special)`
/// and not parsed out of text when special parsing is off); user-defined
/// ones are ordinary text that is always matched whole, as in llama.cpp.
pub fn added_tokens(v: &GgufVocab) -> (Vec<AddedToken>, Vec<AddedToken>) {
    let mut special = Vec::new();
    let mut user = Vec::new();
    for (id, text) in v.tokens.iter().enumerate() {
        if text.is_empty() {
            continue;
        }
        match token_type(v, id as u32) {
            TYPE_CONTROL | TYPE_UNKNOWN => {
                special.push(AddedToken::from(text.clone(), true).normalized(false))
            }
            TYPE_USER_DEFINED => user.push(AddedToken::from(text.clone(), false).normalized(false)),
            _ => {}
        }
    }
    (special, user)
}
