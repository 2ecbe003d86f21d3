//! The structs C fills in and reads, and their translation to the runtime's
//! types. Fields C writes that select among values are plain integers, not
//! Rust enums: a C caller can store any number there, and an out-of-range
//! value in a Rust enum would be undefined behaviour instead of an error.

use std::ffi::{c_char, c_void};

use hearth::engine::SamplingParams;
use hearth::gpu::GpuOptions;
use hearth::model::forward::ForwardOptions;
use hearth::text::chat::ChatMessage;
use hearth::{EngineConfig, EngineOptions, Prompt, Request};

use crate::error::{opt_str_arg, str_arg, Failure, HearthStatus};

/// How `HearthRequest::prompt` is read (`HearthRequest::prompt_kind`).
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HearthPromptKind {
    /// A user message, rendered with the model's chat template (after
    /// `HearthRequest::system` as a system message, if set).
    HEARTH_PROMPT_CHAT = 0,
    /// Raw text given to the model as it is; special-token markup in it
    /// (e.g. `<|im_start|>`) is read as special tokens.
    HEARTH_PROMPT_TEXT = 1,
}

/// How the engine is loaded. Start from `hearth_options_default()`: fields
/// may be added at the end in later versions, and zero keeps a default.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HearthOptions {
    /// Bytes of GPU memory for the KV cache (0: 256 MiB). It bounds how many
    /// tokens all requests together hold.
    pub kv_memory: u64,
    /// Requests stepped together in one batch (0: 4); more wait their turn.
    pub max_batch: u32,
    /// Requests held at once, running and waiting; past it `hearth_submit`
    /// fails with `HEARTH_ERR_BUSY` (0: no limit but the KV cache).
    pub max_requests: u32,
    /// The GPU adapter: an index as `hearth info` lists them, or a
    /// case-insensitive part of its name; NULL: the `HEARTH_ADAPTER`
    /// environment variable, else the best adapter.
    pub adapter: *const c_char,
}

const DEFAULT_KV_MEMORY: u64 = 256 << 20;
const DEFAULT_MAX_BATCH: u32 = 4;

impl Default for HearthOptions {
    fn default() -> Self {
        HearthOptions {
            kv_memory: DEFAULT_KV_MEMORY,
            max_batch: DEFAULT_MAX_BATCH,
            max_requests: 0,
            adapter: std::ptr::null(),
        }
    }
}

impl HearthOptions {
    /// # Safety
    /// `adapter` is NULL or a NUL-terminated string.
    pub unsafe fn to_engine(&self) -> Result<(EngineOptions, EngineConfig), Failure> {
        // SAFETY: the caller's contract.
        let adapter = unsafe { opt_str_arg(self.adapter, "options->adapter") }?;
        let kv_memory = if self.kv_memory == 0 {
            DEFAULT_KV_MEMORY
        } else {
            self.kv_memory
        };
        let batch = if self.max_batch == 0 {
            DEFAULT_MAX_BATCH
        } else {
            self.max_batch
        };
        // A sequence may add two parts to a step: a prompt chunk and its
        // generated rows (as `hearth serve` sizes it).
        let parts = batch
            .checked_mul(2)
            .filter(|&p| p <= 1 << 16)
            .ok_or_else(|| Failure::invalid("options->max_batch is too large"))?;
        let defaults = ForwardOptions::default();
        let mut gpu = GpuOptions::from_env();
        if let Some(a) = adapter {
            gpu.adapter = Some(a.to_string());
        }
        let engine = EngineOptions {
            gpu,
            forward: ForwardOptions {
                kv_memory,
                max_seqs: parts,
                max_logit_rows: parts.max(defaults.max_logit_rows),
                ..defaults
            },
            dummy_weights: false,
        };
        let config = EngineConfig {
            max_sequences: (self.max_requests > 0).then_some(self.max_requests as usize),
            ..EngineConfig::default()
        };
        Ok((engine, config))
    }
}

