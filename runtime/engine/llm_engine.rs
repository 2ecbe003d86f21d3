//! The engine: one model, its tokenizer and chat template, the
//! continuous-batching scheduler with the KV block manager and prefix cache,
//! and the draft model. Its core is synchronous and steppable, as vLLM's
//! LLMEngine: [`Engine::add_request`], [`Engine::abort`], [`Engine::step`],
//! [`Engine::has_work`]. Every front end drives it, directly (`hearth run`,
//! `Engine::generate`) or through the async handle ([`super::handle`]:
//! `hearth serve`, `bench --concurrency`, the browser worker, the C ABI), so
//! this file is the only caller of `Scheduler::step`.

use std::collections::HashMap;

use super::embedding::resolve_pooling;
use super::output::{EngineStats, Finish, Output, RequestId, Token};
use super::request::{FinishReason, Request};
use super::scheduler::{Scheduler, SchedulerOptions, SeqEvent, SeqId};
use super::speculative::SpecOptions;
use crate::api::Prompt;
use crate::kv::KvPool;
use crate::model::forward::GpuModel;
use crate::model::{Pooling, PoolingType};
use crate::structured::{ConstraintCompiler, ConstraintState};
use crate::text::chat::ChatTemplate;
use crate::text::Tokenizer;
use crate::{HearthError, Result};

/// How the engine admits and runs requests.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// Sequences (choices) the engine holds at once, running and waiting;
    /// more is [`HearthError::Busy`]. `None`: no limit but the KV cache.
    pub max_sequences: Option<usize>,
    pub scheduler: SchedulerOptions,
    /// Speculative decoding for requests that don't choose (`Request::draft`).
    pub speculative: SpecOptions,
    /// Embeddings pool this way instead of as the model declares
    /// (`--pooling`); normalized as the model says, else normalized.
    pub pooling: Option<PoolingType>,
}

/// A request in flight.
struct Active {
    seqs: Vec<SeqId>,
    /// Choices not finished yet.
    open: usize,
    aborted: bool,
}

pub struct Engine {
    pub model: GpuModel,
    pub tokenizer: Tokenizer,
    pub template: Option<ChatTemplate>,
    /// Where the model came from, for logs and stats.
    pub source_desc: String,
    /// The draft model of speculative decoding (`Drafting::Model`), attached
    /// through [`Engine::attach_draft`], which checks its tokenizer.
    draft: Option<GpuModel>,
    sched: Scheduler,
    cfg: EngineConfig,
    reqs: HashMap<RequestId, Active>,
    /// Scheduler sequence -> (request, choice).
    seqs: HashMap<SeqId, (RequestId, usize)>,
    next_id: RequestId,
    /// Consecutive failed steps (see `step`).
    failed_steps: u32,
    /// Outputs a `generate` call stepped past that belong to other requests;
    /// the next `step` returns them first.
    pub(crate) stash: Vec<Output>,
    /// Fault injection for tests: the next step fails as a GPU error would.
    fail_next_step: bool,
    /// Choices that ended cancelled, for stats.
    cancelled: u64,
    /// Structured output's token trie and parser factory, built for the
    /// first constrained request.
    constraints: Option<ConstraintCompiler>,
}

