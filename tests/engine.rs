//! The library engine (`hearth::Engine`) as every front end drives it: the
//! steppable core and the async handle. Oracle: each request run alone on an
//! engine without prefix caching; the forward pass is batch-invariant, so a
//! request's tokens must not depend on what it was batched with.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{engine, gpu, rand_vec, tiny_file, tiny_gpu_model, tokenizer_of, uncached_engine};
use hearth::engine::{Drafting, Finish, Output};
use hearth::model::forward::ForwardOptions;
use hearth::{Engine, Event, FinishReason, HearthError, Prompt, Request, SamplingParams};

const ARCH: &str = "llama";

fn opts() -> ForwardOptions {
    ForwardOptions {
        max_step_tokens: 64,
        // 16 requests, one with n = 2, each may add two parts to a step.
        max_seqs: 40,
        max_logit_rows: 48,
        kv_memory: 8 << 20,
        ..Default::default()
    }
}

fn new_engine(cached: bool) -> Engine {
    let file = tiny_file(ARCH);
    let tok = tokenizer_of(&file);
    let m = tiny_gpu_model(ARCH, gpu(), opts());
    if cached {
        engine(m, tok)
    } else {
        uncached_engine(m, tok)
    }
}

/// Sixteen requests with mixed options: greedy and seeded sampling,
/// penalties, logprobs, n = 2, stop strings, n-gram drafts, prompts of many
/// lengths (some past one step's budget, so prefill is chunked).
fn mixed_requests() -> Vec<Request> {
    (0..16)
        .map(|i| {
            let len = [3, 17, 40, 90][i % 4] + i;
            let prompt: Vec<u32> = rand_vec(len, 7 + i as u64)
                .iter()
                .map(|x| 1 + ((x + 1.0) * 19.0) as u32)
                .collect();
            let mut r = Request::new(Prompt::Ids(prompt));
            r.max_tokens = Some(4 + (i * 5) % 23);
            r.ignore_eos = true;
            match i % 5 {
                0 => {}
                1 => {
                    r.sampling = SamplingParams {
                        temperature: 0.9,
                        top_k: 20,
                        seed: Some(100 + i as u64),
                        ..SamplingParams::default()
                    }
                }
                2 => {
                    r.sampling.repetition_penalty = 1.3;
                    r.sampling.presence_penalty = 0.5;
                    r.logprobs = 3;
                }
                3 => {
                    r.n = 2;
                    r.sampling = SamplingParams {
                        temperature: 0.7,
                        seed: Some(9),
                        ..SamplingParams::default()
                    }
                }
                _ => r.draft = Some(Drafting::Ngram),
            }
            if i == 6 {
                r.stop = vec!["t1".into()];
            }
            r
        })
        .collect()
}

/// Per choice: the ids and the finish reason.
type Choices = Vec<(Vec<u32>, Option<FinishReason>)>;

/// Runs `req` alone on `e` through the steppable core.
fn alone(e: &mut Engine, req: Request) -> Choices {
    let n = req.n;
    let (id, _) = e.add_request(req).unwrap();
    let mut out: Choices = vec![(Vec::new(), None); n];
    while e.has_work() {
        for o in e.step_blocking() {
            assert_eq!(o.request(), id);
            match o {
                Output::Token { choice, token, .. } => out[choice].0.push(token.id),
                Output::Finished { choice, finish, .. } => out[choice].1 = Some(finish.reason),
                Output::Failed { error, .. } => panic!("request failed: {error}"),
                Output::Embedding { .. } => panic!("a generation returned an embedding"),
            }
        }
    }
    out
}

/// Drains a stream: per choice, ids and finish reason.
fn drain(stream: &mut hearth::RequestStream, n: usize) -> Choices {
    let mut out: Choices = vec![(Vec::new(), None); n];
    while let Some(ev) = stream.next_blocking() {
        match ev {
            Event::Token { choice, token } => out[choice].0.push(token.id),
            Event::Finished { choice, finish } => out[choice].1 = Some(finish.reason),
            Event::Failed(e) => panic!("request failed: {e}"),
            Event::Embedding(_) => panic!("a generation returned an embedding"),
        }
    }
    out
}

