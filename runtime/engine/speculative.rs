//! Speculative decoding: a drafter proposes the next few tokens, the target
//! model scores them all in one step (one generated-token row each, so each
//! row's logits are the ones plain decoding would compute), and the longest
//! prefix that verification keeps is accepted, plus one token sampled from
//! the first row that disagreed. Greedy output is therefore identical to
//! plain decoding; sampled output keeps the target distribution (see
//! [`super::sampling::Sampler::sample_with_draft`]).
//!
//! Two drafters: prompt lookup, where the longest recent n-gram that ends
//! the sequence and occurred before proposes what followed it then (no
//! second model; pays off when the answer repeats its input: rewrites, code
//! edits, quoting), and a draft model with the target's tokenizer
//! ([`super::draft_model`]).

use super::draft_model::DraftCache;
use super::sampling::SamplingParams;
use crate::kv::KvPool;
use crate::Result;

/// How a request drafts tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Drafting {
    #[default]
    Off,
    /// Prompt lookup in the sequence's own tokens.
    Ngram,
    /// The draft model loaded beside the target (`--draft-model`).
    Model,
}

impl Drafting {
    /// By the name the CLI, the server and the web options use.
    pub fn parse(s: &str) -> Option<Drafting> {
        match s {
            "off" => Some(Drafting::Off),
            "ngram" => Some(Drafting::Ngram),
            "model" => Some(Drafting::Model),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecOptions {
    pub drafting: Drafting,
    /// Most tokens drafted per step (k adapts below it).
    pub max_draft: usize,
    /// Longest n-gram the lookup matches.
    pub max_ngram: usize,
}

impl Default for SpecOptions {
    fn default() -> Self {
        SpecOptions {
            drafting: Drafting::Off,
            max_draft: 7,
            max_ngram: 3,
        }
    }
}

impl SpecOptions {
    pub fn ngram() -> Self {
        SpecOptions {
            drafting: Drafting::Ngram,
            ..Default::default()
        }
    }

    pub fn model() -> Self {
        SpecOptions {
            drafting: Drafting::Model,
            ..Default::default()
        }
    }

    pub fn enabled(&self) -> bool {
        self.drafting != Drafting::Off && self.max_draft > 0
    }
}

/// Drafted and accepted token counts (acceptance rate = accepted / drafted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SpecStats {
    pub drafted: u64,
    pub accepted: u64,
    /// Verification steps that carried at least one draft.
    pub steps: u64,
}

impl SpecStats {
    pub fn acceptance_rate(&self) -> Option<f64> {
        (self.drafted > 0).then(|| self.accepted as f64 / self.drafted as f64)
    }

    pub fn add(&mut self, o: &SpecStats) {
        self.drafted += o.drafted;
        self.accepted += o.accepted;
        self.steps += o.steps;
    }
}

/// Drafted tokens, to be verified by the target.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Draft {
    pub tokens: Vec<u32>,
    /// The distribution each token was drawn from (`(token, probability)`),
    /// for rejection sampling; empty for a deterministic drafter.
    pub q: Vec<Vec<(u32, f64)>>,
}

impl Draft {
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn truncate(&mut self, n: usize) {
        self.tokens.truncate(n);
        self.q.truncate(n);
    }

    pub fn clear(&mut self) {
        self.truncate(0);
    }
}

/// One sequence's drafter: the adaptive draft length, its counts and, with
/// a draft model, the sequence's cache there.
pub struct Speculator {
    opts: SpecOptions,
    /// Tokens to draft next time.
    k: usize,
    pub stats: SpecStats,
    /// Draft-model drafting: this sequence's blocks in the draft model.
    pub cache: Option<DraftCache>,
    /// Drafts made ahead of the step that verifies them (draft model).
    pub pending: Option<Draft>,
}

impl Speculator {
    /// `None` when the options turn drafting off.
    pub fn new(opts: SpecOptions, sampling: &SamplingParams) -> Result<Option<Speculator>> {
        if !opts.enabled() {
            return Ok(None);
        }
        let cache = match opts.drafting {
            Drafting::Model => Some(DraftCache::new(sampling)?),
            _ => None,
        };
        Ok(Some(Speculator {
            opts,
            k: opts.max_draft.clamp(1, 4),
            stats: SpecStats::default(),
            cache,
            pending: None,
        }))
    }

