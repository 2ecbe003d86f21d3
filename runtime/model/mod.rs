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
pub mod pooling;
pub mod projection;
pub mod source;

pub use crate::types::{DType, HostTensor};
pub use config::{Architecture, ModelConfig, RopeLayout, RopeScaling};
pub use pooling::{Pooling, PoolingType};
pub use source::WeightSource;
