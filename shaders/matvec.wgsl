// y[t, row_offset + r] = sum_k W[r, k] x[t, k] (+ bias) (+ y): the decode
// path. Memory-bound, so each workgroup reads its rows' weights once and
// applies them to up to MAX_T tokens (grid z walks token groups; MAX_T = 1
// is its own pipeline for single-token decode). Three forms: LANE_ROWS (one
// row per invocation, for CPU adapters); else several rows per workgroup,
// one row per subgroup when subgroups exist (any size), or TPR invocations
// per row reduced through workgroup memory.

struct Step { n_tokens: u32, n_seqs: u32, _p0: u32, _p1: u32 }
struct Params { rows: u32, cols: u32, row_offset: u32, y_stride: u32, row_words: u32, _p0: u32, _p1: u32, _p2: u32 }

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

// x[t, c..c+4], zero past the row end. With X_VEC4 (cols % 4 == 0) `c` is a
// multiple of 4, so a quad is either all inside the row or all outside.
fn x4(t: u32, c: u32) -> vec4<f32> {
#if X_VEC4
#if W_FLOAT
    if (c >= params.cols) { return vec4<f32>(0.0); }
#endif
    return x[(t * params.cols + c) / 4u];
#else
    let b = t * params.cols + c;
    var v = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (c + i < params.cols) { v[i] = x[b + i]; }
    }
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

// This invocation's share (every `stride`-th unit from `lane`) of row `r` · x[t0 + t].
fn row_partial(r: u32, lane: u32, stride: u32, t0: u32, nt: u32) -> array<f32, MAX_T> {
    var acc = array<f32, MAX_T>();
    if (r >= params.rows) { return acc; }
#if W_QUANT
    let nb = params.cols / 32u;
    for (var b = lane; b < nb; b += stride) {
        let w = load_block(r, b);
        // Constant trip counts: unrolled, so `w` and `acc` stay in registers.
        for (var t = 0u; t < MAX_T; t++) {
            if (t < nt) {
                let xb = ((t0 + t) * params.cols + b * 32u) / 4u;
                var s = 0.0;
                for (var i = 0u; i < 8u; i++) { s += dot(w[i], x[xb + i]); }
                acc[t] += s;
            }
        }
    }
#else
    for (var g = lane; g < groups_per_row(); g += stride) {
        let w = load8(r, g);
        let c = group_cols(g);
        for (var t = 0u; t < MAX_T; t++) {
            if (t < nt) { acc[t] += dot(w.lo, x4(t0 + t, c.x)) + dot(w.hi, x4(t0 + t, c.y)); }
        }
    }
#endif
    return acc;
}

#if LANE_ROWS
// CPU adapters (lavapipe, WARP) run invocations as SIMD lanes: one row per
// invocation keeps x loads uniform across lanes (scalar loads, no gathers)
// and needs no reduction. GPUs prefer the cooperative rows below.
@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = (wid.x + wid.y * nwg.x) * ROWS + li;
    let t0 = wid.z * MAX_T;
    if (t0 >= step.n_tokens || r >= params.rows) { return; }
    let nt = min(MAX_T, step.n_tokens - t0);
    let acc = row_partial(r, 0u, 1u, t0, nt);
    for (var t = 0u; t < MAX_T; t++) {
        if (t < nt) { store(t0 + t, r, acc[t]); }
    }
}
#else
#if SUBGROUPS
// Hands out subgroup indices: the `subgroup_id` builtin is not in WebGPU's
// subgroups feature, and the lane layout of local_invocation_index is unspecified.
var<workgroup> next_subgroup: atomic<u32>;
#else
var<workgroup> red: array<f32, WG>;
#endif

@compute @workgroup_size(WG)
fn main(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
#if SUBGROUPS
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32,
#endif
) {
    let row0 = (wid.x + wid.y * nwg.x) * ROWS;
    let t0 = wid.z * MAX_T;
    if (t0 >= step.n_tokens) { return; }
    let nt = min(MAX_T, step.n_tokens - t0);
#if SUBGROUPS
    var first = 0u;
    if (sg_lane == 0u) { first = atomicAdd(&next_subgroup, 1u); }
    let sg_id = subgroupBroadcastFirst(first);
    let n_sg = (WG + sg_size - 1u) / sg_size;
    for (var rl = sg_id; rl < ROWS; rl += n_sg) {
        let r = row0 + rl;
        let acc = row_partial(r, sg_lane, sg_size, t0, nt);
        for (var t = 0u; t < MAX_T; t++) {
            if (t < nt) {
                let s = subgroupAdd(acc[t]);
                if (sg_lane == 0u && r < params.rows) { store(t0 + t, r, s); }
            }
        }
    }
#else
    let lane = li % TPR;
    let r = row0 + li / TPR;
    let acc = row_partial(r, lane, TPR, t0, nt);
    for (var t = 0u; t < MAX_T; t++) {
        if (t < nt) {
            red[li] = acc[t];
            workgroupBarrier();
            for (var s = TPR / 2u; s > 0u; s >>= 1u) {
                if (lane < s) { red[li] += red[li + s]; }
                workgroupBarrier();
            }
            if (lane == 0u && r < params.rows) { store(t0 + t, r, red[li]); }
            workgroupBarrier();
        }
    }
#endif
}
#endif
