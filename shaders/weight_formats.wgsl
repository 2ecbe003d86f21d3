// Weight access shared by matvec, matmul_tiled and embed (prepended to each).
// A matrix chunk is row-major [params.rows, params.cols] in the GPU layout of
// runtime/quant/pack.rs; exactly one of W_F32, W_F16, W_Q8_0, W_Q4_0, W_Q4_1,
// W_Q4_K, W_Q5_0, W_Q5_1, W_Q5_K, W_Q6_K
// is set. The unit of access is a "group" of 8 elements of one row, returned
// as two vec4 halves whose first columns `group_cols` gives: contiguous for
// float and Q8_0 rows, (4w, 16+4w) within a block for the Q4 nibble layout.
// The including kernel declares `params` with `cols` and `row_words`.

#if W_F32
@group(0) @binding(5) var<storage, read> wq: array<f32>;
#endif
#if W_F16
#if F16
@group(0) @binding(5) var<storage, read> wq: array<vec2<f16>>;
#else
@group(0) @binding(5) var<storage, read> wq: array<u32>;
#endif
#endif
#if W_QUANT
// Vector loads: one block of Q4 values is one vec4, of Q8_0 values two.
@group(0) @binding(5) var<storage, read> wq: array<vec4<u32>>;
#if W_SCALE_WORDS
// Q6_K: three words per 32-element block: the two-bit highs of elements
// 0..15 and 16..31, then the two signed sub-block scales (bytes 0, 1) and d
// (f16, high half). Q5_0/Q5_1: two words per block: the fifth bits (bit i
// for element i), then d (low half) and Q5_1's m (high half). Q5_K: twelve
// words per super-block: (d, dmin) and the 12 scale bytes as Q4_K has them,
// then the fifth bits of each of its 8 blocks.
@group(0) @binding(6) var<storage, read> wscale: array<u32>;
#else
#if W_Q4_K
// One vec4 per 256-element super-block: (d, dmin) as an f16 pair, then the
// 12 bytes of 6-bit sub-block scales and mins as GGUF packs them.
@group(0) @binding(6) var<storage, read> wscale: array<vec4<u32>>;
#else
#if W_Q4_1
#if F16
@group(0) @binding(6) var<storage, read> wscale: array<vec2<f16>>;
#else
@group(0) @binding(6) var<storage, read> wscale: array<u32>;
#endif
#else
#if F16
@group(0) @binding(6) var<storage, read> wscale: array<f16>;
#else
@group(0) @binding(6) var<storage, read> wscale: array<u32>;
#endif
#endif
#endif
#endif
#endif

struct W8 { lo: vec4<f32>, hi: vec4<f32> }

#if W_F16
fn f16x2(i: u32) -> vec2<f32> {
#if F16
    return vec2<f32>(wq[i]);
#else
    return unpack2x16float(wq[i]);
#endif
}
#endif

fn groups_per_row() -> u32 {
    return (params.cols + 7u) / 8u;
}

fn group_cols(g: u32) -> vec2<u32> {
#if W_NIBBLES
    let c = (g / 4u) * 32u + (g % 4u) * 4u;
    return vec2<u32>(c, c + 16u);
#else
    return vec2<u32>(g * 8u, g * 8u + 4u);
#endif
}

#if W_QUANT
#if W_Q6_K
struct Q6Aux { hi0: u32, hi1: u32, sc: vec2<f32>, d: f32 }

fn q6_aux(b: u32) -> Q6Aux {
    let w = wscale[3u * b + 2u];
    let sc = vec2<f32>(vec2<i32>(bitcast<i32>(w << 24u) >> 24u, bitcast<i32>(w << 16u) >> 24u));
    return Q6Aux(wscale[3u * b], wscale[3u * b + 1u], sc, unpack2x16float(w).y);
}

