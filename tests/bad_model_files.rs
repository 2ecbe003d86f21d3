//! Corrupt, truncated and unsupported model files: each gets a clear error
//! (variant and message checked), never a panic or a huge allocation.

mod common;

use common::gguf_writer::{tiny_model, GgufWriter, Val};
use common::{hf_writer, rand_vec};
use hearth::model::gguf::{GgufFile, GgufModel};
use hearth::model::hf::HfModel;
use hearth::model::load::{self, check_shapes};
use hearth::model::WeightSource;
use hearth::HearthError;
use serde_json::json;

fn gguf_err(bytes: Vec<u8>) -> HearthError {
    GgufFile::from_bytes(bytes).expect_err("corrupt GGUF must not parse")
}

fn invalid(e: &HearthError, needle: &str) {
    assert!(
        matches!(e, HearthError::InvalidFile(m) if m.contains(needle)),
        "expected InvalidFile containing {needle:?}, got: {e}"
    );
}

#[test]
fn truncated_gguf_at_every_header_byte_and_in_the_data() {
    let (bytes, layout) = tiny_model("llama", false).build_with_layout();
    // Every cut in the header, metadata and tensor infos, then a stride through the data.
    let cuts = (0..layout.data_start + 1).chain((layout.data_start..bytes.len()).step_by(997));
    for cut in cuts.chain([bytes.len() - 1]) {
        let e = gguf_err(bytes[..cut].to_vec());
        assert!(
            matches!(e, HearthError::InvalidFile(_)),
            "cut at {cut}: {e}"
        );
    }
    // The named sections are reported as truncation.
    invalid(&gguf_err(bytes[..10].to_vec()), "truncated");
    invalid(&gguf_err(bytes[..layout.header_end + 5].to_vec()), "");
    invalid(
        &gguf_err(bytes[..(layout.header_end + layout.metadata_end) / 2].to_vec()),
        "",
    );
    invalid(
        &gguf_err(bytes[..layout.infos_end - 3].to_vec()),
        "truncated",
    );
    invalid(&gguf_err(bytes[..bytes.len() - 1].to_vec()), "past the end");
    // The whole file parses (the cuts above are what broke it).
    assert!(GgufFile::from_bytes(bytes).is_ok());
}

#[test]
fn bad_magic_and_versions() {
    let mut bytes = tiny_model("llama", false).build();
    bytes[..4].copy_from_slice(b"GGML");
    invalid(&gguf_err(bytes), "bad magic");
    invalid(&gguf_err(b"PK\x03\x04 not a model".to_vec()), "bad magic");
    invalid(&gguf_err(Vec::new()), "truncated");

    for (v, needle) in [(1, "version 1"), (4, "version 4")] {
        let mut w = tiny_model("llama", false);
        w.version = v;
        let e = gguf_err(w.build());
        assert!(
            matches!(&e, HearthError::Unsupported(m) if m.contains(needle)),
            "{e}"
        );
    }
}

#[test]
fn tensor_offset_past_end_or_misaligned() {
    let mut w = tiny_model("llama", false);
    w.tensors[3].offset = Some(1 << 40);
    let e = gguf_err(w.build());
    invalid(&e, "past the end");
    assert!(e.to_string().contains(&w.tensors[3].name), "{e}");

    let mut w = tiny_model("llama", false);
    w.tensors[3].offset = Some(u64::MAX - 31);
    invalid(&gguf_err(w.build()), "past the end");

    let mut w = tiny_model("llama", false);
    w.tensors[2].offset = Some(8);
    invalid(&gguf_err(w.build()), "alignment");
}

