//! The reference's matrix product. Norms, RoPE and attention reuse the
//! kernels' own CPU references (`gpu::kernels::{rmsnorm,rope}`,
//! `kv::reference`); this one stays separate because it runs the whole
//! model's weights and is written to vectorise, where the kernel test
//! reference accumulates in f64 for exactness at small sizes.

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
