//! Matrix kernels micro-benchmark: `cargo bench --bench matmul`.
//!
//! For each weight format, on SmolLM2-135M's shapes (q/o/gate/up/down and
//! lm_head): the matrix-vector kernel (1 token) as GB/s of weight bytes read,
//! and the tiled kernel at 128 tokens as GFLOP/s. Each measurement records
//! many dispatches into one submit and waits for the queue, so per-submit
//! overhead is amortised. `HEARTH_BENCH_SECONDS` sets the time per figure
//! (default 0.5); the `GpuOptions` env vars pick the adapter and fallbacks.

use std::borrow::Cow;

use hearth::gpu::kernels::matmul::{MatMul, MatMulKernel, MatMulOpts};
use hearth::gpu::kernels::StepInfo;
use hearth::gpu::weights::GpuMatrix;
use hearth::gpu::{GpuContext, GpuOptions};
use hearth::model::{DType, HostTensor};

const PREFILL_TOKENS: u32 = 128;

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[path = "common/mod.rs"]
mod common;
use common::time_per_call;

fn main() {
    let ctx = GpuContext::new_blocking(&GpuOptions::from_env()).expect("a wgpu adapter");
    let budget: f64 = std::env::var("HEARTH_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.5);
    println!("adapter: {}  caps: {:?}", ctx.adapter_name(), ctx.caps);
    // SmolLM2-135M: q/o (576x576), gate/up (1536x576), down (576x1536), lm_head (49152x576).
    let shapes = [(576usize, 576usize), (1536, 576), (576, 1536), (49152, 576)];
    // `HEARTH_BENCH_DTYPES=q4_0,f16` limits the formats.
    let only = std::env::var("HEARTH_BENCH_DTYPES").unwrap_or_default();
    let dtypes = [
        DType::F32,
        DType::F16,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q4_K,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q5_K,
        DType::Q6_K,
    ];
    for dtype in dtypes
        .into_iter()
        .filter(|d| only.is_empty() || only.split(',').any(|o| o == d.name()))
    {
        // `HEARTH_BENCH_SHAPES=1536x576` limits the shapes.
        let shapes_only = std::env::var("HEARTH_BENCH_SHAPES").unwrap_or_default();
        for &(rows, cols) in shapes.iter().filter(|(r, c)| {
            (shapes_only.is_empty() || shapes_only.split(',').any(|o| o == format!("{r}x{c}")))
                && c % dtype.block_elems() == 0
        }) {
            let w = if dtype.can_quantize() {
                let src = HostTensor {
                    name: "w".into(),
                    dtype: DType::F32,
                    shape: vec![rows, cols],
                    data: Cow::Owned(bytemuck::cast_slice(&rand_vec(rows * cols, 1)).to_vec()),
                };
                GpuMatrix::upload(&ctx, "w", &[src], Some(dtype))
            } else {
                // Formats Hearth only reads: random blocks with small scales.
                let noise = rand_vec(rows * cols / dtype.block_elems() * dtype.block_bytes(), 1);
                let mut data: Vec<u8> = noise.iter().map(|v| ((v + 1.0) * 127.9) as u8).collect();
                for b in data.chunks_exact_mut(dtype.block_bytes()) {
                    match dtype {
                        DType::Q6_K => b[208..].copy_from_slice(&[0x1a, 0x18]), // d ≈ 0.002
                        // d and dmin/m (Q5_0: d and two bytes of fifth bits).
                        _ => b[..4].copy_from_slice(&[0x1a, 0x18, 0x1a, 0x1c]),
                    }
                }
                let src = HostTensor {
                    name: "w".into(),
                    dtype,
                    shape: vec![rows, cols],
                    data: Cow::Owned(data),
                };
                GpuMatrix::upload(&ctx, "w", &[src], None)
            }
            .expect("upload");
            let n = PREFILL_TOKENS;
            let step = |n_tokens| {
                let s = StepInfo {
                    n_tokens,
                    n_seqs: 1,
                    ..Default::default()
                };
                ctx.uniform("step", &s)
            };
            let (step1, step2, step8, step_n) = (step(1), step(2), step(8), step(n));
            let x = ctx.buffer_from("x", &rand_vec(n as usize * cols, 2));
            let y = ctx.buffer_zeroed("y", (n as usize * rows * 4) as u64);
            let decode = MatMul::new_all_kernels(&ctx, &step1, &w, &x, &y, MatMulOpts::default());
            let batch2 = MatMul::new_all_kernels(&ctx, &step2, &w, &x, &y, MatMulOpts::default());
            let batch8 = MatMul::new_all_kernels(&ctx, &step8, &w, &x, &y, MatMulOpts::default());
            let mm = MatMul::new_all_kernels(&ctx, &step_n, &w, &x, &y, MatMulOpts::default());
            // Both matrix-vector forms: cooperative rows (GPUs) and one row per lane (CPU adapters).
            let mut line = format!("{:>5} {rows:>5}x{cols:<5}", dtype.name());
            for (label, kernel) in [
                ("matvec", MatMulKernel::MatVec),
                ("lane-rows", MatMulKernel::MatVecLaneRows),
            ] {
                let tv = time_per_call(&ctx, budget, &|p| decode.record_with(p, 1, kernel));
                let gbs = w.gpu_bytes() as f64 / tv / 1e9;
                line += &format!(" {label} {:>8.1} us {:>6.2} GB/s |", tv * 1e6, gbs);
            }
            if rows <= 1536 && std::env::var("HEARTH_BENCH_NO_TILED").is_err() {
                let t8 = time_per_call(&ctx, budget, &|p| {
                    batch8.record_with(p, 8, MatMulKernel::Auto)
                });
                let t2 = time_per_call(&ctx, budget, &|p| {
                    batch2.record_with(p, 2, MatMulKernel::Auto)
                });
                line += &format!(
                    " auto x2 {:>8.1} us | auto x8 {:>8.1} us |",
                    t2 * 1e6,
                    t8 * 1e6
                );
                let tm =
                    time_per_call(&ctx, budget, &|p| mm.record_with(p, n, MatMulKernel::Tiled));
                let flops = 2.0 * (rows * cols) as f64 * n as f64;
                line += &format!(
                    " tiled x{n} {:>9.1} us {:>6.2} GFLOP/s |",
                    tm * 1e6,
                    flops / tm / 1e9
                );
                // f16 multiply-adds (the default tiled form on GPUs with shader-f16).
                if ctx.caps.f16 {
                    let th = time_per_call(&ctx, budget, &|p| {
                        mm.record_with(p, n, MatMulKernel::TiledF16)
                    });
                    line += &format!(
                        " tiled-f16 x{n} {:>9.1} us {:>6.2} GFLOP/s |",
                        th * 1e6,
                        flops / th / 1e9
                    );
                }
                // The prompt-sized batch through the matrix-vector form (what
                // CPU adapters use for prompt rows too).
                let kernel = if mm.cpu_adapter() {
                    MatMulKernel::MatVecLaneRows
                } else {
                    MatMulKernel::MatVec
                };
                let tl = time_per_call(&ctx, budget, &|p| mm.record_with(p, n, kernel));
                line += &format!(
                    " matvec x{n} {:>9.1} us {:>6.2} GFLOP/s",
                    tl * 1e6,
                    flops / tl / 1e9
                );
            }
            println!("{line}");
        }
    }
}
