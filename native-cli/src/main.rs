//! `hearth`: the native command line of the Hearth runtime.

mod cmd;
mod fetch;
mod load;
mod spec_args;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cmd::{bench, embed, info, perplexity, run, serve};

#[derive(Parser)]
#[command(
    name = "hearth",
    version,
    about = "Cross-vendor LLM inference on any GPU wgpu reaches"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List GPU adapters with backend, type, features and key limits.
    Info {
        #[arg(long)]
        json: bool,
        /// Also show this model's KV cache bytes per token for each --kv-dtype.
        #[arg(long, short)]
        model: Option<PathBuf>,
    },
    /// Generate text from a prompt (streams to stdout; speed to stderr).
    Run(run::RunArgs),
    /// Measure prefill and decode speed.
    Bench(bench::BenchArgs),
    /// Download the default model (SmolLM2-135M-Instruct Q4_1) if it is missing.
    Fetch,
    /// Serve the model over an OpenAI-compatible HTTP API.
    Serve(serve::ServeArgs),
    /// Perplexity of a text file under the model (sliding window).
    Perplexity(perplexity::PerplexityArgs),
    /// Embed texts (arguments, or stdin's lines): one JSON vector per line.
    Embed(embed::EmbedArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A server's log is its output: startup address and one line per request.
    let default_filter = match cli.cmd {
        Cmd::Serve(_) => "warn,hearth=info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HEARTH_LOG")
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only help a person at a terminal, not a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let r = match cli.cmd {
        Cmd::Info { json, model } => info::run(json, model),
        Cmd::Run(a) => run::run(a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::Fetch => fetch::ensure_default_model().map(|p| println!("{}", p.display())),
        Cmd::Serve(a) => serve::serve(a),
        Cmd::Perplexity(a) => perplexity::run(a),
        Cmd::Embed(a) => embed::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hearth: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
