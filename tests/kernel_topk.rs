mod common;

use common::*;
use hearth::gpu::kernels::topk::{penalties_ref, topk_ref, Penalties, TopK};
use hearth::gpu::GpuContext;

/// Random logits with many exact ties (values quantised to 1/8).
fn logits(n: usize, seed: u64) -> Vec<f32> {
    rand_vec(n, seed)
        .into_iter()
        .map(|x| (x * 40.0).round() / 8.0)
        .collect()
}

fn run_topk(
    ctx: &GpuContext,
    rows: &[Vec<f32>],
    vocab: u32,
    k: u32,
) -> Vec<hearth::engine::sampling::Candidates> {
    let flat: Vec<f32> = rows.concat();
    let buf = ctx.buffer_from("logits", &flat);
    let topk = TopK::new(ctx, &buf, rows.len() as u32, vocab, k);
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        topk.record(&mut pass, rows.len() as u32, k);
    }
    ctx.queue.submit(Some(enc.finish()));
    let n = rows.len() as u32;
    let bytes =
        pollster::block_on(ctx.read_bytes(topk.output(), 0, topk.output_bytes_for(n, k))).unwrap();
    topk.parse_output(&bytes, n, k)
}

fn check(got: &[hearth::engine::sampling::Candidates], rows: &[Vec<f32>], k: u32, what: &str) {
    for (r, (c, row)) in got.iter().zip(rows).enumerate() {
        let (want, lse) = topk_ref(row, k as usize);
        let ids: Vec<u32> = want.iter().map(|w| w.0).collect();
        let vals: Vec<f32> = want.iter().map(|w| w.1).collect();
        assert_eq!(c.ids, ids, "{what} row {r}: ids");
        assert_eq!(c.logits, vals, "{what} row {r}: logits");
        assert!(
            (c.logsumexp as f64 - lse).abs() <= 1e-5 * lse.abs().max(1.0),
            "{what} row {r}: lse {} vs {lse}",
            c.logsumexp
        );
    }
}

#[test]
fn topk_matches_sort_with_ties_at_all_sizes() {
    let ctx = gpu();
    for &vocab in &[1u32, 1000, 49152, 151936] {
        for &k in &[1u32, 5, 40, 256] {
            let rows: Vec<Vec<f32>> = (0..2)
                .map(|r| logits(vocab as usize, vocab as u64 + k as u64 * 7 + r))
                .collect();
            let got = run_topk(&ctx, &rows, vocab, k);
            check(&got, &rows, k, &format!("vocab {vocab} k {k}"));
        }
    }
}

#[test]
fn topk_on_each_capability_variant() {
    for ctx in all_variants() {
        let rows = vec![logits(3001, 5), logits(3001, 6), logits(3001, 7)];
        for &k in &[1u32, 17] {
            let got = run_topk(&ctx, &rows, 3001, k);
            check(&got, &rows, k, &format!("{:?} k {k}", ctx.caps));
        }
    }
}

#[test]
fn topk_logsumexp_of_large_logits() {
    let ctx = gpu();
    let row: Vec<f32> = rand_vec(5000, 9)
        .into_iter()
        .map(|x| x * 30.0 + 100.0)
        .collect();
    let got = run_topk(&ctx, std::slice::from_ref(&row), 5000, 3);
    check(&got, &[row], 3, "large logits");
    // All ties (every logit enters the candidate buffer) and masked (-inf) logits.
    let flat = vec![0.25f32; 3000];
    let mut masked = logits(3000, 3);
    masked
        .iter_mut()
        .step_by(3)
        .for_each(|x| *x = f32::NEG_INFINITY);
    let rows = vec![flat, masked];
    let got = run_topk(&ctx, &rows, 3000, 40);
    check(&got, &rows, 40, "ties and -inf");
}

#[test]
fn penalties_match_reference() {
    let ctx = gpu();
    let vocab = 1003u32;
    let rows = [logits(vocab as usize, 1), logits(vocab as usize, 2)];
    let flat: Vec<f32> = rows.concat();
    let buf = ctx.buffer_from("logits", &flat);
    let mut pen = Penalties::new(&ctx, &buf, 2, vocab);
    let c0: Vec<(u32, u32)> = vec![(0, 1), (5, 3), (1002, 2), (77, 1)];
    let c1: Vec<(u32, u32)> = (0..300).map(|i| (i * 3 + 1, i % 4 + 1)).collect();
    pen.write(
        &ctx.queue,
        &[(0, &c0, 1.3, 0.5, 0.25), (1, &c1, 0.8, -0.1, 0.0)],
    )
    .unwrap();
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pen.record(&mut pass, 2);
    }
    ctx.queue.submit(Some(enc.finish()));
    let got = hearth::gpu::readback_f32(&ctx, &buf, flat.len()).unwrap();
    let mut want = rows.to_vec();
    penalties_ref(&mut want[0], &c0, 1.3, 0.5, 0.25);
    penalties_ref(&mut want[1], &c1, 0.8, -0.1, 0.0);
    assert_close(&got, &want.concat(), 1e-6, 1e-6, "penalties");

    assert!(pen
        .write(&ctx.queue, &[(0, &[(vocab, 1)], 1.1, 0.0, 0.0)])
        .is_err());
    assert!(pen.write(&ctx.queue, &[(2, &[], 1.1, 0.0, 0.0)]).is_err());
    assert!(pen.write(&ctx.queue, &[(0, &[], 0.0, 0.0, 0.0)]).is_err());
    assert!(pen
        .write(
            &ctx.queue,
            &[(0, &c0, 1.1, 0.0, 0.0), (0, &c0, 1.1, 0.0, 0.0)]
        )
        .is_err());
}
