//! Mixture-of-experts models (Mixtral, Qwen2-MoE with its shared expert,
//! Qwen3-MoE with a dense layer) on the CPU reference against golden logits
//! from transformers (`tests/fixtures/gen_moe_fixtures.py` wrote the
//! fixtures in `tests/fixtures/moe/`), from the Hugging Face directories
//! and from the same weights converted to GGUF by the tests' own writer.

mod common;

use common::golden::{check_case_dir, reference, BackendOutput, Golden};
use common::moe::{fixtures, to_gguf, CASES};
use hearth::model::convert::ConvertedSource;
use hearth::model::load::{open, LoadedModel};
use hearth::model::{DType, WeightSource};
use hearth::reference::{RefKvCache, RefModel};

/// As in hf_golden: the reference computes in f32 on the same weights as
/// transformers, so only summation order and the goldens' 6-digit rounding
/// separate them. Dropping the top-k renormalisation moves these logits by
/// 0.5-0.8 (golden.json `moe.norm_topk_prob_effect`), a wrong expert far more.
const REFERENCE_RTOL: f32 = 2e-5;

fn check(
    case: &str,
    name: &str,
    backend: impl Fn(&LoadedModel, &[u32], usize) -> hearth::Result<BackendOutput>,
) {
    check_case_dir(&fixtures().join(case), case, name, REFERENCE_RTOL, backend);
}

#[test]
fn fixture_dirs_are_all_tested() {
    let mut dirs: Vec<String> = std::fs::read_dir(fixtures())
        .expect("tests/fixtures/moe exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert_eq!(dirs, CASES, "tests/fixtures/moe and CASES disagree");
}

#[test]
fn configs_are_read_as_transformers_reads_them() {
    let moe = |case: &str| {
        let m = open(&fixtures().join(case)).unwrap();
        m.weights.config().moe.clone().expect("a MoE config")
    };
    let m = moe("mixtral_f32");
    assert_eq!(
        (
            m.num_experts,
            m.experts_per_token,
            m.expert_intermediate_size
        ),
        (8, 2, 32)
    );
    assert!(m.norm_topk_prob, "Mixtral always renormalises");
    assert_eq!(m.sparse_layers, [true, true]);
    assert_eq!(m.shared_expert_intermediate_size, None);
    let m = moe("qwen2moe_shared_bf16");
    assert!(!m.norm_topk_prob);
    assert_eq!(m.shared_expert_intermediate_size, Some(64));
    let m = moe("qwen3moe_mlp_only_tied");
    assert_eq!((m.experts_per_token, m.expert_intermediate_size), (3, 32));
    assert!(m.norm_topk_prob);
    assert_eq!(
        m.sparse_layers,
        [true, false, true],
        "mlp_only_layers = [1]"
    );
}

mod reference_vs_transformers {
    use super::*;

    #[test]
    fn mixtral_f32() {
        check("mixtral_f32", "reference", reference);
    }

    #[test]
    fn qwen2moe_shared_bf16() {
        check("qwen2moe_shared_bf16", "reference", reference);
    }

    #[test]
    fn qwen3moe_mlp_only_tied() {
        check("qwen3moe_mlp_only_tied", "reference", reference);
    }
}

/// The reference on the GGUF conversion of a fixture, as a backend.
fn via_gguf(loaded: &LoadedModel, prompt: &[u32], n_new: usize) -> hearth::Result<BackendOutput> {
    let g = to_gguf(&*loaded.weights, DType::F32);
    assert_eq!(
        g.config().moe,
        loaded.weights.config().moe,
        "GGUF round trip of the MoE config"
    );
    let model = RefModel::load(&g)?;
    Ok(BackendOutput {
        logits: model.forward(prompt, &mut RefKvCache::default())?,
        greedy: model.generate_greedy(prompt, n_new, &[])?,
    })
}

mod gguf_vs_transformers {
    use super::*;

    #[test]
    fn mixtral_f32() {
        check("mixtral_f32", "gguf reference", via_gguf);
    }

    #[test]
    fn qwen2moe_shared_bf16() {
        check("qwen2moe_shared_bf16", "gguf reference", via_gguf);
    }

    #[test]
    fn qwen3moe_mlp_only_tied() {
        check("qwen3moe_mlp_only_tied", "gguf reference", via_gguf);
    }
}

/// Quantized experts: a GGUF whose matrices (stacked experts included) are
/// Q8_0 / Q4_0 / Q4_1 gives the logits of the safetensors directory
/// quantized on load to the same format (the same weights reached by two
/// paths), and they differ from the float model's.
#[test]
fn quantized_gguf_matches_quantized_on_load() {
    for case in CASES {
        let dir = fixtures().join(case);
        let g = Golden::read(&dir);
        let loaded = open(&dir).unwrap();
        for dtype in [DType::Q8_0, DType::Q4_0, DType::Q4_1] {
            let conv = ConvertedSource::new(&*loaded.weights, dtype);
            let (stored, _) = conv.tensor_meta("blk.0.ffn_down_exps.weight").unwrap();
            assert_eq!(stored, dtype, "{case}: experts are quantized on load");
            let want = RefModel::load(&conv).unwrap();
            let gguf = to_gguf(&*loaded.weights, dtype);
            let got = RefModel::load(&gguf).unwrap();
            let w = want
                .forward(&g.prompt_ids, &mut RefKvCache::default())
                .unwrap();
            let o = got
                .forward(&g.prompt_ids, &mut RefKvCache::default())
                .unwrap();
            let (worst, scale) = common::max_err(&o, &w);
            assert!(
                worst <= 2e-5 * scale,
                "{case} {dtype:?}: max error {worst} (scale {scale})"
            );
            assert_eq!(
                got.generate_greedy(&g.prompt_ids, 6, &[]).unwrap(),
                want.generate_greedy(&g.prompt_ids, 6, &[]).unwrap(),
                "{case} {dtype:?}: greedy ids"
            );
            let n = g.prompt_ids.len();
            let last = &o[(n - 1) * g.vocab..];
            let d = last
                .iter()
                .zip(&g.last_logits)
                .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
            assert!(d > 1e-3, "{case} {dtype:?}: logits equal the float model's");
        }
    }
}
