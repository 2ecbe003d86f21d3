//! The server's side of the library engine: `hearth::Engine` runs on its
//! own thread ([`hearth::engine::EngineThread`]); this maps a validated
//! [`Job`] (one or more prompts, `n` choices each) onto library
//! [`Request`]s and their events onto the handlers' [`Event`]s, with
//! OpenAI's token pieces for logprobs, and keeps the latency metrics.
//!
//! Each prompt is prepared in the handler, on a blocking worker (see
//! [`hearth::engine::Preparer`]): bounded in bytes, templated, tokenized,
//! checked against the context and its constraint compiled, so a request
//! refused for any of those never reaches the engine, and a huge prompt or
//! a slow template never stalls its steps. Requests being prepared count
//! against `--max-queue` like queued ones.
//!
//! A handler that drops its [`JobEvents`] (the client went away) drops the
//! request streams, and the engine aborts those requests before its next
//! step, so their KV blocks come back at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures_util::stream::{BoxStream, SelectAll, StreamExt};
use hearth::engine::scheduler::SchedulerOptions;
use hearth::engine::{EngineHandle as LibHandle, EngineStats, EngineThread, Preparer, SpecOptions};
use hearth::structured::tools::ToolFormat;
use hearth::text::Tokenizer;
use hearth::{FinishReason, Hearth, HearthError, PoolingType, Prompt, Request};
use tracing::{info, warn};

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

/// The engine's state after its latest step, for `/metrics`.
pub type Snapshot = EngineStats;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Sequences that run at once before others queue.
    pub max_num_seqs: usize,
    /// Sequences that may wait beyond those; more is a 429.
    pub max_queue: usize,
    pub scheduler: SchedulerOptions,
    /// Speculative decoding for requests that don't choose (`draft` field).
    pub speculative: SpecOptions,
    /// Embeddings pool this way instead of as the model declares (`--pooling`).
    pub pooling: Option<PoolingType>,
}

/// What every handler shares to turn token ids into OpenAI's pieces.
struct Shared {
    tokenizer: Tokenizer,
    pieces: PieceDecoder,
    metrics: Arc<Metrics>,
    cfg: EngineConfig,
    preparer: Preparer,
    /// Sequences (choices) of requests being prepared, not yet in the engine.
    preparing: AtomicUsize,
    /// Why `/v1/embeddings` cannot serve this model (it declares no pooling).
    no_embeddings: Option<String>,
}

/// The handlers' side of the engine: cheap to clone.
#[derive(Clone)]
pub struct EngineClient {
    handle: LibHandle,
    shared: Arc<Shared>,
    /// The model's context length, for `/v1/models`.
    pub context_length: usize,
    /// How the model writes tool calls, to parse its outputs.
    pub tool_format: ToolFormat,
    /// The width of its hidden states, which embeddings have.
    pub hidden_size: usize,
}

/// The engine thread; `shutdown` stops it.
pub struct EngineHandle {
    client: EngineClient,
    thread: EngineThread,
}

impl EngineHandle {
    pub fn spawn(mut h: Hearth, cfg: EngineConfig, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        h.set_config(hearth::EngineConfig {
            max_sequences: Some(cfg.max_num_seqs + cfg.max_queue),
            scheduler: cfg.scheduler.clone(),
            speculative: cfg.speculative,
            pooling: cfg.pooling,
        })?;
        let shared = Arc::new(Shared {
            pieces: PieceDecoder::new(&h.tokenizer),
            tokenizer: h.tokenizer.clone(),
            metrics,
            cfg,
            preparer: Preparer::new(&mut h),
            preparing: AtomicUsize::new(0),
            no_embeddings: h.pooling().err().map(|e| e.to_string()),
        });
        let context_length = h.model.config.max_position_embeddings;
        let tool_format = h.tool_format();
        let hidden_size = h.model.config.hidden_size;
        let thread = h.spawn()?;
        Ok(EngineHandle {
            client: EngineClient {
                handle: thread.handle(),
                shared,
                context_length,
                tool_format,
                hidden_size,
            },
            thread,
        })
    }

    pub fn client(&self) -> EngineClient {
        self.client.clone()
    }

