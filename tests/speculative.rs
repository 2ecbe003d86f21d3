//! Speculative decoding with n-gram drafting and with a draft model gives
//! exactly the greedy tokens of plain decoding, alone and inside the
//! continuous-batching scheduler (with penalties, a pool small enough to
//! preempt, and max_tokens limits), and gives every rejected draft's KV
//! block back, in the target's pool and in the draft's.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{engine, gpu, gpu_model, tiny_file, tokenizer_of, uncached_engine};
use hearth::engine::scheduler::{Scheduler, SchedulerOptions, SeqEvent};
use hearth::engine::{GenerateOptions, SamplingParams, SpecOptions, SpecStats};
use hearth::gpu::GpuContext;
use hearth::kv::KvPool;
use hearth::model::forward::{ForwardOptions, GpuModel, SeqStep};
use hearth::model::gguf::GgufModel;
use hearth::model::DType;
use hearth::text::Tokenizer;
use hearth::Engine;

/// The tiny model on `ctx`, stored as `dtype` (None: as in the file).
fn tiny_gpu_model(
    ctx: Arc<GpuContext>,
    model: &GgufModel,
    dtype: Option<DType>,
    kv_memory: u64,
    max_logit_rows: u32,
) -> GpuModel {
    let opts = ForwardOptions {
        kv_memory,
        dtype,
        max_step_tokens: 64,
        max_seqs: 8,
        max_logit_rows,
        ..Default::default()
    };
    gpu_model(ctx, model, opts)
}

/// The tiny model twice on one device: `e`, an engine that runs one request
/// at a time without prefix caching, and `m` (with `tok`) for the scheduler
/// under test; with a draft model, each has its own (the same weights
/// requantized to Q4_0, so most drafts are accepted and some are not): the
/// engine's attached through `attach_draft`, `draft` beside `m`. Separate
/// copies, since a KV block manager takes its model's cache for its own.
struct Tiny {
    e: Engine,
    m: GpuModel,
    draft: Option<GpuModel>,
    tok: Tokenizer,
}

fn load(kv_memory: u64) -> Tiny {
    load_models(kv_memory, false)
}

fn load_with_draft(kv_memory: u64) -> Tiny {
    load_models(kv_memory, true)
}

fn load_models(kv_memory: u64, with_draft: bool) -> Tiny {
    let file = tiny_file("llama");
    let tok = tokenizer_of(&file);
    let ctx = gpu();
    let target = || tiny_gpu_model(ctx.clone(), &file, None, kv_memory, 40);
    let draft = || tiny_gpu_model(ctx.clone(), &file, Some(DType::Q4_0), kv_memory, 8);
    let mut e = uncached_engine(target(), tok.clone());
    if with_draft {
        e.attach_draft(engine(draft(), tok.clone())).unwrap();
    }
    Tiny {
        e,
        m: target(),
        draft: with_draft.then(draft),
        tok,
    }
}

fn used(pool: Option<&KvPool>) -> u32 {
    pool.map_or(0, KvPool::used_blocks)
}

fn opts(n: usize, spec: SpecOptions, penalties: bool) -> GenerateOptions {
    let mut sampling = SamplingParams::greedy();
    if penalties {
        sampling.repetition_penalty = 1.3;
        sampling.frequency_penalty = 0.2;
    }
    GenerateOptions {
        sampling,
        max_tokens: n,
        ignore_eos: true,
        speculative: spec,
        ..Default::default()
    }
}

/// Periodic prompts (so that n-grams recur) of different lengths.
fn prompts() -> Vec<Vec<u32>> {
    let seq =
        |n: usize, seed: u32| -> Vec<u32> { (0..n as u32).map(|i| (i * 7 + seed) % 13).collect() };
    vec![seq(5, 3), seq(40, 1), seq(19, 4), seq(2, 8), seq(70, 2)]
}

/// `p` alone through the engine.
fn alone(e: &mut Engine, p: &[u32], o: &GenerateOptions) -> (Vec<u32>, SpecStats) {
    let g = e.generate_blocking(p, o, &mut |_| true).unwrap();
    assert_eq!(e.kv_pool().used_blocks(), 0, "generate returns every block");
    assert_eq!(used(e.draft_kv_pool()), 0, "and every draft-model block");
    (g.ids, g.spec)
}

