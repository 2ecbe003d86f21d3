// KV write, quantized: the K and V heads of the fused QKV rows (after RoPE)
// into the layer's paged cache as q8 (KV_Q8) or q4 head rows, at the slot and
// block kv_write.wgsl uses. The row layout is runtime/kv/quant.rs's, which
// this must match word for word. One invocation per (row, kv head, pair of
// 32-element groups, K or V): a pair, because two q8 groups share one scale
// word and no two invocations may write the same word.

struct Step { n_tokens: u32, n_seqs: u32, _p0: u32, _p1: u32 }
struct Seq { kv_len: u32, table_offset: u32, _p0: u32, _p1: u32 }
// k_offset/v_offset: where K and V start in a QKV row (elements); row_stride: QKV row length.
struct Params { n_kv_heads: u32, head_dim: u32, block_size: u32, row_stride: u32, k_offset: u32, v_offset: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> positions: array<u32>;
@group(0) @binding(3) var<storage, read> row_seq: array<u32>;
@group(0) @binding(4) var<storage, read> seqs: array<Seq>;
@group(0) @binding(5) var<storage, read> block_table: array<u32>;
@group(0) @binding(6) var<storage, read> qkv: array<vec2<f32>>;
@group(0) @binding(7) var<storage, read_write> kc: array<u32>;
@group(0) @binding(8) var<storage, read_write> vc: array<u32>;

const F16_MAX: f32 = 65504.0;

// Out-of-range inputs to pack2x16float give indeterminate bits; clamp first.
fn f16_round(x: f32) -> f32 {
    return unpack2x16float(pack2x16float(vec2<f32>(clamp(x, -F16_MAX, F16_MAX), 0.0))).x;
}

fn put(which: u32, i: u32, w: u32) {
    if (which == 0u) { kc[i] = w; } else { vc[i] = w; }
}

#if KV_Q8
fn row_words(hd: u32) -> u32 { return hd / 4u + (hd / 32u + 1u) / 2u; }

// Codes of the group at qkv pair `src` into data words row + 8g..; returns
// the f16 bits of its scale. Scales multiply by 1/127 (exact in WGSL as on
// the CPU); only the codes divide.
fn quantize_group(which: u32, src: u32, row: u32, g: u32) -> u32 {
    var amax = 0.0;
    for (var i = 0u; i < 16u; i++) {
        let x = abs(qkv[src + i]);
        amax = max(amax, max(x.x, x.y));
    }
    let d = f16_round(amax * (1.0 / 127.0));
    for (var w = 0u; w < 8u; w++) {
        let x = vec4<f32>(qkv[src + 2u * w], qkv[src + 2u * w + 1u]);
        var q = vec4<i32>(0);
        if (d > 0.0) { q = vec4<i32>(clamp(round(x / d), vec4<f32>(-127.0), vec4<f32>(127.0))); }
        let b = bitcast<vec4<u32>>(q) & vec4<u32>(0xffu);
        put(which, row + g * 8u + w, b.x | (b.y << 8u) | (b.z << 16u) | (b.w << 24u));
    }
    return pack2x16float(vec2<f32>(d, 0.0)) & 0xffffu;
}
#else
fn row_words(hd: u32) -> u32 { return hd / 8u + hd / 32u; }

// Codes of the group at qkv pair `src` into data words row + 4g..; returns
// its scale word pack2x16float(d, m). m is the minimum moved down by 2^-10 of
// itself before rounding, so that it stays <= every element.
fn quantize_group(which: u32, src: u32, row: u32, g: u32) -> u32 {
    var mn = qkv[src].x;
    var mx = mn;
    for (var i = 0u; i < 16u; i++) {
        let x = qkv[src + i];
        mn = min(mn, min(x.x, x.y));
        mx = max(mx, max(x.x, x.y));
    }
    let m = f16_round(mn - abs(mn) * (1.0 / 1024.0));
    let d = f16_round((mx - m) * (1.0 / 15.0));
    for (var w = 0u; w < 4u; w++) {
        let x0 = vec4<f32>(qkv[src + 4u * w], qkv[src + 4u * w + 1u]);
        let x1 = vec4<f32>(qkv[src + 4u * w + 2u], qkv[src + 4u * w + 3u]);
        var q0 = vec4<u32>(0u);
        var q1 = vec4<u32>(0u);
        if (d > 0.0) {
            q0 = vec4<u32>(clamp(round((x0 - m) / d), vec4<f32>(0.0), vec4<f32>(15.0)));
            q1 = vec4<u32>(clamp(round((x1 - m) / d), vec4<f32>(0.0), vec4<f32>(15.0)));
        }
        let lo = q0.x | (q0.y << 4u) | (q0.z << 8u) | (q0.w << 12u);
        let hi = q1.x | (q1.y << 4u) | (q1.z << 8u) | (q1.w << 12u);
        put(which, row + g * 4u + w, lo | (hi << 16u));
    }
    return pack2x16float(vec2<f32>(d, m));
}
#endif

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.y * nwg.x * WG + gid.x;
    let hd = params.head_dim;
    let groups = hd / 32u;
    let pairs = (groups + 1u) / 2u;
    let per_row = params.n_kv_heads * pairs * 2u;
    if (idx >= step.n_tokens * per_row) { return; }
    let t = idx / per_row;
    let r = idx % per_row;
    let which = r % 2u;
    let pair = (r / 2u) % pairs;
    let kvh = r / (2u * pairs);
    let p = positions[t];
    let seq = seqs[row_seq[t]];
    let blk = block_table[seq.table_offset + p / params.block_size];
    let row = ((blk * params.n_kv_heads + kvh) * params.block_size + p % params.block_size) * row_words(hd);
    let off = select(params.k_offset, params.v_offset, which == 1u);
    let src = (t * params.row_stride + off + kvh * hd) / 2u;
    let g0 = 2u * pair;
    let s0 = quantize_group(which, src + g0 * 16u, row, g0);
    var s1 = 0u;
#if KV_Q8
    if (g0 + 1u < groups) { s1 = quantize_group(which, src + (g0 + 1u) * 16u, row, g0 + 1u); }
    put(which, row + hd / 4u + pair, s0 | (s1 << 16u));
#else
    put(which, row + hd / 8u + g0, s0);
    if (g0 + 1u < groups) {
        s1 = quantize_group(which, src + (g0 + 1u) * 16u, row, g0 + 1u);
        put(which, row + hd / 8u + g0 + 1u, s1);
    }
#endif
}
