//! The mixture-of-experts fixtures (`tests/fixtures/moe/`, written by
//! `gen_moe_fixtures.py`) and their conversion to GGUF by the tests' own
//! writer, shared by `moe_reference` (CPU) and `moe_gpu`.

use std::path::{Path, PathBuf};

use super::gguf_writer::{GgufWriter, Val};
use hearth::model::gguf::GgufModel;
use hearth::model::{DType, WeightSource};

pub const CASES: &[&str] = &[
    "mixtral_f32",
    "qwen2moe_shared_bf16",
    "qwen3moe_mlp_only_tied",
];

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/moe")
}

/// llama.cpp's converter reorders each head's Q/K rows for interleaved
/// RoPE: row `2i` is row `i`, row `2i+1` row `i + head_dim/2`.
fn permute_for_llama(w: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    let hd = w.len() / cols / heads;
    let mut out = Vec::with_capacity(w.len());
    for h in 0..heads {
        for i in 0..hd / 2 {
            for r in [i, i + hd / 2] {
                let row = h * hd + r;
                out.extend_from_slice(&w[row * cols..(row + 1) * cols]);
            }
        }
    }
    out
}

/// The GGUF file llama.cpp's converter would write for a fixture (`llama`
/// for Mixtral, `qwen2moe`, `qwen3moe`), its matrices stored as `dtype`.
pub fn to_gguf(src: &dyn WeightSource, dtype: DType) -> GgufModel {
    let c = src.config();
    let moe = c.moe.as_ref().unwrap();
    let arch = match c.arch {
        hearth::model::Architecture::Mistral => "llama",
        hearth::model::Architecture::Qwen2 => "qwen2moe",
        _ => "qwen3moe",
    };
    let mut w = GgufWriter::new();
    let k = |s: &str| format!("{arch}.{s}");
    w.kv("general.architecture", Val::str(arch));
    for (key, v) in [
        ("block_count", c.num_layers),
        ("context_length", c.max_position_embeddings),
        ("embedding_length", c.hidden_size),
        ("feed_forward_length", c.intermediate_size),
        ("attention.head_count", c.num_heads),
        ("attention.head_count_kv", c.num_kv_heads),
        ("attention.key_length", c.head_dim),
        ("vocab_size", c.vocab_size),
        ("expert_count", moe.num_experts),
        ("expert_used_count", moe.experts_per_token),
    ] {
        w.kv(&k(key), Val::U32(v as u32));
    }
    if arch != "llama" {
        w.kv(
            &k("expert_feed_forward_length"),
            Val::U32(moe.expert_intermediate_size as u32),
        );
    }
    if let Some(s) = moe.shared_expert_intermediate_size {
        w.kv(&k("expert_shared_feed_forward_length"), Val::U32(s as u32));
    }
    w.kv(
        &k("attention.layer_norm_rms_epsilon"),
        Val::F32(c.rms_norm_eps),
    );
    w.kv(&k("rope.freq_base"), Val::F32(c.rope_theta));
    for name in hearth::model::load::expected_tensors(src)
        .into_iter()
        .map(|t| t.0)
    {
        let t = src.tensor(&name).unwrap();
        let mut v = t.to_f32().unwrap();
        if arch == "llama" && name.ends_with("attn_q.weight") {
            v = permute_for_llama(&v, c.num_heads, c.hidden_size);
        }
        if arch == "llama" && name.ends_with("attn_k.weight") {
            v = permute_for_llama(&v, c.num_kv_heads, c.hidden_size);
        }
        // llama.cpp's quantizer keeps vectors and the routers in f32.
        let d = if hearth::model::convert::keeps_form(&name, &t.shape) {
            DType::F32
        } else {
            dtype
        };
        w.tensor(&name, &t.shape, d, &v);
    }
    GgufModel::from_bytes(w.build()).unwrap()
}

pub const EXPERTS: usize = 4;
pub const EXPERT_FFN: usize = 32;

/// A tiny Mixtral-style GGUF (`llama` with experts) whose dense FFN
/// tensors are replaced by a router and stacked experts (Q8_0, the router
/// too), with attention heads of `head_dim`.
pub fn tiny_moe_gguf_hd(head_dim: usize) -> GgufWriter {
    use super::gguf_writer::{tiny_metadata, tiny_tensors_hd, values, HEAD_DIM, HIDDEN, LAYERS};
    let mut w = GgufWriter::new();
    tiny_metadata(&mut w, "llama");
    if head_dim != HEAD_DIM {
        w.kv("llama.attention.key_length", Val::U32(head_dim as u32));
        w.kv("llama.attention.value_length", Val::U32(head_dim as u32));
    }
    w.kv("llama.feed_forward_length", Val::U32(EXPERT_FFN as u32));
    w.kv("llama.expert_count", Val::U32(EXPERTS as u32));
    w.kv("llama.expert_used_count", Val::U32(2));
    let (e, f, h) = (EXPERTS, EXPERT_FFN, HIDDEN);
    let mut i = 0;
    for (name, shape) in tiny_tensors_hd("llama", false, head_dim) {
        if name.contains(".ffn_gate.") || name.contains(".ffn_up.") || name.contains(".ffn_down.") {
            continue;
        }
        i += 1;
        let n = shape.iter().product();
        w.tensor(&name, &shape, DType::F32, &values(n, i));
    }
    for l in 0..LAYERS {
        for (what, shape) in [
            ("ffn_gate_inp.weight", vec![e, h]),
            ("ffn_gate_exps.weight", vec![e, f, h]),
            ("ffn_up_exps.weight", vec![e, f, h]),
            ("ffn_down_exps.weight", vec![e, h, f]),
        ] {
            i += 1;
            let n = shape.iter().product();
            w.tensor(
                &format!("blk.{l}.{what}"),
                &shape,
                DType::Q8_0,
                &values(n, i),
            );
        }
    }
    w
}
