//! GGUF reader: files written by the test writer read back with the right
//! config, shapes, bytes and values; the real SmolLM2 file.

mod common;

use std::borrow::Cow;

use common::gguf_writer::*;
use hearth::model::gguf::{GgufFile, GgufModel, MetaValue};
use hearth::model::load::{self, check_shapes};
use hearth::model::{Architecture, DType, RopeLayout, RopeScaling, WeightSource};
use hearth::text::vocab::TokenizerSpec;
use hearth::HearthError;

#[test]
fn tiny_llama_reads_back_config_shapes_and_values() {
    let w = tiny_model("llama", false);
    let model = GgufModel::from_bytes(w.build()).unwrap();
    let c = model.config();
    assert_eq!(c.arch, Architecture::Llama);
    assert_eq!(c.rope_layout, RopeLayout::Interleaved);
    assert_eq!(
        (
            c.num_layers,
            c.hidden_size,
            c.intermediate_size,
            c.vocab_size
        ),
        (LAYERS, HIDDEN, FFN, VOCAB)
    );
    assert_eq!(
        (c.num_heads, c.num_kv_heads, c.head_dim),
        (HEADS, KV_HEADS, HEAD_DIM)
    );
    assert_eq!(c.rope_theta, 100000.0);
    assert_eq!(c.rms_norm_eps, 1e-5);
    assert_eq!(c.max_position_embeddings, 256);
    assert_eq!(c.rope_scaling, RopeScaling::None);
    assert!(!c.tie_word_embeddings && !c.attention_bias && !c.qk_norm);
    check_shapes(&model).unwrap();

    for (i, (name, shape)) in tiny_tensors("llama", false).into_iter().enumerate() {
        let t = model.tensor(&name).unwrap();
        assert_eq!(t.shape, shape, "{name}");
        let dtype = tiny_dtype(&shape, i);
        assert_eq!(t.dtype, dtype, "{name}");
        assert!(matches!(t.data, Cow::Borrowed(_)), "{name} is zero-copy");
        let want = values(t.numel(), i as u64 + 1);
        assert_eq!(
            *t.data,
            *hearth::quant::quantize(dtype, &want).unwrap(),
            "{name} bytes"
        );
        // Values within the format's quantization error of the originals.
        let tol = match dtype {
            DType::F32 => 0.0,
            DType::F16 => 1e-3,
            DType::BF16 => 8e-3,
            DType::Q8_0 => 1.0 / 127.0,
            DType::Q4_0 | DType::Q4_1 => 0.15,
            other => unreachable!("tiny models hold no {other:?}"),
        };
        for (g, w) in t.to_f32().unwrap().iter().zip(&want) {
            assert!((g - w).abs() <= tol, "{name}: {g} vs {w}");
        }
    }
}

#[test]
fn tied_when_output_weight_absent() {
    let model = GgufModel::from_bytes(tiny_model("llama", true).build()).unwrap();
    assert!(model.config().tie_word_embeddings);
    assert!(!model.has_tensor("output.weight"));
    check_shapes(&model).unwrap();
}

#[test]
fn qwen2_and_qwen3_flags_from_tensors() {
    let q2 = GgufModel::from_bytes(tiny_model("qwen2", true).build()).unwrap();
    let c = q2.config();
    assert_eq!(
        (c.arch, c.rope_layout),
        (Architecture::Qwen2, RopeLayout::HalfSplit)
    );
    assert!(c.attention_bias && !c.qk_norm);
    check_shapes(&q2).unwrap();

    let q3 = GgufModel::from_bytes(tiny_model("qwen3", false).build()).unwrap();
    let c = q3.config();
    assert_eq!(
        (c.arch, c.rope_layout),
        (Architecture::Qwen3, RopeLayout::HalfSplit)
    );
    assert!(!c.attention_bias && c.qk_norm);
    check_shapes(&q3).unwrap();
}

#[test]
fn version_2_and_custom_alignment() {
    let mut w = tiny_model("llama", false);
    w.version = 2;
    w.kv("general.alignment", Val::U32(64));
    let (bytes, layout) = w.build_with_layout();
    assert_eq!(layout.data_start % 64, 0);
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(
        (f.version(), f.alignment(), f.data_offset()),
        (2, 64, layout.data_start)
    );
    assert!(f.tensor_infos().iter().all(|t| t.offset % 64 == 0));
    let model = GgufModel::new(f).unwrap();
    check_shapes(&model).unwrap();
}

