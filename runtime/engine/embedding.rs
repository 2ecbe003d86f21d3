//! One embedding request's pooling across the steps its prompt takes: which
//! rows of each prefill chunk the GPU sums, the running sum, and the vector
//! it ends as (divided for the mean, L2-normalized when the model says so).

use super::llm_engine::Engine;
use super::output::{Output, RequestId};
use super::request::Request;
use crate::api::Prompt;
use crate::model::{Pooling, PoolingType};
use crate::{HearthError, Result};

/// One input's embedding, as [`Engine::embed`] returns it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Embedded {
    pub embedding: Vec<f32>,
    pub prompt_tokens: usize,
}

impl Engine {
    /// Embeds every input (text or ids) as one batch through the engine
    /// and waits for them; in input order. Fails with the first input's
    /// error, aborting the rest. Other requests in the engine advance
    /// meanwhile; their outputs wait for the next `step`.
    pub async fn embed(&mut self, inputs: &[Prompt]) -> Result<Vec<Embedded>> {
        let mut ids: Vec<RequestId> = Vec::with_capacity(inputs.len());
        let mut out: Vec<Option<Embedded>> = vec![None; inputs.len()];
        let mut added = Ok(());
        for p in inputs {
            match self.add_request(Request::embedding(p.clone())) {
                Ok((id, n)) => {
                    ids.push(id);
                    out[ids.len() - 1] = Some(Embedded {
                        embedding: Vec::new(),
                        prompt_tokens: n,
                    });
                }
                Err(e) => {
                    added = Err(e);
                    break;
                }
            }
        }
        if let Err(e) = added {
            for &id in &ids {
                self.abort(id);
            }
            self.drain(&ids).await;
            return Err(e);
        }
        let mut open = ids.len();
        while open > 0 {
            for o in self.step().await {
                let Some(i) = ids.iter().position(|&id| id == o.request()) else {
                    self.stash.push(o);
                    continue;
                };
                match o {
                    Output::Embedding { embedding, .. } => {
                        if let Some(e) = out[i].as_mut() {
                            e.embedding = embedding;
                        }
                    }
                    Output::Finished { .. } => open -= 1,
                    Output::Failed { error, .. } => {
                        for &id in &ids {
                            self.abort(id);
                        }
                        self.drain(&ids).await;
                        return Err(error);
                    }
                    Output::Token { .. } => {}
                }
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// [`Engine::embed`], waiting for the GPU on this thread.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn embed_blocking(&mut self, inputs: &[Prompt]) -> Result<Vec<Embedded>> {
        pollster::block_on(self.embed(inputs))
    }

    /// Steps until the aborted `ids` are retired, keeping others' outputs.
    async fn drain(&mut self, ids: &[RequestId]) {
        while self.is_active(ids) && self.has_work() {
            let outs = self.step().await;
            self.stash
                .extend(outs.into_iter().filter(|o| !ids.contains(&o.request())));
        }
    }
}

/// The pooling a request gets: `forced` (the engine's override) or the
/// model's own; an error says why a model cannot embed.
pub fn resolve_pooling(declared: Option<Pooling>, forced: Option<PoolingType>) -> Result<Pooling> {
    let p = match (forced, declared) {
        // Normalized unless the model says otherwise, as llama.cpp does.
        (Some(kind), d) => Pooling {
            kind,
            normalize: d.is_none_or(|d| d.normalize),
        },
        (None, Some(d)) => d,
        (None, None) => {
            return Err(HearthError::Unsupported(
                "the model declares no pooling, so it is not an embedding model (GGUF \
                 `pooling_type`, or a sentence-transformers Pooling module); choose one to \
                 embed with it anyway (`--pooling mean|cls|last`)"
                    .into(),
            ))
        }
    };
    if p.kind == PoolingType::Rank {
        return Err(HearthError::Unsupported(
            "the model declares `rank` pooling (a reranker's score head), which Hearth does \
             not run; `--pooling mean|cls|last` embeds with it anyway"
                .into(),
        ));
    }
    Ok(p)
}

/// The pooled state of one embedding sequence.
#[derive(Debug, Clone)]
pub struct PoolState {
    pooling: Pooling,
    sum: Vec<f32>,
    /// Rows added to `sum` so far.
    rows: usize,
}

impl PoolState {
    pub fn new(pooling: Pooling) -> PoolState {
        PoolState {
            pooling,
            sum: Vec::new(),
            rows: 0,
        }
    }

    /// Rows (first, count) of the chunk of prompt positions `start..end`
    /// that the pooling needs summed; `None` when it needs none of them.
    pub fn rows_of_chunk(&self, start: usize, end: usize, prompt_len: usize) -> Option<(u32, u32)> {
        let n = (end - start) as u32;
        match self.pooling.kind {
            PoolingType::Mean => Some((0, n)),
            PoolingType::Cls => (start == 0).then_some((0, 1)),
            PoolingType::Last | PoolingType::Rank => (end == prompt_len).then_some((n - 1, 1)),
        }
    }

    /// Adds the GPU's sum of `rows` rows.
    pub fn add(&mut self, sum: &[f32], rows: u32) {
        if self.sum.is_empty() {
            self.sum = sum.to_vec();
        } else {
            for (a, b) in self.sum.iter_mut().zip(sum) {
                *a += b;
            }
        }
        self.rows += rows as usize;
    }

    /// Forgets the sums (the sequence was preempted and starts over).
    pub fn reset(&mut self) {
        self.sum.clear();
        self.rows = 0;
    }

    /// The embedding, once every row the pooling needs was added.
    pub fn finish(&self) -> Vec<f32> {
        let mut v = self.sum.clone();
        if self.rows > 1 {
            let n = self.rows as f32;
            v.iter_mut().for_each(|x| *x /= n);
        }
        if self.pooling.normalize {
            l2_normalize(&mut v);
        }
        v
    }
}

/// Scales `v` to unit length (a zero vector stays zero), as
/// `torch.nn.functional.normalize` does.
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    let scale = 1.0 / norm.max(1e-12);
    v.iter_mut().for_each(|x| *x = (*x as f64 * scale) as f32);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(kind: PoolingType, normalize: bool) -> PoolState {
        PoolState::new(Pooling { kind, normalize })
    }

    #[test]
    fn chunks_pick_the_rows_each_pooling_needs() {
        let mean = state(PoolingType::Mean, false);
        assert_eq!(mean.rows_of_chunk(0, 4, 10), Some((0, 4)));
        assert_eq!(mean.rows_of_chunk(8, 10, 10), Some((0, 2)));
        let cls = state(PoolingType::Cls, false);
        assert_eq!(cls.rows_of_chunk(0, 4, 10), Some((0, 1)));
        assert_eq!(cls.rows_of_chunk(4, 8, 10), None);
        let last = state(PoolingType::Last, true);
        assert_eq!(last.rows_of_chunk(0, 4, 10), None);
        assert_eq!(last.rows_of_chunk(4, 10, 10), Some((5, 1)));
    }

    #[test]
    fn mean_over_chunks_then_normalized() {
        let mut s = state(PoolingType::Mean, true);
        s.add(&[1.0, 2.0], 2);
        s.add(&[5.0, 2.0], 2);
        // mean (1.5, 1.0), unit length.
        let v = s.finish();
        let n = (1.5f32 * 1.5 + 1.0).sqrt();
        assert!((v[0] - 1.5 / n).abs() < 1e-6 && (v[1] - 1.0 / n).abs() < 1e-6);
        s.reset();
        s.add(&[3.0, 4.0], 1);
        assert_eq!(s.finish(), [0.6, 0.8]);
        let mut z = [0.0f32; 3];
        l2_normalize(&mut z);
        assert_eq!(z, [0.0; 3]);
    }

    #[test]
    fn pooling_comes_from_the_model_or_the_override() {
        let mean = Pooling {
            kind: PoolingType::Mean,
            normalize: false,
        };
        assert_eq!(resolve_pooling(Some(mean), None).unwrap(), mean);
        let forced = resolve_pooling(Some(mean), Some(PoolingType::Last)).unwrap();
        assert_eq!((forced.kind, forced.normalize), (PoolingType::Last, false));
        assert!(
            resolve_pooling(None, Some(PoolingType::Cls))
                .unwrap()
                .normalize
        );
        let none = resolve_pooling(None, None).unwrap_err().to_string();
        assert!(none.contains("declares no pooling"), "{none}");
        let rank = Pooling {
            kind: PoolingType::Rank,
            normalize: true,
        };
        assert!(resolve_pooling(Some(rank), None)
            .unwrap_err()
            .to_string()
            .contains("rank"));
        assert_eq!(
            resolve_pooling(Some(rank), Some(PoolingType::Mean))
                .unwrap()
                .kind,
            PoolingType::Mean
        );
    }
}
