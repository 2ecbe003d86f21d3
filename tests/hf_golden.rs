//! Hugging Face directories (safetensors + tokenizer.json) against golden
//! logits that transformers computed for the same files: the independent
//! oracle for the safetensors path. The fixtures and the script that wrote
//! them live in `tests/fixtures/hf/` and `tests/golden/make_golden.py`.
//!
//! `check_case` takes the backend as a function, so the GPU engine can be
//! checked against the same goldens with the same tolerances.

mod common;

use std::path::{Path, PathBuf};

use common::golden::{check_case_dir, reference, BackendOutput, Golden};
use hearth::model::load::{open, LoadedModel};
use hearth::reference::{RefKvCache, RefModel};

/// Every case the script writes; `fixture_dirs_are_all_tested` keeps this
/// list and the directory in step.
const CASES: &[&str] = &[
    "llama_f32",
    "llama3_rope_f16",
    "llama_tied_llama3_params",
    "mistral_bf16",
    "qwen2_bias_sharded",
    "qwen3_qknorm_tied",
];

/// The reference's logits may differ from transformers' by this fraction of
/// the case's largest |logit| (≈ 5-6 here). Both compute in f32 on the same
/// weights; the observed error is ≤ 5e-6 of the scale (summation order, and
/// the goldens' rounding to 6 significant digits), so 2e-5 keeps a 4x margin
/// while a wrong RoPE, norm or bias (errors ≥ 0.1 here) cannot pass.
const REFERENCE_RTOL: f32 = 2e-5;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf")
}

/// [`check_case_dir`] on `tests/fixtures/hf/<case>`.
fn check_case(
    case: &str,
    backend_name: &str,
    rtol: f32,
    backend: impl Fn(&LoadedModel, &[u32], usize) -> hearth::Result<BackendOutput>,
) -> f32 {
    check_case_dir(&fixtures().join(case), case, backend_name, rtol, backend)
}

#[test]
fn fixture_dirs_are_all_tested() {
    let mut dirs: Vec<String> = std::fs::read_dir(fixtures())
        .expect("tests/fixtures/hf exists")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    dirs.sort();
    let mut want: Vec<String> = CASES.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(dirs, want, "tests/fixtures/hf and CASES disagree");
}

macro_rules! reference_cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check_case(stringify!($name), "reference", REFERENCE_RTOL, reference);
            }
        )*
    };
}

mod reference_vs_transformers {
    use super::*;

    reference_cases!(
        llama_f32,
        llama3_rope_f16,
        llama_tied_llama3_params,
        mistral_bf16,
        qwen2_bias_sharded,
        qwen3_qknorm_tied,
    );
}

use common::golden::{gpu_backend_with, GPU_RTOL};

macro_rules! gpu_cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check_case(stringify!($name), "gpu", GPU_RTOL, gpu_backend_with(None));
            }
        )*
    };
}

mod gpu_vs_transformers {
    use super::*;

    gpu_cases!(
        llama_f32,
        llama3_rope_f16,
        llama_tied_llama3_params,
        mistral_bf16,
        qwen2_bias_sharded,
        qwen3_qknorm_tied,
    );
}

/// `--dtype` quantize-on-load: the GPU on converted weights against the CPU
/// reference on the same converted weights (the exact oracle), for every case.
#[test]
fn gpu_quantized_on_load_matches_reference_on_same_weights() {
    use hearth::model::convert::ConvertedSource;
    use hearth::model::DType;
    for case in CASES {
        let dir = fixtures().join(case);
        let g = Golden::read(&dir);
        let loaded = open(&dir).unwrap();
        for dtype in [DType::F16, DType::Q8_0, DType::Q4_0, DType::Q4_1] {
            let conv = ConvertedSource::new(&*loaded.weights, dtype);
            let rm = RefModel::load(&conv).unwrap();
            let want = rm
                .forward(&g.prompt_ids, &mut RefKvCache::default())
                .unwrap();
            let got = gpu_backend_with(Some(dtype))(&loaded, &g.prompt_ids, 6).unwrap();
            let (worst, scale) = common::max_err(&got.logits, &want);
            assert!(
                worst <= GPU_RTOL * scale,
                "{case} {dtype:?}: max logit error {worst} (scale {scale})"
            );
            let ref_greedy = rm.generate_greedy(&g.prompt_ids, 6, &[]).unwrap();
            assert_eq!(got.greedy, ref_greedy, "{case} {dtype:?}: greedy ids");
            // Quantization really happened: q4 logits differ from the float model's.
            if dtype == DType::Q4_0 {
                let n = g.prompt_ids.len();
                let last = &got.logits[(n - 1) * g.vocab..];
                let d = last
                    .iter()
                    .zip(&g.last_logits)
                    .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
                assert!(d > 1e-3, "{case}: q4_0 logits equal the float model's");
            }
        }
    }
}
