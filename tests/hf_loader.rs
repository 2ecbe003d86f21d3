//! Hugging Face directories: config.json styles, safetensors (single and
//! sharded), name mapping onto canonical names, tokenizer files.

mod common;

use std::borrow::Cow;

use common::hf_writer::*;
use hearth::model::hf::{canonical_name, parse_config, HfModel};
use hearth::model::load::{self, check_shapes};
use hearth::model::{Architecture, DType, RopeLayout, RopeScaling, WeightSource};
use hearth::text::vocab::TokenizerSpec;
use hearth::HearthError;
use safetensors::Dtype;
use serde_json::json;

fn mixed(i: usize) -> Dtype {
    [Dtype::F32, Dtype::F16, Dtype::BF16][i % 3]
}

#[test]
fn llama_single_file_maps_names_and_keeps_bytes() {
    let ts = tensors("LlamaForCausalLM", 16, true, mixed);
    let cfg = config("LlamaForCausalLM", json!({}));
    let m = HfModel::from_parts(
        &cfg.to_string(),
        vec![("model.safetensors".into(), serialize(&ts))],
    )
    .unwrap();
    let c = m.config();
    assert_eq!(c.arch, Architecture::Llama);
    assert_eq!(c.rope_layout, RopeLayout::HalfSplit);
    assert_eq!(
        (c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim),
        (HIDDEN, HEADS, KV_HEADS, 16)
    );
    assert_eq!(
        (c.intermediate_size, c.num_layers, c.vocab_size),
        (FFN, LAYERS, VOCAB)
    );
    assert_eq!(
        (c.rms_norm_eps, c.rope_theta, c.max_position_embeddings),
        (1e-6, 10000.0, 512)
    );
    assert!(!c.tie_word_embeddings && !c.attention_bias && !c.qk_norm);
    check_shapes(&m).unwrap();
    for t in &ts {
        let canon = canonical_name(&t.name).unwrap();
        let h = m.tensor(&canon).unwrap();
        assert_eq!(h.shape, t.shape, "{canon}");
        assert_eq!(
            h.dtype,
            match t.dtype {
                Dtype::F32 => DType::F32,
                Dtype::F16 => DType::F16,
                _ => DType::BF16,
            }
        );
        assert_eq!(*h.data, *t.data, "{canon}");
        assert!(matches!(h.data, Cow::Borrowed(_)));
    }
    assert_eq!(m.tensor_names().len(), ts.len());

    // In-memory parts (the browser path) carry the tokenizer files as text.
    assert!(matches!(m.tokenizer_spec(), Err(HearthError::Tokenizer(_))));
    let m = m.with_tokenizer("{}".into(), None, Some(r#"{"eos_token_id":[1,2]}"#.into()));
    match m.tokenizer_spec().unwrap() {
        TokenizerSpec::HfJson {
            tokenizer_json,
            generation_config_json,
            ..
        } => {
            assert_eq!(tokenizer_json, "{}");
            assert!(generation_config_json.unwrap().contains("[1,2]"));
        }
        other => panic!("expected HfJson, got {other:?}"),
    }
}

#[test]
fn name_mapping() {
    for (hf, canon) in [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
        (
            "model.layers.11.input_layernorm.weight",
            "blk.11.attn_norm.weight",
        ),
        ("model.layers.0.self_attn.k_proj.bias", "blk.0.attn_k.bias"),
        (
            "model.layers.3.self_attn.o_proj.weight",
            "blk.3.attn_output.weight",
        ),
        (
            "model.layers.3.self_attn.q_norm.weight",
            "blk.3.attn_q_norm.weight",
        ),
        (
            "model.layers.2.post_attention_layernorm.weight",
            "blk.2.ffn_norm.weight",
        ),
        (
            "model.layers.2.mlp.down_proj.weight",
            "blk.2.ffn_down.weight",
        ),
    ] {
        assert_eq!(canonical_name(hf).as_deref(), Some(canon), "{hf}");
    }
    assert_eq!(
        canonical_name("model.layers.0.self_attn.rotary_emb.inv_freq"),
        None
    );
    assert_eq!(canonical_name("model.layers.x.mlp.up_proj.weight"), None);
}

#[test]
fn qwen2_qwen3_mistral_flags_and_explicit_head_dim() {
    let q2 = tensors("Qwen2ForCausalLM", 16, false, |_| Dtype::BF16);
    let cfg = config("Qwen2ForCausalLM", json!({"tie_word_embeddings": true}));
    let m = HfModel::from_parts(&cfg.to_string(), vec![("a".into(), serialize(&q2))]).unwrap();
    let c = m.config();
    assert_eq!(c.arch, Architecture::Qwen2);
    assert!(c.attention_bias && !c.qk_norm && c.tie_word_embeddings);
    check_shapes(&m).unwrap();

    // Qwen3: head_dim 32 while hidden/heads is 16.
    let q3 = tensors("Qwen3ForCausalLM", 32, true, |_| Dtype::F16);
    let cfg = config(
        "Qwen3ForCausalLM",
        json!({"head_dim": 32, "attention_bias": false}),
    );
    let m = HfModel::from_parts(&cfg.to_string(), vec![("a".into(), serialize(&q3))]).unwrap();
    let c = m.config();
    assert_eq!(
        (c.arch, c.head_dim, c.q_dim()),
        (Architecture::Qwen3, 32, 128)
    );
    assert!(c.qk_norm && !c.attention_bias);
    check_shapes(&m).unwrap();

    let mi = tensors("MistralForCausalLM", 16, true, |_| Dtype::F32);
    let cfg = config(
        "MistralForCausalLM",
        json!({"head_dim": null, "sliding_window": null}),
    );
    let m = HfModel::from_parts(&cfg.to_string(), vec![("a".into(), serialize(&mi))]).unwrap();
    assert_eq!(
        (m.config().arch, m.config().head_dim),
        (Architecture::Mistral, 16)
    );
    check_shapes(&m).unwrap();
}

#[test]
fn missing_lm_head_means_tied() {
    let ts = tensors("LlamaForCausalLM", 16, false, |_| Dtype::F32);
    let cfg = config("LlamaForCausalLM", json!({}));
    let m = HfModel::from_parts(&cfg.to_string(), vec![("a".into(), serialize(&ts))]).unwrap();
    assert!(m.config().tie_word_embeddings);
    check_shapes(&m).unwrap();
}

#[test]
fn rope_config_styles() {
    let llama3 = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
    let want3 = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192.0,
    };
    let parse = |extra: serde_json::Value| {
        parse_config(&config("LlamaForCausalLM", extra).to_string(), true)
    };

    let c = parse(json!({"rope_theta": 500000.0, "rope_scaling": llama3})).unwrap();
    assert_eq!((c.rope_theta, c.rope_scaling), (500000.0, want3));

    // Newer style: everything inside rope_parameters.
    let mut p = llama3.clone();
    p["rope_theta"] = json!(250000.0);
    let mut extra = json!({"rope_parameters": p});
    extra["rope_theta"] = serde_json::Value::Null;
    let c = parse(extra).unwrap();
    assert_eq!((c.rope_theta, c.rope_scaling), (250000.0, want3));

    let c = parse(json!({"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}})).unwrap();
    assert_eq!((c.rope_theta, c.rope_scaling), (1e6, RopeScaling::None));

    let c = parse(json!({"rope_scaling": {"type": "linear", "factor": 2.0}})).unwrap();
    assert_eq!(c.rope_scaling, RopeScaling::Linear { factor: 2.0 });

    let c = parse(json!({"rope_scaling": null})).unwrap();
    assert_eq!(c.rope_scaling, RopeScaling::None);

    let err = parse(json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}})).unwrap_err();
    assert!(
        matches!(err, HearthError::Unsupported(ref m) if m.contains("yarn")),
        "{err}"
    );
    let err = parse(json!({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}})).unwrap_err();
    assert!(
        matches!(err, HearthError::Config(ref m) if m.contains("low_freq_factor")),
        "{err}"
    );
}

