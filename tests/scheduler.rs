//! Continuous batching: many requests stepped together give exactly the
//! tokens each gives alone, also when the KV pool is too small for all of
//! them at once (preemption and recompute), and every block comes back.

mod common;

use std::collections::HashMap;

use common::{gpu, gpu_model, tiny_file, tokenizer_of, uncached_engine};
use hearth::engine::scheduler::{Scheduler, SchedulerOptions, SeqEvent, SeqId};
use hearth::engine::{FinishReason, GenerateOptions, SamplingParams};
use hearth::model::forward::{ForwardOptions, GpuModel};
use hearth::text::Tokenizer;
use hearth::Engine;

/// The tiny model twice on one device: `m` (with `tok`) for the scheduler
/// under test, and `oracle`, an engine over its own copy that runs one
/// request at a time without prefix caching. Two copies, since a KV block
/// manager takes its model's cache for its own: the oracle's requests must
/// not overwrite blocks the scheduler under test has cached.
struct Tiny {
    m: GpuModel,
    tok: Tokenizer,
    oracle: Engine,
}

fn load(kv_memory: u64) -> Tiny {
    let file = tiny_file("llama");
    let tok = tokenizer_of(&file);
    let ctx = gpu();
    let opts = ForwardOptions {
        kv_memory,
        max_step_tokens: 64,
        max_seqs: 16,
        ..Default::default()
    };
    Tiny {
        m: gpu_model(ctx.clone(), &file, opts.clone()),
        oracle: uncached_engine(gpu_model(ctx, &file, opts), tok.clone()),
        tok,
    }
}

/// A scheduler with default options over `m`'s KV cache.
fn scheduler(m: &GpuModel) -> Scheduler {
    Scheduler::new(SchedulerOptions::default(), m.new_kv_pool())
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

/// `p`'s tokens generated alone (the oracle).
fn alone(e: &mut Engine, p: &[u32], n: usize) -> Vec<u32> {
    e.generate_blocking(p, &opts(n), &mut |_| true).unwrap().ids
}

/// Runs every prompt through one scheduler; returns each request's tokens.
fn batched(
    m: &mut GpuModel,
    tok: &Tokenizer,
    sched: &mut Scheduler,
    ps: &[Vec<u32>],
    n: usize,
) -> Vec<Vec<u32>> {
    let ids: Vec<SeqId> = ps
        .iter()
        .map(|p| sched.add(m, p.clone(), &opts(n)).unwrap())
        .collect();
    let mut got: HashMap<SeqId, Vec<u32>> = HashMap::new();
    let mut finished = HashMap::new();
    let mut steps = 0;
    while !sched.is_idle() {
        for ev in pollster::block_on(sched.step(m, None, tok)).unwrap() {
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
                SeqEvent::Failed { id, error } => panic!("sequence {id} failed: {error}"),
                SeqEvent::Embedding(id, _) => panic!("sequence {id} returned an embedding"),
            }
        }
        steps += 1;
        assert!(steps < 10_000, "the scheduler does not finish");
    }
    assert_eq!(sched.pool().used_blocks(), 0, "every KV block is returned");
    ids.iter()
        .map(|id| {
            assert_eq!(finished.get(id), Some(&FinishReason::Length));
            got.remove(id).unwrap_or_default()
        })
        .collect()
}

#[test]
fn batched_requests_get_the_tokens_they_get_alone() {
    let mut t = load(1 << 20);
    let ps = prompts();
    let n = 9;
    let want: Vec<Vec<u32>> = ps.iter().map(|p| alone(&mut t.oracle, p, n)).collect();
    let mut sched = scheduler(&t.m);
    let got = batched(&mut t.m, &t.tok, &mut sched, &ps, n);
    assert_eq!(got, want);
    assert_eq!(sched.preemptions, 0);
}

#[test]
fn a_pool_too_small_for_all_preempts_and_still_gets_every_answer_right() {
    // 16-token blocks, 256 bytes of KV per token: 80 KiB holds 20 blocks.
    let mut t = load(80 << 10);
    let ps = prompts();
    let n = 24;
    let bs = t.m.kv_block_size() as usize;
    let need: usize = ps.iter().map(|p| (p.len() + n).div_ceil(bs)).sum();
    assert!(
        need > t.m.kv_blocks() as usize + 5,
        "{need} blocks fit in the pool"
    );
    let want: Vec<Vec<u32>> = ps.iter().map(|p| alone(&mut t.oracle, p, n)).collect();
    let mut sched = scheduler(&t.m);
    let got = batched(&mut t.m, &t.tok, &mut sched, &ps, n);
    assert_eq!(got, want);
    assert!(sched.preemptions > 0, "the pool was meant to run out");
}

