//! Mixture-of-experts files that are wrong or unsupported get a clear
//! error naming the key or tensor at fault, never a panic or wrong output;
//! and a GGUF MoE model runs on the GPU as on the CPU reference.

mod common;

use std::path::Path;

use common::gguf_writer::{values, GgufWriter, Val, HIDDEN, LAYERS};
use hearth::model::gguf::GgufModel;
use hearth::model::hf::HfModel;
use hearth::model::DType;
use hearth::reference::route_ref;
use hearth::HearthError;

use common::moe::{tiny_moe_gguf_hd, EXPERTS, EXPERT_FFN};

fn tiny_moe_gguf() -> GgufWriter {
    tiny_moe_gguf_hd(common::gguf_writer::HEAD_DIM)
}

fn gguf_err(w: &GgufWriter) -> HearthError {
    GgufModel::from_bytes(w.build()).unwrap_err()
}

#[test]
fn a_well_formed_moe_gguf_loads_and_runs_on_the_reference() {
    let m = GgufModel::from_bytes(tiny_moe_gguf().build()).unwrap();
    let moe = m
        .file()
        .tensor_info("blk.0.ffn_gate_exps.weight")
        .unwrap()
        .shape();
    assert_eq!(moe, [EXPERTS, EXPERT_FFN, HIDDEN]);
    let r = hearth::reference::RefModel::load(&m).unwrap();
    let logits = r.forward(&[1, 2, 3], &mut Default::default()).unwrap();
    assert!(logits.iter().all(|x| x.is_finite()));
}

#[test]
fn expert_count_that_does_not_match_the_tensors() {
    let mut w = tiny_moe_gguf();
    w.kv("llama.expert_count", Val::U32(8));
    let e = gguf_err(&w);
    assert!(
        matches!(&e, HearthError::Config(m) if m.contains("`llama.expert_count` = 8") && m.contains("4 experts")),
        "{e}"
    );
}

#[test]
fn more_experts_used_than_exist() {
    let mut w = tiny_moe_gguf();
    w.kv("llama.expert_used_count", Val::U32(5));
    let e = gguf_err(&w);
    assert!(
        matches!(&e, HearthError::Config(m) if m.contains("`llama.expert_used_count` = 5 is more than `llama.expert_count` = 4")),
        "{e}"
    );
}

#[test]
fn missing_expert_tensor_is_named() {
    let mut w = tiny_moe_gguf();
    w.tensors.retain(|t| t.name != "blk.1.ffn_up_exps.weight");
    let e = gguf_err(&w);
    assert!(
        matches!(&e, HearthError::MissingTensor(n) if n == "blk.1.ffn_up_exps.weight"),
        "{e}"
    );
}

#[test]
fn unsupported_routers_are_refused_by_name() {
    let mut w = tiny_moe_gguf();
    w.kv("llama.expert_gating_func", Val::U32(2));
    let e = gguf_err(&w);
    assert!(
        matches!(&e, HearthError::Unsupported(m) if m.contains("llama.expert_gating_func")),
        "{e}"
    );
    let mut w = tiny_moe_gguf();
    w.kv("llama.expert_weights_scale", Val::F32(2.5));
    let e = gguf_err(&w);
    assert!(
        matches!(&e, HearthError::Unsupported(m) if m.contains("llama.expert_weights_scale")),
        "{e}"
    );
}

#[test]
fn old_per_expert_gguf_layout_is_refused_by_name() {
    let mut w = tiny_moe_gguf();
    w.tensors.retain(|t| !t.name.contains("_exps."));
    for l in 0..LAYERS {
        for e in 0..EXPERTS {
            let n = EXPERT_FFN * HIDDEN;
            w.tensor(
                &format!("blk.{l}.ffn_gate.{e}.weight"),
                &[EXPERT_FFN, HIDDEN],
                DType::F32,
                &values(n, 1),
            );
        }
    }
    let e = gguf_err(&w);
    assert!(
        matches!(&e, HearthError::Unsupported(m) if m.contains("blk.N.ffn_gate.E.weight")),
        "{e}"
    );
}

/// A GGUF with Q8_0 experts and a Q8_0 router (llama.cpp keeps routers in
/// f32, but a file may not) runs on the GPU with the reference's greedy ids.
#[test]
fn the_gpu_runs_a_gguf_moe_model_as_the_reference_does() {
    use hearth::engine::{GenerateOptions, SamplingParams};
    use hearth::reference::RefModel;
    let m = GgufModel::from_bytes(tiny_moe_gguf().build()).unwrap();
    let prompt = [1u32, 5, 9, 2, 7];
    let want = RefModel::load(&m)
        .unwrap()
        .generate_greedy(&prompt, 8, &[])
        .unwrap();
    let gpu = hearth::model::forward::GpuModel::load(
        common::gpu(),
        &m,
        hearth::model::forward::ForwardOptions {
            kv_memory: 1 << 20,
            max_step_tokens: 16,
            max_seqs: 2,
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap();
    let mut e = common::engine(gpu, common::tokenizer_of(&m));
    let opts = GenerateOptions {
        sampling: SamplingParams::greedy(),
        max_tokens: 8,
        ignore_eos: true,
        ..Default::default()
    };
    let got = e.generate_blocking(&prompt, &opts, &mut |_| true).unwrap();
    assert_eq!(got.ids, want);
}

// ---- Hugging Face directories -------------------------------------------

fn mixtral_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/moe/mixtral_f32")
}

/// The Mixtral fixture with its config edited and tensors filtered.
fn hf_variant(
    edit_config: impl Fn(&mut serde_json::Value),
    keep: impl Fn(&str) -> bool,
) -> hearth::Result<HfModel> {
    let dir = mixtral_dir();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    edit_config(&mut cfg);
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView)> =
        st.tensors().into_iter().filter(|(n, _)| keep(n)).collect();
    let out = safetensors::serialize(views, None).unwrap();
    HfModel::from_parts(&cfg.to_string(), vec![("model.safetensors".into(), out)])
}

