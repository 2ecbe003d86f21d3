//! Paged KV cache: a pool of fixed-size blocks shared by all sequences
//! ([`pool`]), one block table per sequence ([`block_table`]), the per-layer
//! GPU buffers ([`gpu`], native and wasm) and a CPU reference of paged
//! attention ([`reference`]) that the reference forward pass and the tests use.
//! K/V are stored as f16, f32, or quantized to 8/4 bits per head row
//! ([`dtype`], with the CPU form of the layouts in [`quant`]).
//! Full blocks can be shared between sequences through the prefix cache
//! ([`prefix_cache`]).

pub mod block_table;
pub mod dtype;
pub mod gpu;
pub mod pool;
pub mod prefix_cache;
pub mod quant;
pub mod reference;

pub use block_table::BlockTable;
pub use dtype::KvDtype;
pub use gpu::KvBuffers;
pub use pool::{KvLayout, KvPool};
pub use prefix_cache::PrefixStats;

/// Default tokens per block.
pub const DEFAULT_BLOCK_SIZE: u32 = 16;
