//! CPU form of one cached head row, word for word what `kv_write*.wgsl`
//! stores and `attention.wgsl` reads; the reference forward pass and the
//! tests go through it, so they see the same rounding as the GPU.
//!
//! Quantized rows are u32 words, codes first, then scales (f16):
//! - q8: element e in byte e%4 of word e/4 (two's complement), then the
//!   groups' scales two per word (group 2w in the low half). value = q·d with
//!   d = f16(max|x|/127), q = round(x/d) in -127..=127.
//! - q4: element e in bits 4·(e%8) of word e/8, then one word per group,
//!   `pack2x16float(d, m)`. value = q·d + m with m = the group minimum
//!   rounded down to f16 (so that no element falls below code 0) and
//!   d = f16((hi−m)/15), q = round((x−m)/d) clamped to 0..=15, where
//!   [m, hi] is the group's [min, max] or a range clipped inside it,
//!   whichever of [`CLIP`]² gives the least squared error (clipping a few
//!   extremes buys a finer step for the rest). The values coded are not the
//!   row itself but its Walsh–Hadamard transform over blocks of
//!   [`rotation_block`] elements ([`fwht`], unnormalised): keys have a few
//!   channels far larger than the rest (a near-constant offset per layer),
//!   which would otherwise set the step of their whole group; after the
//!   rotation every element carries a share of them. Attention rotates the
//!   query the same way (q·k = (Hq)·(Hk)/R) and rotates the weighted sum of
//!   values back. On SmolLM2 this halves the logit KL against f16 that plain
//!   min/max 4-bit codes give.
//!
//! Scales come from multiplications by constants (not divisions), which WGSL
//! rounds exactly like the CPU; only the codes divide, where a GPU with an
//! approximate divide may round an element lying on a half-step the other way.

use half::f16;

use super::dtype::{KvDtype, GROUP};

const G: usize = GROUP as usize;
const F16_MAX: f32 = 65504.0;

fn to_f16(x: f32) -> f16 {
    f16::from_f32(x.clamp(-F16_MAX, F16_MAX))
}

/// Ratios tried for each end of a q4 group's range (scaling min and max
/// toward zero), in this order; the first least-error pair wins.
pub const CLIP: [f32; 4] = [1.0, 0.9, 0.8, 0.7];

/// Elements per Hadamard block of a q4 row: the largest power of two that
/// divides `head_dim` (a multiple of [`GROUP`]), at most 256.
pub fn rotation_block(head_dim: usize) -> usize {
    (1usize << head_dim.trailing_zeros()).min(256)
}

/// In-place Walsh–Hadamard transform of a power-of-two block (Sylvester
/// order, no normalisation: applying it twice multiplies by the length).
/// The butterfly order is the one `kv_write_quant.wgsl` and
/// `attention.wgsl` use, so the f32 sums agree bit for bit.
pub fn fwht(x: &mut [f32]) {
    let n = x.len();
    debug_assert!(n.is_power_of_two());
    let mut h = 1;
    while h < n {
        for i in (0..n).step_by(2 * h) {
            for j in i..i + h {
                let (a, b) = (x[j], x[j + h]);
                x[j] = a + b;
                x[j + h] = a - b;
            }
        }
        h *= 2;
    }
}

/// The values a row's codes stand for: the row itself, or for q4 the
/// [`fwht`] of its [`rotation_block`]s.
pub fn coded_values(dtype: KvDtype, x: &[f32]) -> Vec<f32> {
    let mut y = x.to_vec();
    if dtype == KvDtype::Q4 {
        y.chunks_mut(rotation_block(x.len())).for_each(fwht);
    }
    y
}

/// (m, d) of a q4 group: the [`CLIP`] pair with the least squared error.
fn q4_range(xs: &[f32]) -> (f16, f16) {
    let (mn, mx) = xs
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let mut best = (f32::INFINITY, f16::ZERO, f16::ZERO);
    for r_lo in CLIP {
        // Moving the low end down by 2^-10 of itself (at least one f16
        // step) before rounding keeps m <= every element when unclipped.
        let lo = r_lo * mn;
        let m = to_f16(lo - lo.abs() * (1.0 / 1024.0));
        let mf = m.to_f32();
        for r_hi in CLIP {
            let hi = r_hi * mx;
            let d = to_f16((hi - mf) * (1.0 / 15.0));
            let df = d.to_f32();
            let err = xs.iter().fold(0f32, |e, &v| {
                let r = q4_code(v, mf, df) as f32 * df + mf - v;
                e + r * r
            });
            if err < best.0 {
                best = (err, m, d);
            }
        }
    }
    (best.1, best.2)
}