#[test]
fn unknown_tensor_type_names_tensor_and_type() {
    let mut w = tiny_model("llama", false);
    let i = w
        .tensors
        .iter()
        .position(|t| t.name == "blk.1.ffn_up.weight")
        .unwrap();
    w.tensors[i].type_id = 10; // Q2_K: a real ggml type this runtime does not load yet
    let model = GgufModel::from_bytes(w.build()).unwrap();
    let e = model.tensor("blk.1.ffn_up.weight").unwrap_err();
    assert!(
        matches!(&e, HearthError::Unsupported(m) if m.contains("Q2_K") && m.contains("blk.1.ffn_up.weight")),
        "{e}"
    );
    let e = check_shapes(&model).unwrap_err();
    assert!(e.to_string().contains("Q2_K"), "{e}");

    // A K-quant tensor whose rows are not whole 256-element super-blocks.
    let mut w = tiny_model("llama", false);
    w.tensors[i].type_id = 12;
    let e = GgufModel::from_bytes(w.build())
        .and_then(|m| m.tensor("blk.1.ffn_up.weight").map(|_| ()))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("not a multiple of the q4_k block size 256"),
        "{e}"
    );

    let mut w = tiny_model("llama", false);
    w.tensors[0].type_id = 99;
    let model = GgufModel::from_bytes(w.build()).unwrap();
    let e = model.tensor("token_embd.weight").unwrap_err();
    assert!(e.to_string().contains("type 99"), "{e}");
}

#[test]
fn unsupported_architecture() {
    let mut w = tiny_model("llama", false);
    w.kv("general.architecture", Val::str("gpt2"));
    let e = GgufModel::from_bytes(w.build()).unwrap_err();
    assert!(
        matches!(&e, HearthError::Unsupported(m) if m.contains("architecture `gpt2`")),
        "{e}"
    );
}

#[test]
fn unsupported_model_features() {
    let mut w = tiny_model("llama", false);
    w.kv("llama.rope.dimension_count", Val::U32(8));
    let e = GgufModel::from_bytes(w.build()).unwrap_err();
    assert!(
        matches!(&e, HearthError::Unsupported(m) if m.contains("partial rotary")),
        "{e}"
    );

    // Experts are read for llama (Mixtral), qwen2moe and qwen3moe only.
    let mut w = tiny_model("qwen2", false);
    w.kv("qwen2.expert_count", Val::U32(8));
    let e = GgufModel::from_bytes(w.build()).unwrap_err();
    assert!(
        matches!(&e, HearthError::Unsupported(m) if m.contains("mixture-of-experts `qwen2`")),
        "{e}"
    );
}

#[test]
fn missing_metadata_key_is_named() {
    let mut w = tiny_model("llama", false);
    w.kvs.retain(|(k, _)| k != "llama.block_count");
    let e = GgufModel::from_bytes(w.build()).unwrap_err();
    assert!(
        matches!(&e, HearthError::Config(m) if m.contains("llama.block_count")),
        "{e}"
    );
}

#[test]
fn missing_tensor() {
    let mut w = tiny_model("llama", false);
    w.tensors.retain(|t| t.name != "blk.1.ffn_up.weight");
    let model = GgufModel::from_bytes(w.build()).unwrap();
    let e = check_shapes(&model).unwrap_err();
    assert!(
        matches!(&e, HearthError::MissingTensor(n) if n == "blk.1.ffn_up.weight"),
        "{e}"
    );
    assert!(
        matches!(model.tensor("nope.weight"), Err(HearthError::MissingTensor(n)) if n == "nope.weight")
    );
}

#[test]
fn shape_mismatch() {
    let mut w = tiny_model("llama", false);
    let i = w
        .tensors
        .iter()
        .position(|t| t.name == "blk.0.attn_q.weight")
        .unwrap();
    w.tensors.remove(i);
    let vals = rand_vec(32 * 64, 9);
    w.tensor(
        "blk.0.attn_q.weight",
        &[32, 64],
        hearth::model::DType::F32,
        &vals,
    );
    let model = GgufModel::from_bytes(w.build()).unwrap();
    match check_shapes(&model).unwrap_err() {
        HearthError::ShapeMismatch {
            name,
            expected,
            found,
        } => {
            assert_eq!(name, "blk.0.attn_q.weight");
            assert_eq!((expected, found), (vec![64, 64], vec![32, 64]));
        }
        e => panic!("expected ShapeMismatch, got {e}"),
    }
}

