// y[t, row_offset + r] = sum_k W[r, k] x[t, k] (+ bias) (+ y): the decode
// path. Memory-bound, so each workgroup reads its rows' weights once and
// applies them to up to MAX_T tokens (grid z walks token groups; MAX_T = 1
// is its own pipeline for single-token decode). Three forms: LANE_ROWS (one
// row per invocation, for CPU adapters); else several rows per workgroup,
// one row per subgroup when subgroups exist (any size), or TPR invocations
// per row reduced through workgroup memory.

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

// x[t, c..c+4], zero past the row end. With X_VEC4 (cols % 4 == 0) `c` is a
// multiple of 4, so a quad is either all inside the row or all outside.
fn x4(t: u32, c: u32) -> vec4<f32> {
#if X_VEC4
#if W_FLOAT
    if (c >= params.cols) { return vec4<f32>(0.0); }
#endif
    return xv(x_row(t) * xs4() + c / 4u);
#else
    let b = x_row(t) * params.cols + c;
    var v = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (c + i < params.cols) { v[i] = x[b + i]; }
    }
    return v;
#endif
}

#if W_QUANT
// Block `b` of one row, unpacked once and applied to every token of the
// workgroup. Named fields, no local arrays or dynamic indices: CPU adapters
// turn those into per-lane scratch memory.
struct QBlock { w0: vec4<f32>, w1: vec4<f32>, w2: vec4<f32>, w3: vec4<f32>,
                w4: vec4<f32>, w5: vec4<f32>, w6: vec4<f32>, w7: vec4<f32>, s: vec2<f32> }

// The 32 x values a block meets, and their sum (for the Q4 offset).
struct XBlock { x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>,
                x4: vec4<f32>, x5: vec4<f32>, x6: vec4<f32>, x7: vec4<f32>, sum: f32 }

fn load_block(r: u32, b: u32) -> QBlock {
    let nb = params.cols / 32u;
#if W_Q5
    let q5 = wq[r * nb + b];
    let hw = q5_high(r * nb + b);
    return QBlock(q5x4(q5.x, 0u, hw, 0u), q5x4(q5.y, 0u, hw, 4u), q5x4(q5.z, 0u, hw, 8u), q5x4(q5.w, 0u, hw, 12u),
                  q5x4(q5.x, 4u, hw, 16u), q5x4(q5.y, 4u, hw, 20u), q5x4(q5.z, 4u, hw, 24u), q5x4(q5.w, 4u, hw, 28u),
                  block_scale(r * nb + b));
#else
#if W_Q6_K
    let q = wq[r * nb + b];
    let a = q6_aux(r * nb + b);
    return QBlock(q6x4(q.x, 0u, a.hi0, 0u, a.sc.x), q6x4(q.y, 0u, a.hi0, 1u, a.sc.x),
                  q6x4(q.z, 0u, a.hi0, 2u, a.sc.x), q6x4(q.w, 0u, a.hi0, 3u, a.sc.x),
                  q6x4(q.x, 4u, a.hi1, 0u, a.sc.y), q6x4(q.y, 4u, a.hi1, 1u, a.sc.y),
                  q6x4(q.z, 4u, a.hi1, 2u, a.sc.y), q6x4(q.w, 4u, a.hi1, 3u, a.sc.y), vec2<f32>(a.d, 0.0));
#else
    let s = block_scale(r * nb + b);
#endif
#if W_Q8_0
    let q0 = wq[(r * nb + b) * 2u];
    let q1 = wq[(r * nb + b) * 2u + 1u];
    return QBlock(i8x4(q0.x), i8x4(q0.y), i8x4(q0.z), i8x4(q0.w),
                  i8x4(q1.x), i8x4(q1.y), i8x4(q1.z), i8x4(q1.w), s);
#else
    // Word i holds columns 4i..4i+3 (low nibbles) and 16+4i.. (high nibbles).
#if W_Q4
    let q = wq[r * nb + b];
    return QBlock(nib_lo(q.x), nib_lo(q.y), nib_lo(q.z), nib_lo(q.w),
                  nib_hi(q.x), nib_hi(q.y), nib_hi(q.z), nib_hi(q.w), s);
#endif
#endif
#endif
}

