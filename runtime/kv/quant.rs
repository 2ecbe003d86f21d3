//! CPU form of one cached head row, word for word what `kv_write*.wgsl`
//! stores and `attention.wgsl` reads; the reference forward pass and the
//! tests go through it, so they see the same rounding as the GPU.
//!
//! Quantized rows are u32 words, codes first, then scales (f16):
//! - q8: element e in byte e%4 of word e/4 (two's complement), then the
//!   groups' scales two per word (group 2w in the low half). value = q·d with
//!   d = f16(max|x|/127), q = round(x/d) in -127..=127.
//! - q4: 4 bits per value on average, spent where the error costs most:
//!   keys get 5-bit codes, values 3-bit (on SmolLM2, halving a key's step
//!   lowers the logit KL against f16 more than doubling a value's raises
//!   it). Both rows have G = head_dim/32 groups and 5G words; the key's
//!   fifth bits live in the value row, so that both rows are the same length:
//!   - key row: nibble (code & 15) of element e in bits 4·(e%8) of word e/8;
//!     words 4G..5G: one `pack2x16float(d, m)` per group.
//!   - value row: bits 0-1 of element i of group g in bits 2·(i%16) of word
//!     2g + i/16; bit 2 in bit i of word 2G + g; words 3G..4G: the value
//!     groups' (d, m); words 4G..5G: bit 4 of the key's codes (bit i of word
//!     4G + g for element i of group g).
//!
//!   value = q·d + m, q = round((x−m)/d) clamped to 0..=L (L = 31 for keys,
//!   7 for values), m = f16 of the low end of the range moved down by 2^-10
//!   of itself, d = f16((hi−m)/L). [low, hi] is the group's [min, max]
//!   scaled toward zero by whichever of the [`CLIP`]² ratio pairs gives the
//!   least squared error (clipping a few extremes buys a finer step for the
//!   rest). The values coded are not the row itself but its Walsh–Hadamard
//!   transform over blocks of [`rotation_block`] elements ([`fwht`],
//!   unnormalised): keys have a few channels far larger than the rest (a
//!   near-constant offset per layer), which would otherwise set the step of
//!   their whole group; after the rotation every element carries a share of
//!   them. Attention rotates the query the same way (q·k = (Hq)·(Hk)/R) and
//!   rotates the weighted sum of values back.
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

/// Which of a token's two head rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Key,
    Value,
}

/// Largest code of a q4 row of `role`.
pub fn q4_levels(role: Role) -> u32 {
    match role {
        Role::Key => 31,
        Role::Value => 7,
    }
}

/// (m, d) of a q4 group: the [`CLIP`] pair with the least squared error.
fn q4_range(xs: &[f32], levels: u32) -> (f16, f16) {
    let inv = 1.0 / levels as f32;
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
            let d = to_f16((hi - mf) * inv);
            let df = d.to_f32();
            let err = xs.iter().fold(0f32, |e, &v| {
                let r = q4_code(v, mf, df, levels) as f32 * df + mf - v;
                e + r * r
            });
            if err < best.0 {
                best = (err, m, d);
            }
        }
    }
    (best.1, best.2)
}

/// The code of `v` in a q4 group (m, d) of `levels` + 1 steps.
pub fn q4_code(v: f32, m: f32, d: f32, levels: u32) -> u32 {
    if d > 0.0 {
        ((v - m) / d).round_ties_even().clamp(0.0, levels as f32) as u32
    } else {
        0
    }
}

