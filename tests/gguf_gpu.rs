//! Tiny GGUF models (every weight type mixed inside one layer, llama's
//! interleaved RoPE and qwen2/qwen3's half-split RoPE, tied and untied) on the
//! GPU against the CPU reference on the same file.

mod common;

use common::{engine, gguf_writer, gpu, gpu_from, gpu_model, rand_vec, tiny_file, tokenizer_of};
use hearth::engine::{GenerateOptions, SamplingParams};
use hearth::gpu::GpuOptions;
use hearth::kv::KvDtype;
use hearth::model::forward::{ForwardOptions, GpuModel, SeqStep};
use hearth::model::gguf::GgufModel;
use hearth::reference::{RefKvCache, RefModel};

fn check(arch: &str, tied: bool, kv_dtype: KvDtype, tol: f32) {
    check_file(
        gguf_writer::tiny_model(arch, tied),
        arch,
        tied,
        kv_dtype,
        tol,
    );
}

fn check_file(file: gguf_writer::GgufWriter, arch: &str, tied: bool, kv_dtype: KvDtype, tol: f32) {
    check_file_on(GpuOptions::from_env(), file, arch, tied, kv_dtype, tol);
}

fn check_file_on(
    gpu: GpuOptions,
    file: gguf_writer::GgufWriter,
    arch: &str,
    tied: bool,
    kv_dtype: KvDtype,
    tol: f32,
) {
    let model = GgufModel::from_bytes(file.build()).unwrap();
    let prompt: Vec<u32> = (0..37).map(|i| (i * 7 + 3) % 40).collect();
    let rm = RefModel::load(&model).unwrap();
    // The reference stores K/V the way the GPU cache does (f32 stays exact).
    let want = rm.forward(&prompt, &mut RefKvCache::new(kv_dtype)).unwrap();
    // Chunks of 16 tokens: prefill spans several steps and KV blocks.
    let opts = ForwardOptions {
        kv_memory: 1 << 20,
        kv_dtype,
        max_step_tokens: 16,
        ..Default::default()
    };
    let mut m = gpu_model(gpu_from(&gpu), &model, opts);
    let mut pool = m.new_kv_pool();
    let blocks = pool.allocate(3).unwrap();
    let vocab = rm.config.vocab_size;
    for (i, chunk) in prompt.chunks(16).enumerate() {
        let c = pollster::block_on(m.step(&[SeqStep::new(chunk, (i * 16) as u32, &blocks)], 1))
            .unwrap();
        let got = pollster::block_on(m.last_logits(1)).unwrap();
        let row = i * 16 + chunk.len() - 1;
        let want_row = &want[row * vocab..(row + 1) * vocab];
        let worst = got
            .iter()
            .zip(want_row)
            .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        assert!(
            worst < tol,
            "{arch} tied={tied} {kv_dtype:?} chunk {i}: max logit error {worst} (largest logit {})",
            want_row.iter().fold(0f32, |a, v| a.max(v.abs()))
        );
        assert_eq!(
            c[0].ids[0],
            hearth::reference::argmax(want_row),
            "{arch}: argmax"
        );
    }
    pool.free(&blocks).unwrap();
    let mut e = engine(m, tokenizer_of(&model));
    let opts = GenerateOptions {
        sampling: SamplingParams::greedy(),
        max_tokens: 10,
        ignore_eos: true,
        ..Default::default()
    };
    let g = e.generate_blocking(&prompt, &opts, &mut |_| true).unwrap();
    // f16 prompt tiles shift logits by ~0.02 (see llama_f16_prompt_tiles):
    // enough to flip one of this random model's near-ties among 10 tokens.
    if kv_dtype == KvDtype::F32 && gpu.tiled_f16 != Some(true) {
        assert_eq!(
            g.ids,
            rm.generate_greedy(&prompt, 10, &[]).unwrap(),
            "{arch}: greedy ids"
        );
    }
}