#[test]
fn greedy_ngram_drafting_matches_plain_decoding_alone() {
    greedy_drafting_matches_plain_decoding_alone(load(1 << 20), SpecOptions::ngram());
}

#[test]
fn greedy_model_drafting_matches_plain_decoding_alone() {
    greedy_drafting_matches_plain_decoding_alone(load_with_draft(1 << 20), SpecOptions::model());
}

fn greedy_drafting_matches_plain_decoding_alone(t: Tiny, spec: SpecOptions) {
    let mut e = t.e;
    let n = 24;
    let mut total = SpecStats::default();
    for penalties in [false, true] {
        for p in prompts() {
            let (want, none) = alone(&mut e, &p, &opts(n, SpecOptions::default(), penalties));
            assert_eq!(none.drafted, 0);
            let (got, s) = alone(&mut e, &p, &opts(n, spec, penalties));
            assert_eq!(got, want, "prompt {p:?} penalties {penalties}");
            total.add(&s);
        }
    }
    // The comparison means something only if drafts were made, and both
    // accepted and rejected (rollback) happened.
    assert!(total.drafted > 20, "{total:?}");
    assert!(
        total.accepted > 0 && total.accepted < total.drafted,
        "{total:?}"
    );
}

/// Every prompt through one scheduler over `t.m` (and `t.draft`).
fn batched(
    t: &mut Tiny,
    ps: &[Vec<u32>],
    o: &[GenerateOptions],
) -> (Vec<Vec<u32>>, SpecStats, u64) {
    let mut sched = Scheduler::new(SchedulerOptions::default(), t.m.new_kv_pool());
    sched
        .set_draft_pool(t.draft.as_ref().map(GpuModel::new_kv_pool))
        .unwrap();
    let ids: Vec<_> = ps
        .iter()
        .zip(o)
        .map(|(p, o)| sched.add(&t.m, p.clone(), o).unwrap())
        .collect();
    let mut got: HashMap<_, Vec<u32>> = HashMap::new();
    let mut total = SpecStats::default();
    let mut steps = 0;
    while !sched.is_idle() {
        for ev in pollster::block_on(sched.step(&mut t.m, t.draft.as_mut(), &t.tok)).unwrap() {
            match ev {
                SeqEvent::Token(id, a) => got.entry(id).or_default().push(a.id),
                SeqEvent::Finished {
                    id,
                    completion_tokens,
                    spec,
                    ..
                } => {
                    assert_eq!(completion_tokens, got.get(&id).map_or(0, Vec::len));
                    total.add(&spec);
                }
                SeqEvent::Failed { id, error } => panic!("sequence {id} failed: {error}"),
                SeqEvent::Embedding(id, _) => panic!("sequence {id} returned an embedding"),
            }
        }
        steps += 1;
        assert!(steps < 10_000, "the scheduler does not finish");
    }
    assert_eq!(sched.pool().used_blocks(), 0, "every KV block is returned");
    assert_eq!(
        used(sched.draft_pool()),
        0,
        "every draft-model block is returned"
    );
    let out = ids
        .iter()
        .map(|id| got.remove(id).unwrap_or_default())
        .collect();
    (out, total, sched.preemptions)
}

#[test]
fn greedy_ngram_drafting_in_the_scheduler_matches_plain_decoding() {
    greedy_drafting_in_the_scheduler_matches(load(1 << 20), SpecOptions::ngram());
}

#[test]
fn greedy_model_drafting_in_the_scheduler_matches_plain_decoding() {
    greedy_drafting_in_the_scheduler_matches(load_with_draft(1 << 20), SpecOptions::model());
}

