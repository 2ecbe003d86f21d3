//! Micro-benchmarks of the small kernels of a forward pass (GB/s of memory
//! traffic): RMSNorm, RoPE, residual add / SiLU·mul, top-K, the constrained-
//! decoding logit mask, the MoE router, embedding pooling, and the roofline's
//! buffer copy. `cargo bench --bench misc_kernels`.

use hearth::gpu::kernels::copy::CopyKernel;
use hearth::gpu::kernels::elementwise::{Elementwise, Op};
use hearth::gpu::kernels::logit_mask::{mask_words, LogitMask};
use hearth::gpu::kernels::moe_router::MoeRouter;
use hearth::gpu::kernels::pool::PoolRows;
use hearth::gpu::kernels::rmsnorm::RmsNorm;
use hearth::gpu::kernels::rope::{Rope, RopeLayout};
use hearth::gpu::kernels::topk::TopK;
use hearth::gpu::kernels::StepInfo;
use hearth::gpu::{GpuContext, GpuOptions};

#[path = "common/mod.rs"]
mod common;

fn time(ctx: &GpuContext, record: &dyn Fn(&mut wgpu::ComputePass)) -> f64 {
    common::time_per_call(ctx, 0.3, record)
}

fn report(what: &str, s: f64, bytes: f64) {
    println!("{what:48} {:9.3} ms  {:7.2} GB/s", s * 1e3, bytes / s / 1e9);
}

