//! `hearth embed`: embeddings of texts given as arguments, or of stdin's
//! lines, one JSON array of floats per input and line on stdout, pooled as
//! the model declares (or `--pooling`).

use std::io::{BufRead, Write};

use anyhow::{bail, Context, Result};
use clap::Args;
use hearth::{EngineConfig, Prompt};

use crate::load::{load, parse_pooling, ModelArgs};

/// Inputs per engine call: output comes as each batch is done, and stdin
/// can be longer than memory would like.
const BATCH: usize = 64;

#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Texts to embed; none: every line of stdin is one input.
    texts: Vec<String>,
    /// Pool mean, cls or last instead of as the model declares (a model
    /// that declares no pooling needs it).
    #[arg(long, value_parser = parse_pooling)]
    pooling: Option<hearth::PoolingType>,
    /// Inputs run together in one engine step at most.
    #[arg(long, default_value_t = 16)]
    max_seqs: u32,
    /// Tokens per engine step (longer inputs are prefilled in chunks).
    #[arg(long, default_value_t = 512)]
    max_step_tokens: u32,
}

/// The inputs: `texts`, else stdin's lines (an empty one is an error: it
/// has nothing to embed).
fn inputs(texts: &[String]) -> Result<Vec<String>> {
    if !texts.is_empty() {
        if let Some(i) = texts.iter().position(String::is_empty) {
            bail!("text {} is empty: there is nothing to embed", i + 1);
        }
        return Ok(texts.to_vec());
    }
    let mut out = Vec::new();
    for (i, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        if line.is_empty() {
            bail!("stdin line {} is empty: there is nothing to embed", i + 1);
        }
        out.push(line);
    }
    if out.is_empty() {
        bail!("nothing to embed: give texts as arguments or lines on stdin");
    }
    Ok(out)
}

pub fn run(a: EmbedArgs) -> Result<()> {
    let texts = inputs(&a.texts)?;
    let mut h = load(&a.model, a.max_step_tokens, a.max_seqs, a.max_seqs, false)?;
    let cfg = EngineConfig {
        pooling: a.pooling,
        ..h.config().clone()
    };
    h.set_config(cfg)?;
    let pooling = h.pooling()?;
    eprintln!(
        "hearth: {} pooling{}, {} dimensions",
        pooling.kind.as_str(),
        if pooling.normalize {
            ", normalized"
        } else {
            ""
        },
        h.model.config.hidden_size
    );
    let mut out = std::io::stdout().lock();
    let mut tokens = 0;
    for (b, batch) in texts.chunks(BATCH).enumerate() {
        let prompts: Vec<Prompt> = batch.iter().map(|t| Prompt::Text(t.clone())).collect();
        let vectors = h.embed_blocking(&prompts).with_context(|| {
            format!(
                "embedding inputs {}..{}",
                b * BATCH + 1,
                b * BATCH + batch.len()
            )
        })?;
        for v in vectors {
            tokens += v.prompt_tokens;
            serde_json::to_writer(&mut out, &v.embedding)?;
            writeln!(out)?;
        }
        out.flush()?;
    }
    eprintln!("hearth: {} inputs, {tokens} tokens", texts.len());
    Ok(())
}
