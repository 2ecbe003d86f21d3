// Sampling penalties, in place on logits [n_rows, vocab], before top-K.
// entries[e] = (row * vocab + token, count), unique per (row, token);
// rows[r] = (repetition, presence, frequency, _):
//   repetition (HF): logit > 0 ? logit / repetition : logit * repetition
//   then logit -= presence + frequency * count.

struct Params { n_entries: u32, vocab: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> entries: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read> rows: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> logits: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.y * nwg.x * WG + gid.x;
    if (e >= params.n_entries) { return; }
    let en = entries[e];
    let r = rows[en.x / params.vocab];
    var l = logits[en.x];
    if (l > 0.0) { l = l / r.x; } else { l = l * r.x; }
    l -= r.y + r.z * f32(en.y);
    logits[en.x] = l;
}