fn q4_code(v: f32, m: f32, d: f32) -> u32 {
    if d > 0.0 {
        ((v - m) / d).round_ties_even().clamp(0.0, 15.0) as u32
    } else {
        0
    }
}

/// Quantizes one head row (`x.len()` = head_dim, checked by
/// [`KvDtype::check_head_dim`]) into [`KvDtype::row_words`] words.
pub fn quantize_row(dtype: KvDtype, x: &[f32]) -> Vec<u32> {
    let hd = x.len();
    let mut w = vec![0u32; dtype.row_words(hd as u32) as usize];
    match dtype {
        KvDtype::F32 => w.iter_mut().zip(x).for_each(|(w, v)| *w = v.to_bits()),
        KvDtype::F16 => {
            for (w, p) in w.iter_mut().zip(x.chunks(2)) {
                *w = f16::from_f32(p[0]).to_bits() as u32
                    | (f16::from_f32(p[1]).to_bits() as u32) << 16;
            }
        }
        KvDtype::Q8 => {
            for (g, xs) in x.chunks(G).enumerate() {
                let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
                let d = to_f16(amax * (1.0 / 127.0));
                let df = d.to_f32();
                for (i, &v) in xs.iter().enumerate() {
                    let q = if df > 0.0 {
                        (v / df).round_ties_even().clamp(-127.0, 127.0) as i32
                    } else {
                        0
                    };
                    let e = g * G + i;
                    w[e / 4] |= (q as u32 & 0xff) << (8 * (e % 4));
                }
                w[hd / 4 + g / 2] |= (d.to_bits() as u32) << (16 * (g % 2));
            }
        }
        KvDtype::Q4 => {
            for (g, xs) in coded_values(dtype, x).chunks(G).enumerate() {
                let (m, d) = q4_range(xs);
                for (i, &v) in xs.iter().enumerate() {
                    let q = q4_code(v, m.to_f32(), d.to_f32());
                    let e = g * G + i;
                    w[e / 8] |= q << (4 * (e % 8));
                }
                w[hd / 8 + g] = d.to_bits() as u32 | (m.to_bits() as u32) << 16;
            }
        }
    }
    w
}

/// (scale d, minimum m) of each group of a quantized row (m = 0 for q8).
pub fn group_params(dtype: KvDtype, w: &[u32], head_dim: usize) -> Vec<(f32, f32)> {
    let half = |bits: u32| f16::from_bits(bits as u16).to_f32();
    (0..head_dim / G)
        .map(|g| match dtype {
            KvDtype::Q8 => (half(w[head_dim / 4 + g / 2] >> (16 * (g % 2))), 0.0),
            KvDtype::Q4 => {
                let s = w[head_dim / 8 + g];
                (half(s & 0xffff), half(s >> 16))
            }
            KvDtype::F16 | KvDtype::F32 => (0.0, 0.0),
        })
        .collect()
}

/// The values a row of [`quantize_row`] words stands for.
pub fn dequantize_row(dtype: KvDtype, w: &[u32], head_dim: usize) -> Vec<f32> {
    let mut x = dequantize_codes(dtype, w, head_dim);
    if dtype == KvDtype::Q4 {
        let r = rotation_block(head_dim);
        for b in x.chunks_mut(r) {
            fwht(b);
            b.iter_mut().for_each(|v| *v *= 1.0 / r as f32);
        }
    }
    x
}

/// What the codes of a row stand for, before q4's inverse rotation (the
/// [`coded_values`] of the row, up to the quantization step).
pub fn dequantize_codes(dtype: KvDtype, w: &[u32], head_dim: usize) -> Vec<f32> {
    let params = group_params(dtype, w, head_dim);
    (0..head_dim)
        .map(|e| match dtype {
            KvDtype::F32 => f32::from_bits(w[e]),
            KvDtype::F16 => f16::from_bits((w[e / 2] >> (16 * (e % 2))) as u16).to_f32(),
            KvDtype::Q8 => {
                let q = (w[e / 4] >> (8 * (e % 4))) as u8 as i8;
                q as f32 * params[e / G].0
            }
            KvDtype::Q4 => {
                let q = (w[e / 8] >> (4 * (e % 8))) & 15;
                let (d, m) = params[e / G];
                q as f32 * d + m
            }
        })
        .collect()
}

