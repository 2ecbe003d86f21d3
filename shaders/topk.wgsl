// Top-K over logits [n_rows, vocab] in two passes (K padded to KP, a power of two <= 256).
// Pass 1 (default): workgroup (chunk, row) bitonic-sorts CHUNK logits in workgroup
//   memory and writes its best KP (id, logit) plus the chunk max and
//   sum(exp(x - max)) to scratch.
// Pass 2 (MERGE): one workgroup per row folds the chunk lists into the best KP with
//   bitonic merges (a list whose head cannot enter is skipped) and combines
//   max/sum into the log-sum-exp of the whole row.
// Order: larger logit first; equal logits: lower id first. Padding: id 0xffffffff, -inf.
// Output row r at r * (2*KP + 2) words: KP ids, KP logits, row max, log-sum-exp.

struct Params { vocab: u32, n_chunks: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<uniform> params: Params;
#if MERGE
@group(0) @binding(1) var<storage, read> scratch: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
const N: u32 = 2u * KP;
#else
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> scratch: array<u32>;
const N: u32 = CHUNK;
#endif

const LIST: u32 = 2u * KP + 2u;

var<workgroup> ids: array<u32, N>;
var<workgroup> vals: array<f32, N>;
var<workgroup> red: array<f32, WG>;
var<workgroup> skip: u32;

fn neg_inf() -> f32 { return bitcast<f32>(0xff800000u); }

fn better(a: u32, b: u32) -> bool {
    return vals[a] > vals[b] || (vals[a] == vals[b] && ids[a] < ids[b]);
}

fn cmp_swap(a: u32, b: u32, best_first: bool) {
    if (better(a, b) != best_first) {
        let ti = ids[a]; ids[a] = ids[b]; ids[b] = ti;
        let tv = vals[a]; vals[a] = vals[b]; vals[b] = tv;
    }
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

#if MERGE
@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = wid.x;
    let nc = params.n_chunks;
    let base = row * nc * LIST;
    for (var i = lid; i < KP; i += WG) {
        ids[i] = scratch[base + i];
        vals[i] = bitcast<f32>(scratch[base + KP + i]);
    }
    workgroupBarrier();
    for (var c = 1u; c < nc; c++) {
        let lb = base + c * LIST;
        if (lid == 0u) {
            // Enter only if the list's best beats the current worst kept.
            let hv = bitcast<f32>(scratch[lb + KP]);
            let hi = scratch[lb];
            let wv = vals[KP - 1u];
            let wi = ids[KP - 1u];
            skip = select(1u, 0u, hv > wv || (hv == wv && hi < wi));
        }
        if (workgroupUniformLoad(&skip) == 1u) { continue; }
        for (var i = lid; i < KP; i += WG) {
            ids[KP + i] = scratch[lb + KP - 1u - i];
            vals[KP + i] = bitcast<f32>(scratch[lb + 2u * KP - 1u - i]);
        }
        workgroupBarrier();
        for (var j = KP; j > 0u; j >>= 1u) {
            for (var i = lid; i < KP; i += WG) {
                let a = (i / j) * 2u * j + (i % j);
                cmp_swap(a, a + j, true);
            }
            workgroupBarrier();
        }
    }
    var m = neg_inf();
    for (var c = lid; c < nc; c += WG) {
        m = max(m, bitcast<f32>(scratch[base + c * LIST + 2u * KP]));
    }
    let mx = wg_reduce(m, lid, true);
    var s = 0.0;
    for (var c = lid; c < nc; c += WG) {
        let lb = base + c * LIST;
        let cm = bitcast<f32>(scratch[lb + 2u * KP]);
        if (cm > neg_inf()) { s += bitcast<f32>(scratch[lb + 2u * KP + 1u]) * exp(cm - mx); }
    }
    let total = wg_reduce(s, lid, false);
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
#else
@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let chunk = wid.x;
    let row = wid.y;
    let start = chunk * CHUNK;
    var m = neg_inf();
    for (var i = lid; i < CHUNK; i += WG) {
        let g = start + i;
        var v = neg_inf();
        var id = 0xffffffffu;
        if (g < params.vocab) {
            v = logits[row * params.vocab + g];
            id = g;
        }
        ids[i] = id;
        vals[i] = v;
        m = max(m, v);
    }
    let mx = wg_reduce(m, lid, true);
    var s = 0.0;
    for (var i = lid; i < CHUNK; i += WG) {
        if (ids[i] != 0xffffffffu && mx > neg_inf()) { s += exp(vals[i] - mx); }
    }
    let total = wg_reduce(s, lid, false);
    for (var k = 2u; k <= CHUNK; k <<= 1u) {
        for (var j = k >> 1u; j > 0u; j >>= 1u) {
            for (var i = lid; i < CHUNK / 2u; i += WG) {
                let a = (i / j) * 2u * j + (i % j);
                cmp_swap(a, a + j, (a & k) == 0u);
            }
            workgroupBarrier();
        }
    }
    let ob = (row * params.n_chunks + chunk) * LIST;
    for (var i = lid; i < KP; i += WG) {
        scratch[ob + i] = ids[i];
        scratch[ob + KP + i] = bitcast<u32>(vals[i]);
    }
    if (lid == 0u) {
        scratch[ob + 2u * KP] = bitcast<u32>(mx);
        scratch[ob + 2u * KP + 1u] = bitcast<u32>(total);
    }
}
#endif
