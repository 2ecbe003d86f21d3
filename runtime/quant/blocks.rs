//! GGUF block layouts on the CPU: dequantize to f32 and quantize from f32,
//! bit-exact with ggml's reference quantizers (`quantize_row_*_ref`), so a
//! model quantized on load matches one quantized by llama.cpp's tools.

use half::f16;

use crate::types::DType;
use crate::{HearthError, Result};

/// Elements per 32-element block (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1).
pub const QK: usize = 32;

/// bf16 bits → f32: bf16 is the top half of an f32.
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// f32 → bf16 bits, rounding to nearest even and quieting NaNs (as ggml does).
pub fn f32_to_bf16(x: f32) -> u16 {
    let n = x.to_bits();
    if n & 0x7fff_ffff > 0x7f80_0000 {
        return ((n >> 16) | 64) as u16;
    }
    ((n as u64 + (0x7fff + ((n >> 16) & 1)) as u64) >> 16) as u16
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Decodes `out.len()` elements of `dtype` from `data` (GGUF byte layout).
pub fn dequantize_into(dtype: DType, data: &[u8], out: &mut [f32]) -> Result<()> {
    let need = dtype.bytes_for(out.len())?;
    if data.len() < need {
        return Err(HearthError::InvalidFile(format!(
            "{} data holds {} bytes, {need} needed for {} elements",
            dtype.name(),
            data.len(),
            out.len()
        )));
    }
    let data = &data[..need];
    match dtype {
        DType::F32 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::F16 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        DType::BF16 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        DType::Q8_0 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(data.chunks_exact(34)) {
                let d = f16_at(b, 0);
                for (j, v) in o.iter_mut().enumerate() {
                    *v = (b[2 + j] as i8) as f32 * d;
                }
            }
        }
        DType::Q4_0 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(data.chunks_exact(18)) {
                let d = f16_at(b, 0);
                for j in 0..QK / 2 {
                    let q = b[2 + j];
                    o[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
                    o[j + QK / 2] = ((q >> 4) as i32 - 8) as f32 * d;
                }
            }
        }
        DType::Q4_1 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(data.chunks_exact(20)) {
                let d = f16_at(b, 0);
                let m = f16_at(b, 2);
                for j in 0..QK / 2 {
                    let q = b[4 + j];
                    o[j] = (q & 0x0f) as f32 * d + m;
                    o[j + QK / 2] = (q >> 4) as f32 * d + m;
                }
            }
        }
        DType::Q5_0 | DType::Q5_1 => dequantize_q5(dtype == DType::Q5_1, data, out),
        DType::Q4_K | DType::Q5_K => dequantize_q45_k(dtype == DType::Q5_K, data, out),
        DType::Q6_K => dequantize_q6_k(data, out),
    }
    Ok(())
}