/// Polls the handle's published stats until `done` holds (a hang guard,
/// not a timing check).
fn wait_for(handle: &hearth::EngineHandle, done: impl Fn(&hearth::engine::EngineStats) -> bool) {
    let t0 = Instant::now();
    loop {
        let s = handle.info().stats;
        if done(&s) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "the engine never got there: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sixteen_concurrent_requests_through_the_handle_equal_each_alone() {
    let reqs = mixed_requests();
    let mut oracle = new_engine(false);
    let expected: Vec<Choices> = reqs.iter().map(|r| alone(&mut oracle, r.clone())).collect();
    assert_ne!(expected[0], expected[5], "the requests differ");

    let thread = new_engine(true).spawn().unwrap();
    let handle = thread.handle();
    // Everything is queued before any stream is read: the engine batches them.
    let mut streams: Vec<_> = reqs
        .iter()
        .map(|r| handle.submit_blocking(r.clone()).unwrap())
        .collect();
    for (i, (s, r)) in streams.iter_mut().zip(&reqs).enumerate() {
        assert_eq!(drain(s, r.n), expected[i], "request {i} ({r:?})");
    }
    wait_for(&handle, |s| s.running == 0 && s.waiting == 0);
    assert_eq!(handle.info().stats.kv_used, 0, "every block is back");
    thread.shutdown();
    assert!(!handle.is_alive());
}

#[test]
fn dropping_a_stream_mid_generation_returns_every_block() {
    let thread = new_engine(true).spawn().unwrap();
    let handle = thread.handle();
    let mut long = Request::new(Prompt::Ids((1..50).map(|i| i % 39 + 1).collect()));
    long.max_tokens = Some(200);
    long.ignore_eos = true;
    let mut other = Request::new(Prompt::Ids(vec![5, 6, 7]));
    other.max_tokens = Some(6);
    other.ignore_eos = true;

    let mut s = handle.submit_blocking(long.clone()).unwrap();
    let mut keep = handle.submit_blocking(other.clone()).unwrap();
    for _ in 0..3 {
        assert!(matches!(s.next_blocking(), Some(Event::Token { .. })));
    }
    drop(s);
    // The other request is not disturbed.
    let mut oracle = new_engine(false);
    assert_eq!(drain(&mut keep, 1), alone(&mut oracle, other));
    wait_for(&handle, |st| st.running == 0 && st.waiting == 0);
    let st = handle.info().stats;
    assert_eq!(st.kv_used, 0, "the dropped request's blocks are back");
    assert_eq!(
        st.cancelled, 1,
        "the dropped request was aborted, not run to its end"
    );

    // An explicit abort ends the stream with a cancelled finish.
    let mut s = handle.submit_blocking(long).unwrap();
    assert!(matches!(s.next_blocking(), Some(Event::Token { .. })));
    handle.abort(s.id);
    let got = drain(&mut s, 1);
    assert_eq!(got[0].1, Some(FinishReason::Cancelled));
    assert!(got[0].0.len() < 200);
    wait_for(&handle, |st| st.running == 0 && st.kv_used == 0);
    assert_eq!(handle.info().stats.cancelled, 2);
    thread.shutdown();
}

#[test]
fn a_failed_step_fails_the_requests_in_flight_and_the_engine_serves_the_next() {
    let mut e = new_engine(true);
    let req = |p: Vec<u32>| Request {
        max_tokens: Some(8),
        ignore_eos: true,
        ..Request::new(Prompt::Ids(p))
    };
    let (a, _) = e.add_request(req(vec![1, 2, 3])).unwrap();
    let (b, _) = e.add_request(req(vec![4, 5, 6, 7])).unwrap();
    e.step_blocking();
    e.debug_fail_next_step();
    let outs = e.step_blocking();
    let mut failed: Vec<_> = outs
        .iter()
        .map(|o| match o {
            Output::Failed { request, error } => {
                assert!(matches!(error, HearthError::Gpu(_)), "{error}");
                *request
            }
            other => panic!("only failures come out of a failed step, got {other:?}"),
        })
        .collect();
    failed.sort();
    assert_eq!(failed, vec![a, b]);
    // The next request is served, with the tokens it gets alone.
    let next = req(vec![9, 8, 7, 6, 5]);
    let got = alone(&mut e, next.clone());
    assert_eq!(got, alone(&mut new_engine(false), next));
    assert!(!e.has_work());
    assert_eq!(
        e.kv_pool().used_blocks(),
        0,
        "the failed requests' blocks are back"
    );
}

/// A queue head the KV cache can never admit (here: blocks leaked) fails
/// with a clear error instead of spinning, whichever driver steps the engine.
#[test]
fn the_admission_guard_holds_for_the_core_and_the_handle() {
    let prompt: Vec<u32> = (1..60).map(|i| i % 39 + 1).collect();
    let req = Request {
        max_tokens: Some(4),
        ..Request::new(Prompt::Ids(prompt))
    };
    let leaky = || {
        let mut e = new_engine(true);
        let total = e.kv_pool().num_blocks() as usize;
        e.debug_leak_kv_blocks(total - 2).unwrap();
        e
    };
    let mut e = leaky();
    let (id, _) = e.add_request(req.clone()).unwrap();
    let mut outs = Vec::new();
    while e.has_work() {
        outs.extend(e.step_blocking());
        assert!(outs.len() < 100, "the engine keeps stepping: {outs:?}");
    }
    match outs.as_slice() {
        [Output::Failed {
            request,
            error: HearthError::OutOfKvMemory(m),
        }] => {
            assert_eq!(*request, id);
            assert!(m.contains("cannot admit"), "{m}");
        }
        other => panic!("expected one out-of-KV failure, got {other:?}"),
    }

    let thread = leaky().spawn().unwrap();
    let mut s = thread.handle().submit_blocking(req).unwrap();
    match s.next_blocking() {
        Some(Event::Failed(HearthError::OutOfKvMemory(_))) => {}
        other => panic!("expected an out-of-KV failure, got {other:?}"),
    }
    assert!(
        s.next_blocking().is_none(),
        "the stream ends after the failure"
    );
    thread.shutdown();
}

#[test]
fn bad_requests_are_refused_naming_the_field_and_nothing_else_breaks() {
    let thread = new_engine(true).spawn().unwrap();
    let handle = thread.handle();
    let field = |r: Request| match handle.submit_blocking(r) {
        Err(HearthError::InvalidField { field, .. }) => field,
        Err(e) => panic!("expected an invalid field, got {e}"),
        Ok(_) => panic!("a bad request was accepted"),
    };
    let good = Request {
        max_tokens: Some(4),
        ..Request::new(Prompt::Ids(vec![1, 2, 3]))
    };
    let mut r = good.clone();
    r.sampling.temperature = -1.0;
    assert_eq!(field(r), "temperature");
    let mut r = good.clone();
    r.n = 0;
    assert_eq!(field(r), "n");
    assert_eq!(field(Request::new(Prompt::Ids(vec![]))), "prompt");
    let mut r = good.clone();
    r.max_tokens = Some(10_000);
    assert!(matches!(
        handle.submit_blocking(r),
        Err(HearthError::ContextLength { .. })
    ));
    let mut r = good.clone();
    r.prompt = Prompt::Ids(vec![1, 40]);
    match handle.submit_blocking(r) {
        Err(HearthError::InvalidRequest(m)) => assert!(m.contains("vocabulary"), "{m}"),
        Err(e) => panic!("expected an out-of-vocabulary error, got {e:?}"),
        Ok(_) => panic!("an out-of-vocabulary prompt was accepted"),
    }
    // No template in the tiny model: a chat prompt is refused clearly.
    assert!(matches!(
        handle.submit_blocking(Request::chat("hi")),
        Err(HearthError::Template(_))
    ));
    let mut s = handle.submit_blocking(good).unwrap();
    assert!(drain(&mut s, 1)[0].1.is_some());
    thread.shutdown();
}

/// The busy limit (`EngineConfig::max_sequences`) counts choices.
#[test]
fn a_full_engine_answers_busy_and_admits_again_once_free() {
    let mut e = new_engine(true);
    e.set_config(hearth::EngineConfig {
        max_sequences: Some(3),
        ..Default::default()
    })
    .unwrap();
    let req = |n| Request {
        n,
        max_tokens: Some(3),
        ignore_eos: true,
        ..Request::new(Prompt::Ids(vec![3, 4]))
    };
    let err = e.add_request(req(4)).unwrap_err();
    assert!(
        matches!(&err, HearthError::InvalidField { field, .. } if field == "n"),
        "{err}"
    );
    e.add_request(req(2)).unwrap();
    assert!(matches!(e.add_request(req(2)), Err(HearthError::Busy(_))));
    let mut done = HashMap::new();
    while e.has_work() {
        for o in e.step_blocking() {
            if let Output::Finished { choice, .. } = o {
                done.insert(choice, true);
            }
        }
    }
    assert_eq!(done.len(), 2);
    e.add_request(req(3)).unwrap();
}

/// Polls `fut` once: its result if it is ready at once.
fn poll_once<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// The handle's command queue is bounded: with the driver not yet running,
/// submits past the engine's `max_sequences` answer `Busy` at once instead
/// of queueing without end, and the places come back once the driver runs.
#[test]
fn submits_waiting_for_the_driver_are_bounded() {
    let mut e = new_engine(true);
    e.set_config(hearth::EngineConfig {
        max_sequences: Some(2),
        ..Default::default()
    })
    .unwrap();
    let req = || Request {
        max_tokens: Some(2),
        ignore_eos: true,
        ..Request::new(Prompt::Ids(vec![3, 4]))
    };
    let (handle, driver) = e.into_driver();
    // Sent, then abandoned: each holds its place until the driver takes it.
    assert!(poll_once(handle.submit(req())).is_none());
    assert!(poll_once(handle.submit(req())).is_none());
    match poll_once(handle.submit(req())) {
        Some(Err(HearthError::Busy(m))) => assert!(m.contains("waiting"), "{m}"),
        Some(Err(e)) => panic!("expected busy, got {e}"),
        Some(Ok(_)) => panic!("expected busy, got a stream"),
        None => panic!("a third submit was queued past the bound"),
    }
    let thread = std::thread::spawn(move || pollster::block_on(driver));
    // The abandoned requests are aborted by the driver; then there is room.
    let t0 = Instant::now();
    let mut stream = loop {
        match handle.submit_blocking(req()) {
            Ok(s) => break s,
            Err(HearthError::Busy(_)) if t0.elapsed() < Duration::from_secs(300) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(drain(&mut stream, 1)[0].0.len(), 2);
    handle.shutdown();
    thread.join().unwrap();
}

/// Runs `prompt` alone to its end; its tokens and how it finished.
fn finish_of(e: &mut Engine, prompt: Vec<u32>, max_tokens: usize) -> (Vec<u32>, Finish) {
    let req = Request {
        max_tokens: Some(max_tokens),
        ignore_eos: true,
        ..Request::new(Prompt::Ids(prompt))
    };
    let (id, _) = e.add_request(req).unwrap();
    let mut ids = Vec::new();
    loop {
        for o in e.step_blocking() {
            assert_eq!(o.request(), id);
            match o {
                Output::Token { token, .. } => ids.push(token.id),
                Output::Finished { finish, .. } => return (ids, finish),
                Output::Failed { error, .. } => panic!("request failed: {error}"),
                Output::Embedding { .. } => panic!("a generation returned an embedding"),
            }
        }
    }
}

/// A chat's next turn: the prompt is the last turn's prompt, its answer and
/// a new message. Only whole blocks of the earlier *prompt* are reused (a
/// block holding generated rows has other K/V bits, see prefix_cache.rs),
/// so `cached_tokens` is that prompt rounded down to a block, and the
/// prefill computes the rest. Oracle: that count from the block size; the
/// tokens must equal an engine's without prefix caching.
#[test]
fn finish_reports_the_prompt_tokens_the_prefix_cache_served() {
    let mut e = new_engine(true);
    let mut plain = new_engine(false);
    let bs = e.model.kv_block_size() as usize;
    let turn1: Vec<u32> = (0..2 * bs + 7).map(|i| 1 + (i * 7 % 37) as u32).collect();
    let (answer, f1) = finish_of(&mut e, turn1.clone(), 5);
    assert_eq!((f1.prompt_tokens, f1.cached_tokens), (turn1.len(), 0));

    let tail: Vec<u32> = (0..bs).map(|i| 2 + (i * 5 % 31) as u32).collect();
    let turn2 = [&turn1[..], &answer, &tail].concat();
    let (ids2, f2) = finish_of(&mut e, turn2.clone(), 4);
    assert_eq!(f2.prompt_tokens, turn2.len());
    assert_eq!(f2.cached_tokens, 2 * bs, "turn 1's whole prompt blocks");
    let (plain_ids2, pf2) = finish_of(&mut plain, turn2.clone(), 4);
    assert_eq!(ids2, plain_ids2, "cached blocks change no token");
    assert_eq!(pf2.cached_tokens, 0, "no prefix cache, nothing served");

    // A prompt that is exactly cached blocks still computes its last block:
    // the next token's logits come from its last row.
    let whole = turn2[..3 * bs].to_vec();
    let (_, f3) = finish_of(&mut e, whole, 1);
    assert_eq!(f3.cached_tokens, 2 * bs);
}
