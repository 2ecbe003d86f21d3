//! A step worked out from its sequence parts before anything touches the
//! GPU: the row layout (tokens, positions, block tables), where the generated
//! rows end, which rows get logits and with which penalties. Plain data, so
//! its rules are tested without an adapter.

use std::borrow::Cow;

use crate::gpu::kernels::batch::StepMeta;
use crate::gpu::kernels::logit_mask::{mask_words, MaskRow};
use crate::gpu::kernels::pool::Segment;
use crate::gpu::kernels::topk::PenaltyRow;
use crate::gpu::kernels::StepInfo;
use crate::{HearthError, Result};

/// One sequence's part of a step.
pub struct SeqStep<'a> {
    pub tokens: &'a [u32],
    /// Position of `tokens[0]`.
    pub start: u32,
    /// The sequence's whole block table (covering `start + tokens.len()` positions).
    pub blocks: &'a [u32],
    /// Return candidates for the last `logit_rows` tokens of this part (0: none).
    /// `penalty_counts` are those of the first such row; each later row also
    /// counts the part's tokens after the first one up to itself, as if
    /// they had been generated one at a time (speculative verification).
    pub logit_rows: u32,
    /// The tokens were generated (sampled), not part of a prompt: their rows
    /// go through the matrix-vector kernels, prompt rows through the tiled
    /// ones, whatever else is in the step, so a sequence's results do not
    /// depend on its batch. Generated parts must come first in a step.
    pub generated: bool,
    /// `(token id, count)` of tokens to penalise (empty: no penalties).
    pub penalty_counts: &'a [(u32, u32)],
    pub repetition_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// Constrained decoding: a bitmask of allowed tokens per logit row of this
    /// part, `logit_rows * ceil(vocab / 32)` u32 words, row after row (so each
    /// speculative verification row can have its own). Token `v` is allowed
    /// iff bit `v % 32` of word `v / 32` of its row's mask is 1; bits past the
    /// vocabulary are ignored; a row's mask must allow at least one token.
    /// Applied on the GPU after the penalties and before top-K: every
    /// candidate returned is allowed, and `Candidates::logsumexp` is over the
    /// allowed tokens only (logprobs are those of the constrained
    /// distribution). `None`: unconstrained, and a step in which no part has
    /// masks dispatches nothing for them.
    pub logit_masks: Option<&'a [u32]>,
    /// Embeddings: `(first, count)` rows of this part whose final-normed
    /// hidden states are summed into one pooled vector (see
    /// [`super::GpuModel::step_pooled`]); `None`: none.
    pub pool_rows: Option<(u32, u32)>,
}

impl<'a> SeqStep<'a> {
    /// `tokens` at `start` of a sequence stored in `blocks`, wanting logits, no penalties.
    pub fn new(tokens: &'a [u32], start: u32, blocks: &'a [u32]) -> Self {
        SeqStep {
            tokens,
            start,
            blocks,
            logit_rows: 1,
            generated: false,
            penalty_counts: &[],
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_masks: None,
            pool_rows: None,
        }
    }
}

/// What the loaded model can take in one step.
#[derive(Debug, Clone, Copy)]
pub(super) struct StepLimits {
    pub vocab_size: usize,
    pub max_step_tokens: u32,
    pub max_logit_rows: u32,
    /// Most parts with `pool_rows` in one step.
    pub max_pooled: u32,
}

/// The penalties of one logit row.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RowPenalties<'a> {
    /// Index among the step's logit rows (not among all its rows).
    pub row: u32,
    /// `(token id, count)`; borrowed unless drafts before this row add to it.
    pub counts: Cow<'a, [(u32, u32)]>,
    pub repetition: f32,
    pub presence: f32,
    pub frequency: f32,
}

/// A checked step, ready to be written to the batch buffers.
#[derive(Debug)]
pub(super) struct StepPlan<'a> {
    /// Rows in step order with their positions, sequence slots and block tables.
    pub meta: StepMeta,
    /// Leading rows that are generated tokens; the rest are prompt rows.
    pub n_gen: u32,
    /// Longest context among the generated rows' sequences (attention splits
    /// those rows' context by it).
    pub max_gen_kv: u32,
    /// Rows whose hidden state feeds the lm_head, in output order.
    pub logit_rows: Vec<u32>,
    /// Penalties of the logit rows whose part has any.
    pub penalties: Vec<RowPenalties<'a>>,
    /// `(logit row index, mask)` of the logit rows whose part has masks.
    pub masks: Vec<MaskRow<'a>>,
    /// `(first row, count)` in step rows of each part's pooled rows, in part order.
    pub pool_segs: Vec<Segment>,
}

