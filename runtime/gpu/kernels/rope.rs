//! Rotary position embedding launcher (both pair layouts), in place on fused QKV.

use bytemuck::{Pod, Zeroable};

use super::grid;
use crate::gpu::{GpuContext, ShaderSpec};

const SRC: &str = include_str!("../../../shaders/rope.wgsl");
const WG: u32 = 256;

pub use crate::types::RopeLayout;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    head_dim: u32,
    n_rot_heads: u32,
    row_stride: u32,
    half_split: u32,
}

pub struct Rope {
    pipeline: std::sync::Arc<wgpu::ComputePipeline>,
    bind: wgpu::BindGroup,
    per_row: u32,
    max_dim: u32,
}

/// `inv_freq[i] / 2π` as an (hi, lo) f32 pair, so the shader can reduce angles exactly.
pub fn freq_turns(inv_freqs: &[f32]) -> Vec<[f32; 2]> {
    inv_freqs
        .iter()
        .map(|&f| {
            let t = f as f64 / std::f64::consts::TAU;
            let hi = t as f32;
            [hi, (t - hi as f64) as f32]
        })
        .collect()
}

impl Rope {
    /// Rotates the first `n_heads + n_kv_heads` heads of each `qkv` row
    /// (`row_stride` floats). `inv_freqs` has `head_dim / 2` entries
    /// ([`crate::model::config::ModelConfig::rope_inv_freqs`], scaling included).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &GpuContext,
        step: &wgpu::Buffer,
        positions: &wgpu::Buffer,
        qkv: &wgpu::Buffer,
        inv_freqs: &[f32],
        n_heads: u32,
        n_kv_heads: u32,
        head_dim: u32,
        row_stride: u32,
        layout: RopeLayout,
    ) -> Self {
        let spec = ShaderSpec::new("rope", SRC).constant("WG", WG);
        let pipeline = ctx.pipeline(&spec);
        let params = Params {
            head_dim,
            n_rot_heads: n_heads + n_kv_heads,
            row_stride,
            half_split: (layout == RopeLayout::HalfSplit) as u32,
        };
        let params = ctx.uniform("rope.params", &params);
        let freqs = ctx.buffer_from("rope.freqs", &freq_turns(inv_freqs));
        let bind = ctx.bind_group(&pipeline, &[step, &params, positions, &freqs, qkv]);
        Rope {
            pipeline,
            bind,
            per_row: (n_heads + n_kv_heads) * (head_dim / 2),
            max_dim: ctx.caps.max_workgroups_per_dim,
        }
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass, n_tokens: u32) {
        if n_tokens == 0 || self.per_row == 0 {
            return;
        }
        let (x, y) = grid((n_tokens * self.per_row).div_ceil(WG), self.max_dim);
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind, &[]);
        pass.dispatch_workgroups(x, y, 1);
    }
}

/// CPU reference (angles and rotation in f64) on rows of `row_stride`.
pub fn rope_ref(
    qkv: &mut [f32],
    positions: &[u32],
    inv_freqs: &[f32],
    n_rot_heads: usize,
    head_dim: usize,
    row_stride: usize,
    layout: RopeLayout,
) {
    let half = head_dim / 2;
    for (row, &pos) in qkv.chunks_mut(row_stride).zip(positions) {
        for h in 0..n_rot_heads {
            let head = &mut row[h * head_dim..(h + 1) * head_dim];
            for (i, &f) in inv_freqs.iter().enumerate().take(half) {
                let (a, b) = match layout {
                    RopeLayout::Interleaved => (2 * i, 2 * i + 1),
                    RopeLayout::HalfSplit => (i, i + half),
                };
                let angle = pos as f64 * f as f64;
                let (s, c) = angle.sin_cos();
                let (x0, x1) = (head[a] as f64, head[b] as f64);
                head[a] = (x0 * c - x1 * s) as f32;
                head[b] = (x0 * s + x1 * c) as f32;
            }
        }
    }
}
