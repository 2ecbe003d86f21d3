//! Continuous batching: many sequences share the paged KV pool and every
//! step re-forms the batch from the decode tokens of all running sequences
//! plus chunks of waiting prompts under a per-step token budget (chunked
//! prefill), so a long prompt never stalls the others' decoding.
//!
//! Admission is first come, first served, by free KV blocks above a
//! watermark. When blocks run out mid-generation the newest sequence is
//! preempted: its blocks are freed and it is recomputed later from its
//! prompt and the tokens it already produced (its sampler state is kept, so
//! its output is the one it would have had). Because the forward pass is
//! batch-invariant (see `GpuModel::step`), a sequence's tokens do not depend
//! on what it was batched with.
//!
//! With prefix caching on, every full block a sequence computes is
//! registered in the pool's prefix cache, and an admitted sequence starts
//! from the longest chain of cached blocks that matches its tokens.

use std::collections::VecDeque;

use super::draft_model::{self, DraftJob};
use super::embedding::PoolState;
use super::request::{FinishReason, GenerateOptions};
use super::sequence::{check_embedding, check_request, with_penalties, Accepted, SeqOutput};
use super::speculative::{Draft, SpecStats, Speculator};
use crate::kv::prefix_cache::{block_hash, ROOT_HASH};
use crate::kv::{BlockTable, KvPool};
use crate::model::forward::{GpuModel, SeqStep};
use crate::model::Pooling;
use crate::structured::ConstraintState;
use crate::text::Tokenizer;
use crate::{HearthError, Result};

/// The scheduler's id of one sequence (one choice of a request).
pub type SeqId = u64;

#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Free blocks kept in reserve when admitting a new sequence, so running
    /// ones can keep growing without immediate preemption.
    pub watermark_blocks: u32,
    /// Share full KV blocks between sequences with the same prefix.
    pub prefix_caching: bool,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            watermark_blocks: 1,
            prefix_caching: true,
        }
    }
}

/// What a step produced for one request.
#[derive(Debug, Clone)]
pub enum SeqEvent {
    Token(SeqId, Accepted),
    /// An embedding sequence's pooled vector; its `Finished` follows.
    Embedding(SeqId, Vec<f32>),
    /// The request is over; its blocks are back in the pool.
    Finished {
        id: SeqId,
        reason: FinishReason,
        prompt_tokens: usize,
        /// Prompt tokens the prefix cache served at admission.
        cached_tokens: usize,
        completion_tokens: usize,
        /// Drafted and accepted tokens (speculative decoding).
        spec: SpecStats,
    },
    /// The sequence failed on its own (its constraint or its text broke);
    /// its blocks are back in the pool and the rest of the batch goes on.
    Failed {
        id: SeqId,
        error: HearthError,
    },
}

struct Seq {
    id: SeqId,
    prompt: Vec<u32>,
    out: SeqOutput,
    table: BlockTable,
    /// Positions whose K/V are in the cache.
    computed: usize,
    /// Prefix-cache hashes of the table's first full blocks (the chain so far).
    hashes: Vec<u64>,
    /// Counted in the prefix-cache hit rate already (first admission only).
    queried: bool,
    /// Prompt tokens whose K/V the prefix cache served at first admission
    /// (a preempted sequence's recomputation does not change it).
    cached_tokens: usize,
    cancelled: bool,
    /// Why the sequence failed alone; it is retired at the next chance.
    failed: Option<HearthError>,
    spec: Option<Speculator>,
    /// An embedding: the prompt is pooled instead of generated from.
    embed: Option<PoolState>,
}

impl Seq {
    /// Prompt plus generated tokens: everything that must be in the cache
    /// before the next token can be sampled (the last one is fed next).
    fn known(&self) -> usize {
        self.prompt.len() + self.out.ids.len()
    }

    fn token(&self, pos: usize) -> u32 {
        if pos < self.prompt.len() {
            self.prompt[pos]
        } else {
            self.out.ids[pos - self.prompt.len()]
        }
    }

