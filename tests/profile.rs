//! `--profile`: per-kernel timing through timestamp queries (lavapipe has
//! them) and through per-kernel submissions (the fallback), checked for what
//! a profile must be: every kernel of the timed steps counted once per call,
//! only the steps asked for, positive times within the steps' wall time, and
//! the model's outputs unchanged by profiling.

mod common;

use std::time::Instant;

use common::{gpu_from, tiny_gpu_model};
use hearth::engine::Candidates;
use hearth::gpu::GpuOptions;
use hearth::kv::BlockTable;
use hearth::model::forward::{ForwardOptions, GpuModel, KernelProfile, ProfileSteps, SeqStep};

fn load(no_timestamps: bool) -> GpuModel {
    let ctx = gpu_from(&GpuOptions {
        no_timestamps,
        ..GpuOptions::from_env()
    });
    let opts = ForwardOptions {
        kv_memory: 1 << 20,
        max_step_tokens: 64,
        max_seqs: 4,
        ..Default::default()
    };
    tiny_gpu_model("llama", ctx, opts)
}

const PROMPT: [u32; 7] = [3, 14, 15, 9, 26, 5, 35];
const DECODE_STEPS: usize = 3;

/// Greedy: the prompt in one step, then DECODE_STEPS generated tokens; the
/// candidates of every step and the wall time of all of them.
fn run(m: &mut GpuModel) -> (Vec<Candidates>, f64) {
    let mut pool = m.new_kv_pool();
    let blocks = pool
        .allocate(BlockTable::blocks_for(
            (PROMPT.len() + DECODE_STEPS) as u32,
            pool.block_size(),
        ))
        .unwrap();
    let t = Instant::now();
    let mut seen = pollster::block_on(m.step(&[SeqStep::new(&PROMPT, 0, &blocks)], 4)).unwrap();
    for i in 0..DECODE_STEPS {
        let last = [seen.last().unwrap().ids[0]];
        let part = SeqStep {
            generated: true,
            ..SeqStep::new(&last, (PROMPT.len() + i) as u32, &blocks)
        };
        seen.extend(pollster::block_on(m.step(&[part], 4)).unwrap());
    }
    let wall = t.elapsed().as_secs_f64();
    pool.free(&blocks).unwrap();
    (seen, wall)
}

fn calls(p: &KernelProfile, kind: &str) -> u64 {
    p.get(kind).map_or(0, |e| e.1)
}

fn check(no_timestamps: bool) {
    let mut m = load(no_timestamps);
    let layers = m.config.num_layers as u64;
    let (plain, _) = run(&mut m);

    for (steps, n_steps) in [
        (ProfileSteps::All, 1 + DECODE_STEPS as u64),
        (ProfileSteps::Prefill, 1),
        (ProfileSteps::Decode, DECODE_STEPS as u64),
    ] {
        m.set_profiling(Some(steps));
        let with_timestamps = m.profile_uses_timestamps();
        assert_eq!(
            with_timestamps,
            m.ctx.caps.timestamps && !no_timestamps,
            "{steps:?}: timing method"
        );
        let (seen, wall) = run(&mut m);
        let p = m.profile().cloned().unwrap();
        m.set_profiling(None);
        assert!(m.profile().is_none());

        let what = format!("{steps:?}, timestamps {with_timestamps}");
        for (a, b) in plain.iter().zip(&seen) {
            assert_eq!(a.ids, b.ids, "{what}: profiling changed the output");
            assert_eq!(a.logits, b.logits, "{what}: profiling changed the logits");
        }
        assert_eq!(calls(&p, "embed"), n_steps, "{what}: embed calls");
        for kind in [
            "matmul.qkv",
            "attention",
            "matmul.o",
            "matmul.gate_up",
            "matmul.down",
        ] {
            assert_eq!(calls(&p, kind), layers * n_steps, "{what}: {kind} calls");
        }
        assert_eq!(
            calls(&p, "rmsnorm"),
            2 * layers * n_steps,
            "{what}: rmsnorm calls"
        );
        let logits = if with_timestamps {
            "logits (norm+lm_head+top-k)"
        } else {
            "logits (norm+lm_head+top-k+readback)"
        };
        assert_eq!(calls(&p, logits), n_steps, "{what}: logits calls");
        let total: f64 = p.values().map(|e| e.0).sum();
        assert!(
            p.values().all(|e| e.0 >= 0.0) && total > 0.0,
            "{what}: times {p:?}"
        );
        // GPU spans lie inside the steps; host-timed kernels too (each waited for).
        assert!(total <= wall, "{what}: kernels {total} s > wall {wall} s");
    }
}

#[test]
fn profile_with_timestamp_queries() {
    check(false);
}

#[test]
fn profile_without_timestamp_queries() {
    check(true);
}