    pub fn uses_model(&self) -> bool {
        self.opts.drafting == Drafting::Model
    }

    /// Tokens the next proposal drafts at most.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Drafts up to `limit` (and the adaptive k) tokens to follow `context`:
    /// by lookup, or the draft model's drafts made ahead (see [`Self::pending`]).
    pub fn propose(&mut self, context: &[u32], limit: usize) -> Draft {
        let k = self.k.min(limit);
        let mut d = match self.opts.drafting {
            Drafting::Off => Draft::default(),
            Drafting::Ngram => Draft {
                tokens: ngram_draft(context, k, self.opts.max_ngram),
                q: Vec::new(),
            },
            Drafting::Model => self.pending.take().unwrap_or_default(),
        };
        d.truncate(k);
        d
    }

    /// Gives the sequence's draft-model blocks back (it ended or was preempted).
    pub fn release(&mut self, draft_pool: Option<&mut KvPool>) -> Result<()> {
        self.pending = None;
        match (self.cache.as_mut(), draft_pool) {
            (Some(c), Some(pool)) => c.release(pool),
            _ => Ok(()),
        }
    }

    /// Counts a verification and adapts k: all accepted → draft more next
    /// time; otherwise draft what was accepted, plus one.
    pub fn record(&mut self, drafted: usize, accepted: usize) {
        if drafted == 0 {
            return;
        }
        self.stats.drafted += drafted as u64;
        self.stats.accepted += accepted as u64;
        self.stats.steps += 1;
        self.k = if accepted == drafted {
            (self.k + 2).min(self.opts.max_draft)
        } else {
            (accepted + 1).min(self.opts.max_draft)
        }
        .max(1);
    }
}

/// Prompt lookup: for n from `max_n` down to 1, finds the most recent
/// earlier occurrence of the last n tokens and returns up to `k` tokens that
/// followed it. Empty when nothing matches.
pub fn ngram_draft(context: &[u32], k: usize, max_n: usize) -> Vec<u32> {
    let len = context.len();
    if k == 0 || len < 2 {
        return Vec::new();
    }
    for n in (1..=max_n.min(len - 1)).rev() {
        let pattern = &context[len - n..];
        // Occurrences that end before the suffix itself, most recent first.
        for start in (0..len - n).rev() {
            if &context[start..start + n] == pattern {
                let from = start + n;
                let to = (from + k).min(len);
                if to > from {
                    return context[from..to].to_vec();
                }
            }
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ngram_prefers_longest_most_recent_match() {
        // "1 2 3" occurred twice; the longest match (n=3) at the later one wins.
        let ctx = [1, 2, 3, 9, 1, 2, 3, 7, 8, 5, 1, 2, 3];
        assert_eq!(ngram_draft(&ctx, 3, 3), vec![7, 8, 5]);
        assert_eq!(ngram_draft(&ctx, 10, 3), vec![7, 8, 5, 1, 2, 3]);
        // Only a 1-gram matches.
        assert_eq!(ngram_draft(&[4, 5, 6, 5], 2, 3), vec![6, 5]);
        assert!(ngram_draft(&[1, 2, 3], 4, 3).is_empty());
        assert!(ngram_draft(&[1, 1], 0, 3).is_empty());
    }

    #[test]
    fn k_adapts_to_acceptance() {
        let g = SamplingParams::greedy();
        let mut s = Speculator::new(SpecOptions::ngram(), &g).unwrap().unwrap();
        assert_eq!(s.k, 4);
        s.record(4, 4);
        assert_eq!(s.k, 6);
        s.record(6, 6);
        assert_eq!(s.k, 7);
        s.record(7, 2);
        assert_eq!(s.k, 3);
        s.record(3, 0);
        assert_eq!(s.k, 1);
        assert_eq!(s.stats.drafted, 20);
        assert_eq!(s.stats.accepted, 12);
        assert!(Speculator::new(SpecOptions::default(), &g)
            .unwrap()
            .is_none());
    }
}