fn greedy_drafting_in_the_scheduler_matches(mut t: Tiny, drafting: SpecOptions) {
    let ps = prompts();
    // Different lengths, all but one drafting, one with penalties.
    let o: Vec<GenerateOptions> = (0..ps.len())
        .map(|i| {
            let spec = if i != 1 {
                drafting
            } else {
                SpecOptions::default()
            };
            opts(20 + 3 * i, spec, i == 2)
        })
        .collect();
    let want: Vec<Vec<u32>> = ps
        .iter()
        .zip(&o)
        .map(|(p, o)| {
            alone(
                &mut t.e,
                p,
                &opts(
                    o.max_tokens,
                    SpecOptions::default(),
                    o.sampling.has_penalties(),
                ),
            )
            .0
        })
        .collect();
    let (got, spec, _) = batched(&mut t, &ps, &o);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.len(), o[i].max_tokens, "request {i} stops at max_tokens");
        assert_eq!(g, w, "request {i}");
    }
    assert!(spec.drafted > 0 && spec.accepted > 0, "{spec:?}");
}

#[test]
fn ngram_drafting_under_a_small_pool_preempts_and_still_matches() {
    // 16-token blocks, 256 bytes of KV per token: 40 KiB holds 10 blocks,
    // too few for all five requests at once.
    drafting_under_a_small_pool_preempts(load(40 << 10), SpecOptions::ngram());
}

#[test]
fn model_drafting_under_small_pools_preempts_and_still_matches() {
    // The draft model's pool is as small, so its proposals run out of blocks too.
    drafting_under_a_small_pool_preempts(load_with_draft(40 << 10), SpecOptions::model());
}

fn drafting_under_a_small_pool_preempts(mut t: Tiny, spec: SpecOptions) {
    let ps = prompts();
    let o: Vec<GenerateOptions> = ps.iter().map(|_| opts(30, spec, false)).collect();
    let want: Vec<Vec<u32>> = ps
        .iter()
        .map(|p| alone(&mut t.e, p, &opts(30, SpecOptions::default(), false)).0)
        .collect();
    let (got, spec, preemptions) = batched(&mut t, &ps, &o);
    assert_eq!(got, want);
    assert!(preemptions > 0, "the pool was meant to run out");
    assert!(spec.drafted > 0, "{spec:?}");
}

/// Verification rows with penalties: row j counts the drafts before it, as
/// if they had been generated one by one.
#[test]
fn later_logit_rows_count_the_drafts_before_them() {
    let mut m = load(1 << 20).m;
    let tokens = [3u32, 9, 9, 4, 9];
    let counts = [(9u32, 2u32), (3, 1)];
    let mut pool = m.new_kv_pool();
    let blocks = pool.allocate(1).unwrap();
    let step = |m: &mut GpuModel, toks: &[u32], start: u32, rows: u32, counts: &[(u32, u32)]| {
        pollster::block_on(m.step(
            &[SeqStep {
                logit_rows: rows,
                generated: true,
                penalty_counts: counts,
                repetition_penalty: 1.5,
                frequency_penalty: 0.7,
                ..SeqStep::new(toks, start, &blocks)
            }],
            8,
        ))
        .unwrap()
    };
    let all = step(&mut m, &tokens, 0, 3, &counts);
    assert_eq!(all.len(), 3);
    for j in 0..3usize {
        // Row 2 + j alone, with the counts plus tokens[3..=2 + j].
        let mut c = counts.to_vec();
        c.extend(tokens[3..=2 + j].iter().map(|&t| (t, 1)));
        let one = step(&mut m, &tokens[..3 + j], 0, 1, &c);
        assert_eq!(one[0].ids, all[j].ids, "row {j}");
        assert_eq!(one[0].logits, all[j].logits, "row {j}");
    }
    pool.free(&blocks).unwrap();
}

#[test]
fn model_drafting_without_a_draft_model_is_a_clear_error() {
    let mut t = load(1 << 20);
    let o = opts(4, SpecOptions::model(), false);
    let e =
        t.e.generate_blocking(&[1, 2, 3], &o, &mut |_| true)
            .unwrap_err();
    assert!(e.to_string().contains("--draft-model"), "{e}");
    assert_eq!(t.e.kv_pool().used_blocks(), 0);
    let mut sched = Scheduler::new(SchedulerOptions::default(), t.m.new_kv_pool());
    let e = sched.add(&t.m, vec![1, 2, 3], &o).unwrap_err();
    assert!(e.to_string().contains("--draft-model"), "{e}");
    assert_eq!(sched.pool().used_blocks(), 0);
}
