//! Requests, sampling and the generation loop.

pub mod generate;
pub mod perplexity;
pub mod sampling;
pub mod scheduler;
pub mod sequence;
pub mod speculative;

pub use generate::{generate, FinishReason, GenerateOptions, Generation, TokenEvent};
pub use perplexity::{perplexity, PerplexityResult};
pub use sampling::{Candidates, Sampler, SamplingParams};
pub use speculative::{Drafting, SpecOptions, SpecStats};
