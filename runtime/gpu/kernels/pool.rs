//! Pooling of hidden-state rows for embeddings: each segment of rows
//! (a sequence's rows in one step) is summed into one row on the GPU, so a
//! step reads back one vector per embedding input instead of every row.

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use crate::gpu::{GpuContext, ShaderSpec};
use crate::{HearthError, Result};

const SRC: &str = include_str!("../../../shaders/pool_rows.wgsl");
const WG: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    width: u32,
    _p: [u32; 3],
}

/// One segment: `(first row, row count)`.
pub type Segment = [u32; 2];

pub struct PoolRows {
    pipeline: Arc<wgpu::ComputePipeline>,
    bind: wgpu::BindGroup,
    segs: wgpu::Buffer,
    width: u32,
    max_segs: u32,
}

impl PoolRows {
    /// Sums rows of `x` (`[rows, width]` f32) into `out` (`[max_segs, width]`).
    pub fn new(
        ctx: &GpuContext,
        x: &wgpu::Buffer,
        out: &wgpu::Buffer,
        width: u32,
        max_segs: u32,
    ) -> Self {
        let pipeline = ctx.pipeline(&ShaderSpec::new("pool_rows", SRC).constant("WG", WG));
        let params = ctx.uniform("pool_rows.params", &Params { width, _p: [0; 3] });
        let segs = ctx.buffer_zeroed("pool_rows.segs", max_segs.max(1) as u64 * 8);
        let bind = ctx.bind_group(&pipeline, &[&params, &segs, x, out]);
        PoolRows {
            pipeline,
            bind,
            segs,
            width,
            max_segs,
        }
    }

    /// Uploads this step's segments (before [`PoolRows::record`]).
    pub fn write(&self, queue: &wgpu::Queue, segs: &[Segment]) -> Result<()> {
        if segs.len() > self.max_segs as usize {
            return Err(HearthError::InvalidRequest(format!(
                "{} pooled segments in one step, the model was loaded for {}",
                segs.len(),
                self.max_segs
            )));
        }
        if !segs.is_empty() {
            queue.write_buffer(&self.segs, 0, bytemuck::cast_slice(segs));
        }
        Ok(())
    }

    /// Sums the first `n_segs` segments written.
    pub fn record(&self, pass: &mut wgpu::ComputePass, n_segs: u32) {
        if n_segs == 0 {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind, &[]);
        pass.dispatch_workgroups(self.width.div_ceil(WG), n_segs, 1);
    }
}

/// CPU reference: one summed row of `x` (`width` wide) per segment.
pub fn pool_rows_ref(x: &[f32], width: usize, segs: &[Segment]) -> Vec<f32> {
    let mut out = vec![0.0f32; segs.len() * width];
    for (s, &[first, n]) in segs.iter().enumerate() {
        for r in first as usize..(first + n) as usize {
            for c in 0..width {
                out[s * width + c] += x[r * width + c];
            }
        }
    }
    out
}
