// y[t, row_offset + r] = sum_k W[r, k] x[t, k] (+ bias) (+ y): the prefill
// path. A workgroup computes a TT-token × TR-row tile; each K step stages
// TK columns of x and of W (dequantized once, in registers, into workgroup
// memory, as vec4 along k) and each of the 128 invocations accumulates a
// 4-token × 4-row block in f32: 64 multiply-adds per 8 vector loads.
// Edges (tokens, rows, columns past the end) are zero-filled, so no size
// has to be a multiple of the tile.
//
// TILE_F16 (adapters with shader-f16): the tiles hold halves and the
// multiply-adds run in f16 (twice the rate of f32 on most GPUs, half the
// workgroup-memory traffic); each K step's 32 products per output are summed
// in f16 and that partial sum is added to the f32 total, so rounding error
// grows with the tile, not with the matrix width.

struct Step { n_tokens: u32, n_seqs: u32, first_row: u32, _p0: u32 }
// e_first, e_count, tiles and src: expert matrices only (see matmul_x.wgsl).
struct Params { rows: u32, cols: u32, row_offset: u32, y_stride: u32, row_words: u32,
                e_first: u32, e_count: u32, tiles: u32, src: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
#if X_VEC4
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
#else
@group(0) @binding(2) var<storage, read> x: array<f32>;
#endif
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#if BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;
#endif

const TT: u32 = 32u;
const TR: u32 = 64u;
const TK: u32 = 32u;
// Row pitch (in vec4) of the W tile, padded so the 16 rows read at once hit different banks.
const WP: u32 = 9u;

#if TILE_F16
alias TV = vec4<f16>;
// f32 values past f16's range would convert to an undefined value.
fn tv(v: vec4<f32>) -> TV { return TV(clamp(v, vec4<f32>(-65504.0), vec4<f32>(65504.0))); }
#else
alias TV = vec4<f32>;
fn tv(v: vec4<f32>) -> TV { return v; }
#endif

var<workgroup> xs: array<TV, 256>; // TT * TK / 4
var<workgroup> ws: array<TV, 576>; // TR * WP

// x[t, k..k+4], zero past the ends (with X_VEC4, k is a multiple of 4 and cols too).
fn x4(t: u32, k: u32, n: u32) -> vec4<f32> {
    if (t >= n || k >= params.cols) { return vec4<f32>(0.0); }
#if X_VEC4
    return xv(x_row(t) * xs4() + k / 4u);
#else
    let b = x_row(t) * params.cols + k;
    var v = vec4<f32>(x[b], 0.0, 0.0, 0.0);
    if (k + 1u < params.cols) { v.y = x[b + 1u]; }
    if (k + 2u < params.cols) { v.z = x[b + 2u]; }
    if (k + 3u < params.cols) { v.w = x[b + 3u]; }
    return v;
#endif
}

fn store(t: u32, r: u32, s: f32) {
    let i = t * params.y_stride + params.row_offset + r;
    var v = s;
#if BIAS
    v += bias[params.row_offset + r];
#endif
#if ACCUMULATE
    v += y[i];
#endif
    y[i] = v;
}

@compute @workgroup_size(128)
fn main(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let r0 = (wid.x + wid.y * nwg.x) * TR;
#if MOE
    let tile = moe_tile_uniform(li, wid.z);
    if (tile.y == 0u) { return; }
    let t0 = tile.x;
    let n = tile.x + min(tile.y, TT);
#else
    let t0 = step.first_row + wid.z * TT;
    let n = step.n_tokens;
#endif
    // Outputs: rows tx + 16i, tokens ty + 8j.
    let tx = li % 16u;
    let ty = li / 16u;
    var acc = array<vec4<f32>, 4>();
    for (var k0 = 0u; k0 < params.cols; k0 += TK) {
        // Stage 32 tokens × 8 quads of x and 64 rows × 4 groups of W, two per invocation.
        for (var h = 0u; h < 2u; h++) {
            let i = li + h * 128u;
            xs[i] = tv(x4(t0 + i / 8u, k0 + (i % 8u) * 4u, n));
            let wrow = i / 4u;
            let g = k0 / 8u + i % 4u;
            var w = W8(vec4<f32>(0.0), vec4<f32>(0.0));
            if (r0 + wrow < params.rows) { w = load8(w_row(r0 + wrow), g); }
            let c = (group_cols(g) - vec2<u32>(k0)) / 4u;
            ws[wrow * WP + c.x] = tv(w.lo);
            ws[wrow * WP + c.y] = tv(w.hi);
        }
        workgroupBarrier();
#if TILE_F16
        var part = array<TV, 4>();
#endif
        for (var kq = 0u; kq < TK / 4u; kq++) {
            let w0 = ws[tx * WP + kq];
            let w1 = ws[(tx + 16u) * WP + kq];
            let w2 = ws[(tx + 32u) * WP + kq];
            let w3 = ws[(tx + 48u) * WP + kq];
            for (var j = 0u; j < 4u; j++) {
                let xv = xs[(ty + 8u * j) * 8u + kq];
#if TILE_F16
                part[j] += TV(dot(xv, w0), dot(xv, w1), dot(xv, w2), dot(xv, w3));
#else
                acc[j] += vec4<f32>(dot(xv, w0), dot(xv, w1), dot(xv, w2), dot(xv, w3));
#endif
            }
        }
#if TILE_F16
        for (var j = 0u; j < 4u; j++) { acc[j] += vec4<f32>(part[j]); }
#endif
        workgroupBarrier();
    }
    for (var j = 0u; j < 4u; j++) {
        let t = t0 + ty + 8u * j;
        for (var i = 0u; i < 4u; i++) {
            let r = r0 + tx + 16u * i;
            if (t < n && r < params.rows) { store(t, r, acc[j][i]); }
        }
    }
}
