// y[t, row_offset + r] = sum_k W[r, k] x[t, k] (+ bias) (+ y): the prefill
// path. A workgroup computes a TT-token × TR-row tile; each K step stages
// TK columns of x and of W (dequantized once, in registers, into workgroup
// memory) and every invocation accumulates a 2-token × 4-row block in f32.
// Edges (tokens, rows, columns past the end) are zero-filled, so no size
// has to be a multiple of the tile.

struct Step { n_tokens: u32, n_seqs: u32, _p0: u32, _p1: u32 }
struct Params { rows: u32, cols: u32, row_offset: u32, y_stride: u32, row_words: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#if BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;
#endif

const TT: u32 = 32u;
const TR: u32 = 64u;
const TK: u32 = 32u;
// Row pitch of the W tile, padded so the 16 rows read at once hit different banks.
const WP: u32 = 33u;

var<workgroup> xs: array<f32, 1024>; // TT * TK
var<workgroup> ws: array<f32, 2112>; // TR * WP

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

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let r0 = (wid.x + wid.y * nwg.x) * TR;
    let t0 = wid.z * TT;
    let n = step.n_tokens;
    let tx = li % 16u;
    let ty = li / 16u;
    // W staging: invocation li loads group (li % 4) of tile row li / 4.
    let wrow = li / 4u;
    let wq4 = li % 4u;
    var acc = array<vec4<f32>, 2>();
    for (var k0 = 0u; k0 < params.cols; k0 += TK) {
        for (var i = 0u; i < 4u; i++) {
            let idx = li + i * 256u;
            let t = t0 + idx / TK;
            let k = k0 + idx % TK;
            var v = 0.0;
            if (t < n && k < params.cols) { v = x[t * params.cols + k]; }
            xs[idx] = v;
        }
        let g = k0 / 8u + wq4;
        var w = W8(vec4<f32>(0.0), vec4<f32>(0.0));
        if (r0 + wrow < params.rows) { w = load8(r0 + wrow, g); }
        let c = group_cols(g) - vec2<u32>(k0);
        for (var i = 0u; i < 4u; i++) {
            ws[wrow * WP + c.x + i] = w.lo[i];
            ws[wrow * WP + c.y + i] = w.hi[i];
        }
        workgroupBarrier();
        for (var k = 0u; k < TK; k++) {
            let wv = vec4<f32>(ws[tx * WP + k], ws[(tx + 16u) * WP + k], ws[(tx + 32u) * WP + k], ws[(tx + 48u) * WP + k]);
            acc[0] += xs[ty * TK + k] * wv;
            acc[1] += xs[(ty + 16u) * TK + k] * wv;
        }
        workgroupBarrier();
    }
    for (var j = 0u; j < 2u; j++) {
        let t = t0 + ty + 16u * j;
        for (var i = 0u; i < 4u; i++) {
            let r = r0 + tx + 16u * i;
            if (t < n && r < params.rows) { store(t, r, acc[j][i]); }
        }
    }
}
