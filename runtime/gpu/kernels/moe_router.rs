//! Mixture-of-experts router launcher: gate projection, softmax over all
//! experts, top-k per row and optional renormalisation, in one kernel
//! (`shaders/moe_router.wgsl`). Its CPU oracle is
//! [`crate::reference::route_ref`] applied to [`router_logits_ref`].

use bytemuck::{Pod, Zeroable};

use super::PerRow;
use crate::gpu::{GpuContext, ShaderSpec};
use crate::{HearthError, Result};

const SRC: &str = include_str!("../../../shaders/moe_router.wgsl");
/// One invocation per expert: WebGPU's default limit of 256 per workgroup
/// bounds the expert count (Qwen3-MoE has 128, DeepSeek-V3 256).
pub const MAX_ROUTER_EXPERTS: u32 = 256;
/// The shader ranks into fixed-size arrays.
pub const MAX_ROUTER_TOP_K: u32 = 16;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    hidden: u32,
    experts: u32,
    k: u32,
    norm: u32,
}

pub struct MoeRouter {
    rows: PerRow,
}

impl MoeRouter {
    /// For each of the step's rows `t` of `x` (`[rows, hidden]`, f32):
    /// `ids[t, :k]` the chosen experts best first and `weights[t, :k]` their
    /// probabilities. `w` is the router `[experts, hidden]` in f32.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &GpuContext,
        step: &wgpu::Buffer,
        x: &wgpu::Buffer,
        w: &wgpu::Buffer,
        ids: &wgpu::Buffer,
        weights: &wgpu::Buffer,
        hidden: u32,
        experts: u32,
        k: u32,
        norm_topk_prob: bool,
    ) -> Result<Self> {
        if experts == 0
            || experts > MAX_ROUTER_EXPERTS
            || k == 0
            || k > experts.min(MAX_ROUTER_TOP_K)
        {
            return Err(HearthError::Unsupported(format!(
                "MoE router with {experts} experts and top-{k} (the GPU router handles up to {MAX_ROUTER_EXPERTS} experts and top-{MAX_ROUTER_TOP_K})"
            )));
        }
        // The smallest power-of-two workgroup with an invocation per expert.
        let wg = experts.next_power_of_two().max(32);
        let spec = ShaderSpec::new("moe_router", SRC).constant("WG", wg);
        let pipeline = ctx.pipeline(&spec);
        let params = Params {
            hidden,
            experts,
            k,
            norm: norm_topk_prob as u32,
        };
        let params = ctx.uniform("moe_router.params", &params);
        let bind = ctx.bind_group(&pipeline, &[step, &params, x, w, ids, weights]);
        Ok(MoeRouter {
            rows: PerRow::new(ctx, pipeline, bind),
        })
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass, n_tokens: u32) {
        self.rows.record(pass, n_tokens);
    }
}

/// CPU reference of the router's gate projection (f64 accumulation):
/// `[rows, experts]` logits of the `hidden`-wide rows of `x`.
pub fn router_logits_ref(x: &[f32], w: &[f32], hidden: usize) -> Vec<f32> {
    x.chunks(hidden)
        .flat_map(|row| {
            w.chunks(hidden).map(move |we| {
                row.iter()
                    .zip(we)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>() as f32
            })
        })
        .collect()
}