fn main() {
    let ctx = GpuContext::new_blocking(&GpuOptions::from_env()).expect("a wgpu adapter");
    println!("adapter: {}", ctx.adapter_name());
    for mib in [1u64, 64] {
        let bytes = (mib << 20).min(ctx.caps.max_binding);
        let (src, dst) = (
            ctx.buffer_zeroed("src", bytes),
            ctx.buffer_zeroed("dst", bytes),
        );
        let copy = CopyKernel::new(&ctx, &src, &dst, (bytes / 16) as u32);
        let s = time(&ctx, &|p| copy.record(p));
        report(
            &format!("copy {} MiB (read + write)", bytes >> 20),
            s,
            copy.bytes_moved() as f64,
        );
    }
    let (hidden, n_heads, n_kv, hd) = (4096u32, 32u32, 8u32, 128u32);
    for &n in &[1u32, 512] {
        let step = ctx.uniform(
            "step",
            &StepInfo {
                n_tokens: n,
                n_seqs: 1,
                ..Default::default()
            },
        );
        let x = ctx.buffer_zeroed("x", (n * hidden * 4) as u64 * 4);
        let y = ctx.buffer_zeroed("y", (n * hidden * 4) as u64 * 4);
        let w = ctx.buffer_zeroed("w", hidden as u64 * 4);
        let norm = RmsNorm::new(&ctx, &step, &x, &w, &y, hidden, 1e-5);
        let s = time(&ctx, &|p| norm.record(p, n));
        report(
            &format!("rmsnorm {n} x {hidden}"),
            s,
            2.0 * (n * hidden) as f64 * 4.0,
        );

        // Mean pooling of the step's rows as 8 equal embedding inputs.
        let pool = PoolRows::new(&ctx, &x, &y, hidden, 8);
        let per = n.div_ceil(8);
        let segs: Vec<[u32; 2]> = (0..n)
            .step_by(per as usize)
            .map(|a| [a, per.min(n - a)])
            .collect();
        pool.write(&ctx.queue, &segs).expect("segments fit");
        let s = time(&ctx, &|p| pool.record(p, segs.len() as u32));
        report(
            &format!("pool_rows {n} x {hidden} into {}", segs.len()),
            s,
            (n + segs.len() as u32) as f64 * hidden as f64 * 4.0,
        );

        let add = Elementwise::new(&ctx, Op::Add, &step, &x, &y, hidden);
        let s = time(&ctx, &|p| add.record(p, n));
        report(
            &format!("residual add {n} x {hidden}"),
            s,
            3.0 * (n * hidden) as f64 * 4.0,
        );
        let ffn = 2 * hidden;
        let silu = Elementwise::new(&ctx, Op::SiluMul, &step, &x, &y, ffn);
        let s = time(&ctx, &|p| silu.record(p, n));
        report(
            &format!("silu_mul {n} x {ffn}"),
            s,
            3.0 * (n * ffn) as f64 * 4.0,
        );

        let stride = (n_heads + 2 * n_kv) * hd;
        let pos = ctx.buffer_from("pos", &(0..n).collect::<Vec<u32>>());
        let qkv = ctx.buffer_zeroed("qkv", (n * stride) as u64 * 4);
        let inv: Vec<f32> = (0..hd / 2)
            .map(|i| 500000f32.powf(-2.0 * i as f32 / hd as f32))
            .collect();
        let rope = Rope::new(
            &ctx,
            &step,
            &pos,
            &qkv,
            &inv,
            n_heads,
            n_kv,
            hd,
            stride,
            RopeLayout::HalfSplit,
        );
        let s = time(&ctx, &|p| rope.record(p, n));
        report(
            &format!("rope {n} x ({n_heads}+{n_kv}) x {hd}"),
            s,
            2.0 * (n * (n_heads + n_kv) * hd) as f64 * 4.0,
        );
    }
    for &vocab in &[49152u32, 151936] {
        let logits: Vec<f32> = (0..vocab)
            .map(|i| (i.wrapping_mul(2654435761) >> 8) as f32 / 1e6)
            .collect();
        let buf = ctx.buffer_from("logits", &logits);
        let topk = TopK::new(&ctx, &buf, 1, vocab, 256);
        for &k in &[1u32, 40, 256] {
            let s = time(&ctx, &|p| topk.record(p, 1, k));
            report(&format!("topk 1 x {vocab} k={k}"), s, vocab as f64 * 4.0);
        }
    }
    // MoE router (Mixtral's and Qwen3-30B-A3B's shapes): GB/s of router
    // weights and activations read.
    for &(hidden, experts, k) in &[(4096u32, 8u32, 2u32), (2048, 128, 8)] {
        for &n in &[1u32, 512] {
            let step = ctx.uniform(
                "step",
                &StepInfo {
                    n_tokens: n,
                    n_seqs: 1,
                    ..Default::default()
                },
            );
            let x = ctx.buffer_zeroed("x", (n * hidden) as u64 * 4);
            let w = ctx.buffer_zeroed("w", (experts * hidden) as u64 * 4);
            let ids = ctx.buffer_zeroed("ids", (n * k) as u64 * 4);
            let wts = ctx.buffer_zeroed("weights", (n * k) as u64 * 4);
            let router = MoeRouter::new(&ctx, &step, &x, &w, &ids, &wts, hidden, experts, k, true)
                .expect("router");
            let s = time(&ctx, &|p| router.record(p, n));
            report(
                &format!("moe_router {n} x {hidden}, {experts} experts top-{k}"),
                s,
                ((n + experts) * hidden) as f64 * 4.0,
            );
        }
    }
    // GB/s of logits read + written (every logit read, every one written at
    // most; half the bits are 0, so about half really are).
    for &vocab in &[49152u32, 151936] {
        for &rows in &[1u32, 64] {
            let buf = ctx.buffer_zeroed("logits", rows as u64 * vocab as u64 * 4);
            let mut mask = LogitMask::new(&ctx, &buf, rows, vocab);
            let words: Vec<u32> = (0..mask_words(vocab))
                .map(|i| i.wrapping_mul(2654435761))
                .collect();
            let list: Vec<(u32, &[u32])> = (0..rows).map(|r| (r, &words[..])).collect();
            mask.write(&ctx.queue, &list).expect("masks");
            let s = time(&ctx, &|p| mask.record(p));
            report(
                &format!("logit_mask {rows} x {vocab} (read + write)"),
                s,
                mask.bytes_moved(rows) as f64,
            );
        }
    }
}