// Four 6-bit values (low nibbles of word `w` at `lo_shift`, highs of
// elements 4k.. of the half-block in `hi`) as signed values times the
// sub-block scale: exact in f32 (|q·sc| ≤ 4096); d is applied per block.
fn q6x4(w: u32, lo_shift: u32, hi: u32, k: u32, sc: f32) -> vec4<f32> {
    let l = (vec4<u32>(w) >> (vec4<u32>(0u, 8u, 16u, 24u) + lo_shift)) & vec4<u32>(15u);
    let h = (vec4<u32>(hi) >> (vec4<u32>(0u, 2u, 4u, 6u) + 8u * k)) & vec4<u32>(3u);
    return (vec4<f32>(l | (h << vec4<u32>(4u))) - 32.0) * sc;
}
#endif

#if W_KSCALES
// Byte `k` of a Q4_K/Q5_K super-block's 12 scale bytes.
fn k_scale_byte(s: vec4<u32>, k: u32) -> u32 {
    return (s[1u + k / 4u] >> ((k % 4u) * 8u)) & 255u;
}

// (scale, offset) of block j of a Q4_K/Q5_K super-block whose first 16
// bytes are `s`: ggml's get_scale_min_k4 without branches (the other arm's
// byte indices stay in range).
fn k_scale_min(s: vec4<u32>, j: u32) -> vec2<f32> {
    let dm = unpack2x16float(s.x);
    let hi = k_scale_byte(s, (j + 4u) % 12u);
    let sc = select((hi & 15u) | ((k_scale_byte(s, (j - 4u) & 7u) >> 6u) << 4u), k_scale_byte(s, j) & 63u, j < 4u);
    let m = select((hi >> 4u) | ((k_scale_byte(s, j) >> 6u) << 4u), hi & 63u, j < 4u);
    return vec2<f32>(dm.x * f32(sc), -(dm.y * f32(m)));
}
#endif

#if W_Q5
// The fifth bits of block `b` (bit i: element i).
fn q5_high(b: u32) -> u32 {
#if W_Q5_K
    return wscale[12u * (b / 8u) + 4u + b % 8u];
#else
    return wscale[2u * b];
#endif
}

// Four 5-bit values: low nibbles of word `w` at `lo_shift`, fifth bits of
// elements `first`.. of the block in `hw`. Q5_0's codes are centred (−16).
fn q5x4(w: u32, lo_shift: u32, hw: u32, first: u32) -> vec4<f32> {
    let l = (vec4<u32>(w) >> (vec4<u32>(0u, 8u, 16u, 24u) + lo_shift)) & vec4<u32>(15u);
    let h = (vec4<u32>(hw) >> (vec4<u32>(0u, 1u, 2u, 3u) + first)) & vec4<u32>(1u);
#if W_Q5_0
    return vec4<f32>(l | (h << vec4<u32>(4u))) - 16.0;
#else
    return vec4<f32>(l | (h << vec4<u32>(4u)));
#endif
}
#endif

// Scale (Q8_0/Q4_0) or (scale, offset) (Q4_1, Q4_K) of 32-element block
// `b`, counted from the chunk's first row.
fn block_scale(b: u32) -> vec2<f32> {
#if W_Q4_K
    return k_scale_min(wscale[b / 8u], b % 8u);
#endif
#if W_Q5_K
    let base = 12u * (b / 8u);
    return k_scale_min(vec4<u32>(wscale[base], wscale[base + 1u], wscale[base + 2u], wscale[base + 3u]), b % 8u);
#endif
#if W_Q5_1
    return unpack2x16float(wscale[2u * b + 1u]);
#endif
#if W_Q5_0
    return vec2<f32>(unpack2x16float(wscale[2u * b + 1u]).x, 0.0);
#endif
#if W_Q6_K
    return vec2<f32>(unpack2x16float(wscale[3u * b + 2u]).y, 0.0);
#endif
#if W_OLD_SCALES
#if W_Q4_1
#if F16
    return vec2<f32>(wscale[b]);
#else
    return unpack2x16float(wscale[b]);
#endif
#else
#if F16
    return vec2<f32>(f32(wscale[b]), 0.0);
#else
    return vec2<f32>(unpack2x16float(wscale[b / 2u])[b % 2u], 0.0);
#endif
#endif
#endif
}