#[test]
fn sharded_directory_and_load_open() {
    let dir = tempfile::tempdir().unwrap();
    let ts = tensors("Qwen2ForCausalLM", 16, true, mixed);
    write_dir(dir.path(), &config("Qwen2ForCausalLM", json!({})), &ts, 3);
    assert!(dir.path().join("model-00003-of-00003.safetensors").exists());
    let m = HfModel::open(dir.path()).unwrap();
    for t in &ts {
        assert_eq!(
            *m.tensor(&canonical_name(&t.name).unwrap()).unwrap().data,
            *t.data
        );
    }
    let loaded = load::open(dir.path()).unwrap();
    assert_eq!(loaded.weights.config().arch, Architecture::Qwen2);
    check_shapes(loaded.weights.as_ref()).unwrap();
    match loaded.tokenizer {
        TokenizerSpec::HfJson {
            tokenizer_json,
            tokenizer_config_json,
            generation_config_json,
        } => {
            assert!(tokenizer_json.contains("BPE"));
            assert!(tokenizer_config_json.unwrap().contains("chat_template"));
            assert!(generation_config_json.is_none());
        }
        other => panic!("expected HfJson, got {other:?}"),
    }
}

#[test]
fn unsupported_dtype_is_a_clear_error_when_requested() {
    let mut ts = tensors("LlamaForCausalLM", 16, true, |_| Dtype::F32);
    let t = &mut ts[1]; // model.norm.weight
    t.dtype = Dtype::I32;
    t.data = encode(Dtype::I32, &vec![1.0; HIDDEN]);
    let cfg = config("LlamaForCausalLM", json!({}));
    let m = HfModel::from_parts(&cfg.to_string(), vec![("a".into(), serialize(&ts))]).unwrap();
    let err = m.tensor("output_norm.weight").unwrap_err();
    assert!(
        matches!(err, HearthError::Unsupported(ref s) if s.contains("model.norm.weight") && s.contains("I32")),
        "{err}"
    );
    assert!(check_shapes(&m).is_err());
}
