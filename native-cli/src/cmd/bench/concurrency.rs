//! `hearth bench --concurrency 1,4,16`: many requests at once through the
//! engine's continuous batching (what `hearth serve` runs), one level after
//! another.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Result;
use hearth::engine::{EngineConfig, Output, SamplingParams, SpecStats};
use hearth::model::forward::ProfileSteps;
use hearth::{Prompt, Request};

use super::{profile, BenchArgs, BENCH_TEXT};
use crate::load::{load, load_draft};
use crate::spec_args;

/// The `p`-th percentile (0..=100) of `v` (sorted in place), nearest rank.
fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let most = *args.concurrency.iter().max().unwrap_or(&1);
    anyhow::ensure!(most >= 1, "--concurrency levels must be at least 1");
    // Each sequence may add two parts to a step (prompt and generated rows).
    let parts = (2 * most).max(2) as u32;
    let spec = args.spec.options()?;
    let logit_rows = args.spec.batch_logit_rows(parts, most);
    let mut h = load(&args.model, 256, parts, logit_rows, args.json)?;
    load_draft(&mut h, &args.model, &args.spec, args.json)?;
    let base = h.tokenizer.encode(BENCH_TEXT, false)?;
    anyhow::ensure!(!base.is_empty(), "the benchmark text encodes to no tokens");
    let constraint = args.constraint()?;
    // Each level runs unconstrained, then under --json-schema when given.
    let runs: Vec<Option<&hearth::structured::Constraint>> = match &constraint {
        Some(c) => vec![None, Some(c)],
        None => vec![None],
    };
    let mut rows = Vec::new();
    for (c, constraint) in args
        .concurrency
        .iter()
        .flat_map(|&c| runs.iter().map(move |r| (c, *r)))
    {
        let request = |prompt: Vec<u32>| Request {
            prompt: Prompt::Ids(prompt),
            max_tokens: Some(args.gen_tokens),
            sampling: SamplingParams::greedy(),
            ignore_eos: true,
            draft: Some(spec.drafting),
            constraint: constraint.cloned(),
            ..Default::default()
        };
        // A fresh scheduler (empty prefix cache) per level.
        h.set_config(EngineConfig {
            speculative: spec,
            ..Default::default()
        })?;
        let mut index = HashMap::new();
        for i in 0..c {
            // Different prompts of the same length: each starts elsewhere in the text.
            let p: Vec<u32> = base
                .iter()
                .cycle()
                .skip(i)
                .take(args.prompt_tokens)
                .copied()
                .collect();
            let (id, _) = h.add_request(request(p))?;
            index.insert(id, i);
        }
        if args.profile {
            h.model.set_profiling(Some(ProfileSteps::All));
        }
        let t0 = Instant::now();
        let mut last: Vec<Option<f64>> = vec![None; c];
        let (mut ttft, mut itl) = (Vec::new(), Vec::new());
        let mut tokens = 0usize;
        let mut all_started = None;
        let mut after_start = 0usize;
        let mut spec_total = SpecStats::default();
        while h.has_work() {
            let outputs = h.step_blocking();
            let now = t0.elapsed().as_secs_f64();
            for out in outputs {
                match out {
                    Output::Finished { finish, .. } => spec_total.add(&finish.spec),
                    Output::Failed { error, .. } => return Err(error.into()),
                    Output::Embedding { .. } => {}
                    Output::Token { request, .. } => {
                        let i = index[&request];
                        tokens += 1;
                        match last[i] {
                            None => ttft.push(now),
                            Some(t) => itl.push(now - t),
                        }
                        last[i] = Some(now);
                        if all_started.is_some() {
                            after_start += 1;
                        }
                    }
                }
            }
            if all_started.is_none() && last.iter().all(Option::is_some) {
                all_started = Some(now);
            }
        }
        let wall = t0.elapsed().as_secs_f64();
        let decode_window = wall - all_started.unwrap_or(wall);
        let decode = after_start as f64 / decode_window.max(1e-9);
        let row = serde_json::json!({
            "concurrency": c,
            "json_schema": constraint.is_some(),
            "prompt_tokens": args.prompt_tokens,
            "gen_tokens": args.gen_tokens,
            "generated": tokens,
            "wall_s": wall,
            "throughput_tok_s": tokens as f64 / wall,
            "decode_tok_s": decode,
            "ttft_ms_p50": 1e3 * percentile(&mut ttft, 50.0),
            "ttft_ms_p90": 1e3 * percentile(&mut ttft, 90.0),
            "itl_ms_p50": 1e3 * percentile(&mut itl, 50.0),
            "itl_ms_p90": 1e3 * percentile(&mut itl, 90.0),
            "itl_ms_p99": 1e3 * percentile(&mut itl, 99.0),
            "preemptions": h.stats().preemptions,
            "spec": spec_total,
        });
        if !args.json {
            println!(
                "concurrency {c:>3}{}: decode {:>7.1} tok/s aggregate ({:>6.1} tok/s overall) | TTFT p50 {:>7.0} ms p90 {:>7.0} ms | ITL p50 {:>6.0} ms p90 {:>6.0} ms p99 {:>6.0} ms",
                if constraint.is_some() { " + schema" } else { "" },
                decode,
                row["throughput_tok_s"].as_f64().unwrap_or(0.0),
                row["ttft_ms_p50"].as_f64().unwrap_or(0.0),
                row["ttft_ms_p90"].as_f64().unwrap_or(0.0),
                row["itl_ms_p50"].as_f64().unwrap_or(0.0),
                row["itl_ms_p90"].as_f64().unwrap_or(0.0),
                row["itl_ms_p99"].as_f64().unwrap_or(0.0),
            );
            if spec.enabled() {
                println!(
                    "                 speculative decoding: {}",
                    spec_args::describe(&spec_total)
                );
            }
        }
        rows.push(row);
        if let Some(p) = h.model.profile().cloned() {
            let how = profile::method(&h.model);
            h.model.set_profiling(None);
            profile::print(&format!("profile at concurrency {c} ({how}):"), p);
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({"adapter": h.model.ctx.adapter_name(), "levels": rows})
        );
    }
    Ok(())
}