    /// Tokens of logical block `j` and how many of them are prompt rows:
    /// the prefix-cache key of the block's contents.
    fn block_content(&self, j: usize, bs: usize) -> (Vec<u32>, u32) {
        let (a, b) = (j * bs, (j + 1) * bs);
        let prompt_rows = self.prompt.len().clamp(a, b) - a;
        ((a..b).map(|p| self.token(p)).collect(), prompt_rows as u32)
    }

    /// Cached blocks this sequence could start from, with their hashes. At
    /// least one token is left to compute, since the next token's logits
    /// come from it.
    fn cached_prefix(&self, pool: &KvPool) -> Vec<(u32, u64)> {
        if self.embed.is_some() {
            // Pooling reads the hidden states of the rows it computes.
            return Vec::new();
        }
        let bs = pool.block_size() as usize;
        let mut found = Vec::new();
        let mut parent = ROOT_HASH;
        for j in 0..(self.known() - 1) / bs {
            let (tokens, rows) = self.block_content(j, bs);
            let Some(b) = pool.find_cached(parent, &tokens, rows) else {
                break;
            };
            parent = block_hash(parent, &tokens, rows);
            found.push((b, parent));
        }
        found
    }

    /// Starts the sequence after `prefix` (from `cached_prefix`, this step).
    fn take_cached_prefix(&mut self, pool: &mut KvPool, prefix: &[(u32, u64)]) -> Result<()> {
        let bs = pool.block_size();
        for &(b, hash) in prefix {
            pool.retain(b)?;
            self.table.push_full_block(b, bs);
            self.hashes.push(hash);
        }
        self.computed = prefix.len() * bs as usize;
        Ok(())
    }

    /// Registers the full blocks computed since the last call.
    fn cache_full_blocks(&mut self, pool: &mut KvPool) {
        let bs = pool.block_size() as usize;
        while self.hashes.len() < self.computed / bs {
            let j = self.hashes.len();
            let (tokens, rows) = self.block_content(j, bs);
            let parent = self.hashes.last().copied().unwrap_or(ROOT_HASH);
            let h = pool.cache_block(self.table.blocks()[j], parent, &tokens, rows);
            self.hashes.push(h);
        }
    }

    fn spec_stats(&self) -> SpecStats {
        self.spec.as_ref().map(|s| s.stats).unwrap_or_default()
    }

    /// Gives back every block, the draft model's too; the sequence will
    /// start over.
    fn release(&mut self, pool: &mut KvPool, draft_pool: Option<&mut KvPool>) -> Result<()> {
        self.table.release(pool)?;
        if let Some(spec) = self.spec.as_mut() {
            spec.release(draft_pool)?;
        }
        self.computed = 0;
        self.hashes.clear();
        if let Some(e) = self.embed.as_mut() {
            e.reset();
        }
        Ok(())
    }

    /// Parts the sequence may add to a step: its prompt rows and its
    /// generated rows are separate parts, and only a sequence recomputed
    /// after preemption has both left.
    fn parts_needed(&self) -> usize {
        1 + (self.computed < self.prompt.len() && self.known() > self.prompt.len()) as usize
    }

    /// Whether the sequence's next part is one generated token that drafts
    /// may follow (so every verification row is a generated row).
    fn can_draft(&self) -> bool {
        let known = self.known();
        self.spec.is_some()
            && self.computed + 1 == known
            && known > self.prompt.len()
            && self.out.finish.is_none()
            && !self.cancelled
            && self.failed.is_none()
    }
}

/// One part of the coming step, owning what the `SeqStep` borrows.
struct Planned {
    seq: usize,
    start: usize,
    tokens: Vec<u32>,
    generated: bool,
    logit_rows: u32,
    /// Drafted tokens this part verifies (they follow `tokens[0]`).
    drafts: Draft,
    blocks: Vec<u32>,
    counts: Vec<(u32, u32)>,
    /// The logit rows need constraint masks (worked out during the step).
    constrained: bool,
    /// Rows of `tokens` an embedding pools.
    pool_rows: Option<(u32, u32)>,
}

