//! `hearth`: the native command line of the Hearth runtime.

mod concurrency;
mod fetch;
mod kv_report;
mod perplexity;
mod roofline;
mod serve;
mod spec_args;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use hearth::engine::{GenerateOptions, SamplingParams};
use hearth::gpu::GpuOptions;
use hearth::kv::KvDtype;
use hearth::model::forward::{ForwardOptions, ProfileSteps};
use hearth::model::DType;
use hearth::text::ChatMessage;
use hearth::{EngineOptions, Hearth, Prompt, Request};
use indicatif::{ProgressBar, ProgressStyle};

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
    Run(RunArgs),
    /// Measure prefill and decode speed.
    Bench(BenchArgs),
    /// Download the default model (SmolLM2-135M-Instruct Q4_1) if it is missing.
    Fetch,
    /// Serve the model over an OpenAI-compatible HTTP API.
    Serve(serve::ServeArgs),
    /// Perplexity of a text file under the model (sliding window).
    Perplexity(perplexity::PerplexityArgs),
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// GGUF file or Hugging Face model directory (default: SmolLM2-135M-Instruct, fetched if missing).
    #[arg(long, short)]
    model: Option<PathBuf>,
    /// Weight form on the GPU: f32, f16, q8_0, q4_0, q4_1, q4_k, q6_k. Float
    /// matrices take any; quantized ones only f32/f16 (dequantized). K-quants
    /// fall back to q4_1 / q8_0 for rows that are not whole 256-element
    /// super-blocks; default: as stored.
    #[arg(long)]
    dtype: Option<String>,
    /// KV cache memory budget, e.g. 256MiB, 1GiB.
    #[arg(long, default_value = "256MiB")]
    kv_memory: String,
    /// KV cache element type: f16, f32, q8 or q4. q8/q4 quantize per 32
    /// elements of a head (0.53x/0.31x the memory of f16, so that many more
    /// tokens per --kv-memory) and need a head_dim that is a multiple of 32.
    #[arg(long, default_value = "f16")]
    kv_dtype: String,
    /// Adapter index (see `hearth info`) or part of its name.
    #[arg(long)]
    adapter: Option<String>,
    /// Don't use shader-f16 even if the adapter has it.
    #[arg(long)]
    no_f16: bool,
    /// Don't use subgroup operations even if the adapter has them.
    #[arg(long)]
    no_subgroups: bool,
    /// Random weights in the model's shapes and formats instead of its data,
    /// for benchmarking (the text is meaningless). The GGUF may be cut off
    /// after its tensor table, e.g. `head -c 8M model.gguf > skeleton.gguf`.
    #[arg(long)]
    dummy_weights: bool,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Raw prompt text (special-token markup is parsed).
    #[arg(long, short, conflicts_with = "chat")]
    prompt: Option<String>,
    /// A user message, sent through the model's chat template.
    #[arg(long, short)]
    chat: Option<String>,
    /// System message for --chat (default: the template's own).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    #[arg(long, default_value_t = hearth::engine::DEFAULT_MAX_TOKENS)]
    max_tokens: usize,
    /// 0 = greedy (the default of every front end but the OpenAI server;
    /// see docs/API.md).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// 0 = off.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f32,
    #[arg(long)]
    seed: Option<u64>,
    /// Stop when the output contains this text (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    #[arg(long)]
    ignore_eos: bool,
    /// Report the top-K log-probabilities of each generated token (with --json).
    #[arg(long, default_value_t = 0)]
    logprobs: usize,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    spec: spec_args::SpecArgs,
}

#[derive(Args)]
struct BenchArgs {
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
}

fn parse_bytes(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = [
        ("GiB", 1u64 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ]
    .iter()
    .find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n, *m)))
    .unwrap_or((s, 1));
    let v: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("invalid size `{s}` (e.g. 256MiB)"))?;
    Ok((v * mult as f64) as u64)
}

