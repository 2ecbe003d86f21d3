//! Sampling support on the GPU: top-K candidates per logits row (with the
//! row max and log-sum-exp for logprobs) and repetition/presence/frequency
//! penalties applied in place before it. Only the candidates are read back.

use bytemuck::{Pod, Zeroable};

use super::grid;
use crate::gpu::{GpuContext, ShaderSpec};
use crate::types::Candidates;
use crate::{HearthError, Result};

const SRC: &str = include_str!("../../../shaders/topk.wgsl");
const SRC_PEN: &str = include_str!("../../../shaders/penalties.wgsl");
const WG: u32 = 256;
/// Invocations of pass 2 (one workgroup per row); few, because a CPU
/// adapter pays per invocation at every barrier.
const WG_MERGE: u32 = 64;
/// Logits per pass-1 subset (serially scanned by one invocation).
const SUB_LEN: u32 = 64;
/// Most subsets per row (the size of the candidate buffer in topk.wgsl).
const MAX_SUB: u32 = 1024;
pub const MAX_K: u32 = 256;
/// Padded K values a pipeline exists for (K is rounded up to the next one).
const KP_BUCKETS: [u32; 4] = [1, 16, 64, 256];

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    vocab: u32,
    n_sub: u32,
    _p: [u32; 2],
}

struct Variant {
    kp: u32,
    select: std::sync::Arc<wgpu::ComputePipeline>,
    bind: wgpu::BindGroup,
}

pub struct TopK {
    stats: std::sync::Arc<wgpu::ComputePipeline>,
    bind_stats: wgpu::BindGroup,
    variants: Vec<Variant>,
    out: wgpu::Buffer,
    max_rows: u32,
    max_k: u32,
    vocab: u32,
    n_sub: u32,
}

fn padded_k(k: u32) -> u32 {
    KP_BUCKETS.into_iter().find(|&b| b >= k).unwrap_or(MAX_K)
}

impl TopK {
    /// For up to `max_rows` rows of `vocab` logits and K up to `max_k` (clamped to 1..=256).
    pub fn new(
        ctx: &GpuContext,
        logits: &wgpu::Buffer,
        max_rows: u32,
        vocab: u32,
        max_k: u32,
    ) -> Self {
        let max_k = max_k.clamp(1, MAX_K);
        let max_rows = max_rows.max(1);
        let n_sub = vocab.div_ceil(SUB_LEN).clamp(1, MAX_SUB);
        let kp_max = padded_k(max_k);
        let params = ctx.uniform(
            "topk.params",
            &Params {
                vocab,
                n_sub,
                _p: [0; 2],
            },
        );
        let scratch = ctx.buffer_zeroed("topk.scratch", max_rows as u64 * n_sub as u64 * 3 * 4);
        let stats = ctx.pipeline(
            &ShaderSpec::new("topk", SRC)
                .flag("STATS", true)
                .constant("WG", WG)
                .constant("KP", 1),
        );
        let bind_stats = ctx.bind_group(&stats, &[&params, logits, &scratch]);
        let out = ctx.buffer_zeroed("topk.out", max_rows as u64 * (2 * kp_max as u64 + 2) * 4);
        let variants = KP_BUCKETS
            .into_iter()
            .filter(|&kp| kp <= kp_max)
            .map(|kp| {
                let spec = ShaderSpec::new("topk", SRC)
                    .constant("WG", WG_MERGE)
                    .constant("KP", kp);
                let select = ctx.pipeline(&spec);
                let bind = ctx.bind_group(&select, &[&params, logits, &scratch, &out]);
                Variant { kp, select, bind }
            })
            .collect();
        TopK {
            stats,
            bind_stats,
            variants,
            out,
            max_rows,
            max_k,
            vocab,
            n_sub,
        }
    }

    /// The buffer [`TopK::parse_output`] reads (copy `output_bytes_for` bytes of it).
    pub fn output(&self) -> &wgpu::Buffer {
        &self.out
    }

