//! KV write into q8/q4 caches on the GPU against the CPU quantizer
//! (`hearth::kv::quant`): rows of several sequences at odd positions across
//! block boundaries, GQA, a head_dim with an odd number of groups, every word
//! of both buffers compared (rows nobody wrote must stay zero).
//!
//! Scales come from multiplications, which WGSL rounds exactly, so they must
//! match bit for bit wherever f32→f16 rounds to nearest (q4's choice among
//! clipped ranges may differ only where two are within 0.1% in error); codes come from
//! `x / d`, and WGSL only bounds division to 2.5 ulp, so a GPU may round an
//! element lying within a hair of a half-step the other way. Such elements
//! (and only they) may differ by one code; everything else must be exact.
mod common;

use common::*;
use hearth::gpu::kernels::attention::AttnShape;
use hearth::gpu::kernels::batch::{BatchBuffers, StepMeta};
use hearth::gpu::kernels::kv_write::KvWrite;
use hearth::gpu::readback_u32;
use hearth::kv::quant::{coded_values, codes, group_params, q4_levels, quantize_pair, Role};
use hearth::kv::KvDtype;

const BS: u32 = 8;

/// The code the quantizer gives `x` under a group's (d, m), and whether `x`
/// sits so close to a half-step that an inexact divide may round it either way.
fn code_of(dtype: KvDtype, role: Role, x: f32, d: f32, m: f32) -> (i32, bool) {
    if d == 0.0 {
        return (0, false);
    }
    let (t, lo, hi) = match dtype {
        KvDtype::Q8 => (x / d, -127.0, 127.0),
        _ => ((x - m) / d, 0.0, q4_levels(role) as f32),
    };
    let near_tie = ((t - t.floor()) - 0.5).abs() < 1e-4;
    (t.round_ties_even().clamp(lo, hi) as i32, near_tie)
}

fn f16_ulps(a: f32, b: f32) -> i32 {
    let bits = |x: f32| half::f16::from_f32(x).to_bits() as i32;
    (bits(a) - bits(b)).abs()
}

/// Compares one token's GPU K and V head rows with the CPU's; returns the
/// number of exact words.
fn check_rows(dtype: KvDtype, k: &[f32], v: &[f32], gpu: (&[u32], &[u32]), what: &str) -> usize {
    let hd = k.len();
    let (ck, cv) = quantize_pair(dtype, k, v);
    let exact = gpu
        .0
        .iter()
        .zip(&ck)
        .chain(gpu.1.iter().zip(&cv))
        .filter(|(a, b)| a == b)
        .count();
    if exact == ck.len() + cv.len() {
        return exact;
    }
    for (role, x, own, cpu) in [(Role::Key, k, gpu.0, &ck), (Role::Value, v, gpu.1, &cv)] {
        let (pg, pc) = (
            group_params(dtype, role, own, hd),
            group_params(dtype, role, cpu, hd),
        );
        let y = coded_values(dtype, x);
        for (g, (a, b)) in pg.iter().zip(&pc).enumerate() {
            if f16_ulps(a.0, b.0) <= 1 && f16_ulps(a.1, b.1) <= 1 {
                continue;
            }
            // q4 picks the clip pair with the least error; a GPU that fuses
            // multiply-adds may break a near-tie the other way, never by more.
            let err = |(d, m): (f32, f32)| -> f32 {
                y[g * 32..(g + 1) * 32]
                    .iter()
                    .map(|&v| (code_of(dtype, role, v, d, m).0 as f32 * d + m - v).powi(2))
                    .sum()
            };
            assert!(
                dtype == KvDtype::Q4 && err(*a) <= err(*b) * 1.001,
                "{what} {role:?}: group {g} scales {a:?} vs CPU {b:?}"
            );
        }
        // Codes against the GPU's own scales.
        for (e, &c) in codes(dtype, role, gpu.0, gpu.1, hd).iter().enumerate() {
            let (d, m) = pg[e / 32];
            let (want, near_tie) = code_of(dtype, role, y[e], d, m);
            assert!(
                c == want || (near_tie && (c - want).abs() == 1),
                "{what} {role:?}: element {e} = {} -> code {c}, want {want} (d {d}, m {m})",
                y[e]
            );
        }
    }
    exact
}

