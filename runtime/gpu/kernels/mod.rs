//! One typed launcher per kernel. Conventions every launcher follows:
//! - `new(ctx, ...)` builds the pipeline (cached) and the bind group once,
//!   with the static shape in a small uniform buffer;
//! - `record(&self, pass, n_tokens)` only dispatches: per-step sizes come from
//!   the shared [`StepInfo`] uniform (written once per step) and the dispatch
//!   size computed from `n_tokens` on the host;
//! - a `*_ref` CPU function is the oracle the tests compare against.

pub mod attention;
pub mod batch;
pub mod copy;
pub mod elementwise;
pub mod embed;
pub mod kv_write;
pub mod logit_mask;
pub mod matmul;
pub mod moe_combine;
pub mod moe_group;
pub mod moe_router;
pub mod pool;
pub mod rmsnorm;
pub mod rope;
pub mod topk;

use bytemuck::{Pod, Zeroable};

/// Per-step values shared by all kernels of a forward pass (binding 0 of every kernel that needs it).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, Default, PartialEq, Eq)]
pub struct StepInfo {
    /// Token rows in this step (prefill chunk and/or decode tokens of all sequences).
    pub n_tokens: u32,
    /// Sequences in this step.
    pub n_seqs: u32,
    /// First row a matmul dispatch covers (the rows before it belong to the
    /// other matmul kernel; see `MatMul::record_rows`). 0 for every other kernel.
    pub first_row: u32,
    pub _pad: u32,
}

/// Splits `groups` workgroups over x and y so neither exceeds the per-dimension limit.
/// A pipeline and its bind group dispatched as one workgroup per row.
pub(crate) struct PerRow {
    pipeline: std::sync::Arc<wgpu::ComputePipeline>,
    bind: wgpu::BindGroup,
    max_dim: u32,
}

impl PerRow {
    pub(crate) fn new(
        ctx: &crate::gpu::GpuContext,
        pipeline: std::sync::Arc<wgpu::ComputePipeline>,
        bind: wgpu::BindGroup,
    ) -> Self {
        PerRow {
            pipeline,
            bind,
            max_dim: ctx.caps.max_workgroups_per_dim,
        }
    }

    pub(crate) fn record(&self, pass: &mut wgpu::ComputePass, rows: u32) {
        if rows == 0 {
            return;
        }
        let (x, y) = grid(rows, self.max_dim);
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind, &[]);
        pass.dispatch_workgroups(x, y, 1);
    }
}

pub fn grid(groups: u32, max_per_dim: u32) -> (u32, u32) {
    if groups <= max_per_dim {
        (groups.max(1), 1)
    } else {
        let y = groups.div_ceil(max_per_dim);
        (groups.div_ceil(y), y)
    }
}