impl Engine {
    /// An engine over a loaded model (see also `Engine::open` and
    /// `Engine::from_loaded`, which load one).
    pub fn new(
        model: GpuModel,
        tokenizer: Tokenizer,
        template: Option<ChatTemplate>,
        source_desc: String,
        cfg: EngineConfig,
    ) -> Engine {
        let sched = Scheduler::new(cfg.scheduler.clone(), model.new_kv_pool());
        Engine {
            model,
            tokenizer,
            template,
            source_desc,
            draft: None,
            sched,
            cfg,
            reqs: HashMap::new(),
            seqs: HashMap::new(),
            next_id: 0,
            failed_steps: 0,
            stash: Vec::new(),
            fail_next_step: false,
            cancelled: 0,
            constraints: None,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Replaces the configuration; only while idle (the scheduler starts
    /// over with an empty prefix cache).
    pub fn set_config(&mut self, cfg: EngineConfig) -> Result<()> {
        if self.has_work() {
            return Err(HearthError::InvalidRequest(
                "the engine's configuration can only change while no request runs".into(),
            ));
        }
        let mut sched = Scheduler::new(cfg.scheduler.clone(), self.model.new_kv_pool());
        sched.set_draft_pool(self.draft.as_ref().map(GpuModel::new_kv_pool))?;
        self.sched = sched;
        self.cfg = cfg;
        Ok(())
    }

    /// Makes `draft`'s model this engine's draft model for speculative
    /// decoding (`Drafting::Model`). Its tokenizer must be this one's, token
    /// for token; load it on the same device (`Engine::from_loaded` with
    /// `self.model.ctx`) with its own KV budget. Only while idle.
    pub fn attach_draft(&mut self, draft: Engine) -> Result<()> {
        super::draft_model::check_tokenizers_match(&self.tokenizer, &draft.tokenizer)?;
        self.sched.set_draft_pool(Some(draft.model.new_kv_pool()))?;
        self.draft = Some(draft.model);
        Ok(())
    }

    pub fn draft_model(&self) -> Option<&GpuModel> {
        self.draft.as_ref()
    }

    /// The target model's KV block manager (free list, reference counts,
    /// prefix cache).
    pub fn kv_pool(&self) -> &KvPool {
        self.sched.pool()
    }

    /// The draft model's KV block manager, while one is attached.
    pub fn draft_kv_pool(&self) -> Option<&KvPool> {
        self.sched.draft_pool()
    }

    pub fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        crate::api::encode_prompt(&self.tokenizer, self.template.as_ref(), prompt)
    }

    /// Whether a step would do anything: requests running or waiting, or
    /// outputs not yet returned.
    pub fn has_work(&self) -> bool {
        !self.sched.is_idle() || !self.stash.is_empty()
    }

    /// Sequences (choices) running and waiting.
    pub fn sequences(&self) -> usize {
        self.sched.running() + self.sched.waiting()
    }

    /// The compiler of structured-output constraints for this model's
    /// tokenizer and logits (built on first use: it indexes every token).
    pub fn constraint_compiler(&mut self) -> Result<&ConstraintCompiler> {
        if self.constraints.is_none() {
            let c = ConstraintCompiler::new(&self.tokenizer, self.model.config.vocab_size)?;
            self.constraints = Some(c);
        }
        Ok(self.constraints.as_ref().expect("just built"))
    }

    /// One compiled constraint per choice of `req` (`None`s without one).
    fn compile_constraints(&mut self, req: &Request) -> Result<Vec<Option<ConstraintState>>> {
        let Some(c) = &req.constraint else {
            return Ok(vec![None; req.n]);
        };
        let compiler = self.constraint_compiler()?;
        // Compiled once to check it; each further choice gets its own parser.
        let first = compiler.compile(c)?;
        let mut states = vec![Some(first)];
        for _ in 1..req.n {
            states.push(Some(compiler.compile(c)?));
        }
        Ok(states)
    }

    /// Validates and queues `req` (all its choices, or none); its outputs
    /// come from the following steps. Returns its id and its prompt's
    /// token count.
    pub fn add_request(&mut self, mut req: Request) -> Result<(RequestId, usize)> {
        req.validate()?;
        if req.embed {
            return self.add_embedding(&req);
        }
        if let Some(cap) = self.cfg.max_sequences {
            if req.n > cap {
                return Err(HearthError::InvalidField {
                    field: "n".into(),
                    message: format!(
                        "the request needs {} sequences; this engine holds at most {cap}",
                        req.n
                    ),
                });
            }
            let held = self.sequences();
            if held + req.n > cap {
                return Err(HearthError::Busy(format!(
                    "{held} sequences are running or queued and the engine holds at most {cap}; \
                     retry later"
                )));
            }
        }
        let ids = self.request_prompt_ids(&mut req)?;
        let ctx = self.model.config.max_position_embeddings;
        let max_new = match req.max_tokens {
            Some(m) if ids.len() + m > ctx => {
                return Err(HearthError::ContextLength {
                    prompt: ids.len(),
                    completion: m,
                    context: ctx,
                })
            }
            Some(m) => m,
            // As many as fit in the context and, alone, in the KV pool.
            None => {
                let pool_tokens =
                    self.model.kv_blocks() as usize * self.model.kv_block_size() as usize;
                ctx.saturating_sub(ids.len())
                    .min(pool_tokens.saturating_sub(ids.len()))
                    .max(1)
            }
        };
        let constraints = self.compile_constraints(&req)?;
        let id = self.next_id;
        let mut seqs = Vec::with_capacity(req.n);
        for (choice, constraint) in constraints.into_iter().enumerate() {
            let opts = req.choice_options(choice, max_new, self.cfg.speculative);
            match self
                .sched
                .add_constrained(&self.model, ids.clone(), &opts, constraint)
            {
                Ok(s) => seqs.push(s),
                Err(e) => {
                    // Retired unseen at the next step: no request owns them.
                    for &s in &seqs {
                        self.sched.cancel(s);
                    }
                    return Err(e);
                }
            }
        }
        self.next_id += 1;
        for (choice, &s) in seqs.iter().enumerate() {
            self.seqs.insert(s, (id, choice));
        }
        self.reqs.insert(
            id,
            Active {
                open: seqs.len(),
                seqs,
                aborted: false,
            },
        );
        Ok((id, ids.len()))
    }

    /// Whether any of `ids` is still in flight.
    pub(crate) fn is_active(&self, ids: &[RequestId]) -> bool {
        ids.iter().any(|id| self.reqs.contains_key(id))
    }

    /// The pooling embeddings get: the engine's override or the model's own.
    pub fn pooling(&self) -> Result<Pooling> {
        resolve_pooling(self.model.config.pooling, self.cfg.pooling)
    }

    fn add_embedding(&mut self, req: &Request) -> Result<(RequestId, usize)> {
        let pooling = self.pooling()?;
        if let Some(cap) = self.cfg.max_sequences {
            let held = self.sequences();
            if held >= cap {
                return Err(HearthError::Busy(format!(
                    "{held} sequences are running or queued and the engine holds at most {cap}; \
                     retry later"
                )));
            }
        }
        if let Prompt::Chat(_) = req.prompt {
            return Err(HearthError::InvalidField {
                field: "input".into(),
                message: "an embedding takes text or token ids, not chat messages".into(),
            });
        }
        let ids = self.prompt_ids(&req.prompt)?;
        let n = ids.len();
        let s = self.sched.add_embedding(&self.model, ids, pooling)?;
        let id = self.next_id;
        self.next_id += 1;
        self.seqs.insert(s, (id, 0));
        self.reqs.insert(
            id,
            Active {
                seqs: vec![s],
                open: 1,
                aborted: false,
            },
        );
        Ok((id, n))
    }

    /// Ends a request at the next step: its choices finish as
    /// [`FinishReason::Cancelled`] and its blocks go back to the pool. An
    /// unknown or finished id is ignored.
    pub fn abort(&mut self, id: RequestId) {
        if let Some(a) = self.reqs.get_mut(&id) {
            if !a.aborted {
                a.aborted = true;
                for &s in &a.seqs {
                    self.sched.cancel(s);
                }
            }
        }
    }

    /// Aborts every request.
    pub fn abort_all(&mut self) {
        let ids: Vec<RequestId> = self.reqs.keys().copied().collect();
        for id in ids {
            self.abort(id);
        }
    }

    /// Runs one step of every request in flight and returns what it
    /// produced. Never fails as a whole: a failed GPU step fails the
    /// requests in flight ([`Output::Failed`]) and the engine serves the
    /// next ones.
    pub async fn step(&mut self) -> Vec<Output> {
        let mut out = std::mem::take(&mut self.stash);
        if self.sched.is_idle() {
            return out;
        }
        let result = if std::mem::take(&mut self.fail_next_step) {
            Err(HearthError::Gpu("injected step failure (test)".into()))
        } else {
            self.sched
                .step(&mut self.model, self.draft.as_mut(), &self.tokenizer)
                .await
        };
        match result {
            Ok(events) => {
                self.failed_steps = 0;
                let progressed = !events.is_empty();
                for ev in events {
                    self.dispatch(ev, &mut out);
                }
                if !progressed && self.sched.running() == 0 && self.sched.waiting() > 0 {
                    // Nothing runs and the queue head still was not admitted:
                    // it never will be (the pool cannot hold its first chunk
                    // next to the reserve), so fail rather than spin.
                    let pool = self.sched.pool();
                    let err = HearthError::OutOfKvMemory(format!(
                        "the KV cache ({} blocks, {} free) cannot admit this request; \
                         give the engine more KV memory (--kv-memory)",
                        pool.num_blocks(),
                        pool.free_blocks()
                    ));
                    self.fail_all(err, &mut out);
                }
            }
            Err(e) => {
                self.failed_steps += 1;
                tracing::error!(
                    "engine step failed: {e}; failing the {} requests in flight",
                    self.reqs.len()
                );
                self.fail_all(e, &mut out);
                if self.failed_steps > 2 {
                    // Even retiring the cancelled sequences fails: start over
                    // with an empty scheduler and fresh pools.
                    tracing::error!("the scheduler keeps failing; replacing it");
                    self.sched = self.sched.fresh();
                    self.failed_steps = 0;
                }
            }
        }
        out
    }

    /// [`Engine::step`], waiting for the GPU on this thread.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn step_blocking(&mut self) -> Vec<Output> {
        pollster::block_on(self.step())
    }

    /// Ends every request in flight with `err` (its sequences are cancelled
    /// and retired at the next step).
    fn fail_all(&mut self, err: HearthError, out: &mut Vec<Output>) {
        let mut ids: Vec<RequestId> = self.reqs.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let a = self.reqs.remove(&id).expect("listed");
            for &s in &a.seqs {
                self.sched.cancel(s);
                self.seqs.remove(&s);
            }
            out.push(Output::Failed {
                request: id,
                error: err.clone(),
            });
        }
    }