#[test]
fn metadata_value_types_and_typed_getters() {
    let mut w = GgufWriter::new();
    w.kv("u8", Val::U8(200))
        .kv("i8", Val::I8(-5))
        .kv("u16", Val::U16(60000))
        .kv("i16", Val::I16(-30000))
        .kv("u32", Val::U32(4_000_000_000))
        .kv("i32", Val::I32(-7))
        .kv("u64", Val::U64(1 << 40))
        .kv("i64", Val::I64(-(1 << 40)))
        .kv("f32", Val::F32(1.5))
        .kv("f64", Val::F64(-2.25))
        .kv("bool", Val::Bool(true))
        .kv("str", Val::str("héllo"))
        .kv("empty", Val::Arr(4, vec![]))
        .kv(
            "nested",
            Val::Arr(
                9,
                vec![
                    Val::Arr(5, vec![Val::I32(1), Val::I32(-2)]),
                    Val::Arr(5, vec![]),
                ],
            ),
        );
    let f = GgufFile::from_bytes(w.build()).unwrap();
    assert_eq!(f.get_u64("u8").unwrap(), Some(200));
    assert_eq!(f.get_i64("i8").unwrap(), Some(-5));
    assert_eq!(f.get_usize("u16").unwrap(), Some(60000));
    assert_eq!(f.get_i64("i16").unwrap(), Some(-30000));
    assert_eq!(f.get_u64("u32").unwrap(), Some(4_000_000_000));
    assert_eq!(f.get("i32"), Some(&MetaValue::I32(-7)));
    assert_eq!(f.get_u64("u64").unwrap(), Some(1 << 40));
    assert_eq!(f.get_i64("i64").unwrap(), Some(-(1 << 40)));
    assert_eq!(f.get_f32("f32").unwrap(), Some(1.5));
    assert_eq!(f.get_f32("f64").unwrap(), Some(-2.25));
    assert_eq!(f.get_bool("bool").unwrap(), Some(true));
    assert_eq!(f.get_str("str").unwrap(), Some("héllo"));
    assert_eq!(f.get_array("empty").unwrap().map(|a| a.len()), Some(0));
    let nested = f.get_array("nested").unwrap().unwrap();
    assert_eq!(
        nested[0],
        MetaValue::Array(vec![MetaValue::I32(1), MetaValue::I32(-2)])
    );
    assert_eq!(f.get_u64("absent").unwrap(), None);
    // A negative value is not a count; a string is not a number: clear errors.
    assert!(matches!(f.get_u64("i32"), Err(HearthError::InvalidFile(m)) if m.contains("i32")));
    assert!(matches!(f.get_f32("str"), Err(HearthError::InvalidFile(m)) if m.contains("`str`")));
    assert_eq!(f.metadata().len(), 14);
}

#[test]
fn vocab_from_metadata() {
    let f = GgufFile::from_bytes(tiny_model("llama", false).build()).unwrap();
    let v = f.vocab().unwrap();
    assert_eq!(v.model, "gpt2");
    assert_eq!(v.pre.as_deref(), Some("smollm"));
    assert_eq!(v.tokens.len(), VOCAB);
    assert_eq!(v.tokens[3], "t3");
    assert_eq!(
        v.merges.as_ref().unwrap(),
        &["t 1".to_string(), "t1 0".to_string()]
    );
    assert_eq!(v.token_types.as_ref().unwrap().len(), VOCAB);
    assert_eq!(v.scores, None);
    assert_eq!(
        (v.bos_token_id, v.eos_token_id, v.add_bos_token),
        (Some(1), Some(2), Some(false))
    );
    assert_eq!(v.chat_template.as_deref(), Some("{{ messages }}"));
}

#[test]
fn linear_rope_scaling_and_defaults() {
    let mut w = tiny_model("llama", false);
    w.kv("llama.rope.scaling.type", Val::str("linear"));
    w.kv("llama.rope.scaling.factor", Val::F32(4.0));
    w.kvs
        .retain(|(k, _)| k != "llama.rope.freq_base" && k != "llama.attention.head_count_kv");
    let c = GgufFile::from_bytes(w.build()).unwrap().config().unwrap();
    assert_eq!(c.rope_scaling, RopeScaling::Linear { factor: 4.0 });
    assert_eq!(c.rope_theta, 10000.0);
    assert_eq!(c.num_kv_heads, HEADS);
}

