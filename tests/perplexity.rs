//! `hearth perplexity`'s sliding-window scoring on the GPU against the same
//! recipe computed from the CPU reference forward pass's logits.

mod common;

use common::{gpu, gpu_model, tiny_file};
use hearth::engine::perplexity::log_prob;
use hearth::engine::{perplexity, top1_agreement};
use hearth::kv::KvDtype;
use hearth::model::forward::{ForwardOptions, GpuModel};
use hearth::reference::{RefKvCache, RefModel};

/// The sliding-window recipe on the reference model: windows of `window`
/// tokens every `stride`, each scoring the targets not scored before (a
/// window starts at most one token before its first target).
fn reference(rm: &RefModel, tokens: &[u32], window: usize, stride: usize) -> (f64, usize, usize) {
    let vocab = rm.config.vocab_size;
    let (mut nll, mut n, mut hits) = (0f64, 0usize, 0usize);
    let mut next = 1;
    let mut start = 0;
    while next < tokens.len() {
        let end = (start + window).min(tokens.len());
        let logits = rm
            .forward(&tokens[start..end], &mut RefKvCache::default())
            .unwrap();
        for (t, &target) in tokens.iter().enumerate().take(end).skip(next) {
            let row = t - 1 - start;
            let (lp, top) = log_prob(&logits[row * vocab..(row + 1) * vocab], target as usize);
            nll -= lp;
            hits += top as usize;
            n += 1;
        }
        next = end;
        // Every target keeps at least one token of context.
        start = (start + stride).min(next - 1);
    }
    ((nll / n as f64).exp(), n, hits)
}

/// The tiny model on the CPU reference and on the GPU (f32 KV), 12 rows per
/// step so that windows span several steps and KV blocks.
fn tiny_models() -> (RefModel, GpuModel) {
    let file = tiny_file("llama");
    let rm = RefModel::load(&file).unwrap();
    let opts = ForwardOptions {
        kv_memory: 1 << 20,
        kv_dtype: KvDtype::F32,
        max_step_tokens: 12,
        max_logit_rows: 12,
        ..Default::default()
    };
    (rm, gpu_model(gpu(), &file, opts))
}

#[test]
fn sliding_window_perplexity_matches_the_cpu_reference() {
    let (rm, mut m) = tiny_models();
    let tokens: Vec<u32> = (0..83u32).map(|i| (i * i * 7 + i * 3 + 1) % 40).collect();
    for (window, stride) in [(40, 16), (25, 25), (90, 45)] {
        let (want, n, hits) = reference(&rm, &tokens, window, stride);
        let mut last = 0;
        let got = pollster::block_on(perplexity(
            &mut m,
            &tokens,
            window,
            stride,
            &mut |done, total| {
                assert!(done > last && total == tokens.len() - 1);
                last = done;
            },
        ))
        .unwrap();
        assert_eq!(
            got.tokens,
            tokens.len() - 1,
            "window {window} stride {stride}"
        );
        assert_eq!(n, got.tokens);
        assert!(
            (got.perplexity - want).abs() < 1e-3 * want,
            "window {window} stride {stride}: {} vs {want}",
            got.perplexity
        );
        assert!(
            (got.top1 - hits as f64 / n as f64).abs() < 0.03,
            "top-1 {} vs {hits}/{n}",
            got.top1
        );
    }
    assert!(pollster::block_on(perplexity(&mut m, &tokens, 1, 1, &mut |_, _| {})).is_err());
    assert!(pollster::block_on(perplexity(&mut m, &tokens[..1], 8, 4, &mut |_, _| {})).is_err());
}

/// Top-1 agreement against a token stream built from the CPU reference's own
/// argmax choices, with every fourth choice deliberately replaced: the GPU
/// agrees exactly where the stream kept the reference's choice.
#[test]
fn top1_agreement_counts_the_positions_where_the_model_picks_the_stream_token() {
    let (rm, mut m) = tiny_models();
    let vocab = rm.config.vocab_size;
    let first = 9;
    let mut tokens: Vec<u32> = (0..first as u32).map(|i| (i * 11 + 3) % 40).collect();
    let mut kept = 0;
    for j in first..first + 24 {
        let logits = rm.forward(&tokens, &mut RefKvCache::default()).unwrap();
        let row = &logits[(j - 1) * vocab..j * vocab];
        let best = (0..vocab).fold(0, |b, i| if row[i] > row[b] { i } else { b });
        let (t, keep) = if j % 4 == 0 {
            ((best + 1) % vocab, false)
        } else {
            (best, true)
        };
        kept += keep as usize;
        tokens.push(t as u32);
    }
    let got = pollster::block_on(top1_agreement(&mut m, &tokens, first)).unwrap();
    assert_eq!(got, kept, "{tokens:?}");
    assert!(pollster::block_on(top1_agreement(&mut m, &tokens, 0)).is_err());
    assert!(pollster::block_on(top1_agreement(&mut m, &tokens, tokens.len())).is_err());
}
