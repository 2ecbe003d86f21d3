//! Residual add and SiLU·mul (SwiGLU) launchers.

use bytemuck::{Pod, Zeroable};

use super::grid;
use crate::gpu::{GpuContext, ShaderSpec};

const SRC: &str = include_str!("../../../shaders/elementwise.wgsl");
const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    width: u32,
    in_stride: u32,
    _p: [u32; 2],
}

pub enum Op {
    /// `a += b`, both `[n_tokens, width]`.
    Add,
    /// `a = silu(b[:, :width]) * b[:, width..2*width]`; `b` rows are `2*width` wide.
    SiluMul,
}

pub struct Elementwise {
    pipeline: std::sync::Arc<wgpu::ComputePipeline>,
    bind: wgpu::BindGroup,
    width: u32,
    max_dim: u32,
}

impl Elementwise {
    pub fn new(
        ctx: &GpuContext,
        op: Op,
        step: &wgpu::Buffer,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        width: u32,
    ) -> Self {
        let entry = match op {
            Op::Add => "add",
            Op::SiluMul => "silu_mul",
        };
        let spec = ShaderSpec::new("elementwise", SRC)
            .entry(entry)
            .constant("WG", WG);
        let pipeline = ctx.pipeline(&spec);
        let params = ctx.uniform(
            "elementwise.params",
            &Params {
                width,
                in_stride: 2 * width,
                _p: [0; 2],
            },
        );
        let bind = ctx.bind_group(&pipeline, &[step, &params, a, b]);
        Elementwise {
            pipeline,
            bind,
            width,
            max_dim: ctx.caps.max_workgroups_per_dim,
        }
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass, n_tokens: u32) {
        let (x, y) = grid((n_tokens * self.width).div_ceil(WG), self.max_dim);
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind, &[]);
        pass.dispatch_workgroups(x, y, 1);
    }
}

pub fn add_ref(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
}

/// `gate_up` rows are `[gate(width) | up(width)]`.
pub fn silu_mul_ref(gate_up: &[f32], width: usize) -> Vec<f32> {
    gate_up
        .chunks(2 * width)
        .flat_map(|row| {
            let (g, u) = row.split_at(width);
            g.iter()
                .zip(u)
                .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
                .collect::<Vec<_>>()
        })
        .collect()
}
