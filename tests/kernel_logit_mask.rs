mod common;

use common::*;
use hearth::gpu::kernels::logit_mask::{
    logit_mask_ref, mask_words, LogitMask, MaskRow, MASKED_LOGIT,
};
use hearth::gpu::kernels::topk::TopK;
use hearth::gpu::GpuContext;

/// Random mask words (splitmix64), tail bits past the vocabulary included.
fn random_mask(words: usize, seed: u64) -> Vec<u32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..words)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as u32
        })
        .collect()
}

/// Runs the mask kernel on `rows` of logits; returns all rows after it.
fn run_mask(ctx: &GpuContext, rows: &[Vec<f32>], vocab: u32, masks: &[MaskRow<'_>]) -> Vec<f32> {
    let flat: Vec<f32> = rows.concat();
    let buf = ctx.buffer_from("logits", &flat);
    let mut mask = LogitMask::new(ctx, &buf, rows.len() as u32, vocab);
    mask.write(&ctx.queue, masks).unwrap();
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        mask.record(&mut pass);
    }
    ctx.queue.submit(Some(enc.finish()));
    let bytes = pollster::block_on(ctx.read_bytes(&buf, 0, flat.len() as u64 * 4)).unwrap();
    bytemuck::pod_collect_to_vec(&bytes)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn mask_matches_reference_bit_exact_at_odd_vocab_sizes() {
    let ctx = gpu();
    for &vocab in &[1u32, 31, 33, 1000, 49153] {
        let words = mask_words(vocab) as usize;
        let rows: Vec<Vec<f32>> = (0..4)
            .map(|r| rand_vec(vocab as usize, vocab as u64 * 10 + r))
            .collect();
        let masks: Vec<Vec<u32>> = (0..4)
            .map(|r| random_mask(words, vocab as u64 * 3 + r))
            .collect();
        // Rows 2 and 0 masked (out of order), rows 1 and 3 not.
        let list: Vec<MaskRow<'_>> = vec![(2, &masks[2]), (0, &masks[0])];
        let got = run_mask(&ctx, &rows, vocab, &list);
        let mut want = rows.clone();
        logit_mask_ref(&mut want[2], &masks[2]);
        logit_mask_ref(&mut want[0], &masks[0]);
        let want = want.concat();
        assert_eq!(bits(&got), bits(&want), "vocab {vocab}");
        // The test can fail: random masks do disallow tokens (except by chance at vocab 1).
        if vocab > 1 {
            assert!(got.contains(&MASKED_LOGIT), "vocab {vocab}: nothing masked");
        }
    }
}

#[test]
fn all_ones_mask_changes_nothing_and_tail_bits_are_ignored() {
    let ctx = gpu();
    let vocab = 33;
    let rows = vec![rand_vec(33, 1), rand_vec(33, 2)];
    // Word 1 allows token 32 only; its 31 tail bits are set too.
    let ones = [u32::MAX; 2];
    let got = run_mask(&ctx, &rows, vocab, &[(0, &ones[..]), (1, &ones[..])]);
    assert_eq!(bits(&got), bits(&rows.concat()));
}

#[test]
fn bad_mask_lists_are_refused() {
    let ctx = gpu();
    let buf = ctx.buffer_zeroed("logits", 2 * 40 * 4);
    let mut mask = LogitMask::new(&ctx, &buf, 2, 40);
    let m = [u32::MAX; 2];
    let err = |r: &[MaskRow<'_>]| {
        let mut mask = LogitMask::new(&ctx, &buf, 2, 40);
        mask.write(&ctx.queue, r).unwrap_err().to_string()
    };
    assert!(err(&[(0, &m[..1])]).contains("needs 2"));
    assert!(err(&[(2, &m[..])]).contains("masked row 2"));
    assert!(err(&[(1, &m[..]), (1, &m[..])]).contains("listed twice"));
    mask.write(&ctx.queue, &[(1, &m[..])]).unwrap();
    assert_eq!(mask.rows(), [1]);
}

#[test]
fn fully_masked_row_gives_no_nan_in_topk() {
    let ctx = gpu();
    let vocab = 1000u32;
    let flat = rand_vec(1000, 7);
    let buf = ctx.buffer_from("logits", &flat);
    let mut mask = LogitMask::new(&ctx, &buf, 1, vocab);
    let zeros = vec![0u32; mask_words(vocab) as usize];
    mask.write(&ctx.queue, &[(0, &zeros[..])]).unwrap();
    let topk = TopK::new(&ctx, &buf, 1, vocab, 4);
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        mask.record(&mut pass);
        topk.record(&mut pass, 1, 4);
    }
    ctx.queue.submit(Some(enc.finish()));
    let bytes =
        pollster::block_on(ctx.read_bytes(topk.output(), 0, topk.output_bytes_for(1, 4))).unwrap();
    let c = &topk.parse_output(&bytes, 1, 4)[0];
    assert_eq!(c.ids, [0, 1, 2, 3]);
    assert!(c.logits.iter().all(|&l| l == MASKED_LOGIT));
    assert!(!c.logsumexp.is_nan(), "logsumexp {}", c.logsumexp);
    assert!(c.logsumexp < -1e38, "logsumexp {}", c.logsumexp);
}
