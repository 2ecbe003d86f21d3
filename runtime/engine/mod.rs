//! Requests, sampling and the generation loop.

pub mod draft_model;
pub mod generate;
pub mod perplexity;
pub mod sampling;
pub mod scheduler;
pub mod sequence;
pub mod speculative;

pub use generate::{generate, FinishReason, GenerateOptions, Generation, TokenEvent};
pub use perplexity::{perplexity, top1_agreement, PerplexityResult};
pub use sampling::{Candidates, Sampler, SamplingParams};
pub use speculative::{Draft, Drafting, SpecOptions, SpecStats};
