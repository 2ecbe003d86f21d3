//! The engine ([`Engine`]: requests, continuous batching, sampling,
//! speculative decoding) and its async handle ([`handle`]).

pub mod draft_model;
pub mod embedding;
pub mod handle;
pub mod llm_engine;
pub mod output;
pub mod perplexity;
pub mod prepare;
pub mod request;
pub mod sampling;
pub mod scheduler;
pub mod sequence;
pub mod speculative;

pub use embedding::Embedded;
#[cfg(not(target_arch = "wasm32"))]
pub use handle::EngineThread;
pub use handle::{EngineHandle, EngineInfo, Event, RequestStream, DEFAULT_PENDING_SUBMITS};
pub use llm_engine::{Engine, EngineConfig};
pub use output::{EngineStats, Finish, Generation, Output, RequestId, Token, TokenEvent};
pub use perplexity::{perplexity, top1_agreement, PerplexityResult};
pub use prepare::Preparer;
pub use request::{FinishReason, GenerateOptions, Request, DEFAULT_MAX_TOKENS};
pub use sampling::{Candidates, Sampler, SamplingParams};
pub use speculative::{Draft, Drafting, SpecOptions, SpecStats};
