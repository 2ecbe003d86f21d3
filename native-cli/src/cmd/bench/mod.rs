//! `hearth bench`: prefill and decode speed of one sequence ([`single`]), or
//! of many at once through continuous batching ([`concurrency`]), with
//! per-kernel times ([`profile`]) and the copy-bandwidth ceiling
//! ([`roofline`]) on request.

mod concurrency;
mod profile;
mod roofline;
mod single;

use anyhow::Result;
use clap::Args;

use crate::load::ModelArgs;
use crate::spec_args;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, default_value_t = 512)]
    prompt_tokens: usize,
    #[arg(long, default_value_t = 128)]
    gen_tokens: usize,
    #[arg(long)]
    json: bool,
    /// Time every kernel (GPU timestamps where the adapter has them, else one
    /// submission each) and print time per kernel kind.
    #[arg(long)]
    profile: bool,
    /// Serve this many identical-length requests at once per level (e.g.
    /// 1,4,16) through the continuous-batching scheduler and print aggregate
    /// decode tok/s, time to first token and inter-token latency percentiles.
    #[arg(long, value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Also measure the adapter's copy bandwidth (a compute-kernel buffer
    /// copy) and report decode's weight reads as a percentage of it.
    #[arg(long)]
    roofline: bool,
    /// Benchmark this chat message (through the chat template) instead of a
    /// synthetic prompt of --prompt-tokens tokens.
    #[arg(long)]
    chat: Option<String>,
    /// With --draft: decode with and without it and print both rates and the
    /// acceptance rate.
    #[command(flatten)]
    spec: spec_args::SpecArgs,
    /// Also decode under this JSON Schema (structured output) and print the
    /// rate beside the unconstrained one.
    #[arg(long, value_name = "FILE")]
    json_schema: Option<std::path::PathBuf>,
}

impl BenchArgs {
    /// `--json-schema`'s constraint.
    fn constraint(&self) -> Result<Option<hearth::structured::Constraint>> {
        let Some(path) = &self.json_schema else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--json-schema {}: {e}", path.display()))?;
        let schema: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("--json-schema {}: not JSON: {e}", path.display()))?;
        Ok(Some(hearth::structured::Constraint::JsonSchema(schema)))
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    anyhow::ensure!(
        args.prompt_tokens > 0 && args.gen_tokens > 0,
        "--prompt-tokens and --gen-tokens must be > 0"
    );
    if args.concurrency.is_empty() {
        single::run(&args)
    } else {
        concurrency::run(&args)
    }
}

/// The benchmark's text: natural language keeps the numbers representative
/// (a repeated token would not be).
const BENCH_TEXT: &str =
    "The quick brown fox jumps over the lazy dog. Hearth runs language models on any GPU. ";
