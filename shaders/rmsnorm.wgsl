// RMSNorm over rows: out[t, :] = x[t, :] / sqrt(mean(x[t, :]^2) + eps) * w.
// One workgroup per row. With HEADS: the per-head variant (Qwen3 q/k norm),
// in place on the fused QKV rows, one workgroup per (row, selected head).

struct Step { n_tokens: u32, n_seqs: u32, _p0: u32, _p1: u32 }
// width: row (or head) length; in_stride/out_stride: row strides;
// first/count: the heads to normalise (HEADS only).
struct Params { width: u32, eps: f32, in_stride: u32, out_stride: u32, first: u32, count: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
#if HEADS
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
#else
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
#endif

var<workgroup> red: array<f32, WG>;

struct Lane { lid: u32, sg_lane: u32, sg_id: u32, n_sg: u32 }

#if SUBGROUPS
fn wg_sum(v: f32, ln: Lane) -> f32 {
    let s = subgroupAdd(v);
    if (ln.sg_lane == 0u) { red[ln.sg_id] = s; }
    workgroupBarrier();
    var t = 0.0;
    for (var i = 0u; i < ln.n_sg; i++) { t += red[i]; }
    workgroupBarrier();
    return t;
}
#else
fn wg_sum(v: f32, ln: Lane) -> f32 {
    red[ln.lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (ln.lid < s) { red[ln.lid] += red[ln.lid + s]; }
        workgroupBarrier();
    }
    let t = red[0];
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
    let g = wid.y * nwg.x + wid.x;
#if HEADS
    if (g >= step.n_tokens * params.count) { return; }
    let t = g / params.count;
    let base = t * params.in_stride + (params.first + g % params.count) * params.width;
    let obase = base;
#else
    if (g >= step.n_tokens) { return; }
    let base = g * params.in_stride;
    let obase = g * params.out_stride;
#endif
    var ss = 0.0;
    for (var i = lid; i < params.width; i += WG) {
        let v = x[base + i];
        ss += v * v;
    }
    let total = wg_sum(ss, ln);
    let r = inverseSqrt(total / f32(params.width) + params.eps);
    for (var i = lid; i < params.width; i += WG) {
#if HEADS
        x[obase + i] = x[base + i] * r * w[i];
#else
        out[obase + i] = x[base + i] * r * w[i];
#endif
    }
}
