//! The mixture-of-experts kernels after the router, each against its CPU
//! reference at awkward sizes (5 experts, 11 rows of which 3 generated, an
//! expert width of 96): the grouping of assignments by expert
//! (`group_ref`), the expert matrices over grouped tiles in every weight
//! format and kernel form, also with experts split over several bindings
//! (`matmul_ref` per assignment), and the weighted combine with and without
//! a shared expert (`combine_ref`). Routing edge cases: every row on the
//! same experts, experts with no rows, steps with no generated or no prompt
//! rows.

mod common;

use std::borrow::Cow;

use common::*;
use hearth::gpu::kernels::matmul::{matmul_ref, ExpertOpts, MatMul, MatMulKernel, MatMulOpts};
use hearth::gpu::kernels::moe_combine::{combine_ref, MoeCombine, SharedExpertIo};
use hearth::gpu::kernels::moe_group::{group_ref, Grouping, MoeGroup, RouteLayout};
use hearth::gpu::weights::GpuMatrix;
use hearth::gpu::{readback_f32, GpuContext};
use hearth::model::{DType, HostTensor};
use hearth::quant::{dequantize, quantize};

const E: usize = 5;
const K: usize = 2;
const H: usize = 64;
const F: usize = 96;
const ROWS: usize = 11;
const GEN: usize = 3;

fn u32s(ctx: &GpuContext, b: &wgpu::Buffer, n: usize) -> Vec<u32> {
    readback_f32(ctx, b, n)
        .unwrap()
        .iter()
        .map(|f| f.to_bits())
        .collect()
}

/// `K` distinct experts per row, drawn from `pick(row, j)`.
fn ids_from(rows: usize, pick: impl Fn(usize, usize) -> usize) -> Vec<u32> {
    let mut ids = Vec::new();
    for t in 0..rows {
        let mut row: Vec<u32> = Vec::new();
        let mut j = 0;
        while row.len() < K {
            let e = (pick(t, j) % E) as u32;
            if !row.contains(&e) {
                row.push(e);
            }
            j += 1;
        }
        ids.extend(row);
    }
    ids
}

/// Routing patterns: varied, every row on experts 3 and 1, experts 0 and 2 unused.
fn patterns() -> Vec<(&'static str, Vec<u32>)> {
    vec![
        ("varied", ids_from(ROWS, |t, j| t * 7 + j * 3 + t / 2)),
        ("all rows on one pair", ids_from(ROWS, |_, j| [3, 1][j % 2])),
        (
            "experts 0 and 2 unused",
            ids_from(ROWS, |t, j| [1, 3, 4][(t + j) % 3]),
        ),
    ]
}

/// The route buffer's words as the grouping kernel lays them out.
fn route_words(g: &Grouping, layout: RouteLayout) -> Vec<u32> {
    let mut w = vec![0u32; layout.words as usize];
    for (base, tiles) in [
        (layout.gen_tiles, &g.gen_tiles),
        (layout.prompt_tiles, &g.prompt_tiles),
    ] {
        w[base as usize] = tiles.len() as u32;
        for (i, t) in tiles.iter().enumerate() {
            let o = base as usize + 4 + 4 * i;
            w[o..o + 3].copy_from_slice(t);
        }
    }
    w[layout.src as usize..][..g.src.len()].copy_from_slice(&g.src);
    w[layout.pos as usize..][..g.pos.len()].copy_from_slice(&g.pos);
    w
}

