//! Weight matrices on the GPU: row-major `[rows, cols]` (PyTorch's `[out, in]`),
//! in the word layout of [`crate::quant::pack`], split by rows into chunks
//! that each fit one storage binding.

use super::context::GpuContext;
use crate::quant::pack::{check_cols, gpu_dtype, pack, row_words, scale_words};
use crate::types::{DType, HostTensor};
use crate::{HearthError, Result};

/// Chunk row counts are multiples of this (unless a single tile does not fit a binding).
pub const ROW_TILE: usize = 16;

/// Rows `[row_start, row_start + rows)` of a matrix, in their own buffers.
pub struct MatrixChunk {
    pub row_start: u32,
    pub rows: u32,
    pub qs: wgpu::Buffer,
    /// Block scales; `None` for float formats.
    pub scales: Option<wgpu::Buffer>,
}

pub struct GpuMatrix {
    name: String,
    dtype: DType,
    rows: usize,
    cols: usize,
    chunks: Vec<MatrixChunk>,
    gpu_bytes: u64,
}

impl GpuMatrix {
    /// Uploads the rows of `parts` one after another (fused QKV = `[q; k; v]`,
    /// fused gate/up = `[gate; up]`) as `target` (or the source form when
    /// `None`; BF16 is always stored as F16). A source in another form is
    /// converted through f32, chunk by chunk, so host memory beyond the
    /// sources stays about one chunk.
    pub fn upload(
        ctx: &GpuContext,
        name: &str,
        parts: &[HostTensor],
        target: Option<DType>,
    ) -> Result<GpuMatrix> {
        Self::upload_grouped(ctx, name, parts, target, 1)
    }

