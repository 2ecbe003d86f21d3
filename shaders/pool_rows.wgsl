// Pooling for embeddings: out[s, c] = sum of x[r, c] over the rows r of
// segment s (segs holds (first row, row count) pairs). Sums rather than
// means, so a prompt split over several steps adds up on the host before
// it is divided. One invocation per (column, segment): segment rows are
// read column-coalesced across the workgroup.

struct Params { width: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> segs: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let c = gid.x;
    let s = wid.y;
    if (c >= params.width) { return; }
    let first = segs[2u * s];
    let n = segs[2u * s + 1u];
    var acc = 0.0;
    for (var r = 0u; r < n; r++) {
        acc += x[(first + r) * params.width + c];
    }
    out[s * params.width + c] = acc;
}
