// Paged causal attention for every row of the step (prefill chunks and decode).
// Workgroup (x, t, split): query heads x*GB..x*GB+GB (one KV head) of row t attend to the split-th part
// of positions 0..=positions[t] of its sequence, reading K/V through the block
// table (layout [block][kv_head][slot][head_dim]); GQA kv head = h / group.
// Online softmax over tiles of WG keys: each invocation scores one key, then
// owns element pairs (lid, lid + WG) of the accumulator (head_dim <= 4 * WG).
// DIRECT (one split): writes the normalised output. Otherwise writes the
// partial (max, sum, acc[head_dim]) to scratch for attention_reduce.wgsl;
// scratch[0] holds the split count, entries start at 4.

struct Step { n_tokens: u32, n_seqs: u32, first_row: u32, _p0: u32 }
struct Seq { kv_len: u32, table_offset: u32, _p0: u32, _p1: u32 }
// row_stride: QKV row length (elements); k_offset/v_offset unused here (K/V come from the cache).
struct Params { n_heads: u32, n_kv_heads: u32, head_dim: u32, block_size: u32, row_stride: u32, group: u32, scale: f32, max_splits: u32 }

#if KV_F16
#if F16
// Same layout as the packed words below; CPUs convert f16 natively (F16C),
// while unpack2x16float is a slow bit-twiddling path on llvmpipe.
alias KV2 = vec2<f16>;
fn from_kv(w: vec2<f16>) -> vec2<f32> { return vec2<f32>(w); }
#else
alias KV2 = u32;
fn from_kv(w: u32) -> vec2<f32> { return unpack2x16float(w); }
#endif
#else
alias KV2 = vec2<f32>;
fn from_kv(w: vec2<f32>) -> vec2<f32> { return w; }
#endif

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> positions: array<u32>;
@group(0) @binding(3) var<storage, read> row_seq: array<u32>;
@group(0) @binding(4) var<storage, read> seqs: array<Seq>;
@group(0) @binding(5) var<storage, read> block_table: array<u32>;
@group(0) @binding(6) var<storage, read> qkv: array<vec2<f32>>;
@group(0) @binding(7) var<storage, read> kc: array<KV2>;
@group(0) @binding(8) var<storage, read> vc: array<KV2>;
@group(0) @binding(9) var<storage, read_write> dst: array<f32>;

const NEG: f32 = -1e30;

var<workgroup> q2: array<vec2<f32>, GB * 128>;
var<workgroup> probs: array<f32, GB * WG>;
var<workgroup> kbase: array<u32, WG>;
var<workgroup> red: array<f32, GB * WG>;
var<workgroup> wg_pos: u32;

struct Lane { lid: u32, sg_lane: u32, sg_id: u32, n_sg: u32 }

// Reductions of GB values at once (one per query head of the workgroup).
#if SUBGROUPS
fn wg_reduce(v: array<f32, GB>, ln: Lane, is_max: bool) -> array<f32, GB> {
    for (var g = 0u; g < GB; g++) {
        var s: f32;
        if (is_max) { s = subgroupMax(v[g]); } else { s = subgroupAdd(v[g]); }
        if (ln.sg_lane == 0u) { red[g * WG + ln.sg_id] = s; }
    }
    workgroupBarrier();
    var t: array<f32, GB>;
    for (var g = 0u; g < GB; g++) {
        var a = red[g * WG];
        for (var i = 1u; i < ln.n_sg; i++) {
            let b = red[g * WG + i];
            if (is_max) { a = max(a, b); } else { a += b; }
        }
        t[g] = a;
    }
    workgroupBarrier();
    return t;
}
#else
fn wg_reduce(v: array<f32, GB>, ln: Lane, is_max: bool) -> array<f32, GB> {
    for (var g = 0u; g < GB; g++) { red[g * WG + ln.lid] = v[g]; }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (ln.lid < s) {
            for (var g = 0u; g < GB; g++) {
                let a = red[g * WG + ln.lid];
                let b = red[g * WG + ln.lid + s];
                if (is_max) { red[g * WG + ln.lid] = max(a, b); } else { red[g * WG + ln.lid] = a + b; }
            }
        }
        workgroupBarrier();
    }
    var t: array<f32, GB>;
    for (var g = 0u; g < GB; g++) { t[g] = red[g * WG]; }
    workgroupBarrier();
    return t;
}
#endif

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32,
        @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
#if SUBGROUPS
        @builtin(subgroup_invocation_id) sg_lane: u32,
        @builtin(subgroup_id) sg_id: u32,
        @builtin(num_subgroups) n_sg: u32,
