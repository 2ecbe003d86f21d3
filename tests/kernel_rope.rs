mod common;

use common::*;
use hearth::gpu::kernels::rope::{rope_ref, Rope, RopeLayout};
use hearth::gpu::kernels::StepInfo;
use hearth::gpu::readback_f32;

fn inv_freqs(head_dim: usize, theta: f64) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| (1.0 / theta.powf(2.0 * i as f64 / head_dim as f64)) as f32)
        .collect()
}

#[test]
fn rope_matches_f64_reference_at_large_positions() {
    let positions = [0u32, 1, 4095, 32767, 7, 100_000];
    for ctx in all_variants() {
        for &hd in &[64usize, 128] {
            for layout in [RopeLayout::Interleaved, RopeLayout::HalfSplit] {
                // 5 q heads, 3 kv heads: odd counts; v (last 3 heads) must stay untouched.
                let (nq, nkv) = (5usize, 3usize);
                let stride = (nq + 2 * nkv) * hd;
                let n = positions.len();
                let x = rand_vec(n * stride, hd as u64 + layout as u64);
                let freqs = inv_freqs(hd, if hd == 64 { 10_000.0 } else { 500_000.0 });
                let step = ctx.uniform(
                    "step",
                    &StepInfo {
                        n_tokens: n as u32,
                        n_seqs: 1,
                        ..Default::default()
                    },
                );
                let pos = ctx.buffer_from("pos", &positions);
                let buf = ctx.buffer_from("qkv", &x);
                let k = Rope::new(
                    &ctx,
                    &step,
                    &pos,
                    &buf,
                    &freqs,
                    nq as u32,
                    nkv as u32,
                    hd as u32,
                    stride as u32,
                    layout,
                );
                let mut enc = ctx.device.create_command_encoder(&Default::default());
                {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    k.record(&mut pass, n as u32);
                }
                ctx.queue.submit(Some(enc.finish()));
                let got = readback_f32(&ctx, &buf, x.len()).unwrap();
                let mut want = x.clone();
                rope_ref(&mut want, &positions, &freqs, nq + nkv, hd, stride, layout);
                assert_close(
                    &got,
                    &want,
                    2e-5,
                    0.0,
                    &format!("rope hd={hd} {layout:?} {:?}", ctx.caps),
                );
            }
        }
    }
}
