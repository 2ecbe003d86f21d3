mod common;

use common::*;
use hearth::gpu::kernels::elementwise::{add_ref, silu_mul_ref, Elementwise, Op};
use hearth::gpu::kernels::StepInfo;
use hearth::gpu::readback_f32;

fn run(op: Op, n_tokens: u32, width: u32) -> (Vec<f32>, Vec<f32>) {
    let ctx = gpu();
    let (aw, bw) = match op {
        Op::Add => (width, width),
        Op::SiluMul => (width, 2 * width),
    };
    let a0 = rand_vec((n_tokens * aw) as usize, 1);
    let b0 = rand_vec((n_tokens * bw) as usize, 2);
    let step = ctx.uniform(
        "step",
        &StepInfo {
            n_tokens,
            n_seqs: 1,
            ..Default::default()
        },
    );
    let a = ctx.buffer_from("a", &a0);
    let b = ctx.buffer_from("b", &b0);
    let want = match op {
        Op::Add => {
            let mut w = a0.clone();
            add_ref(&mut w, &b0);
            w
        }
        Op::SiluMul => silu_mul_ref(&b0, width as usize),
    };
    let k = Elementwise::new(&ctx, op, &step, &a, &b, width);
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        k.record(&mut pass, n_tokens);
    }
    ctx.queue.submit(Some(enc.finish()));
    (readback_f32(&ctx, &a, want.len()).unwrap(), want)
}

#[test]
fn add_matches_reference_at_awkward_sizes() {
    for &(t, w) in &[(1, 1), (3, 577), (7, 1000)] {
        let (got, want) = run(Op::Add, t, w);
        assert_close(&got, &want, 1e-6, 0.0, "add");
    }
}

#[test]
fn silu_mul_matches_reference_at_awkward_sizes() {
    for &(t, w) in &[(1, 5), (5, 1537)] {
        let (got, want) = run(Op::SiluMul, t, w);
        assert_close(&got, &want, 1e-5, 1e-5, "silu_mul");
    }
}
