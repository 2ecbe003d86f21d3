//! Matrix-vector and tiled matrix-matrix kernels against the f64-accumulated
//! CPU reference on the dequantized weights, for every format, at sizes that
//! are not multiples of any tile, under every capability variant and with
//! the matrix split into row chunks.

mod common;

use std::borrow::Cow;
use std::sync::Arc;

use common::*;
use hearth::gpu::kernels::matmul::{
    matmul_ref, MatMul, MatMulKernel, MatMulOpts, MATVEC_MAX_TOKENS,
};
use hearth::gpu::kernels::StepInfo;
use hearth::gpu::weights::GpuMatrix;
use hearth::gpu::{readback_f32, GpuContext};
use hearth::model::{DType, HostTensor};
use hearth::quant::{dequantize, quantize};

const KERNELS: [MatMulKernel; 5] = [
    MatMulKernel::Auto,
    MatMulKernel::MatVec,
    MatMulKernel::MatVecLaneRows,
    MatMulKernel::Tiled,
    MatMulKernel::TiledF16,
];
const DTYPES: [DType; 5] = [
    DType::F32,
    DType::F16,
    DType::Q8_0,
    DType::Q4_0,
    DType::Q4_1,
];

/// A `[rows, cols]` tensor of pseudo-random values stored as `dtype`.
fn tensor(name: &str, dtype: DType, rows: usize, cols: usize, seed: u64) -> HostTensor<'static> {
    let data = quantize(dtype, &rand_vec(rows * cols, seed)).unwrap();
    HostTensor {
        name: name.into(),
        dtype,
        shape: vec![rows, cols],
        data: Cow::Owned(data),
    }
}

/// What the GPU should compute with: the weights as the GPU holds them.
fn weights_f32(t: &HostTensor) -> Vec<f32> {
    dequantize(t.dtype, &t.data, t.numel()).unwrap()
}

/// Tolerance per output: accumulation order only, relative to sum |w·x|.
fn check(got: &[f32], want: &[f32], w: &[f32], x: &[f32], rows: usize, cols: usize, what: &str) {
    check_rel(1e-4, got, want, w, x, rows, cols, what);
}

/// Relative tolerance (of sum |w·x|) of a kernel's outputs. f16 math rounds
/// x and w to 11 significant bits (2^-12 relative each) and each K tile's
/// 32-product sum too: bounded by ~2^-11 · sum |w·x| plus the tile sums'
/// rounding, which grows with sqrt of the adds for random signs.
fn rel(kernel: MatMulKernel) -> f32 {
    match kernel {
        MatMulKernel::TiledF16 => 2e-3,
        _ => 1e-4,
    }
}

#[allow(clippy::too_many_arguments)]
fn check_rel(
    rel: f32,
    got: &[f32],
    want: &[f32],
    w: &[f32],
    x: &[f32],
    rows: usize,
    cols: usize,
    what: &str,
) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, e)) in got.iter().zip(want).enumerate() {
        let (t, r) = (i / rows, i % rows);
        let mag: f32 = (0..cols)
            .map(|k| (w[r * cols + k] * x[t * cols + k]).abs())
            .sum();
        let tol = rel * mag + 1e-6;
        assert!(
            (g - e).abs() <= tol && g.is_finite(),
            "{what}: token {t} row {r}: got {g}, want {e} (tol {tol})"
        );
    }
}

struct Run<'a> {
    n_tokens: u32,
    kernel: MatMulKernel,
    bias: Option<&'a [f32]>,
    y0: Option<&'a [f32]>,
}

impl Run<'_> {
    /// No bias, no accumulation.
    fn plain(n_tokens: u32, kernel: MatMulKernel) -> Self {
        Run {
            n_tokens,
            kernel,
            bias: None,
            y0: None,
        }
    }
}

fn run_gpu(ctx: &GpuContext, w: &GpuMatrix, x: &[f32], r: &Run) -> Vec<f32> {
    run_gpu_x(ctx, w, x, r, false)
}