/// `--kv-memory` in bytes and `--kv-dtype`.
fn kv_options(args: &ModelArgs) -> Result<(u64, KvDtype)> {
    let dtype = KvDtype::parse(&args.kv_dtype).map_err(|e| anyhow::anyhow!("--kv-dtype: {e}"))?;
    Ok((parse_bytes(&args.kv_memory)?, dtype))
}

/// The tensor-upload progress bar of a model load (hidden when `quiet`).
fn load_bar(quiet: bool, message: String) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} tensors groups ({elapsed})")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(message);
    bar
}

/// Loads the model for steps of up to `max_step_tokens` rows, `max_seqs`
/// sequence parts and `logit_rows` rows with logits (at least `max_seqs`).
fn load(
    args: &ModelArgs,
    max_step_tokens: u32,
    max_seqs: u32,
    logit_rows: u32,
    quiet: bool,
) -> Result<Hearth> {
    let path = match &args.model {
        Some(p) => p.clone(),
        None => fetch::ensure_default_model()?,
    };
    let (kv_memory, kv_dtype) = kv_options(args)?;
    let opts = EngineOptions {
        gpu: GpuOptions {
            adapter: args.adapter.clone(),
            no_f16: args.no_f16,
            no_subgroups: args.no_subgroups,
            ..GpuOptions::from_env()
        },
        forward: ForwardOptions {
            dtype: args.dtype.as_deref().map(DType::parse).transpose()?,
            kv_memory,
            kv_dtype,
            max_step_tokens,
            max_seqs,
            max_logit_rows: logit_rows,
            ..ForwardOptions::default()
        },
        dummy_weights: args.dummy_weights,
    };
    let bar = load_bar(quiet, format!("loading {}", path.display()));
    let h = Hearth::open(&path, &opts, &mut |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
    })
    .with_context(|| format!("loading {}", path.display()))?;
    bar.finish_and_clear();
    if !quiet {
        eprintln!(
            "hearth: {} on {}",
            h.source_desc,
            h.model.ctx.adapter_name()
        );
    }
    Ok(h)
}

/// Loads `--draft-model` (when given) beside `h`'s model, on its adapter,
/// with a KV cache of the same budget and element type, and checks that the
/// tokenizers match.
fn load_draft(
    h: &mut Hearth,
    args: &ModelArgs,
    spec: &spec_args::SpecArgs,
    quiet: bool,
) -> Result<()> {
    let Some(path) = &spec.draft_model else {
        return Ok(());
    };
    let (kv_memory, _) = kv_options(args)?;
    let opts = h.draft_forward_options(kv_memory);
    let what = || format!("loading the draft model {}", path.display());
    let bar = load_bar(quiet, what());
    let loaded = hearth::model::load::open(path).with_context(what)?;
    let draft = Hearth::from_loaded(h.model.ctx.clone(), loaded, opts, &mut |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
    })
    .with_context(what)?;
    bar.finish_and_clear();
    let desc = draft.source_desc.clone();
    h.attach_draft(draft)
        .with_context(|| format!("--draft-model {}", path.display()))?;
    if !quiet {
        eprintln!("hearth: draft model {desc}");
    }
    Ok(())
}

