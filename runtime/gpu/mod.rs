//! GPU layer: device and negotiated capabilities, shader loading and
//! pipeline caching, buffers, and one typed launcher per kernel.

pub mod buffers;
pub mod context;
pub mod kernels;
pub mod shader;
pub mod timer;
pub mod weights;

#[cfg(not(target_arch = "wasm32"))]
pub use buffers::{readback_f32, readback_u32};
pub use context::{AdapterSummary, Caps, GpuContext, GpuOptions};
pub use shader::ShaderSpec;