// x[4xb .. 4xb+32] (vec4 index `xb`).
fn load_x(xb: u32) -> XBlock {
    let x0 = xv(xb);
    let x1 = xv(xb + 1u);
    let x2 = xv(xb + 2u);
    let x3 = xv(xb + 3u);
    let x4 = xv(xb + 4u);
    let x5 = xv(xb + 5u);
    let x6 = xv(xb + 6u);
    let x7 = xv(xb + 7u);
    return x_block(x0, x1, x2, x3, x4, x5, x6, x7);
}

// The block with its sum (what Q4/Q5 offsets multiply; unused by scaled formats).
fn x_block(x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>,
           x4: vec4<f32>, x5: vec4<f32>, x6: vec4<f32>, x7: vec4<f32>) -> XBlock {
#if W_SCALED
    let sum = 0.0;
#else
    let sum = dot(x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7, vec4<f32>(1.0));
#endif
    return XBlock(x0, x1, x2, x3, x4, x5, x6, x7, sum);
}

// Block · x. The offset (Q4_0's -8, Q4_1's and Q4_K's min) is applied once per block
// through sum(x). Every kernel form computes a row through this one
// expression, so a row's bits do not depend on the form (batch invariance).
fn qdot(q: QBlock, x: XBlock) -> f32 {
    let acc = dot(q.w0, x.x0) + dot(q.w1, x.x1) + dot(q.w2, x.x2) + dot(q.w3, x.x3)
        + dot(q.w4, x.x4) + dot(q.w5, x.x5) + dot(q.w6, x.x6) + dot(q.w7, x.x7);
#if W_SCALED
    return acc * q.s.x;
#else
#if W_Q4_0
    return q.s.x * (acc - 8.0 * x.sum);
#else
    return q.s.x * acc + q.s.y * x.sum;
#endif
#endif
}
#endif

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

// A loop bound the CPU adapter cannot see through. lavapipe (Mesa 22.3)
// inlines uniform loop bounds, and when that lets it unroll a short loop (a
// small model's rows) it compiles the kernel again at every dispatch and never
// frees the code: about 1 MiB of resident memory per decode step. The x buffer
// always holds a whole row, so the clamp never changes the bound.
fn opaque_bound(n: u32) -> u32 {
#if LANE_ROWS
#if X_VEC4
    return min(n, arrayLength(&x) * 4u);
#else
    return min(n, arrayLength(&x));
#endif
#else
    return n;
#endif
}

// This invocation's share (every `stride`-th unit from `lane`) of row `r` · x[t0 + t].
fn row_partial(r: u32, lane: u32, stride: u32, t0: u32, nt: u32) -> array<f32, MAX_T> {
    var acc = array<f32, MAX_T>();
    if (r >= params.rows) { return acc; }
#if W_QUANT
    let nb = opaque_bound(params.cols) / 32u;
    for (var b = lane; b < nb; b += stride) {
        let q = load_block(w_row(r), b);
        for (var t = 0u; t < MAX_T; t++) {
            if (t < nt) { acc[t] += qdot(q, load_x(x_row(t0 + t) * xs4() + b * 8u)); }
        }
    }
#else
    for (var g = lane; g < opaque_bound(groups_per_row()); g += stride) {
        let w = load8(w_row(r), g);
        let c = group_cols(g);
        for (var t = 0u; t < MAX_T; t++) {
            if (t < nt) { acc[t] += dot(w.lo, x4(t0 + t, c.x)) + dot(w.hi, x4(t0 + t, c.y)); }
        }
    }
#endif
    return acc;
}

#if LANE_ROWS
#if LANE_BCAST
// x[4xb .. 4xb+32] loaded cooperatively: each lane of the subgroup loads one
// vec4 (two when the subgroup has 4 lanes) and the block is assembled with
// broadcasts from constant lanes. llvmpipe turns every storage load whose
// address is not a constant into a per-lane loop, so this cuts the x loads of
// a block from 8 such loops to 1 (or 2); the values, and so the sums, are
// the same as load_x's.
fn load_x_bcast(xb: u32, sg_lane: u32) -> XBlock {
#if LANE_SG4
    let a = xv(xb + (sg_lane & 3u));
    let b = xv(xb + 4u + (sg_lane & 3u));
    let x0 = subgroupBroadcast(a, 0u);
    let x1 = subgroupBroadcast(a, 1u);
    let x2 = subgroupBroadcast(a, 2u);
    let x3 = subgroupBroadcast(a, 3u);
    let x4 = subgroupBroadcast(b, 0u);
    let x5 = subgroupBroadcast(b, 1u);
    let x6 = subgroupBroadcast(b, 2u);
    let x7 = subgroupBroadcast(b, 3u);
#else
    let a = xv(xb + (sg_lane & 7u));
    let x0 = subgroupBroadcast(a, 0u);
    let x1 = subgroupBroadcast(a, 1u);
    let x2 = subgroupBroadcast(a, 2u);
    let x3 = subgroupBroadcast(a, 3u);
    let x4 = subgroupBroadcast(a, 4u);
    let x5 = subgroupBroadcast(a, 5u);
    let x6 = subgroupBroadcast(a, 6u);
    let x7 = subgroupBroadcast(a, 7u);
#endif
    return x_block(x0, x1, x2, x3, x4, x5, x6, x7);
}
#endif

