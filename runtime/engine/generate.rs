//! The generation loop of one sequence: chunked prefill, then one step per
//! token, streaming text through a callback.

use web_time::Instant;

use super::draft_model::{self, DraftJob};
use super::sampling::SamplingParams;
use super::sequence::{check_request, with_penalties, SeqOutput};
use super::speculative::{Draft, SpecOptions, SpecStats, Speculator};
use crate::kv::BlockTable;
use crate::model::forward::{GpuModel, SeqStep};
use crate::text::Tokenizer;
use crate::{HearthError, Result};

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    /// Generation ends when the text contains one of these (it is cut before it).
    pub stop: Vec<String>,
    /// Keep going past end-of-sequence tokens.
    pub ignore_eos: bool,
    /// Top-K log-probabilities to report per generated token (0: none).
    pub logprobs: usize,
    /// Speculative decoding (off by default).
    pub speculative: SpecOptions,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            sampling: SamplingParams::default(),
            max_tokens: 256,
            stop: Vec::new(),
            ignore_eos: false,
            logprobs: 0,
            speculative: SpecOptions::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End-of-sequence token or stop string.
    Stop,
    /// `max_tokens` or the context length reached.
    Length,
    /// The callback asked to stop.
    Cancelled,
}

/// One generated token as the callback sees it.
pub struct TokenEvent<'a> {
    pub id: u32,
    /// Text that became final with this token (may be empty while UTF-8 or a
    /// possible stop string is incomplete).
    pub text: &'a str,
    pub top_logprobs: &'a [(u32, f32)],
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    pub ids: Vec<u32>,
    pub text: String,
    pub top_logprobs: Vec<Vec<(u32, f32)>>,
    pub finish_reason: FinishReason,
    pub prefill_secs: f64,
    pub decode_secs: f64,
    /// Drafted and accepted tokens (speculative decoding).
    pub spec: SpecStats,
}

impl Generation {
    pub fn prefill_tok_s(&self) -> f64 {
        self.prompt_ids.len() as f64 / self.prefill_secs.max(1e-9)
    }

    /// Decode rate over the tokens after the first (the first comes out of prefill).
    pub fn decode_tok_s(&self) -> f64 {
        self.ids.len().saturating_sub(1) as f64 / self.decode_secs.max(1e-9)
    }
}

/// Generates from `prompt_ids`. The callback returns `false` to stop early.
pub async fn generate(
    model: &mut GpuModel,
    tok: &Tokenizer,
    prompt_ids: &[u32],
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(TokenEvent) -> bool,
) -> Result<Generation> {
    let max_new = check_request(model, prompt_ids, opts)?;
    let mut out = SeqOutput::new(prompt_ids, opts, max_new)?;
    let mut spec = Speculator::new(opts.speculative, &opts.sampling)?;
    let mut table = BlockTable::new();
    let result = run(
        model, tok, prompt_ids, &mut out, &mut spec, &mut table, on_token,
    )
    .await;
    table.release(&mut model.pool)?;
    if let Some(s) = spec.as_mut() {
        s.release(model.draft.as_deref_mut().map(|d| &mut d.pool))?;
    }
    result
}

/// The draft for the next step: by lookup, or from the draft model.
async fn next_draft(
    model: &mut GpuModel,
    s: &mut Speculator,
    context: Vec<u32>,
    limit: usize,
) -> Result<Draft> {
    if s.uses_model() {
        let vocab = model.config.vocab_size;
        let k = s.k().min(limit);
        if let (Some(draft), Some(cache)) = (model.draft.as_deref_mut(), s.cache.as_mut()) {
            let mut jobs = [DraftJob {
                cache,
                context: context.clone(),
                k,
            }];
            s.pending = draft_model::propose(draft, vocab, &mut jobs).await?.pop();
        }
    }
    Ok(s.propose(&context, limit))
}

async fn run(
    model: &mut GpuModel,
    tok: &Tokenizer,
    prompt_ids: &[u32],
    out: &mut SeqOutput,
    spec: &mut Option<Speculator>,
    table: &mut BlockTable,
    on_token: &mut dyn FnMut(TokenEvent) -> bool,
) -> Result<Generation> {
    let sp = out.opts().sampling.clone();
    let k = out.candidates_needed();
    let chunk = model.max_step_tokens() as usize;
    let t0 = Instant::now();
    let mut pos = 0usize;
    let mut cands = Vec::new();
    while pos < prompt_ids.len() {
        let end = (pos + chunk).min(prompt_ids.len());
        table.append(&mut model.pool, (end - pos) as u32)?;
        let pc = out.penalty_counts();
        cands = model
            .step(
                &[SeqStep {
                    logit_rows: (end == prompt_ids.len()) as u32,
                    ..with_penalties(
                        SeqStep::new(&prompt_ids[pos..end], pos as u32, table.blocks()),
                        &pc,
                        &sp,
                    )
                }],
                k,
            )
            .await?;
        pos = end;
    }
    let prefill_secs = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    // Most tokens one verification step may carry.
    let max_part = (model.logit_capacity() as usize).min(chunk);
    let mut cands = vec![cands
        .into_iter()
        .next()
        .ok_or_else(|| HearthError::Gpu("step returned no candidates".into()))?];
    let mut drafts = Draft::default();
    while out.finish.is_none() {
        let (accepted, confirmed) = out.accept_verified(tok, &cands, &drafts)?;
        if let Some(s) = spec.as_mut() {
            s.record(drafts.len(), confirmed);
        }
        for a in &accepted {
            let go_on = on_token(TokenEvent {
                id: a.id,
                text: &a.text,
                top_logprobs: &a.top_logprobs,
            });
            if !go_on {
                out.cancel();
                break;
            }
        }
        if out.finish.is_some() {
            break;
        }
        // The cache holds the fed tokens up to the last confirmed draft;
        // rejected drafts' slots are given back.
        let p = prompt_ids.len() + out.ids.len() - 1;
        table.truncate(&mut model.pool, p as u32)?;
        let last = *out.ids.last().expect("a token was accepted");
        drafts = match spec.as_mut() {
            Some(s) => {
                let limit = out.remaining().saturating_sub(1).min(max_part - 1);
                next_draft(model, s, out.context(prompt_ids), limit).await?
            }
            None => Draft::default(),
        };
        if !drafts.is_empty()
            && table
                .append(&mut model.pool, 1 + drafts.len() as u32)
                .is_err()
        {
            drafts.clear();
        }
        if drafts.is_empty() {
            table.append(&mut model.pool, 1)?;
        }
        let tokens: Vec<u32> = std::iter::once(last)
            .chain(drafts.tokens.iter().copied())
            .collect();
        let pc = out.penalty_counts();
        cands = model
            .step(
                &[with_penalties(
                    SeqStep {
                        generated: true,
                        logit_rows: tokens.len() as u32,
                        ..SeqStep::new(&tokens, p as u32, table.blocks())
                    },
                    &pc,
                    &sp,
                )],
                k,
            )
            .await?;
    }
    Ok(Generation {
        prompt_ids: prompt_ids.to_vec(),
        ids: std::mem::take(&mut out.ids),
        text: std::mem::take(&mut out.text),
        top_logprobs: std::mem::take(&mut out.top_logprobs),
        finish_reason: out.finish.unwrap_or(FinishReason::Length),
        prefill_secs,
        decode_secs: t1.elapsed().as_secs_f64(),
        spec: spec.as_ref().map(|s| s.stats).unwrap_or_default(),
    })
}
