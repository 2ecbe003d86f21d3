//! `hearth bench` of one sequence: the prompt's prefill and greedy decode
//! after it, again with speculative decoding when `--draft` asks for it.

use anyhow::Result;
use hearth::engine::scheduler::SchedulerOptions;
use hearth::engine::{GenerateOptions, Generation, SamplingParams, SpecOptions};
use hearth::model::forward::{KernelProfile, ProfileSteps};
use hearth::{EngineConfig, Hearth, Prompt};

use super::{profile, roofline, BenchArgs, BENCH_TEXT};
use crate::load::{load, load_draft};
use crate::spec_args;

/// What the runs measured, for either output form.
struct Measured {
    prompt_tokens: usize,
    plain: Generation,
    /// The same decode with speculative decoding.
    spec: Option<Generation>,
    /// The same decode under `--json-schema`.
    constrained: Option<Generation>,
    /// `--roofline`'s copy bandwidth, GB/s.
    copy_gb_s: Option<f64>,
}

/// `--profile`'s prefill and decode kernel times and how they were taken.
struct Profiles {
    prefill: KernelProfile,
    decode: KernelProfile,
    method: &'static str,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let spec = args.spec.options()?;
    let constraint = args.constraint()?;
    let mut h = load(&args.model, 512, 1, args.spec.rows_per_seq(), args.json)?;
    load_draft(&mut h, &args.model, &args.spec, args.json)?;
    // Every run below prefills its prompt for real, not from the prefix cache.
    h.set_config(EngineConfig {
        scheduler: SchedulerOptions {
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
    let plain = SpecOptions::default();
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
    let constrained = match constraint {
        Some(c) => {
            let o = GenerateOptions {
                constraint: Some(c),
                ..opts(args.gen_tokens, plain)
            };
            Some(h.generate_blocking(&prompt, &o, &mut |_| true)?)
        }
        None => None,
    };
    let profiles = if args.profile {
        let opts = |n| opts(n, plain);
        Some(profile_runs(
            &mut h,
            &prompt,
            args.gen_tokens.min(16),
            &opts,
        )?)
    } else {
        None
    };
    let m = Measured {
        prompt_tokens: prompt.len(),
        plain: g,
        spec: spec_run,
        constrained,
        copy_gb_s: if args.roofline {
            Some(roofline::copy_gb_s(&h.model.ctx)?)
        } else {
            None
        },
    };
    if args.json {
        println!("{}", json_report(&h, &m)?);
    } else {
        print_report(&h, &m, args.spec.draft_name());
    }
    if let Some(p) = profiles {
        profile::print(
            &format!(
                "profile of the {}-token prefill ({}):",
                m.prompt_tokens, p.method
            ),
            p.prefill,
        );
        profile::print(
            &format!(
                "profile of {} decode steps after it ({}):",
                args.gen_tokens.min(16),
                p.method
            ),
            p.decode,
        );
    }
    Ok(())
}

/// Runs apart from the measured ones, so that profiling (per-kernel passes
/// or submissions) does not touch their figures: the prompt's prefill, then
/// `decode_steps` decode steps after the same prompt.
fn profile_runs(
    h: &mut Hearth,
    prompt: &[u32],
    decode_steps: usize,
    opts: &dyn Fn(usize) -> GenerateOptions,
) -> Result<Profiles> {
    h.model.set_profiling(Some(ProfileSteps::Prefill));
    h.generate_blocking(prompt, &opts(1), &mut |_| true)?;
    let prefill = h.model.profile().cloned().unwrap_or_default();
    h.model.set_profiling(Some(ProfileSteps::Decode));
    h.generate_blocking(prompt, &opts(decode_steps), &mut |_| true)?;
    let decode = h.model.profile().cloned().unwrap_or_default();
    let method = profile::method(&h.model);
    h.model.set_profiling(None);
    Ok(Profiles {
        prefill,
        decode,
        method,
    })
}

/// The benchmark text repeated to `n` tokens.
fn synthetic_prompt(h: &Hearth, n: usize) -> Result<Vec<u32>> {
    let base = h.tokenizer.encode(BENCH_TEXT, false)?;
    anyhow::ensure!(
        !base.is_empty(),
        "the model's tokenizer encodes the benchmark text to no tokens"
    );
    Ok(base.iter().cycle().take(n).copied().collect())
}

/// Decode's weight reads in GB/s: every weight is read once per token.
fn weight_gb_s(h: &Hearth, decode_tok_s: f64) -> f64 {
    h.model.weight_bytes as f64 * decode_tok_s / 1e9
}

/// KV bytes per token (K+V, all layers) and the tokens the cache has room for.
fn kv_figures(h: &Hearth) -> (u64, u64) {
    let per_token = h.model.kv_layout().bytes_per_token(h.model.kv_dtype());
    let tokens = h.model.kv_blocks() as u64 * h.model.kv_block_size() as u64;
    (per_token, tokens)
}

fn json_report(h: &Hearth, m: &Measured) -> Result<serde_json::Value> {
    let g = &m.plain;
    let decode = g.decode_tok_s();
    let gbs = weight_gb_s(h, decode);
    // What the kernels were built with: figures are only comparable with the same.
    let caps = h.model.ctx.caps;
    let features = serde_json::json!({"shader_f16": caps.f16, "tiled_f16": caps.tiled_f16, "subgroups": caps.subgroups});
    let (kv_per_token, kv_tokens) = kv_figures(h);
    let mut j = serde_json::json!({"prefill_tok_s": g.prefill_tok_s(), "decode_tok_s": decode, "weight_gb_s": gbs, "adapter": h.model.ctx.adapter_name(), "features": features, "prompt_tokens": m.prompt_tokens, "gen_tokens": g.ids.len(), "kv_dtype": h.model.kv_dtype().name(), "kv_bytes_per_token": kv_per_token, "kv_capacity_tokens": kv_tokens, "weight_bytes_per_token": h.model.weight_bytes, "weight_bytes_total": h.model.total_weight_bytes});
    if let Some(c) = m.copy_gb_s {
        j["copy_gb_s"] = c.into();
        j["weight_pct_of_copy"] = (100.0 * gbs / c).into();
    }
    if let Some(s) = &m.spec {
        j["spec_decode_tok_s"] = s.decode_tok_s().into();
        j["spec_speedup"] = (s.decode_tok_s() / decode).into();
        j["spec"] = serde_json::to_value(s.spec)?;
    }
    if let Some(c) = &m.constrained {
        j["schema_decode_tok_s"] = c.decode_tok_s().into();
        j["schema_gen_tokens"] = c.ids.len().into();
        j["schema_pct_of_plain"] = (100.0 * c.decode_tok_s() / decode).into();
    }
    Ok(j)
}

fn print_report(h: &Hearth, m: &Measured, draft_name: &str) {
    let g = &m.plain;
    let decode = g.decode_tok_s();
    let gbs = weight_gb_s(h, decode);
    let caps = h.model.ctx.caps;
    let kv_dtype = h.model.kv_dtype();
    let (kv_per_token, kv_tokens) = kv_figures(h);
    println!("adapter:  {}", h.model.ctx.adapter_name());
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
        m.prompt_tokens
    );
    println!("decode:   {:.1} tok/s ({} tokens)", decode, g.ids.len());
    println!(
        "kv cache: {kv_dtype}, {kv_per_token} bytes per token (K+V, all layers), room for {kv_tokens} tokens"
    );
    println!(
        "weights:  {:.2} GB/s ({:.1} MB read per token{})",
        gbs,
        h.model.weight_bytes as f64 / 1e6,
        if h.model.config.moe.is_some() {
            format!(
                " of {:.1} MB: the routed experts only",
                h.model.total_weight_bytes as f64 / 1e6
            )
        } else {
            String::new()
        }
    );
    if let Some(c) = m.copy_gb_s {
        println!(
            "roofline: copy {c:.2} GB/s (read + write, copy kernel); decode's weight reads run at {:.0}% of it",
            100.0 * gbs / c
        );
    }
    if let Some(s) = &m.spec {
        println!(
            "speculative ({draft_name}): decode {:.1} tok/s, {:.2}x plain, same tokens; {}",
            s.decode_tok_s(),
            s.decode_tok_s() / decode,
            spec_args::describe(&s.spec)
        );
    }
    if let Some(c) = &m.constrained {
        println!(
            "json schema: decode {:.1} tok/s ({} tokens), {:.0}% of unconstrained",
            c.decode_tok_s(),
            c.ids.len(),
            100.0 * c.decode_tok_s() / decode
        );
    }
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}
