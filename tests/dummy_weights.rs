//! Dummy weights (`--dummy-weights`): a GGUF cut off after its tensor table
//! loads header-only, and the model runs on random weights of its shapes
//! and formats; a whole file is refused when its data is missing.

mod common;

use common::gguf_writer;
use hearth::engine::{GenerateOptions, SamplingParams};
use hearth::model::dummy::DummyWeights;
use hearth::model::gguf::{GgufFile, GgufModel};
use hearth::model::load::{check_shapes, expected_tensors, FileBytes};
use hearth::model::WeightSource;
use hearth::quant::dequantize;
use hearth::{EngineOptions, Hearth};

/// The tiny model's file and the same file cut off where its data begins.
fn whole_and_skeleton() -> (Vec<u8>, Vec<u8>) {
    let whole = gguf_writer::tiny_char_model("llama", false).build();
    let data_at = GgufFile::from_bytes(whole.clone()).unwrap().data_offset();
    let skeleton = whole[..data_at].to_vec();
    (whole, skeleton)
}

#[test]
fn a_skeleton_parses_header_only_and_is_refused_whole() {
    let (whole, skeleton) = whole_and_skeleton();
    let e = GgufFile::from_bytes(skeleton.clone()).unwrap_err();
    assert!(e.to_string().contains("runs past the end"), "{e}");
    let file = GgufFile::parse_header_only(FileBytes::Owned(skeleton)).unwrap();
    let model = GgufModel::new(file).unwrap();
    let real = GgufModel::from_bytes(whole).unwrap();
    // The tensor table is all there; the data is not, and reading it says so.
    for (name, _) in expected_tensors(&real) {
        assert_eq!(
            model.tensor_meta(&name).unwrap(),
            real.tensor_meta(&name).unwrap()
        );
        let e = model.tensor(&name).unwrap_err();
        assert!(e.to_string().contains("past the end"), "{name}: {e}");
    }
}

/// Llama 3's RoPE scaling lives in a tensor (rope_freqs.weight); a skeleton
/// has no data for it and runs unscaled instead of failing to load.
#[test]
fn a_skeleton_without_rope_freqs_data_runs_unscaled() {
    let mut w = gguf_writer::tiny_char_model("llama", false);
    w.tensor(
        "rope_freqs.weight",
        &[gguf_writer::HEAD_DIM / 2],
        hearth::model::DType::F32,
        &[1.0; gguf_writer::HEAD_DIM / 2],
    );
    let whole = w.build();
    let file = GgufFile::from_bytes(whole.clone()).unwrap();
    assert!(file.has_tensor_data("rope_freqs.weight"));
    let skeleton = whole[..file.data_offset()].to_vec();
    let file = GgufFile::parse_header_only(FileBytes::Owned(skeleton)).unwrap();
    assert!(file.has_tensor("rope_freqs.weight") && !file.has_tensor_data("rope_freqs.weight"));
    let c = file.config().unwrap();
    assert_eq!(c.rope_scaling, hearth::model::RopeScaling::None);
}

#[test]
fn dummy_tensors_have_the_file_formats_and_bounded_values() {
    let (_, skeleton) = whole_and_skeleton();
    let file = GgufFile::parse_header_only(FileBytes::Owned(skeleton)).unwrap();
    let dummy = DummyWeights::new(Box::new(GgufModel::new(file).unwrap()));
    check_shapes(&dummy).unwrap();
    let mut formats = std::collections::HashSet::new();
    for (name, shape) in expected_tensors(&dummy) {
        let t = dummy.tensor(&name).unwrap();
        let (dtype, _) = dummy.tensor_meta(&name).unwrap();
        formats.insert(dtype);
        assert_eq!((t.dtype, &t.shape), (dtype, &shape), "{name}");
        let v = dequantize(t.dtype, &t.data, t.numel()).unwrap();
        if shape.len() == 1 && name.contains("norm") {
            assert!(v.iter().all(|&x| x == 1.0), "{name}: norm weights are 1");
        } else {
            let max = v.iter().fold(0f32, |a, x| a.max(x.abs()));
            // ±0.0346, plus the format's rounding.
            assert!(max > 0.02 && max < 0.04, "{name}: largest |value| {max}");
        }
        // The same bytes every time.
        assert_eq!(t.data, dummy.tensor(&name).unwrap().data, "{name}");
    }
    assert!(
        formats.len() >= 4,
        "the tiny model mixes formats: {formats:?}"
    );
}

#[test]
fn a_skeleton_runs_with_dummy_weights() {
    let (_, skeleton) = whole_and_skeleton();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("skeleton.gguf");
    std::fs::write(&path, skeleton).unwrap();
    let opts = EngineOptions {
        gpu: hearth::gpu::GpuOptions::from_env(),
        ..Default::default()
    };
    let e = Hearth::open(&path, &opts, &mut |_| {})
        .err()
        .expect("no data");
    assert!(e.to_string().contains("runs past the end"), "{e}");
    let opts = EngineOptions {
        dummy_weights: true,
        ..opts
    };
    let mut h = Hearth::open(&path, &opts, &mut |_| {}).unwrap();
    assert!(
        h.source_desc.ends_with("dummy weights"),
        "{}",
        h.source_desc
    );
    let gen = GenerateOptions {
        sampling: SamplingParams::greedy(),
        max_tokens: 6,
        ignore_eos: true,
        ..Default::default()
    };
    let out = h
        .generate_blocking(&[1, 2, 3, 4], &gen, &mut |_| true)
        .unwrap();
    assert_eq!(out.ids.len(), 6);
    let vocab = h.model.config.vocab_size as u32;
    assert!(out.ids.iter().all(|&id| id < vocab), "{:?}", out.ids);
}
