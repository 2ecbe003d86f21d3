//! Prefix caching: full KV blocks are keyed by a hash of their tokens and of
//! everything before them, so a request that starts like an earlier one (a
//! shared system prompt, a chat history) reuses those blocks instead of
//! recomputing them. The pool keeps an unreferenced cached block out of the
//! free list, in an LRU order, until an allocation needs it.
//!
//! A block's K/V bits also depend on which of its rows were prompt rows and
//! which were generated ones (they take different kernels, see
//! `SeqStep::generated`), so that count is part of the key: a reused block
//! always holds the bits the sequence would have computed itself.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

/// Chain seed: the "parent" of a sequence's first block.
pub const ROOT_HASH: u64 = 0x6865_6172_7468_0001;

/// Hash of a full block given its parent's hash. Content-based, so any
/// sequence with the same prefix derives the same chain.
pub fn block_hash(parent: u64, tokens: &[u32], prompt_rows: u32) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    parent.hash(&mut h);
    prompt_rows.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// Counters for metrics: how much of the queried prompts the cache served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixStats {
    /// Tokens looked up at admission.
    pub query_tokens: u64,
    /// Of those, tokens whose K/V came from cached blocks.
    pub hit_tokens: u64,
    /// Cached blocks dropped to make room.
    pub evictions: u64,
}

impl PrefixStats {
    pub fn hit_rate(&self) -> f64 {
        if self.query_tokens == 0 {
            0.0
        } else {
            self.hit_tokens as f64 / self.query_tokens as f64
        }
    }
}

/// What a cached block holds; compared on lookup so that a hash collision
/// can never hand a sequence someone else's K/V.
#[derive(Debug, Clone)]
struct Entry {
    hash: u64,
    parent: u64,
    prompt_rows: u32,
    tokens: Box<[u32]>,
}

/// The index the pool consults. It knows nothing of reference counts: the
/// pool tells it when a cached block becomes unreferenced (`park`) or
/// referenced again (`unpark`).
#[derive(Debug, Clone, Default)]
pub struct PrefixIndex {
    by_hash: HashMap<u64, u32>,
    by_block: HashMap<u32, Entry>,
    /// Unreferenced cached blocks by the tick they were parked at (oldest first).
    lru: BTreeMap<u64, u32>,
    parked_at: HashMap<u32, u64>,
    tick: u64,
    pub stats: PrefixStats,
}

impl PrefixIndex {
    /// Cached blocks, referenced or not.
    pub fn len(&self) -> usize {
        self.by_block.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_block.is_empty()
    }

    /// Unreferenced cached blocks (allocatable after eviction).
    pub fn parked(&self) -> usize {
        self.lru.len()
    }

    pub fn is_cached(&self, block: u32) -> bool {
        self.by_block.contains_key(&block)
    }

    pub fn is_parked(&self, block: u32) -> bool {
        self.parked_at.contains_key(&block)
    }

    /// The cached block holding exactly this content, if any.
    pub fn find(&self, parent: u64, tokens: &[u32], prompt_rows: u32) -> Option<u32> {
        let hash = block_hash(parent, tokens, prompt_rows);
        let &b = self.by_hash.get(&hash)?;
        let e = &self.by_block[&b];
        (e.parent == parent && e.prompt_rows == prompt_rows && *e.tokens == *tokens).then_some(b)
    }

    /// Records `block` as holding this content; returns the block's hash. A
    /// content already cached in another block keeps that one.
    pub fn insert(&mut self, block: u32, parent: u64, tokens: &[u32], prompt_rows: u32) -> u64 {
        let hash = block_hash(parent, tokens, prompt_rows);
        if !self.by_hash.contains_key(&hash) && !self.by_block.contains_key(&block) {
            self.by_hash.insert(hash, block);
            self.by_block.insert(
                block,
                Entry {
                    hash,
                    parent,
                    prompt_rows,
                    tokens: tokens.into(),
                },
            );
        }
        hash
    }

    /// `block` lost its last reference: keep it, evictable, newest last.
    pub fn park(&mut self, block: u32) {
        self.tick += 1;
        self.lru.insert(self.tick, block);
        self.parked_at.insert(block, self.tick);
    }

    /// `block` is referenced again.
    pub fn unpark(&mut self, block: u32) {
        if let Some(t) = self.parked_at.remove(&block) {
            self.lru.remove(&t);
        }
    }

    /// Drops the least recently parked block from the cache and returns it.
    pub fn evict_oldest(&mut self) -> Option<u32> {
        let (_, b) = self.lru.pop_first()?;
        self.parked_at.remove(&b);
        if let Some(e) = self.by_block.remove(&b) {
            self.by_hash.remove(&e.hash);
        }
        self.stats.evictions += 1;
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_keys_chain_and_verify() {
        let mut ix = PrefixIndex::default();
        let h0 = ix.insert(7, ROOT_HASH, &[1, 2, 3, 4], 4);
        let h1 = ix.insert(3, h0, &[5, 6, 7, 8], 2);
        assert_eq!(ix.find(ROOT_HASH, &[1, 2, 3, 4], 4), Some(7));
        assert_eq!(ix.find(h0, &[5, 6, 7, 8], 2), Some(3));
        assert_eq!(ix.find(h0, &[5, 6, 7, 8], 4), None, "rows of another kind");
        assert_eq!(ix.find(ROOT_HASH, &[5, 6, 7, 8], 2), None, "another prefix");
        assert_ne!(h0, h1);
        // The same content again keeps the first block.
        assert_eq!(ix.insert(9, ROOT_HASH, &[1, 2, 3, 4], 4), h0);
        assert_eq!(ix.find(ROOT_HASH, &[1, 2, 3, 4], 4), Some(7));
        assert_eq!(ix.len(), 2);
    }

    #[test]
    fn eviction_is_least_recently_parked_first() {
        let mut ix = PrefixIndex::default();
        let h = ix.insert(1, ROOT_HASH, &[1], 1);
        ix.insert(2, h, &[2], 1);
        ix.park(2);
        ix.park(1);
        ix.unpark(2);
        ix.park(2);
        assert_eq!(ix.evict_oldest(), Some(1));
        assert_eq!(ix.find(ROOT_HASH, &[1], 1), None);
        assert_eq!(ix.evict_oldest(), Some(2));
        assert_eq!(ix.evict_oldest(), None);
        assert_eq!(ix.stats.evictions, 2);
        assert!(ix.is_empty());
    }
}