fn check(n_heads: u32, n_kv: u32, hd: u32, dtype: KvDtype) {
    let ctx = gpu();
    // (first position, tokens, physical blocks): positions straddle blocks.
    let seqs: [(u32, u32, &[u32]); 3] = [(5, 7, &[6, 1]), (0, 1, &[3]), (13, 4, &[0, 4, 7])];
    let n_blocks = 8u32;
    let n_tokens: u32 = seqs.iter().map(|s| s.1).sum();
    let shape = AttnShape {
        n_heads,
        n_kv_heads: n_kv,
        head_dim: hd,
        block_size: BS,
        kv_dtype: dtype,
        max_tokens: n_tokens,
    };
    let stride = shape.row_stride() as usize;
    let (q_dim, hdu) = ((n_heads * hd) as usize, hd as usize);
    let kv_dim = n_kv as usize * hdu;
    // Rows at different magnitudes and offsets, so groups get varied scales;
    // the first token's first K head is all zeros.
    let mut x = rand_vec(n_tokens as usize * stride, hd as u64 + dtype as u64);
    for (i, v) in x.iter_mut().enumerate() {
        let group = i / 32;
        *v = *v * [0.05, 1.0, 7.0, 40.0][group % 4] + [0.0, 0.3, -2.0][group % 3];
    }
    x[q_dim..q_dim + hdu].fill(0.0);

    let batch = BatchBuffers::new(&ctx, n_tokens, seqs.len() as u32, n_blocks, BS);
    let qkv = ctx.buffer_from("qkv", &x);
    let rw = dtype.row_words(hd) as usize;
    let words = (n_blocks * BS * n_kv) as usize * rw;
    let kc = ctx.buffer_zeroed("k", words as u64 * 4);
    let vc = ctx.buffer_zeroed("v", words as u64 * 4);
    let write = KvWrite::new(&ctx, &shape, &batch, &qkv, &kc, &vc).unwrap();
    let mut meta = StepMeta::new();
    for &(start, len, blocks) in &seqs {
        meta.push_seq(&vec![0; len as usize], start, blocks);
    }
    batch.write(&ctx.queue, &meta).unwrap();
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        write.record(&mut pass, n_tokens);
    }
    ctx.queue.submit(Some(enc.finish()));
    let got_k = readback_u32(&ctx, &kc, words).unwrap();
    let got_v = readback_u32(&ctx, &vc, words).unwrap();

    let mut written = vec![false; words / rw];
    let (mut exact, mut total) = (0, 0);
    let mut t = 0usize;
    for &(start, len, blocks) in &seqs {
        for p in start..start + len {
            let blk = blocks[(p / BS) as usize];
            for kvh in 0..n_kv as usize {
                let row = (blk as usize * n_kv as usize + kvh) * BS as usize + (p % BS) as usize;
                written[row] = true;
                let k0 = t * stride + q_dim + kvh * hdu;
                let v0 = t * stride + q_dim + kv_dim + kvh * hdu;
                let r = row * rw..(row + 1) * rw;
                exact += check_rows(
                    dtype,
                    &x[k0..k0 + hdu],
                    &x[v0..v0 + hdu],
                    (&got_k[r.clone()], &got_v[r]),
                    &format!("{dtype:?} hd {hd} pos {p} kv head {kvh}"),
                );
                total += 2 * rw;
            }
            t += 1;
        }
    }
    for (row, _) in written.iter().enumerate().filter(|(_, w)| !**w) {
        let r = row * rw..(row + 1) * rw;
        assert!(
            got_k[r.clone()].iter().chain(&got_v[r]).all(|&w| w == 0),
            "{dtype:?} hd {hd}: row {row} written by nobody is not zero"
        );
    }
    println!("{dtype:?} hd {hd}: {exact} of {total} words exactly the CPU's");
    // Half-step ties are rare; a layout or rounding bug breaks most words.
    assert!(exact * 100 >= total * 99, "{exact} of {total} words exact");
}

#[test]
fn quantized_kv_write_matches_the_cpu_quantizer() {
    for dtype in [KvDtype::Q8, KvDtype::Q4] {
        // GQA with head_dim 64 and 128, and 96 (three groups: an odd last pair).
        check(6, 2, 64, dtype);
        check(4, 1, 128, dtype);
        check(3, 3, 96, dtype);
    }
}
