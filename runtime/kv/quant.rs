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
//!   d = f16((max−m)/15), q = round((x−m)/d) in 0..=15.
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
            for (g, xs) in x.chunks(G).enumerate() {
                let (mn, mx) = xs
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                // Moving the minimum down by 2^-10 of itself (at least one
                // f16 step) before rounding keeps m <= every element.
                let m = to_f16(mn - mn.abs() * (1.0 / 1024.0));
                let mf = m.to_f32();
                let d = to_f16((mx - mf) * (1.0 / 15.0));
                let df = d.to_f32();
                for (i, &v) in xs.iter().enumerate() {
                    let q = if df > 0.0 {
                        ((v - mf) / df).round_ties_even().clamp(0.0, 15.0) as u32
                    } else {
                        0
                    };
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

    /// |x − deq(q(x))| <= d/2 per element (plus the f32 rounding of q·d + m).
    fn check_bound(dtype: KvDtype, x: &[f32]) {
        let w = quantize_row(dtype, x);
        let got = dequantize_row(dtype, &w, x.len());
        let params = group_params(dtype, &w, x.len());
        for (e, (&a, &b)) in x.iter().zip(&got).enumerate() {
            let (d, m) = params[e / G];
            let slack = 1e-6 * (a.abs() + m.abs()) as f64;
            let err = (a as f64 - b as f64).abs();
            assert!(
                err <= d as f64 / 2.0 + slack,
                "{dtype:?} element {e}: {a} -> {b} (d {d}, m {m})"
            );
        }
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

        let x: Vec<f32> = (0..32).map(|i| (i % 16) as f32).collect();
        let w = quantize_row(KvDtype::Q4, &x);
        assert_eq!(w.len(), 5);
        let (d, m) = group_params(KvDtype::Q4, &w, 32)[0];
        assert!(m <= 0.0 && d > 0.0);
        assert_eq!(w[0], 0x7654_3210, "codes 0..=7 in nibbles 0..=7");
        assert_eq!(
            round_row(KvDtype::Q4, &x),
            x.iter().map(|&v| v.round()).collect::<Vec<_>>()
        );
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