/// `run_gpu`, with `silu_x`: x holds gate/up rows (2 * cols wide).
fn run_gpu_x(ctx: &GpuContext, w: &GpuMatrix, x: &[f32], r: &Run, silu_x: bool) -> Vec<f32> {
    let n = r.n_tokens as usize;
    let step = ctx.uniform(
        "step",
        &StepInfo {
            n_tokens: r.n_tokens,
            n_seqs: 1,
            ..Default::default()
        },
    );
    let xb = ctx.buffer_from("x", x);
    let yb = match r.y0 {
        Some(y0) => ctx.buffer_from("y", y0),
        None => ctx.buffer_from("y", &vec![f32::NAN; n * w.rows()]),
    };
    let bb = r.bias.map(|b| ctx.buffer_from("bias", b));
    let opts = MatMulOpts {
        bias: bb.as_ref(),
        accumulate: r.y0.is_some(),
        silu_x,
        ..Default::default()
    };
    let mm = match r.kernel {
        MatMulKernel::Auto => MatMul::new(ctx, &step, w, &xb, &yb, opts),
        _ => MatMul::new_all_kernels(ctx, &step, w, &xb, &yb, opts),
    };
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        mm.record_with(&mut pass, r.n_tokens, r.kernel);
    }
    ctx.queue.submit(Some(enc.finish()));
    readback_f32(ctx, &yb, n * w.rows()).unwrap()
}

/// Every kernel choice, token count and variant for one matrix.
fn sweep(ctxs: &[Arc<GpuContext>], dtype: DType, rows: usize, cols: usize, tokens: &[u32]) {
    let t = tensor("w", dtype, rows, cols, (rows * 1000 + cols) as u64);
    let wf = weights_f32(&t);
    let gpu_w: Vec<GpuMatrix> = ctxs
        .iter()
        .map(|c| GpuMatrix::upload(c, "w", std::slice::from_ref(&t), None).unwrap())
        .collect();
    for &n in tokens {
        let x = rand_vec(n as usize * cols, 7 + n as u64);
        let want = matmul_ref(&wf, rows, cols, &x, n as usize);
        for kernel in KERNELS {
            let mut outs = Vec::new();
            for (ctx, w) in ctxs.iter().zip(&gpu_w) {
                let r = Run::plain(n, kernel);
                let got = run_gpu(ctx, w, &x, &r);
                let what = format!(
                    "{dtype:?} {rows}x{cols} n={n} {kernel:?} caps={:?}",
                    ctx.caps
                );
                check_rel(rel(kernel), &got, &want, &wf, &x, rows, cols, &what);
                outs.push((ctx.caps, got));
            }
            // shader-f16 only changes how halves are loaded (f16 → f32 is exact),
            // so with the same reduction the results are bit-identical (the
            // f16-math kernel exists only with shader-f16).
            if kernel == MatMulKernel::TiledF16 {
                continue;
            }
            for (ca, a) in &outs {
                for (cb, b) in &outs {
                    if ca.subgroups == cb.subgroups && ca.f16 != cb.f16 {
                        assert_eq!(
                            a, b,
                            "{dtype:?} {rows}x{cols} n={n} {kernel:?}: f16 on/off differ"
                        );
                    }
                }
            }
        }
    }
}

fn sweep_dtype(dtype: DType) {
    let ctxs = all_variants();
    let mut shapes = vec![(1, 32, 0), (7, 96, 1), (100, 160, 2), (577, 1024, 3)];
    if !dtype.is_quantized() {
        shapes.extend([(5, 33, 1), (3, 100, 0), (33, 577, 2)]);
    }
    for (rows, cols, which) in shapes {
        let tokens: &[u32] = match which {
            0 => &[1, 3, 17],
            1 => &[1, 2, 3, MATVEC_MAX_TOKENS, MATVEC_MAX_TOKENS + 1, 17],
            2 => &[1, 17, 70],
            _ => &[1, 9],
        };
        sweep(&ctxs, dtype, rows, cols, tokens);
    }
}

#[test]
fn f32_matches_reference() {
    sweep_dtype(DType::F32);
}

#[test]
fn f16_matches_reference() {
    sweep_dtype(DType::F16);
}

#[test]
fn q8_0_matches_reference() {
    sweep_dtype(DType::Q8_0);
}

#[test]
fn q4_0_matches_reference() {
    sweep_dtype(DType::Q4_0);
}

#[test]
fn q4_1_matches_reference() {
    sweep_dtype(DType::Q4_1);
}

#[test]
fn large_prefill_batch_matches_reference() {
    let ctx = gpu();
    for dtype in [DType::F16, DType::Q4_1] {
        let (rows, cols, n) = (577usize, 1024usize, 70u32);
        let t = tensor("w", dtype, rows, cols, 11);
        let wf = weights_f32(&t);
        let w = GpuMatrix::upload(&ctx, "w", &[t], None).unwrap();
        let x = rand_vec(n as usize * cols, 12);
        let want = matmul_ref(&wf, rows, cols, &x, n as usize);
        let r = Run::plain(n, MatMulKernel::Auto);
        check(
            &run_gpu(&ctx, &w, &x, &r),
            &want,
            &wf,
            &x,
            rows,
            cols,
            &format!("{dtype:?} n=70"),
        );
    }
}

