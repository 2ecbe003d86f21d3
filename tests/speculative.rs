//! Speculative decoding with n-gram drafting and with a draft model gives
//! exactly the greedy tokens of plain decoding, alone and inside the
//! continuous-batching scheduler (with penalties, a pool small enough to
//! preempt, and max_tokens limits), and gives every rejected draft's KV
//! block back, in the target's pool and in the draft's.

#[path = "fixtures/gguf_writer.rs"]
mod gguf_writer;

use std::collections::HashMap;
use std::sync::Arc;

use hearth::engine::scheduler::{Scheduler, SchedulerOptions, SeqEvent};
use hearth::engine::{generate, GenerateOptions, SamplingParams, SpecOptions, SpecStats};
use hearth::gpu::{GpuContext, GpuOptions};
use hearth::model::forward::{ForwardOptions, GpuModel, SeqStep};
use hearth::model::gguf::GgufModel;
use hearth::model::DType;
use hearth::text::vocab::TokenizerSpec;
use hearth::text::Tokenizer;

/// The tiny model on `ctx`, stored as `dtype` (None: as in the file).
fn tiny_gpu_model(
    ctx: Arc<GpuContext>,
    model: &GgufModel,
    dtype: Option<DType>,
    kv_memory: u64,
    max_logit_rows: u32,
) -> GpuModel {
    GpuModel::load(
        ctx,
        model,
        ForwardOptions {
            kv_memory,
            dtype,
            max_step_tokens: 64,
            max_seqs: 8,
            max_logit_rows,
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap()
}

fn tiny_file() -> GgufModel {
    GgufModel::from_bytes(gguf_writer::tiny_model("llama", false).build()).unwrap()
}

fn load(kv_memory: u64) -> (GpuModel, Tokenizer) {
    let model = tiny_file();
    let tok = Tokenizer::from_spec(&TokenizerSpec::Gguf(model.vocab().unwrap())).unwrap();
    let ctx = GpuContext::new_blocking(&GpuOptions::from_env()).unwrap();
    (tiny_gpu_model(ctx, &model, None, kv_memory, 40), tok)
}

/// The target of [`load`] with a draft model beside it: the same weights
/// requantized to Q4_0, so most drafts are accepted and some are not.
fn load_with_draft(kv_memory: u64) -> (GpuModel, Tokenizer) {
    let (mut m, tok) = load(kv_memory);
    let d = tiny_gpu_model(m.ctx.clone(), &tiny_file(), Some(DType::Q4_0), kv_memory, 8);
    m.draft = Some(Box::new(d));
    (m, tok)
}

fn draft_blocks_used(m: &GpuModel) -> u32 {
    m.draft.as_ref().map_or(0, |d| d.pool.used_blocks())
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

fn alone(
    m: &mut GpuModel,
    tok: &Tokenizer,
    p: &[u32],
    o: &GenerateOptions,
) -> (Vec<u32>, SpecStats) {
    let g = pollster::block_on(generate(m, tok, p, o, &mut |_| true)).unwrap();
    assert_eq!(m.pool.used_blocks(), 0, "generate returns every block");
    assert_eq!(draft_blocks_used(m), 0, "and every draft-model block");
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

fn greedy_drafting_matches_plain_decoding_alone(loaded: (GpuModel, Tokenizer), spec: SpecOptions) {
    let (mut m, tok) = loaded;
    let n = 24;
    let mut total = SpecStats::default();
    for penalties in [false, true] {
        for p in prompts() {
            let (want, none) = alone(
                &mut m,
                &tok,
                &p,
                &opts(n, SpecOptions::default(), penalties),
            );
            assert_eq!(none.drafted, 0);
            let (got, s) = alone(&mut m, &tok, &p, &opts(n, spec, penalties));
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

fn batched(
    m: &mut GpuModel,
    tok: &Tokenizer,
    ps: &[Vec<u32>],
    o: &[GenerateOptions],
) -> (Vec<Vec<u32>>, SpecStats, u64) {
    let mut sched = Scheduler::new(SchedulerOptions::default());
    let ids: Vec<_> = ps
        .iter()
        .zip(o)
        .map(|(p, o)| sched.add(m, p.clone(), o).unwrap())
        .collect();
    let mut got: HashMap<_, Vec<u32>> = HashMap::new();
    let mut total = SpecStats::default();
    let mut steps = 0;
    while !sched.is_idle() {
        for ev in pollster::block_on(sched.step(m, tok)).unwrap() {
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
            }
        }
        steps += 1;
        assert!(steps < 10_000, "the scheduler does not finish");
    }
    assert_eq!(m.pool.used_blocks(), 0, "every KV block is returned");
    assert_eq!(
        draft_blocks_used(m),
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

fn greedy_drafting_in_the_scheduler_matches(loaded: (GpuModel, Tokenizer), drafting: SpecOptions) {
    let (mut m, tok) = loaded;
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
                &mut m,
                &tok,
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
    let (got, spec, _) = batched(&mut m, &tok, &ps, &o);
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

fn drafting_under_a_small_pool_preempts(loaded: (GpuModel, Tokenizer), spec: SpecOptions) {
    let (mut m, tok) = loaded;
    let ps = prompts();
    let o: Vec<GenerateOptions> = ps.iter().map(|_| opts(30, spec, false)).collect();
    let want: Vec<Vec<u32>> = ps
        .iter()
        .map(|p| alone(&mut m, &tok, p, &opts(30, SpecOptions::default(), false)).0)
        .collect();
    let (got, spec, preemptions) = batched(&mut m, &tok, &ps, &o);
    assert_eq!(got, want);
    assert!(preemptions > 0, "the pool was meant to run out");
    assert!(spec.drafted > 0, "{spec:?}");
}

/// Verification rows with penalties: row j counts the drafts before it, as
/// if they had been generated one by one.
#[test]
fn later_logit_rows_count_the_drafts_before_them() {
    let (mut m, _) = load(1 << 20);
    let tokens = [3u32, 9, 9, 4, 9];
    let counts = [(9u32, 2u32), (3, 1)];
    let blocks = m.pool.allocate(1).unwrap();
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
    m.pool.free(&blocks).unwrap();
}

#[test]
fn model_drafting_without_a_draft_model_is_a_clear_error() {
    let (mut m, tok) = load(1 << 20);
    let o = opts(4, SpecOptions::model(), false);
    let e = pollster::block_on(generate(&mut m, &tok, &[1, 2, 3], &o, &mut |_| true)).unwrap_err();
    assert!(e.to_string().contains("--draft-model"), "{e}");
    let mut sched = Scheduler::new(SchedulerOptions::default());
    let e = sched.add(&m, vec![1, 2, 3], &o).unwrap_err();
    assert!(e.to_string().contains("--draft-model"), "{e}");
    assert_eq!(m.pool.used_blocks(), 0);
}