/// A header that claims enormous counts or lengths is refused by comparing
/// them with the file size before any allocation is sized from them.
#[test]
fn huge_counts_do_not_allocate() {
    let header = |tensors: u64, kvs: u64| {
        let mut b = b"GGUF".to_vec();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&tensors.to_le_bytes());
        b.extend_from_slice(&kvs.to_le_bytes());
        b
    };
    invalid(&gguf_err(header(0, u64::MAX)), "metadata count");
    invalid(&gguf_err(header(u64::MAX / 2, 0)), "tensor count");

    // A string length past the end.
    let mut b = header(0, 1);
    b.extend_from_slice(&(u64::MAX - 4).to_le_bytes());
    b.extend_from_slice(b"key");
    b.extend_from_slice(&[0u8; 64]);
    invalid(&gguf_err(b), "truncated");

    // An array that claims 2^60 u64 elements / strings / nested arrays.
    for elem in [10u32, 8, 9] {
        let mut b = header(0, 1);
        b.extend_from_slice(&3u64.to_le_bytes());
        b.extend_from_slice(b"arr");
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&elem.to_le_bytes());
        b.extend_from_slice(&(1u64 << 60).to_le_bytes());
        b.extend_from_slice(&[0u8; 64]);
        invalid(&gguf_err(b), "cannot fit");
    }

    // Arrays nested past any sane depth.
    let mut b = header(0, 1);
    b.extend_from_slice(&4u64.to_le_bytes());
    b.extend_from_slice(b"deep");
    b.extend_from_slice(&9u32.to_le_bytes());
    for _ in 0..64 {
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
    }
    b.extend_from_slice(&[0u8; 64]);
    invalid(&gguf_err(b), "nested");

    // Unknown metadata value type.
    let mut w = GgufWriter::new();
    w.kv("x", Val::U8(1));
    let mut b = w.build();
    b[24 + 8 + 1] = 200; // the value type of key "x"
    invalid(&gguf_err(b), "unknown value type 200");

    // Tensor dims: too many, zero, and overflowing products.
    for (dims, needle) in [
        (vec![32u64; 5], "dimensions"),
        (vec![0, 32], "zero or overflow"),
        (vec![1 << 40, 1 << 40], "zero or overflow"),
    ] {
        let mut w = GgufWriter::new();
        w.raw_tensor("t", &dims, 0, vec![0u8; 128]);
        invalid(&gguf_err(w.build()), needle);
    }
    let mut w = GgufWriter::new();
    w.raw_tensor("q", &[2, 48], 8, vec![0u8; 128]);
    invalid(&gguf_err(w.build()), "block size");
}

#[test]
fn duplicate_names_and_bad_alignment() {
    let mut w = GgufWriter::new();
    w.raw_tensor("t", &[8], 0, vec![0u8; 32]);
    w.raw_tensor("t", &[8], 0, vec![0u8; 32]);
    invalid(&gguf_err(w.build()), "appears twice");

    let mut w = tiny_model("llama", false);
    w.kvs.push(("general.alignment".into(), Val::U32(48)));
    invalid(&gguf_err(w.build()), "power of two");
}

fn hf_parts(class: &str) -> (String, Vec<u8>) {
    let ts = hf_writer::tensors(class, 16, true, |_| safetensors::Dtype::F32);
    (
        hf_writer::config(class, json!({})).to_string(),
        hf_writer::serialize(&ts),
    )
}

#[test]
fn truncated_safetensors() {
    let (cfg, st) = hf_parts("LlamaForCausalLM");
    for cut in [0, 4, 8, 20, st.len() / 2, st.len() - 1] {
        let e = HfModel::from_parts(&cfg, vec![("model.safetensors".into(), st[..cut].to_vec())])
            .unwrap_err();
        invalid(&e, "model.safetensors");
    }
}

