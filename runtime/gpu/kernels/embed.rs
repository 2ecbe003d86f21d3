//! Embedding gather: `out[t, :] = table[ids[t], :]`, dequantized, for a
//! [`GpuMatrix`] table in any format and any number of row chunks.

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use super::grid;
use super::matmul::{bind_numbered, format_flags};
use crate::gpu::weights::GpuMatrix;
use crate::gpu::{GpuContext, ShaderSpec};

const SRC: &str = concat!(
    include_str!("../../../shaders/weight_formats.wgsl"),
    include_str!("../../../shaders/embed.wgsl")
);
const WG: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    row_offset: u32,
    total_rows: u32,
    row_words: u32,
    first_chunk: u32,
    _p: [u32; 2],
}

pub struct Embed {
    pipeline: Arc<wgpu::ComputePipeline>,
    binds: Vec<wgpu::BindGroup>,
    groups_per_row: u32,
    max_dim: u32,
}

impl Embed {
    /// `ids` is u32 `[n_tokens]`, `out` f32 `[n_tokens, table.cols()]`. Ids past the
    /// table's end give a zero row.
    pub fn new(
        ctx: &GpuContext,
        step: &wgpu::Buffer,
        table: &GpuMatrix,
        ids: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Embed {
        let pipeline = ctx.pipeline(
            &format_flags(ShaderSpec::new("embed", SRC), table.dtype()).constant("WG", WG),
        );
        let binds = table
            .chunks()
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let params = ctx.uniform(
                    "embed.params",
                    &Params {
                        rows: c.rows,
                        cols: table.cols() as u32,
                        row_offset: c.row_start,
                        total_rows: table.rows() as u32,
                        row_words: table.row_words() as u32,
                        first_chunk: (i == 0) as u32,
                        _p: [0; 2],
                    },
                );
                let mut entries = vec![(0, step), (1, &params), (2, ids), (3, out), (5, &c.qs)];
                if let Some(s) = &c.scales {
                    entries.push((6, s));
                }
                bind_numbered(ctx, &pipeline, &entries)
            })
            .collect();
        Embed {
            pipeline,
            binds,
            groups_per_row: table.cols().div_ceil(8) as u32,
            max_dim: ctx.caps.max_workgroups_per_dim,
        }
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass, n_tokens: u32) {
        if n_tokens == 0 {
            return;
        }
        let (x, y) = grid((n_tokens * self.groups_per_row).div_ceil(WG), self.max_dim);
        pass.set_pipeline(&self.pipeline);
        for b in &self.binds {
            pass.set_bind_group(0, b, &[]);
            pass.dispatch_workgroups(x, y, 1);
        }
    }
}

/// CPU reference: rows of the row-major `table` `[rows, cols]`; ids past the end give zeros.
pub fn embed_ref(table: &[f32], rows: usize, cols: usize, ids: &[u32]) -> Vec<f32> {
    ids.iter()
        .flat_map(|&id| {
            let id = id as usize;
            if id < rows {
                table[id * cols..(id + 1) * cols].to_vec()
            } else {
                vec![0.0; cols]
            }
        })
        .collect()
}