fn i8x4(w: u32) -> vec4<f32> {
    return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(w) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}
#endif

// Columns past `params.cols` read as zero (float rows need not be whole groups).
fn load8(r: u32, g: u32) -> W8 {
#if W_F32
    let base = r * params.row_words + g * 8u;
    if (g * 8u + 8u <= params.cols) {
        return W8(vec4<f32>(wq[base], wq[base + 1u], wq[base + 2u], wq[base + 3u]),
                  vec4<f32>(wq[base + 4u], wq[base + 5u], wq[base + 6u], wq[base + 7u]));
    }
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (g * 8u + i < params.cols) { lo[i] = wq[base + i]; }
        if (g * 8u + 4u + i < params.cols) { hi[i] = wq[base + 4u + i]; }
    }
    return W8(lo, hi);
#endif
#if W_F16
    let base = r * params.row_words + g * 4u;
    let n = params.row_words - min(g * 4u, params.row_words);
    if (n >= 4u) {
        return W8(vec4<f32>(f16x2(base), f16x2(base + 1u)), vec4<f32>(f16x2(base + 2u), f16x2(base + 3u)));
    }
    // Row tail: the padding half of an odd row is zero already.
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    if (n > 0u) { lo = vec4<f32>(f16x2(base), 0.0, 0.0); }
    if (n > 1u) { lo = vec4<f32>(lo.xy, f16x2(base + 1u)); }
    if (n > 2u) { hi = vec4<f32>(f16x2(base + 2u), 0.0, 0.0); }
    return W8(lo, hi);
#endif
#if W_Q8_0
    let base = r * params.row_words + g * 2u;
    let d = block_scale(r * (params.cols / 32u) + g / 4u).x;
    let q = wq[base / 4u];
    if (base % 4u == 0u) { return W8(i8x4(q.x) * d, i8x4(q.y) * d); }
    return W8(i8x4(q.z) * d, i8x4(q.w) * d);
#endif
#if W_Q5
    let i = r * params.row_words + g;
    let blk = r * (params.cols / 32u) + g / 4u;
    let w = wq[i / 4u][i % 4u];
    let hw = q5_high(blk);
    let s = block_scale(blk);
    let lo = q5x4(w, 0u, hw, 4u * (g % 4u));
    let hi = q5x4(w, 4u, hw, 16u + 4u * (g % 4u));
    return W8(lo * s.x + s.y, hi * s.x + s.y);
#endif
#if W_Q6_K
    let i = r * params.row_words + g;
    let a = q6_aux(r * (params.cols / 32u) + g / 4u);
    let w = wq[i / 4u][i % 4u];
    return W8(q6x4(w, 0u, a.hi0, g % 4u, a.sc.x) * a.d, q6x4(w, 4u, a.hi1, g % 4u, a.sc.y) * a.d);
#endif
#if W_Q4
    let i = r * params.row_words + g;
    let w = wq[i / 4u][i % 4u];
    let s = block_scale(r * (params.cols / 32u) + g / 4u);
    let q = vec4<u32>(w);
    let lo = vec4<f32>((q >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(15u));
    let hi = vec4<f32>((q >> vec4<u32>(4u, 12u, 20u, 28u)) & vec4<u32>(15u));
#if W_Q4_0
    return W8((lo - 8.0) * s.x, (hi - 8.0) * s.x);
#else
    return W8(lo * s.x + s.y, hi * s.x + s.y);
#endif
#endif
}

#if W_QUANT
fn nib_lo(w: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(w) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(15u));
}

fn nib_hi(w: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(w) >> vec4<u32>(4u, 12u, 20u, 28u)) & vec4<u32>(15u));
}
#endif
