//! `hearth`: the native command line of the Hearth runtime.

mod cmd;
mod fetch;
mod hub;
mod load;
mod sampling_args;
mod spec_args;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cmd::{bench, chat, embed, info, perplexity, run, serve};

#[derive(Parser)]
#[command(
    name = "hearth",
    version,
    about = "Cross-vendor LLM inference on any GPU wgpu reaches",
    help_template = "{about}\n\n{before-help}\n{usage-heading} {usage}\n\n{all-args}{after-help}",
    before_help = "Start here (the default model, SmolLM2-135M-Instruct, downloads on first use):\n  \
                   hearth chat                                       talk with the model in this terminal\n  \
                   hearth run --chat \"Which ocean is the largest?\"   answer one message (stdout: the answer alone)\n\
                   Other models: --model ORG/REPO (a Hugging Face name, see `hearth pull`) or a local file."
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
        /// Also show this model's KV cache bytes per token for each --kv-dtype
        /// (a path or a hub name, as for `run --model`).
        #[arg(long, short)]
        model: Option<PathBuf>,
    },
    /// Generate text from a prompt (streams to stdout; speed to stderr).
    Run(run::RunArgs),
    /// Chat with the model in the terminal: multi-turn, streamed, the
    /// earlier turns' KV reused; /help inside lists the commands.
    Chat(chat::ChatArgs),
    /// Measure prefill and decode speed.
    Bench(bench::BenchArgs),
    /// Download the default model (SmolLM2-135M-Instruct Q4_1) if it is missing.
    Fetch,
    /// Download a model from the Hugging Face hub into its cache (unless it
    /// is there) and print its local path.
    Pull {
        /// ORG/REPO (its GGUF at Q4_K_M or the next best quantization, else
        /// its safetensors), ORG/REPO:QUANT, or ORG/REPO/FILE.gguf (every
        /// shard of a split GGUF). Without one, the default model.
        name: Option<String>,
    },
    /// Serve the model over an OpenAI-compatible HTTP API.
    Serve(serve::ServeArgs),
    /// Perplexity of a text file under the model (sliding window).
    Perplexity(perplexity::PerplexityArgs),
    /// Embed texts (arguments, or stdin's lines): one JSON vector per line.
    Embed(embed::EmbedArgs),
}

fn pull(name: Option<&str>) -> anyhow::Result<PathBuf> {
    let Some(name) = name else {
        return fetch::ensure_default_model();
    };
    let parsed = hub::name::parse_hub_name(name).ok_or_else(|| {
        anyhow::anyhow!(
            "`{name}` is not a hub model name (ORG/REPO, ORG/REPO:QUANT or ORG/REPO/FILE.gguf)"
        )
    })?;
    hub::pull(&parsed)
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
        Cmd::Chat(a) => chat::run(a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::Fetch => fetch::ensure_default_model().map(|p| println!("{}", p.display())),
        Cmd::Pull { name } => pull(name.as_deref()).map(|p| println!("{}", p.display())),
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
