//! Buffer helpers: creation from host data, and readback (tests and the few
//! bytes of sampled token ids per step).

use super::context::GpuContext;
use crate::{HearthError, Result};

pub const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

impl GpuContext {
    /// Storage buffer initialised from `data` (padded to 4 bytes; never zero-sized).
    pub fn buffer_from<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> wgpu::Buffer {
        self.buffer_with(label, bytemuck::cast_slice(data), STORAGE)
    }

    /// A buffer of `usage` holding `bytes` (padded with zeros to a multiple
    /// of 4, at least 4). Written through the queue rather than mapped at
    /// creation: when the device is out of memory, wgpu's web backend panics
    /// on a failed mapping, while a failed write is a device error that
    /// [`GpuContext::check_errors`] reports.
    pub fn buffer_with(
        &self,
        label: &str,
        bytes: &[u8],
        usage: wgpu::BufferUsages,
    ) -> wgpu::Buffer {
        let size = bytes.len().div_ceil(4).max(1) * 4;
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: size as u64,
            usage: usage | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let whole = bytes.len() / 4 * 4;
        if whole > 0 {
            self.queue.write_buffer(&buf, 0, &bytes[..whole]);
        }
        if whole < bytes.len() {
            let mut tail = [0u8; 4];
            tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
            self.queue.write_buffer(&buf, whole as u64, &tail);
        }
        buf
    }

    /// Zeroed storage buffer of `bytes` (rounded up to 4, at least 4).
    pub fn buffer_zeroed(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4).div_ceil(4) * 4,
            usage: STORAGE,
            mapped_at_creation: false,
        })
    }

    /// Uniform buffer holding one `Pod` value (written again with `queue.write_buffer`).
    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        self.buffer_with(
            label,
            bytemuck::bytes_of(value),
            wgpu::BufferUsages::UNIFORM,
        )
    }

    /// Copies `bytes` bytes from `src` into host memory (async; works on wasm32 too).
    pub async fn read_bytes(&self, src: &wgpu::Buffer, offset: u64, bytes: u64) -> Result<Vec<u8>> {
        let size = bytes.div_ceil(4) * 4;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: size.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(src, offset, &staging, 0, size);
        self.queue.submit(Some(enc.finish()));
        let mut data = self.map_read(&staging, size).await?;
        data.truncate(bytes as usize);
        Ok(data)
    }

    /// Maps the first `bytes` of a `MAP_READ` buffer (after the work that fills it
    /// was submitted), copies them out and unmaps it.
    pub async fn map_read(&self, buf: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let slice = buf.slice(..bytes);
        let (tx, rx) = futures_channel::oneshot::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.wait()?;
        rx.await
            .map_err(|_| HearthError::Gpu("readback cancelled".into()))?
            .map_err(|e| HearthError::Gpu(format!("buffer map failed: {e}")))?;
        let data = slice
            .get_mapped_range()
            .map_err(|e| HearthError::Gpu(format!("buffer map range failed: {e}")))?
            .to_vec();
        buf.unmap();
        Ok(data)
    }
}

/// Native test/CLI helper: reads `n` values from the start of `src`.
#[cfg(not(target_arch = "wasm32"))]
fn readback<T: bytemuck::Pod>(ctx: &GpuContext, src: &wgpu::Buffer, n: usize) -> Result<Vec<T>> {
    let bytes = pollster::block_on(ctx.read_bytes(src, 0, (n * 4) as u64))?;
    // Copies without assuming the byte vector is aligned (an empty one is not).
    Ok(bytemuck::pod_collect_to_vec(&bytes))
}

/// Native test/CLI helper: reads `n` f32 values from the start of `src`.
#[cfg(not(target_arch = "wasm32"))]
pub fn readback_f32(ctx: &GpuContext, src: &wgpu::Buffer, n: usize) -> Result<Vec<f32>> {
    readback(ctx, src, n)
}

/// Native test/CLI helper: reads `n` u32 values from the start of `src`.
#[cfg(not(target_arch = "wasm32"))]
pub fn readback_u32(ctx: &GpuContext, src: &wgpu::Buffer, n: usize) -> Result<Vec<u32>> {
    readback(ctx, src, n)
}