/// Q5_0 (`d`, high bits, nibbles: `d·(q − 16)`) and Q5_1 (`d`, `m`, high
/// bits, nibbles: `d·q + m`). Bit j of the 32-bit high word is element j's fifth bit.
fn dequantize_q5(with_min: bool, data: &[u8], out: &mut [f32]) {
    let bb = if with_min { 24 } else { 22 };
    let at = if with_min { 4 } else { 2 };
    for (o, b) in out.chunks_exact_mut(QK).zip(data.chunks_exact(bb)) {
        let d = f16_at(b, 0);
        let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let qs = &b[at + 4..];
        for j in 0..QK / 2 {
            let lo = (qs[j] & 0x0f) as u32 | ((qh >> j) & 1) << 4;
            let hi = (qs[j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
            if with_min {
                let m = f16_at(b, 2);
                o[j] = lo as f32 * d + m;
                o[j + QK / 2] = hi as f32 * d + m;
            } else {
                o[j] = (lo as i32 - 16) as f32 * d;
                o[j + QK / 2] = (hi as i32 - 16) as f32 * d;
            }
        }
    }
}

/// Scale and min (6 bits each) of sub-block `j` of a Q4_K/Q5_K super-block
/// (ggml's `get_scale_min_k4`): 8 pairs packed into 12 bytes.
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Q4_K (`d`, `dmin`, 12 scale bytes, 128 nibble bytes) and Q5_K (the same
/// with 32 bytes of fifth bits before the nibbles): 256 elements in 8
/// sub-blocks of 32, element = `d·sc·q − dmin·m`. Each 32 nibble bytes hold
/// two sub-blocks, the first in the low nibbles.
fn dequantize_q45_k(five: bool, data: &[u8], out: &mut [f32]) {
    let bb = if five { 176 } else { 144 };
    for (o, b) in out.chunks_exact_mut(256).zip(data.chunks_exact(bb)) {
        let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
        let scales = &b[4..16];
        let (qh, qs) = if five {
            (&b[16..48], &b[48..176])
        } else {
            (&b[16..16], &b[16..144])
        };
        for c in 0..4 {
            let (sc1, m1) = scale_min_k4(2 * c, scales);
            let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
            let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
            let (d2, min2) = (d * sc2 as f32, dmin * m2 as f32);
            for l in 0..32 {
                let q = qs[32 * c + l];
                let (mut lo, mut hi) = ((q & 0x0f) as u32, (q >> 4) as u32);
                if five {
                    lo |= ((qh[l] >> (2 * c)) & 1) as u32 * 16;
                    hi |= ((qh[l] >> (2 * c + 1)) & 1) as u32 * 16;
                }
                o[64 * c + l] = d1 * lo as f32 - min1;
                o[64 * c + 32 + l] = d2 * hi as f32 - min2;
            }
        }
    }
}

/// Q6_K: 128 bytes of low nibbles, 64 of two-bit highs, 16 signed 8-bit
/// scales (one per 16 elements) and `d`: element = `d·sc·(q − 32)`.
fn dequantize_q6_k(data: &[u8], out: &mut [f32]) {
    for (o, b) in out.chunks_exact_mut(256).zip(data.chunks_exact(210)) {
        let d = f16_at(b, 208);
        for (e, (v, q)) in o.iter_mut().zip(q6_k_codes(b)).enumerate() {
            let s = b[192 + e / 16] as i8 as f32;
            *v = d * s * (q as i32 - 32) as f32;
        }
    }
}

/// The 256 six-bit codes (0..63, element order) of a Q6_K super-block: per
/// 128 elements, 64 bytes of low nibbles (elements l and l+64 in byte l,
/// l+32 and l+96 in byte l+32) and 32 bytes of two-bit highs (elements l,
/// l+32, l+64, l+96 in byte l). The GPU packer (`pack.rs`) reads them too.
pub(crate) fn q6_k_codes(block: &[u8]) -> [u8; 256] {
    let mut c = [0u8; 256];
    for n in 0..2 {
        let (ql, qh) = (
            &block[64 * n..64 * n + 64],
            &block[128 + 32 * n..160 + 32 * n],
        );
        for l in 0..32 {
            c[128 * n + l] = (ql[l] & 0x0f) | ((qh[l] & 3) << 4);
            c[128 * n + 32 + l] = (ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4);
            c[128 * n + 64 + l] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            c[128 * n + 96 + l] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
        }
    }
    c
}

/// Encodes `values` as `dtype` in the GGUF byte layout. Quantized types need
/// a whole number of 32-element blocks.
pub fn quantize(dtype: DType, values: &[f32]) -> Result<Vec<u8>> {
    let size = dtype.bytes_for(values.len()).map_err(|_| {
        HearthError::InvalidRequest(format!(
            "cannot quantize {} values to {}: not a multiple of its {}-element block",
            values.len(),
            dtype.name(),
            dtype.block_elems()
        ))
    })?;
    if !dtype.can_quantize() {
        return Err(HearthError::Unsupported(format!(
            "Hearth reads {} weights but cannot quantize to {0} (it produces f32, f16, bf16, q8_0, q4_0, q4_1, q4_k and q6_k)",
            dtype.name()
        )));
    }
    let mut out = Vec::with_capacity(size);
    match dtype {
        DType::F32 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        DType::F16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        DType::BF16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&f32_to_bf16(*v).to_le_bytes())),
        DType::Q8_0 => values
            .chunks_exact(QK)
            .for_each(|b| quantize_q8_0(b, &mut out)),
        DType::Q4_0 => values
            .chunks_exact(QK)
            .for_each(|b| quantize_q4_0(b, &mut out)),
        DType::Q4_1 => values
            .chunks_exact(QK)
            .for_each(|b| quantize_q4_1(b, &mut out)),
        DType::Q4_K => values
            .chunks_exact(256)
            .for_each(|b| quantize_q4_k(b, &mut out)),
        DType::Q6_K => values
            .chunks_exact(256)
            .for_each(|b| quantize_q6_k(b, &mut out)),
        _ => unreachable!("checked by can_quantize"),
    }
    debug_assert_eq!(out.len(), size);
    Ok(out)
}

/// Round half away from zero, like C's `roundf`.
fn roundf(x: f32) -> f32 {
    x.round()
}

fn quantize_q8_0(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    out.extend(x.iter().map(|v| roundf(v * id) as i8 as u8));
}

/// Packs 32 4-bit codes: element j in the low nibble of byte j, element j+16 in its high nibble.
fn push_nibbles(q: impl Fn(usize) -> u8, out: &mut Vec<u8>) {
    out.extend((0..QK / 2).map(|j| q(j) | (q(j + QK / 2) << 4)));
}

fn code(v: f32) -> u8 {
    // ggml truncates toward zero, then clamps to the 4-bit range.
    (v.trunc() as i32).clamp(0, 15) as u8
}

fn quantize_q4_0(x: &[f32], out: &mut Vec<u8>) {
    // The value with the largest magnitude, sign kept, maps to -8.
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    push_nibbles(|j| code(x[j] * id + 8.5), out);
}

fn quantize_q4_1(x: &[f32], out: &mut Vec<u8>) {
    let min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
    push_nibbles(|j| code((x[j] - min) * id + 0.5), out);
}

/// Q4_K from f32, one 256-element super-block: per 32-element block the
/// range [min(x, 0), max(x)] over 15 steps, then the blocks' scales and
/// mins as 6-bit multiples of `d` and `dmin`, and the codes re-rounded
/// against the stored (quantized) scale and min. Simpler than ggml's
/// iterative search (`make_qkx2_quants`), so not byte-identical to its files.
fn quantize_q4_k(x: &[f32], out: &mut Vec<u8>) {
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    for (j, b) in x.chunks_exact(32).enumerate() {
        let mn = b.iter().copied().fold(0f32, f32::min);
        let mx = b.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        scales[j] = (mx - mn) / 15.0;
        mins[j] = -mn;
    }
    let six_bit = |v: &[f32; 8]| {
        let max = v.iter().copied().fold(0f32, f32::max);
        let d = f16::from_f32(max / 63.0);
        let id = if d.to_f32() > 0.0 {
            1.0 / d.to_f32()
        } else {
            0.0
        };
        (d, v.map(|s| (roundf(s * id) as i32).clamp(0, 63) as u8))
    };
    let (d, sc) = six_bit(&scales);
    let (dmin, m) = six_bit(&mins);
    out.extend_from_slice(&d.to_le_bytes());
    out.extend_from_slice(&dmin.to_le_bytes());
    // The inverse of scale_min_k4: blocks 0..3 in the low 6 bits of bytes
    // 0..7, blocks 4..7 split over the nibbles of bytes 8..11 and the top
    // two bits of bytes 0..7.
    let mut packed = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            packed[j] = sc[j];
            packed[j + 4] = m[j];
        } else {
            packed[j + 4] = (sc[j] & 0x0f) | ((m[j] & 0x0f) << 4);
            packed[j - 4] |= (sc[j] >> 4) << 6;
            packed[j] |= (m[j] >> 4) << 6;
        }
    }
    out.extend_from_slice(&packed);
    let codes: Vec<u8> = x
        .chunks_exact(32)
        .enumerate()
        .flat_map(|(j, b)| {
            let step = d.to_f32() * sc[j] as f32;
            let off = dmin.to_f32() * m[j] as f32;
            let is = if step > 0.0 { 1.0 / step } else { 0.0 };
            b.iter()
                .map(move |v| (roundf((v + off) * is) as i32).clamp(0, 15) as u8)
        })
        .collect();
    for c in codes.chunks_exact(64) {
        out.extend((0..32).map(|l| c[l] | (c[l + 32] << 4)));
    }
}

