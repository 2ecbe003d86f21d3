//! Embeddings through the engine (`Request::embedding`, `Engine::embed`).
//! Oracles: sentence-transformers' vectors for tiny random models, one per
//! pooling (`tests/fixtures/embed/`, written by
//! `tests/fixtures/gen_embedding_fixtures.py`); the CPU reference's hidden
//! states for GGUF `pooling_type`; and the invariants batched == one by one
//! and embeddings beside generation == each alone.

mod common;

use std::path::{Path, PathBuf};

use common::gguf_writer::{tiny_model, Val};
use common::{gpu, rand_vec};
use hearth::engine::Output;
use hearth::kv::KvDtype;
use hearth::model::forward::ForwardOptions;
use hearth::model::gguf::GgufModel;
use hearth::reference::{RefKvCache, RefModel};
use hearth::text::vocab::TokenizerSpec;
use hearth::text::Tokenizer;
use hearth::{
    Engine, EngineConfig, HearthError, Pooling, PoolingType, Prompt, Request, SamplingParams,
};
use serde_json::Value;

/// Every case the script writes (`fixture_dirs_are_all_tested` keeps them in step).
const CASES: &[&str] = &["qwen3_last_norm", "llama_mean", "qwen2_cls_norm"];

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/embed")
        .join(case)
}

fn opts(max_step_tokens: u32, kv_dtype: KvDtype) -> ForwardOptions {
    ForwardOptions {
        kv_memory: 4 << 20,
        kv_dtype,
        max_step_tokens,
        max_seqs: 8,
        max_logit_rows: 8,
        ..Default::default()
    }
}

fn open(dir: &Path, o: ForwardOptions) -> Engine {
    let loaded = hearth::model::load::open(dir).unwrap();
    Engine::from_loaded(gpu(), loaded, o, &mut |_| {}).unwrap()
}

struct Golden {
    normalize: bool,
    inputs: Vec<String>,
    input_ids: Vec<Vec<u32>>,
    embeddings: Vec<Vec<f32>>,
}

