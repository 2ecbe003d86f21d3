// out[t, :] = dequantized row ids[t] of the table. One dispatch per row
// chunk; each writes only the tokens whose id falls in its rows. Ids past the
// table's end get a zero row (written by the first chunk) instead of an
// out-of-bounds read.

struct Step { n_tokens: u32, n_seqs: u32, _p0: u32, _p1: u32 }
struct Params { rows: u32, cols: u32, row_offset: u32, total_rows: u32, row_words: u32, first_chunk: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * WG + gid.x;
    let ng = groups_per_row();
    let t = i / ng;
    let g = i % ng;
    if (t >= step.n_tokens) { return; }
    let id = ids[t];
    var w = W8(vec4<f32>(0.0), vec4<f32>(0.0));
    if (id >= params.row_offset && id - params.row_offset < params.rows) {
        w = load8(id - params.row_offset, g);
    } else if (params.first_chunk == 0u || id < params.total_rows) {
        return;
    }
    let c = group_cols(g);
    let base = t * params.cols;
    for (var k = 0u; k < 4u; k++) {
        if (c.x + k < params.cols) { out[base + c.x + k] = w.lo[k]; }
        if (c.y + k < params.cols) { out[base + c.y + k] = w.hi[k]; }
    }
}
