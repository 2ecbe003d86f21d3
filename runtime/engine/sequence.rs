//! What one request's generated tokens turn into: sampling from the GPU's
//! candidates, incremental text, stop strings (with text that could start
//! one held back), EOS, max tokens, log-probabilities and the token counts the
//! penalties need. The scheduler keeps one per sequence.

use std::collections::BTreeMap;

use super::request::{FinishReason, GenerateOptions};
use super::sampling::{Candidates, Sampler, SamplingParams};
use super::speculative::{Draft, Drafting};
use crate::kv::BlockTable;
use crate::model::forward::{GpuModel, SeqStep};
use crate::structured::ConstraintState;
use crate::text::stream::StreamDecoder;
use crate::text::Tokenizer;
use crate::{HearthError, Result};

/// `part` with the request's penalties over the token `counts`.
pub(crate) fn with_penalties<'a>(
    part: SeqStep<'a>,
    counts: &'a [(u32, u32)],
    sp: &SamplingParams,
) -> SeqStep<'a> {
    SeqStep {
        penalty_counts: counts,
        repetition_penalty: sp.repetition_penalty,
        presence_penalty: sp.presence_penalty,
        frequency_penalty: sp.frequency_penalty,
        ..part
    }
}

/// Checks a request against the model before any work: a non-empty prompt
/// inside the context and the vocabulary, and a KV pool that can hold the
/// prompt plus every token it may generate. Returns that token count.
pub fn check_request(
    model: &GpuModel,
    prompt: &[u32],
    opts: &GenerateOptions,
    has_draft: bool,
) -> Result<usize> {
    if prompt.is_empty() {
        return Err(HearthError::InvalidRequest(
            "the prompt is empty (no tokens)".into(),
        ));
    }
    let ctx_len = model.config.max_position_embeddings;
    if prompt.len() >= ctx_len {
        return Err(HearthError::ContextLength {
            prompt: prompt.len(),
            completion: opts.max_tokens,
            context: ctx_len,
        });
    }
    if let Some(&t) = prompt
        .iter()
        .find(|&&t| t as usize >= model.config.vocab_size)
    {
        return Err(HearthError::InvalidRequest(format!(
            "token id {t} is outside the vocabulary ({} tokens)",
            model.config.vocab_size
        )));
    }
    if opts.speculative.enabled() && opts.speculative.drafting == Drafting::Model && !has_draft {
        return Err(HearthError::InvalidRequest(
            "drafting with a draft model needs one attached to the target \
             (`--draft-model PATH` on the command line, `Engine::attach_draft` in the API)"
                .into(),
        ));
    }
    let max_new = opts.max_tokens.min(ctx_len - prompt.len());
    let need = BlockTable::blocks_for((prompt.len() + max_new) as u32, model.kv_block_size());
    if need > model.kv_blocks() as usize {
        return Err(HearthError::OutOfKvMemory(format!(
            "{} prompt + {max_new} new tokens need {need} KV blocks, the pool holds {} \
             (raise --kv-memory or lower --max-tokens)",
            prompt.len(),
            model.kv_blocks()
        )));
    }
    Ok(max_new)
}

/// Checks an embedding's prompt against the model: non-empty, within the
/// context (it may fill it: nothing is generated after it) and the
/// vocabulary, and within the KV pool.
pub fn check_embedding(model: &GpuModel, prompt: &[u32]) -> Result<()> {
    if prompt.is_empty() {
        return Err(HearthError::InvalidField {
            field: "input".into(),
            message: "the input is empty (no tokens)".into(),
        });
    }
    let ctx_len = model.config.max_position_embeddings;
    if prompt.len() > ctx_len {
        return Err(HearthError::InvalidField {
            field: "input".into(),
            message: format!(
                "the input has {} tokens, more than the model's context of {ctx_len}",
                prompt.len()
            ),
        });
    }
    if let Some(&t) = prompt
        .iter()
        .find(|&&t| t as usize >= model.config.vocab_size)
    {
        return Err(HearthError::InvalidRequest(format!(
            "token id {t} is outside the vocabulary ({} tokens)",
            model.config.vocab_size
        )));
    }
    let need = BlockTable::blocks_for(prompt.len() as u32, model.kv_block_size());
    if need > model.kv_blocks() as usize {
        return Err(HearthError::OutOfKvMemory(format!(
            "an input of {} tokens needs {need} KV blocks, the pool holds {} (raise --kv-memory)",
            prompt.len(),
            model.kv_blocks()
        )));
    }
    Ok(())
}

