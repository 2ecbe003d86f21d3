//! Host side of the paged KV cache: pool accounting, block tables, and the
//! CPU paged attention reference against contiguous attention.

mod common;

use common::rand_vec;
use hearth::kv::reference::{causal_attention_ref, PagedKvRef};
use hearth::kv::{BlockTable, KvDtype, KvLayout, KvPool};
use hearth::HearthError;

fn layout(block_size: u32) -> KvLayout {
    KvLayout {
        n_layers: 3,
        n_kv_heads: 2,
        head_dim: 64,
        block_size,
    }
}

/// The same budget holds proportionally more tokens when K/V are quantized:
/// q8 at most 0.55x and q4 at most 0.32x the bytes per token of f16, scales
/// included, for the head sizes of Llama/Qwen/Mistral.
#[test]
fn quantized_kv_holds_more_tokens_in_the_same_budget() {
    let budget = 256u64 << 20;
    for head_dim in [64, 128] {
        let l = KvLayout {
            head_dim,
            ..layout(16)
        };
        let f16 = l.bytes_per_token(KvDtype::F16) as f64;
        let blocks = |d| KvPool::new(l, d, budget, 1 << 40).unwrap().num_blocks() as f64;
        let base = blocks(KvDtype::F16);
        for (dtype, ratio) in [(KvDtype::Q8, 0.55), (KvDtype::Q4, 0.32)] {
            let r = l.bytes_per_token(dtype) as f64 / f16;
            assert!(
                r <= ratio,
                "{dtype} hd {head_dim}: {r} of f16's bytes per token"
            );
            let gain = blocks(dtype) / base;
            assert!(
                gain >= 1.0 / ratio,
                "{dtype} hd {head_dim}: {gain}x the blocks of f16"
            );
        }
    }
    // SmolLM2-135M: 30 layers, 3 KV heads of 64.
    let smol = KvLayout {
        n_layers: 30,
        n_kv_heads: 3,
        head_dim: 64,
        block_size: 16,
    };
    let per_token: Vec<u64> = [KvDtype::F16, KvDtype::Q8, KvDtype::Q4]
        .map(|d| smol.bytes_per_token(d))
        .to_vec();
    assert_eq!(per_token, vec![23040, 12240, 7200]);
}

#[test]
fn budget_sets_block_count_and_binding_caps_it() {
    // K+V of 3 layers, f16: 2 * 3 * (2 * 16 * 64 * 2) bytes per block.
    let per_block = 2 * 3 * 2 * 16 * 64 * 2;
    let p = KvPool::new(layout(16), KvDtype::F16, per_block * 100 + 1, 128 << 20).unwrap();
    assert_eq!(p.num_blocks(), 100);
    let p = KvPool::new(layout(16), KvDtype::F32, per_block * 100, 128 << 20).unwrap();
    assert_eq!(p.num_blocks(), 50);
    // One layer's K buffer must fit one binding: 4096 bytes per block per layer.
    let p = KvPool::new(layout(16), KvDtype::F16, 1 << 40, 4096 * 10).unwrap();
    assert_eq!(p.num_blocks(), 10);
    assert!(matches!(
        KvPool::new(layout(16), KvDtype::F16, 10, 1 << 30),
        Err(HearthError::OutOfKvMemory(_))
    ));
}

#[test]
fn sequences_share_the_pool_until_exhausted() {
    let mut pool = KvPool::with_blocks(layout(16), KvDtype::F16, 10);
    let mut a = BlockTable::new();
    let mut b = BlockTable::new();
    a.append(&mut pool, 33).unwrap(); // 3 blocks
    b.append(&mut pool, 16).unwrap(); // 1 block
    assert_eq!((pool.used_blocks(), pool.free_blocks()), (4, 6));
    assert_eq!(b.blocks_needed(1, 16), 1);
    b.append(&mut pool, 1).unwrap();
    assert!(a.append(&mut pool, 16 * 6).is_err());
    assert_eq!(a.len(), 33);
    // Prefix sharing: b's first block is also referenced by a third table.
    let shared = b.blocks()[0];
    pool.retain(shared).unwrap();
    b.release(&mut pool).unwrap();
    assert_eq!(pool.ref_count(shared), 1);
    assert_eq!(pool.used_blocks(), 4);
    pool.free(&[shared]).unwrap();
    a.truncate(&mut pool, 17).unwrap();
    assert_eq!((a.blocks().len(), pool.used_blocks()), (2, 2));
    a.release(&mut pool).unwrap();
    assert_eq!(pool.free_blocks(), 10);
}

#[test]
fn paged_cpu_attention_equals_contiguous_across_block_boundaries() {
    let (n_heads, n_kv, hd, bs) = (6usize, 2usize, 16usize, 16u32);
    let mut pool = KvPool::with_blocks(layout(bs), KvDtype::F32, 64);
    // Interleave allocations of two sequences so each one's blocks are scattered.
    let mut t1 = BlockTable::new();
    let mut t2 = BlockTable::new();
    for _ in 0..5 {
        t1.append(&mut pool, 16).unwrap();
        t2.append(&mut pool, 16).unwrap();
    }
    t1.truncate(&mut pool, 70).unwrap();
    let mut cache = PagedKvRef::new(n_kv, hd, bs as usize, pool.num_blocks() as usize);
    let kv_dim = n_kv * hd;
    let k = rand_vec(70 * kv_dim, 1);
    let v = rand_vec(70 * kv_dim, 2);
    for p in 0..70 {
        let r = p * kv_dim..(p + 1) * kv_dim;
        cache.write(t1.blocks(), p, &k[r.clone()], &v[r]);
    }
    for &p in &[0usize, 14, 15, 16, 17, 31, 32, 33, 69] {
        let q = rand_vec(n_heads * hd, 100 + p as u64);
        let want = causal_attention_ref(&q, &k, &v, n_heads, n_kv, hd, p + 1);
        assert_eq!(
            cache.attend(&q, n_heads, t1.blocks(), p),
            want,
            "position {p}"
        );
    }
}
