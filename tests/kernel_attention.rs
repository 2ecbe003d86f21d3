//! KV write + paged attention on the GPU vs contiguous causal attention on the
//! CPU: sequences stored in shuffled, non-contiguous blocks, across block
//! boundaries, several sequences per step, chunked prefill and long decode;
//! every KV dtype, the quantized ones against the reference fed the
//! CPU-dequantized K/V.
mod common;

use common::*;
use hearth::gpu::kernels::attention::{Attention, AttnScratch, AttnShape};
use hearth::gpu::kernels::batch::{BatchBuffers, StepMeta};
use hearth::gpu::kernels::kv_write::KvWrite;
use hearth::gpu::{readback_f32, GpuContext};
use hearth::kv::quant::round_rows;
use hearth::kv::reference::causal_attention_ref;
use hearth::kv::KvDtype;

const BS: u32 = 16;

/// Deterministic permutation of 0..n (so block ids are scattered and out of order).
fn shuffled(n: u32, seed: u64) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n).collect();
    let r = rand_vec(n as usize, seed);
    for i in (1..n as usize).rev() {
        let j = (((r[i] + 1.0) * 0.5 * (i + 1) as f32) as usize).min(i);
        v.swap(i, j);
    }
    v
}

struct Case {
    n_heads: u32,
    n_kv: u32,
    hd: u32,
    dtype: KvDtype,
    /// (positions already cached, total length) per sequence.
    seqs: Vec<(u32, u32)>,
    splits: Option<u32>,
}

fn run(ctx: &GpuContext, c: &Case) {
    attend(ctx, c, false);
}