/// The block manager side of the engine: it owns the KV pools (the
/// target's and the draft model's), so allocation, reference counts and the
/// prefix cache never live in a model.
pub struct Scheduler {
    opts: SchedulerOptions,
    pool: KvPool,
    /// The draft model's pool, while one is attached.
    draft_pool: Option<KvPool>,
    /// Admitted, in arrival order (oldest first).
    running: Vec<Seq>,
    /// Not admitted or preempted, in arrival order.
    waiting: VecDeque<Seq>,
    next_id: SeqId,
    /// Sequences preempted so far (for metrics and tests).
    pub preemptions: u64,
}

impl Scheduler {
    /// `pool`: the target model's blocks ([`GpuModel::new_kv_pool`]).
    pub fn new(opts: SchedulerOptions, pool: KvPool) -> Scheduler {
        Scheduler {
            opts,
            pool,
            draft_pool: None,
            running: Vec::new(),
            waiting: VecDeque::new(),
            next_id: 0,
            preemptions: 0,
        }
    }

    /// Attaches (or detaches) the draft model's block manager; only while
    /// idle, since running sequences hold blocks of the old one.
    pub fn set_draft_pool(&mut self, pool: Option<KvPool>) -> Result<()> {
        if !self.is_idle() {
            return Err(HearthError::InvalidRequest(
                "a draft model can only be attached while no request runs".into(),
            ));
        }
        self.draft_pool = pool;
        Ok(())
    }

    pub fn pool(&self) -> &KvPool {
        &self.pool
    }

    #[doc(hidden)]
    pub fn debug_leak_blocks(&mut self, n: usize) -> Result<()> {
        self.pool.allocate(n).map(drop)
    }

    #[doc(hidden)]
    pub fn debug_break_constraint(&mut self, id: SeqId) {
        for s in self.running.iter_mut().chain(self.waiting.iter_mut()) {
            if s.id == id {
                s.out.debug_break_constraint();
            }
        }
    }

    pub fn draft_pool(&self) -> Option<&KvPool> {
        self.draft_pool.as_ref()
    }

    /// A scheduler with the same options and pools of the same shape, every
    /// block free: what the engine starts over with when stepping keeps
    /// failing.
    pub fn fresh(&self) -> Scheduler {
        Scheduler {
            draft_pool: self.draft_pool.as_ref().map(KvPool::empty_like),
            ..Scheduler::new(self.opts.clone(), self.pool.empty_like())
        }
    }

    /// Queues a request; errors now if it could never run on this model.
    pub fn add(
        &mut self,
        model: &GpuModel,
        prompt: Vec<u32>,
        opts: &GenerateOptions,
    ) -> Result<SeqId> {
        self.add_constrained(model, prompt, opts, None)
    }

    /// [`Self::add`] for a request whose output `constraint` (compiled from
    /// `opts.constraint`) keeps inside its schema or grammar.
    pub fn add_constrained(
        &mut self,
        model: &GpuModel,
        prompt: Vec<u32>,
        opts: &GenerateOptions,
        constraint: Option<ConstraintState>,
    ) -> Result<SeqId> {
        let max_new = check_request(model, &prompt, opts, self.draft_pool.is_some())?;
        let id = self.next_id;
        self.next_id += 1;
        let out = SeqOutput::new(&prompt, opts, max_new)?.with_constraint(constraint);
        self.waiting.push_back(Seq {
            id,
            prompt,
            spec: Speculator::new(opts.speculative, &opts.sampling)?,
            out,
            table: BlockTable::new(),
            computed: 0,
            hashes: Vec::new(),
            queried: false,
            cached_tokens: 0,
            cancelled: false,
            failed: None,
            embed: None,
        });
        Ok(id)
    }