fn run(args: RunArgs) -> Result<()> {
    let spec = args.spec.options()?;
    let mut h = load(&args.model, 128, 1, args.spec.rows_per_seq(), args.json)?;
    load_draft(&mut h, &args.model, &args.spec, args.json)?;
    let prompt = match (&args.prompt, &args.chat) {
        (Some(p), None) => Prompt::Text(p.clone()),
        (None, Some(c)) => {
            let mut m = Vec::new();
            if let Some(s) = &args.system {
                m.push(ChatMessage::new("system", s));
            }
            m.push(ChatMessage::new("user", c));
            Prompt::Chat(m)
        }
        _ => anyhow::bail!("give a prompt with --prompt TEXT or --chat TEXT"),
    };
    let req = Request {
        prompt,
        max_tokens: Some(args.max_tokens),
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            min_p: args.min_p,
            repetition_penalty: args.repetition_penalty,
            presence_penalty: args.presence_penalty,
            frequency_penalty: args.frequency_penalty,
            seed: args.seed,
        },
        stop: args.stop.clone(),
        ignore_eos: args.ignore_eos,
        logprobs: args.logprobs,
        n: 1,
        draft: Some(spec.drafting),
    };
    h.set_config(hearth::EngineConfig {
        speculative: spec,
        ..Default::default()
    })?;
    let json = args.json;
    let mut out = std::io::stdout().lock();
    let g = h.generate_request_blocking(req, &mut |ev| {
        if !json {
            let _ = out.write_all(ev.text.as_bytes());
            let _ = out.flush();
        }
        true
    })?;
    if json {
        let top: Vec<Vec<serde_json::Value>> = g
            .top_logprobs
            .iter()
            .map(|row| {
                row.iter()
                    .map(|(id, lp)| serde_json::json!({"id": id, "logprob": lp}))
                    .collect()
            })
            .collect();
        let mut v = serde_json::json!({
            "prompt_ids": g.prompt_ids,
            "ids": g.ids,
            "text": g.text,
            "finish_reason": g.finish_reason,
            "prefill_tok_s": g.prefill_tok_s(),
            "decode_tok_s": g.decode_tok_s(),
            "spec": g.spec,
        });
        if args.logprobs > 0 {
            v["top_logprobs"] = serde_json::Value::from(top);
        }
        writeln!(out, "{v}")?;
    } else {
        writeln!(out)?;
        eprintln!(
            "hearth: prompt {} tokens, {:.1} tok/s prefill; generated {} tokens, {:.1} tok/s decode ({:?})",
            g.prompt_ids.len(),
            g.prefill_tok_s(),
            g.ids.len(),
            g.decode_tok_s(),
            g.finish_reason
        );
        if spec.enabled() {
            eprintln!(
                "hearth: speculative decoding ({}): {}",
                args.spec.draft_name(),
                spec_args::describe(&g.spec)
            );
        }
    }
    Ok(())
}

