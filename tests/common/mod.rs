//! Shared support for the integration tests (`mod common;` in each file):
//! GPU contexts, deterministic random data and tolerance checks here; the
//! tiny model, engines over it and the paths of the real model files in
//! [`models`]; the GGUF and Hugging Face file writers in [`gguf_writer`] and
//! [`hf_writer`] (kept under `tests/fixtures/`, where native-cli's tests
//! include the GGUF writer too).
#![allow(dead_code)]

pub mod golden;
pub mod models;
pub mod moe;

#[path = "../fixtures/gguf_writer.rs"]
pub mod gguf_writer;
#[path = "../fixtures/hf_writer.rs"]
pub mod hf_writer;

use std::sync::Arc;

use hearth::gpu::{GpuContext, GpuOptions};

#[allow(unused_imports)] // Not every test uses a model.
pub use models::*;

/// A GPU context from the environment (`HEARTH_NO_F16`, `HEARTH_NO_SUBGROUPS`,
/// `HEARTH_MAX_BINDING`, `HEARTH_ADAPTER`). A missing adapter fails the test:
/// CI has lavapipe, and a silently skipped GPU test proves nothing.
pub fn gpu() -> Arc<GpuContext> {
    gpu_from(&GpuOptions::from_env())
}

/// A context with exactly these options (start from `GpuOptions::from_env()`
/// to keep the environment's).
pub fn gpu_from(opts: &GpuOptions) -> Arc<GpuContext> {
    GpuContext::new_blocking(opts).expect("a wgpu adapter (install mesa-vulkan-drivers)")
}

/// A context with the given forced fallbacks, for tests that cover every path.
pub fn gpu_with(no_f16: bool, no_subgroups: bool, max_binding: Option<u64>) -> Arc<GpuContext> {
    let mut o = GpuOptions::from_env();
    o.no_f16 |= no_f16;
    o.no_subgroups |= no_subgroups;
    if max_binding.is_some() {
        o.max_binding = max_binding;
    }
    gpu_from(&o)
}

/// A context whose tiled matrix kernel multiplies in f16 (the default on
/// GPUs with shader-f16, not on CPU adapters); `None` without shader-f16
/// (lavapipe has it, so CI always runs these paths).
pub fn gpu_tiled_f16() -> Option<Arc<GpuContext>> {
    let mut o = GpuOptions::from_env();
    o.tiled_f16 = Some(true);
    let c = gpu_from(&o);
    c.caps.tiled_f16.then_some(c)
}

/// All capability variants this adapter can run: (f16 on/off) x (subgroups on/off).
pub fn all_variants() -> Vec<Arc<GpuContext>> {
    let mut v = Vec::new();
    for &(nf, ns) in &[(false, false), (true, false), (false, true), (true, true)] {
        let c = gpu_with(nf, ns, None);
        if !v.iter().any(|o: &Arc<GpuContext>| o.caps == c.caps) {
            v.push(c);
        }
    }
    v
}

/// Deterministic pseudo-random values in [-1, 1): the one xorshift stream
/// every test (and every tiny model's weights) draws from. It is defined in
/// the GGUF writer, which native-cli's tests include on its own.
pub use gguf_writer::values as rand_vec;

/// A `StepInfo` uniform of `n` rows of one sequence, its matmul rows from `first_row`.
pub fn step_buffer(ctx: &GpuContext, n: usize, first_row: usize) -> wgpu::Buffer {
    ctx.uniform(
        "step",
        &hearth::gpu::kernels::StepInfo {
            n_tokens: n as u32,
            n_seqs: 1,
            first_row: first_row as u32,
            ..Default::default()
        },
    )
}

/// The largest |got - want| and the largest |want| (the scale errors are
/// judged against).
pub fn max_err(got: &[f32], want: &[f32]) -> (f32, f32) {
    let scale = want.iter().fold(0f32, |a, &b| a.max(b.abs()));
    let worst = got
        .iter()
        .zip(want)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    (worst, scale)
}

pub fn assert_close(got: &[f32], want: &[f32], atol: f32, rtol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = atol + rtol * w.abs();
        assert!(
            (g - w).abs() <= tol && g.is_finite(),
            "{what}: index {i}: got {g}, want {w} (tol {tol})"
        );
    }
}

/// `n` elements of a format Hearth reads but does not produce (Q5_0, Q5_1,
/// the K-quants) as random blocks: random codes and packed sub-block
/// scales, with the f16 scale fields set to small finite values.
pub fn random_blocks(dtype: hearth::model::DType, n: usize, seed: u64) -> Vec<u8> {
    use hearth::model::DType;
    let (bb, be) = (dtype.block_bytes(), dtype.block_elems());
    let f16_at: &[usize] = match dtype {
        DType::Q5_0 => &[0],
        DType::Q5_1 | DType::Q4_K | DType::Q5_K => &[0, 2],
        DType::Q6_K => &[208],
        other => panic!("{other:?} is produced by quantize()"),
    };
    let noise = rand_vec(n / be * bb, seed);
    let mut data: Vec<u8> = noise.iter().map(|v| ((v + 1.0) * 127.9) as u8).collect();
    for (i, b) in data.chunks_exact_mut(bb).enumerate() {
        for (k, &at) in f16_at.iter().enumerate() {
            let v = 0.002 + 0.001 * ((i + k) % 5) as f32;
            b[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
        }
    }
    data
}

/// Runs `f` on its own thread and fails the test if it has not finished
/// within `secs` seconds: a hang guard for inputs that once took minutes
/// (or exhausted memory), never a performance assertion.
pub fn within<T: Send + 'static>(
    secs: u64,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("{what}: still running after {secs} s (hang guard)"),
    }
}