/// A feed-forward width that is not a multiple of 4 keeps SwiGLU as its own
/// pass (the down projection cannot read it fused as vec4s); f16 matrices,
/// since quantized rows need whole 32-element blocks.
#[test]
fn odd_feed_forward_width_takes_the_separate_swiglu_pass() {
    let mut w = gguf_writer::GgufWriter::new();
    gguf_writer::tiny_metadata_ffn(&mut w, "llama", 90);
    for (i, (name, shape)) in
        gguf_writer::tiny_tensors_ffn("llama", false, gguf_writer::HEAD_DIM, 90)
            .into_iter()
            .enumerate()
    {
        let n: usize = shape.iter().product();
        let dtype = if shape.len() == 1 {
            hearth::model::DType::F32
        } else {
            hearth::model::DType::F16
        };
        w.tensor(&name, &shape, dtype, &rand_vec(n, i as u64 + 1));
    }
    check_file(w, "llama", false, KvDtype::F32, 2e-3);
}

/// Q5_0 and Q5_1 matrices (the tiny model's rows are too short for the
/// K-quants' 256-element blocks), random blocks with small scales, against
/// the reference.
#[test]
fn llama_q5_weights() {
    use gguf_writer::*;
    let mut w = GgufWriter::new();
    tiny_metadata(&mut w, "llama");
    // Random bytes for codes and scales (about 55 KB are taken).
    let noise = rand_vec(1 << 17, 0x9e37);
    let mut at = 0;
    let mut byte = move || {
        at += 1;
        ((noise[at - 1] + 1.0) * 127.9) as u8
    };
    for (i, (name, shape)) in tiny_tensors("llama", false).into_iter().enumerate() {
        let n: usize = shape.iter().product();
        if shape.len() == 1 {
            w.tensor(
                &name,
                &shape,
                hearth::model::DType::F32,
                &rand_vec(n, i as u64 + 1),
            );
            continue;
        }
        let (dtype, id, bb, scales) = if i % 2 == 0 {
            (hearth::model::DType::Q5_0, 6, 22, 1)
        } else {
            (hearth::model::DType::Q5_1, 7, 24, 2)
        };
        assert_eq!(dtype.block_bytes(), bb);
        let mut data = Vec::new();
        for _ in 0..n / 32 {
            let mut block: Vec<u8> = (0..bb).map(|_| byte()).collect();
            for s in 0..scales {
                // d around 0.01, m around -0.15: weights of about ±0.15.
                let v = if s == 0 { 0.01 } else { -0.15 } * (0.5 + byte() as f32 / 255.0);
                block[2 * s..2 * s + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
            }
            data.extend(block);
        }
        let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        w.raw_tensor(&name, &shape, id, data);
    }
    check_file(w, "llama", false, KvDtype::F32, 2e-2);
}

/// Prompt chunks through the f16-math tiled kernel (the default on GPUs
/// with shader-f16; forced here, since CPU adapters default to f32) for the
/// tiny model's float matrices, against the f32 reference. Its random
/// weights cancel heavily (logits ~7 from sums of terms far larger), so
/// rounding x and w to f16 moves logits by up to ~0.02 here (f32 math:
/// under 1e-3); a wrong tile or offset moves them by whole units.
#[test]
fn llama_f16_prompt_tiles() {
    let gpu = GpuOptions {
        tiled_f16: Some(true),
        ..GpuOptions::from_env()
    };
    check_file_on(
        gpu,
        gguf_writer::tiny_model("llama", false),
        "llama",
        false,
        KvDtype::F32,
        5e-2,
    );
}

#[test]
fn llama_untied_f32_kv() {
    check("llama", false, KvDtype::F32, 1e-3);
}

#[test]
fn llama_tied_f16_kv() {
    // The reference rounds K/V to f16 too (its f32 cache is 3.5e-3 away).
    check("llama", true, KvDtype::F16, 2e-3);
}

/// Quantized KV on heads of 32 and 64: GPU logits against the reference that
/// stores the same q8/q4 rows (lavapipe: 1e-5 apart; against the f32-cache
/// reference q8 is 0.16 away). The margin is for a GPU whose K/V differ from
/// the CPU's by enough f32 rounding to put an element on the neighbouring code.
#[test]
fn llama_quantized_kv_matches_the_quantized_reference() {
    for (dtype, tol) in [(KvDtype::Q8, 2e-3), (KvDtype::Q4, 2e-3)] {
        check_file(
            gguf_writer::tiny_model_hd("llama", false, 32),
            "llama",
            false,
            dtype,
            tol,
        );
        check_file(
            gguf_writer::tiny_model_hd("qwen2", true, 64),
            "qwen2",
            true,
            dtype,
            tol,
        );
        // Mixture-of-experts layers beside the quantized cache.
        check_file(
            common::moe::tiny_moe_gguf_hd(32),
            "llama+experts",
            false,
            dtype,
            tol,
        );
    }
}

#[test]
fn quantized_kv_refuses_heads_that_are_not_whole_groups() {
    let model = tiny_file("llama");
    let ctx = gpu();
    for kv_dtype in [KvDtype::Q8, KvDtype::Q4] {
        let opts = ForwardOptions {
            kv_memory: 1 << 20,
            kv_dtype,
            ..Default::default()
        };
        let e = GpuModel::load(ctx.clone(), &model, opts, &mut |_| {})
            .err()
            .expect("head_dim 16 refused");
        assert!(e.to_string().contains("head_dim 16"), "{e}");
    }
}

#[test]
fn qwen2_bias_f32_kv() {
    check("qwen2", false, KvDtype::F32, 1e-3);
}

#[test]
fn qwen3_qk_norm_f32_kv() {
    check("qwen3", true, KvDtype::F32, 1e-3);
}

/// Repetition, presence and frequency penalties on the GPU logits against the
/// CPU penalty reference applied to the reference logits.
#[test]
fn penalties_match_reference() {
    use hearth::gpu::kernels::topk::penalties_ref;
    let model = tiny_file("llama");
    let prompt: Vec<u32> = vec![3, 9, 9, 27, 5, 9, 14];
    let rm = RefModel::load(&model).unwrap();
    let want = rm.forward(&prompt, &mut RefKvCache::default()).unwrap();
    let vocab = rm.config.vocab_size;
    let mut last = want[(prompt.len() - 1) * vocab..].to_vec();
    let counts: Vec<(u32, u32)> = vec![(3, 1), (5, 1), (9, 3), (14, 1), (27, 1)];
    penalties_ref(&mut last, &counts, 1.3, 0.4, 0.25);
    let opts = ForwardOptions {
        kv_memory: 1 << 20,
        kv_dtype: KvDtype::F32,
        ..Default::default()
    };
    let mut m = gpu_model(gpu(), &model, opts);
    let blocks = m.new_kv_pool().allocate(1).unwrap();
    let c = pollster::block_on(m.step(
        &[SeqStep {
            tokens: &prompt,
            start: 0,
            blocks: &blocks,
            logit_rows: 1,
            generated: false,
            penalty_counts: &counts,
            repetition_penalty: 1.3,
            presence_penalty: 0.4,
            frequency_penalty: 0.25,
            logit_masks: None,
            pool_rows: None,
        }],
        vocab,
    ))
    .unwrap();
    let c = &c[0];
    assert_eq!(c.ids.len(), vocab);
    for (&id, &l) in c.ids.iter().zip(&c.logits) {
        assert!(
            (l - last[id as usize]).abs() < 1e-3,
            "id {id}: {l} vs {}",
            last[id as usize]
        );
    }
    // The penalised ids really moved (the test would pass vacuously otherwise).
    let plain = &want[(prompt.len() - 1) * vocab..];
    assert!((plain[9] - last[9]).abs() > 0.1);
}

/// `--dtype q4_0` on a GGUF with mixed types: float matrices are quantized,
/// already-quantized ones keep their form; `--dtype f16` converts every
/// matrix (quantized ones dequantized). The GPU matches the reference on the
/// same converted view.
#[test]
fn dtype_converts_float_matrices_and_dequantizes_to_floats() {
    for dtype in [hearth::model::DType::Q4_0, hearth::model::DType::F16] {
        dtype_conversion_matches_reference(dtype);
    }
}

fn dtype_conversion_matches_reference(target: hearth::model::DType) {
    use hearth::model::convert::ConvertedSource;
    use hearth::model::WeightSource;
    let model = tiny_file("qwen2");
    let conv = ConvertedSource::new(&model, target);
    // Q4_1 and Q8_0 tensors pass through, F16/BF16/F32 matrices become Q4_0, vectors stay F32.
    for name in [
        "blk.0.attn_q.weight",
        "blk.0.attn_k.weight",
        "blk.0.attn_v.weight",
        "blk.0.attn_output.weight",
        "blk.0.attn_norm.weight",
    ] {
        let (src, dst) = (
            model.tensor(name).unwrap().dtype,
            conv.tensor(name).unwrap().dtype,
        );
        let vector = model.tensor(name).unwrap().shape.len() == 1;
        let want = if vector || (src.is_quantized() && target.is_quantized()) {
            src
        } else {
            target
        };
        assert_eq!(dst, want, "{name}: {src:?}");
    }
    let prompt: Vec<u32> = (0..9).map(|i| (i * 5 + 1) % 40).collect();
    let rm = RefModel::load(&conv).unwrap();
    let want = rm.forward(&prompt, &mut RefKvCache::default()).unwrap();
    let opts = ForwardOptions {
        dtype: Some(target),
        kv_memory: 1 << 20,
        kv_dtype: KvDtype::F32,
        ..Default::default()
    };
    let mut m = gpu_model(gpu(), &model, opts);
    let blocks = m.new_kv_pool().allocate(1).unwrap();
    pollster::block_on(m.step(&[SeqStep::new(&prompt, 0, &blocks)], 1)).unwrap();
    let got = pollster::block_on(m.last_logits(1)).unwrap();
    let vocab = rm.config.vocab_size;
    let want_row = &want[(prompt.len() - 1) * vocab..];
    let worst = got
        .iter()
        .zip(want_row)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    assert!(worst < 1e-3, "{target:?}: max logit error {worst}");
}

/// Mask words allowing the tokens `allowed(v)` of a vocabulary of `vocab`.
fn mask_of(vocab: usize, allowed: impl Fn(u32) -> bool) -> Vec<u32> {
    let mut m = vec![0u32; vocab.div_ceil(32)];
    for v in (0..vocab as u32).filter(|&v| allowed(v)) {
        m[v as usize / 32] |= 1 << (v % 32);
    }
    m
}

fn cand_bits(c: &hearth::engine::Candidates) -> (Vec<u32>, Vec<u32>, u32) {
    (
        c.ids.clone(),
        c.logits.iter().map(|l| l.to_bits()).collect(),
        c.logsumexp.to_bits(),
    )
}

fn tiny_for_masks() -> GpuModel {
    let opts = ForwardOptions {
        kv_memory: 1 << 20,
        kv_dtype: KvDtype::F32,
        max_seqs: 2,
        max_logit_rows: 4,
        ..Default::default()
    };
    common::tiny_gpu_model("llama", gpu(), opts)
}

/// Masked decoding: all-ones masks change nothing; a mask allowing S returns
/// exactly the best of S by the unmasked logits, with logprobs normalised
/// over S only (the documented choice of `SeqStep::logit_masks`).
#[test]
fn logit_masks_restrict_candidates_to_the_allowed_tokens() {
    let mut m = tiny_for_masks();
    let vocab = m.config.vocab_size;
    let k = hearth::types::MAX_CANDIDATES;
    let blocks = m.new_kv_pool().allocate(1).unwrap();
    let prompt: Vec<u32> = vec![3, 9, 1, 27, 5];
    let step = |m: &mut GpuModel, mask: Option<&[u32]>| {
        let part = SeqStep {
            logit_masks: mask,
            ..SeqStep::new(&prompt, 0, &blocks)
        };
        pollster::block_on(m.step(&[part], k)).unwrap().remove(0)
    };
    let plain = step(&mut m, None);
    let logits = pollster::block_on(m.last_logits(1)).unwrap();

    let ones = mask_of(vocab, |_| true);
    assert_eq!(cand_bits(&step(&mut m, Some(&ones))), cand_bits(&plain));

    // S: every third token and the last one, but not the unmasked best.
    let best = plain.ids[0];
    let allowed = |v: u32| (v % 3 == 1 || v as usize == vocab - 1) && v != best;
    let mask = mask_of(vocab, allowed);
    let got = step(&mut m, Some(&mask));
    let mut want: Vec<u32> = (0..vocab as u32).filter(|&v| allowed(v)).collect();
    let lse_s = {
        let mx = want
            .iter()
            .map(|&v| logits[v as usize] as f64)
            .fold(f64::MIN, f64::max);
        mx + want
            .iter()
            .map(|&v| (logits[v as usize] as f64 - mx).exp())
            .sum::<f64>()
            .ln()
    };
    want.sort_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    want.truncate(k);
    assert!(got.ids.iter().all(|&v| allowed(v)), "ids {:?}", got.ids);
    assert_eq!(got.ids, want, "the allowed tokens, best first");
    let want_logits: Vec<u32> = want.iter().map(|&v| logits[v as usize].to_bits()).collect();
    let got_logits: Vec<u32> = got.logits.iter().map(|l| l.to_bits()).collect();
    assert_eq!(got_logits, want_logits);
    assert!(
        (got.logsumexp as f64 - lse_s).abs() < 1e-4 * lse_s.abs().max(1.0),
        "logsumexp {} vs {lse_s} over the allowed tokens",
        got.logsumexp
    );
    assert!(
        (plain.logsumexp as f64 - lse_s).abs() > 1e-3,
        "the test needs a mask that changes the normalisation"
    );

    // A mask allowing fewer tokens than k returns only those.
    let two = mask_of(vocab, |v| v == 2 || v == 5);
    let got = step(&mut m, Some(&two));
    let mut ids = got.ids.clone();
    ids.sort();
    assert_eq!(ids, [2, 5]);

    // Bad masks are refused with a clear error, not a panic.
    let short = vec![u32::MAX; ones.len() - 1];
    let part = SeqStep {
        logit_masks: Some(&short),
        ..SeqStep::new(&prompt, 0, &blocks)
    };
    let e = pollster::block_on(m.step(&[part], k))
        .unwrap_err()
        .to_string();
    assert!(e.contains("logit masks of"), "{e}");
    let none = mask_of(vocab, |_| false);
    let part = SeqStep {
        logit_masks: Some(&none),
        ..SeqStep::new(&prompt, 0, &blocks)
    };
    let e = pollster::block_on(m.step(&[part], k))
        .unwrap_err()
        .to_string();
    assert!(e.contains("allows no token"), "{e}");
    // And the model still works unmasked afterwards, exactly as before.
    assert_eq!(cand_bits(&step(&mut m, None)), cand_bits(&plain));
}

/// Batch invariance: masking one sequence of a step leaves the other's
/// candidates bit-identical to running it alone; verification rows of one
/// part each take their own mask.
#[test]
fn masking_one_sequence_leaves_the_other_bit_identical() {
    let mut m = tiny_for_masks();
    let vocab = m.config.vocab_size;
    let k = 40;
    let mut pool = m.new_kv_pool();
    let (ba, bb) = (pool.allocate(1).unwrap(), pool.allocate(1).unwrap());
    let (pa, pb): (Vec<u32>, Vec<u32>) = (vec![4, 8, 15, 16], vec![23, 12, 7]);
    let alone = pollster::block_on(m.step(&[SeqStep::new(&pa, 0, &ba)], k)).unwrap();
    let mask = mask_of(vocab, |v| v % 2 == 0);
    for masked_first in [false, true] {
        let a = SeqStep::new(&pa, 0, &ba);
        let b = SeqStep {
            logit_masks: Some(&mask),
            ..SeqStep::new(&pb, 0, &bb)
        };
        let parts = if masked_first { [b, a] } else { [a, b] };
        let got = pollster::block_on(m.step(&parts, k)).unwrap();
        let (ga, gb) = if masked_first {
            (&got[1], &got[0])
        } else {
            (&got[0], &got[1])
        };
        assert_eq!(
            cand_bits(ga),
            cand_bits(&alone[0]),
            "masked first: {masked_first}"
        );
        assert!(gb.ids.iter().all(|v| v % 2 == 0), "{:?}", gb.ids);
        assert_eq!(gb.ids.len(), k.min(vocab.div_ceil(2)));
    }

    // Two logit rows of one part, each with its own mask: row 0 only odd
    // tokens, row 1 unconstrained (all ones) equals the unmasked row.
    let both = SeqStep {
        logit_rows: 2,
        ..SeqStep::new(&pa, 0, &ba)
    };
    let plain = pollster::block_on(m.step(&[both], k)).unwrap();
    let masks = [mask_of(vocab, |v| v % 2 == 1), mask_of(vocab, |_| true)].concat();
    let both = SeqStep {
        logit_rows: 2,
        logit_masks: Some(&masks),
        ..SeqStep::new(&pa, 0, &ba)
    };
    let got = pollster::block_on(m.step(&[both], k)).unwrap();
    assert!(got[0].ids.iter().all(|v| v % 2 == 1), "{:?}", got[0].ids);
    assert_eq!(cand_bits(&got[1]), cand_bits(&plain[1]));
}
