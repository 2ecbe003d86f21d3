//! The block pool: a free list and reference counts over `num_blocks`
//! physical blocks, sized once from a memory budget so that an over-long
//! workload gets [`HearthError::OutOfKvMemory`] instead of an allocation failure.
//! Blocks registered in the prefix cache outlive their last reference until
//! an allocation needs them (see [`super::prefix_cache`]).

use super::dtype::KvDtype;
use super::prefix_cache::{PrefixIndex, PrefixStats};
use crate::{HearthError, Result};

/// Shape of the cache; the GPU layout of one layer's K (and V) buffer is
/// `[block][kv_head][slot][head_dim]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLayout {
    pub n_layers: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    pub block_size: u32,
}

impl KvLayout {
    /// Head rows (token × KV head) of one block of K (or V) in one layer.
    pub fn block_rows(&self) -> u64 {
        self.n_kv_heads as u64 * self.block_size as u64
    }

    /// Bytes of K and V of one token over all layers, scales included.
    pub fn bytes_per_token(&self, dtype: KvDtype) -> u64 {
        2 * self.n_layers as u64 * self.n_kv_heads as u64 * dtype.row_bytes(self.head_dim)
    }
}

#[derive(Debug, Clone)]
pub struct KvPool {
    layout: KvLayout,
    dtype: KvDtype,
    /// Free block ids; allocation pops from the end, so low ids go first.
    free: Vec<u32>,
    refs: Vec<u32>,
    prefix: PrefixIndex,
}

impl KvPool {
    /// Bytes one block costs in one layer's K buffer (the V buffer costs the same).
    pub fn block_bytes_per_layer(layout: &KvLayout, dtype: KvDtype) -> u64 {
        layout.block_rows() * dtype.row_bytes(layout.head_dim)
    }

    /// Sizes the pool from `budget_bytes` (K and V of all layers). The block
    /// count is capped so that one layer's K buffer fits one storage binding
    /// (`max_binding`): beyond that the kernels could not address it.
    pub fn new(
        layout: KvLayout,
        dtype: KvDtype,
        budget_bytes: u64,
        max_binding: u64,
    ) -> Result<Self> {
        if layout.n_layers == 0 || layout.n_kv_heads == 0 || layout.block_size == 0 {
            return Err(HearthError::Config(format!("invalid KV layout {layout:?}")));
        }
        if layout.head_dim == 0 || !layout.head_dim.is_multiple_of(2) || layout.head_dim > 256 {
            return Err(HearthError::Unsupported(format!(
                "head_dim {} (the attention kernels need an even head_dim <= 256)",
                layout.head_dim
            )));
        }
        dtype.check_head_dim(layout.head_dim)?;
        let per_layer = Self::block_bytes_per_layer(&layout, dtype);
        let per_block_all = per_layer * 2 * layout.n_layers as u64;
        let by_budget = budget_bytes / per_block_all;
        let by_binding = max_binding / per_layer;
        let num_blocks = by_budget.min(by_binding).min(u32::MAX as u64 / 2);
        if num_blocks < by_budget {
            tracing::info!(
                by_budget,
                num_blocks,
                max_binding,
                "KV budget capped: one layer's K buffer must fit one storage binding"
            );
        }
        if num_blocks == 0 {
            return Err(HearthError::OutOfKvMemory(format!(
                "a budget of {budget_bytes} bytes holds no KV block ({per_block_all} bytes per block of {} tokens)",
                layout.block_size
            )));
        }
        Ok(Self::with_blocks(layout, dtype, num_blocks as u32))
    }

    /// A pool of exactly `num_blocks` blocks (tests, or a caller that sized it itself).
    pub fn with_blocks(layout: KvLayout, dtype: KvDtype, num_blocks: u32) -> Self {
        KvPool {
            layout,
            dtype,
            free: (0..num_blocks).rev().collect(),
            refs: vec![0; num_blocks as usize],
            prefix: PrefixIndex::default(),
        }
    }

    /// A pool of the same shape with every block free and an empty prefix
    /// cache: a fresh block manager for the same KV buffers.
    pub fn empty_like(&self) -> KvPool {
        KvPool::with_blocks(self.layout, self.dtype, self.num_blocks())
    }