    fn dispatch(&mut self, ev: SeqEvent, out: &mut Vec<Output>) {
        match ev {
            SeqEvent::Token(sid, acc) => {
                let Some(&(request, choice)) = self.seqs.get(&sid) else {
                    return;
                };
                out.push(Output::Token {
                    request,
                    choice,
                    token: Token {
                        id: acc.id,
                        text: acc.text,
                        top_logprobs: acc.top_logprobs,
                    },
                });
            }
            SeqEvent::Embedding(sid, embedding) => {
                if let Some(&(request, _)) = self.seqs.get(&sid) {
                    out.push(Output::Embedding { request, embedding });
                }
            }
            SeqEvent::Finished {
                id: sid,
                reason,
                prompt_tokens,
                cached_tokens,
                completion_tokens,
                spec,
            } => {
                let Some((request, choice)) = self.seqs.remove(&sid) else {
                    return;
                };
                self.cancelled += u64::from(reason == FinishReason::Cancelled);
                out.push(Output::Finished {
                    request,
                    choice,
                    finish: Finish {
                        reason,
                        prompt_tokens,
                        cached_tokens,
                        completion_tokens,
                        spec,
                    },
                });
                if let Some(a) = self.reqs.get_mut(&request) {
                    a.open -= 1;
                    if a.open == 0 {
                        self.reqs.remove(&request);
                    }
                }
            }
            SeqEvent::Failed { id: sid, error } => {
                let Some((request, _)) = self.seqs.remove(&sid) else {
                    return;
                };
                tracing::warn!("request {request} failed: {error}");
                // The request fails as a whole; its other choices end here.
                if let Some(a) = self.reqs.remove(&request) {
                    for s in a.seqs {
                        self.sched.cancel(s);
                        self.seqs.remove(&s);
                    }
                }
                out.push(Output::Failed { request, error });
            }
        }
    }