fn bench(args: BenchArgs) -> Result<()> {
    anyhow::ensure!(
        args.prompt_tokens > 0 && args.gen_tokens > 0,
        "--prompt-tokens and --gen-tokens must be > 0"
    );
    if !args.concurrency.is_empty() {
        return concurrency::bench(&args);
    }
    let spec = args.spec.options()?;
    let mut h = load(&args.model, 512, 1, args.spec.rows_per_seq(), args.json)?;
    load_draft(&mut h, &args.model, &args.spec, args.json)?;
    // Every run below prefills its prompt for real, not from the prefix cache.
    h.set_config(hearth::EngineConfig {
        scheduler: hearth::engine::scheduler::SchedulerOptions {
            prefix_caching: false,
            ..Default::default()
        },
        ..Default::default()
    })?;
    let prompt = match &args.chat {
        Some(c) => h.prompt_ids(&Prompt::chat_user(c))?,
        None => synthetic_prompt(&h, args.prompt_tokens)?,
    };
    // A chat answer ends at its end-of-turn token; a synthetic prompt has none.
    let ignore_eos = args.chat.is_none();
    let opts = |n, speculative| GenerateOptions {
        sampling: SamplingParams::greedy(),
        max_tokens: n,
        ignore_eos,
        speculative,
        ..Default::default()
    };
    let plain = hearth::engine::SpecOptions::default();
    // Warm-up: compiles pipelines and touches every buffer.
    h.generate_blocking(
        &prompt[..prompt.len().min(16)],
        &opts(2, plain),
        &mut |_| true,
    )?;
    let g = h.generate_blocking(&prompt, &opts(args.gen_tokens, plain), &mut |_| true)?;
    let spec_run = if spec.enabled() {
        let s = h.generate_blocking(&prompt, &opts(args.gen_tokens, spec), &mut |_| true)?;
        anyhow::ensure!(
            s.ids == g.ids,
            "speculative decoding changed the greedy output (a bug: please report it)"
        );
        Some(s)
    } else {
        None
    };
    let opts = |n| opts(n, plain);
    let decode = g.decode_tok_s();
    let profile = if args.profile {
        // Separate runs, so that profiling (per-kernel passes or submissions)
        // does not touch the figures above: the prompt's prefill, then decode
        // steps after the same prompt.
        h.model.set_profiling(Some(ProfileSteps::Prefill));
        h.generate_blocking(&prompt, &opts(1), &mut |_| true)?;
        let prefill = h.model.profile().cloned().unwrap_or_default();
        h.model.set_profiling(Some(ProfileSteps::Decode));
        h.generate_blocking(&prompt, &opts(args.gen_tokens.min(16)), &mut |_| true)?;
        let decode = h.model.profile().cloned().unwrap_or_default();
        let how = profile_method(&h.model);
        h.model.set_profiling(None);
        Some((prefill, decode, how))
    } else {
        None
    };
    let gbs = h.model.weight_bytes as f64 * decode / 1e9;
    let adapter = h.model.ctx.adapter_name();
    // What the kernels were built with: figures are only comparable with the same.
    let caps = h.model.ctx.caps;
    let features = serde_json::json!({"shader_f16": caps.f16, "tiled_f16": caps.tiled_f16, "subgroups": caps.subgroups});
    let kv_dtype = h.model.kv_dtype();
    let kv_per_token = h.model.kv_layout().bytes_per_token(kv_dtype);
    let kv_tokens = h.model.kv_blocks() as u64 * h.model.kv_block_size() as u64;
    let copy = if args.roofline {
        Some(roofline::copy_gb_s(&h.model.ctx)?)
    } else {
        None
    };
    if args.json {
        let mut j = serde_json::json!({"prefill_tok_s": g.prefill_tok_s(), "decode_tok_s": decode, "weight_gb_s": gbs, "adapter": adapter, "features": features, "prompt_tokens": prompt.len(), "gen_tokens": g.ids.len(), "kv_dtype": kv_dtype.name(), "kv_bytes_per_token": kv_per_token, "kv_capacity_tokens": kv_tokens});
        if let Some(c) = copy {
            j["copy_gb_s"] = c.into();
            j["weight_pct_of_copy"] = (100.0 * gbs / c).into();
        }
        if let Some(s) = &spec_run {
            j["spec_decode_tok_s"] = s.decode_tok_s().into();
            j["spec_speedup"] = (s.decode_tok_s() / decode).into();
            j["spec"] = serde_json::to_value(s.spec)?;
        }
        println!("{j}");
    } else {
        println!("adapter:  {adapter}");
        println!(
            "features: shader-f16 {} (f16 prompt matmul {}), subgroups {}",
            on_off(caps.f16),
            on_off(caps.tiled_f16),
            on_off(caps.subgroups)
        );
        println!("model:    {}", h.source_desc);
        println!(
            "prefill:  {:.1} tok/s ({} tokens)",
            g.prefill_tok_s(),
            prompt.len()
        );
        println!("decode:   {:.1} tok/s ({} tokens)", decode, g.ids.len());
        println!(
            "kv cache: {kv_dtype}, {kv_per_token} bytes per token (K+V, all layers), room for {kv_tokens} tokens"
        );
        println!(
            "weights:  {:.2} GB/s ({:.1} MB read per token)",
            gbs,
            h.model.weight_bytes as f64 / 1e6
        );
        if let Some(c) = copy {
            println!(
                "roofline: copy {c:.2} GB/s (read + write, copy kernel); decode's weight reads run at {:.0}% of it",
                100.0 * gbs / c
            );
        }
        if let Some(s) = &spec_run {
            println!(
                "speculative ({}): decode {:.1} tok/s, {:.2}x plain, same tokens; {}",
                args.spec.draft_name(),
                s.decode_tok_s(),
                s.decode_tok_s() / decode,
                spec_args::describe(&s.spec)
            );
        }
    }
    if let Some((prefill, decode, how)) = profile {
        print_profile(
            &format!("profile of the {}-token prefill ({how}):", prompt.len()),
            prefill,
        );
        print_profile(
            &format!(
                "profile of {} decode steps after it ({how}):",
                args.gen_tokens.min(16)
            ),
            decode,
        );
    }
    Ok(())
}

