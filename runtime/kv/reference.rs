//! CPU references: plain contiguous causal attention, and the same through a
//! paged cache. "Paged == contiguous" is one of the project's invariants; the
//! reference forward pass uses [`PagedKvRef`] so it exercises the block tables too.
//! What the cache gives back for a written row (f16 rounding, quantization)
//! is [`super::quant::round_pair`].

use super::dtype::KvDtype;
use super::quant::round_pair;

/// One query row (`n_heads * head_dim`) attending causally to `k`/`v` rows
/// `0..n_ctx` (each `n_kv_heads * head_dim`, contiguous). GQA: query head `h`
/// uses KV head `h / (n_heads / n_kv_heads)`. Accumulates in f64.
pub fn causal_attention_ref(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    n_ctx: usize,
) -> Vec<f32> {
    let kv_dim = n_kv_heads * head_dim;
    attend(q, n_heads, n_kv_heads, head_dim, n_ctx, |j, kvh| {
        let o = j * kv_dim + kvh * head_dim;
        (&k[o..o + head_dim], &v[o..o + head_dim])
    })
}

fn attend<'a>(
    q: &[f32],
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    n_ctx: usize,
    kv: impl Fn(usize, usize) -> (&'a [f32], &'a [f32]),
) -> Vec<f32> {
    let group = n_heads / n_kv_heads;
    let scale = 1.0 / (head_dim as f64).sqrt();
    let mut out = vec![0f32; n_heads * head_dim];
    for h in 0..n_heads {
        let qh = &q[h * head_dim..(h + 1) * head_dim];
        let kvh = h / group;
        let scores: Vec<f64> = (0..n_ctx)
            .map(|j| {
                let (kj, _) = kv(j, kvh);
                qh.iter()
                    .zip(kj)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>()
                    * scale
            })
            .collect();
        let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
        let l: f64 = w.iter().sum();
        for d in 0..head_dim {
            let acc: f64 = (0..n_ctx).map(|j| w[j] * kv(j, kvh).1[d] as f64).sum();
            out[h * head_dim + d] = (acc / l) as f32;
        }
    }
    out
}

/// One layer of paged cache on the host, f32, with the GPU layout
/// `[block][kv_head][slot][head_dim]`; each written head row is rounded the
/// way `dtype` stores it.
#[derive(Debug, Clone)]
pub struct PagedKvRef {
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub dtype: KvDtype,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

impl PagedKvRef {
    pub fn new(n_kv_heads: usize, head_dim: usize, block_size: usize, num_blocks: usize) -> Self {
        let n = num_blocks * n_kv_heads * block_size * head_dim;
        PagedKvRef {
            n_kv_heads,
            head_dim,
            block_size,
            dtype: KvDtype::F32,
            k: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    /// The same cache storing rows as `dtype`.
    pub fn with_dtype(mut self, dtype: KvDtype) -> Self {
        self.dtype = dtype;
        self
    }

    /// Element offset of (position `pos`, kv head `kvh`) through `blocks`.
    fn offset(&self, blocks: &[u32], pos: usize, kvh: usize) -> usize {
        let b = blocks[pos / self.block_size] as usize;
        ((b * self.n_kv_heads + kvh) * self.block_size + pos % self.block_size) * self.head_dim
    }

    /// Stores one position's K and V rows (`n_kv_heads * head_dim` each).
    pub fn write(&mut self, blocks: &[u32], pos: usize, k: &[f32], v: &[f32]) {
        let hd = self.head_dim;
        for kvh in 0..self.n_kv_heads {
            let o = self.offset(blocks, pos, kvh);
            let r = kvh * hd..(kvh + 1) * hd;
            let (kr, vr) = round_pair(self.dtype, &k[r.clone()], &v[r]);
            self.k[o..o + hd].copy_from_slice(&kr);
            self.v[o..o + hd].copy_from_slice(&vr);
        }
    }

    /// One query row at position `pos` attending to positions `0..=pos` of the sequence.
    pub fn attend(&self, q: &[f32], n_heads: usize, blocks: &[u32], pos: usize) -> Vec<f32> {
        let hd = self.head_dim;
        attend(q, n_heads, self.n_kv_heads, hd, pos + 1, |j, kvh| {
            let o = self.offset(blocks, j, kvh);
            (&self.k[o..o + hd], &self.v[o..o + hd])
        })
    }
}

/// Deterministic values in [-1, 1) for the kv module's unit tests (xorshift).
#[cfg(test)]
pub(crate) fn test_vals(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::test_vals as vals;
    use super::*;

    #[test]
    fn paged_equals_contiguous_across_block_boundaries() {
        let (n_heads, n_kv, hd, bs) = (6, 2, 8, 4);
        for &n_ctx in &[1usize, 3, 4, 5, 9, 17] {
            let kv_dim = n_kv * hd;
            let k = vals(n_ctx * kv_dim, 1 + n_ctx as u32);
            let v = vals(n_ctx * kv_dim, 100 + n_ctx as u32);
            // Scattered, shuffled physical blocks.
            let nb = n_ctx.div_ceil(bs);
            let blocks: Vec<u32> = (0..nb as u32)
                .map(|i| (i * 7 + 3) % 11 + 2 * (i % 2))
                .collect();
            let mut uniq = blocks.clone();
            uniq.sort();
            uniq.dedup();
            assert_eq!(uniq.len(), nb);
            let mut cache = PagedKvRef::new(n_kv, hd, bs, 16);
            for p in 0..n_ctx {
                cache.write(
                    &blocks,
                    p,
                    &k[p * kv_dim..(p + 1) * kv_dim],
                    &v[p * kv_dim..(p + 1) * kv_dim],
                );
            }
            for p in 0..n_ctx {
                let q = vals(n_heads * hd, 1000 + p as u32);
                let want = causal_attention_ref(&q, &k, &v, n_heads, n_kv, hd, p + 1);
                let got = cache.attend(&q, n_heads, &blocks, p);
                assert_eq!(got, want, "n_ctx {n_ctx} pos {p}");
            }
        }
    }
}
