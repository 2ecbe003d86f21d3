//! GPU-side timing of compute passes through timestamp queries: every timed
//! pass writes a timestamp at its start and end, all passes of a step share
//! one submission, and the spans are read back after it. Unlike timing each
//! kernel as its own submission, this measures the kernels as a normal step
//! runs them, without per-submission overhead.

use crate::error::{HearthError, Result};
use crate::gpu::GpuContext;

/// Timestamp pairs of up to `capacity` passes, with their labels.
pub struct PassTimer {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    staging: wgpu::Buffer,
    capacity: u32,
    labels: Vec<&'static str>,
}

impl PassTimer {
    /// `None` when the device was not given `TIMESTAMP_QUERY` (see [`crate::gpu::Caps::timestamps`]).
    pub fn new(ctx: &GpuContext, max_passes: u32) -> Option<Self> {
        if !ctx.caps.timestamps || max_passes == 0 {
            return None;
        }
        let capacity = max_passes.min(wgpu::QUERY_SET_MAX_QUERIES / 2);
        let queries = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("pass timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: capacity * 2,
        });
        let bytes = capacity as u64 * 2 * wgpu::QUERY_SIZE as u64;
        let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamp resolve"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamp staging"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Some(Self {
            queries,
            resolve,
            staging,
            capacity,
            labels: Vec::new(),
        })
    }

    /// The timestamp writes for the next pass, labelled `label`; `None` once
    /// the query set is full (that pass then runs untimed and is not reported).
    pub fn pass(&mut self, label: &'static str) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        let i = self.labels.len() as u32;
        if i >= self.capacity {
            return None;
        }
        self.labels.push(label);
        Some(wgpu::ComputePassTimestampWrites {
            query_set: &self.queries,
            beginning_of_pass_write_index: Some(2 * i),
            end_of_pass_write_index: Some(2 * i + 1),
        })
    }

    /// Records the copy of this step's timestamps to the readback buffer; call
    /// once, after the last timed pass, in the same submission.
    pub fn resolve(&self, enc: &mut wgpu::CommandEncoder) {
        let n = self.labels.len() as u32 * 2;
        if n == 0 {
            return;
        }
        enc.resolve_query_set(&self.queries, 0..n, &self.resolve, 0);
        enc.copy_buffer_to_buffer(
            &self.resolve,
            0,
            &self.staging,
            0,
            n as u64 * wgpu::QUERY_SIZE as u64,
        );
    }

    /// Seconds each pass took, in recording order (after the submission that
    /// [`PassTimer::resolve`] ended), and resets the timer for the next step.
    pub async fn read(&mut self, ctx: &GpuContext) -> Result<Vec<(&'static str, f64)>> {
        let labels = std::mem::take(&mut self.labels);
        if labels.is_empty() {
            return Ok(Vec::new());
        }
        let bytes = labels.len() as u64 * 2 * wgpu::QUERY_SIZE as u64;
        let data = ctx.map_read(&self.staging, bytes).await?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&data);
        let ns_per_tick = ctx.queue.get_timestamp_period() as f64;
        labels
            .into_iter()
            .zip(ticks.chunks_exact(2))
            .map(|(label, t)| {
                // A driver may report an end before its start (clock domains);
                // that is a broken timer, not a negative duration.
                let span = t[1].checked_sub(t[0]).ok_or_else(|| {
                    HearthError::Gpu(format!(
                        "timestamp of the end of pass '{label}' precedes its start"
                    ))
                })?;
                Ok((label, span as f64 * ns_per_tick * 1e-9))
            })
            .collect()
    }
}
