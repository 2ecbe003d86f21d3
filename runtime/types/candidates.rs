//! What the GPU's top-K pass hands the sampler: the model produces it, the
//! engine consumes it, so it lives below both.

/// Most candidates the GPU returns per row.
pub const MAX_CANDIDATES: usize = 256;

/// One row's candidates as the GPU returns them: best first.
#[derive(Debug, Clone, Default)]
pub struct Candidates {
    pub ids: Vec<u32>,
    pub logits: Vec<f32>,
    /// log(sum(exp(logit))) over the whole vocabulary (after penalties).
    pub logsumexp: f32,
}

impl Candidates {
    /// Natural-log probability of candidate `i` under the full softmax.
    pub fn logprob(&self, i: usize) -> f32 {
        self.logits[i] - self.logsumexp
    }
}