#[test]
fn safetensors_header_length_past_end() {
    let (cfg, mut st) = hf_parts("LlamaForCausalLM");
    let past = st.len() as u64 * 2;
    st[..8].copy_from_slice(&past.to_le_bytes());
    let e = HfModel::from_parts(&cfg, vec![("model.safetensors".into(), st.clone())]).unwrap_err();
    invalid(&e, "safetensors");
    st[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = HfModel::from_parts(&cfg, vec![("model.safetensors".into(), st)]).unwrap_err();
    invalid(&e, "safetensors");
}

#[test]
fn bad_config_json() {
    let (_, st) = hf_parts("LlamaForCausalLM");
    let open = |cfg: &str| HfModel::from_parts(cfg, vec![("m".into(), st.clone())]).unwrap_err();

    let mut c = hf_writer::config("LlamaForCausalLM", json!({}));
    c.as_object_mut().unwrap().remove("hidden_size");
    let e = open(&c.to_string());
    assert!(
        matches!(&e, HearthError::Config(m) if m.contains("`hidden_size`")),
        "{e}"
    );

    let c = hf_writer::config("LlamaForCausalLM", json!({"num_attention_heads": "four"}));
    let e = open(&c.to_string());
    assert!(
        matches!(&e, HearthError::Config(m) if m.contains("num_attention_heads")),
        "{e}"
    );

    let c = hf_writer::config("GPT2LMHeadModel", json!({}));
    let e = open(&c.to_string());
    assert!(
        matches!(&e, HearthError::Unsupported(m) if m.contains("GPT2LMHeadModel")),
        "{e}"
    );

    let c = hf_writer::config("LlamaForCausalLM", json!({"hidden_act": "gelu"}));
    assert!(matches!(open(&c.to_string()), HearthError::Unsupported(m) if m.contains("gelu")));
    let c = hf_writer::config(
        "LlamaForCausalLM",
        json!({"quantization_config": {"quant_method": "awq"}}),
    );
    assert!(matches!(open(&c.to_string()), HearthError::Unsupported(m) if m.contains("awq")));

    let e = open("{ not json");
    assert!(
        matches!(&e, HearthError::Config(m) if m.contains("JSON")),
        "{e}"
    );

    // A config that parses but breaks the kernels' invariants.
    let c = hf_writer::config("LlamaForCausalLM", json!({"num_key_value_heads": 3}));
    assert!(matches!(open(&c.to_string()), HearthError::Config(_)));
}

#[test]
fn bad_directories_and_paths() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Not a model at all.
    let txt = d.join("notes.txt");
    std::fs::write(&txt, "hello").unwrap();
    invalid(&load::open(&txt).unwrap_err(), "expected a .gguf file");
    assert!(matches!(
        load::open(&d.join("absent.gguf")),
        Err(HearthError::Io { .. })
    ));
    invalid(&load::open(d).unwrap_err(), "config.json");

    // A .gguf name on a truncated file.
    let g = d.join("cut.gguf");
    std::fs::write(&g, &tiny_model("llama", false).build()[..100]).unwrap();
    invalid(&load::open(&g).unwrap_err(), "");

    // config.json without weights; then an index pointing outside the directory; then a missing shard.
    let (cfg, _) = hf_parts("LlamaForCausalLM");
    std::fs::write(d.join("config.json"), &cfg).unwrap();
    invalid(&load::open(d).unwrap_err(), "model.safetensors");
    let idx = |file: &str| json!({"weight_map": {"model.norm.weight": file}}).to_string();
    std::fs::write(
        d.join("model.safetensors.index.json"),
        idx("../evil.safetensors"),
    )
    .unwrap();
    invalid(&load::open(d).unwrap_err(), "plain file name");
    std::fs::write(
        d.join("model.safetensors.index.json"),
        idx("model-00001-of-00002.safetensors"),
    )
    .unwrap();
    assert!(matches!(load::open(d), Err(HearthError::Io { .. })));
}

