//! Mixture-of-experts models on the GPU: the three transformers fixtures
//! (Mixtral, Qwen2-MoE with its shared expert, Qwen3-MoE with a dense
//! layer) against their golden logits, quantized on load and as GGUF
//! against the CPU reference on the same weights, and batch invariance: a
//! sequence's logits and tokens do not depend on what it is batched with.

mod common;

use common::golden::{check_case_dir, gpu_backend_with, gpu_model, Golden, GPU_RTOL};
use common::max_err;
use common::moe::{fixtures, to_gguf, CASES};
use hearth::engine::{GenerateOptions, SamplingParams};
use hearth::model::convert::ConvertedSource;
use hearth::model::forward::{ForwardOptions, GpuModel, SeqStep};
use hearth::model::load::open;
use hearth::model::{DType, WeightSource};
use hearth::reference::{RefKvCache, RefModel};

mod gpu_vs_transformers {
    use super::*;

    fn check(case: &str) {
        check_case_dir(
            &fixtures().join(case),
            case,
            "gpu",
            GPU_RTOL,
            gpu_backend_with(None),
        );
    }

    #[test]
    fn mixtral_f32() {
        check("mixtral_f32");
    }

    #[test]
    fn qwen2moe_shared_bf16() {
        check("qwen2moe_shared_bf16");
    }

    #[test]
    fn qwen3moe_mlp_only_tied() {
        check("qwen3moe_mlp_only_tied");
    }
}