/// One generation request. Start from `hearth_request_default()` (greedy,
/// 256 tokens at most) and set `prompt`. The library copies what it needs
/// during `hearth_submit`: the strings may be freed once it returns.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HearthRequest {
    /// UTF-8, NUL-terminated; read as `prompt_kind` says.
    pub prompt: *const c_char,
    /// A `HearthPromptKind`.
    pub prompt_kind: u32,
    /// A system message before a chat prompt; NULL: none. Only with
    /// `HEARTH_PROMPT_CHAT`.
    pub system: *const c_char,
    /// Tokens to generate at most; 0: as many as the context leaves.
    pub max_tokens: u32,
    /// 0: greedy (the most likely token each step, deterministic).
    pub temperature: f32,
    /// Sample from the `top_k` most likely tokens (0: off).
    pub top_k: u32,
    /// Nucleus sampling: the smallest set of tokens whose probabilities add
    /// up to `top_p` (1: off).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (0: off).
    pub min_p: f32,
    /// Above 1 discourages tokens already in the prompt or output (1: off).
    pub repetition_penalty: f32,
    /// OpenAI's presence penalty (0: off).
    pub presence_penalty: f32,
    /// OpenAI's frequency penalty (0: off).
    pub frequency_penalty: f32,
    /// Whether `seed` is used; without one a seed is drawn from the clock.
    pub has_seed: bool,
    /// The same seed, prompt and options give the same tokens.
    pub seed: u64,
    /// Keep generating past end-of-sequence tokens.
    pub ignore_eos: bool,
    /// `stop_count` UTF-8 strings: generation ends when the text contains one
    /// (the text is cut before it). NULL when `stop_count` is 0.
    pub stop: *const *const c_char,
    pub stop_count: usize,
}

impl Default for HearthRequest {
    fn default() -> Self {
        let r = Request::default();
        let s = &r.sampling;
        HearthRequest {
            prompt: std::ptr::null(),
            prompt_kind: HearthPromptKind::HEARTH_PROMPT_CHAT as u32,
            system: std::ptr::null(),
            max_tokens: r.max_tokens.map_or(0, |n| n as u32),
            temperature: s.temperature,
            top_k: s.top_k as u32,
            top_p: s.top_p,
            min_p: s.min_p,
            repetition_penalty: s.repetition_penalty,
            presence_penalty: s.presence_penalty,
            frequency_penalty: s.frequency_penalty,
            has_seed: false,
            seed: 0,
            ignore_eos: r.ignore_eos,
            stop: std::ptr::null(),
            stop_count: 0,
        }
    }
}

impl HearthRequest {
    /// The runtime's request; the engine validates the sampling fields.
    ///
    /// # Safety
    /// The pointers are NULL or valid as the field docs say.
    pub unsafe fn to_request(&self) -> Result<Request, Failure> {
        // SAFETY: the caller's contract, field by field.
        let text = unsafe { str_arg(self.prompt, "request->prompt") }?;
        let system = unsafe { opt_str_arg(self.system, "request->system") }?;
        let prompt = match self.prompt_kind {
            k if k == HearthPromptKind::HEARTH_PROMPT_CHAT as u32 => {
                let mut messages: Vec<ChatMessage> = Vec::new();
                messages.extend(system.map(|s| ChatMessage::new("system", s)));
                messages.push(ChatMessage::new("user", text));
                Prompt::Chat(messages)
            }
            k if k == HearthPromptKind::HEARTH_PROMPT_TEXT as u32 => {
                if system.is_some() {
                    return Err(Failure::invalid(
                        "request->system applies to chat prompts only (HEARTH_PROMPT_CHAT)",
                    ));
                }
                Prompt::Text(text.to_string())
            }
            k => {
                return Err(Failure::invalid(format!(
                    "request->prompt_kind is {k}, not a HearthPromptKind"
                )))
            }
        };
        let stop = if self.stop_count == 0 {
            Vec::new()
        } else if self.stop.is_null() {
            return Err(Failure::invalid(
                "request->stop is NULL but stop_count is not 0",
            ));
        } else {
            // SAFETY: `stop` points to `stop_count` string pointers.
            let ptrs = unsafe { std::slice::from_raw_parts(self.stop, self.stop_count) };
            ptrs.iter()
                .enumerate()
                .map(|(i, &p)| {
                    unsafe { str_arg(p, &format!("request->stop[{i}]")) }.map(String::from)
                })
                .collect::<Result<_, _>>()?
        };
        Ok(Request {
            prompt,
            max_tokens: (self.max_tokens > 0).then_some(self.max_tokens as usize),
            sampling: SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k as usize,
                top_p: self.top_p,
                min_p: self.min_p,
                repetition_penalty: self.repetition_penalty,
                presence_penalty: self.presence_penalty,
                frequency_penalty: self.frequency_penalty,
                seed: self.has_seed.then_some(self.seed),
            },
            stop,
            ignore_eos: self.ignore_eos,
            ..Request::default()
        })
    }
}