/// Quantizes a token's key and value head rows (each head_dim long, checked
/// by [`KvDtype::check_head_dim`]) into [`KvDtype::row_words`] words each.
pub fn quantize_pair(dtype: KvDtype, k: &[f32], v: &[f32]) -> (Vec<u32>, Vec<u32>) {
    if dtype != KvDtype::Q4 {
        return (quantize_row(dtype, k), quantize_row(dtype, v));
    }
    let hd = k.len();
    let groups = hd / G;
    let n = dtype.row_words(hd as u32) as usize;
    let (mut kw, mut vw) = (vec![0u32; n], vec![0u32; n]);
    for (g, xs) in coded_values(dtype, k).chunks(G).enumerate() {
        let (m, d) = q4_range(xs, q4_levels(Role::Key));
        for (i, &x) in xs.iter().enumerate() {
            let q = q4_code(x, m.to_f32(), d.to_f32(), q4_levels(Role::Key));
            let e = g * G + i;
            kw[e / 8] |= (q & 15) << (4 * (e % 8));
            vw[4 * groups + g] |= (q >> 4) << i;
        }
        kw[4 * groups + g] = d.to_bits() as u32 | (m.to_bits() as u32) << 16;
    }
    for (g, xs) in coded_values(dtype, v).chunks(G).enumerate() {
        let (m, d) = q4_range(xs, q4_levels(Role::Value));
        for (i, &x) in xs.iter().enumerate() {
            let q = q4_code(x, m.to_f32(), d.to_f32(), q4_levels(Role::Value));
            vw[2 * g + i / 16] |= (q & 3) << (2 * (i % 16));
            vw[2 * groups + g] |= (q >> 2) << i;
        }
        vw[3 * groups + g] = d.to_bits() as u32 | (m.to_bits() as u32) << 16;
    }
    (kw, vw)
}

/// The integer codes of a quantized row of `role` (q4 keys need the value
/// row too, which holds their fifth bits).
pub fn codes(dtype: KvDtype, role: Role, kw: &[u32], vw: &[u32], head_dim: usize) -> Vec<i32> {
    let groups = head_dim / G;
    (0..head_dim)
        .map(|e| {
            let (g, i) = (e / G, e % G);
            match (dtype, role) {
                (KvDtype::Q8, Role::Key) => ((kw[e / 4] >> (8 * (e % 4))) as u8 as i8) as i32,
                (KvDtype::Q8, Role::Value) => ((vw[e / 4] >> (8 * (e % 4))) as u8 as i8) as i32,
                (KvDtype::Q4, Role::Key) => {
                    (((kw[e / 8] >> (4 * (e % 8))) & 15) | (((vw[4 * groups + g] >> i) & 1) << 4))
                        as i32
                }
                (KvDtype::Q4, Role::Value) => {
                    (((vw[2 * g + i / 16] >> (2 * (i % 16))) & 3)
                        | (((vw[2 * groups + g] >> i) & 1) << 2)) as i32
                }
                _ => 0,
            }
        })
        .collect()
}

/// Quantizes one head row of a role-free dtype (not q4, whose key and value
/// rows share words: see [`quantize_pair`]).
fn quantize_row(dtype: KvDtype, x: &[f32]) -> Vec<u32> {
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
        KvDtype::Q4 => unreachable!("q4 rows are quantized in pairs"),
    }
    w
}

/// (scale d, minimum m) of each group of a quantized row of `role` (m = 0
/// for q8); `w` is that role's own row.
pub fn group_params(dtype: KvDtype, role: Role, w: &[u32], head_dim: usize) -> Vec<(f32, f32)> {
    let half = |bits: u32| f16::from_bits(bits as u16).to_f32();
    let groups = head_dim / G;
    (0..groups)
        .map(|g| match dtype {
            KvDtype::Q8 => (half(w[head_dim / 4 + g / 2] >> (16 * (g % 2))), 0.0),
            KvDtype::Q4 => {
                let at = if role == Role::Key { 4 } else { 3 };
                let s = w[at * groups + g];
                (half(s & 0xffff), half(s >> 16))
            }
            KvDtype::F16 | KvDtype::F32 => (0.0, 0.0),
        })
        .collect()
}

/// What the codes of a row of `role` stand for, before q4's inverse
/// rotation (the [`coded_values`] of the row, up to the quantization step).
pub fn dequantize_codes(
    dtype: KvDtype,
    role: Role,
    kw: &[u32],
    vw: &[u32],
    head_dim: usize,
) -> Vec<f32> {
    let w = if role == Role::Key { kw } else { vw };
    match dtype {
        KvDtype::F32 => w[..head_dim].iter().map(|&b| f32::from_bits(b)).collect(),
        KvDtype::F16 => (0..head_dim)
            .map(|e| f16::from_bits((w[e / 2] >> (16 * (e % 2))) as u16).to_f32())
            .collect(),
        KvDtype::Q8 | KvDtype::Q4 => {
            let params = group_params(dtype, role, w, head_dim);
            codes(dtype, role, kw, vw, head_dim)
                .iter()
                .enumerate()
                .map(|(e, &q)| {
                    let (d, m) = params[e / G];
                    q as f32 * d + m
                })
                .collect()
        }
    }
}

