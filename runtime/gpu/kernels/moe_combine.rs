//! Adds a mixture-of-experts block's output to the residual
//! (`shaders/moe_combine.wgsl`): each row's experts' results weighted by
//! the router, plus Qwen2-MoE's sigmoid-gated shared expert. Its CPU oracle
//! is [`combine_ref`].

use bytemuck::{Pod, Zeroable};

use super::moe_group::RouteLayout;
use super::PerRow;
use crate::gpu::{GpuContext, ShaderSpec};

const SRC: &str = include_str!("../../../shaders/moe_combine.wgsl");
const WG: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    hidden: u32,
    k: u32,
    pos: u32,
    _p: u32,
}

/// Qwen2-MoE's shared expert as the combine sees it.
pub struct SharedExpertIo<'a> {
    /// The normed rows the block read (`[rows, hidden]`).
    pub xn: &'a wgpu::Buffer,
    /// `[hidden]`: the gate whose sigmoid scales the shared expert.
    pub gate: &'a wgpu::Buffer,
    /// The shared expert's output `[rows, hidden]`.
    pub out: &'a wgpu::Buffer,
}

pub struct MoeCombine {
    rows: PerRow,
}

impl MoeCombine {
    /// `x[t] += sum_j weights[t, j] * out[pos(t, j)]` (+ the shared expert)
    /// for the step's rows; `out` is `[grouped positions, hidden]`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &GpuContext,
        step: &wgpu::Buffer,
        x: &wgpu::Buffer,
        route: &wgpu::Buffer,
        layout: RouteLayout,
        weights: &wgpu::Buffer,
        out: &wgpu::Buffer,
        shared: Option<SharedExpertIo>,
        hidden: u32,
        k: u32,
    ) -> MoeCombine {
        let spec = ShaderSpec::new("moe_combine", SRC)
            .flag("SHARED", shared.is_some())
            .constant("WG", WG);
        let pipeline = ctx.pipeline(&spec);
        let params = ctx.uniform(
            "moe_combine.params",
            &Params {
                hidden,
                k,
                pos: layout.pos,
                _p: 0,
            },
        );
        let mut entries: Vec<&wgpu::Buffer> = vec![step, &params, x, route, weights, out];
        if let Some(s) = &shared {
            entries.extend([s.xn, s.gate, s.out]);
        }
        let bind = ctx.bind_group(&pipeline, &entries);
        MoeCombine {
            rows: PerRow::new(ctx, pipeline, bind),
        }
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass, n_tokens: u32) {
        self.rows.record(pass, n_tokens);
    }
}

/// CPU reference: `x` (`[rows, hidden]`) plus each row's weighted expert
/// results (`out[pos[t * k + j]]`), plus `sigmoid(xn[t] · gate) * shared[t]`.
pub fn combine_ref(
    x: &[f32],
    weights: &[f32],
    pos: &[u32],
    out: &[f32],
    hidden: usize,
    k: usize,
    shared: Option<(&[f32], &[f32], &[f32])>,
) -> Vec<f32> {
    let mut y = x.to_vec();
    for (t, row) in y.chunks_mut(hidden).enumerate() {
        let g = shared.map(|(xn, gate, _)| {
            let d: f64 = xn[t * hidden..(t + 1) * hidden]
                .iter()
                .zip(gate)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum();
            1.0 / (1.0 + (-d).exp())
        });
        for (c, v) in row.iter_mut().enumerate() {
            let mut acc = 0f64;
            for j in 0..k {
                let a = t * k + j;
                acc += weights[a] as f64 * out[pos[a] as usize * hidden + c] as f64;
            }
            if let (Some(g), Some((_, _, s))) = (g, shared) {
                acc += g * s[t * hidden + c] as f64;
            }
            *v += acc as f32;
        }
    }
    y
}
