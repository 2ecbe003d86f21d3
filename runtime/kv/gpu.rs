//! Per-layer GPU storage of the paged cache: one K and one V buffer per
//! layer, each `[block][kv_head][slot]` of head rows in the form of
//! [`KvDtype`] (f16 packed two per u32 word; quantized rows see [`super::quant`]).

use super::pool::KvPool;
use crate::gpu::GpuContext;
use crate::{HearthError, Result};

pub struct KvBuffers {
    pub k: Vec<wgpu::Buffer>,
    pub v: Vec<wgpu::Buffer>,
    /// Bytes of each buffer.
    pub layer_bytes: u64,
}

impl KvBuffers {
    /// Allocates the buffers for every block of `pool` (the pool already keeps one
    /// layer's buffer within `ctx.caps.max_binding`).
    pub fn new(ctx: &GpuContext, pool: &KvPool) -> Result<Self> {
        let layer_bytes =
            KvPool::block_bytes_per_layer(pool.layout(), pool.dtype()) * pool.num_blocks() as u64;
        if layer_bytes > ctx.caps.max_binding {
            return Err(HearthError::OutOfKvMemory(format!(
                "one layer's KV buffer ({layer_bytes} bytes) exceeds the max storage binding ({})",
                ctx.caps.max_binding
            )));
        }
        let n = pool.layout().n_layers as usize;
        let k = (0..n)
            .map(|_| ctx.buffer_zeroed("kv.k", layer_bytes))
            .collect();
        let v = (0..n)
            .map(|_| ctx.buffer_zeroed("kv.v", layer_bytes))
            .collect();
        Ok(KvBuffers { k, v, layer_bytes })
    }
}