/// Q6_K from f32, one 256-element super-block: per 16-element block the
/// value of largest magnitude maps to −32 (as Q4_0 does with −8), the 16
/// block scales become signed 8-bit multiples of `d`, and the codes are
/// re-rounded against the stored scales. Not ggml's search, as for Q4_K.
fn quantize_q6_k(x: &[f32], out: &mut Vec<u8>) {
    let mut scales = [0f32; 16];
    for (j, b) in x.chunks_exact(16).enumerate() {
        let max = b
            .iter()
            .copied()
            .fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
        scales[j] = max / -32.0;
    }
    let amax = scales.iter().fold(0f32, |m, s| m.max(s.abs()));
    let d = f16::from_f32(amax / 127.0);
    let id = if d.to_f32() > 0.0 {
        1.0 / d.to_f32()
    } else {
        0.0
    };
    let sc = scales.map(|s| (roundf(s * id) as i32).clamp(-128, 127) as i8);
    let codes: Vec<u8> = x
        .chunks_exact(16)
        .enumerate()
        .flat_map(|(j, b)| {
            let step = d.to_f32() * sc[j] as f32;
            let is = if step != 0.0 { 1.0 / step } else { 0.0 };
            b.iter()
                .map(move |v| ((roundf(v * is) as i32).clamp(-32, 31) + 32) as u8)
        })
        .collect();
    // The inverse of q6_k_codes.
    let mut ql = [0u8; 128];
    let mut qh = [0u8; 64];
    for n in 0..2 {
        let c = &codes[128 * n..128 * n + 128];
        for l in 0..32 {
            ql[64 * n + l] = (c[l] & 0x0f) | ((c[l + 64] & 0x0f) << 4);
            ql[64 * n + l + 32] = (c[l + 32] & 0x0f) | ((c[l + 96] & 0x0f) << 4);
            qh[32 * n + l] = (c[l] >> 4)
                | ((c[l + 32] >> 4) << 2)
                | ((c[l + 64] >> 4) << 4)
                | ((c[l + 96] >> 4) << 6);
        }
    }
    out.extend_from_slice(&ql);
    out.extend_from_slice(&qh);
    out.extend(sc.iter().map(|&s| s as u8));
    out.extend_from_slice(&d.to_le_bytes());
}
