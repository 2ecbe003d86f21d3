//! Embedding Hearth: load a model and stream a chat answer.
//!
//! `cargo run --release --example chat -- "Which ocean is the largest?" [MODEL_PATH]`
//! (the default model path is where `hearth fetch` puts SmolLM2).

use std::io::Write;

use hearth::{EngineOptions, GenerateOptions, Hearth, Prompt, SamplingParams};

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
    let ids = h.prompt_ids(&Prompt::chat_user(&question))?;
    let opts = GenerateOptions {
        sampling: SamplingParams::greedy(),
        max_tokens: 128,
        ..Default::default()
    };
    let out = h.generate_blocking(&ids, &opts, &mut |ev| {
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
