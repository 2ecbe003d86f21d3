//! Buffer copy through a compute kernel: the bandwidth reference for the
//! roofline (`hearth bench --roofline`), measured the way the other kernels
//! read memory rather than with the driver's transfer path.

use bytemuck::{Pod, Zeroable};

use super::grid;
use crate::gpu::{GpuContext, ShaderSpec};

const SRC: &str = include_str!("../../../shaders/copy.wgsl");
const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    _p: [u32; 3],
}

pub struct CopyKernel {
    pipeline: std::sync::Arc<wgpu::ComputePipeline>,
    bind: wgpu::BindGroup,
    n_vec4: u32,
    max_dim: u32,
}

impl CopyKernel {
    /// Copies the first `n_vec4` 16-byte units of `src` to `dst`.
    pub fn new(ctx: &GpuContext, src: &wgpu::Buffer, dst: &wgpu::Buffer, n_vec4: u32) -> Self {
        let pipeline = ctx.pipeline(&ShaderSpec::new("copy", SRC).constant("WG", WG));
        let params = ctx.uniform(
            "copy.params",
            &Params {
                n: n_vec4,
                _p: [0; 3],
            },
        );
        let bind = ctx.bind_group(&pipeline, &[&params, src, dst]);
        CopyKernel {
            pipeline,
            bind,
            n_vec4,
            max_dim: ctx.caps.max_workgroups_per_dim,
        }
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass) {
        let (x, y) = grid(self.n_vec4.div_ceil(WG), self.max_dim);
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind, &[]);
        pass.dispatch_workgroups(x, y, 1);
    }

    /// Bytes read plus bytes written by one [`CopyKernel::record`].
    pub fn bytes_moved(&self) -> u64 {
        2 * 16 * self.n_vec4 as u64
    }
}

/// CPU reference: the first `n_vec4 * 4` words of `src`.
pub fn copy_ref(src: &[u32], n_vec4: usize) -> Vec<u32> {
    src[..n_vec4 * 4].to_vec()
}