/// What a `HearthEvent` reports.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HearthEventKind {
    /// A generated token: `token_id` and `text`.
    HEARTH_EVENT_TOKEN = 0,
    /// The request ended: `finish_reason`, `prompt_tokens`, `completion_tokens`.
    /// The last event of the request.
    HEARTH_EVENT_FINISHED = 1,
    /// The request failed midway: `error` and `error_message`. The last
    /// event of the request.
    HEARTH_EVENT_FAILED = 2,
}

/// Why a request ended.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HearthFinishReason {
    /// Not finished (token and failure events).
    HEARTH_FINISH_NONE = 0,
    /// An end-of-sequence token or a stop string.
    HEARTH_FINISH_STOP = 1,
    /// `max_tokens` or the model's context reached.
    HEARTH_FINISH_LENGTH = 2,
    /// `hearth_cancel`, or the engine was freed.
    HEARTH_FINISH_CANCELLED = 3,
}

impl From<hearth::FinishReason> for HearthFinishReason {
    fn from(r: hearth::FinishReason) -> Self {
        match r {
            hearth::FinishReason::Stop => HearthFinishReason::HEARTH_FINISH_STOP,
            hearth::FinishReason::Length => HearthFinishReason::HEARTH_FINISH_LENGTH,
            hearth::FinishReason::Cancelled => HearthFinishReason::HEARTH_FINISH_CANCELLED,
        }
    }
}

/// One event of a request, as the callback sees it. Pointers in it are
/// valid only during the callback: copy what you keep.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HearthEvent {
    pub kind: HearthEventKind,
    /// The id `hearth_submit` returned.
    pub request_id: u64,
    /// The generated token (`HEARTH_EVENT_TOKEN`).
    pub token_id: u32,
    /// UTF-8 text that became final with this token, `text_len` bytes plus a
    /// terminating NUL; may be empty while a multi-byte character or a
    /// possible stop string is incomplete. Never NULL.
    pub text: *const c_char,
    pub text_len: usize,
    pub finish_reason: HearthFinishReason,
    /// Prompt and generated token counts (`HEARTH_EVENT_FINISHED`).
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Why the request failed (`HEARTH_EVENT_FAILED`), else `HEARTH_OK`.
    pub error: HearthStatus,
    /// The failure's message, NUL-terminated (`HEARTH_EVENT_FAILED`), else NULL.
    pub error_message: *const c_char,
}

/// Receives a request's events, in order, on a thread the library owns
/// (one per request): calls for one request never overlap, calls for
/// different requests may run at once, and the first may come before
/// `hearth_submit` returns. The last call is a `HEARTH_EVENT_FINISHED` or
/// `HEARTH_EVENT_FAILED` event; after it returns the library does not touch
/// `user_data` again. The callback may call any `hearth_*` function,
/// `hearth_engine_free` included. Other requests go on generating while it
/// runs, but this request's next events wait for it: return quickly.
pub type HearthEventCallback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, event: *const HearthEvent)>;
