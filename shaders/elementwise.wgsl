// Element-wise kernels over [n_tokens, width] f32 activations.
// add:      a += b              (residual add, in place)
// silu_mul: out = silu(g) * u   (SwiGLU; g and u are halves of one fused gate/up row)

struct Step { n_tokens: u32, n_seqs: u32, _p0: u32, _p1: u32 }
struct Params { width: u32, in_stride: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read_write> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return (gid.y * nwg.x * WG) + gid.x;
}

@compute @workgroup_size(WG)
fn add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= step.n_tokens * params.width) { return; }
    a[i] = a[i] + b[i];
}

// a[t, i] = silu(b[t, i]) * b[t, width + i]; b rows are `in_stride` wide.
@compute @workgroup_size(WG)
fn silu_mul(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= step.n_tokens * params.width) { return; }
    let t = i / params.width;
    let c = i % params.width;
    let g = b[t * params.in_stride + c];
    let u = b[t * params.in_stride + params.width + c];
    a[i] = g / (1.0 + exp(-g)) * u;
}
