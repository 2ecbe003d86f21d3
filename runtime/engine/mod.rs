//! Requests, sampling and the generation loop.

pub mod generate;
pub mod sampling;
pub mod scheduler;
pub mod sequence;

pub use generate::{generate, FinishReason, GenerateOptions, Generation, TokenEvent};
pub use sampling::{Candidates, Sampler, SamplingParams};
