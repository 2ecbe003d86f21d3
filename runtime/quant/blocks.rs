//! GGUF block layouts on the CPU: dequantize to f32 and quantize from f32,
//! bit-exact with ggml's reference quantizers (`quantize_row_*_ref`), so a
//! model quantized on load matches one quantized by llama.cpp's tools.

use half::f16;

use crate::model::DType;
use crate::{HearthError, Result};

/// Elements per quantized block (Q8_0, Q4_0, Q4_1).
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
    }
    Ok(())
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