/// One accepted token as a caller sees it.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub id: u32,
    /// Text that became final with this token (may be empty).
    pub text: String,
    pub top_logprobs: Vec<(u32, f32)>,
    /// Set when this token ends the sequence.
    pub finish: Option<FinishReason>,
}

pub struct SeqOutput {
    sampler: Sampler,
    decoder: StreamDecoder,
    opts: GenerateOptions,
    /// Tokens this request may still generate at most (context included).
    max_new: usize,
    counts: BTreeMap<u32, u32>,
    pub ids: Vec<u32>,
    pub text: String,
    pub top_logprobs: Vec<Vec<(u32, f32)>>,
    shown: usize,
    pub finish: Option<FinishReason>,
    /// Structured output: where the text is in its constraint.
    constraint: Option<ConstraintState>,
}

/// Text not yet shown because it might be the start of a stop string.
pub(crate) fn held_back(text: &str, stop: &[String]) -> usize {
    let mut hold = 0;
    for s in stop {
        for k in (1..s.len()).rev() {
            if k > hold && text.ends_with(&s[..k]) && s.is_char_boundary(k) {
                hold = k;
                break;
            }
        }
    }
    hold
}

impl SeqOutput {
    /// `max_new`: the request's `max_tokens` already limited by the context.
    pub fn new(prompt_ids: &[u32], opts: &GenerateOptions, max_new: usize) -> Result<SeqOutput> {
        let sampler = Sampler::new(opts.sampling.clone())?;
        let mut counts = BTreeMap::new();
        if opts.sampling.has_penalties() {
            for &t in prompt_ids {
                *counts.entry(t).or_default() += 1;
            }
        }
        Ok(SeqOutput {
            sampler,
            decoder: StreamDecoder::new(true),
            opts: opts.clone(),
            max_new,
            counts,
            ids: Vec::new(),
            text: String::new(),
            top_logprobs: Vec::new(),
            shown: 0,
            // Nothing to generate (max_tokens 0): done before the first token.
            finish: (max_new == 0).then_some(FinishReason::Length),
            constraint: None,
        })
    }

    /// Keeps the output inside `c` (compiled for this request).
    pub fn with_constraint(mut self, c: Option<ConstraintState>) -> SeqOutput {
        self.constraint = c;
        self
    }

    /// Whether the output has a constraint.
    pub fn is_constrained(&self) -> bool {
        self.constraint.is_some()
    }

    /// Drops drafts from the first one the constraint refuses on (a refused
    /// draft could never be accepted), and drafts after the output would be
    /// complete. Cheaper than masks: it runs before the step is submitted.
    pub fn check_drafts(&mut self, drafts: &mut Draft) -> Result<()> {
        let Some(c) = self.constraint.as_mut() else {
            return Ok(());
        };
        let mut consumed = 0;
        for j in 0..drafts.len() {
            let t = drafts.tokens[j];
            if c.is_finished() || !c.allows(t)? {
                drafts.truncate(j);
                break;
            }
            c.consume(t)?;
            consumed += 1;
        }
        c.rollback(consumed)
    }

    /// The masks of the next logit rows under the constraint: the next
    /// token's, then one per draft token (checked by [`Self::check_drafts`]),
    /// each after the drafts before it. `None` without a constraint.
    pub fn constraint_masks(&mut self, drafts: &Draft) -> Result<Option<Vec<u32>>> {
        let Some(c) = self.constraint.as_mut() else {
            return Ok(None);
        };
        let mut masks = c.mask()?;
        for &t in &drafts.tokens {
            c.consume(t)?;
            masks.extend(c.mask()?);
        }
        c.rollback(drafts.len())?;
        Ok(Some(masks))
    }

    pub fn opts(&self) -> &GenerateOptions {
        &self.opts
    }

    /// Tokens this request may still generate.
    pub fn remaining(&self) -> usize {
        self.max_new.saturating_sub(self.ids.len())
    }

    /// Prompt followed by the generated tokens (what a drafter looks up in).
    pub fn context(&self, prompt: &[u32]) -> Vec<u32> {
        [prompt, &self.ids].concat()
    }

    /// Candidates the GPU must return per step for this request.
    pub fn candidates_needed(&self) -> usize {
        self.opts.sampling.candidates_needed(self.opts.logprobs)
    }

    /// `(token, count)` pairs for the penalty kernel (empty without penalties).
    pub fn penalty_counts(&self) -> Vec<(u32, u32)> {
        self.counts.iter().map(|(&a, &b)| (a, b)).collect()
    }

