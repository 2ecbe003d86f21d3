//! Draft-model drafting: a smaller (or more coarsely quantized) model with
//! the target's tokenizer proposes the next k tokens by decoding them one at
//! a time; the target then verifies them all in one step.
//!
//! Each sequence keeps its own blocks in the draft model's KV pool
//! ([`DraftCache`]): between proposals only the tokens the draft has not seen
//! (the accepted ones, or the prompt at first) are fed, and what it drafted
//! but the target rejected is rolled back. The draft's steps are batched over
//! all sequences that draft in the same scheduler step.
//!
//! With sampling, each draft is drawn from the draft model's own filtered
//! distribution q, which goes with it to verification (rejection sampling
//! keeps the target's distribution whatever q is). Penalties apply to the
//! target only: the draft may be worse for it, never wrong.

use super::sampling::{Sampler, SamplingParams};
use super::speculative::Draft;
use crate::kv::{BlockTable, KvPool};
use crate::model::forward::{GpuModel, SeqStep};
use crate::text::Tokenizer;
use crate::{HearthError, Result};

/// One sequence's state in the draft model.
pub struct DraftCache {
    table: BlockTable,
    /// Tokens whose K/V the draft's blocks hold, from position 0.
    tokens: Vec<u32>,
    sampler: Sampler,
}

impl DraftCache {
    pub fn new(sampling: &SamplingParams) -> Result<DraftCache> {
        let params = SamplingParams {
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            // Its own stream of draws, still reproducible with the request's seed.
            seed: sampling.seed.map(|s| s ^ 0x9E37_79B9_7F4A_7C15),
            ..sampling.clone()
        };
        Ok(DraftCache {
            table: BlockTable::new(),
            tokens: Vec::new(),
            sampler: Sampler::new(params)?,
        })
    }

    /// Gives the blocks back to the draft's pool; the next proposal starts over.
    pub fn release(&mut self, pool: &mut KvPool) -> Result<()> {
        self.tokens.clear();
        self.table.release(pool)
    }
}

/// Refuses a draft model whose tokenizer differs from the target's: its
/// token ids would mean other text.
pub fn check_tokenizers_match(target: &Tokenizer, draft: &Tokenizer) -> Result<()> {
    let (n, m) = (target.vocab_size(), draft.vocab_size());
    if n != m {
        return Err(HearthError::Config(format!(
            "the draft model's tokenizer does not match the target's: it has {m} tokens, the target's {n}"
        )));
    }
    for id in 0..n as u32 {
        let (a, b) = (target.token_str(id), draft.token_str(id));
        if a != b {
            return Err(HearthError::Config(format!(
                "the draft model's tokenizer does not match the target's: token {id} is {:?} in the target and {:?} in the draft",
                a.unwrap_or_default(),
                b.unwrap_or_default()
            )));
        }
    }
    Ok(())
}

/// One sequence's request for drafts.
pub struct DraftJob<'a> {
    pub cache: &'a mut DraftCache,
    /// Prompt and generated tokens so far.
    pub context: Vec<u32>,
    /// Tokens to draft at most.
    pub k: usize,
}

/// Where a job is in its proposal.
struct Active {
    /// Tokens to feed next (the unseen context, then each new draft).
    pending: Vec<u32>,
    done: bool,
}