#[test]
fn cancelled_requests_end_and_free_their_blocks() {
    let mut t = load(1 << 20);
    let mut sched = scheduler(&t.m);
    let a = sched.add(&t.m, vec![1, 2, 3, 4, 5], &opts(50)).unwrap();
    let b = sched.add(&t.m, vec![6, 7, 8], &opts(5)).unwrap();
    let mut ended = HashMap::new();
    let mut steps = 0;
    while !sched.is_idle() {
        if steps == 3 {
            sched.cancel(a);
        }
        for ev in pollster::block_on(sched.step(&mut t.m, None, &t.tok)).unwrap() {
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
    assert_eq!(sched.pool().used_blocks(), 0);
}

#[test]
fn requests_that_can_never_fit_are_refused_up_front() {
    let t = load(1 << 15);
    let mut sched = scheduler(&t.m);
    let e = sched.add(&t.m, vec![1; 200], &opts(50)).unwrap_err();
    assert!(e.to_string().contains("KV blocks"), "{e}");
    assert!(sched.add(&t.m, vec![], &opts(5)).is_err());
    assert!(
        sched.add(&t.m, vec![99], &opts(5)).is_err(),
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
    let Tiny {
        mut m,
        tok,
        mut oracle,
    } = load(1 << 20);
    let bs = m.kv_block_size() as usize;
    let system: Vec<u32> = (0..70u32).map(|i| (i * 11 + 3) % 40).collect();
    let ask = |tail: &[u32]| [system.as_slice(), tail].concat();
    let (a, b) = (ask(&[5, 6, 7]), ask(&[9, 1]));
    let n = 12;
    let want_a = alone(&mut oracle, &a, n);
    let want_b = alone(&mut oracle, &b, n);

    let mut sched = scheduler(&m);
    assert_eq!(through(&mut m, &tok, &mut sched, &a, n), want_a);
    let first = sched.pool().prefix_stats();
    assert_eq!(
        first.hit_tokens, 0,
        "nothing cached before the first request"
    );
    assert!(sched.pool().cached_blocks() as usize >= a.len() / bs);
    assert_eq!(
        sched.pool().used_blocks(),
        0,
        "cached blocks are not in use"
    );

    assert_eq!(through(&mut m, &tok, &mut sched, &b, n), want_b);
    let second = sched.pool().prefix_stats();
    assert_eq!(
        second.hit_tokens - first.hit_tokens,
        (system.len() / bs * bs) as u64,
        "the system prompt's full blocks come from the cache"
    );
    // The same request again: everything but the last block is cached.
    assert_eq!(through(&mut m, &tok, &mut sched, &a, n), want_a);
    let third = sched.pool().prefix_stats();
    assert_eq!(
        third.hit_tokens - second.hit_tokens,
        ((a.len() - 1) / bs * bs) as u64
    );
    assert_eq!(third.query_tokens, 3 * a.len() as u64 - 1);

    // Without the cache the same requests compute everything.
    let mut plain = Scheduler::new(
        SchedulerOptions {
            prefix_caching: false,
            ..Default::default()
        },
        m.new_kv_pool(),
    );
    assert_eq!(through(&mut m, &tok, &mut plain, &b, n), want_b);
    assert_eq!(plain.pool().prefix_stats().query_tokens, 0);
    assert_eq!(plain.pool().cached_blocks(), 0);
}

#[test]
fn blocks_of_generated_tokens_are_not_reused_as_prompt_blocks() {
    // A generated row's K/V come from other kernels than a prompt row's, so
    // a later prompt that contains the earlier answer must recompute it.
    let mut t = load(1 << 20);
    let bs = t.m.kv_block_size() as usize;
    let p: Vec<u32> = (0..20u32).map(|i| (i * 3 + 1) % 40).collect();
    let n = 40;
    let mut sched = scheduler(&t.m);
    let answer = through(&mut t.m, &t.tok, &mut sched, &p, n);
    let follow_up = [p.as_slice(), &answer, &[2, 3]].concat();
    let before = sched.pool().prefix_stats();
    assert_eq!(
        through(&mut t.m, &t.tok, &mut sched, &follow_up, 5),
        alone(&mut t.oracle, &follow_up, 5)
    );
    let hits = sched.pool().prefix_stats().hit_tokens - before.hit_tokens;
    assert_eq!(
        hits,
        (p.len() / bs * bs) as u64,
        "only all-prompt blocks are shared"
    );
}

#[test]
fn cached_blocks_are_evicted_when_the_pool_needs_them() {
    // 20 blocks: every request fits alone, not all of their caches together.
    let mut t = load(80 << 10);
    let mut sched = scheduler(&t.m);
    let n = 8;
    for seed in 0..8u32 {
        let p: Vec<u32> = (0..60u32).map(|i| (i * 13 + seed * 7) % 40).collect();
        let want = alone(&mut t.oracle, &p, n);
        assert_eq!(through(&mut t.m, &t.tok, &mut sched, &p, n), want);
    }
    let s = sched.pool().prefix_stats();
    assert!(s.evictions > 0, "the cache never had to give blocks back");
    assert!(sched.pool().cached_blocks() <= sched.pool().num_blocks());
    assert_eq!(sched.pool().free_blocks(), sched.pool().num_blocks());
}

#[test]
fn a_request_that_needs_the_whole_pool_still_runs() {
    // 16 KiB: 4 blocks of 16 tokens; the 50-token prompt alone takes all 4.
    let mut t = load(16 << 10);
    assert_eq!(t.m.kv_blocks(), 4);
    let n = 14;
    let p: Vec<u32> = (0..50u32).map(|i| (i * 5 + 2) % 40).collect();
    let want = alone(&mut t.oracle, &p, n);
    let mut sched = scheduler(&t.m);
    assert_eq!(through(&mut t.m, &t.tok, &mut sched, &p, n), want);
}