#if W_QUANT
fn xblock(xb: u32, lane: u32) -> XBlock {
#if LANE_BCAST
    return load_x_bcast(xb, lane);
#else
    return load_x(xb);
#endif
}

// A lane's four rows (row, row + WG, ...) of token `t`, those past the end not stored.
fn store_rows(t: u32, row: u32, a: vec4<f32>) {
    if (row < params.rows) { store(t, row, a.x); }
    if (row + WG < params.rows) { store(t, row + WG, a.y); }
    if (row + 2u * WG < params.rows) { store(t, row + 2u * WG, a.z); }
    if (row + 3u * WG < params.rows) { store(t, row + 3u * WG, a.w); }
}

// The four rows of a lane against one token's block.
fn qdot4(q0: QBlock, q1: QBlock, q2: QBlock, q3: QBlock, x: XBlock) -> vec4<f32> {
    return vec4<f32>(qdot(q0, x), qdot(q1, x), qdot(q2, x), qdot(q3, x));
}
#endif

// CPU adapters (lavapipe, WARP) run invocations as SIMD lanes: one row per
// invocation needs no reduction. llvmpipe loads x per lane (a loop over the
// lanes, even though every lane reads the same address), so for quantized
// weights the x loads are spread over the subgroup (load_x_bcast), each lane
// takes four rows (ROWS = 4 * WG) to share every x block among them, and up
// to eight tokens share each unpacked weight block.
@compute @workgroup_size(WG)
fn main(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
#if LANE_BCAST
    @builtin(subgroup_invocation_id) sg_lane: u32,
#endif
) {
#if MOE
    let tile = moe_tile_uniform(li, wid.z);
    if (tile.y == 0u) { return; }
    let t0 = tile.x;
    let nt = min(MAX_T, tile.y);
#else
    let t0 = step.first_row + wid.z * MAX_T;
    if (t0 >= step.n_tokens) { return; }
    let nt = min(MAX_T, step.n_tokens - t0);
#endif
#if W_QUANT
    let row = (wid.x + wid.y * nwg.x) * ROWS + li;
    // A lane past the last row computes a copy of it and stores nothing.
    let r0 = min(row, params.rows - 1u);
    let r1 = min(row + WG, params.rows - 1u);
    let r2 = min(row + 2u * WG, params.rows - 1u);
    let r3 = min(row + 3u * WG, params.rows - 1u);
    // Up to eight tokens (LANE_MAX_TOKENS in matmul.rs), written out: named
    // accumulators stay in registers where an indexed array would not.
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0);
#if LANE_BCAST
    let lane = sg_lane;
#else
    let lane = 0u;
#endif
    let nb = opaque_bound(params.cols) / 32u;
    let xs = xs4();
#if X_GATHER
    let last = t0 + nt - 1u;
    let gx0 = x_row(t0) * xs;
    let gx1 = x_row(min(t0 + 1u, last)) * xs;
    let gx2 = x_row(min(t0 + 2u, last)) * xs;
    let gx3 = x_row(min(t0 + 3u, last)) * xs;
    let gx4 = x_row(min(t0 + 4u, last)) * xs;
    let gx5 = x_row(min(t0 + 5u, last)) * xs;
    let gx6 = x_row(min(t0 + 6u, last)) * xs;
    let gx7 = x_row(min(t0 + 7u, last)) * xs;
