// KV write, quantized: the K and V heads of the fused QKV rows (after RoPE)
// into the layer's paged cache as q8 (KV_Q8) or q4 (Hadamard-rotated) head rows, at the slot and
// block kv_write.wgsl uses. The row layout is runtime/kv/quant.rs's, which
// this must match word for word. One invocation per (row, kv head, unit, K
// or V). q8 units are pairs of 32-element groups, because two groups share
// one scale word and no two invocations may write the same word; q4 units
// are rotation blocks of ROT elements (quant.rs's rotation_block).

// k_offset/v_offset: where K and V start in a QKV row (elements); row_stride: QKV row length.
struct Params { n_kv_heads: u32, head_dim: u32, block_size: u32, row_stride: u32, k_offset: u32, v_offset: u32, _p0: u32, _p1: u32 }

@group(0) @binding(1) var<uniform> params: Params;
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

// Ratios for each end of a group's range (quant.rs's CLIP, same order).
const CLIP = array<f32, 4>(1.0, 0.9, 0.8, 0.7);
// f32::MAX exactly (Tint refuses a literal that rounds into range).
const F32_MAX: f32 = 3.4028234663852886e38;

fn q4_code(v: f32, m: f32, d: f32, levels: f32) -> f32 {
    if (d > 0.0) { return clamp(round((v - m) / d), 0.0, levels); }
    return 0.0;
}

// Rotation block b (ROT elements at qkv pair `src`) of a head row: its
// Walsh-Hadamard transform (butterflies in quant.rs's order, so the f32 sums
// agree bit for bit), then each of its groups coded with the (m, d) of the
// CLIP pair that gives the least squared error: keys in 5 bits (nibbles in
// the key row, fifth bits in the value row), values in 3.
fn quantize_block(which: u32, src: u32, row: u32, b: u32, hd: u32) {
    let ng = hd / 32u;
    let levels = select(31.0, 7.0, which == 1u);
    let inv = select(1.0 / 31.0, 1.0 / 7.0, which == 1u);
    var y: array<f32, ROT>;
    for (var i = 0u; i < ROT / 2u; i++) {
        let x = qkv[src + i];
        y[2u * i] = x.x;
        y[2u * i + 1u] = x.y;
    }
    for (var h = 1u; h < ROT; h *= 2u) {
        for (var i = 0u; i < ROT; i += 2u * h) {
            for (var j = i; j < i + h; j++) {
                let a = y[j];
                let c = y[j + h];
                y[j] = a + c;
                y[j + h] = a - c;
            }
        }
    }
    for (var gi = 0u; gi < ROT / 32u; gi++) {
        let base = gi * 32u;
        var mn = y[base];
        var mx = mn;
        for (var i = 1u; i < 32u; i++) {
            mn = min(mn, y[base + i]);
            mx = max(mx, y[base + i]);
        }
        var best = F32_MAX;
        var bm = 0.0;
        var bd = 0.0;
        for (var a = 0u; a < 4u; a++) {
            // The low end moves down by 2^-10 of itself before rounding, so
            // that m <= every element when unclipped.
            let lo = CLIP[a] * mn;
            let m = f16_round(lo - abs(lo) * (1.0 / 1024.0));
            for (var c = 0u; c < 4u; c++) {
                let d = f16_round((CLIP[c] * mx - m) * inv);
                var err = 0.0;
                for (var i = 0u; i < 32u; i++) {
                    let v = y[base + i];
                    let r = q4_code(v, m, d, levels) * d + m - v;
                    err += r * r;
                }
                if (err < best) {
                    best = err;
                    bm = m;
                    bd = d;
                }
            }
        }
        let g = b * (ROT / 32u) + gi;
        var top = 0u;
        var low = array<u32, 4>(0u, 0u, 0u, 0u);
        for (var i = 0u; i < 32u; i++) {
            let q = u32(q4_code(y[base + i], bm, bd, levels));
            if (which == 0u) {
                low[i / 8u] |= (q & 15u) << (4u * (i % 8u));
                top |= (q >> 4u) << i;
            } else {
                low[i / 16u] |= (q & 3u) << (2u * (i % 16u));
                top |= (q >> 2u) << i;
            }
        }
        let scale = pack2x16float(vec2<f32>(bd, bm));
        if (which == 0u) {
            for (var w = 0u; w < 4u; w++) { kc[row + g * 4u + w] = low[w]; }
            kc[row + 4u * ng + g] = scale;
            vc[row + 4u * ng + g] = top;
        } else {
            vc[row + 2u * g] = low[0];
            vc[row + 2u * g + 1u] = low[1];
            vc[row + 2u * ng + g] = top;
            vc[row + 3u * ng + g] = scale;
        }
    }
}
#endif

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.y * nwg.x * WG + gid.x;
    let hd = params.head_dim;
    let groups = hd / 32u;
#if KV_Q8
    // Units of a row: pairs of groups (two q8 groups share a scale word).
    let units = (groups + 1u) / 2u;
#else
    let units = hd / ROT;
#endif
    let per_row = params.n_kv_heads * units * 2u;
    if (idx >= step.n_tokens * per_row) { return; }
    let t = idx / per_row;
    let r = idx % per_row;
    let which = r % 2u;
    let unit = (r / 2u) % units;
    let kvh = r / (2u * units);
    let p = positions[t];
    let seq = seqs[row_seq[t]];
    let row = kv_row(seq, p, kvh) * row_words(hd);
    let off = select(params.k_offset, params.v_offset, which == 1u);
    let src = (t * params.row_stride + off + kvh * hd) / 2u;
#if KV_Q8
    let g0 = 2u * unit;
    let s0 = quantize_group(which, src + g0 * 16u, row, g0);
    var s1 = 0u;
    if (g0 + 1u < groups) { s1 = quantize_group(which, src + (g0 + 1u) * 16u, row, g0 + 1u); }
    put(which, row + hd / 4u + unit, s0 | (s1 << 16u));
#else
    quantize_block(which, src + unit * (ROT / 2u), row, unit, hd);
#endif
}
