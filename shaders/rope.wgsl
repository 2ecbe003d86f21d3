// Rotary position embedding, in place on the fused QKV rows
// [n_tokens, (n_heads + 2 * n_kv_heads) * head_dim]: the first `n_rot_heads`
// heads (q then k) rotate, v is untouched. One invocation per (row, head, pair).
//
// freqs[i] = inv_freq[i] / (2*pi) as an f32 hi/lo pair (computed in f64 on the
// host). The angle is reduced to turns exactly: position and hi are split
// into 12-bit halves whose products are exact in f32, so only their
// fractional parts are kept. This keeps the angle accurate at position 32k+
// and hands sin/cos an argument in [-pi, pi].

struct Step { n_tokens: u32, n_seqs: u32, _p0: u32, _p1: u32 }
struct Params { head_dim: u32, n_rot_heads: u32, row_stride: u32, half_split: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> positions: array<u32>;
@group(0) @binding(3) var<storage, read> freqs: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read_write> qkv: array<f32>;

fn turns(pos: u32, f: vec2<f32>) -> f32 {
    let pl = f32(pos & 0xFFFu);
    let ph = f32(pos & 0xFFF000u);
    let hh = bitcast<f32>(bitcast<u32>(f.x) & 0xFFFFF000u);
    let hl = f.x - hh;
    var t = fract(ph * hh) + fract(ph * hl) + fract(pl * hh) + fract(pl * hl) + f32(pos) * f.y;
    t = fract(t);
    if (t > 0.5) { t -= 1.0; }
    return t;
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.y * nwg.x * WG + gid.x;
    let half = params.head_dim / 2u;
    let per_row = params.n_rot_heads * half;
    if (idx >= step.n_tokens * per_row) { return; }
    let t = idx / per_row;
    let r = idx % per_row;
    let h = r / half;
    let i = r % half;
    let angle = turns(positions[t], freqs[i]) * 6.283185307179586;
    let c = cos(angle);
    let s = sin(angle);
    let base = t * params.row_stride + h * params.head_dim;
    var a = base + 2u * i;
    var b = a + 1u;
    if (params.half_split != 0u) {
        a = base + i;
        b = a + half;
    }
    let x0 = qkv[a];
    let x1 = qkv[b];
    qkv[a] = x0 * c - x1 * s;
    qkv[b] = x0 * s + x1 * c;
}
