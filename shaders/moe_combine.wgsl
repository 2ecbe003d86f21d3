// The mixture-of-experts block's output added to the residual:
//   x[t, c] += sum_j w[t, j] * out[pos(t, j), c]
//            (+ sigmoid(xn[t] . gate_shexp) * shared[t, c] with SHARED)
// where out holds each expert's result at the assignment's grouped position
// (moe_group.wgsl). One workgroup per row; each row's sums run in the same
// order whatever else is in the step.

struct Step { n_tokens: u32, n_seqs: u32, first_row: u32, _p0: u32 }
struct Params { hidden: u32, k: u32, pos: u32, _p0: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read> route: array<u32>;
@group(0) @binding(4) var<storage, read> weights: array<f32>;
@group(0) @binding(5) var<storage, read> out: array<f32>;
#if SHARED
@group(0) @binding(6) var<storage, read> xn: array<f32>;
@group(0) @binding(7) var<storage, read> gate_shexp: array<f32>;
@group(0) @binding(8) var<storage, read> shared_out: array<f32>;

var<workgroup> red: array<f32, WG>;
#endif

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) li: u32,
        @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = wid.y * nwg.x + wid.x;
    // Uniform per workgroup: the barriers below stay in uniform control flow.
    if (t >= step.n_tokens) { return; }
    let h = params.hidden;
#if SHARED
    var part = 0.0;
    for (var c = li; c < h; c += WG) { part += xn[t * h + c] * gate_shexp[c]; }
    red[li] = part;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) { red[li] += red[li + s]; }
        workgroupBarrier();
    }
    let g = 1.0 / (1.0 + exp(-red[0]));
#endif
    let k = params.k;
    for (var c = li; c < h; c += WG) {
        var acc = 0.0;
        for (var j = 0u; j < k; j++) {
            let a = t * k + j;
            acc += weights[a] * out[route[params.pos + a] * h + c];
        }
#if SHARED
        acc += g * shared_out[t * h + c];
#endif
        x[t * h + c] += acc;
    }
}