    /// Ends every request, stops the thread and waits for it.
    pub fn shutdown(self) {
        self.thread.shutdown();
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

impl EngineClient {
    /// The model's tokenizer and its piece decoder (`/tokenize`, `/detokenize`).
    pub fn tokens(&self) -> (&Tokenizer, &PieceDecoder) {
        (&self.shared.tokenizer, &self.shared.pieces)
    }

    pub fn is_alive(&self) -> bool {
        self.handle.is_alive()
    }

    pub fn cancel_all(&self) {
        self.handle.abort_all();
    }

    pub fn snapshot(&self) -> Snapshot {
        self.handle.info().stats
    }

    /// A library error about a request, as the client should see it.
    /// `constraint_param` names the field a constraint that does not
    /// compile came from.
    fn request_error(&self, e: HearthError, chat: bool, constraint_param: &str) -> ApiError {
        let prompt_param = if chat { "messages" } else { "prompt" };
        let cfg = &self.shared.cfg;
        let flags = format!(
            "(--max-num-seqs {} + --max-queue {})",
            cfg.max_num_seqs, cfg.max_queue
        );
        match e {
            HearthError::ContextLength {
                prompt,
                completion,
                context,
            } => context_error(context, prompt, completion, chat),
            HearthError::InvalidField { field, message } if field == "n" => {
                ApiError::invalid_param("n", format!("{message} {flags}."))
            }
            HearthError::InvalidField { field, message }
                if field == "constraint" || field == "grammar" =>
            {
                let what = if constraint_param == "grammar" {
                    "grammar"
                } else {
                    "response_format"
                };
                ApiError::invalid_param(constraint_param, format!("Invalid {what}: {message}"))
            }
            HearthError::InvalidField { field, message } => {
                let param = if field == "prompt" {
                    prompt_param
                } else {
                    &field
                };
                ApiError::invalid_param(param, message)
            }
            HearthError::Busy(m) => {
                ApiError::queue_full(format!("The server is busy: {m} {flags}."))
            }
            HearthError::Stopped(_) => ApiError::shutting_down(),
            HearthError::InvalidRequest(m) => ApiError::invalid_param(prompt_param, m),
            HearthError::OutOfKvMemory(m) => ApiError::invalid_param("max_tokens", m),
            HearthError::Template(m) => ApiError::invalid_param("messages", m),
            e @ HearthError::Tokenizer(_) => ApiError::invalid_param(prompt_param, e.to_string()),
            e => ApiError::internal(e.to_string()),
        }
    }

    /// Counts `seqs` sequences as held until the guard drops (the request
    /// is in the engine, or refused); a 429 when the engine's running and
    /// queued sequences plus those being prepared would pass
    /// `--max-num-seqs` + `--max-queue`.
    fn reserve(&self, seqs: usize) -> Result<Reservation, HearthError> {
        let cap = self.shared.cfg.max_num_seqs + self.shared.cfg.max_queue;
        let stats = self.snapshot();
        let in_engine = stats.running + stats.waiting;
        let preparing = &self.shared.preparing;
        let before = preparing.fetch_add(seqs, Ordering::SeqCst);
        let reservation = Reservation {
            shared: self.shared.clone(),
            seqs,
        };
        // Larger than the cap alone: the engine names `n` in its error.
        if seqs <= cap && in_engine + before + seqs > cap {
            return Err(HearthError::Busy(format!(
                "{in_engine} sequences are running or queued and {before} are being prepared; \
                 the server holds at most {cap}; retry later"
            )));
        }
        Ok(reservation)
    }

    /// Queues every prompt of `job` (all or none) and returns the merged
    /// events of its choices, choice `p * n + i` for sample `i` of prompt `p`.
    pub async fn submit(
        &self,
        id: String,
        job: Job,
        arrived: Instant,
    ) -> Result<(Admitted, JobEvents), ApiError> {
        let chat = job.endpoint == Endpoint::Chat;
        let mut reserved = self
            .reserve(job.prompts.len() * job.n)
            .map_err(|e| self.request_error(e, chat, job.constraint_param))?;
        let mut streams: SelectAll<BoxStream<'static, (usize, hearth::Event)>> = SelectAll::new();
        let mut prompt_tokens = 0;
        for (p, input) in job.prompts.iter().enumerate() {
            let mut sampling = job.opts.sampling.clone();
            // Choice p * n + i draws seed + p * n + i (the engine adds i).
            sampling.seed = sampling.seed.map(|s| s.wrapping_add((p * job.n) as u64));
            let mut req = Request {
                prompt: match input {
                    PromptInput::Text(t) => Prompt::Text(t.clone()),
                    PromptInput::Chat(m) => Prompt::Chat(m.clone()),
                    PromptInput::Ids(ids) => Prompt::Ids(ids.clone()),
                },
                max_tokens: job.max_tokens,
                sampling,
                stop: job.opts.stop.clone(),
                ignore_eos: job.opts.ignore_eos,
                logprobs: job.opts.logprobs,
                n: job.n,
                draft: job.draft,
                constraint: job.opts.constraint.clone(),
                tools: job.tools.tools.clone(),
                tool_choice: job.tools.choice.clone(),
                parallel_tool_calls: job.tools.parallel,
                embed: false,
            };
            let preparer = self.shared.preparer.clone();
            let prepared = tokio::task::spawn_blocking(move || {
                let r = preparer.prepare(&mut req);
                (req, r)
            })
            .await;
            let req = match prepared {
                Ok((req, Ok(_))) => req,
                Ok((_, Err(e))) => return Err(self.request_error(e, chat, job.constraint_param)),
                Err(e) => return Err(ApiError::internal(format!("preparing the request: {e}"))),
            };
            // An error drops the streams queued so far, which aborts them.
            let s = self
                .handle
                .submit(req)
                .await
                .map_err(|e| self.request_error(e, chat, job.constraint_param))?;
            // The engine counts these now.
            reserved.release(job.n);
            prompt_tokens += s.prompt_tokens;
            let offset = p * job.n;
            streams.push(s.map(move |ev| (offset, ev)).boxed());
        }
        self.shared
            .metrics
            .prompt_tokens
            .inc_by(prompt_tokens as u64);
        let choices = job.choices();
        let events = JobEvents {
            id,
            endpoint: job.endpoint,
            shared: self.shared.clone(),
            streams,
            logprobs: job.logprobs,
            arrived,
            first_token: None,
            last_token: vec![None; choices],
            reasons: vec![None; choices],
            open: choices,
            prompt_tokens,
            completion_tokens: 0,
        };
        Ok((Admitted { prompt_tokens }, events))
    }
}

/// `/v1/embeddings`' side of the engine.
impl EngineClient {
    /// A 400 when the model cannot embed (it declares no pooling, and no
    /// `--pooling` was given).
    pub fn check_pooling(&self) -> Result<(), ApiError> {
        match &self.shared.no_embeddings {
            Some(m) => Err(ApiError::invalid_param("model", m.clone())),
            None => Ok(()),
        }
    }

    /// One input's token ids (text bounded in bytes first, then tokenized
    /// with the model's special tokens; ids checked against the
    /// vocabulary); errors name `input` and say which one (`at`).
    pub fn input_ids(&self, prompt: &Prompt, at: &str) -> Result<Vec<u32>, ApiError> {
        let bad = |m: String| ApiError::invalid_param("input", m);
        let max = self.shared.preparer.max_text_bytes();
        if let Prompt::Text(t) = prompt {
            if t.len() > max {
                return Err(bad(format!(
                    "{at} is {} bytes of text; the model's context of {} tokens holds at most {max}.",
                    t.len(),
                    self.context_length
                ))
                .with_code("context_length_exceeded"));
            }
        }
        let tok = &self.shared.tokenizer;
        let ids =
            hearth::api::encode_prompt(tok, None, prompt).map_err(|e| bad(format!("{at}: {e}")))?;
        if let Some(t) = ids.iter().find(|&&t| t as usize >= tok.vocab_size()) {
            return Err(bad(format!(
                "{at} holds token id {t}, outside the vocabulary ({} tokens).",
                tok.vocab_size()
            )));
        }
        Ok(ids)
    }

    /// Embeds every input through the engine, `wave` at a time (all of a
    /// wave batched in the same steps); vectors in input order.
    pub async fn embed(
        &self,
        inputs: Vec<Vec<u32>>,
        wave: usize,
        arrived: Instant,
    ) -> Result<Vec<Vec<f32>>, ApiError> {
        let tokens: usize = inputs.iter().map(Vec::len).sum();
        let mut out = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(wave.max(1)) {
            let mut streams = Vec::with_capacity(chunk.len());
            for ids in chunk {
                // An error drops the streams queued so far, which aborts them.
                let s = self
                    .handle
                    .submit(Request::embedding(Prompt::Ids(ids.clone())))
                    .await
                    .map_err(|e| self.request_error(e, false, "input"))?;
                streams.push(s);
            }
            for mut s in streams {
                let mut vector = None;
                while let Some(ev) = s.next_event().await {
                    match ev {
                        hearth::Event::Embedding(v) => vector = Some(v),
                        hearth::Event::Failed(e) => {
                            return Err(ApiError::internal(format!("Embedding failed: {e}")))
                        }
                        hearth::Event::Token { .. } | hearth::Event::Finished { .. } => {}
                    }
                }
                out.push(vector.ok_or_else(|| {
                    ApiError::internal("the engine ended an embedding without its vector")
                })?);
            }
        }
        self.shared.metrics.prompt_tokens.inc_by(tokens as u64);
        info!(
            endpoint = "/v1/embeddings",
            inputs = out.len(),
            prompt_tokens = tokens,
            total_ms = format!("{:.1}", arrived.elapsed().as_secs_f64() * 1e3),
            "request done"
        );
        Ok(out)
    }
}

/// Sequences counted in [`Shared::preparing`] until dropped.
struct Reservation {
    shared: Arc<Shared>,
    seqs: usize,
}

impl Reservation {
    fn release(&mut self, seqs: usize) {
        let seqs = seqs.min(self.seqs);
        self.seqs -= seqs;
        self.shared.preparing.fetch_sub(seqs, Ordering::SeqCst);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.shared.preparing.fetch_sub(self.seqs, Ordering::SeqCst);
    }
}

/// The events of one HTTP request's choices, merged; dropping it aborts
/// whatever is still running.
pub struct JobEvents {
    id: String,
    endpoint: Endpoint,
    shared: Arc<Shared>,
    streams: SelectAll<BoxStream<'static, (usize, hearth::Event)>>,
    logprobs: Option<usize>,
    arrived: Instant,
    first_token: Option<Instant>,
    last_token: Vec<Option<Instant>>,
    reasons: Vec<Option<FinishReason>>,
    open: usize,
    prompt_tokens: usize,
    completion_tokens: usize,
}

impl JobEvents {
    /// The next event; `None` after the last choice finished (or the engine stopped).
    pub async fn recv(&mut self) -> Option<Event> {
        let (offset, ev) = self.streams.next().await?;
        Some(match ev {
            hearth::Event::Embedding(_) => {
                return Some(Event::Failed(ApiError::internal(
                    "the engine answered a generation with an embedding",
                )))
            }
            hearth::Event::Token { choice, token } => {
                let choice = offset + choice;
                let m = &self.shared.metrics;
                let now = Instant::now();
                m.generation_tokens.inc();
                self.completion_tokens += 1;
                match self.last_token[choice] {
                    None => m.ttft.observe((now - self.arrived).as_secs_f64()),
                    Some(t) => m.itl.observe((now - t).as_secs_f64()),
                }
                self.last_token[choice] = Some(now);
                self.first_token.get_or_insert(now);
                let logprobs = self
                    .logprobs
                    .map(|k| self.token_logprobs(token.id, &token.top_logprobs, k));
                Event::Token {
                    choice,
                    text: token.text,
                    logprobs,
                }
            }
            hearth::Event::Finished { choice, finish } => {
                let choice = offset + choice;
                let m = &self.shared.metrics;
                m.spec_drafted.inc_by(finish.spec.drafted);
                m.spec_accepted.inc_by(finish.spec.accepted);
                self.reasons[choice] = Some(finish.reason);
                self.open = self.open.saturating_sub(1);
                if self.open == 0 {
                    self.log_done();
                }
                Event::Finished {
                    choice,
                    reason: finish.reason,
                    completion_tokens: finish.completion_tokens,
                }
            }
            hearth::Event::Failed(e) => {
                warn!(request = %self.id, "request failed: {e}");
                let message = match e {
                    e @ HearthError::OutOfKvMemory(_) => e.to_string(),
                    e => format!("Generation failed: {e}"),
                };
                Event::Failed(ApiError::internal(message))
            }
        })
    }

    fn token_logprobs(&self, id: u32, cands: &[(u32, f32)], top: usize) -> TokenLogprobs {
        let (tok, pieces) = (&self.shared.tokenizer, &self.shared.pieces);
        // The sampled token is among the candidates (see `openai::validate`);
        // -9999 is OpenAI's stand-in for "not computed".
        let logprob = cands
            .iter()
            .find(|(c, _)| *c == id)
            .map_or(-9999.0, |(_, lp)| *lp);
        TokenLogprobs {
            token: pieces.piece(tok, id),
            logprob,
            top: cands
                .iter()
                .take(top)
                .map(|&(c, lp)| (pieces.piece(tok, c), lp))
                .collect(),
        }
    }

    fn log_done(&self) {
        let total = self.arrived.elapsed();
        self.shared.metrics.e2e.observe(total.as_secs_f64());
        let reasons: Vec<&str> = self
            .reasons
            .iter()
            .map(|r| r.map_or("unfinished", FinishReason::as_str))
            .collect();
        let ttft_ms = self
            .first_token
            .map_or(f64::NAN, |t| (t - self.arrived).as_secs_f64() * 1e3);
        info!(
            request = %self.id,
            endpoint = self.endpoint.path(),
            prompt_tokens = self.prompt_tokens,
            completion_tokens = self.completion_tokens,
            finish = %reasons.join(","),
            ttft_ms = format!("{ttft_ms:.1}"),
            total_ms = format!("{:.1}", total.as_secs_f64() * 1e3),
            "request done"
        );
    }
}