#[test]
fn row_chunks_from_a_small_binding_limit() {
    // 4 KiB bindings: every format here needs at least three chunks.
    let ctx = gpu_with(false, false, Some(4096));
    for dtype in DTYPES.into_iter().chain([
        DType::Q4_K,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q5_K,
        DType::Q6_K,
    ]) {
        let (rows, cols) = (100, if dtype.block_elems() == 256 { 256 } else { 160 });
        let t = match dtype.can_quantize() {
            false => random_k(dtype, rows, cols, 21),
            true => tensor("w", dtype, rows, cols, 21),
        };
        let wf = weights_f32(&t);
        let w = GpuMatrix::upload(&ctx, "w", &[t], None).unwrap();
        assert!(
            w.chunks().len() >= 3,
            "{dtype:?}: {} chunks",
            w.chunks().len()
        );
        for n in [1u32, 5, 17] {
            let x = rand_vec(n as usize * cols, 22);
            let want = matmul_ref(&wf, rows, cols, &x, n as usize);
            for kernel in KERNELS {
                let r = Run::plain(n, kernel);
                let what = format!("{dtype:?} chunked n={n} {kernel:?}");
                check_rel(
                    rel(kernel),
                    &run_gpu(&ctx, &w, &x, &r),
                    &want,
                    &wf,
                    &x,
                    rows,
                    cols,
                    &what,
                );
            }
        }
    }
}

#[test]
fn bias_and_accumulate() {
    for ctx in all_variants() {
        let (rows, cols) = (100, 96);
        let t = tensor("w", DType::Q8_0, rows, cols, 31);
        let wf = weights_f32(&t);
        let w = GpuMatrix::upload(&ctx, "w", &[t], None).unwrap();
        let bias = rand_vec(rows, 32);
        for n in [2u32, 19] {
            let x = rand_vec(n as usize * cols, 33);
            let y0 = rand_vec(n as usize * rows, 34);
            let base = matmul_ref(&wf, rows, cols, &x, n as usize);
            for (use_bias, acc) in [(true, false), (false, true), (true, true)] {
                let want: Vec<f32> = base
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v + if use_bias { bias[i % rows] } else { 0.0 }
                            + if acc { y0[i] } else { 0.0 }
                    })
                    .collect();
                let r = Run {
                    n_tokens: n,
                    kernel: MatMulKernel::Auto,
                    bias: use_bias.then_some(&bias[..]),
                    y0: acc.then_some(&y0[..]),
                };
                let what = format!("bias={use_bias} acc={acc} n={n} caps={:?}", ctx.caps);
                check(
                    &run_gpu(&ctx, &w, &x, &r),
                    &want,
                    &wf,
                    &x,
                    rows,
                    cols,
                    &what,
                );
            }
        }
    }
}

#[test]
fn fused_parts_and_conversion_on_upload() {
    let ctx = gpu_with(false, false, Some(4096));
    let cols = 96;
    let cases: [(DType, Option<DType>); 5] = [
        (DType::Q8_0, None),
        (DType::F32, Some(DType::Q4_1)),
        (DType::Q8_0, Some(DType::Q4_0)),
        (DType::BF16, None),
        (DType::F16, Some(DType::F32)),
    ];
    for (src, target) in cases {
        let parts: Vec<HostTensor> = [(7, 1), (5, 2), (40, 3)]
            .iter()
            .map(|&(r, s)| tensor(&format!("part{s}"), src, r, cols, s))
            .collect();
        let rows: usize = parts.iter().map(|p| p.shape[0]).sum();
        let src_f32: Vec<f32> = parts.iter().flat_map(weights_f32).collect();
        let stored = target.unwrap_or(if src == DType::BF16 { DType::F16 } else { src });
        let wf = dequantize(stored, &quantize(stored, &src_f32).unwrap(), rows * cols).unwrap();
        let w = GpuMatrix::upload(&ctx, "fused", &parts, target).unwrap();
        assert_eq!((w.rows(), w.cols(), w.dtype()), (rows, cols, stored));
        for n in [1u32, 12] {
            let x = rand_vec(n as usize * cols, 41);
            let want = matmul_ref(&wf, rows, cols, &x, n as usize);
            let r = Run::plain(n, MatMulKernel::Auto);
            let what = format!("{src:?} -> {target:?} n={n}");
            check(
                &run_gpu(&ctx, &w, &x, &r),
                &want,
                &wf,
                &x,
                rows,
                cols,
                &what,
            );
        }
    }
}

