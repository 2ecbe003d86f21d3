//! `hearth perplexity`: how well the model predicts a text file, e.g. to
//! measure what a KV-cache dtype or a weight format costs in quality.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use hearth::engine::{GenerateOptions, SamplingParams};
use hearth::kv::KvDtype;
use hearth::Hearth;

use crate::load::{load, ModelArgs};

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
    /// Also generate N greedy tokens with an f16 KV cache after the file's
    /// first 64 tokens and report the share of them this --kv-dtype's model
    /// predicts top-1 at each position (teacher-forced; 0: off).
    #[arg(long, default_value_t = 0)]
    agreement: usize,
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
    let agreement = if args.agreement > 0 {
        Some(agreement(&args, &mut h, &ids)?)
    } else {
        None
    };
    if args.json {
        let mut j = serde_json::json!({
            "perplexity": r.perplexity,
            "tokens": r.tokens,
            "nll": r.nll,
            "top1": r.top1,
            "window": window,
            "stride": stride,
            "kv_dtype": args.model.kv_dtype,
        });
        if let Some((hits, n)) = agreement {
            j["agreement"] = serde_json::json!({
                "tokens": n,
                "top1": hits as f64 / n as f64,
                "reference_kv_dtype": "f16",
            });
        }
        println!("{j}");
    } else {
        println!(
            "perplexity {:.4} over {} tokens of {} (window {window}, stride {stride}, KV {}); top-1 {:.1}%",
            r.perplexity,
            r.tokens,
            args.file.display(),
            args.model.kv_dtype,
            100.0 * r.top1
        );
        if let Some((hits, n)) = agreement {
            println!(
                "top-1 agreement with f16 KV over {n} greedy tokens: {:.1}% ({hits} of {n})",
                100.0 * hits as f64 / n as f64
            );
        }
    }
    Ok(())
}

/// Tokens of the file that prompt the agreement run.
const AGREEMENT_PROMPT: usize = 64;

/// (hits, tokens): `--agreement` greedy tokens from a reference with an f16
/// KV cache (a second copy of the model unless `h` is one), scored
/// teacher-forced under `h`.
fn agreement(args: &PerplexityArgs, h: &mut Hearth, ids: &[u32]) -> Result<(usize, usize)> {
    let prompt = &ids[..AGREEMENT_PROMPT.min(ids.len())];
    let ctx = h.model.config.max_position_embeddings;
    anyhow::ensure!(
        prompt.len() + args.agreement <= ctx,
        "--agreement {}: the {}-token prompt plus that many tokens exceed the model's context ({ctx})",
        args.agreement,
        prompt.len()
    );
    let opts = GenerateOptions {
        sampling: SamplingParams::greedy(),
        max_tokens: args.agreement,
        ignore_eos: true,
        ..Default::default()
    };
    let generated = if h.model.kv_dtype() == KvDtype::F16 {
        h.generate_blocking(prompt, &opts, &mut |_| true)?
    } else {
        let f16 = ModelArgs {
            kv_dtype: "f16".into(),
            ..args.model.clone()
        };
        let mut reference = load(&f16, ROWS_PER_STEP, 1, ROWS_PER_STEP, true)?;
        reference.generate_blocking(prompt, &opts, &mut |_| true)?
    };
    let seq = [prompt, &generated.ids].concat();
    let hits = pollster::block_on(hearth::engine::top1_agreement(
        &mut h.model,
        &seq,
        prompt.len(),
    ))?;
    Ok((hits, generated.ids.len()))
}