/// Every prompt position's logits in one step of one-token parts, and the
/// greedy continuation through the engine (the decode path).
fn gpu_run(src: &dyn WeightSource, prompt: &[u32], n_new: usize) -> (Vec<f32>, Vec<u32>) {
    let mut m = GpuModel::load(
        common::gpu(),
        src,
        ForwardOptions {
            kv_memory: 4 << 20,
            kv_dtype: hearth::kv::KvDtype::F32,
            max_step_tokens: 64,
            max_seqs: prompt.len() as u32,
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap();
    let n = prompt.len();
    let mut pool = m.new_kv_pool();
    let blocks = pool
        .allocate(n.div_ceil(pool.block_size() as usize))
        .unwrap();
    let parts: Vec<SeqStep> = (0..n)
        .map(|i| SeqStep::new(&prompt[i..i + 1], i as u32, &blocks))
        .collect();
    pollster::block_on(m.step(&parts, 1)).unwrap();
    let logits = pollster::block_on(m.last_logits(n)).unwrap();
    pool.free(&blocks).unwrap();
    let tok =
        hearth::text::Tokenizer::from_spec(&open(&fixtures().join(CASES[0])).unwrap().tokenizer)
            .unwrap();
    let mut e = common::engine(m, tok);
    let opts = GenerateOptions {
        sampling: SamplingParams::greedy(),
        max_tokens: n_new,
        ignore_eos: true,
        ..Default::default()
    };
    let g = e.generate_blocking(prompt, &opts, &mut |_| true).unwrap();
    (logits, g.ids)
}

/// Quantized experts (on load, and stored so in a GGUF written by the
/// tests' writer): the GPU against the CPU reference on the same weights.
#[test]
fn quantized_experts_match_the_reference_on_the_same_weights() {
    for case in CASES {
        let dir = fixtures().join(case);
        let g = Golden::read(&dir);
        let loaded = open(&dir).unwrap();
        for dtype in [DType::Q8_0, DType::Q4_0, DType::Q4_1] {
            let conv = ConvertedSource::new(&*loaded.weights, dtype);
            let rm = RefModel::load(&conv).unwrap();
            let want = rm
                .forward(&g.prompt_ids, &mut RefKvCache::default())
                .unwrap();
            let want_ids = rm.generate_greedy(&g.prompt_ids, 6, &[]).unwrap();
            let got = gpu_backend_with(Some(dtype))(&loaded, &g.prompt_ids, 6).unwrap();
            let (worst, scale) = max_err(&got.logits, &want);
            assert!(
                worst <= GPU_RTOL * scale,
                "{case} {dtype:?} on load: max logit error {worst} (scale {scale})"
            );
            assert_eq!(got.greedy, want_ids, "{case} {dtype:?} on load: greedy ids");

            let gguf = to_gguf(&*loaded.weights, dtype);
            let (logits, ids) = gpu_run(&gguf, &g.prompt_ids, 6);
            let (worst, scale) = max_err(&logits, &want);
            assert!(
                worst <= GPU_RTOL * scale,
                "{case} {dtype:?} GGUF: max logit error {worst} (scale {scale})"
            );
            assert_eq!(ids, want_ids, "{case} {dtype:?} GGUF: greedy ids");
        }
    }
}

/// The fixtures' f32 GGUF conversion on the GPU gives the goldens' greedy ids.
#[test]
fn gguf_conversions_give_the_golden_greedy_ids() {
    for case in CASES {
        let dir = fixtures().join(case);
        let g = Golden::read(&dir);
        let loaded = open(&dir).unwrap();
        let gguf = to_gguf(&*loaded.weights, DType::F32);
        let (logits, ids) = gpu_run(&gguf, &g.prompt_ids, g.greedy_ids.len());
        let n = g.prompt_ids.len();
        let (worst, scale) = max_err(&logits[(n - 1) * g.vocab..], &g.last_logits);
        assert!(
            worst <= GPU_RTOL * g.logit_scale.max(scale),
            "{case}: last-position error {worst}"
        );
        assert_eq!(ids, g.greedy_ids, "{case}: greedy ids");
    }
}

/// `hearth bench`'s bytes per token are the active experts', not all of them.
#[test]
fn weight_bytes_count_only_the_active_experts() {
    let loaded = open(&fixtures().join("mixtral_f32")).unwrap();
    let m = gpu_model(&loaded, None, 1).unwrap();
    let c = &m.config;
    let moe = c.moe.as_ref().unwrap();
    let (h, f, e, k) = (
        c.hidden_size as u64,
        moe.expert_intermediate_size as u64,
        moe.num_experts as u64,
        moe.experts_per_token as u64,
    );
    let expert = 3 * h * f * 4;
    let layers = c.num_layers as u64;
    // The fixture's lm_head is untied: the embedding table is stored but
    // not read as a matrix per token.
    let embed = c.vocab_size as u64 * h * 4;
    assert_eq!(
        m.total_weight_bytes - m.weight_bytes,
        layers * (e - k) * expert + embed,
        "the unselected experts (and the embedding table) are the difference"
    );
}

/// The serving features over a MoE model (Qwen3-MoE with a dense layer):
/// n-gram and draft-model speculative decoding give plain greedy ids,
/// and requests batched continuously with a shared prefix (prefix cache)
/// give their ids alone. (Quantized KV on a MoE model: `gguf_gpu`.)
#[test]
fn serving_features_work_with_experts() {
    use hearth::engine::{Drafting, Request, SpecOptions};
    use hearth::{Output, Prompt};
    let dir = fixtures().join("qwen3moe_mlp_only_tied");
    let loaded = open(&dir).unwrap();
    let tok = hearth::text::Tokenizer::from_spec(&loaded.tokenizer).unwrap();
    let model = |dtype: Option<DType>, kv| {
        GpuModel::load(
            common::gpu(),
            &*loaded.weights,
            ForwardOptions {
                dtype,
                kv_memory: 1 << 20,
                kv_dtype: kv,
                max_step_tokens: 64,
                max_seqs: 8,
                max_logit_rows: 64,
                ..Default::default()
            },
            &mut |_| {},
        )
        .unwrap()
    };
    use hearth::kv::KvDtype;
    // Periodic prompts so that n-grams recur; all share a 16-token prefix.
    let prefix: Vec<u32> = (0..16).map(|i| (i * 5 + 3) % 300).collect();
    let prompts: Vec<Vec<u32>> = [(9, 1), (30, 4), (3, 7)]
        .iter()
        .map(|&(n, s)| {
            let mut p = prefix.clone();
            p.extend((0..n).map(|i| (i * 7 + s) % 13 + 20));
            p
        })
        .collect();
    let opts = |spec: SpecOptions| GenerateOptions {
        sampling: SamplingParams::greedy(),
        max_tokens: 16,
        ignore_eos: true,
        speculative: spec,
        ..Default::default()
    };
    let mut plain = common::uncached_engine(model(None, KvDtype::F32), tok.clone());
    let want: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            plain
                .generate_blocking(p, &opts(SpecOptions::default()), &mut |_| true)
                .unwrap()
                .ids
        })
        .collect();

    let mut drafted = 0;
    for (i, p) in prompts.iter().enumerate() {
        let g = plain
            .generate_blocking(p, &opts(SpecOptions::ngram()), &mut |_| true)
            .unwrap();
        assert_eq!(g.ids, want[i], "prompt {i}: n-gram drafts");
        drafted += g.spec.drafted;
    }
    assert!(drafted > 0, "the n-gram drafter proposed nothing");

    let mut spec = common::uncached_engine(model(None, KvDtype::F32), tok.clone());
    spec.attach_draft(common::engine(
        model(Some(DType::Q4_0), KvDtype::F32),
        tok.clone(),
    ))
    .unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let g = spec
            .generate_blocking(p, &opts(SpecOptions::model()), &mut |_| true)
            .unwrap();
        assert_eq!(g.ids, want[i], "prompt {i}: a Q4_0 draft model");
        assert!(g.spec.drafted > 0, "prompt {i}: the draft model drafted");
    }

    // All at once through the steppable core, the prefix cache warm from a
    // first request: each gives its ids alone, the later ones from cache.
    let mut e = common::engine(model(None, KvDtype::F32), tok.clone());
    e.generate_blocking(&prompts[0], &opts(SpecOptions::default()), &mut |_| true)
        .unwrap();
    let mut ids = vec![Vec::new(); prompts.len()];
    let mut cached = vec![0; prompts.len()];
    let mut reqs = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let r = Request {
            prompt: Prompt::Ids(p.clone()),
            max_tokens: Some(16),
            ignore_eos: true,
            draft: Some(if i == 1 {
                Drafting::Ngram
            } else {
                Drafting::Off
            }),
            ..Default::default()
        };
        reqs.push(e.add_request(r).unwrap().0);
    }
    while e.has_work() {
        for o in e.step_blocking() {
            let i = reqs.iter().position(|&r| r == o.request()).unwrap();
            match o {
                Output::Token { token, .. } => ids[i].push(token.id),
                Output::Finished { finish, .. } => cached[i] = finish.cached_tokens,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(ids, want, "batched with a shared prefix");
    assert!(
        cached.iter().all(|&c| c >= 16),
        "prefix cache hits: {cached:?}"
    );
    assert_eq!(e.kv_pool().used_blocks(), 0, "every block back");
}