#[test]
fn bad_uploads_are_errors() {
    let ctx = gpu();
    let q = tensor("q", DType::Q8_0, 4, 64, 1);
    let k = tensor("k", DType::Q8_0, 4, 32, 2);
    assert!(
        GpuMatrix::upload(&ctx, "qk", &[q.clone(), k], None).is_err(),
        "cols differ"
    );
    let f = tensor("f", DType::F32, 4, 33, 3);
    assert!(
        GpuMatrix::upload(&ctx, "f", &[f], Some(DType::Q4_0)).is_err(),
        "cols % 32"
    );
    let mut short = q.clone();
    short.data = Cow::Owned(q.data[..40].to_vec());
    assert!(
        GpuMatrix::upload(&ctx, "short", &[short], None).is_err(),
        "truncated data"
    );
    let h = tensor("h", DType::F16, 4, 64, 4);
    assert!(
        GpuMatrix::upload(&ctx, "mixed", &[q, h], None).is_err(),
        "mixed types"
    );
    assert!(
        GpuMatrix::upload(&ctx, "none", &[], None).is_err(),
        "no parts"
    );
}

/// SwiGLU fused into the x loads (the down projection reading the gate/up
/// output): every kernel form against the reference on silu(gate) * up,
/// and the same bits from every form a row can take.
#[test]
fn silu_fused_x_matches_reference() {
    for ctx in all_variants() {
        for dtype in [DType::Q4_1, DType::Q8_0, DType::F16, DType::F32] {
            let (rows, cols) = (45, 96);
            let t = tensor("w", dtype, rows, cols, 47);
            let wf = weights_f32(&t);
            let w = GpuMatrix::upload(&ctx, "w", std::slice::from_ref(&t), None).unwrap();
            for n in [1u32, 2, 3, 9, 40] {
                let gu = rand_vec(n as usize * 2 * cols, 50 + n as u64);
                let x: Vec<f32> = gu
                    .chunks(2 * cols)
                    .flat_map(|row| {
                        let (g, u) = row.split_at(cols);
                        g.iter()
                            .zip(u)
                            .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                            .collect::<Vec<_>>()
                    })
                    .collect();
                let want = matmul_ref(&wf, rows, cols, &x, n as usize);
                for kernel in KERNELS {
                    let r = Run::plain(n, kernel);
                    let got = run_gpu_x(&ctx, &w, &gu, &r, true);
                    let what = format!("silu_x {dtype:?} n={n} {kernel:?} caps={:?}", ctx.caps);
                    check_rel(rel(kernel), &got, &want, &wf, &x, rows, cols, &what);
                }
            }
        }
    }
}

/// A token's row has the same bits whichever token-count build of the
/// matrix-vector kernel computes it (1, 2, 4 or 8 tokens per workgroup):
/// a verification step of a few rows must reproduce plain decoding exactly.
#[test]
fn every_token_count_build_gives_a_row_the_same_bits() {
    for ctx in all_variants() {
        for dtype in [DType::Q4_1, DType::Q8_0, DType::F16] {
            let (rows, cols) = (77, 96);
            let t = tensor("w", dtype, rows, cols, 43);
            let w = GpuMatrix::upload(&ctx, "w", std::slice::from_ref(&t), None).unwrap();
            let x = rand_vec(9 * cols, 17);
            let bits = |n: u32, kernel| {
                let r = Run::plain(n, kernel);
                let y = run_gpu(&ctx, &w, &x[..n as usize * cols], &r);
                y.iter().map(|f| f.to_bits()).collect::<Vec<_>>()
            };
            for kernel in [MatMulKernel::MatVec, MatMulKernel::MatVecLaneRows] {
                let all = bits(9, kernel);
                for n in [1u32, 2, 3, 4, 5, 8] {
                    assert_eq!(
                        bits(n, kernel),
                        all[..n as usize * rows],
                        "{dtype:?} {kernel:?}: {n} tokens vs 9, caps={:?}",
                        ctx.caps
                    );
                }
            }
        }
    }
}

