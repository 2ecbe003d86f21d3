// Constrained decoding: in place on logits [n_rows, vocab], after the
// penalties and before top-K. For each masked row m (entries[m] = (logit row,
// word offset of its mask)), every logit v whose bit (v % 32 of word
// offset + v / 32) is 0 becomes the lowest f32, the value topk.wgsl treats as
// minus infinity: never chosen ahead of a real logit, and left out of the
// log-sum-exp (so logprobs are normalised over the allowed tokens only).
// Bits past the vocabulary are ignored. An all-zero mask leaves a row of
// lowest-f32 values: top-K then returns the lowest ids with that value and a
// log-sum-exp of -inf (never NaN); the forward pass refuses such masks.
// One invocation per logit: x (with y for large vocabularies) over the
// vocabulary, z over the masked rows.

struct Params { vocab: u32, n_rows: u32, x_groups: u32, _p: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> entries: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read> masks: array<u32>;
@group(0) @binding(3) var<storage, read_write> logits: array<f32>;

fn neg_inf() -> f32 { return -0x1.fffffep+127f; }

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let v = gid.y * params.x_groups * WG + gid.x;
    let m = gid.z;
    if (v >= params.vocab || m >= params.n_rows) { return; }
    let e = entries[m];
    let word = masks[e.y + v / 32u];
    if (((word >> (v % 32u)) & 1u) == 0u) {
        logits[e.x * params.vocab + v] = neg_inf();
    }
}
