//! CPU building blocks of the reference forward pass.

use crate::model::RopeLayout;

/// `y[t, r] = sum_c w[r, c] * x[t, c]` for `x` of shape `[n, cols]`.
pub fn matmul_ref_rows(w: &[f32], rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
    let n = x.len() / cols;
    let mut y = vec![0.0f32; n * rows];
    for t in 0..n {
        let xr = &x[t * cols..(t + 1) * cols];
        for r in 0..rows {
            let wr = &w[r * cols..(r + 1) * cols];
            // 8 partial sums let the compiler vectorise without reassociating a single chain.
            let mut acc = [0.0f32; 8];
            let mut wc = wr.chunks_exact(8);
            let mut xc = xr.chunks_exact(8);
            for (a, b) in (&mut wc).zip(&mut xc) {
                for i in 0..8 {
                    acc[i] += a[i] * b[i];
                }
            }
            let mut s: f32 = acc.iter().sum();
            for (a, b) in wc.remainder().iter().zip(xc.remainder()) {
                s += a * b;
            }
            y[t * rows + r] = s;
        }
    }
    y
}

/// RMSNorm of each `w.len()`-wide row of `x`.
pub fn rmsnorm_ref(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(d) {
        let ms = row.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / d as f64;
        let inv = 1.0 / (ms + eps as f64).sqrt();
        out.extend(row.iter().zip(w).map(|(v, w)| (*v as f64 * inv) as f32 * w));
    }
    out
}

/// Rotates every `head_dim` slice of each row of `x` (rows = positions.len()).
pub fn rope_ref(
    x: &mut [f32],
    head_dim: usize,
    positions: &[usize],
    inv_freq: &[f32],
    layout: RopeLayout,
) {
    let row_len = x.len() / positions.len().max(1);
    let half = head_dim / 2;
    for (t, &p) in positions.iter().enumerate() {
        let row = &mut x[t * row_len..(t + 1) * row_len];
        for head in row.chunks_mut(head_dim) {
            for (i, &f) in inv_freq.iter().enumerate().take(half) {
                let angle = p as f64 * f as f64;
                let (s, c) = (angle.sin() as f32, angle.cos() as f32);
                let (a, b) = match layout {
                    RopeLayout::Interleaved => (2 * i, 2 * i + 1),
                    RopeLayout::HalfSplit => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * c - x1 * s;
                head[b] = x0 * s + x1 * c;
            }
        }
    }
}

/// Causal multi-head attention with GQA over a contiguous history:
/// row t (at absolute position `positions[t]`) attends to keys 0..=positions[t].
pub fn attention_ref(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    positions: &[usize],
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
) -> Vec<f32> {
    let qd = n_heads * head_dim;
    let kvd = n_kv_heads * head_dim;
    let group = n_heads / n_kv_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut out = vec![0.0f32; positions.len() * qd];
    let mut scores = Vec::new();
    for (t, &p) in positions.iter().enumerate() {
        for h in 0..n_heads {
            let kh = h / group;
            let qv = &q[t * qd + h * head_dim..][..head_dim];
            scores.clear();
            for j in 0..=p {
                let kv = &k[j * kvd + kh * head_dim..][..head_dim];
                scores.push(qv.iter().zip(kv).map(|(a, b)| a * b).sum::<f32>() * scale);
            }
            let m = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            scores.iter_mut().for_each(|s| {
                *s = (*s - m).exp();
                sum += *s;
            });
            let o = &mut out[t * qd + h * head_dim..][..head_dim];
            for (j, s) in scores.iter().enumerate() {
                let vv = &v[j * kvd + kh * head_dim..][..head_dim];
                o.iter_mut().zip(vv).for_each(|(a, b)| *a += s / sum * b);
            }
        }
    }
    out
}
