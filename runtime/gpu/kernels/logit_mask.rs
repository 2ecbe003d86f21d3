//! Constrained decoding on the GPU: a per-row bitmask of allowed tokens
//! applied to the logits in place, after the penalties and before top-K, so
//! every candidate that comes back is allowed. Only masked rows are touched
//! and nothing is dispatched when no row of a step has a mask.
//!
//! A mask is `words(vocab) = ceil(vocab / 32)` little-endian-bit u32 words:
//! token `v` is allowed iff bit `v % 32` of word `v / 32` is 1; bits past the
//! vocabulary are ignored. A disallowed logit becomes [`MASKED_LOGIT`] (the
//! lowest f32), which the top-K kernel treats as minus infinity: never ranked
//! above a real logit and left out of the log-sum-exp, so logprobs are
//! normalised over the allowed tokens only. An all-zero mask gives a row of
//! `MASKED_LOGIT`s: top-K returns the lowest ids with that value and a
//! log-sum-exp of -inf (no NaN); the forward pass refuses such masks.

use bytemuck::{Pod, Zeroable};

use super::grid;
use crate::gpu::{GpuContext, ShaderSpec};
use crate::{HearthError, Result};

const SRC: &str = include_str!("../../../shaders/logit_mask.wgsl");
const WG: u32 = 256;

/// What a disallowed logit becomes: the lowest finite f32 (WGSL has no
/// infinity constant; topk.wgsl's `neg_inf()`).
pub const MASKED_LOGIT: f32 = f32::MIN;

/// Mask words per row for a vocabulary of `vocab` tokens.
pub fn mask_words(vocab: u32) -> u32 {
    vocab.div_ceil(32)
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    vocab: u32,
    n_rows: u32,
    x_groups: u32,
    _p: u32,
}

/// One masked logit row: `(logit row index, its mask of mask_words(vocab) words)`.
pub type MaskRow<'a> = (u32, &'a [u32]);

pub struct LogitMask {
    pipeline: std::sync::Arc<wgpu::ComputePipeline>,
    bind: wgpu::BindGroup,
    params: wgpu::Buffer,
    entries: wgpu::Buffer,
    masks: wgpu::Buffer,
    max_rows: u32,
    vocab: u32,
    words: u32,
    n_rows: u32,
    /// Logit rows of the last `write`, in its order.
    rows: Vec<u32>,
    groups: (u32, u32),
    max_dim: u32,
}

impl LogitMask {
    /// For masks on up to `max_rows` rows of `logits` (`[rows, vocab]` f32);
    /// the mask buffer (`max_rows * mask_words(vocab)` words) is allocated here, once.
    pub fn new(ctx: &GpuContext, logits: &wgpu::Buffer, max_rows: u32, vocab: u32) -> Self {
        let max_rows = max_rows.max(1);
        let max_dim = ctx.caps.max_workgroups_per_dim;
        let groups = grid(vocab.div_ceil(WG), max_dim);
        let pipeline = ctx.pipeline(&ShaderSpec::new("logit_mask", SRC).constant("WG", WG));
        let params = ctx.uniform(
            "logit_mask.params",
            &Params {
                vocab,
                n_rows: 0,
                x_groups: groups.0,
                _p: 0,
            },
        );
        let words = mask_words(vocab);
        let entries = ctx.buffer_zeroed("logit_mask.entries", max_rows as u64 * 8);
        let masks = ctx.buffer_zeroed("logit_mask.masks", max_rows as u64 * words as u64 * 4);
        let bind = ctx.bind_group(&pipeline, &[&params, &entries, &masks, logits]);
        LogitMask {
            pipeline,
            bind,
            params,
            entries,
            masks,
            max_rows,
            vocab,
            words,
            n_rows: 0,
            rows: Vec::new(),
            groups,
            max_dim,
        }
    }

    /// Uploads this step's masks (rows in any order, each at most once; a mask
    /// is exactly `mask_words(vocab)` words). An empty list makes `record` a no-op.
    pub fn write(&mut self, queue: &wgpu::Queue, rows: &[MaskRow<'_>]) -> Result<()> {
        let invalid = |m: String| Err(HearthError::InvalidRequest(m));
        let cap = self.max_rows.min(self.max_dim);
        if rows.len() > cap as usize {
            return invalid(format!("{} masked rows exceed {cap}", rows.len()));
        }
        let mut entries = Vec::with_capacity(rows.len());
        let mut words = Vec::with_capacity(rows.len() * self.words as usize);
        for (i, &(row, mask)) in rows.iter().enumerate() {
            if row >= self.max_rows {
                return invalid(format!("masked row {row} >= {}", self.max_rows));
            }
            if mask.len() != self.words as usize {
                return invalid(format!(
                    "logit mask of {} words for a vocabulary of {} needs {}",
                    mask.len(),
                    self.vocab,
                    self.words
                ));
            }
            entries.push([row, i as u32 * self.words]);
            words.extend_from_slice(mask);
        }
        let mut listed: Vec<u32> = entries.iter().map(|e| e[0]).collect();
        listed.sort_unstable();
        if listed.windows(2).any(|w| w[0] == w[1]) {
            return invalid("a masked row is listed twice".into());
        }
        self.n_rows = rows.len() as u32;
        self.rows = listed;
        let p = Params {
            vocab: self.vocab,
            n_rows: self.n_rows,
            x_groups: self.groups.0,
            _p: 0,
        };
        queue.write_buffer(&self.params, 0, bytemuck::bytes_of(&p));
        if !entries.is_empty() {
            queue.write_buffer(&self.entries, 0, bytemuck::cast_slice(&entries));
            queue.write_buffer(&self.masks, 0, bytemuck::cast_slice(&words));
        }
        Ok(())
    }

    /// The logit rows the last [`LogitMask::write`] masked (sorted).
    pub fn rows(&self) -> &[u32] {
        &self.rows
    }

    /// Masks nothing until the next `write` (host side only: `record` then
    /// dispatches nothing, so the buffers need no upload).
    pub fn clear(&mut self) {
        self.n_rows = 0;
        self.rows.clear();
    }

    /// Applies the masks of the last [`LogitMask::write`]; nothing when there are none.
    pub fn record(&self, pass: &mut wgpu::ComputePass) {
        if self.n_rows == 0 {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind, &[]);
        pass.dispatch_workgroups(self.groups.0, self.groups.1, self.n_rows);
    }

    /// Logit bytes read and written by `record` with `n_rows` masked rows
    /// (every logit read, at most every logit written; masks not counted).
    pub fn bytes_moved(&self, n_rows: u32) -> u64 {
        2 * n_rows as u64 * self.vocab as u64 * 4
    }
}

/// Whether token `v` is allowed by `mask`.
pub fn mask_allows(mask: &[u32], v: u32) -> bool {
    (mask[(v / 32) as usize] >> (v % 32)) & 1 == 1
}

/// CPU reference: the mask applied to one row of logits.
pub fn logit_mask_ref(row: &mut [f32], mask: &[u32]) {
    for (v, l) in row.iter_mut().enumerate() {
        if !mask_allows(mask, v as u32) {
            *l = MASKED_LOGIT;
        }
    }
}
