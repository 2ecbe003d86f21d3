//! One sequence's logical → physical block mapping.

use super::pool::KvPool;
use crate::Result;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockTable {
    blocks: Vec<u32>,
    len: u32,
}

impl BlockTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tokens (KV positions) held.
    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Physical block ids in logical order (what goes into the GPU block table).
    pub fn blocks(&self) -> &[u32] {
        &self.blocks
    }

    /// Blocks a sequence of `len` tokens needs.
    pub fn blocks_for(len: u32, block_size: u32) -> usize {
        len.div_ceil(block_size) as usize
    }

    /// Extra blocks that appending `n` tokens would allocate (for admission checks).
    pub fn blocks_needed(&self, n: u32, block_size: u32) -> usize {
        Self::blocks_for(self.len + n, block_size).saturating_sub(self.blocks.len())
    }

    /// Grows the sequence by `n` slots, allocating blocks as the last one fills.
    /// On error nothing changes.
    pub fn append(&mut self, pool: &mut KvPool, n: u32) -> Result<()> {
        let new_len = self
            .len
            .checked_add(n)
            .ok_or_else(|| crate::HearthError::OutOfKvMemory("sequence length overflow".into()))?;
        let need = self.blocks_needed(n, pool.block_size());
        let new = pool.allocate(need)?;
        self.blocks.extend(new);
        self.len = new_len;
        Ok(())
    }

    /// Appends a full block the caller already holds a reference to (a
    /// prefix-cache hit). Only at a block boundary: a shared block is never
    /// written again.
    pub fn push_full_block(&mut self, block: u32, block_size: u32) {
        debug_assert!(self.len == self.blocks.len() as u32 * block_size);
        self.blocks.push(block);
        self.len += block_size;
    }

    /// Shrinks to `len` tokens (speculative-decoding rollback), releasing blocks past it.
    pub fn truncate(&mut self, pool: &mut KvPool, len: u32) -> Result<()> {
        if len >= self.len {
            return Ok(());
        }
        let keep = Self::blocks_for(len, pool.block_size());
        pool.free(&self.blocks[keep..])?;
        self.blocks.truncate(keep);
        self.len = len;
        Ok(())
    }

    /// Releases every block.
    pub fn release(&mut self, pool: &mut KvPool) -> Result<()> {
        self.truncate(pool, 0)
    }

    /// (physical block, slot in block) of position `pos`, if held.
    pub fn slot(&self, pos: u32, block_size: u32) -> Option<(u32, u32)> {
        if pos >= self.len {
            return None;
        }
        Some((self.blocks[(pos / block_size) as usize], pos % block_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{KvDtype, KvLayout};

    fn pool(n: u32) -> KvPool {
        let layout = KvLayout {
            n_layers: 1,
            n_kv_heads: 1,
            head_dim: 2,
            block_size: 4,
        };
        KvPool::with_blocks(layout, KvDtype::F32, n)
    }

    #[test]
    fn append_allocates_when_last_block_fills() {
        let mut p = pool(4);
        let mut t = BlockTable::new();
        t.append(&mut p, 1).unwrap();
        assert_eq!((t.len(), t.blocks().len()), (1, 1));
        t.append(&mut p, 3).unwrap();
        assert_eq!(t.blocks().len(), 1);
        t.append(&mut p, 1).unwrap();
        assert_eq!(t.blocks().len(), 2);
        assert_eq!(t.slot(4, 4), Some((t.blocks()[1], 0)));
        assert_eq!(t.slot(5, 4), None);
        assert!(t.append(&mut p, 20).is_err());
        assert_eq!(
            (t.len(), p.used_blocks()),
            (5, 2),
            "failed append changes nothing"
        );
    }

    #[test]
    fn truncate_and_release_return_blocks() {
        let mut p = pool(8);
        let mut t = BlockTable::new();
        t.append(&mut p, 13).unwrap();
        assert_eq!(p.used_blocks(), 4);
        t.truncate(&mut p, 9).unwrap();
        assert_eq!((t.len(), t.blocks().len(), p.used_blocks()), (9, 3, 3));
        t.truncate(&mut p, 8).unwrap();
        assert_eq!(p.used_blocks(), 2);
        t.truncate(&mut p, 100).unwrap();
        assert_eq!(t.len(), 8);
        t.release(&mut p).unwrap();
        assert_eq!((t.len(), p.used_blocks()), (0, 0));
    }
}
