//! Tokenizers (built with the `tokenizers` crate from GGUF metadata or
//! `tokenizer.json`) and chat templates (minijinja).

pub mod chat;
pub mod chat_limits;
pub mod gguf_bpe;
pub mod gguf_special;
pub mod gguf_spm;
pub mod pretokenizers;
pub mod stream;
pub mod tokenizer;
pub mod vocab;

pub use chat::{ChatMessage, ChatTemplate};
pub use stream::StreamDecoder;
pub use tokenizer::Tokenizer;