    pub fn layout(&self) -> &KvLayout {
        &self.layout
    }
    pub fn dtype(&self) -> KvDtype {
        self.dtype
    }
    pub fn block_size(&self) -> u32 {
        self.layout.block_size
    }
    pub fn num_blocks(&self) -> u32 {
        self.refs.len() as u32
    }
    /// Blocks an allocation can have: never used, or cached but unreferenced.
    pub fn free_blocks(&self) -> u32 {
        (self.free.len() + self.prefix.parked()) as u32
    }
    /// Blocks some sequence references.
    pub fn used_blocks(&self) -> u32 {
        self.num_blocks() - self.free_blocks()
    }
    /// Blocks in the prefix cache, referenced or not.
    pub fn cached_blocks(&self) -> u32 {
        self.prefix.len() as u32
    }
    pub fn prefix_stats(&self) -> PrefixStats {
        self.prefix.stats
    }
    pub fn ref_count(&self, block: u32) -> u32 {
        self.refs.get(block as usize).copied().unwrap_or(0)
    }

    /// `n` blocks with reference count 1, or an error (and no change) if fewer
    /// are free. Never-used blocks go first; then the least recently
    /// released cached blocks are evicted from the prefix cache.
    pub fn allocate(&mut self, n: usize) -> Result<Vec<u32>> {
        if n > self.free_blocks() as usize {
            return Err(HearthError::OutOfKvMemory(format!(
                "need {n} blocks, {} of {} free",
                self.free_blocks(),
                self.num_blocks()
            )));
        }
        let fresh = n.min(self.free.len());
        let mut blocks: Vec<u32> = self.free.split_off(self.free.len() - fresh);
        blocks.reverse();
        while blocks.len() < n {
            blocks.push(self.prefix.evict_oldest().expect("counted as free"));
        }
        for &b in &blocks {
            self.refs[b as usize] = 1;
        }
        Ok(blocks)
    }

    /// The cached block holding this content (see [`super::prefix_cache`]);
    /// take it with [`KvPool::retain`].
    pub fn find_cached(&self, parent: u64, tokens: &[u32], prompt_rows: u32) -> Option<u32> {
        self.prefix.find(parent, tokens, prompt_rows)
    }

    /// Registers a full, computed block in the prefix cache; returns its
    /// hash (the parent of the next block).
    pub fn cache_block(
        &mut self,
        block: u32,
        parent: u64,
        tokens: &[u32],
        prompt_rows: u32,
    ) -> u64 {
        debug_assert!(self.ref_count(block) > 0, "caching a free block");
        self.prefix.insert(block, parent, tokens, prompt_rows)
    }

    /// Counts an admission's lookup for the hit-rate metric.
    pub fn record_prefix_query(&mut self, query_tokens: usize, hit_tokens: usize) {
        self.prefix.stats.query_tokens += query_tokens as u64;
        self.prefix.stats.hit_tokens += hit_tokens as u64;
    }

    /// Drops every unreferenced cached block into the free list.
    pub fn clear_prefix_cache(&mut self) {
        while let Some(b) = self.prefix.evict_oldest() {
            self.free.push(b);
        }
    }

    /// Adds a reference to an allocated block, or to a cached one nobody
    /// holds (which stops being evictable): a second sequence shares it.
    pub fn retain(&mut self, block: u32) -> Result<()> {
        let cached = self.prefix.is_parked(block);
        match self.refs.get_mut(block as usize) {
            Some(r) if *r > 0 || cached => {
                *r += 1;
                self.prefix.unpark(block);
                Ok(())
            }
            _ => Err(HearthError::OutOfKvMemory(format!(
                "retain of unallocated KV block {block}"
            ))),
        }
    }

