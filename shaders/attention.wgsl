// Paged causal attention for every row of the step (prefill chunks and decode).
// Workgroup (x + y * nwg.x, split) serves QR slots, each one (row t, group of
// GB query heads h0.. of one KV head, GQA kv head = h / group): the heads
// attend to the split-th part of positions 0..=positions[t] of the row's
// sequence, reading K/V through the block table (layout
// [block][kv_head][slot][head_dim]).
// The slots of a workgroup share nothing but its barriers (each has its own
// sequence, range and softmax state), so a row's result is the same in any
// batch. Their gain is register blocking: LPR = WG / QR lanes serve one
// slot, each scoring KPL keys of a KT-key tile against the slot's GB heads
// (one load of q per KPL keys) and then summing PPL element pairs of the
// values over the tile (one load of p per PPL pairs). CPU adapters, where
// every load is a loop over the SIMD lanes, use QR = 8.
// Online softmax per tile; tiles sit at multiples of KT in absolute
// positions and splits at multiples of KT, so a row meets the same tiles
// whatever the other rows of its workgroup are; tiles outside its own range
// it skips.
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

@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(7) var<storage, read> kc: array<KV2>;
@group(0) @binding(8) var<storage, read> vc: array<KV2>;
@group(0) @binding(9) var<storage, read_write> dst: array<f32>;

const NEG: f32 = -1e30;

// Scaled queries, [row][head][pair]; q4 also reuses it to rotate the output back.
var<workgroup> q2: array<vec2<f32>, QR * GB * HALF>;
// Probabilities of the tile, [row][key][head].
var<workgroup> probs: array<f32, QR * KT * GB>;
// Per-lane partial max / sum of the tile, [row][head][lane of the row].
var<workgroup> red_m: array<f32, QR * GB * LPR>;
var<workgroup> red_s: array<f32, QR * GB * LPR>;
// Each row's key range for this split (start, end); end == start when empty.
var<workgroup> ranges: array<vec2<u32>, QR>;
var<workgroup> wg_range: vec2<u32>;

#if KV_Q4
// Per row, query head and group: the sum of the (scaled) query elements, so
// that a q4 key's minimum enters its score once per group.
var<workgroup> qsum: array<f32, QR * GB * 8>;
#endif

// Scores of a lane's KPL keys (head rows at kb) against its row's GB
// heads, whose queries start at q2[qb] (head g at qb + g * HALF). Each
// query element is loaded once for all KPL keys.
#if KV_QUANT
#if KV_Q8
// Length of one head row in kc/vc elements.
fn row_len(hd: u32) -> u32 { return hd / 4u + (hd / 32u + 1u) / 2u; }

// Four sign-extended i8 codes of a word.
fn codes8(w: u32) -> vec4<f32> {
    return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(w << 24u, w << 16u, w << 8u, w)) >> vec4<u32>(24u));
}

fn k_scores(qb: u32, kb: array<u32, KPL>) -> array<array<f32, GB>, KPL> {
    var s: array<array<f32, GB>, KPL>;
    for (var gi = 0u; gi < HALF / 16u; gi++) {
        var part: array<array<f32, GB>, KPL>;
        for (var w = 0u; w < 8u; w++) {
            let i = gi * 16u + 2u * w;
            var qa: array<vec2<f32>, GB>;
            var qc: array<vec2<f32>, GB>;
            for (var g = 0u; g < GB; g++) {
                qa[g] = q2[qb + g * HALF + i];
                qc[g] = q2[qb + g * HALF + i + 1u];
            }
            for (var b = 0u; b < KPL; b++) {
                let c = codes8(kc[kb[b] + gi * 8u + w]);
                for (var g = 0u; g < GB; g++) {
                    part[b][g] += dot(qa[g], c.xy) + dot(qc[g], c.zw);
                }
            }
        }
        for (var b = 0u; b < KPL; b++) {
            let d = unpack2x16float(kc[kb[b] + HALF / 2u + gi / 2u])[gi % 2u];
            for (var g = 0u; g < GB; g++) { s[b][g] += d * part[b][g]; }
        }
    }
    return s;
}

