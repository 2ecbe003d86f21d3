// y[t, row_offset + r] = sum_k W[r, k] x[t, k] (+ bias) (+ y): the decode
// path. Memory-bound, so each workgroup reads its rows' weights once and
// applies them to up to MAX_T tokens (grid z walks token groups). Several
// rows per workgroup; one row per subgroup when subgroups exist (any size),
// else TPR invocations per row reduced through workgroup memory.

struct Step { n_tokens: u32, n_seqs: u32, _p0: u32, _p1: u32 }
struct Params { rows: u32, cols: u32, row_offset: u32, y_stride: u32, row_words: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#if BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;
#endif

fn x4(t: u32, c: u32) -> vec4<f32> {
    let b = t * params.cols + c;
#if W_FLOAT
    var v = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (c + i < params.cols) { v[i] = x[b + i]; }
    }
    return v;
#else
    return vec4<f32>(x[b], x[b + 1u], x[b + 2u], x[b + 3u]);
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

#if !SUBGROUPS
var<workgroup> red: array<f32, WG>;
#endif

@compute @workgroup_size(WG)
fn main(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
#if SUBGROUPS
    @builtin(subgroup_id) sg_id: u32,
    @builtin(num_subgroups) n_sg: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32,
#endif
) {
    let row0 = (wid.x + wid.y * nwg.x) * ROWS;
    let t0 = wid.z * MAX_T;
    if (t0 >= step.n_tokens) { return; }
    let nt = min(MAX_T, step.n_tokens - t0);
    let ng = groups_per_row();
#if SUBGROUPS
    for (var rl = sg_id; rl < ROWS; rl += n_sg) {
        let r = row0 + rl;
        var acc = array<f32, MAX_T>();
        if (r < params.rows) {
            for (var g = sg_lane; g < ng; g += sg_size) {
                let w = load8(r, g);
                let c = group_cols(g);
                for (var t = 0u; t < nt; t++) {
                    acc[t] += dot(w.lo, x4(t0 + t, c.x)) + dot(w.hi, x4(t0 + t, c.y));
                }
            }
        }
        for (var t = 0u; t < nt; t++) {
            let s = subgroupAdd(acc[t]);
            if (sg_lane == 0u && r < params.rows) { store(t0 + t, r, s); }
        }
    }
#else
    let rl = li / TPR;
    let lane = li % TPR;
    let r = row0 + rl;
    var acc = array<f32, MAX_T>();
    if (r < params.rows) {
        for (var g = lane; g < ng; g += TPR) {
            let w = load8(r, g);
            let c = group_cols(g);
            for (var t = 0u; t < nt; t++) {
                acc[t] += dot(w.lo, x4(t0 + t, c.x)) + dot(w.hi, x4(t0 + t, c.y));
            }
        }
    }
    for (var t = 0u; t < nt; t++) {
        red[li] = acc[t];
        workgroupBarrier();
        for (var s = TPR / 2u; s > 0u; s >>= 1u) {
            if (lane < s) { red[li] += red[li + s]; }
            workgroupBarrier();
        }
        if (lane == 0u && r < params.rows) { store(t0 + t, r, red[li]); }
        workgroupBarrier();
    }
#endif
}