// ---- Issue 20, finding 2: config values checked at load, naming the key ----

/// A tiny llama GGUF with one metadata value replaced.
fn tiny_with(key: &str, v: Val) -> Vec<u8> {
    let mut w = tiny_model("llama", false);
    w.kv(key, v);
    w.build()
}

/// Loads a GGUF as the engine would (config, then the shape check) and
/// returns the error, which must be a Config error naming `key`.
fn gguf_config_err(bytes: Vec<u8>, key: &str) -> HearthError {
    let e = common::within(60, key, move || {
        GgufModel::from_bytes(bytes).and_then(|m| check_shapes(&m))
    })
    .expect_err("a bad config value must not load");
    assert!(
        matches!(&e, HearthError::Config(m) if m.contains(key)),
        "expected a Config error naming `{key}`, got: {e}"
    );
    e
}

#[test]
fn huge_layer_counts_are_refused_before_anything_is_sized() {
    for n in [1u64 << 31, (1u64 << 32) + 2, u64::MAX] {
        gguf_config_err(
            tiny_with("llama.block_count", Val::U64(n)),
            "llama.block_count",
        );
    }
    let (_, st) = hf_parts("LlamaForCausalLM");
    let c = hf_writer::config("LlamaForCausalLM", json!({"num_hidden_layers": 1u64 << 40}));
    let e = common::within(60, "num_hidden_layers", move || {
        HfModel::from_parts(&c.to_string(), vec![("m".into(), st)]).and_then(|m| check_shapes(&m))
    })
    .unwrap_err();
    assert!(
        matches!(&e, HearthError::Config(m) if m.contains("num_hidden_layers")),
        "{e}"
    );
}

#[test]
fn layer_count_must_match_the_layers_in_the_file() {
    // Fewer layers claimed than present: layer 1 would be dropped silently.
    let e = gguf_config_err(
        tiny_with("llama.block_count", Val::U32(1)),
        "llama.block_count",
    );
    assert!(e.to_string().contains('2'), "{e}");
    gguf_config_err(
        tiny_with("llama.block_count", Val::U32(3)),
        "llama.block_count",
    );

    let (_, st) = hf_parts("LlamaForCausalLM");
    for n in [1, 3] {
        let c = hf_writer::config("LlamaForCausalLM", json!({ "num_hidden_layers": n }));
        let e = HfModel::from_parts(&c.to_string(), vec![("m".into(), st.clone())]).unwrap_err();
        assert!(
            matches!(&e, HearthError::Config(m) if m.contains("num_hidden_layers")),
            "{e}"
        );
    }
}

#[test]
fn non_finite_or_non_positive_eps_and_rope_values() {
    let eps = "llama.attention.layer_norm_rms_epsilon";
    for v in [f32::INFINITY, 0.0, -1.0, f32::NAN] {
        gguf_config_err(tiny_with(eps, Val::F32(v)), eps);
    }
    for v in [f32::INFINITY, f32::NAN, 0.0, -5.0] {
        gguf_config_err(
            tiny_with("llama.rope.freq_base", Val::F32(v)),
            "llama.rope.freq_base",
        );
    }
    for v in [-4.0, 0.0, f32::NAN, f32::INFINITY] {
        let mut w = tiny_model("llama", false);
        w.kv("llama.rope.scaling.type", Val::str("linear"));
        w.kv("llama.rope.scaling.factor", Val::F32(v));
        gguf_config_err(w.build(), "llama.rope.scaling.factor");
        gguf_config_err(
            tiny_with("llama.rope.scale_linear", Val::F32(v)),
            "llama.rope.scale_linear",
        );
    }

    let (_, st) = hf_parts("LlamaForCausalLM");
    let open = |extra: serde_json::Value| {
        let c = hf_writer::config("LlamaForCausalLM", extra);
        HfModel::from_parts(&c.to_string(), vec![("m".into(), st.clone())]).unwrap_err()
    };
    for (extra, key) in [
        (json!({"rms_norm_eps": -1.0}), "rms_norm_eps"),
        (json!({"rms_norm_eps": 0.0}), "rms_norm_eps"),
        (json!({"rms_norm_eps": 1e300}), "rms_norm_eps"),
        (json!({"rope_theta": 1e300}), "rope_theta"),
        (
            json!({"rope_scaling": {"rope_type": "linear", "factor": -4.0}}),
            "factor",
        ),
        (
            json!({"rope_scaling": {"rope_type": "linear", "factor": 0.0}}),
            "factor",
        ),
    ] {
        let e = open(extra);
        assert!(
            matches!(&e, HearthError::Config(m) if m.contains(key)),
            "{key}: {e}"
        );
    }
}