#endif
) {
#if SUBGROUPS
    let ln = Lane(lid, sg_lane, sg_id, n_sg);
#else
    let ln = Lane(lid, 0u, 0u, 0u);
#endif
    // Workgroup x covers GB consecutive query heads, all of one KV head, so each
    // K/V element read serves GB heads.
    let h0 = wid.x * GB;
    let t = step.first_row + wid.y;
    let split = wid.z;
    let n_splits = nwg.z;
    if (t >= step.n_tokens) { return; }
    let hd = params.head_dim;
    let half = hd / 2u;
    let bs = params.block_size;
    // Loop bounds must be workgroup-uniform for the barriers inside (browsers check).
    if (lid == 0u) { wg_pos = positions[t]; }
    let p = workgroupUniformLoad(&wg_pos);
    let seq = seqs[row_seq[t]];
    let kvh = h0 / params.group;
    let ctx_len = p + 1u;
    // A row's split boundaries depend on its own context length only (not on
    // the other rows of the step), so its sums come out the same in any batch;
    // the dispatch always has enough splits for the longest row.
    let own = max(MIN_CHUNK, (ctx_len + params.max_splits - 1u) / params.max_splits);
    let chunk = max(own, (ctx_len + n_splits - 1u) / n_splits);
    let start = min(split * chunk, ctx_len);
    let end = min(start + chunk, ctx_len);

    for (var g = 0u; g < GB; g++) {
        let qbase = (t * params.row_stride + (h0 + g) * hd) / 2u;
        for (var i = lid; i < half; i += WG) {
            q2[g * 128u + i] = qkv[qbase + i] * params.scale;
        }
    }
    workgroupBarrier();

    var m: array<f32, GB>;
    var l: array<f32, GB>;
    var acc0: array<vec2<f32>, GB>;
    var acc1: array<vec2<f32>, GB>;
    for (var g = 0u; g < GB; g++) {
        m[g] = NEG;
        l[g] = 0.0;
        acc0[g] = vec2<f32>(0.0);
        acc1[g] = vec2<f32>(0.0);
    }
    for (var j0 = start; j0 < end; j0 += WG) {
        let j = j0 + lid;
        var s: array<f32, GB>;
        for (var g = 0u; g < GB; g++) { s[g] = NEG; }
        if (j < end) {
            let blk = block_table[seq.table_offset + j / bs];
            let kb = ((blk * params.n_kv_heads + kvh) * bs + j % bs) * half;
            kbase[lid] = kb;
            for (var g = 0u; g < GB; g++) { s[g] = 0.0; }
            for (var i = 0u; i < half; i++) {
                let k = from_kv(kc[kb + i]);
                for (var g = 0u; g < GB; g++) { s[g] += dot(q2[g * 128u + i], k); }
            }
        }
        let tile_max = wg_reduce(s, ln, true);
        var pj: array<f32, GB>;
        var alpha: array<f32, GB>;
        for (var g = 0u; g < GB; g++) {
            let m_new = max(m[g], tile_max[g]);
            pj[g] = 0.0;
            if (j < end) { pj[g] = exp(s[g] - m_new); }
            probs[g * WG + lid] = pj[g];
            alpha[g] = exp(m[g] - m_new);
            m[g] = m_new;
        }
        let tile_sum = wg_reduce(pj, ln, false);
        for (var g = 0u; g < GB; g++) {
            l[g] = l[g] * alpha[g] + tile_sum[g];
            acc0[g] *= alpha[g];
            acc1[g] *= alpha[g];
        }
        let n = min(WG, end - j0);
        for (var jj = 0u; jj < n; jj++) {
            let vb = kbase[jj];
            if (lid < half) {
                let v = from_kv(vc[vb + lid]);
                for (var g = 0u; g < GB; g++) { acc0[g] += probs[g * WG + jj] * v; }
            }
            if (lid + WG < half) {
                let v = from_kv(vc[vb + lid + WG]);
                for (var g = 0u; g < GB; g++) { acc1[g] += probs[g * WG + jj] * v; }
            }
        }
        workgroupBarrier();
    }

    for (var g = 0u; g < GB; g++) {
        let h = h0 + g;
#if DIRECT
        let ob = (t * params.n_heads + h) * hd;
        let inv = 1.0 / l[g];
        if (lid < half) {
            dst[ob + 2u * lid] = acc0[g].x * inv;
            dst[ob + 2u * lid + 1u] = acc0[g].y * inv;
        }
        if (lid + WG < half) {
            dst[ob + 2u * (lid + WG)] = acc1[g].x * inv;
            dst[ob + 2u * (lid + WG) + 1u] = acc1[g].y * inv;
        }
#else
        let e = (t * params.n_heads + h) * n_splits + split;
        let sb = 4u + e * (hd + 2u);
        if (lid == 0u) {
            dst[sb] = m[g];
            dst[sb + 1u] = l[g];
            if (e == 0u) { dst[0] = f32(n_splits); }
        }
        if (lid < half) {
            dst[sb + 2u + 2u * lid] = acc0[g].x;
            dst[sb + 3u + 2u * lid] = acc0[g].y;
        }
        if (lid + WG < half) {
            dst[sb + 2u + 2u * (lid + WG)] = acc1[g].x;
            dst[sb + 3u + 2u * (lid + WG)] = acc1[g].y;
        }
#endif
    }
}
