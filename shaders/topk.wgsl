// Top-K over logits [n_rows, vocab] (K padded to KP, a power of two <= 256).
// Pass 1 (STATS): invocation c of row r scans the strided subset
//   {c, c + n_sub, c + 2*n_sub, ...} serially (no barriers; coalesced reads) and
//   writes (max, id of max, sum(exp(x - max))) to scratch.
// Pass 2 (default): one workgroup per row combines the stats into the row max and
//   log-sum-exp, takes tau = the KP-th largest subset max (at least KP logits are
//   >= tau, so the top KP all are), then scans the row keeping logits >= tau in a
//   workgroup buffer; when it fills, it is bitonic-sorted and cut to KP (raising
//   tau). Exact for any input; heavy ties only cost extra sorts.
// Order: larger logit first; equal logits: lower id first. Padding: id 0xffffffff, value neg_inf().
// Output row r at r * (2*KP + 2) words: KP ids, KP logits, row max, log-sum-exp.

struct Params { vocab: u32, n_sub: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
#if STATS
@group(0) @binding(2) var<storage, read_write> scratch: array<u32>;
#else
@group(0) @binding(2) var<storage, read> scratch: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;
#endif

// Candidate buffer; a tile of TILE logits is appended while count <= CAP - TILE.
const CAP: u32 = 1024u;
const R: u32 = 8u;
const TILE: u32 = WG * R;
const LIST: u32 = 2u * KP + 2u;

var<workgroup> ids: array<u32, CAP>;
var<workgroup> vals: array<f32, CAP>;
var<workgroup> red: array<f32, WG>;
var<workgroup> count: atomic<u32>;
var<workgroup> n_cand: u32;

// The lowest f32 stands for minus infinity: Tint rejects an infinite
// constant, and WGSL lets implementations assume no infinities at run time.
fn neg_inf() -> f32 { return -0x1.fffffep+127f; }

#if STATS
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let row = gid.y;
    if (c >= params.n_sub) { return; }
    var m = neg_inf();
    var id = 0xffffffffu;
    var s = 0.0;
    for (var g = c; g < params.vocab; g += params.n_sub) {
        let x = logits[row * params.vocab + g];
        if (x > m) {
            if (m > neg_inf()) { s = s * exp(m - x); }
            s += 1.0;
            m = x;
            id = g;
        } else if (x > neg_inf()) {
            s += exp(x - m);
        } else if (id == 0xffffffffu) {
            id = g;
        }
    }
    let o = (row * params.n_sub + c) * 3u;
    scratch[o] = bitcast<u32>(m);
    scratch[o + 1u] = id;
    scratch[o + 2u] = bitcast<u32>(s);
}
#else
fn better(a: u32, b: u32) -> bool {
    return vals[a] > vals[b] || (vals[a] == vals[b] && ids[a] < ids[b]);
}

fn wg_reduce(v: f32, lid: u32, is_max: bool) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            if (is_max) { red[lid] = max(red[lid], red[lid + s]); } else { red[lid] += red[lid + s]; }
        }
        workgroupBarrier();
    }
    let t = red[0];
    workgroupBarrier();
    return t;
}

// Pads entries n.. with sentinels and sorts the whole buffer, best first.
fn sort_buffer(n: u32, lid: u32) {
    for (var i = n + lid; i < CAP; i += WG) {
        ids[i] = 0xffffffffu;
        vals[i] = neg_inf();
    }
    workgroupBarrier();
    for (var k = 2u; k <= CAP; k <<= 1u) {
        for (var j = k >> 1u; j > 0u; j >>= 1u) {
            for (var i = lid; i < CAP / 2u; i += WG) {
                let a = (i / j) * 2u * j + (i % j);
                let b = a + j;
                if (better(a, b) != ((a & k) == 0u)) {
                    let ti = ids[a]; ids[a] = ids[b]; ids[b] = ti;
                    let tv = vals[a]; vals[a] = vals[b]; vals[b] = tv;
                }
            }
            workgroupBarrier();
        }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = wid.x;
    let n_sub = params.n_sub;
    let sb = row * n_sub * 3u;
    // Row max and log-sum-exp from the subset stats; subset maxima into the buffer.
    var m = neg_inf();
    for (var i = lid; i < CAP; i += WG) {
        var v = neg_inf();
        var id = 0xffffffffu;
        if (i < n_sub) {
            v = bitcast<f32>(scratch[sb + i * 3u]);
            id = scratch[sb + i * 3u + 1u];
        }
        ids[i] = id;
        vals[i] = v;
        m = max(m, v);
    }
    let mx = wg_reduce(m, lid, true);
    var s = 0.0;
    for (var i = lid; i < n_sub; i += WG) {
        let v = bitcast<f32>(scratch[sb + i * 3u]);
        if (v > neg_inf()) { s += bitcast<f32>(scratch[sb + i * 3u + 2u]) * exp(v - mx); }
    }
    let total = wg_reduce(s, lid, false);
    sort_buffer(CAP, lid);
    var tau = neg_inf();
    if (n_sub >= KP) { tau = vals[KP - 1u]; }
    if (lid == 0u) { atomicStore(&count, 0u); }
    workgroupBarrier();

    let base = row * params.vocab;
    for (var t0 = 0u; t0 < params.vocab; t0 += TILE) {
        for (var r = 0u; r < R; r++) {
            let g = t0 + r * WG + lid;
            if (g < params.vocab) {
                let x = logits[base + g];
                if (x >= tau) {
                    let slot = atomicAdd(&count, 1u);
                    ids[slot] = g;
                    vals[slot] = x;
                }
            }
        }
        workgroupBarrier();
        if (lid == 0u) { n_cand = atomicLoad(&count); }
        let n = workgroupUniformLoad(&n_cand);
        if (n > CAP - TILE) {
            sort_buffer(n, lid);
            tau = max(tau, vals[KP - 1u]);
            if (lid == 0u) { atomicStore(&count, KP); }
            workgroupBarrier();
        }
    }
    if (lid == 0u) { n_cand = atomicLoad(&count); }
    sort_buffer(workgroupUniformLoad(&n_cand), lid);

    let ob = row * LIST;
    for (var i = lid; i < KP; i += WG) {
        out[ob + i] = ids[i];
        out[ob + KP + i] = bitcast<u32>(vals[i]);
    }
    if (lid == 0u) {
        out[ob + 2u * KP] = bitcast<u32>(mx);
        out[ob + 2u * KP + 1u] = bitcast<u32>(mx + log(total));
    }
}
#endif
