//! Per-step batch metadata shared by the kernels of a forward pass: which
//! sequence each token row belongs to, its position, and each sequence's
//! block table. Buffers are sized once for the largest step; each step only
//! writes its metadata with `queue.write_buffer` (no allocation).

use bytemuck::{Pod, Zeroable};

use super::StepInfo;
use crate::gpu::GpuContext;
use crate::{HearthError, Result};

/// One sequence of the step, as the kernels see it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, Default, PartialEq, Eq)]
pub struct SeqDesc {
    /// Valid KV positions after this step's writes.
    pub kv_len: u32,
    /// Index of the sequence's first entry in the concatenated block table.
    pub table_offset: u32,
    pub _pad: [u32; 2],
}

/// Host-side metadata of one step. Rows of one sequence need not be contiguous,
/// but each row's position must be covered by its sequence's blocks.
#[derive(Debug, Clone, Default)]
pub struct StepMeta {
    pub tokens: Vec<u32>,
    pub positions: Vec<u32>,
    pub row_seq: Vec<u32>,
    pub seqs: Vec<SeqDesc>,
    pub block_table: Vec<u32>,
}

impl StepMeta {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a sequence whose `tokens` occupy positions `start..start+len`, stored in
    /// `blocks` (its whole block table). Returns the sequence slot.
    pub fn push_seq(&mut self, tokens: &[u32], start: u32, blocks: &[u32]) -> u32 {
        let slot = self.seqs.len() as u32;
        self.seqs.push(SeqDesc {
            kv_len: start + tokens.len() as u32,
            table_offset: self.block_table.len() as u32,
            _pad: [0; 2],
        });
        self.block_table.extend_from_slice(blocks);
        for (i, &t) in tokens.iter().enumerate() {
            self.tokens.push(t);
            self.positions.push(start + i as u32);
            self.row_seq.push(slot);
        }
        slot
    }

    pub fn n_tokens(&self) -> u32 {
        self.tokens.len() as u32
    }

    /// Largest KV length of any sequence (attention sizes its split from it).
    pub fn max_kv_len(&self) -> u32 {
        self.seqs.iter().map(|s| s.kv_len).max().unwrap_or(0)
    }

    /// Checks internal consistency so a bad step never reaches a kernel.
    pub fn validate(&self, block_size: u32) -> Result<()> {
        let bad = |m: String| Err(HearthError::InvalidRequest(m));
        let n = self.tokens.len();
        if self.positions.len() != n || self.row_seq.len() != n {
            return bad("step metadata arrays differ in length".into());
        }
        for (t, (&p, &s)) in self.positions.iter().zip(&self.row_seq).enumerate() {
            let Some(seq) = self.seqs.get(s as usize) else {
                return bad(format!("row {t} refers to missing sequence {s}"));
            };
            if p >= seq.kv_len {
                return bad(format!(
                    "row {t}: position {p} beyond kv_len {}",
                    seq.kv_len
                ));
            }
        }
        for (i, s) in self.seqs.iter().enumerate() {
            let need = s.kv_len.div_ceil(block_size) as usize;
            if s.table_offset as usize + need > self.block_table.len() {
                return bad(format!(
                    "sequence {i} has fewer blocks than its kv_len needs"
                ));
            }
        }
        Ok(())
    }
}

/// GPU buffers for the step metadata, sized once.
pub struct BatchBuffers {
    pub step: wgpu::Buffer,
    pub tokens: wgpu::Buffer,
    pub positions: wgpu::Buffer,
    pub row_seq: wgpu::Buffer,
    pub seqs: wgpu::Buffer,
    pub block_table: wgpu::Buffer,
    pub max_tokens: u32,
    pub max_seqs: u32,
    pub max_blocks: u32,
    pub block_size: u32,
}

impl BatchBuffers {
    pub fn new(
        ctx: &GpuContext,
        max_tokens: u32,
        max_seqs: u32,
        max_blocks: u32,
        block_size: u32,
    ) -> Self {
        let u32s = |label, n: u32| ctx.buffer_zeroed(label, n.max(1) as u64 * 4);
        BatchBuffers {
            step: ctx.uniform("batch.step", &StepInfo::default()),
            tokens: u32s("batch.tokens", max_tokens),
            positions: u32s("batch.positions", max_tokens),
            row_seq: u32s("batch.row_seq", max_tokens),
            seqs: ctx.buffer_zeroed("batch.seqs", max_seqs.max(1) as u64 * 16),
            block_table: u32s("batch.block_table", max_blocks),
            max_tokens,
            max_seqs,
            max_blocks,
            block_size,
        }
    }

    /// Validates `meta` against the buffer capacities and queues its upload.
    pub fn write(&self, queue: &wgpu::Queue, meta: &StepMeta) -> Result<()> {
        meta.validate(self.block_size)?;
        if meta.n_tokens() > self.max_tokens
            || meta.seqs.len() > self.max_seqs as usize
            || meta.block_table.len() > self.max_blocks as usize
        {
            return Err(HearthError::InvalidRequest(format!(
                "step of {} tokens / {} sequences / {} blocks exceeds the batch capacity {}/{}/{}",
                meta.n_tokens(),
                meta.seqs.len(),
                meta.block_table.len(),
                self.max_tokens,
                self.max_seqs,
                self.max_blocks
            )));
        }
        let info = StepInfo {
            n_tokens: meta.n_tokens(),
            n_seqs: meta.seqs.len() as u32,
            ..Default::default()
        };
        queue.write_buffer(&self.step, 0, bytemuck::bytes_of(&info));
        let put = |buf: &wgpu::Buffer, bytes: &[u8]| {
            if !bytes.is_empty() {
                queue.write_buffer(buf, 0, bytes);
            }
        };
        put(&self.tokens, bytemuck::cast_slice(&meta.tokens));
        put(&self.positions, bytemuck::cast_slice(&meta.positions));
        put(&self.row_seq, bytemuck::cast_slice(&meta.row_seq));
        put(&self.seqs, bytemuck::cast_slice(&meta.seqs));
        put(&self.block_table, bytemuck::cast_slice(&meta.block_table));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_seq_builds_rows_and_tables() {
        let mut m = StepMeta::new();
        m.push_seq(&[7, 8, 9], 0, &[4, 2]);
        m.push_seq(&[5], 40, &[9, 1, 3]);
        assert_eq!(m.positions, vec![0, 1, 2, 40]);
        assert_eq!(m.row_seq, vec![0, 0, 0, 1]);
        assert_eq!(m.block_table, vec![4, 2, 9, 1, 3]);
        assert_eq!(m.seqs[1].table_offset, 2);
        assert_eq!((m.seqs[0].kv_len, m.max_kv_len()), (3, 41));
        assert!(m.validate(16).is_ok());
    }

    #[test]
    fn validate_rejects_inconsistent_steps() {
        let mut m = StepMeta::new();
        m.push_seq(&[1, 2], 30, &[0]);
        assert!(m.validate(16).is_err(), "positions 30..32 need 2 blocks");
        let mut m = StepMeta::new();
        m.push_seq(&[1], 0, &[0]);
        m.row_seq[0] = 3;
        assert!(m.validate(16).is_err());
        let mut m = StepMeta::new();
        m.push_seq(&[1], 0, &[0]);
        m.positions.push(0);
        assert!(m.validate(16).is_err());
    }
}
