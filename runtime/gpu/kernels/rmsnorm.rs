//! RMSNorm launchers: whole rows, and per head in place on fused QKV rows
//! (Qwen3's q/k norm). Norm weights are f32 `[width]` buffers.

use bytemuck::{Pod, Zeroable};

use super::grid;
use crate::gpu::{GpuContext, ShaderSpec};

const SRC: &str = include_str!("../../../shaders/rmsnorm.wgsl");
const WG_ROW: u32 = 256;
const WG_HEAD: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    width: u32,
    eps: f32,
    in_stride: u32,
    out_stride: u32,
    first: u32,
    count: u32,
    _p: [u32; 2],
}

pub struct RmsNorm {
    pipeline: std::sync::Arc<wgpu::ComputePipeline>,
    bind: wgpu::BindGroup,
    groups_per_token: u32,
    max_dim: u32,
}

impl RmsNorm {
    /// `out[t, :width] = rmsnorm(x[t, :width]) * w`; rows of `x` and `out` are `width` apart.
    pub fn new(
        ctx: &GpuContext,
        step: &wgpu::Buffer,
        x: &wgpu::Buffer,
        w: &wgpu::Buffer,
        out: &wgpu::Buffer,
        width: u32,
        eps: f32,
    ) -> Self {
        let spec = ShaderSpec::new("rmsnorm", SRC).constant("WG", WG_ROW);
        let pipeline = ctx.pipeline(&spec);
        let params = Params {
            width,
            eps,
            in_stride: width,
            out_stride: width,
            first: 0,
            count: 1,
            _p: [0; 2],
        };
        let params = ctx.uniform("rmsnorm.params", &params);
        let bind = ctx.bind_group(&pipeline, &[step, &params, x, w, out]);
        RmsNorm {
            pipeline,
            bind,
            groups_per_token: 1,
            max_dim: ctx.caps.max_workgroups_per_dim,
        }
    }

    /// In place on `qkv` rows of `row_stride` floats: heads `first..first+count`
    /// (each `head_dim` wide) are normalised with the `[head_dim]` weight `w`.
    #[allow(clippy::too_many_arguments)]
    pub fn heads(
        ctx: &GpuContext,
        step: &wgpu::Buffer,
        qkv: &wgpu::Buffer,
        w: &wgpu::Buffer,
        head_dim: u32,
        first: u32,
        count: u32,
        row_stride: u32,
        eps: f32,
    ) -> Self {
        let spec = ShaderSpec::new("rmsnorm_heads", SRC)
            .flag("HEADS", true)
            .constant("WG", WG_HEAD);
        let pipeline = ctx.pipeline(&spec);
        let params = Params {
            width: head_dim,
            eps,
            in_stride: row_stride,
            out_stride: row_stride,
            first,
            count,
            _p: [0; 2],
        };
        let params = ctx.uniform("rmsnorm_heads.params", &params);
        let bind = ctx.bind_group(&pipeline, &[step, &params, qkv, w]);
        RmsNorm {
            pipeline,
            bind,
            groups_per_token: count,
            max_dim: ctx.caps.max_workgroups_per_dim,
        }
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass, n_tokens: u32) {
        if n_tokens == 0 || self.groups_per_token == 0 {
            return;
        }
        let (x, y) = grid(n_tokens * self.groups_per_token, self.max_dim);
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind, &[]);
        pass.dispatch_workgroups(x, y, 1);
    }
}

/// CPU reference of one row (f64 accumulation).
pub fn rmsnorm_ref(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ss: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
    let r = 1.0 / (ss / x.len() as f64 + eps as f64).sqrt();
    x.iter()
        .zip(w)
        .map(|(&v, &g)| (v as f64 * r) as f32 * g)
        .collect()
}

/// CPU reference of [`RmsNorm::heads`] on `n_tokens` rows of `row_stride`.
pub fn rmsnorm_heads_ref(
    qkv: &mut [f32],
    w: &[f32],
    head_dim: usize,
    first: usize,
    count: usize,
    row_stride: usize,
    eps: f32,
) {
    for row in qkv.chunks_mut(row_stride) {
        for h in first..first + count {
            let s = &mut row[h * head_dim..(h + 1) * head_dim];
            let n = rmsnorm_ref(s, w, eps);
            s.copy_from_slice(&n);
        }
    }
}
