//! The MoE router kernel against its CPU reference (`route_ref` on f64 gate
//! logits) at awkward sizes, on every capability variant, and its routing
//! edge cases: exact ties, every row picking the same experts, experts
//! that get no rows.

mod common;

use common::*;
use hearth::gpu::kernels::moe_router::{router_logits_ref, MoeRouter};
use hearth::gpu::{readback_f32, GpuContext};
use hearth::reference::route_ref;

/// Runs the router on `n` rows; returns (ids, weights) per row, and checks
/// that the spare row after them is untouched.
fn run(
    ctx: &GpuContext,
    x: &[f32],
    w: &[f32],
    hidden: usize,
    experts: usize,
    k: usize,
    norm: bool,
) -> (Vec<Vec<u32>>, Vec<Vec<f32>>) {
    let n = x.len() / hidden;
    let step = step_buffer(ctx, n, 0);
    let xb = ctx.buffer_from("x", x);
    let wb = ctx.buffer_from("w", w);
    let ids = ctx.buffer_from("ids", &vec![77u32; (n + 1) * k]);
    let wts = ctx.buffer_from("weights", &vec![9.0f32; (n + 1) * k]);
    let r = MoeRouter::new(
        ctx,
        &step,
        &xb,
        &wb,
        &ids,
        &wts,
        hidden as u32,
        experts as u32,
        k as u32,
        norm,
    )
    .unwrap();
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        r.record(&mut pass, n as u32);
    }
    ctx.queue.submit(Some(enc.finish()));
    let got_ids: Vec<u32> = readback_f32(ctx, &ids, (n + 1) * k)
        .unwrap()
        .iter()
        .map(|f| f.to_bits())
        .collect();
    let got_w = readback_f32(ctx, &wts, (n + 1) * k).unwrap();
    assert!(
        got_ids[n * k..].iter().all(|&i| i == 77),
        "spare row written"
    );
    assert!(
        got_w[n * k..].iter().all(|&v| v == 9.0),
        "spare row written"
    );
    (
        got_ids[..n * k].chunks(k).map(<[u32]>::to_vec).collect(),
        got_w[..n * k].chunks(k).map(<[f32]>::to_vec).collect(),
    )
}

#[allow(clippy::too_many_arguments)]
fn check(
    ctx: &GpuContext,
    x: &[f32],
    w: &[f32],
    hidden: usize,
    experts: usize,
    k: usize,
    norm: bool,
    what: &str,
) -> Vec<Vec<u32>> {
    let (ids, wts) = run(ctx, x, w, hidden, experts, k, norm);
    let logits = router_logits_ref(x, w, hidden);
    for (t, lg) in logits.chunks(experts).enumerate() {
        let want = route_ref(lg, k, norm);
        let want_ids: Vec<u32> = want.iter().map(|p| p.0 as u32).collect();
        let want_w: Vec<f32> = want.iter().map(|p| p.1).collect();
        assert_eq!(ids[t], want_ids, "{what}: row {t} experts");
        assert_close(
            &wts[t],
            &want_w,
            1e-6,
            1e-5,
            &format!("{what}: row {t} weights"),
        );
    }
    ids
}

#[test]
fn router_matches_reference_at_awkward_sizes() {
    for ctx in all_variants() {
        // (rows, hidden, experts, k): Mixtral-, Qwen1.5-MoE- and Qwen3-like shapes.
        for &(n, hidden, experts, k) in &[
            (5usize, 64usize, 8usize, 2usize),
            (3, 100, 60, 4),
            (7, 129, 128, 8),
            (2, 33, 256, 16),
            (1, 5, 3, 3),
        ] {
            let x = rand_vec(n * hidden, hidden as u64);
            let w = rand_vec(experts * hidden, experts as u64 + 1);
            for norm in [false, true] {
                check(
                    &ctx,
                    &x,
                    &w,
                    hidden,
                    experts,
                    k,
                    norm,
                    &format!(
                        "{:?} n={n} h={hidden} e={experts} k={k} norm={norm}",
                        ctx.caps
                    ),
                );
            }
        }
    }
}

#[test]
fn ties_go_to_the_lower_expert() {
    let ctx = gpu();
    let (hidden, experts) = (16, 8);
    let x = rand_vec(3 * hidden, 5);
    // All-zero router: every logit ties; experts 0 and 1 win, weight 1/8 each (1/2 renormalised).
    let ids = check(
        &ctx,
        &x,
        &vec![0.0; experts * hidden],
        hidden,
        experts,
        2,
        false,
        "all tied",
    );
    assert!(ids.iter().all(|r| r == &[0, 1]));
    // Experts 2 and 6 share a router row that beats the rest: a tie for first.
    let mut w: Vec<f32> = rand_vec(experts * hidden, 9)
        .iter()
        .map(|v| v * 0.01)
        .collect();
    let strong: Vec<f32> = x[..hidden].to_vec();
    for e in [2, 6] {
        w[e * hidden..(e + 1) * hidden].copy_from_slice(&strong);
    }
    let ids = check(
        &ctx,
        &x[..hidden],
        &w,
        hidden,
        experts,
        3,
        true,
        "two-way tie",
    );
    assert_eq!(ids[0][..2], [2, 6]);
}

#[test]
fn every_row_the_same_experts_and_experts_with_no_rows() {
    let ctx = gpu();
    let (n, hidden, experts, k) = (9usize, 32usize, 16usize, 2usize);
    // Positive rows and two routers aligned with the all-ones direction:
    // every row picks experts 11 and 4, the other 14 experts get no rows.
    let x: Vec<f32> = rand_vec(n * hidden, 3)
        .iter()
        .map(|v| v.abs() + 0.1)
        .collect();
    let mut w: Vec<f32> = rand_vec(experts * hidden, 4)
        .iter()
        .map(|v| v * 0.01)
        .collect();
    w[11 * hidden..12 * hidden].fill(1.0);
    w[4 * hidden..5 * hidden].fill(0.5);
    let ids = check(&ctx, &x, &w, hidden, experts, k, true, "same experts");
    assert!(ids.iter().all(|r| r == &[11, 4]), "{ids:?}");
}

#[test]
fn unsupported_router_shapes_are_refused() {
    let ctx = gpu();
    let b = ctx.buffer_from("b", &[0f32; 64]);
    for (e, k) in [(300u32, 2u32), (8, 9), (64, 17), (0, 1), (8, 0)] {
        let r = MoeRouter::new(&ctx, &b, &b, &b, &b, &b, 16, e, k, true);
        assert!(
            matches!(r, Err(hearth::HearthError::Unsupported(_))),
            "{e} experts top-{k}"
        );
    }
}
