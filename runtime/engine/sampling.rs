//! Token selection from the GPU's top-K candidates.
//!
//! The GPU applies penalties and returns, per row, the K best (id, logit)
//! pairs plus the log-sum-exp of the whole row; only those few bytes come
//! back. Temperature, top-k, top-p and min-p then act on the candidates. The
//! candidate list is capped at [`MAX_CANDIDATES`]: with top-k off, tokens
//! ranked below that are never drawn (their combined mass is negligible for
//! trained models at usual temperatures; documented in the README).

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use crate::types::{Candidates, MAX_CANDIDATES};
use crate::{HearthError, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 means off (then [`MAX_CANDIDATES`] bound the draw).
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    /// HF semantics: > 1 discourages tokens already in the prompt or output.
    pub repetition_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// Same seed, same tokens. `None` draws a seed from the clock.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        Self::default()
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, message: String| {
            Err(HearthError::InvalidField {
                field: field.to_string(),
                message,
            })
        };
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(
                "temperature",
                format!("must be >= 0, got {}", self.temperature),
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", format!("must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", format!("must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad(
                "repetition_penalty",
                format!("must be > 0, got {}", self.repetition_penalty),
            );
        }
        if !self.presence_penalty.is_finite() {
            return bad("presence_penalty", "must be finite".into());
        }
        if !self.frequency_penalty.is_finite() {
            return bad("frequency_penalty", "must be finite".into());
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }

    pub fn has_penalties(&self) -> bool {
        self.repetition_penalty != 1.0
            || self.presence_penalty != 0.0
            || self.frequency_penalty != 0.0
    }

    /// How many candidates the GPU must return for this request (`logprobs` included).
    pub fn candidates_needed(&self, logprobs: usize) -> usize {
        let k = if self.is_greedy() {
            1
        } else if self.top_k > 0 {
            self.top_k
        } else {
            MAX_CANDIDATES
        };
        k.max(logprobs).clamp(1, MAX_CANDIDATES)
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Sampler> {
        params.validate()?;
        let seed = params.seed.unwrap_or_else(clock_seed);
        Ok(Sampler {
            rng: ChaCha8Rng::seed_from_u64(seed),
            params,
        })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks a token from `c` (sorted best first, non-empty).
    pub fn sample(&mut self, c: &Candidates) -> u32 {
        if self.params.is_greedy() || c.ids.len() == 1 {
            return c.ids[0];
        }
        let probs = self.support(c);
        let mass: f64 = probs.iter().sum();
        let r = self.rng.random::<f64>() * mass;
        draw(&c.ids, &probs, r)
    }

    /// The distribution [`Sampler::sample`] draws from: `(token, probability)`
    /// over the candidates that survive the filters, summing to 1.
    pub fn distribution(&self, c: &Candidates) -> Vec<(u32, f64)> {
        if self.params.is_greedy() || c.ids.len() == 1 {
            return vec![(c.ids[0], 1.0)];
        }
        let probs = self.support(c);
        let mass: f64 = probs.iter().sum();
        c.ids
            .iter()
            .zip(probs)
            .map(|(&t, x)| (t, x / mass))
            .collect()
    }

    /// Speculative verification of `draft`, drawn by the drafter from `q`
    /// (`None`: a deterministic drafter such as n-gram lookup, q = 1 at the
    /// draft). Accepts it with probability min(1, p/q), else draws from the
    /// residual max(0, p − q) normalised, so the token is distributed exactly
    /// as [`Sampler::sample`]'s (Leviathan et al., 2023). Greedy: the best
    /// candidate, as `sample`.
    pub fn sample_with_draft(
        &mut self,
        c: &Candidates,
        draft: u32,
        q: Option<&[(u32, f64)]>,
    ) -> u32 {
        if self.params.is_greedy() || c.ids.len() == 1 {
            return c.ids[0];
        }
        let one_hot = [(draft, 1.0)];
        let q: HashMap<u32, f64> = q.unwrap_or(&one_hot).iter().copied().collect();
        let p = self.distribution(c);
        let p_draft = p.iter().find(|e| e.0 == draft).map_or(0.0, |e| e.1);
        let q_draft = q.get(&draft).copied().unwrap_or(0.0);
        if p_draft > 0.0 && q_draft > 0.0 && self.rng.random::<f64>() * q_draft < p_draft {
            return draft;
        }
        let residual: Vec<f64> = p
            .iter()
            .map(|&(t, x)| (x - q.get(&t).copied().unwrap_or(0.0)).max(0.0))
            .collect();
        let ids: Vec<u32> = p.iter().map(|e| e.0).collect();
        let rest: f64 = residual.iter().sum();
        if rest <= 0.0 {
            // p == q up to rounding: rejection had probability ~0.
            let r = self.rng.random::<f64>();
            let probs: Vec<f64> = p.iter().map(|e| e.1).collect();
            return draw(&ids, &probs, r);
        }
        let r = self.rng.random::<f64>() * rest;
        draw(&ids, &residual, r)
    }

    /// Unnormalised probabilities of the leading candidates that temperature,
    /// top-k, min-p and top-p leave (at least one).
    fn support(&self, c: &Candidates) -> Vec<f64> {
        let p = &self.params;
        let k = if p.top_k > 0 {
            p.top_k.min(c.ids.len())
        } else {
            c.ids.len()
        };
        let inv_t = 1.0 / p.temperature as f64;
        let top = c.logits[0] as f64;
        let mut probs: Vec<f64> = c.logits[..k]
            .iter()
            .map(|&l| ((l as f64 - top) * inv_t).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= total);
        // min-p: drop tokens below min_p x the best token's probability.
        let mut keep = k;
        if p.min_p > 0.0 {
            let floor = probs[0] * p.min_p as f64;
            keep = probs.iter().take_while(|&&x| x >= floor).count().max(1);
        }
        // top-p: smallest prefix whose mass reaches top_p.
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let mut n = 0;
            for &x in &probs[..keep] {
                acc += x;
                n += 1;
                if acc >= p.top_p as f64 {
                    break;
                }
            }
            keep = n.max(1);
        }
        probs.truncate(keep);
        probs
    }
}

/// The candidate where `r` (in `[0, sum of probs)`) falls.
fn draw(ids: &[u32], probs: &[f64], mut r: f64) -> u32 {
    let mut last = 0;
    for (i, &x) in probs.iter().enumerate() {
        if r < x {
            return ids[i];
        }
        if x > 0.0 {
            last = i;
        }
        r -= x;
    }
    ids[last]
}

fn clock_seed() -> u64 {
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed)
    }
    #[cfg(target_arch = "wasm32")]
    {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b)
            .map(|_| u64::from_le_bytes(b))
            .unwrap_or(0x5eed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(logits: &[f32]) -> Candidates {
        Candidates {
            ids: (0..logits.len() as u32).map(|i| i + 100).collect(),
            logits: logits.to_vec(),
            logsumexp: 0.0,
        }
    }

    fn params(t: f32) -> SamplingParams {
        SamplingParams {
            temperature: t,
            seed: Some(7),
            ..Default::default()
        }
    }

    #[test]
    fn greedy_takes_first() {
        let mut s = Sampler::new(params(0.0)).unwrap();
        assert_eq!(s.sample(&cands(&[3.0, 2.0, 1.0])), 100);
    }

    #[test]
    fn same_seed_same_tokens() {
        let c = cands(&[1.0, 0.9, 0.8, 0.7, 0.6]);
        let run = || {
            let mut s = Sampler::new(params(1.0)).unwrap();
            (0..50).map(|_| s.sample(&c)).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
        assert!(run().iter().collect::<std::collections::HashSet<_>>().len() > 1);
    }

    /// Draws 40 000 tokens (ids 100..) and checks each one's frequency within 0.01.
    fn assert_frequencies(mut draw: impl FnMut() -> u32, want: &[f64], what: &str) {
        let mut counts = vec![0usize; want.len()];
        let n = 40_000;
        for _ in 0..n {
            counts[(draw() - 100) as usize] += 1;
        }
        for (i, (&c, &w)) in counts.iter().zip(want).enumerate() {
            let got = c as f64 / n as f64;
            assert!((got - w).abs() < 0.01, "{what}token {i}: {got} vs {w}");
        }
    }

    #[test]
    fn frequencies_follow_softmax() {
        let logits = [0.0f32, (0.5f32).ln(), (0.25f32).ln()];
        let mut s = Sampler::new(params(1.0)).unwrap();
        let c = cands(&logits);
        assert_frequencies(|| s.sample(&c), &[4.0 / 7.0, 2.0 / 7.0, 1.0 / 7.0], "");
    }

    #[test]
    fn top_k_top_p_min_p_restrict_support() {
        let c = cands(&[2.0, 1.9, 1.8, -5.0, -6.0]);
        let mut p = params(1.0);
        p.top_k = 2;
        let mut s = Sampler::new(p).unwrap();
        assert!((0..500).all(|_| s.sample(&c) < 102));
        let mut p = params(1.0);
        p.top_p = 0.3;
        let mut s = Sampler::new(p).unwrap();
        assert!((0..500).all(|_| s.sample(&c) < 102));
        let mut p = params(1.0);
        p.min_p = 0.1;
        let mut s = Sampler::new(p).unwrap();
        assert!((0..500).all(|_| s.sample(&c) < 103));
    }

    /// Four candidates with probabilities 8:4:2:1, top-k 3, and the
    /// distribution plain sampling gives them.
    fn top3_of_four() -> (Candidates, SamplingParams, [f64; 4]) {
        let logits = [0.0f32, (0.5f32).ln(), (0.25f32).ln(), (0.125f32).ln()];
        let mut p = params(1.0);
        p.top_k = 3;
        (cands(&logits), p, [4.0 / 7.0, 2.0 / 7.0, 1.0 / 7.0, 0.0])
    }

    /// Rejection sampling against a deterministic draft must leave the
    /// distribution as plain sampling has it, whichever token is drafted
    /// (likely, unlikely, or outside the top-k support).
    #[test]
    fn draft_verification_keeps_distribution() {
        let (c, p, want) = top3_of_four();
        for draft in [100u32, 101, 102, 103] {
            let mut s = Sampler::new(p.clone()).unwrap();
            let what = format!("draft {draft}, ");
            assert_frequencies(|| s.sample_with_draft(&c, draft, None), &want, &what);
        }
        let mut g = Sampler::new(params(0.0)).unwrap();
        assert_eq!(g.sample_with_draft(&c, 102, None), 100);
    }

    /// With a draft model the draft is drawn from the drafter's own
    /// distribution q; verification must still give the target's p, for a
    /// q that overrates, underrates, and puts mass outside p's support.
    #[test]
    fn model_draft_verification_keeps_distribution() {
        let (c, p, want) = top3_of_four();
        for q in [
            vec![(100u32, 0.1), (101, 0.6), (102, 0.1), (103, 0.2)],
            vec![(102u32, 1.0)],
            vec![(100u32, 4.0 / 7.0), (101, 2.0 / 7.0), (102, 1.0 / 7.0)],
        ] {
            let mut s = Sampler::new(p.clone()).unwrap();
            let mut drafter = ChaCha8Rng::seed_from_u64(11);
            let ids: Vec<u32> = q.iter().map(|e| e.0).collect();
            let probs: Vec<f64> = q.iter().map(|e| e.1).collect();
            let what = format!("q {q:?}, ");
            assert_frequencies(
                || {
                    let d = draw(&ids, &probs, drafter.random::<f64>());
                    s.sample_with_draft(&c, d, Some(&q))
                },
                &want,
                &what,
            );
        }
    }

    #[test]
    fn distribution_is_what_sample_draws() {
        let c = cands(&[0.0, (0.5f32).ln(), (0.25f32).ln()]);
        let s = Sampler::new(params(1.0)).unwrap();
        let d = s.distribution(&c);
        for (got, want) in d.iter().zip([4.0 / 7.0, 2.0 / 7.0, 1.0 / 7.0]) {
            assert!((got.1 - want).abs() < 1e-9, "{d:?}");
        }
        let g = Sampler::new(params(0.0)).unwrap();
        assert_eq!(g.distribution(&c), vec![(100, 1.0)]);
    }

    #[test]
    fn invalid_params_rejected() {
        for p in [
            SamplingParams {
                temperature: -1.0,
                ..Default::default()
            },
            SamplingParams {
                top_p: 0.0,
                ..Default::default()
            },
            SamplingParams {
                min_p: 2.0,
                ..Default::default()
            },
            SamplingParams {
                repetition_penalty: 0.0,
                ..Default::default()
            },
        ] {
            assert!(matches!(
                Sampler::new(p),
                Err(HearthError::InvalidField { .. })
            ));
        }
    }
}