    pub fn output_bytes(&self) -> u64 {
        self.output_bytes_for(self.max_rows, self.max_k)
    }

    /// Bytes holding the result of `record(_, n_rows, k)`.
    pub fn output_bytes_for(&self, n_rows: u32, k: u32) -> u64 {
        n_rows as u64 * (2 * padded_k(k.clamp(1, self.max_k)) as u64 + 2) * 4
    }

    /// Top-`k` of the first `n_rows` rows (`k` clamped to `1..=max_k`, rows to `max_rows`).
    pub fn record(&self, pass: &mut wgpu::ComputePass, n_rows: u32, k: u32) {
        let n_rows = n_rows.min(self.max_rows);
        if n_rows == 0 {
            return;
        }
        let kp = padded_k(k.clamp(1, self.max_k));
        let Some(v) = self.variants.iter().find(|v| v.kp == kp) else {
            return;
        };
        pass.set_pipeline(&self.stats);
        pass.set_bind_group(0, &self.bind_stats, &[]);
        pass.dispatch_workgroups(self.n_sub.div_ceil(WG), n_rows, 1);
        pass.set_pipeline(&v.select);
        pass.set_bind_group(0, &v.bind, &[]);
        pass.dispatch_workgroups(n_rows, 1, 1);
    }

    /// Decodes `output_bytes_for(n_rows, k)` bytes: per row the best `min(k, vocab)`
    /// candidates, best first, and the row's log-sum-exp.
    pub fn parse_output(&self, data: &[u8], n_rows: u32, k: u32) -> Vec<Candidates> {
        let k = k.clamp(1, self.max_k);
        let kp = padded_k(k) as usize;
        let n = (k.min(self.vocab)) as usize;
        let words: Vec<u32> = data
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        words
            .chunks_exact(2 * kp + 2)
            .take(n_rows as usize)
            .map(|r| Candidates {
                ids: r[..n].to_vec(),
                logits: r[kp..kp + n].iter().map(|&w| f32::from_bits(w)).collect(),
                logsumexp: f32::from_bits(r[2 * kp + 1]),
            })
            .collect()
    }
}

/// CPU reference: best `min(k, len)` (id, logit) of a row, larger logit first, ties by lower
/// id; and the row's log-sum-exp in f64.
pub fn topk_ref(row: &[f32], k: usize) -> (Vec<(u32, f32)>, f64) {
    let mut v: Vec<(u32, f32)> = row
        .iter()
        .enumerate()
        .map(|(i, &x)| (i as u32, x))
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(k);
    let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let s: f64 = row.iter().map(|&x| (x as f64 - m).exp()).sum();
    (v, m + s.ln())
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct PenParams {
    n_entries: u32,
    vocab: u32,
    _p: [u32; 2],
}

/// Penalties of one logits row: `(row, (token, count) list, repetition, presence, frequency)`.
/// Distinct penalised tokens per row the entry buffer holds.
const MAX_PENALISED: u32 = 32768;

pub type PenaltyRow<'a> = (u32, &'a [(u32, u32)], f32, f32, f32);

pub struct Penalties {
    pipeline: std::sync::Arc<wgpu::ComputePipeline>,
    bind: wgpu::BindGroup,
    params: wgpu::Buffer,
    entries: wgpu::Buffer,
    rows: wgpu::Buffer,
    max_rows: u32,
    vocab: u32,
    n_entries: u32,
    capacity: u32,
    max_dim: u32,
}