#[test]
fn context_length_and_sizes_are_bounded() {
    for n in [1u64 << 62, 0] {
        gguf_config_err(
            tiny_with("llama.context_length", Val::U64(n)),
            "llama.context_length",
        );
    }
    gguf_config_err(
        tiny_with("llama.attention.head_count", Val::U64(1 << 40)),
        "llama.attention.head_count",
    );
    // A vocabulary size that disagrees with the embedding matrix.
    gguf_config_err(
        tiny_with("llama.vocab_size", Val::U32(41)),
        "llama.vocab_size",
    );

    let (_, st) = hf_parts("LlamaForCausalLM");
    let c = hf_writer::config(
        "LlamaForCausalLM",
        json!({"max_position_embeddings": 1u64 << 62}),
    );
    let e = HfModel::from_parts(&c.to_string(), vec![("m".into(), st)]).unwrap_err();
    assert!(
        matches!(&e, HearthError::Config(m) if m.contains("max_position_embeddings")),
        "{e}"
    );
}

/// `hearth info` opens the file with `load::open`; 2^32 + 2 layers must be
/// an error there, not "2 layers".
#[test]
fn open_refuses_a_layer_count_past_u32() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.gguf");
    std::fs::write(&p, tiny_with("llama.block_count", Val::U64((1 << 32) + 2))).unwrap();
    let e = load::open(&p).unwrap_err();
    assert!(
        matches!(&e, HearthError::Config(m) if m.contains("llama.block_count") && m.contains("4294967298")),
        "{e}"
    );
}

#[test]
fn token_ids_past_u32_are_errors_not_truncated() {
    use hearth::text::vocab::TokenizerSpec;
    use hearth::text::Tokenizer;
    let b = tiny_with("tokenizer.ggml.eos_token_id", Val::U64(99_999_999_999));
    let e = GgufModel::from_bytes(b)
        .and_then(|m| m.vocab())
        .unwrap_err();
    assert!(e.to_string().contains("99999999999"), "{e}");

    let tokenizer_json = r#"{"version":"1.0","added_tokens":[],"normalizer":null,
        "pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
        "model":{"type":"WordLevel","vocab":{"a":0,"b":1},"unk_token":"a"}}"#;
    for generation in [
        r#"{"eos_token_id": 99999999999}"#,
        r#"{"eos_token_id": [1, 99999999999]}"#,
    ] {
        let e = Tokenizer::from_spec(&TokenizerSpec::HfJson {
            tokenizer_json: tokenizer_json.into(),
            tokenizer_config_json: None,
            generation_config_json: Some(generation.into()),
        })
        .unwrap_err();
        assert!(
            e.to_string().contains("99999999999") && e.to_string().contains("eos_token_id"),
            "{e}"
        );
    }
}