#endif
    for (var b = 0u; b < nb; b++) {
        let q0 = load_block(w_row(r0), b);
        let q1 = load_block(w_row(r1), b);
        let q2 = load_block(w_row(r2), b);
        let q3 = load_block(w_row(r3), b);
#if X_GATHER
        // Each token's x row is wherever the grouping found it.
        let xb = b * 8u;
        a0 += qdot4(q0, q1, q2, q3, xblock(gx0 + xb, lane));
        if (MAX_T > 1u && nt > 1u) { a1 += qdot4(q0, q1, q2, q3, xblock(gx1 + xb, lane)); }
        if (MAX_T > 2u && nt > 2u) { a2 += qdot4(q0, q1, q2, q3, xblock(gx2 + xb, lane)); }
        if (MAX_T > 3u && nt > 3u) { a3 += qdot4(q0, q1, q2, q3, xblock(gx3 + xb, lane)); }
        if (MAX_T > 4u && nt > 4u) { a4 += qdot4(q0, q1, q2, q3, xblock(gx4 + xb, lane)); }
        if (MAX_T > 5u && nt > 5u) { a5 += qdot4(q0, q1, q2, q3, xblock(gx5 + xb, lane)); }
        if (MAX_T > 6u && nt > 6u) { a6 += qdot4(q0, q1, q2, q3, xblock(gx6 + xb, lane)); }
        if (MAX_T > 7u && nt > 7u) { a7 += qdot4(q0, q1, q2, q3, xblock(gx7 + xb, lane)); }
#else
        let xb = t0 * xs + b * 8u;
        a0 += qdot4(q0, q1, q2, q3, xblock(xb, lane));
        if (MAX_T > 1u && nt > 1u) { a1 += qdot4(q0, q1, q2, q3, xblock(xb + 1u * xs, lane)); }
        if (MAX_T > 2u && nt > 2u) { a2 += qdot4(q0, q1, q2, q3, xblock(xb + 2u * xs, lane)); }
        if (MAX_T > 3u && nt > 3u) { a3 += qdot4(q0, q1, q2, q3, xblock(xb + 3u * xs, lane)); }
        if (MAX_T > 4u && nt > 4u) { a4 += qdot4(q0, q1, q2, q3, xblock(xb + 4u * xs, lane)); }
        if (MAX_T > 5u && nt > 5u) { a5 += qdot4(q0, q1, q2, q3, xblock(xb + 5u * xs, lane)); }
        if (MAX_T > 6u && nt > 6u) { a6 += qdot4(q0, q1, q2, q3, xblock(xb + 6u * xs, lane)); }
        if (MAX_T > 7u && nt > 7u) { a7 += qdot4(q0, q1, q2, q3, xblock(xb + 7u * xs, lane)); }
#endif
    }
    store_rows(t0, row, a0);
    if (MAX_T > 1u && nt > 1u) { store_rows(t0 + 1u, row, a1); }
    if (MAX_T > 2u && nt > 2u) { store_rows(t0 + 2u, row, a2); }
    if (MAX_T > 3u && nt > 3u) { store_rows(t0 + 3u, row, a3); }
    if (MAX_T > 4u && nt > 4u) { store_rows(t0 + 4u, row, a4); }
    if (MAX_T > 5u && nt > 5u) { store_rows(t0 + 5u, row, a5); }
    if (MAX_T > 6u && nt > 6u) { store_rows(t0 + 6u, row, a6); }
    if (MAX_T > 7u && nt > 7u) { store_rows(t0 + 7u, row, a7); }
#else
    let r = (wid.x + wid.y * nwg.x) * ROWS + li;
    if (r >= params.rows) { return; }
    let acc = row_partial(r, 0u, 1u, t0, nt);
    for (var t = 0u; t < MAX_T; t++) {
        if (t < nt) { store(t0 + t, r, acc[t]); }
    }
#endif
}
#else
#if SUBGROUPS
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
    @builtin(subgroup_id) sg_id: u32,
    @builtin(num_subgroups) n_sg: u32,
#endif
) {
    let row0 = (wid.x + wid.y * nwg.x) * ROWS;
#if MOE
    let tile = moe_tile_uniform(li, wid.z);
    if (tile.y == 0u) { return; }
    let t0 = tile.x;
    let nt = min(MAX_T, tile.y);
#else
    let t0 = step.first_row + wid.z * MAX_T;
    if (t0 >= step.n_tokens) { return; }
    let nt = min(MAX_T, step.n_tokens - t0);
#endif
#if SUBGROUPS
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