impl<'a> StepPlan<'a> {
    pub fn new(seqs: &[SeqStep<'a>], limits: &StepLimits) -> Result<Self> {
        let invalid = |m: String| Err(HearthError::InvalidRequest(m));
        if seqs.iter().skip_while(|s| s.generated).any(|s| s.generated) {
            return invalid("generated-token parts must come before prompt parts in a step".into());
        }
        let mut meta = StepMeta::new();
        for s in seqs {
            if s.tokens.is_empty() {
                return invalid("empty step".into());
            }
            if let Some(t) = s.tokens.iter().find(|&&t| t as usize >= limits.vocab_size) {
                return invalid(format!(
                    "token id {t} out of range (vocab {})",
                    limits.vocab_size
                ));
            }
            meta.push_seq(s.tokens, s.start, s.blocks);
        }
        let n_tokens = meta.n_tokens();
        if n_tokens > limits.max_step_tokens {
            return invalid(format!(
                "step of {n_tokens} tokens exceeds max_step_tokens {}",
                limits.max_step_tokens
            ));
        }
        let generated = || seqs.iter().take_while(|s| s.generated);
        let n_gen = generated().map(|s| s.tokens.len() as u32).sum();
        let max_gen_kv = generated()
            .map(|s| s.start + s.tokens.len() as u32)
            .max()
            .unwrap_or(0);

        let mut logit_rows = Vec::new();
        let mut penalties = Vec::new();
        let mut masks = Vec::new();
        let words = mask_words(limits.vocab_size as u32) as usize;
        let mut row = 0u32;
        let mut pool_segs = Vec::new();
        for s in seqs {
            let n = s.tokens.len() as u32;
            if let Some((first, count)) = s.pool_rows {
                if count == 0 || first.checked_add(count).is_none_or(|e| e > n) {
                    return invalid(format!(
                        "pooled rows {first}..{} of a {n}-token part",
                        first.saturating_add(count)
                    ));
                }
                pool_segs.push([row + first, count]);
            }
            if s.logit_rows > n {
                return invalid(format!(
                    "logits wanted for {} rows of a {n}-token part",
                    s.logit_rows
                ));
            }
            let first = n - s.logit_rows;
            if let Some(m) = s.logit_masks {
                let want = s.logit_rows as usize * words;
                if m.len() != want {
                    return invalid(format!(
                        "logit masks of {} words for {} logit rows need {want} ({words} words per row for a vocabulary of {})",
                        m.len(),
                        s.logit_rows,
                        limits.vocab_size
                    ));
                }
                for (i, mask) in m.chunks_exact(words.max(1)).enumerate() {
                    let allows_any = (0..limits.vocab_size).step_by(32).zip(mask).any(|(v, &w)| {
                        let bits = limits.vocab_size - v;
                        let live = if bits >= 32 {
                            u32::MAX
                        } else {
                            (1u32 << bits) - 1
                        };
                        w & live != 0
                    });
                    if !allows_any {
                        return invalid(format!(
                            "the logit mask of row {i} of a part allows no token"
                        ));
                    }
                    masks.push((logit_rows.len() as u32 + i as u32, mask));
                }
            }
            for j in first..n {
                if !s.penalty_counts.is_empty() {
                    let mut counts = Cow::Borrowed(s.penalty_counts);
                    if j > first {
                        let extra = &s.tokens[first as usize + 1..=j as usize];
                        counts.to_mut().extend(extra.iter().map(|&t| (t, 1)));
                    }
                    penalties.push(RowPenalties {
                        row: logit_rows.len() as u32,
                        counts,
                        repetition: s.repetition_penalty,
                        presence: s.presence_penalty,
                        frequency: s.frequency_penalty,
                    });
                }
                logit_rows.push(row + j);
            }
            row += n;
        }
        if logit_rows.len() > limits.max_logit_rows as usize {
            return invalid(format!(
                "a step wants logits for {} rows, the model was loaded for {} (max_logit_rows)",
                logit_rows.len(),
                limits.max_logit_rows
            ));
        }
        if pool_segs.len() > limits.max_pooled as usize {
            return invalid(format!(
                "a step pools {} parts, the model was loaded for {} (max_seqs)",
                pool_segs.len(),
                limits.max_pooled
            ));
        }
        Ok(StepPlan {
            meta,
            n_gen,
            max_gen_kv,
            logit_rows,
            penalties,
            masks,
            pool_segs,
        })
    }

    pub fn n_tokens(&self) -> u32 {
        self.meta.n_tokens()
    }

    pub fn n_logit_rows(&self) -> u32 {
        self.logit_rows.len() as u32
    }

    pub fn has_prompt_rows(&self) -> bool {
        self.n_gen < self.n_tokens()
    }

    /// `StepInfo` of the matmuls' generated rows (matrix-vector kernels) and
    /// prompt rows (tiled kernels, starting after the generated ones).
    pub fn matmul_steps(&self) -> [StepInfo; 2] {
        [
            StepInfo {
                n_tokens: self.n_gen,
                ..Default::default()
            },
            StepInfo {
                n_tokens: self.n_tokens(),
                first_row: self.n_gen,
                ..Default::default()
            },
        ]
    }

    /// `StepInfo` of the final norm, lm_head and top-K: each logit row is a
    /// sequence of its own there.
    pub fn logit_step(&self) -> StepInfo {
        StepInfo {
            n_tokens: self.n_logit_rows(),
            n_seqs: self.n_logit_rows(),
            ..Default::default()
        }
    }

    /// The penalties in the form the penalties kernel takes.
    pub fn penalty_rows(&self) -> Vec<PenaltyRow<'_>> {
        self.penalties
            .iter()
            .map(|p| (p.row, &p.counts[..], p.repetition, p.presence, p.frequency))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: StepLimits = StepLimits {
        vocab_size: 100,
        max_step_tokens: 16,
        max_logit_rows: 8,
        max_pooled: 2,
    };

    fn plan<'a>(seqs: &[SeqStep<'a>]) -> Result<StepPlan<'a>> {
        StepPlan::new(seqs, &LIMITS)
    }

    fn error(seqs: &[SeqStep<'_>]) -> String {
        plan(seqs).unwrap_err().to_string()
    }

    #[test]
    fn empty_step_has_no_rows() {
        let p = plan(&[]).unwrap();
        assert_eq!((p.n_tokens(), p.n_gen, p.max_gen_kv), (0, 0, 0));
        assert!(p.logit_rows.is_empty() && p.penalties.is_empty());
        assert!(!p.has_prompt_rows());
        assert_eq!(p.matmul_steps(), [StepInfo::default(); 2]);
        assert_eq!(p.logit_step(), StepInfo::default());
    }

    #[test]
    fn prompt_part_gets_logits_for_its_last_row() {
        let p = plan(&[SeqStep::new(&[5, 6, 7], 0, &[3])]).unwrap();
        assert_eq!(p.meta.tokens, [5, 6, 7]);
        assert_eq!(p.meta.positions, [0, 1, 2]);
        assert_eq!(p.meta.block_table, [3]);
        assert_eq!((p.n_gen, p.max_gen_kv), (0, 0));
        assert!(p.has_prompt_rows());
        assert_eq!(p.logit_rows, [2]);
        let [matvec, tiled] = p.matmul_steps();
        assert_eq!(
            (matvec.n_tokens, tiled.n_tokens, tiled.first_row),
            (0, 3, 0)
        );
        assert_eq!((p.logit_step().n_tokens, p.logit_step().n_seqs), (1, 1));
    }

    #[test]
    fn chunked_prompt_parts_continue_at_their_start() {
        // A middle chunk wants no logits; the last one wants its last row's.
        let blocks = [4, 9, 2];
        let middle = SeqStep {
            logit_rows: 0,
            ..SeqStep::new(&[1, 2, 3, 4], 16, &blocks)
        };
        let p = plan(&[middle]).unwrap();
        assert_eq!(p.meta.positions, [16, 17, 18, 19]);
        assert_eq!(p.meta.seqs[0].kv_len, 20);
        assert!(p.logit_rows.is_empty());
        assert_eq!(p.logit_step(), StepInfo::default());

        let last = plan(&[SeqStep::new(&[5, 6], 20, &blocks)]).unwrap();
        assert_eq!(last.meta.positions, [20, 21]);
        assert_eq!(last.meta.seqs[0].kv_len, 22);
        assert_eq!(last.logit_rows, [1]);
    }

    #[test]
    fn several_sequences_put_generated_rows_first() {
        let decode_a = SeqStep {
            generated: true,
            ..SeqStep::new(&[11], 40, &[7, 8, 9])
        };
        let decode_b = SeqStep {
            generated: true,
            ..SeqStep::new(&[12], 5, &[1])
        };
        let prompt = SeqStep::new(&[20, 21, 22], 0, &[6]);
        let p = plan(&[decode_a, decode_b, prompt]).unwrap();
        assert_eq!(p.meta.tokens, [11, 12, 20, 21, 22]);
        assert_eq!(p.meta.positions, [40, 5, 0, 1, 2]);
        assert_eq!(p.meta.row_seq, [0, 1, 2, 2, 2]);
        assert_eq!(p.meta.block_table, [7, 8, 9, 1, 6]);
        let offsets: Vec<u32> = p.meta.seqs.iter().map(|s| s.table_offset).collect();
        assert_eq!(offsets, [0, 3, 4]);
        assert_eq!((p.n_gen, p.max_gen_kv), (2, 41));
        assert_eq!(p.logit_rows, [0, 1, 4]);
        let [matvec, tiled] = p.matmul_steps();
        assert_eq!(matvec.n_tokens, 2);
        assert_eq!((tiled.n_tokens, tiled.first_row), (5, 2));
        assert_eq!(p.logit_step().n_seqs, 3);
    }

    #[test]
    fn decode_only_step_has_no_prompt_rows() {
        let decode = SeqStep {
            generated: true,
            ..SeqStep::new(&[3], 9, &[0])
        };
        let p = plan(&[decode]).unwrap();
        assert!(!p.has_prompt_rows());
        let [matvec, tiled] = p.matmul_steps();
        assert_eq!(
            (matvec.n_tokens, tiled.n_tokens, tiled.first_row),
            (1, 1, 1)
        );
    }

    #[test]
    fn drafts_get_a_logit_row_each_with_growing_penalties() {
        // A sampled token and three drafts to verify, beside a penalised prompt.
        let counts = [(50, 2)];
        let verify = SeqStep {
            generated: true,
            logit_rows: 4,
            penalty_counts: &counts,
            repetition_penalty: 1.3,
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            ..SeqStep::new(&[10, 20, 30, 40], 8, &[2])
        };
        let plain = SeqStep {
            generated: true,
            ..SeqStep::new(&[60], 3, &[5])
        };
        let prompt = SeqStep {
            penalty_counts: &counts,
            ..SeqStep::new(&[70, 71], 0, &[4])
        };
        let p = plan(&[verify, plain, prompt]).unwrap();
        assert_eq!(p.logit_rows, [0, 1, 2, 3, 4, 6]);
        let rows: Vec<(u32, &[(u32, u32)])> =
            p.penalties.iter().map(|r| (r.row, &r.counts[..])).collect();
        assert_eq!(
            rows,
            [
                (0, &[(50, 2)][..]),
                (1, &[(50, 2), (20, 1)][..]),
                (2, &[(50, 2), (20, 1), (30, 1)][..]),
                (3, &[(50, 2), (20, 1), (30, 1), (40, 1)][..]),
                (5, &[(50, 2)][..]),
            ]
        );
        assert!(matches!(p.penalties[0].counts, Cow::Borrowed(_)));
        let first = &p.penalties[0];
        assert_eq!(
            (first.repetition, first.presence, first.frequency),
            (1.3, 0.5, 0.25)
        );
        assert_eq!(p.penalty_rows()[4], (5, &counts[..], 1.0, 0.0, 0.0));
        assert_eq!(p.logit_step().n_tokens, 6);
    }

    #[test]
    fn part_without_logits_needs_no_penalties() {
        let part = SeqStep {
            logit_rows: 0,
            penalty_counts: &[(1, 1)],
            ..SeqStep::new(&[1, 2], 0, &[0])
        };
        let p = plan(&[part]).unwrap();
        assert!(p.logit_rows.is_empty() && p.penalties.is_empty());
    }

    #[test]
    fn masks_are_gathered_per_logit_row() {
        // vocab 100: 4 words per row; the tail bits of word 3 past token 99 are ignored.
        let words = |allowed: &[u32]| {
            let mut m = vec![0u32; 4];
            for &v in allowed {
                m[v as usize / 32] |= 1 << (v % 32);
            }
            m
        };
        let verify_masks = [words(&[1]), words(&[2, 99]), words(&[0])].concat();
        let verify = SeqStep {
            generated: true,
            logit_rows: 3,
            logit_masks: Some(&verify_masks),
            ..SeqStep::new(&[10, 20, 30], 8, &[2])
        };
        let plain = SeqStep {
            generated: true,
            ..SeqStep::new(&[60], 3, &[5])
        };
        let prompt_mask = words(&[64]);
        let prompt = SeqStep {
            logit_masks: Some(&prompt_mask),
            ..SeqStep::new(&[70, 71], 0, &[4])
        };
        let p = plan(&[verify, plain, prompt]).unwrap();
        assert_eq!(p.logit_rows, [0, 1, 2, 3, 5]);
        let rows: Vec<u32> = p.masks.iter().map(|m| m.0).collect();
        assert_eq!(rows, [0, 1, 2, 4]);
        assert_eq!(p.masks[1].1, &verify_masks[4..8]);
        assert_eq!(p.masks[3].1, &prompt_mask[..]);
        let none = plan(&[SeqStep::new(&[1], 0, &[0])]).unwrap();
        assert!(none.masks.is_empty());
    }

    #[test]
    fn bad_masks_are_refused() {
        let short = [u32::MAX; 3];
        let part = SeqStep {
            logit_masks: Some(&short),
            ..SeqStep::new(&[1], 0, &[0])
        };
        assert!(error(&[part]).contains("logit masks of 3 words for 1 logit rows need 4"));
        let two = [u32::MAX; 4];
        let part = SeqStep {
            logit_rows: 2,
            logit_masks: Some(&two),
            ..SeqStep::new(&[1, 2], 0, &[0])
        };
        assert!(error(&[part]).contains("need 8"));
        // Only bits past the vocabulary (tokens 100..128) set: nothing allowed.
        let tail = [0, 0, 0, !0xf];
        let part = SeqStep {
            logit_masks: Some(&tail),
            ..SeqStep::new(&[1], 0, &[0])
        };
        assert!(error(&[part]).contains("row 0 of a part allows no token"));
    }

    #[test]
    fn bad_steps_are_refused() {
        let gen = SeqStep {
            generated: true,
            ..SeqStep::new(&[1], 0, &[0])
        };
        let prompt = || SeqStep::new(&[1], 0, &[0]);
        assert!(error(&[prompt(), gen]).contains("must come before"));
        assert!(error(&[SeqStep::new(&[], 0, &[0])]).contains("empty step"));
        assert!(error(&[SeqStep::new(&[3, 100], 0, &[0])]).contains("token id 100 out of range"));
        let long = [1u32; 17];
        assert!(error(&[SeqStep::new(&long, 0, &[0, 1])]).contains("exceeds max_step_tokens 16"));
        let greedy = SeqStep {
            logit_rows: 3,
            ..SeqStep::new(&[1, 2], 0, &[0])
        };
        assert!(error(&[greedy]).contains("logits wanted for 3 rows of a 2-token part"));
        let nine = [1u32; 9];
        let all = SeqStep {
            logit_rows: 9,
            ..SeqStep::new(&nine, 0, &[0])
        };
        assert!(error(&[all]).contains("logits for 9 rows"));
    }

    #[test]
    fn pooled_rows_become_step_row_segments() {
        let decode = SeqStep {
            generated: true,
            ..SeqStep::new(&[3], 9, &[0])
        };
        let mean = SeqStep {
            logit_rows: 0,
            pool_rows: Some((0, 3)),
            ..SeqStep::new(&[1, 2, 3], 0, &[1])
        };
        let last = SeqStep {
            logit_rows: 0,
            pool_rows: Some((1, 1)),
            ..SeqStep::new(&[4, 5], 0, &[2])
        };
        let p = plan(&[decode, mean, last]).unwrap();
        assert_eq!(p.pool_segs, [[1, 3], [5, 1]]);
        assert_eq!(p.logit_rows, [0]);
        let none = plan(&[SeqStep::new(&[1], 0, &[0])]).unwrap();
        assert!(none.pool_segs.is_empty());
    }

    #[test]
    fn bad_pooled_rows_are_refused() {
        let part = |rows| SeqStep {
            pool_rows: Some(rows),
            ..SeqStep::new(&[1, 2], 0, &[0])
        };
        assert!(error(&[part((1, 2))]).contains("pooled rows 1..3 of a 2-token part"));
        assert!(error(&[part((0, 0))]).contains("pooled rows 0..0"));
        assert!(error(&[part((u32::MAX, 2))]).contains("of a 2-token part"));
        let three = [part((0, 1)), part((0, 1)), part((0, 1))];
        assert!(error(&three).contains("pools 3 parts"));
    }
}
