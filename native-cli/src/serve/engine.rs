//! The engine thread: it alone owns the model and the continuous-batching
//! scheduler, because a step is blocking GPU work. HTTP handlers talk to it
//! over channels — a command queue in, one event channel per request out —
//! and it sleeps on the command queue whenever nothing is scheduled.
//!
//! A request whose event receiver is gone (the client disconnected) is
//! cancelled before the next step, so its KV blocks come back at once. A
//! failed step fails the requests in flight with an error and the thread
//! carries on with the ones that arrive next.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use hearth::engine::scheduler::{RequestId, Scheduler, SchedulerOptions, SeqEvent};
use hearth::engine::{FinishReason, SpecOptions};
use hearth::{Hearth, HearthError, Prompt};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use super::errors::ApiError;
use super::metrics::Metrics;
use super::openai::{Endpoint, Job, PromptInput};
use super::tokens::{Piece, PieceDecoder};

/// One token's log-probability and its best alternatives.
#[derive(Debug, Clone)]
pub struct TokenLogprobs {
    pub token: Piece,
    pub logprob: f32,
    pub top: Vec<(Piece, f32)>,
}

/// What a request's handler receives, per choice.
#[derive(Debug)]
pub enum Event {
    Token {
        choice: usize,
        /// Text this token made final (may be empty).
        text: String,
        logprobs: Option<TokenLogprobs>,
    },
    Finished {
        choice: usize,
        reason: FinishReason,
        completion_tokens: usize,
    },
    /// The request failed midway (a step error); no more events follow.
    Failed(ApiError),
}

/// A request the engine took on.
#[derive(Debug, Clone, Copy)]
pub struct Admitted {
    /// Summed over the request's prompts, each counted once whatever `n` is.
    pub prompt_tokens: usize,
}

pub struct Submission {
    /// For the log line.
    pub id: String,
    pub job: Job,
    pub arrived: Instant,
    pub reply: oneshot::Sender<Result<Admitted, ApiError>>,
    pub events: mpsc::UnboundedSender<Event>,
}

pub enum Command {
    Submit(Box<Submission>),
    /// The shutdown grace period is over: end every request now.
    CancelAll,
    /// End every request and stop the thread.
    Shutdown,
}

/// The engine's state after its latest step, for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub running: usize,
    pub waiting: usize,
    pub kv_used: u32,
    pub kv_free: u32,
    pub kv_cached: u32,
    pub kv_total: u32,
    pub prefix_query_tokens: u64,
    pub prefix_hit_tokens: u64,
    pub prefix_evictions: u64,
    pub preemptions: u64,
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Sequences that run at once before others queue.
    pub max_num_seqs: usize,
    /// Sequences that may wait beyond those; more is a 429.
    pub max_queue: usize,
    pub scheduler: SchedulerOptions,
    /// Speculative decoding for requests that don't choose (`draft` field).
    pub speculative: SpecOptions,
}

/// The handlers' side of the engine: cheap to clone.
#[derive(Clone)]
pub struct EngineClient {
    tx: std_mpsc::Sender<Command>,
    snapshot: Arc<Mutex<Snapshot>>,
    alive: Arc<AtomicBool>,
    /// The model's context length, for `/v1/models`.
    pub context_length: usize,
}

/// The engine thread; `shutdown` stops it.
pub struct EngineHandle {
    client: EngineClient,
    thread: Option<JoinHandle<()>>,
}