/// Drafts up to `job.k` tokens for every job, running the draft model's
/// steps batched over the jobs. Draft ids at or past `target_vocab` end a
/// draft early. A job whose blocks do not fit in the draft's pool, or whose
/// context the draft model cannot hold, gets no draft (and its cache is
/// released), never an error.
pub async fn propose(
    draft: &mut GpuModel,
    pool: &mut KvPool,
    target_vocab: usize,
    jobs: &mut [DraftJob<'_>],
) -> Result<Vec<Draft>> {
    let mut out = vec![Draft::default(); jobs.len()];
    let mut act = Vec::with_capacity(jobs.len());
    for job in jobs.iter_mut() {
        act.push(start(draft, pool, job)?);
    }
    let n_cands = jobs
        .iter()
        .map(|j| j.cache.sampler.params().candidates_needed(0))
        .max()
        .unwrap_or(1);
    let budget = draft.max_step_tokens() as usize;
    let (max_parts, max_rows) = (draft.max_seqs() as usize, draft.logit_capacity() as usize);
    while act.iter().any(|a| !a.done) {
        // (job, tokens fed, wants logits): single tokens first (SeqStep's
        // rule for generated rows), then chunks of unseen context.
        let mut parts: Vec<(usize, usize, bool)> = Vec::new();
        let (mut tokens, mut rows) = (0, 0);
        let mut order: Vec<usize> = (0..act.len()).filter(|&i| !act[i].done).collect();
        order.sort_by_key(|&i| act[i].pending.len() > 1);
        for i in order {
            if parts.len() == max_parts || rows == max_rows || tokens == budget {
                break;
            }
            let n = act[i].pending.len().min(budget - tokens);
            let logits = n == act[i].pending.len();
            tokens += n;
            rows += logits as usize;
            parts.push((i, n, logits));
        }
        let steps: Vec<SeqStep> = parts
            .iter()
            .map(|&(i, n, logits)| SeqStep {
                logit_rows: logits as u32,
                generated: act[i].pending.len() == 1,
                ..SeqStep::new(
                    &act[i].pending[..n],
                    jobs[i].cache.tokens.len() as u32,
                    jobs[i].cache.table.blocks(),
                )
            })
            .collect();
        let mut cands = draft.step(&steps, n_cands).await?.into_iter();
        for (i, n, logits) in parts {
            let job = &mut jobs[i];
            let a = &mut act[i];
            job.cache.tokens.extend(a.pending.drain(..n));
            if !logits {
                continue;
            }
            let c = cands
                .next()
                .ok_or_else(|| HearthError::Gpu("draft step returned too few candidates".into()))?;
            let id = job.cache.sampler.sample(&c);
            if id as usize >= target_vocab {
                a.done = true;
                continue;
            }
            out[i].q.push(job.cache.sampler.distribution(&c));
            out[i].tokens.push(id);
            if out[i].tokens.len() >= job.k {
                a.done = true;
            } else {
                a.pending.push(id);
            }
        }
    }
    // The last draft was never fed: give back the slot reserved for it.
    for job in jobs.iter_mut() {
        let fed = job.cache.tokens.len() as u32;
        job.cache.table.truncate(pool, fed)?;
    }
    Ok(out)
}

/// Rolls the job's cache back to what still matches its context and
/// reserves the slots the proposal will write.
fn start(draft: &GpuModel, pool: &mut KvPool, job: &mut DraftJob<'_>) -> Result<Active> {
    let idle = Active {
        pending: Vec::new(),
        done: true,
    };
    let ctx = &job.context[..];
    let cache = &mut *job.cache;
    if job.k == 0 || ctx.is_empty() {
        return Ok(idle);
    }
    let vocab = draft.config.vocab_size;
    if ctx.len() + job.k > draft.config.max_position_embeddings
        || ctx.iter().any(|&t| t as usize >= vocab)
    {
        cache.release(pool)?;
        return Ok(idle);
    }
    // At least the last context token is fed: its logits give the first draft.
    let common = cache
        .tokens
        .iter()
        .zip(ctx)
        .take_while(|(a, b)| a == b)
        .count()
        .min(ctx.len() - 1);
    cache.tokens.truncate(common);
    cache.table.truncate(pool, common as u32)?;
    // Every draft but the last is fed back.
    let need = (ctx.len() + job.k - 1 - common) as u32;
    if cache.table.append(pool, need).is_err() {
        cache.release(pool)?;
        return Ok(idle);
    }
    Ok(Active {
        pending: ctx[common..].to_vec(),
        done: false,
    })
}