    /// Queues an embedding of `prompt` (prefill only; the pooled vector
    /// comes as [`SeqEvent::Embedding`]); errors now if it could never run.
    pub fn add_embedding(
        &mut self,
        model: &GpuModel,
        prompt: Vec<u32>,
        pooling: Pooling,
    ) -> Result<SeqId> {
        check_embedding(model, &prompt)?;
        let id = self.next_id;
        self.next_id += 1;
        // Never sampled from: its finish is set when the pooling is done.
        let out = SeqOutput::new(&prompt, &GenerateOptions::default(), 1)?;
        self.waiting.push_back(Seq {
            id,
            prompt,
            spec: None,
            out,
            table: BlockTable::new(),
            computed: 0,
            hashes: Vec::new(),
            queried: false,
            cached_tokens: 0,
            cancelled: false,
            failed: None,
            embed: Some(PoolState::new(pooling)),
        });
        Ok(id)
    }

    /// Ends a request at the next step (its blocks are freed then).
    pub fn cancel(&mut self, id: SeqId) {
        for s in self.running.iter_mut().chain(self.waiting.iter_mut()) {
            if s.id == id {
                s.cancelled = true;
            }
        }
    }

    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Frees the blocks of cancelled and finished sequences.
    fn retire(&mut self, events: &mut Vec<SeqEvent>) -> Result<()> {
        let mut keep = Vec::with_capacity(self.running.len());
        for mut s in self.running.drain(..) {
            if let Some(error) = s.failed.take() {
                s.release(&mut self.pool, self.draft_pool.as_mut())?;
                events.push(SeqEvent::Failed { id: s.id, error });
                continue;
            }
            if s.cancelled {
                s.out.cancel();
            }
            match s.out.finish {
                Some(reason) => {
                    if let (Some(e), FinishReason::Stop) = (&s.embed, reason) {
                        events.push(SeqEvent::Embedding(s.id, e.finish()));
                    }
                    s.release(&mut self.pool, self.draft_pool.as_mut())?;
                    events.push(SeqEvent::Finished {
                        id: s.id,
                        reason,
                        prompt_tokens: s.prompt.len(),
                        cached_tokens: s.cached_tokens,
                        completion_tokens: s.out.ids.len(),
                        spec: s.spec_stats(),
                    });
                }
                None => keep.push(s),
            }
        }
        self.running = keep;
        let mut waiting = VecDeque::with_capacity(self.waiting.len());
        for mut s in self.waiting.drain(..) {
            if let Some(error) = s.failed.take() {
                // Preempted after failing: its blocks are free already.
                events.push(SeqEvent::Failed { id: s.id, error });
                continue;
            }
            if s.cancelled || s.out.finish.is_some() {
                s.out.cancel();
                events.push(SeqEvent::Finished {
                    id: s.id,
                    reason: s.out.finish.unwrap_or(FinishReason::Cancelled),
                    prompt_tokens: s.prompt.len(),
                    cached_tokens: s.cached_tokens,
                    completion_tokens: s.out.ids.len(),
                    spec: s.spec_stats(),
                });
            } else {
                waiting.push_back(s);
            }
        }
        self.waiting = waiting;
        Ok(())
    }

    /// Moves the newest running sequence back to the waiting queue (in
    /// arrival order), freeing its blocks; it will be recomputed.
    fn preempt_newest(&mut self) -> Result<()> {
        let Some(mut s) = self.running.pop() else {
            return Ok(());
        };
        s.release(&mut self.pool, self.draft_pool.as_mut())?;
        self.preemptions += 1;
        let at = self
            .waiting
            .iter()
            .position(|w| w.id > s.id)
            .unwrap_or(self.waiting.len());
        self.waiting.insert(at, s);
        Ok(())
    }

