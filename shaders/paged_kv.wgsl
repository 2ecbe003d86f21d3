// What the paged-KV kernels (kv_write.wgsl, kv_write_quant.wgsl,
// attention.wgsl) share, concatenated before each: the step, the sequences
// and the bindings that say where each row's K and V live. Binding 1 (each
// kernel's Params, which has a block_size) and 7.. are the kernel's own.

// first_row: where attention's rows start (the writers cover every row).
struct Step { n_tokens: u32, n_seqs: u32, first_row: u32, _p0: u32 }
struct Seq { kv_len: u32, table_offset: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> positions: array<u32>;
@group(0) @binding(3) var<storage, read> row_seq: array<u32>;
@group(0) @binding(4) var<storage, read> seqs: array<Seq>;
@group(0) @binding(5) var<storage, read> block_table: array<u32>;
@group(0) @binding(6) var<storage, read> qkv: array<vec2<f32>>;

// Index of the cache row (one KV head at one position) of position p of
// `seq`, KV head kvh, in the layout [block][kv_head][slot]; each kernel
// multiplies it by its row length. Every kernel's Params has n_kv_heads
// and block_size.
fn kv_row(seq: Seq, p: u32, kvh: u32) -> u32 {
    let blk = block_table[seq.table_offset + p / params.block_size];
    return (blk * params.n_kv_heads + kvh) * params.block_size + p % params.block_size;
}
