//! A tiny random-weight model for the tool-calling tests: a byte-level
//! vocabulary (every byte a token, so any JSON can be spelled) with ChatML's
//! control tokens and Qwen's `<tool_call>` tags, the Qwen2.5 chat template
//! and a context long enough for its tools prompt.

use super::gguf_writer::{self, tiny_dtype, tiny_metadata, tiny_tensors, values, GgufWriter, Val};

/// The real Qwen2.5 template (the library's test fixture).
pub const QWEN25_TEMPLATE: &str = include_str!("../../../runtime/structured/tools/qwen2_5.jinja");

/// GPT-2's printable character for every byte.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable(b) {
        return char::from_u32(b as u32).unwrap();
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap()
}

pub fn tool_model_bytes() -> Vec<u8> {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    let mut types = vec![1i32; 256];
    for (t, ty) in [
        ("<|endoftext|>", 3),
        ("<|im_start|>", 3),
        ("<|im_end|>", 3),
        ("<tool_call>", 4),
        ("</tool_call>", 4),
    ] {
        tokens.push(t.into());
        types.push(ty);
    }
    let vocab = tokens.len();
    let mut w = GgufWriter::new();
    tiny_metadata(&mut w, "qwen2");
    w.kv("qwen2.context_length", Val::U32(4096));
    w.kv("tokenizer.ggml.pre", Val::str("qwen2"));
    w.kv("tokenizer.ggml.tokens", Val::strs(&tokens));
    w.kv("tokenizer.ggml.token_type", Val::i32s(&types));
    w.kv("tokenizer.ggml.merges", Val::strs::<&str>(&[]));
    w.kv("tokenizer.ggml.bos_token_id", Val::U32(256));
    w.kv("tokenizer.ggml.eos_token_id", Val::U32(258));
    w.kv("tokenizer.chat_template", Val::str(QWEN25_TEMPLATE));
    for (i, (name, mut shape)) in tiny_tensors("qwen2", false).into_iter().enumerate() {
        if shape[0] == gguf_writer::VOCAB && shape.len() == 2 {
            shape[0] = vocab;
        }
        let n: usize = shape.iter().product();
        w.tensor(
            &name,
            &shape,
            tiny_dtype(&shape, i),
            &values(n, i as u64 + 1),
        );
    }
    w.build()
}