/// Memory-mapped files get the same metadata bound as ranged reads: a
/// header whose arrays would decode to far more memory than the file is refused.
#[test]
fn mapped_metadata_is_bounded() {
    // One u8 array of 17 M elements: 17 MB on disk, over half a GiB decoded.
    let n: u64 = 17 << 20;
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&4u64.to_le_bytes());
    b.extend_from_slice(b"junk");
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&n.to_le_bytes());
    b.resize(b.len() + n as usize, 0);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.gguf");
    std::fs::write(&p, &b).unwrap();
    let e = GgufFile::open(&p).unwrap_err();
    assert!(
        matches!(&e, HearthError::Unsupported(m) | HearthError::InvalidFile(m) if m.contains("metadata")),
        "{e}"
    );
    // The same bytes read in memory are bounded the same way.
    assert!(GgufFile::from_bytes(b).is_err());
}

// ---- Issue 20, finding 3: no quadratic work in the loaders ----

#[test]
fn a_very_long_sentencepiece_token_builds_quickly() {
    use hearth::text::vocab::{GgufVocab, TokenizerSpec};
    use hearth::text::Tokenizer;
    let long = "a".repeat(1_500_000);
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>", "a", "aa", "b"]
        .map(String::from)
        .to_vec();
    tokens.push(long);
    let n = tokens.len();
    let v = GgufVocab {
        model: "llama".into(),
        scores: Some((0..n).map(|i| -(i as f32)).collect()),
        token_types: Some(vec![1; n]),
        bos_token_id: Some(1),
        eos_token_id: Some(2),
        unknown_token_id: Some(0),
        tokens,
        ..Default::default()
    };
    let tok = common::within(30, "SentencePiece build", move || {
        Tokenizer::from_spec(&TokenizerSpec::Gguf(v)).unwrap()
    });
    let ids = tok.encode("aab", false).unwrap();
    assert!(!ids.is_empty());
}

#[test]
fn a_large_safetensors_index_is_linear() {
    let map: serde_json::Map<String, serde_json::Value> = (0..200_000)
        .map(|i| (format!("t{i}"), json!(format!("shard-{i}.safetensors"))))
        .collect();
    let index = json!({ "weight_map": map }).to_string();
    let names = common::within(30, "index dedup", move || {
        hearth::model::hf::shard_names_from_index(&index).unwrap()
    });
    assert_eq!(names.len(), 200_000);
}

// ---- Found by the cargo-fuzz targets (docs/FUZZING.md) ----

/// `fuzz/chat_template`: a `for` loop with no target (`{%for in messages%}`)
/// compiles to an unpack into an empty tuple whose span ends before it
/// starts. Rendering it is an error; in a build with debug assertions
/// minijinja attached its debug info to that error, and formatting it
/// (`{:#}`) subtracted the span's columns and panicked. The model's template
/// now renders to a clean error, the same in every build, that carries no
/// dump of the conversation.
#[test]
fn a_chat_template_for_loop_without_a_target_is_an_error() {
    use hearth::text::vocab::TokenizerSpec;
    use hearth::text::{ChatMessage, ChatTemplate, Tokenizer};
    let mut w = tiny_model("llama", false);
    let src = "{%for in messages%}{%endfor%}";
    w.kv("tokenizer.chat_template", Val::str(src));
    let vocab = GgufModel::from_bytes(w.build()).unwrap().vocab().unwrap();
    let tok = Tokenizer::from_spec(&TokenizerSpec::Gguf(vocab)).unwrap();
    assert_eq!(tok.chat_template(), Some(src));
    let t = ChatTemplate::for_tokenizer(&tok).unwrap();
    let secret = "the user's private words";
    let e = t
        .render(&[ChatMessage::new("user", secret)], true)
        .unwrap_err();
    match &e {
        HearthError::Template(m) => {
            assert!(m.contains("cannot unpack") && m.contains("chat:1"), "{m}");
            assert!(
                !m.contains(secret),
                "the message dumps the conversation: {m}"
            );
        }
        other => panic!("expected a template error, got {other}"),
    }
}
