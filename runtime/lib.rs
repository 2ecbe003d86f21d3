//! Hearth: a cross-vendor LLM inference runtime on wgpu.
//!
//! The crate is organised as the architecture document describes:
//! `gpu` (device, kernels), `model` (config, loaders, forward pass),
//! `quant` (block formats), `kv` (paged KV cache), `engine` (sampling,
//! generation), `text` (tokenizer, chat templates), `reference`
//! (the plain f32 CPU forward pass that tests compare against) and `types`
//! (what every layer shares: `DType`, `HostTensor`, `Candidates`).

pub mod api;
pub mod engine;
pub mod error;
pub mod gpu;
pub mod kv;
pub mod model;
pub mod quant;
pub mod reference;
pub mod structured;
pub mod text;
pub mod types;

pub use api::{EngineOptions, Hearth, Prompt};
pub use engine::{
    Embedded, Engine, EngineConfig, EngineHandle, Event, FinishReason, GenerateOptions, Generation,
    Output, Request, RequestId, RequestStream, SamplingParams,
};
pub use error::{HearthError, Result};
pub use model::{Pooling, PoolingType};