    /// [`GpuMatrix::upload`] whose chunks each hold whole groups of
    /// `group_rows` rows (one expert's matrix of a stack of experts), so a
    /// kernel finds every expert inside one binding.
    pub fn upload_grouped(
        ctx: &GpuContext,
        name: &str,
        parts: &[HostTensor],
        target: Option<DType>,
        group_rows: usize,
    ) -> Result<GpuMatrix> {
        let group_rows = group_rows.max(1);
        let first = parts
            .first()
            .ok_or_else(|| HearthError::Unsupported(format!("`{name}`: no tensors to upload")))?;
        let cols = first.rows_cols().1;
        let dtype = gpu_dtype(target.map_or(first.dtype, |t| t.target_for(cols)));
        check_cols(dtype, cols).map_err(|e| HearthError::Unsupported(format!("`{name}`: {e}")))?;
        let mut rows = 0usize;
        for p in parts {
            let (r, c) = p.rows_cols();
            if c != cols {
                return Err(HearthError::ShapeMismatch {
                    name: p.name.clone(),
                    expected: vec![r, cols],
                    found: p.shape.clone(),
                });
            }
            if target.is_none() && gpu_dtype(p.dtype) != dtype {
                return Err(HearthError::Unsupported(format!(
                    "`{name}`: fused parts differ in type ({} and {})",
                    first.dtype.name(),
                    p.dtype.name()
                )));
            }
            let need = r
                .checked_mul(cols)
                .and_then(|n| p.dtype.bytes_for(n).ok())
                .ok_or_else(|| {
                    HearthError::InvalidFile(format!(
                        "`{}`: {:?} is not a whole number of {} blocks",
                        p.name,
                        p.shape,
                        p.dtype.name()
                    ))
                })?;
            if p.data.len() < need {
                return Err(HearthError::InvalidFile(format!(
                    "`{}`: {} bytes of data, {need} needed for {:?} {}",
                    p.name,
                    p.data.len(),
                    p.shape,
                    p.dtype.name()
                )));
            }
            rows += r;
        }
        if rows == 0 || rows > u32::MAX as usize / 2 {
            return Err(HearthError::Unsupported(format!("`{name}`: {rows} rows")));
        }
        let chunk_rows = rows_per_chunk(ctx.caps.max_binding, dtype, cols).ok_or_else(|| {
            HearthError::Unsupported(format!(
                "`{name}`: one row of {cols} {} elements exceeds the adapter's storage binding limit of {} bytes",
                dtype.name(),
                ctx.caps.max_binding
            ))
        })?;
        if !rows.is_multiple_of(group_rows) {
            return Err(HearthError::ShapeMismatch {
                name: name.to_string(),
                expected: vec![rows.div_ceil(group_rows) * group_rows, cols],
                found: vec![rows, cols],
            });
        }
        let chunk_rows = if group_rows > 1 {
            match chunk_rows / group_rows * group_rows {
                0 => {
                    return Err(HearthError::Unsupported(format!(
                        "`{name}`: one expert ({group_rows} rows of {cols} {} elements) exceeds the adapter's storage binding limit of {} bytes",
                        dtype.name(),
                        ctx.caps.max_binding
                    )))
                }
                n => n,
            }
        } else {
            chunk_rows
        };
        let mut chunks = Vec::new();
        let mut gpu_bytes = 0u64;
        let mut start = 0usize;
        while start < rows {
            let n = chunk_rows.min(rows - start);
            let bytes = gather_rows(parts, start, n, cols, dtype)?;
            let packed = pack(dtype, &bytes, n, cols)?;
            drop(bytes);
            gpu_bytes += 4 * (packed.qs.len() + packed.scales.len()) as u64;
            // 16-byte padding: kernels may bind the words as vec4 arrays.
            let qs = padded_buffer(ctx, name, &packed.qs, 4);
            let scales =
                (!packed.scales.is_empty()).then(|| padded_buffer(ctx, name, &packed.scales, 1));
            chunks.push(MatrixChunk {
                row_start: start as u32,
                rows: n as u32,
                qs,
                scales,
            });
            start += n;
        }
        Ok(GpuMatrix {
            name: name.to_string(),
            dtype,
            rows,
            cols,
            chunks,
            gpu_bytes,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// The GPU form (never BF16).
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Bytes of weights and scales a full pass over the matrix reads.
    pub fn gpu_bytes(&self) -> u64 {
        self.gpu_bytes
    }
    pub fn chunks(&self) -> &[MatrixChunk] {
        &self.chunks
    }
    /// Words of quantized values (or floats) per row.
    pub fn row_words(&self) -> usize {
        row_words(self.dtype, self.cols)
    }
}

/// The most rows whose values and scales each fit `max_binding` bytes (after
/// the 16-byte padding), a multiple of [`ROW_TILE`] when at least one tile fits.
fn rows_per_chunk(max_binding: u64, dtype: DType, cols: usize) -> Option<usize> {
    let budget = max_binding.saturating_sub(16) as usize;
    let fits = |n: usize| {
        row_words(dtype, cols) * n * 4 <= budget && scale_words(dtype, n, cols) * 4 <= budget
    };
    // Upper bound from the values alone, then step down to what really fits.
    let mut n = budget / (row_words(dtype, cols) * 4).max(1);
    while n > 0 && !fits(n) {
        n -= 1;
    }
    match n {
        0 => None,
        n if n >= ROW_TILE => Some(n / ROW_TILE * ROW_TILE),
        n => Some(n),
    }
}

/// Rows `[start, start + n)` of the concatenated parts, as GGUF-layout bytes of `dtype`.
fn gather_rows(
    parts: &[HostTensor],
    start: usize,
    n: usize,
    cols: usize,
    dtype: DType,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(dtype.bytes_for(n * cols)?);
    let mut base = 0usize;
    for p in parts {
        let prows = p.rows_cols().0;
        let (lo, hi) = (start.max(base), (start + n).min(base + prows));
        if lo < hi {
            let row_bytes = p.dtype.bytes_for(cols)?;
            let src = &p.data[(lo - base) * row_bytes..(hi - base) * row_bytes];
            let m = (hi - lo) * cols;
            if p.dtype == dtype {
                out.extend_from_slice(src);
            } else {
                let f = crate::quant::dequantize(p.dtype, src, m)?;
                match dtype {
                    DType::F32 => out.extend_from_slice(bytemuck::cast_slice(&f)),
                    _ => out.extend(crate::quant::quantize(dtype, &f)?),
                }
            }
        }
        base += prows;
    }
    Ok(out)
}

fn padded_buffer(ctx: &GpuContext, name: &str, words: &[u32], align_words: usize) -> wgpu::Buffer {
    let len = words.len().div_ceil(align_words).max(1) * align_words;
    let buf = ctx.buffer_zeroed(name, len as u64 * 4);
    if !words.is_empty() {
        ctx.queue.write_buffer(&buf, 0, bytemuck::cast_slice(words));
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_rows_fit_the_binding() {
        for &(mb, dt, cols) in &[
            (65536u64, DType::Q8_0, 1024usize),
            (4096, DType::Q4_1, 96),
            (4096, DType::F16, 577),
            (1 << 27, DType::F32, 576),
            (256, DType::Q4_0, 160),
        ] {
            let n = rows_per_chunk(mb, dt, cols).unwrap();
            assert!(row_words(dt, cols) * n * 4 + 16 <= mb as usize);
            assert!(scale_words(dt, n, cols) * 4 + 16 <= mb as usize);
            assert!(n < ROW_TILE || n.is_multiple_of(ROW_TILE));
        }
        assert_eq!(rows_per_chunk(256, DType::F32, 1024), None);
    }
}