#[test]
fn grouping_matches_the_reference() {
    let ctx = gpu();
    let layout = RouteLayout::new(ROWS as u32, K as u32, E as u32).unwrap();
    for (what, ids) in patterns() {
        for (n, gen) in [(ROWS, GEN), (ROWS, 0), (ROWS, ROWS), (1, 1), (7, 2)] {
            for tiles in [(8, 32), (2, 3), (1, 1)] {
                let ids = &ids[..n * K];
                let idb = ctx.buffer_from("ids", ids);
                // Stale words from an earlier, larger step must not matter.
                let route = ctx.buffer_from("route", &vec![0x5eu32; layout.words as usize]);
                let (st, gs) = (step_buffer(&ctx, n, 0), step_buffer(&ctx, gen, 0));
                let g = MoeGroup::new(
                    &ctx, &st, &gs, &idb, &route, layout, E as u32, K as u32, tiles,
                )
                .unwrap();
                let mut enc = ctx.device.create_command_encoder(&Default::default());
                {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    g.record(&mut pass, n as u32);
                }
                ctx.queue.submit(Some(enc.finish()));
                let got = u32s(&ctx, &route, layout.words as usize);
                let want = group_ref(ids, K, gen, tiles);
                let at = |o: u32, len: usize| got[o as usize..][..len].to_vec();
                let case = format!("{what}, {n} rows ({gen} generated), tiles {tiles:?}");
                assert_eq!(at(layout.src, n * K), want.src, "{case}: source rows");
                assert_eq!(at(layout.pos, n * K), want.pos, "{case}: positions");
                for (base, tl) in [
                    (layout.gen_tiles, &want.gen_tiles),
                    (layout.prompt_tiles, &want.prompt_tiles),
                ] {
                    assert_eq!(got[base as usize] as usize, tl.len(), "{case}: tile count");
                    for (i, t) in tl.iter().enumerate() {
                        assert_eq!(
                            &at(base + 4 + 4 * i as u32, 3)[..],
                            &t[..],
                            "{case}: tile {i}"
                        );
                    }
                }
                // Tiles never exceed their height, never mix experts, cover every position.
                for (tl, h) in [(&want.gen_tiles, tiles.0), (&want.prompt_tiles, tiles.1)] {
                    assert!(tl.iter().all(|t| t[2] >= 1 && t[2] <= h.max(1)), "{case}");
                }
                let covered: u32 = want
                    .gen_tiles
                    .iter()
                    .chain(&want.prompt_tiles)
                    .map(|t| t[2])
                    .sum();
                assert_eq!(
                    covered as usize,
                    n * K,
                    "{case}: every assignment in a tile"
                );
            }
        }
    }
}

fn expert_stack(
    dtype: DType,
    rows: usize,
    cols: usize,
    seed: u64,
) -> (HostTensor<'static>, Vec<f32>) {
    let data = quantize(dtype, &rand_vec(E * rows * cols, seed)).unwrap();
    let w = dequantize(dtype, &data, E * rows * cols).unwrap();
    (
        HostTensor {
            name: "experts".into(),
            dtype,
            shape: vec![E, rows, cols],
            data: Cow::Owned(data),
        },
        w,
    )
}