/// The values a pair of [`quantize_pair`] rows stands for.
pub fn dequantize_pair(
    dtype: KvDtype,
    kw: &[u32],
    vw: &[u32],
    head_dim: usize,
) -> (Vec<f32>, Vec<f32>) {
    let [k, v] = [Role::Key, Role::Value].map(|role| {
        let mut x = dequantize_codes(dtype, role, kw, vw, head_dim);
        if dtype == KvDtype::Q4 {
            let r = rotation_block(head_dim);
            for b in x.chunks_mut(r) {
                fwht(b);
                b.iter_mut().for_each(|v| *v *= 1.0 / r as f32);
            }
        }
        x
    });
    (k, v)
}

/// What the cache gives back for a token's key and value head rows.
pub fn round_pair(dtype: KvDtype, k: &[f32], v: &[f32]) -> (Vec<f32>, Vec<f32>) {
    match dtype {
        KvDtype::F32 => (k.to_vec(), v.to_vec()),
        _ => {
            let (kw, vw) = quantize_pair(dtype, k, v);
            dequantize_pair(dtype, &kw, &vw, k.len())
        }
    }
}

/// [`round_pair`] over every head row of `k` and `v` (rows of `head_dim`,
/// e.g. the K and V of several tokens).
pub fn round_rows(dtype: KvDtype, k: &[f32], v: &[f32], head_dim: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut ko, mut vo) = (Vec::with_capacity(k.len()), Vec::with_capacity(v.len()));
    for (kr, vr) in k.chunks(head_dim).zip(v.chunks(head_dim)) {
        let (a, b) = round_pair(dtype, kr, vr);
        ko.extend(a);
        vo.extend(b);
    }
    (ko, vo)
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

    fn top(dtype: KvDtype, role: Role) -> f32 {
        if dtype == KvDtype::Q4 {
            q4_levels(role) as f32
        } else {
            127.0
        }
    }

    /// |y − deq(q(x))| <= d/2 per coded element y inside the group's range
    /// (plus the f32 rounding of q·d + m); one outside it (q4 clips) gets
    /// the nearest end. `x` is used as the key and, reversed, as the value.
    fn check_bound(dtype: KvDtype, x: &[f32]) {
        let hd = x.len();
        let v: Vec<f32> = x.iter().rev().copied().collect();
        let (kw, vw) = quantize_pair(dtype, x, &v);
        for (role, row, w) in [(Role::Key, x, &kw), (Role::Value, &v[..], &vw)] {
            let got = dequantize_codes(dtype, role, &kw, &vw, hd);
            let params = group_params(dtype, role, w, hd);
            let top = top(dtype, role);
            for (e, (&a, &b)) in coded_values(dtype, row).iter().zip(&got).enumerate() {
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
                    "{dtype:?} {role:?} element {e}: {a} -> {b} (d {d}, m {m})"
                );
            }
        }
    }

    fn q4_sq_err(xs: &[f32], m: f32, d: f32, levels: u32) -> f32 {
        xs.iter()
            .map(|&v| (q4_code(v, m, d, levels) as f32 * d + m - v).powi(2))
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
            let (kw, vw) = quantize_pair(KvDtype::Q4, &x, &x);
            for (role, w) in [(Role::Key, &kw), (Role::Value, &vw)] {
                let l = q4_levels(role);
                for (g, ys) in y.chunks(G).enumerate() {
                    let (d, m) = group_params(KvDtype::Q4, role, w, 64)[g];
                    let (mn, mx) = ys
                        .iter()
                        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                    let m0 = to_f16(mn - mn.abs() / 1024.0).to_f32();
                    let d0 = to_f16((mx - m0) / l as f32).to_f32();
                    let (got, plain) = (q4_sq_err(ys, m, d, l), q4_sq_err(ys, m0, d0, l));
                    assert!(
                        got <= plain * (1.0 + 1e-6),
                        "seed {seed} {role:?} group {g}: {got} > {plain}"
                    );
                    clipped_some |= got < 0.9 * plain;
                }
            }
        }
        assert!(clipped_some, "no group gained from clipping");
    }

    #[test]
    fn round_trip_error_is_at_most_half_a_step() {
        for dtype in [KvDtype::Q8, KvDtype::Q4] {
            for hd in [32, 64, 96, 128, 256] {
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
            let (kw, vw) = quantize_pair(dtype, &[0.0; 64], &[0.0; 64]);
            assert!(
                kw.iter().chain(&vw).all(|&w| w == 0),
                "{dtype:?}: {kw:x?} {vw:x?}"
            );
            assert_eq!(
                dequantize_pair(dtype, &kw, &vw, 64),
                (vec![0.0; 64], vec![0.0; 64])
            );
        }
    }

    #[test]
    fn layouts_are_as_documented() {
        let mut x = vec![0f32; 64];
        x[0] = 127.0;
        x[1] = -1.0;
        x[33] = 2.0;
        let (w, _) = quantize_pair(KvDtype::Q8, &x, &x);
        assert_eq!(w.len(), 17);
        assert_eq!(w[0], 0x0000_ff7f, "127 then -1 (two's complement)");
        // Group 1: d = f16(2/127); code of 2.0 is 127, in byte 1 of word 8.
        assert_eq!(w[8], 127 << 8);
        assert_eq!(w[16] & 0xffff, f16::from_f32(1.0).to_bits() as u32);
        assert_eq!(w[16] >> 16, f16::from_f32(2.0 / 127.0).to_bits() as u32);

        // q4 rows whose transforms are y = 0..=31 (key) and 0..=7 four
        // times (value): x = H·y/32, so H·x = y (a 32-wide row is one
        // rotation block). Whole codes fit exactly, so no range is clipped.
        assert_eq!(rotation_block(32), 32);
        assert_eq!(
            (rotation_block(64), rotation_block(96), rotation_block(512)),
            (64, 32, 256)
        );
        let inverse = |y: &[f32]| {
            let mut x = y.to_vec();
            fwht(&mut x);
            x.iter_mut().for_each(|v| *v /= 32.0);
            x
        };
        let yk: Vec<f32> = (0..32).map(|i| i as f32).collect();
        let yv: Vec<f32> = (0..32).map(|i| (i % 8) as f32).collect();
        let (k, v) = (inverse(&yk), inverse(&yv));
        assert_eq!(coded_values(KvDtype::Q4, &k), yk);
        let (kw, vw) = quantize_pair(KvDtype::Q4, &k, &v);
        assert_eq!((kw.len(), vw.len()), (5, 5));
        assert_eq!(group_params(KvDtype::Q4, Role::Key, &kw, 32)[0], (1.0, 0.0));
        assert_eq!(
            group_params(KvDtype::Q4, Role::Value, &vw, 32)[0],
            (1.0, 0.0)
        );
        assert_eq!(kw[0], 0x7654_3210, "key code nibbles 0..=7");
        assert_eq!(kw[2], 0x7654_3210, "codes 16..=23 keep their low nibbles");
        assert_eq!(vw[4], 0xffff_0000, "key fifth bits: elements 16..=31");
        // Value codes 0..=7 repeating: low bits 0,1,2,3,0,1,2,3 (2 bits each).
        assert_eq!(vw[0], 0xe4e4_e4e4, "value low bits");
        assert_eq!(vw[2], 0xf0f0_f0f0, "value third bits: codes 4..=7");
        assert_eq!(
            codes(KvDtype::Q4, Role::Key, &kw, &vw, 32),
            (0..32).collect::<Vec<_>>()
        );
        assert_eq!(round_pair(KvDtype::Q4, &k, &v), (k, v));
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
        let (k, v) = round_pair(KvDtype::Q4, &x, &x);
        for (role, got) in [(Role::Key, k), (Role::Value, v)] {
            let rotated = sq(&x, &got);
            // The same min/max code straight on the row, per group.
            let l = q4_levels(role) as f32;
            let plain: Vec<f32> = x
                .chunks(G)
                .flat_map(|g| {
                    let (mn, mx) = g
                        .iter()
                        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                    let d = (mx - mn) / l;
                    g.iter().map(move |&v| ((v - mn) / d).round() * d + mn)
                })
                .collect();
            let plain = sq(&x, &plain);
            assert!(
                rotated < 0.5 * plain,
                "{role:?}: rotated {rotated} vs plain {plain}"
            );
        }
    }

    #[test]
    fn non_finite_input_does_not_panic() {
        let mut x = vals(64, 9, 1.0, 0.0);
        x[3] = f32::NAN;
        x[40] = f32::INFINITY;
        for dtype in [KvDtype::Q8, KvDtype::Q4] {
            let _ = round_pair(dtype, &x, &x);
        }
    }
}
