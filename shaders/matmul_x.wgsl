// How the matrix kernels (matvec.wgsl, matmul_tiled.wgsl) read x, concatenated
// with them: xv(i) is vec4 i of x, xs4() the vec4s per token row.

#if X_SILU
// SwiGLU fused into the x loads (down projection): x is the gate/up output,
// rows of 2 * cols ([gate | up]); a vec4 of x at i (row stride xs4()) is
// silu(g) * u of the gate at i and the up cols/4 after it. Every kernel
// form reads x through here, so a row's value is the same in all of them.
fn xs4() -> u32 { return params.cols / 2u; }
fn xv(i: u32) -> vec4<f32> {
    let g = x[i];
    return g / (vec4<f32>(1.0) + exp(-g)) * x[i + params.cols / 4u];
}
#else
// Vec4s per row of x.
fn xs4() -> u32 { return params.cols / 4u; }
#if X_VEC4
fn xv(i: u32) -> vec4<f32> { return x[i]; }
#endif
#endif

// Expert matrices (MOE): the matrix holds every expert's `params.rows` rows
// one after another, experts [e_first, e_first + e_count) in this chunk.
// Grid z walks a tile list of moe_group.wgsl (its base is params.tiles):
// each tile is up to MAX_T (or the tiled kernel's TT) grouped positions
// routed to one expert. x row = the position (or, with X_GATHER, the token
// row it came from), y row = the position.
#if MOE
@group(0) @binding(7) var<storage, read> route: array<u32>;
var<workgroup> moe_tile_wg: vec4<u32>;
// First weight row of this workgroup's expert.
var<private> w_base: u32;

// (first position, positions, first weight row, 0); no positions when the
// tile is past the list's end or its expert is in another chunk.
fn moe_tile(z: u32) -> vec4<u32> {
    if (z >= route[params.tiles]) { return vec4<u32>(0u); }
    let i = params.tiles + 4u + z * 4u;
    let e = route[i];
    if (e < params.e_first || e >= params.e_first + params.e_count) { return vec4<u32>(0u); }
    return vec4<u32>(route[i + 1u], route[i + 2u], (e - params.e_first) * params.rows, 0u);
}

// The tile of workgroup z, read by one invocation and made uniform (the
// tiled kernel's barriers need a uniform early exit).
fn moe_tile_uniform(li: u32, z: u32) -> vec4<u32> {
    if (li == 0u) { moe_tile_wg = moe_tile(z); }
    let tile = workgroupUniformLoad(&moe_tile_wg);
    w_base = tile.z;
    return tile;
}

fn w_row(r: u32) -> u32 { return w_base + r; }
#if X_GATHER
fn x_row(t: u32) -> u32 { return route[params.src + t]; }
#else
fn x_row(t: u32) -> u32 { return t; }
#endif
#else
fn w_row(r: u32) -> u32 { return r; }
fn x_row(t: u32) -> u32 { return t; }
#endif