fn silu_mul(gu: &[f32], f: usize) -> Vec<f32> {
    gu.chunks(2 * f)
        .flat_map(|r| {
            let (g, u) = r.split_at(f);
            g.iter()
                .zip(u)
                .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// One expert matrix (`rows` rows of `cols` per expert) over the grouped
/// assignments; returns the output at every position.
#[allow(clippy::too_many_arguments)]
fn run_experts(
    ctx: &GpuContext,
    w: &GpuMatrix,
    x: &[f32],
    rows: usize,
    g: &Grouping,
    n: usize,
    gen: usize,
    kernel: MatMulKernel,
    gather_x: bool,
) -> Vec<f32> {
    let layout = RouteLayout::new(ROWS as u32, K as u32, E as u32).unwrap();
    let xb = ctx.buffer_from("x", x);
    let yb = ctx.buffer_from("y", &vec![f32::NAN; ROWS * K * rows]);
    let route = ctx.buffer_from("route", &vec![0u32; layout.words as usize]);
    // Expert kernels take their rows from the route; the step is unread.
    let s0 = step_buffer(ctx, gen, 0);
    let mm = MatMul::new_all_kernels(
        ctx,
        &s0,
        w,
        &xb,
        &yb,
        MatMulOpts {
            silu_x: !gather_x,
            experts: Some(ExpertOpts {
                route: &route,
                layout,
                rows_per_expert: rows as u32,
                experts: E as u32,
                gather_x,
            }),
            ..Default::default()
        },
    );
    let tiles = mm.expert_tiles_for(kernel);
    let g = group_ref(&g_ids(g, n), K, gen, tiles);
    ctx.queue
        .write_buffer(&route, 0, bytemuck::cast_slice(&route_words(&g, layout)));
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        mm.record_experts_with(
            &mut pass,
            gen as u32,
            (n - gen) as u32,
            K as u32,
            tiles,
            kernel,
        );
    }
    ctx.queue.submit(Some(enc.finish()));
    readback_f32(ctx, &yb, n * K * rows).unwrap()
}

/// The ids a grouping was made from, recovered from its tiles.
fn g_ids(g: &Grouping, n: usize) -> Vec<u32> {
    let mut ids = vec![0u32; n * K];
    for t in g.gen_tiles.iter().chain(&g.prompt_tiles) {
        for p in t[1]..t[1] + t[2] {
            let a = g.pos.iter().position(|&q| q == p).unwrap();
            ids[a] = t[0];
        }
    }
    ids
}

/// Each position's expert, from the tiles.
fn expert_at(g: &Grouping) -> Vec<usize> {
    let mut e = vec![0; g.src.len()];
    for t in g.gen_tiles.iter().chain(&g.prompt_tiles) {
        for p in t[1]..t[1] + t[2] {
            e[p as usize] = t[0] as usize;
        }
    }
    e
}

/// `sum_k |w[r, k] x[k]|` for every row of `w`.
fn magnitudes(w: &[f32], cols: usize, x: &[f32]) -> Vec<f32> {
    w.chunks(cols)
        .map(|r| r.iter().zip(x).map(|(a, b)| (a * b).abs()).sum())
        .collect()
}

fn check(got: &[f32], want: &[f32], mag: &[f32], rel: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((g, e), m)) in got.iter().zip(want).zip(mag).enumerate() {
        let tol = rel * m + 1e-6;
        assert!(
            (g - e).abs() <= tol && g.is_finite(),
            "{what}: position {} row {}: got {g}, want {e} (tol {tol})",
            i / (want.len() / got.len().max(1)).max(1),
            i
        );
    }
}

#[test]
fn expert_matrices_match_the_reference_in_every_form() {
    // The default binding, and ones so small that the experts of every
    // format spread over several chunks (an expert that fits no binding is
    // refused by name).
    let contexts = [
        gpu(),
        // The cooperative matrix-vector form's workgroup-memory reduction.
        gpu_with(false, true, None),
        gpu_with(false, false, Some(128 << 10)),
        gpu_with(false, false, Some(64 << 10)),
        gpu_with(false, false, Some(24 << 10)),
    ];
    let kernels = [
        MatMulKernel::Auto,
        MatMulKernel::MatVec,
        MatMulKernel::MatVecLaneRows,
        MatMulKernel::Tiled,
        MatMulKernel::TiledF16,
    ];
    let (_, ids) = &patterns()[0];
    for dtype in [
        DType::F32,
        DType::F16,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
    ] {
        let mut split = false;
        for (ci, ctx) in contexts.iter().enumerate() {
            let (gu_t, gu_w) = expert_stack(dtype, 2 * F, H, 11);
            let (dn_t, dn_w) = expert_stack(dtype, H, F, 12);
            let gu = match GpuMatrix::upload_grouped(ctx, "gate_up", &[gu_t], None, 2 * F) {
                Err(hearth::HearthError::Unsupported(m)) if ci > 0 && m.contains("one expert") => {
                    continue
                }
                r => r.unwrap(),
            };
            let dn = GpuMatrix::upload_grouped(ctx, "down", &[dn_t], None, H).unwrap();
            split |= gu.chunks().len() > 1;
            for &kernel in &kernels {
                for (n, gen) in [(ROWS, GEN), (1, 1), (4, 4), (ROWS, 0)] {
                    let ids = &ids[..n * K];
                    let what = format!("{dtype:?} {kernel:?} ctx {ci}, {n} rows ({gen} generated)");
                    let base = group_ref(ids, K, gen, (1, 1));
                    let x = rand_vec(n * H, 5);
                    let got = run_experts(ctx, &gu, &x, 2 * F, &base, n, gen, kernel, true);
                    // Positions are the same for any tile height; recompute with this grouping.
                    let ex = expert_at(&base);
                    // As kernel_matmul: relative to the sum of |w · x| terms
                    // (f16 tiles round each product).
                    let rel = if kernel == MatMulKernel::TiledF16 {
                        2e-3
                    } else {
                        1e-4
                    };
                    let mut want_gu = Vec::new();
                    let mut mag_gu = Vec::new();
                    for (&e, &t) in ex.iter().zip(&base.src) {
                        let t = t as usize;
                        let wm = &gu_w[e * 2 * F * H..(e + 1) * 2 * F * H];
                        let xr = &x[t * H..(t + 1) * H];
                        want_gu.extend(matmul_ref(wm, 2 * F, H, xr, 1));
                        mag_gu.extend(magnitudes(wm, H, xr));
                    }
                    check(&got, &want_gu, &mag_gu, rel, &format!("{what}: gate/up"));
                    let got = run_experts(ctx, &dn, &want_gu, H, &base, n, gen, kernel, false);
                    let act = silu_mul(&want_gu, F);
                    let mut want = Vec::new();
                    let mut mag = Vec::new();
                    for (p, &e) in ex.iter().enumerate() {
                        let wm = &dn_w[e * H * F..(e + 1) * H * F];
                        let xr = &act[p * F..(p + 1) * F];
                        want.extend(matmul_ref(wm, H, F, xr, 1));
                        mag.extend(magnitudes(wm, F, xr));
                    }
                    check(&got, &want, &mag, rel, &format!("{what}: down"));
                }
            }
        }
        assert!(
            split,
            "{dtype:?}: no context split the experts over bindings"
        );
    }
}

#[test]
fn combine_matches_the_reference() {
    let ctx = gpu();
    let layout = RouteLayout::new(ROWS as u32, K as u32, E as u32).unwrap();
    for (what, ids) in patterns() {
        for shared in [false, true] {
            let n = ROWS;
            let g = group_ref(&ids, K, GEN, (8, 32));
            let x = rand_vec(n * H, 1);
            let weights: Vec<f32> = rand_vec(n * K, 2).iter().map(|v| v.abs()).collect();
            let out = rand_vec(n * K * H, 3);
            let xn = rand_vec(n * H, 4);
            let gate = rand_vec(H, 5);
            let sh = rand_vec(n * H, 6);
            let xb = ctx.buffer_from("x", &x);
            let route = ctx.buffer_from("route", &route_words(&g, layout));
            let wb = ctx.buffer_from("w", &weights);
            let ob = ctx.buffer_from("out", &out);
            let (xnb, gb, shb) = (
                ctx.buffer_from("xn", &xn),
                ctx.buffer_from("gate", &gate),
                ctx.buffer_from("sh", &sh),
            );
            let st = step_buffer(&ctx, n, 0);
            let c = MoeCombine::new(
                &ctx,
                &st,
                &xb,
                &route,
                layout,
                &wb,
                &ob,
                shared.then_some(SharedExpertIo {
                    xn: &xnb,
                    gate: &gb,
                    out: &shb,
                }),
                H as u32,
                K as u32,
            );
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                c.record(&mut pass, n as u32);
            }
            ctx.queue.submit(Some(enc.finish()));
            let got = readback_f32(&ctx, &xb, n * H).unwrap();
            let sh_io = shared.then_some((&xn[..], &gate[..], &sh[..]));
            let want = combine_ref(&x, &weights, &g.pos, &out, H, K, sh_io);
            assert_close(&got, &want, 1e-5, 1e-5, &format!("{what}, shared {shared}"));
        }
    }
}
