// Paged causal attention for every row of the step (prefill chunks and decode).
// Workgroup (x, t, split): query heads x*GB..x*GB+GB (one KV head) of row t attend to the split-th part
// of positions 0..=positions[t] of its sequence, reading K/V through the block
// table (layout [block][kv_head][slot][head_dim]); GQA kv head = h / group.
// Online softmax over tiles of WG keys: each invocation scores one key, then
// owns element pairs (lid, lid + WG) of the accumulator (head_dim <= 4 * WG).
// DIRECT (one split): writes the normalised output. Otherwise writes the
// partial (max, sum, acc[head_dim]) to scratch for attention_reduce.wgsl;
// scratch[0] holds the split count, entries start at 4.
// KV_QUANT (KV_Q8 / KV_Q4): head rows of 8-bit codes (q4: 5-bit keys, 3-bit
// values) with f16 scales per 32 elements (layout: runtime/kv/quant.rs),
// dequantized here as they are read.
// q4 rows code the Walsh-Hadamard transform H·x of each block of ROT
// elements: the query is rotated the same way once (H·q/ROT, so scores are
// unchanged) and the weighted sum of values is rotated back (H·acc/ROT)
// before it is written.

struct Step { n_tokens: u32, n_seqs: u32, first_row: u32, _p0: u32 }
struct Seq { kv_len: u32, table_offset: u32, _p0: u32, _p1: u32 }
// row_stride: QKV row length (elements); k_offset/v_offset unused here (K/V come from the cache).
struct Params { n_heads: u32, n_kv_heads: u32, head_dim: u32, block_size: u32, row_stride: u32, group: u32, scale: f32, max_splits: u32 }

#if KV_QUANT
alias KV2 = u32;
#else
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

#if KV_Q4
// Per query head and group: the sum of the (scaled) query elements, so that
// a q4 key's minimum enters its score once per group.
var<workgroup> qsum: array<f32, GB * 8>;
#endif

#if KV_QUANT
#if KV_Q8
// Length of one head row in kc/vc elements.
fn row_len(hd: u32) -> u32 { return hd / 4u + (hd / 32u + 1u) / 2u; }

// Four sign-extended i8 codes of a word.
fn codes8(w: u32) -> vec4<f32> {
    return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(w << 24u, w << 16u, w << 8u, w)) >> vec4<u32>(24u));
}

// Scores of the key row at kb for the GB query heads; each group's scale is
// applied once to its code dot products.
fn k_dots(kb: u32, hd: u32) -> array<f32, GB> {
    var s: array<f32, GB>;
    for (var gi = 0u; gi < hd / 32u; gi++) {
        let d = unpack2x16float(kc[kb + hd / 4u + gi / 2u])[gi % 2u];
        var part: array<f32, GB>;
        for (var w = 0u; w < 8u; w++) {
            let c = codes8(kc[kb + gi * 8u + w]);
            let i = gi * 16u + 2u * w;
            for (var g = 0u; g < GB; g++) {
                part[g] += dot(q2[g * 128u + i], c.xy) + dot(q2[g * 128u + i + 1u], c.zw);
            }
        }
        for (var g = 0u; g < GB; g++) { s[g] += d * part[g]; }
    }
    return s;
}

// Element pair i of the value row at vb.
fn v_pair(vb: u32, i: u32, hd: u32) -> vec2<f32> {
    let w = vc[vb + i / 2u] >> ((i % 2u) * 16u);
    let c = vec2<f32>(bitcast<vec2<i32>>(vec2<u32>(w << 24u, w << 16u)) >> vec2<u32>(24u));
    return c * unpack2x16float(vc[vb + hd / 4u + i / 32u])[(i / 16u) % 2u];
}
#else
fn row_len(hd: u32) -> u32 { return hd / 8u + hd / 32u; }

fn codes4(w: u32, shift: vec4<u32>) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(w) >> shift) & vec4<u32>(15u));
}

// Scores of the key row at kb: per group d·(q·codes) + m·sum(q). Key codes
// are 5-bit: nibbles here, fifth bits in the value row (same offset).
fn k_dots(kb: u32, hd: u32) -> array<f32, GB> {
    var s: array<f32, GB>;
    let ng = hd / 32u;
    for (var gi = 0u; gi < ng; gi++) {
        let dm = unpack2x16float(kc[kb + 4u * ng + gi]);
        let fifth = vc[kb + 4u * ng + gi];
        var part: array<f32, GB>;
        for (var w = 0u; w < 4u; w++) {
            let word = kc[kb + gi * 4u + w];
            let f = vec4<u32>(fifth >> (8u * w));
            let lo = codes4(word, vec4<u32>(0u, 4u, 8u, 12u)) + 16.0 * vec4<f32>((f >> vec4<u32>(0u, 1u, 2u, 3u)) & vec4<u32>(1u));
            let hi = codes4(word, vec4<u32>(16u, 20u, 24u, 28u)) + 16.0 * vec4<f32>((f >> vec4<u32>(4u, 5u, 6u, 7u)) & vec4<u32>(1u));
            let i = gi * 16u + 4u * w;
            for (var g = 0u; g < GB; g++) {
                let qb = g * 128u + i;
                part[g] += dot(q2[qb], lo.xy) + dot(q2[qb + 1u], lo.zw)
                    + dot(q2[qb + 2u], hi.xy) + dot(q2[qb + 3u], hi.zw);
            }
        }
        for (var g = 0u; g < GB; g++) { s[g] += dm.x * part[g] + dm.y * qsum[g * 8u + gi]; }
    }
    return s;
}

