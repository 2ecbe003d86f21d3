mod common;

use common::*;
use hearth::gpu::kernels::rmsnorm::{rmsnorm_heads_ref, rmsnorm_ref, RmsNorm};
use hearth::gpu::kernels::StepInfo;
use hearth::gpu::readback_f32;

fn submit(ctx: &hearth::gpu::GpuContext, k: &RmsNorm, n_tokens: u32) {
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        k.record(&mut pass, n_tokens);
    }
    ctx.queue.submit(Some(enc.finish()));
}

#[test]
fn rows_match_reference_at_awkward_widths() {
    for ctx in all_variants() {
        for &(n, width) in &[(3u32, 1u32), (5, 577), (2, 3000), (1, 8200)] {
            let x = rand_vec((n * width) as usize, width as u64);
            let w = rand_vec(width as usize, 7);
            let step = ctx.uniform(
                "step",
                &StepInfo {
                    n_tokens: n,
                    n_seqs: 1,
                    ..Default::default()
                },
            );
            let xb = ctx.buffer_from("x", &x);
            let wb = ctx.buffer_from("w", &w);
            // One spare row: it must stay untouched beyond n_tokens.
            let out = ctx.buffer_from("out", &vec![9.0f32; ((n + 1) * width) as usize]);
            let k = RmsNorm::new(&ctx, &step, &xb, &wb, &out, width, 1e-5);
            submit(&ctx, &k, n);
            let got = readback_f32(&ctx, &out, ((n + 1) * width) as usize).unwrap();
            let mut want: Vec<f32> = x
                .chunks(width as usize)
                .flat_map(|r| rmsnorm_ref(r, &w, 1e-5))
                .collect();
            want.extend(std::iter::repeat_n(9.0, width as usize));
            assert_close(
                &got,
                &want,
                1e-5,
                1e-4,
                &format!("rmsnorm {:?} n={n} w={width}", ctx.caps),
            );
        }
    }
}

#[test]
fn per_head_variant_normalises_selected_heads_in_place() {
    for ctx in all_variants() {
        // Fused QKV of 5 q heads + 3 k heads + 3 v heads, head_dim 64 and 128.
        for &hd in &[64usize, 128] {
            let (nq, nkv, n) = (5usize, 3usize, 3u32);
            let stride = (nq + 2 * nkv) * hd;
            let qkv = rand_vec(n as usize * stride, hd as u64);
            let wq = rand_vec(hd, 11);
            let wk = rand_vec(hd, 12);
            let step = ctx.uniform(
                "step",
                &StepInfo {
                    n_tokens: n,
                    n_seqs: 1,
                    ..Default::default()
                },
            );
            let buf = ctx.buffer_from("qkv", &qkv);
            let wqb = ctx.buffer_from("wq", &wq);
            let wkb = ctx.buffer_from("wk", &wk);
            let kq = RmsNorm::heads(
                &ctx,
                &step,
                &buf,
                &wqb,
                hd as u32,
                0,
                nq as u32,
                stride as u32,
                1e-6,
            );
            let kk = RmsNorm::heads(
                &ctx,
                &step,
                &buf,
                &wkb,
                hd as u32,
                nq as u32,
                nkv as u32,
                stride as u32,
                1e-6,
            );
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                kq.record(&mut pass, n);
                kk.record(&mut pass, n);
            }
            ctx.queue.submit(Some(enc.finish()));
            let got = readback_f32(&ctx, &buf, qkv.len()).unwrap();
            let mut want = qkv.clone();
            rmsnorm_heads_ref(&mut want, &wq, hd, 0, nq, stride, 1e-6);
            rmsnorm_heads_ref(&mut want, &wk, hd, nq, nkv, stride, 1e-6);
            assert_close(
                &got,
                &want,
                1e-5,
                1e-4,
                &format!("rmsnorm heads hd={hd} {:?}", ctx.caps),
            );
        }
    }
}