    /// Runs the draft model for every running sequence that drafts with it
    /// and is about to decode, batched; the drafts wait in each sequence's
    /// speculator for `plan_seq`.
    async fn draft_with_model(
        &mut self,
        model: &GpuModel,
        draft: Option<&mut GpuModel>,
    ) -> Result<()> {
        let vocab = model.config.vocab_size;
        // One logit row of the target per sequence is a must; drafts use the rest.
        let mut left = (model.logit_capacity() as usize).saturating_sub(self.running.len());
        let (Some(draft), Some(draft_pool)) = (draft, self.draft_pool.as_mut()) else {
            return Ok(());
        };
        let mut jobs = Vec::new();
        let mut owners = Vec::new();
        for (i, s) in self.running.iter_mut().enumerate() {
            let by_model = s.spec.as_ref().is_some_and(Speculator::uses_model);
            if !by_model || !s.can_draft() {
                continue;
            }
            let remaining = s.out.remaining().saturating_sub(1);
            let context = s.out.context(&s.prompt);
            let Some(spec) = s.spec.as_mut() else {
                continue;
            };
            let k = spec.k().min(remaining).min(left);
            if let Some(cache) = spec.cache.as_mut() {
                left -= k;
                jobs.push(DraftJob { cache, context, k });
                owners.push(i);
            }
        }
        if jobs.is_empty() {
            return Ok(());
        }
        let drafts = draft_model::propose(draft, draft_pool, vocab, &mut jobs).await?;
        drop(jobs);
        for (&i, d) in owners.iter().zip(drafts) {
            if let Some(spec) = self.running[i].spec.as_mut() {
                spec.pending = Some(d);
            }
        }
        Ok(())
    }

    /// Plans the parts of running sequence `i` within `budget` tokens and
    /// `rows` logit rows, allocating its blocks; `None` when the pool is out
    /// of blocks. A decoding sequence with a drafter also carries its drafts,
    /// when blocks allow.
    fn plan_seq(&mut self, i: usize, budget: usize, rows: usize) -> Option<Vec<Planned>> {
        let s = &mut self.running[i];
        if s.failed.is_some() {
            return Some(Vec::new());
        }
        let known = s.known();
        let mut drafts = Draft::default();
        if s.can_draft() {
            let limit = s
                .out
                .remaining()
                .saturating_sub(1)
                .min(budget.saturating_sub(1))
                .min(rows.saturating_sub(1));
            if let Some(spec) = s.spec.as_mut() {
                drafts = spec.propose(&s.out.context(&s.prompt), limit);
            }
        }
        let end = known.min(s.computed + budget);
        if end <= s.computed {
            return Some(Vec::new());
        }
        // Drafts are checked before blocks are taken: one the constraint
        // refuses is dropped here, so it takes no KV slot.
        if let Err(e) = s.out.check_drafts(&mut drafts) {
            s.failed = Some(e);
            return Some(Vec::new());
        }
        let constrained = s.out.is_constrained();
        let have = (s.table.len() as usize).min(end);
        if !drafts.is_empty()
            && s.table
                .append(&mut self.pool, (end + drafts.len() - have) as u32)
                .is_err()
        {
            drafts.clear();
        }
        if drafts.is_empty() {
            s.table.append(&mut self.pool, (end - have) as u32).ok()?;
        }
        let counts = s.out.penalty_counts();
        let mut parts = Vec::new();
        // Prompt positions are prompt rows, generated positions generated rows.
        let split = s.prompt.len().clamp(s.computed, end);
        for (a, b, generated) in [(s.computed, split, false), (split, end, true)] {
            if b > a {
                let last = b == known;
                let drafts = if last {
                    std::mem::take(&mut drafts)
                } else {
                    Draft::default()
                };
                let pool_rows = s
                    .embed
                    .as_ref()
                    .and_then(|e| e.rows_of_chunk(a, b, s.prompt.len()));
                // An embedding wants no logits, only its pooled rows.
                let logit_rows = match (&s.embed, last) {
                    (Some(_), _) | (None, false) => 0,
                    (None, true) => 1 + drafts.len() as u32,
                };
                parts.push(Planned {
                    seq: i,
                    start: a,
                    tokens: (a..b)
                        .map(|p| s.token(p))
                        .chain(drafts.tokens.iter().copied())
                        .collect(),
                    generated,
                    logit_rows,
                    drafts,
                    blocks: s.table.blocks().to_vec(),
                    counts: if last { counts.clone() } else { Vec::new() },
                    constrained: last && constrained,
                    pool_rows,
                });
            }
        }
        Some(parts)
    }

