// Mixture-of-experts router: for each row t, logits[e] = x[t, :] . w[e, :]
// over the E experts, a softmax over all of them, the top-k experts ranked
// by logit (ties to the lower index, so routing never depends on the
// batch), and their probabilities, renormalised to sum to one when
// params.norm != 0. One workgroup per row: invocation e computes expert e's
// logit (E <= WG), then invocation 0 ranks E (<= 256) logits for k (<= 16)
// picks, a few thousand comparisons, too few to be worth a parallel sort.

struct Step { n_tokens: u32, n_seqs: u32, _p0: u32, _p1: u32 }
struct Params { hidden: u32, experts: u32, k: u32, norm: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read_write> ids: array<u32>;
@group(0) @binding(5) var<storage, read_write> weights: array<f32>;

var<workgroup> lg: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32,
        @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = wid.y * nwg.x + wid.x;
    if (t >= step.n_tokens) { return; }
    let h = params.hidden;
    let e_n = params.experts;
    if (lid < e_n) {
        let xb = t * h;
        let wb = lid * h;
        // Four partial sums shorten the dependency chain of the dot product.
        var acc = vec4<f32>(0.0);
        var i = 0u;
        for (; i + 4u <= h; i += 4u) {
            acc += vec4<f32>(x[xb + i], x[xb + i + 1u], x[xb + i + 2u], x[xb + i + 3u])
                 * vec4<f32>(w[wb + i], w[wb + i + 1u], w[wb + i + 2u], w[wb + i + 3u]);
        }
        var s = (acc.x + acc.y) + (acc.z + acc.w);
        for (; i < h; i++) { s += x[xb + i] * w[wb + i]; }
        lg[lid] = s;
    }
    workgroupBarrier();
    if (lid != 0u) { return; }
    var m = lg[0];
    for (var e = 1u; e < e_n; e++) { m = max(m, lg[e]); }
    var z = 0.0;
    for (var e = 0u; e < e_n; e++) { z += exp(lg[e] - m); }
    // Bit e of `taken` marks expert e as already picked.
    var taken: array<u32, 8>;
    var picked_sum = 0.0;
    let k = params.k;
    for (var j = 0u; j < k; j++) {
        var best = 0xffffffffu;
        for (var e = 0u; e < e_n; e++) {
            if ((taken[e / 32u] & (1u << (e % 32u))) != 0u) { continue; }
            if (best == 0xffffffffu || lg[e] > lg[best]) { best = e; }
        }
        taken[best / 32u] |= 1u << (best % 32u);
        let p = exp(lg[best] - m) / z;
        ids[t * k + j] = best;
        weights[t * k + j] = p;
        picked_sum += p;
    }
    if (params.norm != 0u) {
        for (var j = 0u; j < k; j++) { weights[t * k + j] /= picked_sum; }
    }
}