/// `record_rows`: the first rows through the matrix-vector kernel, the rest
/// through the tiled one (the lane-rows one for quantized weights on CPU
/// adapters) from `first_row` on, all matching the reference, and each row
/// bit-identical to the same row computed with its kernel alone.
#[test]
fn split_rows_match_reference_and_each_kernel() {
    for ctx in all_variants().into_iter().chain(gpu_tiled_f16()) {
        for dtype in [DType::Q4_1, DType::F16] {
            let (rows, cols) = (77, 96);
            let t = tensor("w", dtype, rows, cols, 41);
            let wf = weights_f32(&t);
            let w = GpuMatrix::upload(&ctx, "w", std::slice::from_ref(&t), None).unwrap();
            for (n_mv, n) in [(3u32, 45u32), (0, 9), (11, 11), (1, 2)] {
                let x = rand_vec(n as usize * cols, 5 + n as u64);
                let info = |n_tokens, first_row| StepInfo {
                    n_tokens,
                    n_seqs: 1,
                    first_row,
                    ..Default::default()
                };
                let mv_step = ctx.uniform("mv", &info(n_mv, 0));
                let tiled_step = ctx.uniform("tiled", &info(n, n_mv));
                let xb = ctx.buffer_from("x", &x);
                let yb = ctx.buffer_from("y", &vec![f32::NAN; n as usize * rows]);
                let mm = MatMul::new_split(
                    &ctx,
                    &mv_step,
                    &tiled_step,
                    &w,
                    &xb,
                    &yb,
                    MatMulOpts::default(),
                );
                let mut enc = ctx.device.create_command_encoder(&Default::default());
                {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    mm.record_rows(&mut pass, n_mv, n);
                }
                ctx.queue.submit(Some(enc.finish()));
                let got = readback_f32(&ctx, &yb, n as usize * rows).unwrap();
                let want = matmul_ref(&wf, rows, cols, &x, n as usize);
                let what = format!("{dtype:?} split {n_mv}/{n} caps={:?}", ctx.caps);
                // The prompt rows equal their kernel's result for them alone.
                let prompt_kernel = if mm.lane_prompts() {
                    MatMulKernel::MatVecLaneRows
                } else if ctx.caps.tiled_f16 {
                    MatMulKernel::TiledF16
                } else {
                    MatMulKernel::Tiled
                };
                let rel = rel(prompt_kernel);
                check_rel(rel, &got, &want, &wf, &x, rows, cols, &what);
                let sg = ctx.caps.subgroup_min_size;
                let lane_expected = ctx.caps.subgroups
                    && sg == ctx.caps.subgroup_max_size
                    && (sg == 4 || sg >= 8)
                    && ctx.info.device_type == wgpu::DeviceType::Cpu
                    && dtype.is_quantized();
                assert_eq!(mm.lane_prompts(), lane_expected, "{what}: prompt kernel");
                let tail = &x[n_mv as usize * cols..];
                let alone = run_gpu(&ctx, &w, tail, &Run::plain(n - n_mv, prompt_kernel));
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&got[n_mv as usize * rows..]),
                    bits(&alone),
                    "{what}: prompt rows"
                );
            }
        }
    }
}

fn random_k(dtype: DType, rows: usize, cols: usize, seed: u64) -> HostTensor<'static> {
    HostTensor {
        name: dtype.name().into(),
        dtype,
        shape: vec![rows, cols],
        data: Cow::Owned(random_blocks(dtype, rows * cols, seed)),
    }
}

/// The formats Hearth reads but does not produce (random blocks) run in
/// their own layouts through every kernel and
/// capability variant, at row counts that are not multiples of any tile (row
/// chunks: see row_chunks_from_a_small_binding_limit).
fn k_quant_matches_reference(dtype: DType) {
    for ctx in all_variants() {
        for (rows, cols, seed) in [(77usize, 512usize, 1u64), (3, 256, 2), (300, 768, 3)] {
            let t = random_k(dtype, rows, cols, seed);
            let wf = weights_f32(&t);
            let w = GpuMatrix::upload(&ctx, "k", std::slice::from_ref(&t), None).unwrap();
            assert_eq!(w.dtype(), dtype);
            for n in [1u32, 3, 9, 17] {
                let x = rand_vec(n as usize * cols, seed + 10 * n as u64);
                let want = matmul_ref(&wf, rows, cols, &x, n as usize);
                for kernel in KERNELS {
                    let run = Run::plain(n, kernel);
                    let got = run_gpu(&ctx, &w, &x, &run);
                    let what = format!(
                        "{dtype:?} {rows}x{cols} n={n} {kernel:?} caps={:?}",
                        ctx.caps
                    );
                    check_rel(rel(kernel), &got, &want, &wf, &x, rows, cols, &what);
                }
            }
        }
    }
}