fn fwht(y: ptr<function, array<f32, ROT>>) {
    for (var h = 1u; h < ROT; h *= 2u) {
        for (var i = 0u; i < ROT; i += 2u * h) {
            for (var j = i; j < i + h; j++) {
                let a = (*y)[j];
                let b = (*y)[j + h];
                (*y)[j] = a + b;
                (*y)[j + h] = a - b;
            }
        }
    }
}

// Element pair i of H·a/ROT for the rotation block holding it, where a (the
// rotated accumulator of one head) is in q2 at base qb: H[r][c] = (-1)^popcount(r & c).
fn unrotate_pair(qb: u32, i: u32) -> vec2<f32> {
    let b0 = qb + (2u * i / ROT) * (ROT / 2u);
    let r = (2u * i) % ROT;
    var o = vec2<f32>(0.0);
    for (var c = 0u; c < ROT / 2u; c++) {
        let a = q2[b0 + c];
        let c0 = 2u * c;
        let s0 = vec2<f32>(1.0 - 2.0 * f32(countOneBits(r & c0) & 1u), 1.0 - 2.0 * f32(countOneBits((r + 1u) & c0) & 1u));
        let s1 = vec2<f32>(1.0 - 2.0 * f32(countOneBits(r & (c0 + 1u)) & 1u), 1.0 - 2.0 * f32(countOneBits((r + 1u) & (c0 + 1u)) & 1u));
        o += s0 * a.x + s1 * a.y;
    }
    return o * (1.0 / f32(ROT));
}

// Element pair i of the value row at vb: 3-bit codes, two low bits in the
// group's two words of pairs, the third in its word at 2G.
fn v_pair(vb: u32, i: u32, hd: u32) -> vec2<f32> {
    let ng = hd / 32u;
    let g = i / 16u;
    let j = (2u * i) % 32u;
    let low = vc[vb + 2u * g + j / 16u] >> (2u * (j % 16u));
    let third = vc[vb + 2u * ng + g] >> j;
    let c = vec2<u32>(low, low >> 2u) & vec2<u32>(3u);
    let t = vec2<u32>(third, third >> 1u) & vec2<u32>(1u);
    let dm = unpack2x16float(vc[vb + 3u * ng + g]);
    return vec2<f32>(c + 4u * t) * dm.x + dm.y;
}
#endif
#else
fn row_len(hd: u32) -> u32 { return hd / 2u; }

fn k_dots(kb: u32, hd: u32) -> array<f32, GB> {
    var s: array<f32, GB>;
    for (var i = 0u; i < hd / 2u; i++) {
        let k = from_kv(kc[kb + i]);
        for (var g = 0u; g < GB; g++) { s[g] += dot(q2[g * 128u + i], k); }
    }
    return s;
}

fn v_pair(vb: u32, i: u32, hd: u32) -> vec2<f32> { return from_kv(vc[vb + i]); }
#endif

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
#if KV_Q4
    let nb = hd / ROT;
    for (var e = lid; e < GB * nb; e += WG) {
        let qb = (e / nb) * 128u + (e % nb) * (ROT / 2u);
        var y: array<f32, ROT>;
        for (var i = 0u; i < ROT / 2u; i++) {
            y[2u * i] = q2[qb + i].x;
            y[2u * i + 1u] = q2[qb + i].y;
        }
        fwht(&y);
        for (var i = 0u; i < ROT / 2u; i++) {
            q2[qb + i] = vec2<f32>(y[2u * i], y[2u * i + 1u]) * (1.0 / f32(ROT));
        }
    }
    workgroupBarrier();
    let ng = hd / 32u;
    for (var e = lid; e < GB * ng; e += WG) {
        let qb = (e / ng) * 128u + (e % ng) * 16u;
        var a = 0.0;
        for (var i = 0u; i < 16u; i++) { a += q2[qb + i].x + q2[qb + i].y; }
        qsum[(e / ng) * 8u + e % ng] = a;
    }
    workgroupBarrier();
#endif

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
            let kb = ((blk * params.n_kv_heads + kvh) * bs + j % bs) * row_len(hd);
            kbase[lid] = kb;
            s = k_dots(kb, hd);
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
                let v = v_pair(vb, lid, hd);
                for (var g = 0u; g < GB; g++) { acc0[g] += probs[g * WG + jj] * v; }
            }
            if (lid + WG < half) {
                let v = v_pair(vb, lid + WG, hd);
                for (var g = 0u; g < GB; g++) { acc1[g] += probs[g * WG + jj] * v; }
            }
        }
        workgroupBarrier();
    }
#if KV_Q4
    for (var g = 0u; g < GB; g++) {
        if (lid < half) { q2[g * 128u + lid] = acc0[g]; }
        if (lid + WG < half) { q2[g * 128u + lid + WG] = acc1[g]; }
    }
    workgroupBarrier();
    for (var g = 0u; g < GB; g++) {
        if (lid < half) { acc0[g] = unrotate_pair(g * 128u, lid); }
        if (lid + WG < half) { acc1[g] = unrotate_pair(g * 128u, lid + WG); }
    }
#endif

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
