//! KV write launcher: K/V heads of the fused QKV rows → the layer's paged
//! cache, stored as f16/f32 (`kv_write.wgsl`) or quantized (`kv_write_quant.wgsl`).

use bytemuck::{Pod, Zeroable};

use super::attention::AttnShape;
use super::batch::BatchBuffers;
use super::grid;
use crate::gpu::{GpuContext, ShaderSpec};
use crate::kv::dtype::GROUP;
use crate::kv::quant::rotation_block;
use crate::kv::KvDtype;

const SRC: &str = concat!(
    include_str!("../../../shaders/paged_kv.wgsl"),
    include_str!("../../../shaders/kv_write.wgsl")
);
const SRC_QUANT: &str = concat!(
    include_str!("../../../shaders/paged_kv.wgsl"),
    include_str!("../../../shaders/kv_write_quant.wgsl")
);
const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n_kv_heads: u32,
    head_dim: u32,
    block_size: u32,
    row_stride: u32,
    k_offset: u32,
    v_offset: u32,
    _p: [u32; 2],
}

pub struct KvWrite {
    pipeline: std::sync::Arc<wgpu::ComputePipeline>,
    bind: wgpu::BindGroup,
    /// Invocations per QKV row.
    per_row: u32,
    max_dim: u32,
}

impl KvWrite {
    /// `qkv` rows are `[q (n_heads*head_dim) | k | v]`; `k`/`v` are one layer's cache buffers.
    pub fn new(
        ctx: &GpuContext,
        shape: &AttnShape,
        batch: &BatchBuffers,
        qkv: &wgpu::Buffer,
        k: &wgpu::Buffer,
        v: &wgpu::Buffer,
    ) -> crate::Result<Self> {
        shape.validate()?;
        let spec = if shape.kv_dtype.is_quantized() {
            ShaderSpec::new("kv_write_quant", SRC_QUANT)
                .flag("KV_Q8", shape.kv_dtype == KvDtype::Q8)
        } else {
            ShaderSpec::new("kv_write", SRC).flag("KV_F16", shape.kv_dtype == KvDtype::F16)
        };
        let rot = rotation_block(shape.head_dim as usize) as u32;
        let pipeline = ctx.pipeline(&spec.constant("WG", WG).constant("ROT", rot));
        let q_dim = shape.n_heads * shape.head_dim;
        let kv_dim = shape.n_kv_heads * shape.head_dim;
        // Per K or V head: q8, one invocation per pair of groups; q4, per
        // rotation block. Unquantized: per element pair.
        let per_row = if shape.kv_dtype == KvDtype::Q8 {
            shape.n_kv_heads * (shape.head_dim / GROUP).div_ceil(2) * 2
        } else if shape.kv_dtype == KvDtype::Q4 {
            shape.n_kv_heads * (shape.head_dim / rot) * 2
        } else {
            kv_dim / 2
        };
        let params = Params {
            n_kv_heads: shape.n_kv_heads,
            head_dim: shape.head_dim,
            block_size: shape.block_size,
            row_stride: shape.row_stride(),
            k_offset: q_dim,
            v_offset: q_dim + kv_dim,
            _p: [0; 2],
        };
        let params = ctx.uniform("kv_write.params", &params);
        let bind = ctx.bind_group(
            &pipeline,
            &[
                &batch.step,
                &params,
                &batch.positions,
                &batch.row_seq,
                &batch.seqs,
                &batch.block_table,
                qkv,
                k,
                v,
            ],
        );
        Ok(KvWrite {
            pipeline,
            bind,
            per_row,
            max_dim: ctx.caps.max_workgroups_per_dim,
        })
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass, n_tokens: u32) {
        if n_tokens == 0 {
            return;
        }
        let (x, y) = grid((n_tokens * self.per_row).div_ceil(WG), self.max_dim);
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind, &[]);
        pass.dispatch_workgroups(x, y, 1);
    }
}