    /// Drops one reference from each block; at zero a block returns to the
    /// free list, or, if cached, becomes evictable. All ids are checked
    /// before any is released. Pass a sequence's blocks in logical order:
    /// the later blocks are parked first, so they are evicted first and a
    /// shared head outlives its tails.
    pub fn free(&mut self, blocks: &[u32]) -> Result<()> {
        for &b in blocks {
            if self.ref_count(b) == 0 {
                return Err(HearthError::OutOfKvMemory(format!(
                    "free of unallocated KV block {b}"
                )));
            }
        }
        for &b in blocks.iter().rev() {
            let r = &mut self.refs[b as usize];
            *r -= 1;
            if *r == 0 {
                if self.prefix.is_cached(b) {
                    self.prefix.park(b);
                } else {
                    self.free.push(b);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> KvLayout {
        KvLayout {
            n_layers: 2,
            n_kv_heads: 3,
            head_dim: 64,
            block_size: 16,
        }
    }

    #[test]
    fn sizing_from_budget_and_binding_cap() {
        let per_layer = 3 * 16 * 64 * 2;
        let p = KvPool::new(layout(), KvDtype::F16, per_layer * 4 * 10 + 5, 1 << 30).unwrap();
        assert_eq!(p.num_blocks(), 10);
        let p = KvPool::new(layout(), KvDtype::F16, 1 << 40, per_layer * 7).unwrap();
        assert_eq!(p.num_blocks(), 7);
        assert!(KvPool::new(layout(), KvDtype::F32, 100, 1 << 30).is_err());
        let mut odd = layout();
        odd.head_dim = 63;
        assert!(KvPool::new(odd, KvDtype::F32, 1 << 30, 1 << 30).is_err());
        // Quantized rows need whole 32-element groups; f16 does not.
        odd.head_dim = 48;
        for dtype in [KvDtype::Q8, KvDtype::Q4] {
            let e = KvPool::new(odd, dtype, 1 << 30, 1 << 30).unwrap_err();
            assert!(
                matches!(&e, HearthError::Unsupported(m) if m.contains("head_dim 48") && m.contains(dtype.name())),
                "{e}"
            );
        }
        assert!(KvPool::new(odd, KvDtype::F16, 1 << 30, 1 << 30).is_ok());
    }

    #[test]
    fn allocate_free_exhaust_and_refcount() {
        let mut p = KvPool::with_blocks(layout(), KvDtype::F16, 5);
        let a = p.allocate(3).unwrap();
        assert_eq!(a, vec![0, 1, 2]);
        assert_eq!((p.used_blocks(), p.free_blocks()), (3, 2));
        assert!(matches!(p.allocate(3), Err(HearthError::OutOfKvMemory(_))));
        assert_eq!(p.free_blocks(), 2, "failed allocation changes nothing");
        p.retain(1).unwrap();
        p.free(&a).unwrap();
        assert_eq!(p.used_blocks(), 1);
        assert_eq!(p.ref_count(1), 1);
        assert!(p.free(&[0]).is_err(), "double free is an error");
        assert!(p.retain(4).is_err());
        assert!(p.retain(99).is_err());
        p.free(&[1]).unwrap();
        assert_eq!(p.free_blocks(), 5);
        assert_eq!(p.allocate(5).unwrap().len(), 5);
    }

    #[test]
    fn cached_blocks_outlive_their_last_reference_until_needed() {
        let mut p = KvPool::with_blocks(layout(), KvDtype::F16, 4);
        let a = p.allocate(2).unwrap();
        let h = p.cache_block(a[0], 0, &[1, 2], 2);
        p.cache_block(a[1], h, &[3, 4], 2);
        p.free(&a).unwrap();
        assert_eq!(
            (p.used_blocks(), p.free_blocks(), p.cached_blocks()),
            (0, 4, 2)
        );
        let b = p.find_cached(0, &[1, 2], 2).unwrap();
        assert_eq!((b, p.ref_count(b)), (a[0], 0));
        p.retain(b).unwrap();
        assert_eq!((p.used_blocks(), p.ref_count(b)), (1, 1));
        assert_eq!(p.find_cached(0, &[1, 2], 2), Some(b));
        // Two never-used blocks, then the parked tail block is evicted.
        let c = p.allocate(3).unwrap();
        assert!(c.contains(&a[1]) && !c.contains(&a[0]));
        assert_eq!(p.find_cached(h, &[3, 4], 2), None, "evicted");
        assert_eq!(p.prefix_stats().evictions, 1);
        assert!(p.allocate(1).is_err());
        p.free(&c).unwrap();
        p.free(&[b]).unwrap();
        p.clear_prefix_cache();
        assert_eq!((p.free_blocks(), p.cached_blocks()), (4, 0));
    }
}
