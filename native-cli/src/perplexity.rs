//! `hearth perplexity`: how well the model predicts a text file, e.g. to
//! measure what a KV-cache dtype or a weight format costs in quality.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::{load, ModelArgs};

#[derive(Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// UTF-8 text to score, e.g. /usr/share/common-licenses/GPL-3 (on every Debian machine).
    #[arg(long)]
    file: PathBuf,
    /// Tokens per window (at most the model's context).
    #[arg(long, default_value_t = 512)]
    window: usize,
    /// Tokens a window advances by; each target then has at least
    /// window - stride tokens of context (default: half the window).
    #[arg(long)]
    stride: Option<usize>,
    /// Score only the first N tokens of the file (0: all).
    #[arg(long, default_value_t = 0)]
    max_tokens: usize,
    /// Print `{"perplexity", "tokens", ...}` instead of text.
    #[arg(long)]
    json: bool,
}

/// Rows scored per step: full logit rows come back for each.
const ROWS_PER_STEP: u32 = 128;

pub fn run(args: PerplexityArgs) -> Result<()> {
    let text =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let text = String::from_utf8(text)
        .map_err(|e| anyhow::anyhow!("{} is not UTF-8 text: {e}", args.file.display()))?;
    let mut h = load(&args.model, ROWS_PER_STEP, 1, ROWS_PER_STEP, args.json)?;
    let mut ids = h.tokenizer.encode(&text, true)?;
    if args.max_tokens > 0 {
        ids.truncate(args.max_tokens);
    }
    anyhow::ensure!(
        ids.len() >= 2,
        "{} has fewer than 2 tokens",
        args.file.display()
    );
    let window = args.window.min(h.model.config.max_position_embeddings);
    let stride = args.stride.unwrap_or(window / 2).max(1);
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(ids.len() as u64 - 1)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "scoring [{bar:30}] {pos}/{len} tokens ({elapsed}, eta {eta})",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    let r = pollster::block_on(hearth::engine::perplexity(
        &mut h.model,
        &ids,
        window,
        stride,
        &mut |done, _| bar.set_position(done as u64),
    ))?;
    bar.finish_and_clear();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "perplexity": r.perplexity,
                "tokens": r.tokens,
                "nll": r.nll,
                "top1": r.top1,
                "window": window,
                "stride": stride,
                "kv_dtype": args.model.kv_dtype,
            })
        );
    } else {
        println!(
            "perplexity {:.4} over {} tokens of {} (window {window}, stride {stride}, KV {}); top-1 {:.1}%",
            r.perplexity,
            r.tokens,
            args.file.display(),
            args.model.kv_dtype,
            100.0 * r.top1
        );
    }
    Ok(())
}