/// Clears `alive` when the engine thread ends, by return or by panic.
struct AliveGuard(Arc<AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl EngineHandle {
    pub fn spawn(h: Hearth, cfg: EngineConfig, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let (tx, rx) = std_mpsc::channel();
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        let alive = Arc::new(AtomicBool::new(true));
        let context_length = h.model.config.max_position_embeddings;
        let engine = Engine {
            pieces: PieceDecoder::new(&h.tokenizer),
            h,
            sched: Scheduler::new(cfg.scheduler.clone()),
            cfg,
            metrics,
            snapshot: snapshot.clone(),
            reqs: HashMap::new(),
            seqs: HashMap::new(),
            next_key: 0,
            failed_steps: 0,
        };
        engine.publish();
        let guard = AliveGuard(alive.clone());
        let thread = std::thread::Builder::new()
            .name("hearth-engine".into())
            .spawn(move || {
                let _guard = guard;
                engine.run(rx);
            })?;
        Ok(EngineHandle {
            client: EngineClient {
                tx,
                snapshot,
                alive,
                context_length,
            },
            thread: Some(thread),
        })
    }

    pub fn client(&self) -> EngineClient {
        self.client.clone()
    }

    /// Ends every request, stops the thread and waits for it.
    pub fn shutdown(mut self) {
        let _ = self.client.tx.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                error!("the engine thread panicked");
            }
        }
    }
}

impl EngineClient {
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Queues `job`; the first receiver answers whether the engine took it,
    /// the second carries its tokens.
    #[allow(clippy::type_complexity)]
    pub fn submit(
        &self,
        id: String,
        job: Job,
        arrived: Instant,
    ) -> Result<
        (
            oneshot::Receiver<Result<Admitted, ApiError>>,
            mpsc::UnboundedReceiver<Event>,
        ),
        ApiError,
    > {
        let (reply, reply_rx) = oneshot::channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        self.tx
            .send(Command::Submit(Box::new(Submission {
                id,
                job,
                arrived,
                reply,
                events,
            })))
            .map_err(|_| ApiError::internal("The inference engine has stopped."))?;
        Ok((reply_rx, events_rx))
    }

    pub fn cancel_all(&self) {
        let _ = self.tx.send(Command::CancelAll);
    }

    pub fn snapshot(&self) -> Snapshot {
        self.snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A request in flight.
struct Active {
    id: String,
    endpoint: Endpoint,
    events: mpsc::UnboundedSender<Event>,
    seq_ids: Vec<RequestId>,
    /// Choices not finished yet.
    open: usize,
    arrived: Instant,
    first_token: Option<Instant>,
    last_token: Vec<Option<Instant>>,
    logprobs: Option<usize>,
    prompt_tokens: usize,
    completion_tokens: usize,
    reasons: Vec<Option<FinishReason>>,
    cancelled: bool,
}

struct Engine {
    h: Hearth,
    sched: Scheduler,
    cfg: EngineConfig,
    metrics: Arc<Metrics>,
    snapshot: Arc<Mutex<Snapshot>>,
    pieces: PieceDecoder,
    reqs: HashMap<u64, Active>,
    /// Scheduler id -> (request key, choice index).
    seqs: HashMap<RequestId, (u64, usize)>,
    next_key: u64,
    /// Consecutive failed steps (see `step`).
    failed_steps: u32,
}

fn finish_str(r: Option<FinishReason>) -> &'static str {
    match r {
        Some(FinishReason::Stop) => "stop",
        Some(FinishReason::Length) => "length",
        Some(FinishReason::Cancelled) => "cancelled",
        None => "unfinished",
    }
}

fn context_error(ctx: usize, prompt: usize, completion: usize, chat: bool) -> ApiError {
    let (param, what) = if chat {
        ("messages", "messages")
    } else {
        ("prompt", "prompt")
    };
    ApiError::invalid_param(
        param,
        format!(
            "This model's maximum context length is {ctx} tokens. However, you requested {} tokens \
             ({prompt} in the {what}, {completion} in the completion). Please reduce the length of \
             the {what} or the completion (max_tokens).",
            prompt + completion
        ),
    )
    .with_code("context_length_exceeded")
}

/// A runtime error about a request, as the client should see it.
fn request_error(e: HearthError, chat: bool) -> ApiError {
    let param = if chat { "messages" } else { "prompt" };
    match e {
        HearthError::InvalidRequest(m) if m.contains("context") => {
            ApiError::invalid_param(param, m).with_code("context_length_exceeded")
        }
        HearthError::InvalidRequest(m) => ApiError::invalid_param(param, m),
        HearthError::OutOfKvMemory(m) => ApiError::invalid_param("max_tokens", m),
        HearthError::Template(m) => ApiError::invalid_param("messages", m),
        e @ HearthError::Tokenizer(_) => ApiError::invalid_param(param, e.to_string()),
        e => ApiError::internal(e.to_string()),
    }
}

impl Engine {
    fn run(mut self, rx: std_mpsc::Receiver<Command>) {
        let mut stopping = false;
        loop {
            if self.sched.is_idle() {
                self.publish();
                if stopping {
                    break;
                }
                // Nothing to step: sleep until a command arrives.
                match rx.recv() {
                    Ok(cmd) => self.command(cmd, &mut stopping),
                    Err(_) => break,
                }
            }
            while let Ok(cmd) = rx.try_recv() {
                self.command(cmd, &mut stopping);
            }
            self.cancel_abandoned();
            if !self.sched.is_idle() {
                self.step();
            }
            self.publish();
        }
        debug!("engine thread done");
    }

