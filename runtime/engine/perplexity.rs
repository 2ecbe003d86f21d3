//! Perplexity of a token stream under the model, with a sliding window
//! (the Hugging Face recipe): windows of `window` tokens advance by `stride`,
//! and each scores only the targets the previous window did not, so every
//! target after the first is scored once with at least `window - stride`
//! tokens of context. Full logit rows are read back and log-softmaxed on the
//! host in f64.

use crate::kv::BlockTable;
use crate::model::forward::{GpuModel, SeqStep};
use crate::{HearthError, Result};

#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct PerplexityResult {
    pub perplexity: f64,
    /// Targets scored.
    pub tokens: usize,
    /// Mean negative log-likelihood (nats per token).
    pub nll: f64,
    /// Share of targets that were the model's top-1 prediction.
    pub top1: f64,
}

/// Progress after each window: (targets scored so far, total).
pub type PerplexityProgress<'a> = dyn FnMut(usize, usize) + 'a;

/// Scores `tokens[1..]` given what precedes each.
pub async fn perplexity(
    model: &mut GpuModel,
    tokens: &[u32],
    window: usize,
    stride: usize,
    progress: &mut PerplexityProgress<'_>,
) -> Result<PerplexityResult> {
    if tokens.len() < 2 {
        return Err(HearthError::InvalidRequest(
            "perplexity needs at least 2 tokens".into(),
        ));
    }
    let ctx = model.config.max_position_embeddings;
    if window < 2 || window > ctx || stride == 0 || stride > window {
        return Err(HearthError::InvalidRequest(format!(
            "window {window} and stride {stride}: need 2 <= window <= the context ({ctx}) and 1 <= stride <= window"
        )));
    }
    let total = tokens.len() - 1;
    let (mut nll, mut hits, mut scored) = (0f64, 0usize, 0usize);
    // Next target position not scored yet.
    let mut next = 1usize;
    let mut start = 0usize;
    while next < tokens.len() {
        let end = (start + window).min(tokens.len());
        let w = score_window(model, &tokens[start..end], next - start).await?;
        nll += w.0;
        hits += w.1;
        scored += end - next;
        next = end;
        progress(scored, total);
        // Every target keeps at least one token of context, even with a
        // stride as long as the window.
        start = (start + stride).min(next - 1);
    }
    let mean = nll / scored as f64;
    Ok(PerplexityResult {
        perplexity: mean.exp(),
        tokens: scored,
        nll: mean,
        top1: hits as f64 / scored as f64,
    })
}

/// How many of `tokens[first..]` (`first >= 1`) are the model's top-1
/// prediction given the tokens before them, scored in one window: with
/// tokens a reference generated greedily, the share of its choices this
/// model (e.g. another KV dtype) would make too, position by position.
pub async fn top1_agreement(model: &mut GpuModel, tokens: &[u32], first: usize) -> Result<usize> {
    let ctx = model.config.max_position_embeddings;
    if first == 0 || first >= tokens.len() || tokens.len() > ctx {
        return Err(HearthError::InvalidRequest(format!(
            "top-1 agreement over tokens {first}..{} needs 1 <= {first} < {} <= the context ({ctx})",
            tokens.len(),
            tokens.len()
        )));
    }
    Ok(score_window(model, tokens, first).await?.1)
}

/// Feeds `w[..len - 1]` as a fresh sequence and scores targets
/// `w[first..]` (`first >= 1`); returns (sum of -log p, top-1 hits).
async fn score_window(model: &mut GpuModel, w: &[u32], first: usize) -> Result<(f64, usize)> {
    let chunk = (model.logit_capacity().min(model.max_step_tokens()) as usize).max(1);
    let vocab = model.config.vocab_size;
    // Its own block manager: perplexity runs on a model no engine is stepping
    // (an engine's prefix cache would not know these blocks were rewritten).
    let mut pool = model.new_kv_pool();
    let mut table = BlockTable::new();
    let result = async {
        let (mut nll, mut hits) = (0f64, 0usize);
        let fed = w.len() - 1;
        let mut pos = 0usize;
        while pos < fed {
            let end = (pos + chunk).min(fed);
            table.append(&mut pool, (end - pos) as u32)?;
            // Row r predicts w[r + 1]; rows from first - 1 on are scored.
            let from = pos.max(first - 1);
            let rows = end.saturating_sub(from);
            model
                .step(
                    &[SeqStep {
                        logit_rows: rows as u32,
                        ..SeqStep::new(&w[pos..end], pos as u32, table.blocks())
                    }],
                    1,
                )
                .await?;
            if rows > 0 {
                let logits = model.last_logits(rows).await?;
                for (i, row) in logits.chunks_exact(vocab).enumerate() {
                    let target = w[from + i + 1] as usize;
                    let (lp, top) = log_prob(row, target);
                    nll -= lp;
                    hits += top as usize;
                }
            }
            pos = end;
        }
        Ok((nll, hits))
    }
    .await;
    table.release(&mut pool)?;
    result
}

/// log-softmax of `row` at `target`, and whether `target` is the argmax.
pub fn log_prob(row: &[f32], target: usize) -> (f64, bool) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    let lp = row[target] as f64 - max - sum.ln();
    // Ties count as a hit only for the first maximal index, as argmax picks.
    let top = row.iter().position(|&x| x as f64 == max) == Some(target);
    (lp, top)
}
