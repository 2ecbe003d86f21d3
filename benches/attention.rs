//! Attention micro-benchmarks: decode (one row, GB/s of KV read) at several
//! context lengths, and a 512-token prefill (GFLOP/s). `cargo bench --bench attention`.

use hearth::gpu::kernels::attention::{Attention, AttnScratch, AttnShape};
use hearth::gpu::kernels::batch::{BatchBuffers, StepMeta};
use hearth::gpu::{GpuContext, GpuOptions};
use hearth::kv::KvDtype;

const BS: u32 = 16;

/// Seconds per run of `record`, several runs per submit, after a warm-up.
#[path = "common/mod.rs"]
mod common;

fn time(ctx: &GpuContext, record: &dyn Fn(&mut wgpu::ComputePass)) -> f64 {
    common::time_per_call(ctx, 0.5, record)
}

fn main() {
    let ctx = GpuContext::new_blocking(&GpuOptions::from_env()).expect("a wgpu adapter");
    println!("adapter: {}", ctx.adapter_name());
    smollm2_rows(&ctx);
    if std::env::args().any(|a| a == "smollm2") {
        return;
    }
    // Llama-3-8B-like head layout.
    let (n_heads, n_kv, hd) = (32u32, 8u32, 128u32);
    for dtype in KvDtype::ALL {
        for &ctx_len in &[512u32, 2048, 8192] {
            let shape = AttnShape {
                n_heads,
                n_kv_heads: n_kv,
                head_dim: hd,
                block_size: BS,
                kv_dtype: dtype,
                max_tokens: 512,
            };
            let blocks = ctx_len.div_ceil(BS);
            let batch = BatchBuffers::new(&ctx, 512, 1, blocks, BS);
            let mut meta = StepMeta::new();
            let table: Vec<u32> = (0..blocks).rev().collect();
            meta.push_seq(&[0], ctx_len - 1, &table);
            batch.write(&ctx.queue, &meta).unwrap();
            let qkv = ctx.buffer_zeroed("qkv", 512 * shape.row_stride() as u64 * 4);
            let kv_bytes = (blocks * BS * n_kv) as u64 * dtype.row_bytes(hd);
            let k = ctx.buffer_zeroed("k", kv_bytes);
            let v = ctx.buffer_zeroed("v", kv_bytes);
            let out = ctx.buffer_zeroed("out", 512 * (n_heads * hd) as u64 * 4);
            let attn = Attention::new(
                &ctx,
                &shape,
                &batch,
                None,
                &AttnScratch::new(&ctx, &shape),
                &qkv,
                &k,
                &v,
                &out,
            )
            .unwrap();
            let splits = attn.splits_for(1, ctx_len);
            let s = time(&ctx, &|p| attn.record(p, 1, ctx_len));
            // Bytes the cache holds for these tokens, scales included.
            let bytes = 2.0 * (ctx_len * n_kv) as f64 * dtype.row_bytes(hd) as f64;
            println!(
                "decode attention {dtype:?} ctx {ctx_len:5} ({n_heads}q/{n_kv}kv x {hd}, {splits} splits): {:8.3} ms  {:6.2} GB/s KV read",
                s * 1e3,
                bytes / s / 1e9
            );
            if ctx_len == 512 {
                let mut meta = StepMeta::new();
                meta.push_seq(&[0; 512], 0, &table);
                batch.write(&ctx.queue, &meta).unwrap();
                let s = time(&ctx, &|p| attn.record(p, 512, 512));
                // QK^T and PV over the causal triangle.
                let flops = 4.0 * (n_heads * hd) as f64 * (512.0 * 513.0 / 2.0);
                println!(
                    "prefill attention {dtype:?} 512 tokens: {:8.3} ms  {:6.2} GFLOP/s",
                    s * 1e3,
                    flops / s / 1e9
                );
            }
        }
    }
}

/// SmolLM2-135M's layout (9 query heads, 3 KV heads of 64): one decode row
/// against a speculative verification step (8 rows of one sequence, which
/// share its K/V), 8 decode rows of 8 sequences, and a 128-token prompt.
/// `cargo bench --bench attention -- smollm2` runs only this.
fn smollm2_rows(ctx: &GpuContext) {
    let shape = AttnShape {
        n_heads: 9,
        n_kv_heads: 3,
        head_dim: 64,
        block_size: BS,
        kv_dtype: KvDtype::F16,
        max_tokens: 512,
    };
    let ctx_len = 256u32;
    let blocks_per_seq = ctx_len.div_ceil(BS);
    let batch = BatchBuffers::new(ctx, 512, 8, 8 * blocks_per_seq, BS);
    let qkv = ctx.buffer_zeroed("qkv", 512 * shape.row_stride() as u64 * 4);
    let kv_bytes = (8 * blocks_per_seq * BS * 3) as u64 * KvDtype::F16.row_bytes(64);
    let k = ctx.buffer_zeroed("k", kv_bytes);
    let v = ctx.buffer_zeroed("v", kv_bytes);
    let out = ctx.buffer_zeroed("out", 512 * 9 * 64 * 4);
    let scratch = AttnScratch::new(ctx, &shape);
    let attn = Attention::new(ctx, &shape, &batch, None, &scratch, &qkv, &k, &v, &out).unwrap();
    let table = |s: u32| (s * blocks_per_seq..(s + 1) * blocks_per_seq).collect::<Vec<u32>>();
    let run = |name: &str, meta: StepMeta| {
        batch.write(&ctx.queue, &meta).unwrap();
        let (n, kv) = (meta.n_tokens(), meta.max_kv_len());
        let s = time(ctx, &|p| attn.record(p, n, kv));
        println!("smollm2 attention, {name}: {:8.3} ms", s * 1e3);
        s
    };
    let mut one = StepMeta::new();
    one.push_seq(&[0], ctx_len - 1, &table(0));
    let t1 = run("1 decode row at ctx 256", one);
    let mut verify = StepMeta::new();
    verify.push_seq(&[0; 8], ctx_len - 8, &table(0));
    let t8 = run("8 rows of one sequence at ctx 249..256", verify);
    let mut many = StepMeta::new();
    for s in 0..8 {
        many.push_seq(&[0], ctx_len - 1, &table(s));
    }
    let tm = run("8 decode rows of 8 sequences at ctx 256", many);
    println!(
        "smollm2 attention: verification step {:.2}x one row, 8 sequences {:.2}x",
        t8 / t1,
        tm / t1
    );
    let mut prompt = StepMeta::new();
    prompt.push_seq(&[0; 128], 0, &table(0));
    run("128-token prompt", prompt);
}