    fn command(&mut self, cmd: Command, stopping: &mut bool) {
        match cmd {
            Command::Submit(sub) if *stopping => {
                let _ = sub.reply.send(Err(ApiError::shutting_down()));
            }
            Command::Submit(sub) => self.submit(*sub),
            Command::CancelAll => self.cancel_all(),
            Command::Shutdown => {
                *stopping = true;
                self.cancel_all();
            }
        }
    }

    fn cancel_all(&mut self) {
        for a in self.reqs.values_mut() {
            if !a.cancelled {
                a.cancelled = true;
                for &s in &a.seq_ids {
                    self.sched.cancel(s);
                }
            }
        }
    }

    /// Cancels the requests whose clients went away.
    fn cancel_abandoned(&mut self) {
        for a in self.reqs.values_mut() {
            if !a.cancelled && a.events.is_closed() {
                debug!(request = %a.id, "client went away; cancelling");
                a.cancelled = true;
                for &s in &a.seq_ids {
                    self.sched.cancel(s);
                }
            }
        }
    }

    fn submit(&mut self, sub: Submission) {
        let Submission {
            id,
            job,
            arrived,
            reply,
            events,
        } = sub;
        match self.admit(&job) {
            Ok((seq_ids, prompt_tokens)) => {
                if reply.send(Ok(Admitted { prompt_tokens })).is_err() {
                    // The handler is gone already (client hung up while queued).
                    for &s in &seq_ids {
                        self.sched.cancel(s);
                    }
                    return;
                }
                self.metrics.prompt_tokens.inc_by(prompt_tokens as u64);
                let key = self.next_key;
                self.next_key += 1;
                for (choice, &s) in seq_ids.iter().enumerate() {
                    self.seqs.insert(s, (key, choice));
                }
                let choices = seq_ids.len();
                self.reqs.insert(
                    key,
                    Active {
                        id,
                        endpoint: job.endpoint,
                        events,
                        seq_ids,
                        open: choices,
                        arrived,
                        first_token: None,
                        last_token: vec![None; choices],
                        logprobs: job.logprobs,
                        prompt_tokens,
                        completion_tokens: 0,
                        reasons: vec![None; choices],
                        cancelled: false,
                    },
                );
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Tokenizes and checks every prompt, then queues all the request's
    /// sequences (or none). Returns their ids in choice order and the
    /// prompt token count.
    fn admit(&mut self, job: &Job) -> Result<(Vec<RequestId>, usize), ApiError> {
        let chat = job.endpoint == Endpoint::Chat;
        let total = job.choices();
        let capacity = self.cfg.max_num_seqs + self.cfg.max_queue;
        if total > capacity {
            return Err(ApiError::invalid_param(
                "n",
                format!(
                    "The request needs {total} sequences; this server holds at most {capacity} \
                     (--max-num-seqs {} + --max-queue {}).",
                    self.cfg.max_num_seqs, self.cfg.max_queue
                ),
            ));
        }
        let in_engine = self.sched.running() + self.sched.waiting();
        if in_engine + total > capacity {
            return Err(ApiError::queue_full(format!(
                "The server is busy: {in_engine} sequences are running or queued and it holds at \
                 most {capacity} (--max-num-seqs {} + --max-queue {}). Retry later.",
                self.cfg.max_num_seqs, self.cfg.max_queue
            )));
        }
        let ctx = self.h.model.config.max_position_embeddings;
        let pool = &self.h.model.pool;
        let pool_tokens = pool.num_blocks() as usize * pool.block_size() as usize;
        let mut prepared = Vec::with_capacity(job.prompts.len());
        for p in &job.prompts {
            let ids = match p {
                PromptInput::Text(t) => self.h.prompt_ids(&Prompt::Text(t.clone())),
                PromptInput::Chat(m) => self.h.prompt_ids(&Prompt::Chat(m.clone())),
                PromptInput::Ids(ids) => Ok(ids.clone()),
            }
            .map_err(|e| request_error(e, chat))?;
            let max_tokens = match job.max_tokens {
                Some(m) => {
                    if ids.len() + m > ctx {
                        return Err(context_error(ctx, ids.len(), m, chat));
                    }
                    m
                }
                // As many as fit in the context and, alone, in the KV pool.
                None => ctx
                    .saturating_sub(ids.len())
                    .min(pool_tokens.saturating_sub(ids.len()))
                    .max(1),
            };
            prepared.push((ids, max_tokens));
        }
        let mut seq_ids = Vec::with_capacity(total);
        for (p, (ids, max_tokens)) in prepared.iter().enumerate() {
            for i in 0..job.n {
                let choice = p * job.n + i;
                let mut opts = job.opts.clone();
                opts.max_tokens = *max_tokens;
                opts.speculative = SpecOptions {
                    drafting: job.draft.unwrap_or(self.cfg.speculative.drafting),
                    ..self.cfg.speculative
                };
                // Each sample of a seeded request draws its own reproducible stream.
                opts.sampling.seed = opts.sampling.seed.map(|s| s.wrapping_add(choice as u64));
                match self.sched.add(&self.h.model, ids.clone(), &opts) {
                    Ok(s) => seq_ids.push(s),
                    Err(e) => {
                        for &s in &seq_ids {
                            self.sched.cancel(s);
                        }
                        return Err(request_error(e, chat));
                    }
                }
            }
        }
        let prompt_tokens = prepared.iter().map(|(ids, _)| ids.len()).sum();
        Ok((seq_ids, prompt_tokens))
    }

    fn step(&mut self) {
        let result = pollster::block_on(self.sched.step(&mut self.h.model, &self.h.tokenizer));
        match result {
            Ok(events) => {
                self.failed_steps = 0;
                let progressed = !events.is_empty();
                for ev in events {
                    self.dispatch(ev);
                }
                if !progressed && self.sched.running() == 0 && self.sched.waiting() > 0 {
                    // Nothing runs and the queue head still was not admitted:
                    // it never will be (the pool cannot hold its first chunk
                    // next to the reserve), so fail rather than spin.
                    let free = self.h.model.pool.free_blocks();
                    self.fail_all(ApiError::internal(format!(
                        "The KV cache ({} blocks, {free} free) cannot admit this request; the server \
                         needs a larger --kv-memory.",
                        self.h.model.pool.num_blocks()
                    )));
                }
            }
            Err(e) => {
                self.failed_steps += 1;
                error!(
                    "engine step failed: {e}; failing the {} requests in flight",
                    self.reqs.len()
                );
                self.fail_all(ApiError::internal(format!("Generation failed: {e}")));
                if self.failed_steps > 2 {
                    // Even retiring the cancelled sequences fails: start over
                    // with an empty scheduler (their KV blocks stay lost).
                    error!("the scheduler keeps failing; replacing it");
                    self.sched = Scheduler::new(self.cfg.scheduler.clone());
                    self.failed_steps = 0;
                }
            }
        }
    }

    /// Ends every request in flight with `err` (its sequences are cancelled
    /// and retired at the next step).
    fn fail_all(&mut self, err: ApiError) {
        for (_, a) in self.reqs.drain() {
            warn!(request = %a.id, "request failed: {}", err.message);
            let _ = a.events.send(Event::Failed(err.clone()));
            for &s in &a.seq_ids {
                self.sched.cancel(s);
            }
        }
        self.seqs.clear();
    }

    fn token_logprobs(&self, id: u32, cands: &[(u32, f32)], top: usize) -> TokenLogprobs {
        let tok = &self.h.tokenizer;
        // The sampled token is among the candidates (see `openai::validate`);
        // -9999 is OpenAI's stand-in for "not computed".
        let logprob = cands
            .iter()
            .find(|(c, _)| *c == id)
            .map_or(-9999.0, |(_, lp)| *lp);
        TokenLogprobs {
            token: self.pieces.piece(tok, id),
            logprob,
            top: cands
                .iter()
                .take(top)
                .map(|&(c, lp)| (self.pieces.piece(tok, c), lp))
                .collect(),
        }
    }

    fn dispatch(&mut self, ev: SeqEvent) {
        match ev {
            SeqEvent::Token(sid, acc) => {
                let Some(&(key, choice)) = self.seqs.get(&sid) else {
                    return;
                };
                let Some(top) = self.reqs.get(&key).map(|a| a.logprobs) else {
                    return;
                };
                let logprobs = top.map(|k| self.token_logprobs(acc.id, &acc.top_logprobs, k));
                let a = self.reqs.get_mut(&key).expect("looked up above");
                let now = Instant::now();
                self.metrics.generation_tokens.inc();
                a.completion_tokens += 1;
                match a.last_token[choice] {
                    None => self.metrics.ttft.observe((now - a.arrived).as_secs_f64()),
                    Some(t) => self.metrics.itl.observe((now - t).as_secs_f64()),
                }
                a.last_token[choice] = Some(now);
                a.first_token.get_or_insert(now);
                let sent = a.events.send(Event::Token {
                    choice,
                    text: acc.text,
                    logprobs,
                });
                if sent.is_err() && !a.cancelled {
                    a.cancelled = true;
                    for &s in &a.seq_ids {
                        self.sched.cancel(s);
                    }
                }
            }
            SeqEvent::Finished {
                id: sid,
                reason,
                completion_tokens,
                spec,
                ..
            } => {
                self.metrics.spec_drafted.inc_by(spec.drafted);
                self.metrics.spec_accepted.inc_by(spec.accepted);
                let Some((key, choice)) = self.seqs.remove(&sid) else {
                    return;
                };
                let Some(a) = self.reqs.get_mut(&key) else {
                    return;
                };
                let _ = a.events.send(Event::Finished {
                    choice,
                    reason,
                    completion_tokens,
                });
                a.reasons[choice] = Some(reason);
                a.open -= 1;
                if a.open == 0 {
                    let a = self.reqs.remove(&key).expect("present");
                    self.finished(a);
                }
            }
        }
    }

    fn finished(&self, a: Active) {
        let total = a.arrived.elapsed();
        self.metrics.e2e.observe(total.as_secs_f64());
        let reasons: Vec<&str> = a.reasons.iter().map(|r| finish_str(*r)).collect();
        let ttft_ms = a
            .first_token
            .map_or(f64::NAN, |t| (t - a.arrived).as_secs_f64() * 1e3);
        info!(
            request = %a.id,
            endpoint = a.endpoint.path(),
            prompt_tokens = a.prompt_tokens,
            completion_tokens = a.completion_tokens,
            finish = %reasons.join(","),
            ttft_ms = format!("{ttft_ms:.1}"),
            total_ms = format!("{:.1}", total.as_secs_f64() * 1e3),
            "request done"
        );
    }

    fn publish(&self) {
        let pool = &self.h.model.pool;
        let prefix = pool.prefix_stats();
        let snap = Snapshot {
            running: self.sched.running(),
            waiting: self.sched.waiting(),
            kv_used: pool.used_blocks(),
            kv_free: pool.free_blocks(),
            kv_cached: pool.cached_blocks(),
            kv_total: pool.num_blocks(),
            prefix_query_tokens: prefix.query_tokens,
            prefix_hit_tokens: prefix.hit_tokens,
            prefix_evictions: prefix.evictions,
            preemptions: self.sched.preemptions,
        };
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = snap;
    }
}
