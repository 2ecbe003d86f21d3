//! Micro-benchmark of a mixture-of-experts layer's expert kernels on
//! Qwen3-30B-A3B's shape (hidden 2048, 128 experts of width 768, 8 per
//! token) with Q4_0 experts: the grouping, the gate/up and down expert
//! matrices over the grouped rows, and the combine, for decode batches and
//! a prompt chunk. GB/s counts the weights of the experts the rows are
//! routed to (each read once per step), which is all a step reads of them.
//! `cargo bench --bench moe`.

use hearth::gpu::kernels::matmul::{ExpertOpts, MatMul, MatMulOpts};
use hearth::gpu::kernels::moe_combine::MoeCombine;
use hearth::gpu::kernels::moe_group::{MoeGroup, RouteLayout};
use hearth::gpu::kernels::StepInfo;
use hearth::gpu::weights::GpuMatrix;
use hearth::gpu::{GpuContext, GpuOptions};
use hearth::model::{DType, HostTensor};

#[path = "common/mod.rs"]
mod common;

const H: usize = 2048;
const F: usize = 768;
const E: usize = 128;
const K: usize = 8;

/// `rows` × `cols` Q4_0 blocks per expert with a small f16 scale (the
/// values do not change the speed).
fn q4_0_stack(rows: usize, cols: usize) -> HostTensor<'static> {
    let blocks = E * rows * cols / 32;
    let mut data = Vec::with_capacity(blocks * 18);
    for b in 0..blocks {
        data.extend_from_slice(&0x2000u16.to_le_bytes());
        data.extend((0..16).map(|i| (b * 31 + i * 7) as u8));
    }
    HostTensor {
        name: "experts".into(),
        dtype: DType::Q4_0,
        shape: vec![E, rows, cols],
        data: data.into(),
    }
}

fn step(ctx: &GpuContext, n: u32, first_row: u32) -> wgpu::Buffer {
    ctx.uniform(
        "step",
        &StepInfo {
            n_tokens: n,
            n_seqs: 1,
            first_row,
            ..Default::default()
        },
    )
}

fn main() {
    let ctx = GpuContext::new_blocking(&GpuOptions::from_env()).expect("a wgpu adapter");
    println!("adapter: {}", ctx.adapter_name());
    let max_rows = 512u32;
    let layout = RouteLayout::new(max_rows, K as u32, E as u32).unwrap();
    let gu_w =
        GpuMatrix::upload_grouped(&ctx, "gate_up", &[q4_0_stack(2 * F, H)], None, 2 * F).unwrap();
    let dn_w = GpuMatrix::upload_grouped(&ctx, "down", &[q4_0_stack(H, F)], None, H).unwrap();
    let per_expert = (gu_w.gpu_bytes() + dn_w.gpu_bytes()) / E as u64;
    let a = max_rows as u64 * K as u64;
    let buf = |label: &str, n: u64| ctx.buffer_zeroed(label, n * 4);
    let (x, xn, ids, wts, route) = (
        buf("x", max_rows as u64 * H as u64),
        buf("xn", max_rows as u64 * H as u64),
        buf("ids", a),
        buf("weights", a),
        buf("route", layout.words as u64),
    );
    let (gu, dn) = (buf("gate_up", a * 2 * F as u64), buf("down", a * H as u64));
    for (n, gen) in [(1u32, 1u32), (16, 16), (64, 64), (512, 0)] {
        let (st, mv, tiled) = (step(&ctx, n, 0), step(&ctx, gen, 0), step(&ctx, n, gen));
        // Each row's 8 experts spread over all 128 as routers spread them.
        let picks: Vec<u32> = (0..n as usize * K)
            .map(|i| ((i / K) * 37 + (i % K) * 16 + (i / K) / 8) as u32 % E as u32)
            .collect();
        ctx.queue
            .write_buffer(&ids, 0, bytemuck::cast_slice(&picks));
        let distinct = {
            let mut e = picks.clone();
            e.sort_unstable();
            e.dedup();
            e.len() as u64
        };
        let ex = |rows: usize, gather_x: bool| ExpertOpts {
            route: &route,
            layout,
            rows_per_expert: rows as u32,
            experts: E as u32,
            gather_x,
        };
        let gate_up = MatMul::new_split(
            &ctx,
            &mv,
            &tiled,
            &gu_w,
            &xn,
            &gu,
            MatMulOpts {
                experts: Some(ex(2 * F, true)),
                ..Default::default()
            },
        );
        let down = MatMul::new_split(
            &ctx,
            &mv,
            &tiled,
            &dn_w,
            &gu,
            &dn,
            MatMulOpts {
                silu_x: true,
                experts: Some(ex(H, false)),
                ..Default::default()
            },
        );
        let (t1, t2) = (gate_up.expert_tiles(), down.expert_tiles());
        let tiles = (t1.0.min(t2.0), t1.1.min(t2.1));
        let group = MoeGroup::new(
            &ctx, &st, &mv, &ids, &route, layout, E as u32, K as u32, tiles,
        )
        .unwrap();
        let combine = MoeCombine::new(
            &ctx, &st, &x, &route, layout, &wts, &dn, None, H as u32, K as u32,
        );
        let s = common::time_per_call(&ctx, 0.5, &|p| {
            group.record(p, n);
            gate_up.record_experts(p, gen, n - gen, K as u32, tiles);
            down.record_experts(p, gen, n - gen, K as u32, tiles);
            combine.record(p, n);
        });
        let bytes = distinct * per_expert;
        let kind = if gen > 0 { "decode" } else { "prompt" };
        println!(
            "moe experts {kind} {n:>3} rows, {distinct:>3} experts read   {:9.3} ms  {:7.2} GB/s of expert weights  ({:.1} MB)",
            s * 1e3,
            bytes as f64 / s / 1e9,
            bytes as f64 / 1e6
        );
    }
}