#[test]
fn hf_fixture_loads_unchanged() {
    let m = hf_variant(|_| {}, |_| true).unwrap();
    let names = m.tensor_names();
    assert!(names.contains(&"blk.1.ffn_down_exps.weight"), "{names:?}");
    use hearth::model::WeightSource;
    let (_, shape) = m.tensor_meta("blk.1.ffn_down_exps.weight").unwrap();
    assert_eq!(shape, [8, 64, 32]);
}

#[test]
fn hf_missing_expert_names_the_hf_tensor() {
    let e = hf_variant(
        |_| {},
        |n| !n.contains("layers.1.block_sparse_moe.experts.5.w3"),
    )
    .unwrap_err();
    assert!(
        matches!(&e, HearthError::MissingTensor(n) if n == "model.layers.1.block_sparse_moe.experts.5.w3.weight"),
        "{e}"
    );
}

#[test]
fn hf_expert_count_below_the_experts_in_the_files() {
    let e = hf_variant(|c| c["num_local_experts"] = 6.into(), |_| true).unwrap_err();
    assert!(
        matches!(&e, HearthError::Config(m) if m.contains("`num_local_experts` = 6") && m.contains("experts.7")),
        "{e}"
    );
    let e = hf_variant(|c| c["num_local_experts"] = 10.into(), |_| true).unwrap_err();
    assert!(
        matches!(&e, HearthError::MissingTensor(n) if n.contains("experts.8.")),
        "{e}"
    );
}

#[test]
fn hf_more_experts_per_token_than_experts() {
    let e = hf_variant(|c| c["num_experts_per_tok"] = 9.into(), |_| true).unwrap_err();
    assert!(
        matches!(&e, HearthError::Config(m) if m.contains("`num_experts_per_tok` = 9 is more than `num_local_experts` = 8")),
        "{e}"
    );
}

#[test]
fn hf_unsupported_router_options_are_refused_by_name() {
    let e = hf_variant(|c| c["scoring_func"] = "sigmoid".into(), |_| true).unwrap_err();
    assert!(
        matches!(&e, HearthError::Unsupported(m) if m.contains("scoring_func")),
        "{e}"
    );
    let e = hf_variant(|c| c["routed_scaling_factor"] = 2.5.into(), |_| true).unwrap_err();
    assert!(
        matches!(&e, HearthError::Unsupported(m) if m.contains("routed_scaling_factor")),
        "{e}"
    );
}

#[test]
fn hf_sparse_layer_rules() {
    // Qwen-MoE: a layer is sparse unless listed in mlp_only_layers, and
    // only every decoder_sparse_step-th layer (1-based) is.
    let v: serde_json::Value = serde_json::json!({
        "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
        "decoder_sparse_step": 2, "mlp_only_layers": [3],
    });
    let m = hearth::model::moe::from_hf_config(&v, hearth::model::moe::HfMoeKind::Qwen3Moe, 6)
        .unwrap()
        .unwrap();
    assert_eq!(m.sparse_layers, [false, true, false, false, false, true]);
    let mut bad = v.clone();
    bad["decoder_sparse_step"] = 0.into();
    let e = hearth::model::moe::from_hf_config(&bad, hearth::model::moe::HfMoeKind::Qwen3Moe, 6)
        .unwrap_err();
    assert!(e.to_string().contains("decoder_sparse_step"), "{e}");
    let mut bad = v;
    bad["mlp_only_layers"] = serde_json::json!([6]);
    let e = hearth::model::moe::from_hf_config(&bad, hearth::model::moe::HfMoeKind::Qwen3Moe, 6)
        .unwrap_err();
    assert!(e.to_string().contains("mlp_only_layers"), "{e}");
}

// ---- Routing edge cases (the reference's router) ------------------------

#[test]
fn router_ties_go_to_the_lower_expert() {
    // All equal: experts 0 and 1; a three-way tie for first: the two lowest.
    let r = route_ref(&[0.0; 8], 2, true);
    assert_eq!(r.iter().map(|p| p.0).collect::<Vec<_>>(), [0, 1]);
    assert!(r.iter().all(|p| (p.1 - 0.5).abs() < 1e-7));
    let r = route_ref(&[0.1, 0.7, 0.2, 0.7, 0.0, 0.7], 2, false);
    assert_eq!(r.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 3]);
}

#[test]
fn router_weights_are_softmax_before_top_k() {
    let logits = [1.0f32, 3.0, 2.0, -1.0];
    let z: f32 = logits.iter().map(|l| l.exp()).sum();
    let r = route_ref(&logits, 2, false);
    assert_eq!(r[0].0, 1);
    assert_eq!(r[1].0, 2);
    assert!((r[0].1 - 3f32.exp() / z).abs() < 1e-6);
    assert!((r[1].1 - 2f32.exp() / z).abs() < 1e-6);
    let n = route_ref(&logits, 2, true);
    let s = 3f32.exp() + 2f32.exp();
    assert!((n[0].1 - 3f32.exp() / s).abs() < 1e-6);
    assert!((n[1].1 - 2f32.exp() / s).abs() < 1e-6);
}
