//! Requests, sampling and the generation loop.

pub mod sampling;

pub use sampling::{Candidates, Sampler, SamplingParams};