// Element pair i of the value row at vb.
fn v_pair(vb: u32, i: u32) -> vec2<f32> {
    let w = vc[vb + i / 2u] >> ((i % 2u) * 16u);
    let c = vec2<f32>(bitcast<vec2<i32>>(vec2<u32>(w << 24u, w << 16u)) >> vec2<u32>(24u));
    return c * unpack2x16float(vc[vb + HALF / 2u + i / 32u])[(i / 16u) % 2u];
}
#else
fn row_len(hd: u32) -> u32 { return hd / 8u + hd / 32u; }

fn codes4(w: u32, shift: vec4<u32>) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(w) >> shift) & vec4<u32>(15u));
}

// Per group d·(q·codes) + m·sum(q). Key codes are 5-bit: nibbles here,
// fifth bits in the value row (same offset). qs: the row's qsum base.
fn k_scores(qb: u32, kb: array<u32, KPL>, qs: u32) -> array<array<f32, GB>, KPL> {
    var s: array<array<f32, GB>, KPL>;
    let ng = HALF / 16u;
    for (var gi = 0u; gi < ng; gi++) {
        var part: array<array<f32, GB>, KPL>;
        var fifth: array<u32, KPL>;
        for (var b = 0u; b < KPL; b++) { fifth[b] = vc[kb[b] + 4u * ng + gi]; }
        for (var w = 0u; w < 4u; w++) {
            let i = gi * 16u + 4u * w;
            var q: array<array<vec2<f32>, 4>, GB>;
            for (var g = 0u; g < GB; g++) {
                for (var e = 0u; e < 4u; e++) { q[g][e] = q2[qb + g * HALF + i + e]; }
            }
            for (var b = 0u; b < KPL; b++) {
                let word = kc[kb[b] + gi * 4u + w];
                let f = vec4<u32>(fifth[b] >> (8u * w));
                let lo = codes4(word, vec4<u32>(0u, 4u, 8u, 12u)) + 16.0 * vec4<f32>((f >> vec4<u32>(0u, 1u, 2u, 3u)) & vec4<u32>(1u));
                let hi = codes4(word, vec4<u32>(16u, 20u, 24u, 28u)) + 16.0 * vec4<f32>((f >> vec4<u32>(4u, 5u, 6u, 7u)) & vec4<u32>(1u));
                for (var g = 0u; g < GB; g++) {
                    part[b][g] += dot(q[g][0], lo.xy) + dot(q[g][1], lo.zw)
                        + dot(q[g][2], hi.xy) + dot(q[g][3], hi.zw);
                }
            }
        }
        for (var b = 0u; b < KPL; b++) {
            let dm = unpack2x16float(kc[kb[b] + 4u * ng + gi]);
            for (var g = 0u; g < GB; g++) { s[b][g] += dm.x * part[b][g] + dm.y * qsum[qs + g * 8u + gi]; }
        }
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
fn v_pair(vb: u32, i: u32) -> vec2<f32> {
    let ng = HALF / 16u;
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

fn k_scores(qb: u32, kb: array<u32, KPL>) -> array<array<f32, GB>, KPL> {
    var s: array<array<f32, GB>, KPL>;
    for (var i = 0u; i < HALF; i++) {
        var q: array<vec2<f32>, GB>;
        for (var g = 0u; g < GB; g++) { q[g] = q2[qb + g * HALF + i]; }
        for (var b = 0u; b < KPL; b++) {
            let k = from_kv(kc[kb[b] + i]);
            for (var g = 0u; g < GB; g++) { s[b][g] += dot(q[g], k); }
        }
    }
    return s;
}

fn v_pair(vb: u32, i: u32) -> vec2<f32> { return from_kv(vc[vb + i]); }
#endif

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32,
        @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    // Slot r of the workgroup: one (row, group of GB heads) pair, so that
    // a step of one row still fills n_heads / GB slots.
    let r = lid / LPR;
    let c = lid % LPR;
    let n_groups = params.n_heads / GB;
    let slot = (wid.x + wid.y * nwg.x) * QR + r;
    let t = step.first_row + slot / n_groups;
    let h0 = (slot % n_groups) * GB;
    let live = t < step.n_tokens;
    let split = wid.z;
    let n_splits = nwg.z;
    let hd = params.head_dim;
    let kvh = h0 / params.group;
    let qb = r * GB * HALF;

    var seq = Seq(0u, 0u, 0u, 0u);
    var ctx_len = 0u;
    if (live) {
        seq = seqs[row_seq[t]];
        ctx_len = positions[t] + 1u;
    }
    // A row's split boundaries depend on its own context length only (the
    // dispatch always has enough splits for the longest row), and are
    // multiples of KT so that its tiles are the same in any workgroup.
    let own = max(MIN_CHUNK, (ctx_len + params.max_splits - 1u) / params.max_splits);
    let chunk = (max(own, (ctx_len + n_splits - 1u) / n_splits) + KT - 1u) / KT * KT;
    let start = min(split * chunk, ctx_len);
    let end = min(start + chunk, ctx_len);
    if (c == 0u) { ranges[r] = vec2<u32>(start, end); }
    if (live) {
        for (var e = c; e < GB * HALF; e += LPR) {
            let g = e / HALF;
            let i = e % HALF;
            q2[qb + e] = qkv[(t * params.row_stride + (h0 + g) * hd) / 2u + i] * params.scale;
        }
    }
    workgroupBarrier();
    // Loop bounds must be workgroup-uniform for the barriers inside (browsers check).
    if (lid == 0u) {
        var lo = 0xffffffffu;
        var hi = 0u;
        for (var i = 0u; i < QR; i++) {
            let rg = ranges[i];
            if (rg.y > rg.x) {
                lo = min(lo, rg.x);
                hi = max(hi, rg.y);
            }
        }
        wg_range = vec2<u32>(lo, hi);
    }
#if KV_Q4
    let nb = hd / ROT;
    for (var e = lid; e < QR * GB * nb; e += WG) {
        let b0 = (e / nb) * HALF + (e % nb) * (ROT / 2u);
        var y: array<f32, ROT>;
        for (var i = 0u; i < ROT / 2u; i++) {
            y[2u * i] = q2[b0 + i].x;
            y[2u * i + 1u] = q2[b0 + i].y;
        }
        fwht(&y);
        for (var i = 0u; i < ROT / 2u; i++) {
            q2[b0 + i] = vec2<f32>(y[2u * i], y[2u * i + 1u]) * (1.0 / f32(ROT));
        }
    }
    workgroupBarrier();
    let ng = HALF / 16u;
    for (var e = lid; e < QR * GB * ng; e += WG) {
        let b0 = (e / ng) * HALF + (e % ng) * 16u;
        var a = 0.0;
        for (var i = 0u; i < 16u; i++) { a += q2[b0 + i].x + q2[b0 + i].y; }
        qsum[(e / ng) * 8u + e % ng] = a;
    }
#endif
    let range = workgroupUniformLoad(&wg_range);

    var m: array<f32, GB>;
    var l: array<f32, GB>;
    var acc: array<array<vec2<f32>, GB>, PPL>;
    for (var g = 0u; g < GB; g++) { m[g] = NEG; }
    let rl = row_len(hd);
    for (var j0 = range.x; j0 < range.y; j0 += KT) {
        // Both bounds are multiples of KT or the row's end, so a tile is
        // either wholly before `end` or holds it.
        let on = live && j0 >= start && j0 < end;
        var s: array<array<f32, GB>, KPL>;
        var valid: array<bool, KPL>;
        if (on) {
            var kb: array<u32, KPL>;
            for (var b = 0u; b < KPL; b++) {
                let j = j0 + c + b * LPR;
                valid[b] = j < end;
                if (valid[b]) {
                    kb[b] = kv_row(seq, j, kvh) * rl;
                }
            }
#if KV_Q4
            s = k_scores(qb, kb, r * GB * 8u);
#else
            s = k_scores(qb, kb);
#endif
            for (var g = 0u; g < GB; g++) {
                var mx = NEG;
                for (var b = 0u; b < KPL; b++) {
                    if (valid[b]) { mx = max(mx, s[b][g]); }
                }
                red_m[(r * GB + g) * LPR + c] = mx;
            }
        }
        workgroupBarrier();
        var alpha: array<f32, GB>;
        if (on) {
            for (var g = 0u; g < GB; g++) {
                let rb = (r * GB + g) * LPR;
                var tmax = red_m[rb];
                for (var i = 1u; i < LPR; i++) { tmax = max(tmax, red_m[rb + i]); }
                let m_new = max(m[g], tmax);
                alpha[g] = exp(m[g] - m_new);
                m[g] = m_new;
                var ps = 0.0;
                for (var b = 0u; b < KPL; b++) {
                    var p = 0.0;
                    if (valid[b]) { p = exp(s[b][g] - m_new); }
                    probs[(r * KT + c + b * LPR) * GB + g] = p;
                    ps += p;
                }
                red_s[rb + c] = ps;
            }
        }
        workgroupBarrier();
        if (on) {
            for (var g = 0u; g < GB; g++) {
                let rb = (r * GB + g) * LPR;
                var tsum = red_s[rb];
                for (var i = 1u; i < LPR; i++) { tsum += red_s[rb + i]; }
                l[g] = l[g] * alpha[g] + tsum;
                for (var u = 0u; u < PPL; u++) { acc[u][g] *= alpha[g]; }
            }
            let n = min(KT, end - j0);
            for (var k = 0u; k < n; k++) {
                let j = j0 + k;
                let vb = kv_row(seq, j, kvh) * rl;
                var p: array<f32, GB>;
                for (var g = 0u; g < GB; g++) { p[g] = probs[(r * KT + k) * GB + g]; }
                for (var u = 0u; u < PPL; u++) {
                    let i = c + u * LPR;
                    if (i < HALF) {
                        let v = v_pair(vb, i);
                        for (var g = 0u; g < GB; g++) { acc[u][g] += p[g] * v; }
                    }
                }
            }
        }
        workgroupBarrier();
    }
#if KV_Q4
    for (var u = 0u; u < PPL; u++) {
        let i = c + u * LPR;
        if (i < HALF) {
            for (var g = 0u; g < GB; g++) { q2[qb + g * HALF + i] = acc[u][g]; }
        }
    }
    workgroupBarrier();
    for (var u = 0u; u < PPL; u++) {
        let i = c + u * LPR;
        if (i < HALF) {
            for (var g = 0u; g < GB; g++) { acc[u][g] = unrotate_pair(qb + g * HALF, i); }
        }
    }
#endif
    if (!live) { return; }

    for (var g = 0u; g < GB; g++) {
        let h = h0 + g;
#if DIRECT
        let ob = (t * params.n_heads + h) * hd;
        let inv = 1.0 / l[g];
        for (var u = 0u; u < PPL; u++) {
            let i = c + u * LPR;
            if (i < HALF) {
                dst[ob + 2u * i] = acc[u][g].x * inv;
                dst[ob + 2u * i + 1u] = acc[u][g].y * inv;
            }
        }
#else
        let e = (t * params.n_heads + h) * n_splits + split;
        let sb = 4u + e * (hd + 2u);
        if (c == 0u) {
            dst[sb] = m[g];
            dst[sb + 1u] = l[g];
            if (e == 0u) { dst[0] = f32(n_splits); }
        }
        for (var u = 0u; u < PPL; u++) {
            let i = c + u * LPR;
            if (i < HALF) {
                dst[sb + 2u + 2u * i] = acc[u][g].x;
                dst[sb + 3u + 2u * i] = acc[u][g].y;
            }
        }
#endif
    }
}
