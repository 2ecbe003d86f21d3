// Groups a step's expert assignments by expert, on the GPU, so the expert
// matmuls read each selected expert's weights once for all rows routed to
// it. Assignment a = t * k + j is row t's j-th expert (ids[a], from the
// router). Generated-token rows (t < n_gen) and prompt rows are grouped
// apart: they go through different matmul kernels (matrix-vector and tiled),
// and a row must take the same kernel whatever it is batched with.
//
// route (u32 words), laid out by the launcher:
//   [GEN_TILES]    tile count, 3 spare words, then tiles of 4 words
//   [PROMPT_TILES] the same for the prompt rows
//   [SRC + p]      the row of the assignment at grouped position p
//   [POS + a]      the grouped position of assignment a
// A tile is (expert, first position, rows, 0): up to T consecutive
// positions of one expert, T being the tile height of the kernel that reads
// it. Positions are ordered by class, then expert, then row, so the result
// never depends on timing. One workgroup: invocation e owns expert e.

struct Step { n_tokens: u32, n_seqs: u32, first_row: u32, _p0: u32 }
struct Params { experts: u32, k: u32, t_gen: u32, t_prompt: u32 }

@group(0) @binding(0) var<uniform> step: Step;
// The matrix-vector rows' step: its n_tokens is the generated rows.
@group(0) @binding(1) var<uniform> gen_step: Step;
@group(0) @binding(2) var<uniform> params: Params;
@group(0) @binding(3) var<storage, read> ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> route: array<u32>;

var<workgroup> count: array<u32, WG>;
var<workgroup> first: array<u32, WG>;
var<workgroup> first_tile: array<u32, WG>;

fn group_class(e: u32, lo: u32, hi: u32, tiles: u32, t: u32) {
    var c = 0u;
    if (e < params.experts) {
        for (var a = lo; a < hi; a++) {
            if (ids[a] == e) { c++; }
        }
    }
    count[e] = c;
    workgroupBarrier();
    if (e == 0u) {
        var p = lo;
        var n_tiles = 0u;
        for (var x = 0u; x < params.experts; x++) {
            first[x] = p;
            first_tile[x] = n_tiles;
            p += count[x];
            n_tiles += (count[x] + t - 1u) / t;
        }
        route[tiles] = n_tiles;
    }
    workgroupBarrier();
    if (e < params.experts && c > 0u) {
        var p = first[e];
        for (var a = lo; a < hi; a++) {
            if (ids[a] == e) {
                route[SRC + p] = a / params.k;
                route[POS + a] = p;
                p++;
            }
        }
        var ti = tiles + 4u + first_tile[e] * 4u;
        for (var s = 0u; s < c; s += t) {
            route[ti] = e;
            route[ti + 1u] = first[e] + s;
            route[ti + 2u] = min(t, c - s);
            route[ti + 3u] = 0u;
            ti += 4u;
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) e: u32) {
    let k = params.k;
    let n_gen = min(gen_step.n_tokens, step.n_tokens);
    group_class(e, 0u, n_gen * k, GEN_TILES, max(params.t_gen, 1u));
    group_class(e, n_gen * k, step.n_tokens * k, PROMPT_TILES, max(params.t_prompt, 1u));
}