#[test]
fn q4_k_matches_reference() {
    k_quant_matches_reference(DType::Q4_K);
}

#[test]
fn q6_k_matches_reference() {
    k_quant_matches_reference(DType::Q6_K);
}

#[test]
fn q5_k_matches_reference() {
    k_quant_matches_reference(DType::Q5_K);
}

#[test]
fn q5_0_and_q5_1_match_reference() {
    k_quant_matches_reference(DType::Q5_0);
    k_quant_matches_reference(DType::Q5_1);
}

/// `--dtype q4_k` / `q6_k` on float weights: Hearth's K-quant quantizers on
/// whole super-block rows, Q4_1 / Q8_0 for rows that are not.
#[test]
fn k_quant_targets_and_fallbacks() {
    let ctx = gpu();
    for (target, cols, want_dtype) in [
        (DType::Q4_K, 512, DType::Q4_K),
        (DType::Q4_K, 160, DType::Q4_1),
        (DType::Q6_K, 256, DType::Q6_K),
        (DType::Q6_K, 96, DType::Q8_0),
    ] {
        let rows = 45;
        let t = tensor("w", DType::F32, rows, cols, 7);
        let w = GpuMatrix::upload(&ctx, "w", std::slice::from_ref(&t), Some(target)).unwrap();
        assert_eq!(w.dtype(), want_dtype, "{target:?} with {cols} columns");
        assert_eq!(target.target_for(cols), want_dtype);
        let wf = dequantize(
            want_dtype,
            &quantize(want_dtype, &weights_f32(&t)).unwrap(),
            rows * cols,
        )
        .unwrap();
        for n in [1u32, 9] {
            let x = rand_vec(n as usize * cols, 8);
            let want = matmul_ref(&wf, rows, cols, &x, n as usize);
            let run = Run::plain(n, MatMulKernel::Auto);
            let got = run_gpu(&ctx, &w, &x, &run);
            check(
                &got,
                &want,
                &wf,
                &x,
                rows,
                cols,
                &format!("{target:?} {cols} n={n}"),
            );
        }
    }
}

/// The f16-math tiled kernel really multiplies in f16: x = 1 + 2^-12 has no
/// f16 value and rounds to 1, so 64 of them times 1.0 sum to exactly 64
/// there and to 64.015625 in the f32 kernel. Values past f16's range are
/// clamped to its largest finite value rather than turned into inf/NaN.
#[test]
fn tiled_f16_rounds_through_f16() {
    let Some(ctx) = gpu_tiled_f16() else {
        eprintln!("no shader-f16 on this adapter: nothing to check");
        return;
    };
    let (rows, cols, n) = (3usize, 64usize, 9u32);
    let ones = HostTensor {
        name: "w".into(),
        dtype: DType::F32,
        shape: vec![rows, cols],
        data: Cow::Owned(bytemuck::cast_slice(&vec![1.0f32; rows * cols]).to_vec()),
    };
    let w = GpuMatrix::upload(&ctx, "w", &[ones], None).unwrap();
    let run = |x: &[f32], kernel| {
        let r = Run::plain(n, kernel);
        run_gpu(&ctx, &w, x, &r)
    };
    let x = vec![1.0 + 2f32.powi(-12); n as usize * cols];
    assert!(run(&x, MatMulKernel::Tiled).iter().all(|&v| v == 64.015625));
    assert!(run(&x, MatMulKernel::TiledF16).iter().all(|&v| v == 64.0));
    assert!(run(&x, MatMulKernel::Auto).iter().all(|&v| v == 64.0));
    // One huge value per row of x, in the first K tile, the rest 2^-10: that
    // tile's f16 sum stays 65504 (its 31 small terms are under half an ulp
    // there), the second tile adds 32 · 2^-10 in the f32 total.
    let mut x = vec![2f32.powi(-10); n as usize * cols];
    for t in 0..n as usize {
        x[t * cols + t] = 1e9;
    }
    let got = run(&x, MatMulKernel::TiledF16);
    let want = 65504.0 + 32.0 * 2f32.powi(-10);
    assert!(got.iter().all(|&v| v == want), "{got:?}: want {want}");
}