    /// Forms and runs one step; returns the tokens it produced and the
    /// requests that ended. Does nothing when idle.
    pub async fn step(
        &mut self,
        model: &mut GpuModel,
        draft: Option<&mut GpuModel>,
        tok: &Tokenizer,
    ) -> Result<Vec<SeqEvent>> {
        let mut events = Vec::new();
        self.retire(&mut events)?;
        self.draft_with_model(model, draft).await?;
        let mut budget = model.max_step_tokens() as usize;
        let max_parts = model.max_seqs() as usize;
        let mut rows = model.logit_capacity() as usize;
        let mut plan: Vec<Planned> = Vec::new();
        // Running sequences, oldest first: decode tokens, then prompt chunks.
        let mut i = 0;
        while i < self.running.len() {
            if budget == 0 || plan.len() + self.running[i].parts_needed() > max_parts {
                break;
            }
            // Every later running sequence may need a logit row too.
            let reserve = self.running.len() - i - 1;
            match self.plan_seq(i, budget, rows.saturating_sub(reserve)) {
                Some(parts) => {
                    budget -= parts.iter().map(|p| p.tokens.len()).sum::<usize>();
                    rows = rows.saturating_sub(parts.iter().map(|p| p.logit_rows as usize).sum());
                    plan.extend(parts);
                    i += 1;
                }
                None => {
                    // Out of blocks: make room by preempting the newest. The
                    // plan so far covers only sequences before `i`, which stay.
                    self.preempt_newest()?;
                }
            }
        }
        // Admit waiting sequences while blocks (above the watermark) and budget allow.
        while budget > 0 && rows > 0 {
            let Some(s) = self.waiting.front() else { break };
            if plan.len() + s.parts_needed() > max_parts {
                break;
            }
            let bs = self.pool.block_size() as usize;
            let prefix = if self.opts.prefix_caching {
                s.cached_prefix(&self.pool)
            } else {
                Vec::new()
            };
            let cached = prefix.len();
            // Cached blocks nobody holds count as free, but taking them uses them up.
            let parked = prefix
                .iter()
                .filter(|&&(b, _)| self.pool.ref_count(b) == 0)
                .count();
            let first = (s.known() - cached * bs).min(budget);
            let need = BlockTable::blocks_for((cached * bs + first) as u32, bs as u32) - cached;
            let free = self.pool.free_blocks() as usize - parked;
            // The watermark keeps room for running sequences to grow; with
            // none running it would only lock out a request that needs the
            // whole pool.
            let watermark = if self.running.is_empty() {
                0
            } else {
                self.opts.watermark_blocks as usize
            };
            if free < need + watermark {
                break;
            }
            let mut s = self.waiting.pop_front().expect("front exists");
            s.take_cached_prefix(&mut self.pool, &prefix)?;
            if !s.queried {
                if self.opts.prefix_caching {
                    self.pool.record_prefix_query(s.known(), cached * bs);
                }
                s.cached_tokens = (cached * bs).min(s.prompt.len());
                s.queried = true;
            }
            self.running.push(s);
            let i = self.running.len() - 1;
            match self.plan_seq(i, budget, rows) {
                Some(parts) => {
                    budget -= parts.iter().map(|p| p.tokens.len()).sum::<usize>();
                    rows = rows.saturating_sub(parts.iter().map(|p| p.logit_rows as usize).sum());
                    plan.extend(parts);
                }
                None => {
                    let mut s = self.running.pop().expect("just pushed");
                    s.release(&mut self.pool, self.draft_pool.as_mut())?;
                    self.waiting.push_front(s);
                    break;
                }
            }
        }
        if plan.is_empty() {
            return Ok(events);
        }
        // Generated-token parts first (SeqStep's rule), each group in arrival order.
        plan.sort_by_key(|p| !p.generated);
        let k = plan
            .iter()
            .filter(|p| p.logit_rows > 0)
            .map(|p| self.running[p.seq].out.candidates_needed())
            .max()
            .unwrap_or(1);
        let steps: Vec<SeqStep> = plan
            .iter()
            .map(|p| {
                let sp = &self.running[p.seq].out.opts().sampling;
                SeqStep {
                    logit_rows: p.logit_rows,
                    generated: p.generated,
                    pool_rows: p.pool_rows,
                    ..with_penalties(
                        SeqStep::new(&p.tokens, p.start as u32, &p.blocks),
                        &p.counts,
                        sp,
                    )
                }
            })
            .collect();
        let cands = if plan.iter().any(|p| p.constrained) {
            // The masks are worked out on the CPU while the GPU runs the layers.
            let running = &mut self.running;
            let mut late = || {
                plan.iter()
                    .map(|p| {
                        let s = &mut running[p.seq];
                        if !p.constrained || s.failed.is_some() {
                            return None;
                        }
                        s.out.constraint_masks(&p.drafts).unwrap_or_else(|e| {
                            // Its rows go unmasked and it is not sampled.
                            s.failed = Some(e);
                            None
                        })
                    })
                    .collect()
            };
            model.step_pooled(&steps, k, Some(&mut late)).await?
        } else {
            model.step_pooled(&steps, k, None).await?
        };
        let mut pooled = cands.pooled.into_iter();
        let mut cands = cands.candidates.into_iter();
        for p in &plan {
            let s = &mut self.running[p.seq];
            if let Some((_, n)) = p.pool_rows {
                let Some(sum) = pooled.next() else {
                    return Err(HearthError::Gpu("step returned too few pooled rows".into()));
                };
                if let Some(e) = s.embed.as_mut() {
                    e.add(&sum, n);
                }
            }
            let rows: Vec<_> = cands.by_ref().take(p.logit_rows as usize).collect();
            if rows.len() < p.logit_rows as usize {
                return Err(HearthError::Gpu("step returned too few candidates".into()));
            }
            if s.failed.is_some() {
                continue;
            }
            if p.drafts.is_empty() {
                s.computed = s.computed.max(p.start + p.tokens.len());
            }
            if s.embed.is_some() && s.computed == s.prompt.len() {
                s.out.finish = Some(FinishReason::Stop);
            }
            if !rows.is_empty() {
                let (accepted, confirmed) = match s.out.accept_verified(tok, &rows, &p.drafts) {
                    Ok(r) => r,
                    Err(e) => {
                        // This sequence alone: its blocks go back at retirement.
                        s.failed = Some(e);
                        continue;
                    }
                };
                events.extend(accepted.into_iter().map(|a| SeqEvent::Token(s.id, a)));
                if let Some(spec) = s.spec.as_mut() {
                    spec.record(p.drafts.len(), confirmed);
                }
                if !p.drafts.is_empty() {
                    // The fed token and the confirmed drafts stay in the
                    // cache; the rejected drafts' slots are given back.
                    s.computed = p.start + 1 + confirmed;
                    s.table.truncate(&mut self.pool, s.computed as u32)?;
                }
            }
            if self.opts.prefix_caching {
                s.cache_full_blocks(&mut self.pool);
            }
        }
        self.retire(&mut events)?;
        Ok(events)
    }
}
