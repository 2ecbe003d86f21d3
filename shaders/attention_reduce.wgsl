// Combines the per-split partials of attention.wgsl (flash-decoding):
// out = sum_s acc_s * exp(m_s - M) / sum_s l_s * exp(m_s - M), M = max_s m_s.
// One workgroup per (head, row); the split count is scratch[0].

struct Step { n_tokens: u32, n_seqs: u32, first_row: u32, _p0: u32 }
struct Params { n_heads: u32, n_kv_heads: u32, head_dim: u32, block_size: u32, row_stride: u32, group: u32, scale: f32, max_splits: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> scratch: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// Exactly 1 for the split holding the maximum, so a row whose keys all fall in
// one split gets the same bits as the single-pass (DIRECT) kernel gives it.
fn weight(m: f32, mx: f32) -> f32 {
    if (m == mx) { return 1.0; }
    return exp(m - mx);
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let h = wid.x;
    let t = step.first_row + wid.y;
    if (t >= step.n_tokens) { return; }
    let hd = params.head_dim;
    let n_splits = u32(scratch[0]);
    let e0 = (t * params.n_heads + h) * n_splits;
    var mx = -1e30;
    for (var s = 0u; s < n_splits; s++) {
        mx = max(mx, scratch[4u + (e0 + s) * (hd + 2u)]);
    }
    var l = 0.0;
    for (var s = 0u; s < n_splits; s++) {
        let b = 4u + (e0 + s) * (hd + 2u);
        l += scratch[b + 1u] * weight(scratch[b], mx);
    }
    let inv = 1.0 / l;
    for (var d = lid; d < hd; d += WG) {
        var acc = 0.0;
        for (var s = 0u; s < n_splits; s++) {
            let b = 4u + (e0 + s) * (hd + 2u);
            acc += scratch[b + 2u + d] * weight(scratch[b], mx);
        }
        out[(t * params.n_heads + h) * hd + d] = acc * inv;
    }
}
