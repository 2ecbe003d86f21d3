// KV write: copies each row's K and V heads from the fused QKV activations
// (after RoPE) into the layer's paged cache, layout
// [block][kv_head][slot][head_dim], at slot positions[t] % block_size of block
// block_table[seqs[row_seq[t]].table_offset + positions[t] / block_size].
// One invocation per (row, kv head, pair of elements).

// k_offset/v_offset: where K and V start in a QKV row (elements); row_stride: QKV row length.
struct Params { n_kv_heads: u32, head_dim: u32, block_size: u32, row_stride: u32, k_offset: u32, v_offset: u32, _p0: u32, _p1: u32 }

#if KV_F16
#if F16
alias KV2 = vec2<f16>;
fn to_kv(v: vec2<f32>) -> vec2<f16> { return vec2<f16>(v); }
#else
alias KV2 = u32;
fn to_kv(v: vec2<f32>) -> u32 { return pack2x16float(v); }
#endif
#else
alias KV2 = vec2<f32>;
fn to_kv(v: vec2<f32>) -> vec2<f32> { return v; }
#endif

@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(7) var<storage, read_write> kc: array<KV2>;
@group(0) @binding(8) var<storage, read_write> vc: array<KV2>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.y * nwg.x * WG + gid.x;
    let half = params.head_dim / 2u;
    let per_row = params.n_kv_heads * half;
    if (idx >= step.n_tokens * per_row) { return; }
    let t = idx / per_row;
    let r = idx % per_row;
    let kvh = r / half;
    let i = r % half;
    let p = positions[t];
    let seq = seqs[row_seq[t]];
    let dst = kv_row(seq, p, kvh) * half + i;
    let src = (t * params.row_stride + kvh * params.head_dim) / 2u + i;
    kc[dst] = to_kv(qkv[src + params.k_offset / 2u]);
    vc[dst] = to_kv(qkv[src + params.v_offset / 2u]);
}
