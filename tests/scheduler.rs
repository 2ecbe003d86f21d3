//! Continuous batching: many requests stepped together give exactly the
//! tokens each gives alone, also when the KV pool is too small for all of
//! them at once (preemption and recompute), and every block comes back.

#[path = "fixtures/gguf_writer.rs"]
mod gguf_writer;

use std::collections::HashMap;

use hearth::engine::scheduler::{RequestId, Scheduler, SchedulerOptions, SeqEvent};
use hearth::engine::{generate, FinishReason, GenerateOptions, SamplingParams};
use hearth::gpu::{GpuContext, GpuOptions};
use hearth::model::forward::{ForwardOptions, GpuModel};
use hearth::model::gguf::GgufModel;
use hearth::text::vocab::TokenizerSpec;
use hearth::text::Tokenizer;

fn load(kv_memory: u64) -> (GpuModel, Tokenizer) {
    let model = GgufModel::from_bytes(gguf_writer::tiny_model("llama", false).build()).unwrap();
    let tok = Tokenizer::from_spec(&TokenizerSpec::Gguf(model.vocab().unwrap())).unwrap();
    let ctx = GpuContext::new_blocking(&GpuOptions::from_env()).unwrap();
    let m = GpuModel::load(
        ctx,
        &model,
        ForwardOptions {
            kv_memory,
            max_step_tokens: 64,
            max_seqs: 16,
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap();
    (m, tok)
}

fn opts(n: usize) -> GenerateOptions {
    GenerateOptions {
        sampling: SamplingParams::greedy(),
        max_tokens: n,
        ignore_eos: true,
        ..Default::default()
    }
}

/// Prompts of different lengths; some share a long prefix.
fn prompts() -> Vec<Vec<u32>> {
    let seq =
        |n: usize, seed: u32| -> Vec<u32> { (0..n as u32).map(|i| (i * 7 + seed) % 40).collect() };
    let shared = seq(50, 1);
    let with_prefix = |tail: Vec<u32>| {
        let mut p = shared.clone();
        p.extend(tail);
        p
    };
    vec![
        seq(5, 3),
        with_prefix(seq(7, 9)),
        seq(130, 5),
        with_prefix(seq(3, 4)),
        seq(1, 8),
        seq(33, 2),
    ]
}

fn alone(m: &mut GpuModel, tok: &Tokenizer, p: &[u32], n: usize) -> Vec<u32> {
    pollster::block_on(generate(m, tok, p, &opts(n), &mut |_| true))
        .unwrap()
        .ids
}

/// Runs every prompt through one scheduler; returns each request's tokens.
fn batched(
    m: &mut GpuModel,
    tok: &Tokenizer,
    sched: &mut Scheduler,
    ps: &[Vec<u32>],
    n: usize,
) -> Vec<Vec<u32>> {
    let ids: Vec<RequestId> = ps
        .iter()
        .map(|p| sched.add(m, p.clone(), &opts(n)).unwrap())
        .collect();
    let mut got: HashMap<RequestId, Vec<u32>> = HashMap::new();
    let mut finished = HashMap::new();
    let mut steps = 0;
    while !sched.is_idle() {
        for ev in pollster::block_on(sched.step(m, tok)).unwrap() {
            match ev {
                SeqEvent::Token(id, a) => got.entry(id).or_default().push(a.id),
                SeqEvent::Finished {
                    id,
                    reason,
                    completion_tokens,
                    ..
                } => {
                    assert_eq!(completion_tokens, n);
                    finished.insert(id, reason);
                }
            }
        }
        steps += 1;
        assert!(steps < 10_000, "the scheduler does not finish");
    }
    assert_eq!(m.pool.used_blocks(), 0, "every KV block is returned");
    ids.iter()
        .map(|id| {
            assert_eq!(finished.get(id), Some(&FinishReason::Length));
            got.remove(id).unwrap_or_default()
        })
        .collect()
}

#[test]
fn batched_requests_get_the_tokens_they_get_alone() {
    let (mut m, tok) = load(1 << 20);
    let ps = prompts();
    let n = 9;
    let want: Vec<Vec<u32>> = ps.iter().map(|p| alone(&mut m, &tok, p, n)).collect();
    let mut sched = Scheduler::new(SchedulerOptions::default());
    let got = batched(&mut m, &tok, &mut sched, &ps, n);
    assert_eq!(got, want);
    assert_eq!(sched.preemptions, 0);
}

#[test]
fn a_pool_too_small_for_all_preempts_and_still_gets_every_answer_right() {
    // 16-token blocks, 256 bytes of KV per token: 80 KiB holds 20 blocks.
    let (mut m, tok) = load(80 << 10);
    let ps = prompts();
    let n = 24;
    let bs = m.pool.block_size() as usize;
    let need: usize = ps.iter().map(|p| (p.len() + n).div_ceil(bs)).sum();
    assert!(
        need > m.pool.num_blocks() as usize + 5,
        "{need} blocks fit in the pool"
    );
    let want: Vec<Vec<u32>> = ps.iter().map(|p| alone(&mut m, &tok, p, n)).collect();
    let mut sched = Scheduler::new(SchedulerOptions::default());
    let got = batched(&mut m, &tok, &mut sched, &ps, n);
    assert_eq!(got, want);
    assert!(sched.preemptions > 0, "the pool was meant to run out");
}

#[test]
fn cancelled_requests_end_and_free_their_blocks() {
    let (mut m, tok) = load(1 << 20);
    let mut sched = Scheduler::new(SchedulerOptions::default());
    let a = sched.add(&m, vec![1, 2, 3, 4, 5], &opts(50)).unwrap();
    let b = sched.add(&m, vec![6, 7, 8], &opts(5)).unwrap();
    let mut ended = HashMap::new();
    let mut steps = 0;
    while !sched.is_idle() {
        if steps == 3 {
            sched.cancel(a);
        }
        for ev in pollster::block_on(sched.step(&mut m, &tok)).unwrap() {
            if let SeqEvent::Finished {
                id,
                reason,
                completion_tokens,
                ..
            } = ev
            {
                ended.insert(id, (reason, completion_tokens));
            }
        }
        steps += 1;
    }
    assert_eq!(ended[&a].0, FinishReason::Cancelled);
    assert!(ended[&a].1 < 50);
    assert_eq!(ended[&b], (FinishReason::Length, 5));
    assert_eq!(m.pool.used_blocks(), 0);
}

#[test]
fn requests_that_can_never_fit_are_refused_up_front() {
    let (m, _) = load(1 << 15);
    let mut sched = Scheduler::new(SchedulerOptions::default());
    let e = sched.add(&m, vec![1; 200], &opts(50)).unwrap_err();
    assert!(e.to_string().contains("KV blocks"), "{e}");
    assert!(sched.add(&m, vec![], &opts(5)).is_err());
    assert!(
        sched.add(&m, vec![99], &opts(5)).is_err(),
        "token outside the vocabulary"
    );
    assert!(sched.is_idle());
}

/// Runs `p` alone through `sched` to the end; returns its tokens.
fn through(
    m: &mut GpuModel,
    tok: &Tokenizer,
    sched: &mut Scheduler,
    p: &[u32],
    n: usize,
) -> Vec<u32> {
    batched(m, tok, sched, &[p.to_vec()], n).remove(0)
}

#[test]
fn a_repeated_prefix_reuses_cached_blocks_and_gives_identical_output() {
    let (mut m, tok) = load(1 << 20);
    let bs = m.pool.block_size() as usize;
    let system: Vec<u32> = (0..70u32).map(|i| (i * 11 + 3) % 40).collect();
    let ask = |tail: &[u32]| [system.as_slice(), tail].concat();
    let (a, b) = (ask(&[5, 6, 7]), ask(&[9, 1]));
    let n = 12;
    let want_a = alone(&mut m, &tok, &a, n);
    let want_b = alone(&mut m, &tok, &b, n);

    let mut sched = Scheduler::new(SchedulerOptions::default());
    assert_eq!(through(&mut m, &tok, &mut sched, &a, n), want_a);
    let first = m.pool.prefix_stats();
    assert_eq!(
        first.hit_tokens, 0,
        "nothing cached before the first request"
    );
    assert!(m.pool.cached_blocks() as usize >= a.len() / bs);
    assert_eq!(m.pool.used_blocks(), 0, "cached blocks are not in use");

    assert_eq!(through(&mut m, &tok, &mut sched, &b, n), want_b);
    let second = m.pool.prefix_stats();
    assert_eq!(
        second.hit_tokens - first.hit_tokens,
        (system.len() / bs * bs) as u64,
        "the system prompt's full blocks come from the cache"
    );
    // The same request again: everything but the last block is cached.
    assert_eq!(through(&mut m, &tok, &mut sched, &a, n), want_a);
    let third = m.pool.prefix_stats();
    assert_eq!(
        third.hit_tokens - second.hit_tokens,
        ((a.len() - 1) / bs * bs) as u64
    );
    assert_eq!(third.query_tokens, 3 * a.len() as u64 - 1);

    // Without the cache the same requests compute everything.
    let (mut m2, _) = load(1 << 20);
    let mut plain = Scheduler::new(SchedulerOptions {
        prefix_caching: false,
        ..Default::default()
    });
    assert_eq!(through(&mut m2, &tok, &mut plain, &b, n), want_b);
    assert_eq!(m2.pool.prefix_stats().query_tokens, 0);
    assert_eq!(m2.pool.cached_blocks(), 0);
}

#[test]
fn blocks_of_generated_tokens_are_not_reused_as_prompt_blocks() {
    // A generated row's K/V come from other kernels than a prompt row's, so
    // a later prompt that contains the earlier answer must recompute it.
    let (mut m, tok) = load(1 << 20);
    let bs = m.pool.block_size() as usize;
    let p: Vec<u32> = (0..20u32).map(|i| (i * 3 + 1) % 40).collect();
    let n = 40;
    let mut sched = Scheduler::new(SchedulerOptions::default());
    let answer = through(&mut m, &tok, &mut sched, &p, n);
    let follow_up = [p.as_slice(), &answer, &[2, 3]].concat();
    let before = m.pool.prefix_stats();
    assert_eq!(
        through(&mut m, &tok, &mut sched, &follow_up, 5),
        alone(&mut m, &tok, &follow_up, 5)
    );
    let hits = m.pool.prefix_stats().hit_tokens - before.hit_tokens;
    assert_eq!(
        hits,
        (p.len() / bs * bs) as u64,
        "only all-prompt blocks are shared"
    );
}

#[test]
fn cached_blocks_are_evicted_when_the_pool_needs_them() {
    // 20 blocks: every request fits alone, not all of their caches together.
    let (mut m, tok) = load(80 << 10);
    let mut sched = Scheduler::new(SchedulerOptions::default());
    let n = 8;
    for seed in 0..8u32 {
        let p: Vec<u32> = (0..60u32).map(|i| (i * 13 + seed * 7) % 40).collect();
        let want = alone(&mut m, &tok, &p, n);
        assert_eq!(through(&mut m, &tok, &mut sched, &p, n), want);
    }
    let s = m.pool.prefix_stats();
    assert!(s.evictions > 0, "the cache never had to give blocks back");
    assert!(m.pool.cached_blocks() <= m.pool.num_blocks());
    assert_eq!(m.pool.free_blocks(), m.pool.num_blocks());
}

#[test]
fn a_request_that_needs_the_whole_pool_still_runs() {
    // 16 KiB: 4 blocks of 16 tokens; the 50-token prompt alone takes all 4.
    let (mut m, tok) = load(16 << 10);
    assert_eq!(m.pool.num_blocks(), 4);
    let n = 14;
    let p: Vec<u32> = (0..50u32).map(|i| (i * 5 + 2) % 40).collect();
    let want = alone(&mut m, &tok, &p, n);
    let mut sched = Scheduler::new(SchedulerOptions::default());
    assert_eq!(through(&mut m, &tok, &mut sched, &p, n), want);
}
