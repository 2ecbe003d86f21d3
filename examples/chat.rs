//! Embedding Hearth: load a model and stream a chat answer.
//!
//! `cargo run --release --example chat -- "Which ocean is the largest?" [MODEL_PATH]`
//! (the default model path is where `hearth fetch` puts SmolLM2).

use std::io::Write;

use hearth::{EngineOptions, Hearth, Request};

fn main() -> hearth::Result<()> {
    let mut args = std::env::args().skip(1);
    let question = args
        .next()
        .unwrap_or_else(|| "Which ocean is the largest?".into());
    let model = args
        .next()
        .unwrap_or_else(|| "models/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    let mut h = Hearth::open(model.as_ref(), &EngineOptions::default(), &mut |p| {
        eprint!("\rloading {}/{}", p.done, p.total);
    })?;
    eprintln!();
    // The library's defaults: greedy, 256 tokens at most.
    let out = h.generate_request_blocking(Request::chat(&question), &mut |ev| {
        print!("{}", ev.text);
        let _ = std::io::stdout().flush();
        true
    })?;
    println!();
    eprintln!(
        "{} tokens, {:.1} tok/s decode",
        out.ids.len(),
        out.decode_tok_s()
    );
    Ok(())
}
