//! Shared by the micro-benchmarks.

use std::time::Instant;

use hearth::gpu::GpuContext;

/// Seconds per call of `record` (many calls per submit, after one warm-up submit).
pub fn time_per_call(
    ctx: &GpuContext,
    budget: f64,
    record: &dyn Fn(&mut wgpu::ComputePass),
) -> f64 {
    let submit = |n: usize| {
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for _ in 0..n {
                record(&mut pass);
            }
        }
        let t = Instant::now();
        ctx.queue.submit(Some(enc.finish()));
        ctx.wait().expect("device poll");
        t.elapsed().as_secs_f64()
    };
    let once = submit(1).max(1e-6);
    let iters = ((budget / once) as usize).clamp(1, 2000);
    submit(iters) / iters as f64
}
