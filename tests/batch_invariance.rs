//! A sequence's results do not depend on what else is in the step: greedy
//! decoding of several sequences batched together (decode tokens of some,
//! prompt chunks of others, in one step) gives bit-identical candidates to
//! each sequence run alone. This is what lets the serving engine promise the
//! same tokens alone or batched. The batch mixes a long context (split-K
//! attention) with short ones (single-pass attention), and more rows than
//! the matrix-vector kernel takes at once.

mod common;

use std::sync::Arc;

use common::{gpu, gpu_from, tiny_gpu_model};
use hearth::engine::Candidates;
use hearth::gpu::{GpuContext, GpuOptions};
use hearth::kv::BlockTable;
use hearth::model::forward::{ForwardOptions, GpuModel, SeqStep};

struct Seq {
    prompt: Vec<u32>,
    /// Prompt tokens already in the cache.
    done: usize,
    generated: Vec<u32>,
    blocks: Vec<u32>,
    /// Candidates of every position that produced logits, in order.
    seen: Vec<Candidates>,
}

fn load(arch: &str, ctx: Arc<GpuContext>) -> GpuModel {
    let opts = ForwardOptions {
        kv_memory: 1 << 20,
        max_step_tokens: 128,
        max_seqs: 8,
        ..Default::default()
    };
    tiny_gpu_model(arch, ctx, opts)
}

/// Runs `prompts` to `n_new` greedy tokens each, `chunk` prompt tokens per
/// sequence per step, every sequence that is decoding adding one token.
fn run(m: &mut GpuModel, prompts: &[Vec<u32>], n_new: usize, chunk: usize) -> Vec<Seq> {
    let mut pool = m.new_kv_pool();
    let bs = pool.block_size();
    let mut seqs: Vec<Seq> = prompts
        .iter()
        .map(|p| Seq {
            prompt: p.clone(),
            done: 0,
            generated: Vec::new(),
            blocks: pool
                .allocate(BlockTable::blocks_for((p.len() + n_new) as u32, bs))
                .unwrap(),
            seen: Vec::new(),
        })
        .collect();
    loop {
        // Generated-token parts first, then prompt chunks (SeqStep's rule).
        let mut parts: Vec<(usize, SeqStep)> = Vec::new();
        for (i, s) in seqs.iter().enumerate() {
            if s.done == s.prompt.len() && !s.generated.is_empty() && s.generated.len() < n_new {
                let pos = s.prompt.len() + s.generated.len() - 1;
                let part = SeqStep {
                    generated: true,
                    ..SeqStep::new(&s.generated[s.generated.len() - 1..], pos as u32, &s.blocks)
                };
                parts.push((i, part));
            }
        }
        for (i, s) in seqs.iter().enumerate() {
            if s.done < s.prompt.len() {
                let end = (s.done + chunk).min(s.prompt.len());
                let part = SeqStep {
                    logit_rows: (end == s.prompt.len()) as u32,
                    ..SeqStep::new(&s.prompt[s.done..end], s.done as u32, &s.blocks)
                };
                parts.push((i, part));
            }
        }
        if parts.is_empty() {
            return seqs;
        }
        let who: Vec<(usize, bool, usize)> = parts
            .iter()
            .map(|(i, p)| (*i, p.logit_rows > 0, p.tokens.len()))
            .collect();
        let steps: Vec<SeqStep> = parts.into_iter().map(|(_, p)| p).collect();
        let cands = pollster::block_on(m.step(&steps, 8)).unwrap();
        let mut cands = cands.into_iter();
        for (i, want, len) in who {
            let s = &mut seqs[i];
            if s.done < s.prompt.len() {
                s.done += len;
            }
            if want {
                let c = cands.next().unwrap();
                s.generated.push(c.ids[0]);
                s.seen.push(c);
            }
        }
    }
}

fn check(arch: &str, ctx: Arc<GpuContext>) {
    check_model(arch, load(arch, ctx));
}

fn check_model(arch: &str, mut m: GpuModel) {
    let prompt =
        |n: usize, seed: u32| -> Vec<u32> { (0..n as u32).map(|i| (i * 7 + seed) % 40).collect() };
    // 200 tokens: the generated rows' attention splits over the context.
    let prompts = vec![prompt(21, 3), prompt(200, 5), prompt(45, 11), prompt(9, 2)];
    let n_new = 12;
    let batched = run(&mut m, &prompts, n_new, 28);
    for (i, p) in prompts.iter().enumerate() {
        let alone = run(&mut m, std::slice::from_ref(p), n_new, 128);
        let (a, b) = (&alone[0], &batched[i]);
        assert_eq!(a.generated, b.generated, "{arch} sequence {i}: tokens");
        for (j, (x, y)) in a.seen.iter().zip(&b.seen).enumerate() {
            assert_eq!(
                x.ids, y.ids,
                "{arch} sequence {i} position {j}: candidate ids"
            );
            let bits = |c: &Candidates| c.logits.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(x),
                bits(y),
                "{arch} sequence {i} position {j}: logits differ"
            );
        }
    }
}

#[test]
fn batched_equals_alone_bit_for_bit_llama() {
    check("llama", gpu());
}

#[test]
fn batched_equals_alone_bit_for_bit_qwen2() {
    check("qwen2", gpu());
}

/// The tiny model's float matrices take the tiled kernel for prompt rows;
/// its f16-math form (GPUs' default) must keep a row's bits independent of
/// its batch too.
#[test]
fn batched_equals_alone_bit_for_bit_with_f16_prompt_tiles() {
    let opts = GpuOptions {
        tiled_f16: Some(true),
        ..GpuOptions::from_env()
    };
    let ctx = gpu_from(&opts);
    assert!(ctx.caps.tiled_f16 || opts.no_f16, "lavapipe has shader-f16");
    check("llama", ctx);
}

/// Mixture-of-experts layers group a step's rows by expert: a row's experts
/// and their sums must not depend on which other rows share them. Qwen2-MoE
/// (shared expert, f32 experts: tiled prompt kernel) and Mixtral with Q8_0
/// experts (the CPU adapter's lane-rows prompt kernel).
#[test]
fn batched_equals_alone_bit_for_bit_moe() {
    use hearth::model::DType;
    for (case, dtype) in [
        ("qwen2moe_shared_bf16", None),
        ("mixtral_f32", Some(DType::Q8_0)),
    ] {
        let loaded = hearth::model::load::open(&common::moe::fixtures().join(case)).unwrap();
        let opts = ForwardOptions {
            dtype,
            kv_memory: 1 << 20,
            max_step_tokens: 128,
            max_seqs: 8,
            ..Default::default()
        };
        let m = GpuModel::load(gpu(), &*loaded.weights, opts, &mut |_| {}).unwrap();
        check_model(case, m);
    }
}