    pub fn stats(&self) -> EngineStats {
        let pool = self.sched.pool();
        let prefix = pool.prefix_stats();
        EngineStats {
            running: self.sched.running(),
            waiting: self.sched.waiting(),
            kv_used: pool.used_blocks(),
            kv_free: pool.free_blocks(),
            kv_cached: pool.cached_blocks(),
            kv_total: pool.num_blocks(),
            draft_kv_used: self.sched.draft_pool().map_or(0, KvPool::used_blocks),
            prefix_query_tokens: prefix.query_tokens,
            prefix_hit_tokens: prefix.hit_tokens,
            prefix_evictions: prefix.evictions,
            preemptions: self.sched.preemptions,
            cancelled: self.cancelled,
        }
    }
}

/// Fault injection, for tests of the engine's recovery paths (not an API).
#[doc(hidden)]
impl Engine {
    /// Makes the next step fail as a GPU error would.
    pub fn debug_fail_next_step(&mut self) {
        self.fail_next_step = true;
    }

    /// Takes `n` blocks from the target's pool and never gives them back,
    /// as a leak would: a request that needs more than the rest can then
    /// never be admitted.
    pub fn debug_leak_kv_blocks(&mut self, n: usize) -> Result<()> {
        self.sched.debug_leak_blocks(n)
    }

    /// Breaks the constraint parser of every choice of `request`, as an
    /// internal parser error would: the request must fail alone.
    pub fn debug_break_constraint(&mut self, request: RequestId) {
        if let Some(a) = self.reqs.get(&request) {
            for &s in &a.seqs {
                self.sched.debug_break_constraint(s);
            }
        }
    }
}