/// A natural-text prompt repeated to `n` tokens (keeps the numbers representative).
fn synthetic_prompt(h: &Hearth, n: usize) -> Result<Vec<u32>> {
    let base = h.tokenizer.encode(
        "The quick brown fox jumps over the lazy dog. Hearth runs language models on any GPU. ",
        false,
    )?;
    anyhow::ensure!(
        !base.is_empty(),
        "the model's tokenizer encodes the benchmark text to no tokens"
    );
    Ok(base.iter().cycle().take(n).copied().collect())
}

/// How `--profile` times kernels on this adapter.
fn profile_method(m: &hearth::model::forward::GpuModel) -> &'static str {
    if m.profile_uses_timestamps() {
        "GPU timestamps, one pass per kernel"
    } else {
        "no timestamp queries: each kernel submitted and timed alone"
    }
}

/// Time per kernel kind, largest first, to stderr.
fn print_profile(title: &str, p: hearth::model::forward::KernelProfile) {
    let total: f64 = p.values().map(|v| v.0).sum();
    eprintln!("{title}");
    let mut rows: Vec<_> = p.into_iter().collect();
    rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    for (name, (secs, n)) in rows {
        eprintln!(
            "  {name:<40} {:>9.1} ms {:>6} calls {:>5.1}%",
            secs * 1e3,
            n,
            100.0 * secs / total.max(1e-12)
        );
    }
}

fn info(json: bool, model: Option<PathBuf>) -> Result<()> {
    let adapters = pollster::block_on(hearth::gpu::context::list_adapters());
    if json {
        // With a model, one object; without, the adapter list as before.
        let v = match &model {
            Some(p) => serde_json::json!({
                "adapters": adapters,
                "model": kv_report::model_info(p, true)?,
            }),
            None => serde_json::to_value(&adapters)?,
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if adapters.is_empty() {
        println!(
            "no GPU adapters found (on Linux without a GPU: apt-get install mesa-vulkan-drivers)"
        );
    }
    for a in adapters {
        println!(
            "[{}] {} ({}, {})",
            a.index, a.name, a.backend, a.device_type
        );
        println!("    driver: {}", a.driver);
        println!(
            "    shader-f16: {}  subgroups: {} (size {}..{})  timestamps: {}",
            a.shader_f16, a.subgroups, a.subgroup_sizes.0, a.subgroup_sizes.1, a.timestamp_query
        );
        println!(
            "    max storage binding: {} MiB  max buffer: {} MiB  workgroup: {} invocations, {} KiB shared  storage buffers/stage: {}",
            a.max_storage_binding >> 20,
            a.max_buffer >> 20,
            a.max_workgroup_invocations,
            a.max_workgroup_storage >> 10,
            a.max_storage_buffers_per_stage
        );
    }
    if let Some(p) = &model {
        kv_report::model_info(p, false)?;
    }
    Ok(())
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
        Cmd::Info { json, model } => info(json, model),
        Cmd::Run(a) => run(a),
        Cmd::Bench(a) => bench(a),
        Cmd::Fetch => fetch::ensure_default_model().map(|p| println!("{}", p.display())),
        Cmd::Serve(a) => serve::serve(a),
        Cmd::Perplexity(a) => perplexity::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hearth: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}
