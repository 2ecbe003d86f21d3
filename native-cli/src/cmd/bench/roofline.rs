//! `hearth bench --roofline`: the adapter's storage-buffer bandwidth, measured
//! with the copy kernel, as the ceiling decode's weight reads are compared to.

use std::time::Instant;

use anyhow::Result;
use hearth::gpu::kernels::copy::CopyKernel;
use hearth::gpu::GpuContext;

/// Largest copy measured: big enough to leave every cache, small enough for
/// one binding on any adapter here.
const MAX_BYTES: u64 = 64 << 20;
/// Seconds of copying per measurement.
const BUDGET_S: f64 = 0.5;

/// Read-plus-write GB/s of copying one buffer into another with the copy
/// kernel (the STREAM "copy" convention: both directions count).
pub fn copy_gb_s(ctx: &GpuContext) -> Result<f64> {
    let bytes = MAX_BYTES.min(ctx.caps.max_binding) / 16 * 16;
    let (src, dst) = (
        ctx.buffer_zeroed("src", bytes),
        ctx.buffer_zeroed("dst", bytes),
    );
    let copy = CopyKernel::new(ctx, &src, &dst, (bytes / 16) as u32);
    let run = |n: usize| -> Result<f64> {
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for _ in 0..n {
                copy.record(&mut pass);
            }
        }
        let t = Instant::now();
        ctx.queue.submit(Some(enc.finish()));
        ctx.wait()?;
        Ok(t.elapsed().as_secs_f64())
    };
    // The first submission compiles and touches the buffers.
    let once = run(1)?.max(1e-6);
    let n = ((BUDGET_S / once) as usize).clamp(2, 1000);
    let s = run(n)?;
    Ok(copy.bytes_moved() as f64 * n as f64 / s / 1e9)
}
