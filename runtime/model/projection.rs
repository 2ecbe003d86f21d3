//! A linear projection made of one or more weight matrices whose rows are
//! stacked into one output (fused QKV, fused gate/up). Parts stored in the
//! same form share one matrix and one dispatch; a part in another form (GGUF
//! files mix types inside a layer) gets its own matrix writing its columns of
//! the same output.

use crate::gpu::kernels::matmul::{MatMul, MatMulOpts};
use crate::gpu::weights::GpuMatrix;
use crate::gpu::GpuContext;
use crate::model::{DType, HostTensor};
use crate::quant::pack::gpu_dtype;
use crate::Result;

/// The form a weight of `source` type takes on the GPU under `--dtype target`:
/// float weights are converted, quantized ones only to a float form (see
/// [`DType::converts`]).
pub fn stored_form(source: DType, target: Option<DType>) -> DType {
    match target {
        Some(t) if t.converts(source) => t,
        _ => source,
    }
}

pub struct Projection {
    parts: Vec<(GpuMatrix, MatMul)>,
    rows: usize,
}

/// Where a projection reads and writes.
pub struct ProjectionIo<'a> {
    /// Step uniforms of the matrix-vector and the tiled rows (see `MatMul::record_rows`).
    pub matvec_step: &'a wgpu::Buffer,
    pub tiled_step: &'a wgpu::Buffer,
    pub x: &'a wgpu::Buffer,
    pub y: &'a wgpu::Buffer,
    /// f32 bias over all output columns.
    pub bias: Option<&'a wgpu::Buffer>,
    /// `y += W x` (fused residual).
    pub accumulate: bool,
    /// x holds gate/up rows and the projection takes silu(gate) * up
    /// (see `MatMulOpts::silu_x`).
    pub silu_x: bool,
}

impl Projection {
    /// Uploads `tensors` (all with the same column count): float tensors as
    /// `target` (or as stored when `None`), quantized ones always as stored.
    pub fn new(
        ctx: &GpuContext,
        name: &str,
        tensors: Vec<HostTensor>,
        target: Option<DType>,
        io: &ProjectionIo,
    ) -> Result<Projection> {
        let rows: usize = tensors.iter().map(|t| t.rows_cols().0).sum();
        let form = |t: &HostTensor| gpu_dtype(stored_form(t.dtype, target));
        let mut groups: Vec<Vec<HostTensor>> = Vec::new();
        for t in tensors {
            match groups.last_mut() {
                Some(g) if form(&g[0]) == form(&t) => g.push(t),
                _ => groups.push(vec![t]),
            }
        }
        let mut parts = Vec::with_capacity(groups.len());
        let mut offset = 0usize;
        for g in groups {
            let w = GpuMatrix::upload(ctx, name, &g, Some(form(&g[0])))?;
            drop(g);
            let mm = MatMul::new_split(
                ctx,
                io.matvec_step,
                io.tiled_step,
                &w,
                io.x,
                io.y,
                MatMulOpts {
                    bias: io.bias,
                    accumulate: io.accumulate,
                    out_offset: offset as u32,
                    out_stride: Some(rows as u32),
                    silu_x: io.silu_x,
                    experts: None,
                },
            );
            offset += w.rows();
            parts.push((w, mm));
        }
        Ok(Projection { parts, rows })
    }

    /// The first `n_matvec` of `n_tokens` rows are generated tokens (see `MatMul::record_rows`).
    pub fn record(&self, pass: &mut wgpu::ComputePass, n_matvec: u32, n_tokens: u32) {
        for (_, mm) in &self.parts {
            mm.record_rows(pass, n_matvec, n_tokens);
        }
    }

    /// Output columns.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Weight bytes read per token.
    pub fn gpu_bytes(&self) -> u64 {
        self.parts.iter().map(|(w, _)| w.gpu_bytes()).sum()
    }

    /// Number of separately stored matrices (1 when every part has the same form).
    pub fn matrices(&self) -> usize {
        self.parts.len()
    }
}