/// The step's attention output, rows in order; checked against the CPU
/// reference unless `alone` (each sequence in its own step, unchecked).
fn attend(ctx: &GpuContext, c: &Case, alone: bool) -> Vec<f32> {
    let shape = AttnShape {
        n_heads: c.n_heads,
        n_kv_heads: c.n_kv,
        head_dim: c.hd,
        block_size: BS,
        kv_dtype: c.dtype,
        max_tokens: c.seqs.iter().map(|s| s.1).sum(),
    };
    let stride = shape.row_stride() as usize;
    let (q_dim, kv_dim) = ((c.n_heads * c.hd) as usize, (c.n_kv * c.hd) as usize);
    let n_blocks: u32 = c.seqs.iter().map(|s| s.1.div_ceil(BS)).sum::<u32>() + 3;
    let perm = shuffled(n_blocks, c.hd as u64 * 31 + c.n_heads as u64);
    let mut tables = Vec::new();
    let mut next = 0usize;
    for &(_, len) in &c.seqs {
        let nb = len.div_ceil(BS) as usize;
        tables.push(perm[next..next + nb].to_vec());
        next += nb;
    }
    let rows: Vec<Vec<f32>> = c
        .seqs
        .iter()
        .enumerate()
        .map(|(i, s)| rand_vec(s.1 as usize * stride, 1000 + i as u64 + c.hd as u64))
        .collect();

    let batch = BatchBuffers::new(ctx, shape.max_tokens, c.seqs.len() as u32, n_blocks, BS);
    let qkv = ctx.buffer_zeroed("qkv", (shape.max_tokens as usize * stride * 4) as u64);
    let cache_bytes = (n_blocks * BS * c.n_kv) as u64 * c.dtype.row_bytes(c.hd);
    let kc = ctx.buffer_zeroed("k", cache_bytes);
    let vc = ctx.buffer_zeroed("v", cache_bytes);
    let out = ctx.buffer_zeroed("out", shape.max_tokens as u64 * q_dim as u64 * 4);
    let write = KvWrite::new(ctx, &shape, &batch, &qkv, &kc, &vc).unwrap();
    let attn = Attention::new(
        ctx,
        &shape,
        &batch,
        None,
        &AttnScratch::new(ctx, &shape),
        &qkv,
        &kc,
        &vc,
        &out,
    )
    .unwrap();

    // Step 1 caches each sequence's prefix; step 2 runs the rest as one batch
    // (or, with `alone`, each sequence in a step of its own).
    let step = |range: &dyn Fn(usize, u32, u32) -> (u32, u32), attend: bool| {
        let mut meta = StepMeta::new();
        let mut data = Vec::new();
        for (i, &(pre, len)) in c.seqs.iter().enumerate() {
            let (a, b) = range(i, pre, len);
            if a == b {
                continue;
            }
            meta.push_seq(&vec![0; (b - a) as usize], a, &tables[i]);
            data.extend_from_slice(&rows[i][a as usize * stride..b as usize * stride]);
        }
        if meta.n_tokens() == 0 {
            return Vec::new();
        }
        batch.write(&ctx.queue, &meta).unwrap();
        ctx.queue.write_buffer(&qkv, 0, bytemuck::cast_slice(&data));
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            write.record(&mut pass, meta.n_tokens());
            if attend {
                match c.splits {
                    Some(s) => attn.record_splits(&mut pass, meta.n_tokens(), s),
                    None => attn.record(&mut pass, meta.n_tokens(), meta.max_kv_len()),
                }
            }
        }
        ctx.queue.submit(Some(enc.finish()));
        if !attend {
            return Vec::new();
        }
        readback_f32(ctx, &out, meta.n_tokens() as usize * q_dim).unwrap()
    };
    step(&|_, pre, _| (0, pre), false);
    if alone {
        return (0..c.seqs.len())
            .flat_map(|i| {
                step(
                    &|j, pre, len| if j == i { (pre, len) } else { (0, 0) },
                    true,
                )
            })
            .collect();
    }
    let got = step(&|_, pre, len| (pre, len), true);

    let mut want = Vec::new();
    for (i, &(pre, len)) in c.seqs.iter().enumerate() {
        let r = &rows[i];
        let raw = |off: usize| -> Vec<f32> {
            (0..len as usize)
                .flat_map(|p| r[p * stride + off..p * stride + off + kv_dim].to_vec())
                .collect()
        };
        let (k, v) = round_rows(c.dtype, &raw(q_dim), &raw(q_dim + kv_dim), c.hd as usize);
        for p in pre..len {
            let q = &r[p as usize * stride..p as usize * stride + q_dim];
            want.extend(causal_attention_ref(
                q,
                &k,
                &v,
                c.n_heads as usize,
                c.n_kv as usize,
                c.hd as usize,
                p as usize + 1,
            ));
        }
    }
    // The quantized caches hold exactly the reference's values (see
    // kernel_kv_write.rs); what remains is f32 summation order.
    let tol = match c.dtype {
        KvDtype::F32 => 2e-5,
        KvDtype::F16 | KvDtype::Q8 | KvDtype::Q4 => 2e-4,
    };
    let what = format!(
        "attention h={} kv={} hd={} {:?} splits={:?} {:?}",
        c.n_heads, c.n_kv, c.hd, c.dtype, c.splits, ctx.caps
    );
    assert_close(&got, &want, tol, tol, &what);
    got
}

#[test]
fn a_row_gets_the_same_bits_in_any_batch() {
    // Rows of one sequence share workgroups (query tiles), decode rows of
    // different sequences too; a row's result must not depend on its
    // neighbours. Fixed split counts, as the model gives generated rows.
    let seqs = vec![(0, 13), (40, 41), (90, 99), (3, 4), (150, 170), (0, 1)];
    for ctx in all_variants() {
        for (n_heads, n_kv, hd, dtype) in [
            (6, 2, 64, KvDtype::F16),
            (4, 4, 96, KvDtype::F32),
            (6, 2, 64, KvDtype::Q4),
            (4, 1, 128, KvDtype::Q8),
        ] {
            for splits in [1, 3] {
                let case = Case {
                    n_heads,
                    n_kv,
                    hd,
                    dtype,
                    seqs: seqs.clone(),
                    splits: Some(splits),
                };
                let together = attend(&ctx, &case, false);
                let alone = attend(&ctx, &case, true);
                let same = together
                    .iter()
                    .zip(&alone)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same && together.len() == alone.len(),
                    "{n_heads}/{n_kv}x{hd} {dtype:?}, {splits} splits: batched rows differ from the same rows alone"
                );
            }
        }
    }
}