    /// Samples the next token from `c` and advances the text. A `finish`
    /// in the result means the sequence is over.
    pub fn accept(&mut self, tok: &Tokenizer, c: &Candidates) -> Result<Accepted> {
        let id = self.sampler.sample(c);
        self.push(tok, c, id)
    }

    /// Accepts tokens from verification rows: row `j` of `cands` follows
    /// `draft.tokens[..j]`. Stops at the first token that differs from its
    /// draft (it is still accepted: it was sampled from the right context)
    /// or that ends the sequence. Returns the tokens and how many of them
    /// confirmed drafts (their K/V, written by the step, stay valid).
    pub fn accept_verified(
        &mut self,
        tok: &Tokenizer,
        cands: &[Candidates],
        draft: &Draft,
    ) -> Result<(Vec<Accepted>, usize)> {
        let mut out = Vec::new();
        let mut confirmed = 0;
        for (j, c) in cands.iter().enumerate() {
            let id = match draft.tokens.get(j) {
                Some(&d) => self
                    .sampler
                    .sample_with_draft(c, d, draft.q.get(j).map(Vec::as_slice)),
                None => self.sampler.sample(c),
            };
            let a = self.push(tok, c, id)?;
            let matched = draft.tokens.get(j) == Some(&a.id);
            let done = a.finish.is_some();
            out.push(a);
            if !matched || done {
                break;
            }
            confirmed += 1;
        }
        Ok((out, confirmed))
    }

    fn push(&mut self, tok: &Tokenizer, c: &Candidates, id: u32) -> Result<Accepted> {
        let opts = &self.opts;
        self.ids.push(id);
        // The constraint ends the output as soon as it is complete (an
        // end-of-sequence token would be the only one allowed next).
        let complete = match self.constraint.as_mut() {
            Some(c) => {
                c.consume(id)?;
                c.is_finished()
            }
            None => false,
        };
        let lp: Vec<(u32, f32)> = (0..opts.logprobs.min(c.ids.len()))
            .map(|i| (c.ids[i], c.logprob(i)))
            .collect();
        let is_eos = !opts.ignore_eos && tok.is_eos(id);
        if !is_eos {
            self.text.push_str(&self.decoder.push(tok, id)?);
        }
        let stop_at = opts
            .stop
            .iter()
            .filter_map(|s| self.text.find(s.as_str()))
            .min();
        let at_max = self.ids.len() >= self.max_new;
        let last = is_eos || stop_at.is_some() || at_max || complete;
        if let Some(i) = stop_at {
            self.text.truncate(i);
        }
        if last {
            self.text.push_str(&self.decoder.finish(tok)?);
            if let Some(i) = opts
                .stop
                .iter()
                .filter_map(|s| self.text.find(s.as_str()))
                .min()
            {
                self.text.truncate(i);
            }
        }
        let hold = if last {
            0
        } else {
            held_back(&self.text, &opts.stop)
        };
        let visible = self.text.len() - hold;
        let chunk = if visible > self.shown {
            self.text[self.shown..visible].to_string()
        } else {
            String::new()
        };
        self.shown = self.shown.max(visible);
        self.top_logprobs.push(lp.clone());
        if opts.sampling.has_penalties() {
            *self.counts.entry(id).or_default() += 1;
        }
        self.finish = if is_eos || stop_at.is_some() || complete {
            Some(FinishReason::Stop)
        } else if at_max {
            Some(FinishReason::Length)
        } else {
            None
        };
        Ok(Accepted {
            id,
            text: chunk,
            top_logprobs: lp,
            finish: self.finish,
        })
    }

    #[doc(hidden)]
    pub fn debug_break_constraint(&mut self) {
        if let Some(c) = self.constraint.as_mut() {
            c.debug_break();
        }
    }

    /// Ends the sequence early (cancelled by the caller).
    pub fn cancel(&mut self) {
        self.finish.get_or_insert(FinishReason::Cancelled);
    }
}

#[cfg(test)]
mod tests {
    use super::held_back;

    #[test]
    fn holds_back_possible_stop_prefix() {
        let stop = vec!["###".to_string(), "END".to_string()];
        assert_eq!(held_back("hello #", &stop), 1);
        assert_eq!(held_back("hello ##", &stop), 2);
        assert_eq!(held_back("hello EN", &stop), 2);
        assert_eq!(held_back("hello", &stop), 0);
    }
}
