// dst = src, one vec4 of words per invocation: the adapter's achievable
// storage-buffer bandwidth through the same kind of loads and stores the
// other kernels use (the roofline that `hearth bench --roofline` reports
// decode's weight reads against).

struct Params { n: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * WG + gid.x;
    if (i >= params.n) { return; }
    dst[i] = src[i];
}