#[test]
fn paged_equals_contiguous_for_mixed_batches() {
    // (cached prefix, total length): lengths straddle block boundaries; one
    // prefill chunk starts mid-sequence, one row is a decode step.
    let seqs = vec![(0, 1), (0, 15), (0, 16), (5, 17), (32, 33), (100, 300)];
    // Every GQA ratio × head_dim × dtype on the default device; two of them on
    // each capability variant (f16/subgroup fallbacks).
    let ctx = gpu();
    for &(n_heads, n_kv) in &[(4u32, 4u32), (6, 2)] {
        for &hd in &[64u32, 128] {
            for dtype in KvDtype::ALL {
                let case = Case {
                    n_heads,
                    n_kv,
                    hd,
                    dtype,
                    seqs: seqs.clone(),
                    splits: None,
                };
                run(&ctx, &case);
            }
        }
    }
    for ctx in all_variants() {
        for (n_heads, n_kv, hd, dtype) in [
            (6, 2, 128, KvDtype::F16),
            (4, 4, 64, KvDtype::F32),
            (6, 2, 64, KvDtype::Q4),
            (4, 1, 128, KvDtype::Q4),
            (4, 4, 128, KvDtype::Q8),
        ] {
            let case = Case {
                n_heads,
                n_kv,
                hd,
                dtype,
                seqs: seqs.clone(),
                splits: None,
            };
            run(&ctx, &case);
        }
    }
}

#[test]
fn split_key_range_matches_for_prefill_and_long_decode() {
    for ctx in all_variants() {
        // Forced splits over a prefill batch: some splits of short rows are empty.
        let case = Case {
            n_heads: 6,
            n_kv: 2,
            hd: 64,
            dtype: KvDtype::F32,
            seqs: vec![(0, 3), (20, 70)],
            splits: Some(5),
        };
        run(&ctx, &case);
        for dtype in [KvDtype::Q8, KvDtype::Q4] {
            let case = Case {
                n_heads: 8,
                n_kv: 2,
                hd: 96,
                dtype,
                seqs: vec![(0, 3), (20, 70)],
                splits: Some(5),
            };
            run(&ctx, &case);
        }
        // One decode row at ~2000 positions: the automatic choice splits it.
        for dtype in KvDtype::ALL {
            let case = Case {
                n_heads: 3,
                n_kv: 1,
                hd: 128,
                dtype,
                seqs: vec![(1999, 2000)],
                splits: None,
            };
            run(&ctx, &case);
        }
    }
}

#[test]
fn long_decode_uses_many_workgroups() {
    let ctx = gpu();
    let shape = AttnShape {
        n_heads: 9,
        n_kv_heads: 3,
        head_dim: 64,
        block_size: BS,
        kv_dtype: KvDtype::F16,
        max_tokens: 512,
    };
    let batch = BatchBuffers::new(&ctx, 512, 1, 256, BS);
    let b = ctx.buffer_zeroed("b", 1 << 16);
    let attn = Attention::new(
        &ctx,
        &shape,
        &batch,
        None,
        &AttnScratch::new(&ctx, &shape),
        &b,
        &b,
        &b,
        &b,
    )
    .unwrap();
    assert!(attn.splits_for(1, 4096) >= 16);
    assert_eq!(attn.splits_for(1, 100), 1);
    assert!(
        attn.splits_for(512, 4096) <= 2,
        "a full step needs (almost) no splitting"
    );
    let mut bad = shape;
    bad.head_dim = 300;
    assert!(Attention::new(
        &ctx,
        &bad,
        &batch,
        None,
        &AttnScratch::new(&ctx, &shape),
        &b,
        &b,
        &b,
        &b
    )
    .is_err());
}
