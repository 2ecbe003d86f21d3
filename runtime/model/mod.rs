//! Model description, file loaders and the GPU forward pass.

pub mod config;
pub mod convert;
pub mod dummy;
pub mod forward;
pub mod gguf;
pub mod hf;
mod hf_experts;
pub mod load;
pub mod moe;
pub mod projection;
pub mod source;

pub use crate::types::{DType, HostTensor};
pub use config::{Architecture, ModelConfig, RopeLayout, RopeScaling};
pub use source::WeightSource;