impl Penalties {
    pub fn new(ctx: &GpuContext, logits: &wgpu::Buffer, max_rows: u32, vocab: u32) -> Self {
        let max_rows = max_rows.max(1);
        let spec = ShaderSpec::new("penalties", SRC_PEN).constant("WG", WG);
        let pipeline = ctx.pipeline(&spec);
        let params = ctx.uniform(
            "penalties.params",
            &PenParams {
                n_entries: 0,
                vocab,
                _p: [0; 2],
            },
        );
        let capacity = max_rows as u64 * vocab.min(MAX_PENALISED) as u64;
        let entries = ctx.buffer_zeroed("penalties.entries", capacity * 8);
        let rows = ctx.buffer_zeroed("penalties.rows", max_rows as u64 * 16);
        let bind = ctx.bind_group(&pipeline, &[&params, &entries, &rows, logits]);
        Penalties {
            pipeline,
            bind,
            params,
            entries,
            rows,
            max_rows,
            vocab,
            n_entries: 0,
            capacity: capacity as u32,
            max_dim: ctx.caps.max_workgroups_per_dim,
        }
    }

    /// Uploads this step's penalties. Token ids are checked; repeated ids are merged.
    pub fn write(&mut self, queue: &wgpu::Queue, rows: &[PenaltyRow<'_>]) -> Result<()> {
        let mut entries: Vec<[u32; 2]> = Vec::new();
        let mut params = vec![[1f32, 0.0, 0.0, 0.0]; self.max_rows as usize];
        for &(row, counts, rep, pres, freq) in rows {
            if row >= self.max_rows {
                return Err(HearthError::InvalidRequest(format!(
                    "penalty row {row} >= {}",
                    self.max_rows
                )));
            }
            if !(rep.is_finite() && rep > 0.0 && pres.is_finite() && freq.is_finite()) {
                return Err(HearthError::InvalidRequest(format!(
                    "invalid penalties: repetition {rep}, presence {pres}, frequency {freq}"
                )));
            }
            params[row as usize] = [rep, pres, freq, 0.0];
            let mut sorted: Vec<(u32, u32)> = counts.to_vec();
            sorted.sort_unstable();
            for (tok, count) in sorted {
                if tok >= self.vocab {
                    return Err(HearthError::InvalidRequest(format!(
                        "penalised token {tok} outside the vocabulary of {}",
                        self.vocab
                    )));
                }
                let flat = row * self.vocab + tok;
                match entries.last_mut() {
                    Some(e) if e[0] == flat => e[1] = e[1].saturating_add(count),
                    _ => entries.push([flat, count]),
                }
            }
        }
        // Rows listed twice would repeat (row, token) pairs: reject rather than race.
        let mut flats: Vec<u32> = entries.iter().map(|e| e[0]).collect();
        flats.sort_unstable();
        if flats.windows(2).any(|w| w[0] == w[1]) {
            return Err(HearthError::InvalidRequest(
                "a penalty row is listed twice".into(),
            ));
        }
        if entries.len() > self.capacity as usize {
            return Err(HearthError::InvalidRequest(format!(
                "{} penalised tokens exceed the capacity of {}",
                entries.len(),
                self.capacity
            )));
        }
        self.n_entries = entries.len() as u32;
        let p = PenParams {
            n_entries: self.n_entries,
            vocab: self.vocab,
            _p: [0; 2],
        };
        queue.write_buffer(&self.params, 0, bytemuck::bytes_of(&p));
        queue.write_buffer(&self.rows, 0, bytemuck::cast_slice(&params));
        if !entries.is_empty() {
            queue.write_buffer(&self.entries, 0, bytemuck::cast_slice(&entries));
        }
        Ok(())
    }

    /// Applies the penalties of the last [`Penalties::write`] (`_n_rows` for symmetry with the other launchers).
    pub fn record(&self, pass: &mut wgpu::ComputePass, _n_rows: u32) {
        if self.n_entries == 0 {
            return;
        }
        let (x, y) = grid(self.n_entries.div_ceil(WG), self.max_dim);
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind, &[]);
        pass.dispatch_workgroups(x, y, 1);
    }
}

/// CPU reference of the penalties on one row.
pub fn penalties_ref(row: &mut [f32], counts: &[(u32, u32)], rep: f32, pres: f32, freq: f32) {
    for &(tok, count) in counts {
        let l = &mut row[tok as usize];
        *l = if *l > 0.0 { *l / rep } else { *l * rep };
        *l -= pres + freq * count as f32;
    }
}