fn golden(case: &str) -> Golden {
    let text = std::fs::read_to_string(fixture(case).join("golden.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let arr = |k: &str| v[k].as_array().unwrap().clone();
    Golden {
        normalize: v["normalize"].as_bool().unwrap(),
        inputs: arr("inputs")
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect(),
        input_ids: serde_json::from_value(v["input_ids"].clone()).unwrap(),
        embeddings: serde_json::from_value(v["embeddings"].clone()).unwrap(),
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

/// `got` is `want` up to float error: cosine above 0.9999 and every
/// element within `rtol` of the largest |element| (the goldens keep 6
/// significant digits; a wrong pooling, norm or row is off by far more).
fn assert_matches(got: &[f32], want: &[f32], rtol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f32, |m, &x| m.max(x.abs()));
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0f32, f32::max);
    let cos = cosine(got, want);
    assert!(
        cos > 0.9999 && worst <= rtol * scale,
        "{what}: cosine {cos}, max abs diff {worst} (scale {scale}, tol {})",
        rtol * scale
    );
}

fn texts(inputs: &[String]) -> Vec<Prompt> {
    inputs.iter().map(|t| Prompt::Text(t.clone())).collect()
}

#[test]
fn fixture_dirs_are_all_tested() {
    let mut dirs: Vec<String> = std::fs::read_dir(fixture(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    dirs.sort();
    let mut cases: Vec<String> = CASES.iter().map(|s| s.to_string()).collect();
    cases.sort();
    assert_eq!(dirs, cases);
}

#[test]
fn sentence_transformers_directories_declare_their_pooling() {
    let want = [
        ("qwen3_last_norm", PoolingType::Last, true),
        ("llama_mean", PoolingType::Mean, false),
        ("qwen2_cls_norm", PoolingType::Cls, true),
    ];
    for (case, kind, normalize) in want {
        let loaded = hearth::model::load::open(&fixture(case)).unwrap();
        assert_eq!(
            loaded.weights.config().pooling,
            Some(Pooling { kind, normalize }),
            "{case}"
        );
        assert_eq!(golden(case).normalize, normalize, "{case}");
    }
}

/// Every case, batched in one engine, with an f32 KV cache: the vectors
/// sentence-transformers computed, from the same token ids.
#[test]
fn embeddings_match_sentence_transformers() {
    for case in CASES {
        let g = golden(case);
        let mut e = open(&fixture(case), opts(256, KvDtype::F32));
        for (text, ids) in g.inputs.iter().zip(&g.input_ids) {
            let got = e.prompt_ids(&Prompt::Text(text.clone())).unwrap();
            assert_eq!(&got, ids, "{case}: token ids of {text:?}");
        }
        let out = e.embed_blocking(&texts(&g.inputs)).unwrap();
        assert_eq!(out.len(), g.inputs.len());
        for (i, (o, want)) in out.iter().zip(&g.embeddings).enumerate() {
            assert_eq!(o.prompt_tokens, g.input_ids[i].len());
            assert_matches(&o.embedding, want, 2e-4, &format!("{case} input {i}"));
            if g.normalize {
                assert!(
                    (norm(&o.embedding) - 1.0).abs() < 1e-5,
                    "{case} {i}: not unit length"
                );
            }
        }
        assert_eq!(e.stats().kv_used, 0, "{case}: blocks left after embedding");
    }
}

/// Prompts longer than a step (prefilled in chunks, the mean summed across
/// them) and the default f16 KV cache still give the goldens.
#[test]
fn chunked_prefill_and_f16_kv_keep_the_goldens() {
    for case in CASES {
        let g = golden(case);
        assert!(
            g.input_ids.iter().any(|ids| ids.len() > 3 * 16),
            "{case}: no long input"
        );
        let mut e = open(&fixture(case), opts(16, KvDtype::F16));
        let out = e.embed_blocking(&texts(&g.inputs)).unwrap();
        for (i, (o, want)) in out.iter().zip(&g.embeddings).enumerate() {
            assert_matches(
                &o.embedding,
                want,
                3e-3,
                &format!("{case} chunked input {i}"),
            );
        }
    }
}

#[test]
fn batched_equals_one_by_one() {
    for case in CASES {
        let g = golden(case);
        let mut e = open(&fixture(case), opts(256, KvDtype::F16));
        let batch = e.embed_blocking(&texts(&g.inputs)).unwrap();
        for (i, t) in g.inputs.iter().enumerate() {
            let alone = e.embed_blocking(&[Prompt::Text(t.clone())]).unwrap();
            assert_eq!(alone[0], batch[i], "{case}: input {i} alone differs");
        }
    }
}

/// Embedding requests batched beside a generation: the generation's
/// tokens are those it makes alone, and the vectors those made alone.
#[test]
fn embeddings_beside_generation_disturb_nothing() {
    let case = "llama_mean";
    let g = golden(case);
    let mut e = open(&fixture(case), opts(64, KvDtype::F16));
    let gen = || {
        let mut r = Request::new(Prompt::Text("The hearth is the heart".into()));
        r.max_tokens = Some(12);
        r.ignore_eos = true;
        r.sampling = SamplingParams::default();
        r
    };
    let alone = e.generate_request_blocking(gen(), &mut |_| true).unwrap();
    let alone_vecs = e.embed_blocking(&texts(&g.inputs)).unwrap();

    let (gid, _) = e.add_request(gen()).unwrap();
    // Start the generation, then add the embeddings while it decodes.
    let mut tokens = Vec::new();
    for o in e.step_blocking() {
        if let Output::Token { token, .. } = o {
            tokens.push(token.id);
        }
    }
    let mut emb_ids = Vec::new();
    for t in &g.inputs {
        emb_ids.push(
            e.add_request(Request::embedding(Prompt::Text(t.clone())))
                .unwrap()
                .0,
        );
    }
    let mut vecs = vec![None; emb_ids.len()];
    while e.has_work() {
        for o in e.step_blocking() {
            match o {
                Output::Token { request, token, .. } if request == gid => tokens.push(token.id),
                Output::Embedding { request, embedding } => {
                    let i = emb_ids.iter().position(|&id| id == request).unwrap();
                    vecs[i] = Some(embedding);
                }
                Output::Failed { error, .. } => panic!("{error}"),
                _ => {}
            }
        }
    }
    assert_eq!(tokens, alone.ids, "generation beside embeddings");
    for (i, v) in vecs.into_iter().enumerate() {
        // The decode row moves the long input's chunk boundaries, and its
        // mean is summed per chunk: equal up to rounding, not bit for bit.
        let v = v.unwrap_or_else(|| panic!("embedding {i} never came"));
        assert_matches(
            &v,
            &alone_vecs[i].embedding,
            1e-5,
            &format!("embedding {i}"),
        );
    }
    assert_eq!(e.stats().kv_used, 0);
}

/// A tiny GGUF model of `arch` declaring `pooling_type`.
fn gguf_with_pooling(arch: &str, pooling_type: Option<u32>) -> GgufModel {
    let mut w = tiny_model(arch, false);
    if let Some(p) = pooling_type {
        w.kv(&format!("{arch}.pooling_type"), Val::U32(p));
    }
    GgufModel::from_bytes(w.build()).unwrap()
}

fn gguf_engine(file: &GgufModel, cfg: EngineConfig) -> Engine {
    let tok = Tokenizer::from_spec(&TokenizerSpec::Gguf(file.vocab().unwrap())).unwrap();
    let o = ForwardOptions {
        kv_dtype: KvDtype::F32,
        ..opts(16, KvDtype::F32)
    };
    let m = hearth::model::forward::GpuModel::load(gpu(), file, o, &mut |_| {}).unwrap();
    Engine::new(m, tok, None, String::new(), cfg)
}

/// GGUF `pooling_type` (mean, cls, last; always normalized, as llama.cpp
/// does) against the CPU reference's hidden states pooled by hand.
#[test]
fn gguf_pooling_types_match_the_cpu_reference() {
    let prompts: Vec<Vec<u32>> = [5usize, 23, 40]
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            rand_vec(n, 90 + i as u64)
                .iter()
                .map(|x| 1 + ((x + 1.0) * 19.0) as u32)
                .collect()
        })
        .collect();
    for (arch, ty, kind) in [
        ("llama", 1, PoolingType::Mean),
        ("qwen2", 2, PoolingType::Cls),
        ("qwen3", 3, PoolingType::Last),
    ] {
        let file = gguf_with_pooling(arch, Some(ty));
        let want_pooling = Pooling {
            kind,
            normalize: true,
        };
        assert_eq!(
            hearth::model::WeightSource::config(&file).pooling,
            Some(want_pooling)
        );
        let reference = RefModel::load(&file).unwrap();
        let h = reference.config.hidden_size;
        let mut e = gguf_engine(&file, EngineConfig::default());
        let inputs: Vec<Prompt> = prompts.iter().map(|p| Prompt::Ids(p.clone())).collect();
        let out = e.embed_blocking(&inputs).unwrap();
        for (p, o) in prompts.iter().zip(&out) {
            let hs = reference
                .hidden_states(p, &mut RefKvCache::new(KvDtype::F32))
                .unwrap();
            let rows: Vec<&[f32]> = hs.chunks(h).collect();
            let mut want: Vec<f32> = match kind {
                PoolingType::Mean => (0..h)
                    .map(|c| rows.iter().map(|r| r[c]).sum::<f32>() / rows.len() as f32)
                    .collect(),
                PoolingType::Cls => rows[0].to_vec(),
                _ => rows[rows.len() - 1].to_vec(),
            };
            hearth::engine::embedding::l2_normalize(&mut want);
            assert_matches(
                &o.embedding,
                &want,
                2e-3,
                &format!("{arch} {kind:?} n={}", p.len()),
            );
        }
    }
}

#[test]
fn a_model_without_pooling_is_refused_unless_one_is_chosen() {
    let file = gguf_with_pooling("llama", None);
    let mut e = gguf_engine(&file, EngineConfig::default());
    let input = [Prompt::Ids(vec![3, 4, 5])];
    let err = e.embed_blocking(&input).unwrap_err();
    assert!(
        matches!(&err, HearthError::Unsupported(m) if m.contains("declares no pooling") && m.contains("--pooling")),
        "{err}"
    );
    // The override: last token, normalized (the model says nothing else).
    let cfg = EngineConfig {
        pooling: Some(PoolingType::Last),
        ..Default::default()
    };
    let mut forced = gguf_engine(&file, cfg);
    let got = forced.embed_blocking(&input).unwrap();
    let declared = gguf_with_pooling("llama", Some(3));
    let want = gguf_engine(&declared, EngineConfig::default())
        .embed_blocking(&input)
        .unwrap();
    assert_eq!(got, want);
    let bad = gguf_with_pooling("llama", Some(4));
    let err = gguf_engine(&bad, EngineConfig::default())
        .embed_blocking(&input)
        .unwrap_err();
    assert!(err.to_string().contains("rank"), "{err}");
}

#[test]
fn bad_inputs_are_refused_naming_the_input_and_nothing_else_breaks() {
    let file = gguf_with_pooling("llama", Some(1));
    let mut e = gguf_engine(&file, EngineConfig::default());
    let field = |r: hearth::Result<Vec<hearth::Embedded>>| match r {
        Err(HearthError::InvalidField { field, message }) => format!("{field}: {message}"),
        other => panic!("expected an invalid field, got {other:?}"),
    };
    let context = hearth::model::WeightSource::config(&file).max_position_embeddings;
    let long = field(e.embed_blocking(&[Prompt::Ids(vec![3; context + 1])]));
    assert!(
        long.starts_with("input:") && long.contains("more than the model's context"),
        "{long}"
    );
    let empty = field(e.embed_blocking(&[Prompt::Text(String::new())]));
    assert!(empty.contains("empty"), "{empty}");
    let chat = field(e.embed_blocking(&[Prompt::chat_user("hi")]));
    assert!(chat.starts_with("input:"), "{chat}");
    // A good input after a bad one in the same call: the call fails, nothing leaks.
    let mixed = e.embed_blocking(&[Prompt::Ids(vec![3, 4]), Prompt::Ids(vec![])]);
    assert!(mixed.is_err());
    assert_eq!(e.stats().kv_used, 0);
    assert!(!e.has_work());
    // A context-filling input is fine: nothing is generated after it.
    let full = e.embed_blocking(&[Prompt::Ids(vec![3; context])]).unwrap();
    assert_eq!(full[0].prompt_tokens, context);
}
