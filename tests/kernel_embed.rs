//! Embedding gather against the CPU reference on the dequantized table, for
//! every format, with tables split into row chunks and out-of-range ids.

mod common;

use std::borrow::Cow;

use common::*;
use hearth::gpu::kernels::embed::{embed_ref, Embed};
use hearth::gpu::kernels::StepInfo;
use hearth::gpu::weights::GpuMatrix;
use hearth::gpu::{readback_f32, GpuContext};
use hearth::model::{DType, HostTensor};
use hearth::quant::{dequantize, quantize};

fn gather(ctx: &GpuContext, table: &GpuMatrix, ids: &[u32]) -> Vec<f32> {
    let n = ids.len() as u32;
    let step = ctx.uniform(
        "step",
        &StepInfo {
            n_tokens: n,
            n_seqs: 1,
            ..Default::default()
        },
    );
    let idb = ctx.buffer_from("ids", ids);
    let out = ctx.buffer_from("out", &vec![f32::NAN; ids.len() * table.cols()]);
    let k = Embed::new(ctx, &step, table, &idb, &out);
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        k.record(&mut pass, n);
    }
    ctx.queue.submit(Some(enc.finish()));
    readback_f32(ctx, &out, ids.len() * table.cols()).unwrap()
}

fn check_dtype(ctx: &GpuContext, dtype: DType, rows: usize, cols: usize, min_chunks: usize) {
    let seed = (rows + cols) as u64;
    let data = if dtype.can_quantize() {
        quantize(dtype, &rand_vec(rows * cols, seed)).unwrap()
    } else {
        random_blocks(dtype, rows * cols, seed)
    };
    let want_table = dequantize(dtype, &data, rows * cols).unwrap();
    let t = HostTensor {
        name: "token_embd.weight".into(),
        dtype,
        shape: vec![rows, cols],
        data: Cow::Owned(data),
    };
    let table = GpuMatrix::upload(ctx, "embed", &[t], None).unwrap();
    assert!(
        table.chunks().len() >= min_chunks,
        "{dtype:?}: {} chunks",
        table.chunks().len()
    );
    let r = rows as u32;
    let ids = [0, r - 1, r / 2, 3 % r, r, u32::MAX, r / 3, 0];
    let got = gather(ctx, &table, &ids);
    let want = embed_ref(&want_table, rows, cols, &ids);
    let what = format!("{dtype:?} {rows}x{cols} caps={:?}", ctx.caps);
    assert_close(&got, &want, 1e-6, 1e-6, &what);
}

#[test]
fn gathers_every_format() {
    for ctx in all_variants() {
        for dtype in [
            DType::F32,
            DType::F16,
            DType::BF16,
            DType::Q8_0,
            DType::Q4_0,
            DType::Q4_1,
        ] {
            check_dtype(&ctx, dtype, 50, 96, 1);
            if !dtype.is_quantized() {
                check_dtype(&ctx, dtype, 9, 33, 1);
            }
        }
        // The formats Hearth reads but does not produce.
        for dtype in [
            DType::Q4_K,
            DType::Q5_0,
            DType::Q5_1,
            DType::Q5_K,
            DType::Q6_K,
        ] {
            check_dtype(&ctx, dtype, 37, 512, 1);
        }
    }
}

#[test]
fn gathers_from_split_tables() {
    let ctx = gpu_with(false, false, Some(4096));
    for dtype in [
        DType::F32,
        DType::F16,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
    ] {
        check_dtype(&ctx, dtype, 300, 160, 3);
    }
    check_dtype(&ctx, DType::F16, 100, 577, 3);
}