/// Llama-3 files carry RoPE scaling as per-pair divisors; they map back to
/// the Llama3 variant that produced them.
#[test]
fn llama3_rope_freqs_tensor_maps_to_llama3_scaling() {
    let scaling = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192.0,
    };
    // head_dim 128 so that all three regions (kept, scaled, smoothed) occur at theta 500000.
    let mut w = GgufWriter::new();
    tiny_metadata(&mut w, "llama");
    w.kv("llama.rope.freq_base", Val::F32(500000.0));
    w.kv("llama.embedding_length", Val::U32(256));
    w.kv("llama.attention.head_count", Val::U32(2));
    w.kv("llama.attention.head_count_kv", Val::U32(2));
    let (d, theta) = (128usize, 500000f64);
    let divisors: Vec<f32> = (0..d / 2)
        .map(|i| {
            let f = 1.0 / theta.powf(2.0 * i as f64 / d as f64);
            let wl = 2.0 * std::f64::consts::PI / f;
            if wl < 8192.0 / 4.0 {
                1.0
            } else if wl > 8192.0 {
                8.0
            } else {
                let s = (8192.0 / wl - 1.0) / 3.0;
                (1.0 / ((1.0 - s) / 8.0 + s)) as f32
            }
        })
        .collect();
    assert!(
        divisors.iter().any(|&x| x > 1.0 && x < 8.0),
        "smooth region present"
    );
    w.tensor("rope_freqs.weight", &[d / 2], DType::F32, &divisors);
    let c = GgufFile::from_bytes(w.build()).unwrap().config().unwrap();
    assert_eq!(c.head_dim, 128);
    assert_eq!(c.rope_scaling, scaling);

    // A table that is not Llama-3's is refused rather than silently ignored.
    let mut w2 = GgufWriter::new();
    w2.kvs = w.kvs.clone();
    let mut odd = divisors.clone();
    odd[0] = 3.0;
    w2.tensor("rope_freqs.weight", &[d / 2], DType::F32, &odd);
    let err = GgufFile::from_bytes(w2.build())
        .unwrap()
        .config()
        .unwrap_err();
    assert!(matches!(err, HearthError::Unsupported(m) if m.contains("rope_freqs")));
}

#[test]
fn open_from_disk_and_load_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    std::fs::write(&path, tiny_model("qwen2", false).build()).unwrap();
    let m = GgufModel::open(&path).unwrap();
    assert_eq!(m.config().arch, Architecture::Qwen2);
    let loaded = load::open(&path).unwrap();
    assert!(
        loaded.source_desc.contains("GGUF v3 qwen2"),
        "{}",
        loaded.source_desc
    );
    assert!(matches!(loaded.tokenizer, TokenizerSpec::Gguf(ref v) if v.tokens.len() == VOCAB));
    check_shapes(loaded.weights.as_ref()).unwrap();

    // Recognised by its magic when the name lacks the extension.
    let bare = dir.path().join("model.bin");
    std::fs::copy(&path, &bare).unwrap();
    assert_eq!(
        load::open(&bare).unwrap().weights.config().arch,
        Architecture::Qwen2
    );
}

/// The default model (CI fetches it before the tests).
#[test]
fn smollm2_default_model() {
    let path = common::smollm2_path();
    let loaded = load::open(&path).unwrap();
    let c = loaded.weights.config().clone();
    assert_eq!(c.arch, Architecture::Llama);
    assert_eq!(c.rope_layout, RopeLayout::Interleaved);
    assert_eq!(
        (c.num_layers, c.hidden_size, c.intermediate_size),
        (30, 576, 1536)
    );
    assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (9, 3, 64));
    assert_eq!(c.vocab_size, 49152);
    assert_eq!(c.rope_theta, 100000.0);
    assert!((c.rms_norm_eps - 1e-5).abs() < 1e-9);
    assert_eq!(c.rope_scaling, RopeScaling::None);
    assert!(c.tie_word_embeddings && !c.attention_bias && !c.qk_norm);
    check_shapes(loaded.weights.as_ref()).unwrap();

    let w = loaded.weights.as_ref();
    let embd = w.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (embd.dtype, embd.shape.clone()),
        (DType::Q8_0, vec![49152, 576])
    );
    for name in [
        "blk.0.attn_q.weight",
        "blk.29.ffn_down.weight",
        "output_norm.weight",
    ] {
        let t = w.tensor(name).unwrap();
        assert!(
            matches!(t.dtype, DType::Q4_1 | DType::F32),
            "{name}: {:?}",
            t.dtype
        );
    }
    // Dequantized values are finite and the norm weights are plausible.
    assert!(w
        .tensor("blk.0.attn_q.weight")
        .unwrap()
        .to_f32()
        .unwrap()
        .iter()
        .all(|v| v.is_finite()));

    let TokenizerSpec::Gguf(v) = loaded.tokenizer else {
        panic!("GGUF tokenizer expected")
    };
    assert_eq!(v.model, "gpt2");
    assert_eq!(v.pre.as_deref(), Some("smollm"));
    assert_eq!(v.tokens.len(), 49152);
    assert_eq!(v.merges.as_ref().map(Vec::len), Some(48900));
    assert_eq!((v.bos_token_id, v.eos_token_id), (Some(1), Some(2)));
    assert_eq!(v.add_bos_token, Some(false));
    assert!(v
        .chat_template
        .as_deref()
        .unwrap_or("")
        .contains("<|im_start|>"));
}