/// What the cache gives back for a head row written as `x`.
pub fn round_row(dtype: KvDtype, x: &[f32]) -> Vec<f32> {
    match dtype {
        KvDtype::F32 => x.to_vec(),
        _ => dequantize_row(dtype, &quantize_row(dtype, x), x.len()),
    }
}

/// [`round_row`] over every head row of `x` (rows of `head_dim`, e.g. the K of several tokens).
pub fn round_rows(dtype: KvDtype, x: &[f32], head_dim: usize) -> Vec<f32> {
    x.chunks(head_dim)
        .flat_map(|r| round_row(dtype, r))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(n: usize, seed: u32, scale: f32, offset: f32) -> Vec<f32> {
        crate::kv::reference::test_vals(n, seed)
            .into_iter()
            .map(|v| v * scale + offset)
            .collect()
    }

    /// |y − deq(q(x))| <= d/2 per coded element y inside the group's range
    /// (plus the f32 rounding of q·d + m); one outside it (q4 clips) gets
    /// the nearest end.
    fn check_bound(dtype: KvDtype, x: &[f32]) {
        let w = quantize_row(dtype, x);
        let got = dequantize_codes(dtype, &w, x.len());
        let params = group_params(dtype, &w, x.len());
        let top = if dtype == KvDtype::Q4 { 15.0 } else { 127.0 };
        for (e, (&a, &b)) in coded_values(dtype, x).iter().zip(&got).enumerate() {
            let (d, m) = params[e / G];
            let (lo, hi) = if dtype == KvDtype::Q4 {
                (m, m + top * d)
            } else {
                (-top * d, top * d)
            };
            let slack = 1e-6 * (a.abs() + m.abs()) as f64;
            let err = (a as f64 - b as f64).abs();
            let clamped = (a < lo && b == lo) || (a > hi && (b - hi).abs() <= 1e-6 * hi.abs());
            assert!(
                err <= d as f64 / 2.0 + slack || clamped,
                "{dtype:?} element {e}: {a} -> {b} (d {d}, m {m})"
            );
        }
    }

    fn q4_sq_err(xs: &[f32], m: f32, d: f32) -> f32 {
        xs.iter()
            .map(|&v| (q4_code(v, m, d) as f32 * d + m - v).powi(2))
            .sum()
    }

    /// The clip search includes the unclipped range, so it never does worse.
    #[test]
    fn q4_clipping_never_does_worse_than_min_max() {
        let mut clipped_some = false;
        for seed in 0..40 {
            let mut x = vals(64, 100 + seed, 1.0 + seed as f32, 0.1 * seed as f32);
            x[(seed as usize * 7) % 64] *= 12.0;
            let y = coded_values(KvDtype::Q4, &x);
            let w = quantize_row(KvDtype::Q4, &x);
            for (g, ys) in y.chunks(G).enumerate() {
                let (d, m) = group_params(KvDtype::Q4, &w, 64)[g];
                let (mn, mx) = ys
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                let m0 = to_f16(mn - mn.abs() / 1024.0).to_f32();
                let d0 = to_f16((mx - m0) / 15.0).to_f32();
                let (got, plain) = (q4_sq_err(ys, m, d), q4_sq_err(ys, m0, d0));
                assert!(
                    got <= plain * (1.0 + 1e-6),
                    "seed {seed} group {g}: {got} > {plain}"
                );
                clipped_some |= got < 0.9 * plain;
            }
        }
        assert!(clipped_some, "no group gained from clipping");
    }

    #[test]
    fn round_trip_error_is_at_most_half_a_step() {
        for dtype in [KvDtype::Q8, KvDtype::Q4] {
            for hd in [32, 64, 128, 256] {
                for (seed, scale, offset) in [
                    (1, 1.0, 0.0),
                    (2, 30.0, 5.0),
                    (3, 0.01, -0.3),
                    (4, 1e-3, 1.0),
                    (5, 400.0, -2000.0),
                ] {
                    check_bound(dtype, &vals(hd, seed + hd as u32, scale, offset));
                }
            }
            // One group of constants, one with a single outlier.
            let mut x = vec![0.75f32; 64];
            x[40] = -9.0;
            check_bound(dtype, &x);
        }
    }

    #[test]
    fn zero_rows_stay_zero() {
        for dtype in [KvDtype::Q8, KvDtype::Q4] {
            let w = quantize_row(dtype, &[0.0; 64]);
            assert!(w.iter().all(|&w| w == 0), "{dtype:?}: {w:x?}");
            assert_eq!(dequantize_row(dtype, &w, 64), vec![0.0; 64]);
        }
    }

    #[test]
    fn layouts_are_as_documented() {
        let mut x = vec![0f32; 64];
        x[0] = 127.0;
        x[1] = -1.0;
        x[33] = 2.0;
        let w = quantize_row(KvDtype::Q8, &x);
        assert_eq!(w.len(), 17);
        assert_eq!(w[0], 0x0000_ff7f, "127 then -1 (two's complement)");
        // Group 1: d = f16(2/127); code of 2.0 is 127, in byte 1 of word 8.
        assert_eq!(w[8], 127 << 8);
        assert_eq!(w[16] & 0xffff, f16::from_f32(1.0).to_bits() as u32);
        assert_eq!(w[16] >> 16, f16::from_f32(2.0 / 127.0).to_bits() as u32);

        // A q4 row whose transform is 0..=15 twice: x = H·y/32, so H·x = y
        // (a 32-wide row is one rotation block).
        let y: Vec<f32> = (0..32).map(|i| (i % 16) as f32).collect();
        let mut x = y.clone();
        fwht(&mut x);
        x.iter_mut().for_each(|v| *v /= 32.0);
        assert_eq!(rotation_block(32), 32);
        assert_eq!(
            (rotation_block(64), rotation_block(96), rotation_block(512)),
            (64, 32, 256)
        );
        assert_eq!(coded_values(KvDtype::Q4, &x), y);
        let w = quantize_row(KvDtype::Q4, &x);
        assert_eq!(w.len(), 5);
        let (d, m) = group_params(KvDtype::Q4, &w, 32)[0];
        assert_eq!((d, m), (1.0, 0.0));
        assert_eq!(w[0], 0x7654_3210, "codes 0..=7 in nibbles 0..=7");
        assert_eq!(round_row(KvDtype::Q4, &x), x);
    }

    #[test]
    fn transform_twice_is_32_times_identity() {
        let x = vals(32, 11, 3.0, 0.5);
        let mut y = x.clone();
        fwht(&mut y);
        fwht(&mut y);
        for (a, b) in x.iter().zip(&y) {
            assert!((a * 32.0 - b).abs() <= 1e-4 * b.abs().max(1.0), "{a} {b}");
        }
    }

    /// The point of the rotation: one large channel (as keys have) no longer
    /// sets the step for the rest of its group.
    #[test]
    fn q4_rotation_shrinks_the_error_of_an_outlier_row() {
        let mut x = vals(64, 12, 1.0, 0.0);
        x[5] = 40.0;
        x[37] = -25.0;
        let sq = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(u, v)| (u - v).powi(2)).sum::<f32>();
        let rotated = sq(&x, &round_row(KvDtype::Q4, &x));
        // The same 4-bit min/max code straight on the row, per group.
        let plain: Vec<f32> = x
            .chunks(G)
            .flat_map(|g| {
                let (mn, mx) = g
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                let d = (mx - mn) / 15.0;
                g.iter().map(move |&v| ((v - mn) / d).round() * d + mn)
            })
            .collect();
        let plain = sq(&x, &plain);
        assert!(rotated < 0.5 * plain, "rotated {rotated} vs plain {plain}");
    }

    #[test]
    fn non_finite_input_does_not_panic() {
        let mut x = vals(64, 9, 1.0, 0.0);
        x[3] = f32::NAN;
        x[40] = f32::INFINITY;
        for dtype in [KvDtype::Q8, KvDtype::Q4] {
            let _ = round_row(dtype, &x);
        }
    }
}
