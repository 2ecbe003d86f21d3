//! GGUF byte layout → GPU word layout.
//!
//! WGSL reads storage as u32 words, and GGUF blocks (34/18/20 bytes) are not
//! word-aligned, so quantized values and scales go into two separate word
//! arrays:
//! - Q8_0: qs = 8 words per block (4 × i8 per word, element order);
//!   scales = f16 `d`, two per word (block `b` at word `b/2`, half `b%2`).
//! - Q4_0: qs = 4 words per block (the 16 GGUF nibble bytes as they are:
//!   byte `j` holds element `j` low and `j+16` high); scales as Q8_0.
//! - Q4_1: qs as Q4_0; scales = one word per block, `(d, m)` as an f16 pair.
//! - Q4_K: qs as Q4_0, one 32-element sub-block at a time (GGUF keeps two
//!   sub-blocks in the low and high nibbles of 32 bytes); scales = 4 words
//!   per 256-element super-block: `(d, dmin)` and the 12 packed scale bytes.
//! - Q5_0/Q5_1: qs as Q4_0 (the low four bits); scales = 2 words per block:
//!   the fifth bits (bit i: element i), then `d` (Q5_0, low half) or `(d, m)`.
//! - Q5_K: qs as Q4_K; scales = 12 words per super-block: Q4_K's 4, then the
//!   fifth bits of each of its 8 blocks.
//! - Q6_K: qs = the low four bits of the 6-bit codes in the Q4 layout, per
//!   32-element block; scales = 3 words per block: the two-bit highs of
//!   elements 0..15 and 16..31 (element i at bits 2i), then the two i8
//!   sub-block scales (bytes 0 and 1) and `d` (high half).
//! - F16: two halves per word; each row starts on a word (rows of odd length
//!   get one zero half of padding).
//! - BF16 is stored as F16: the kernels then only need f16 paths, and the
//!   narrower exponent range does not matter for weights (magnitudes far below
//!   65504); values outside it saturate to ±inf, as any f16 conversion does.
//! - F32: the bits as they are.
//!
//! Block indices in `scales` count from the first row of the packed range, so
//! each row chunk of a matrix is self-contained.

use half::{bf16, f16};

use crate::types::DType;
use crate::{HearthError, Result};

/// One range of rows in GPU layout.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Packed {
    pub qs: Vec<u32>,
    /// Empty for float formats.
    pub scales: Vec<u32>,
}

/// The form `dtype` takes on the GPU (BF16 is stored as F16).
pub fn gpu_dtype(dtype: DType) -> DType {
    match dtype {
        DType::BF16 => DType::F16,
        d => d,
    }
}

/// Words of `qs` per row of `cols` elements in the GPU layout of `dtype`.
pub fn row_words(dtype: DType, cols: usize) -> usize {
    match gpu_dtype(dtype) {
        DType::F32 => cols,
        DType::Q8_0 => cols / 32 * 8,
        DType::Q4_0
        | DType::Q4_1
        | DType::Q4_K
        | DType::Q5_0
        | DType::Q5_1
        | DType::Q5_K
        | DType::Q6_K => cols / 32 * 4,
        // F16, and what gpu_dtype stores as F16.
        _ => cols.div_ceil(2),
    }
}

/// Words of `scales` for `rows` rows of `cols` elements.
pub fn scale_words(dtype: DType, rows: usize, cols: usize) -> usize {
    let blocks = rows * (cols / 32);
    match gpu_dtype(dtype) {
        DType::Q8_0 | DType::Q4_0 => blocks.div_ceil(2),
        DType::Q4_1 => blocks,
        DType::Q4_K => blocks / 8 * 4,
        DType::Q6_K => blocks * 3,
        DType::Q5_0 | DType::Q5_1 => blocks * 2,
        DType::Q5_K => blocks / 8 * 12,
        _ => 0,
    }
}

/// Checks that `cols` can be stored as `dtype` (quantized rows are whole blocks).
pub fn check_cols(dtype: DType, cols: usize) -> Result<()> {
    if cols == 0 {
        return Err(HearthError::Unsupported("matrix with zero columns".into()));
    }
    if dtype.is_quantized() && !cols.is_multiple_of(dtype.block_elems()) {
        return Err(HearthError::Unsupported(format!(
            "{} needs a row length that is a multiple of {}, got {cols}",
            dtype.name(),
            dtype.block_elems()
        )));
    }
    Ok(())
}

fn half_bits(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

fn word(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Packs `rows` rows of `cols` elements, given in GGUF byte layout, into the
/// GPU layout of `gpu_dtype(dtype)`.
pub fn pack(dtype: DType, data: &[u8], rows: usize, cols: usize) -> Result<Packed> {
    check_cols(dtype, cols)?;
    let n = rows
        .checked_mul(cols)
        .ok_or_else(|| HearthError::InvalidFile(format!("{rows}×{cols} overflows")))?;
    let need = dtype.bytes_for(n)?;
    if data.len() < need {
        return Err(HearthError::InvalidFile(format!(
            "{} matrix {rows}×{cols} needs {need} bytes, got {}",
            dtype.name(),
            data.len()
        )));
    }
    let data = &data[..need];
    let rw = row_words(dtype, cols);
    let mut out = Packed {
        qs: Vec::with_capacity(rows * rw),
        scales: Vec::with_capacity(scale_words(dtype, rows, cols)),
    };
    match dtype {
        DType::F32 => out.qs.extend(data.chunks_exact(4).map(word)),
        DType::F16 | DType::BF16 => {
            let to_f16 = |b: &[u8]| -> u32 {
                let h = half_bits(b);
                match dtype {
                    DType::BF16 => f16::from_f32(bf16::from_bits(h).to_f32()).to_bits() as u32,
                    _ => h as u32,
                }
            };
            for row in data.chunks_exact(cols * 2) {
                let mut halves = row.chunks_exact(2);
                for _ in 0..rw {
                    let lo = halves.next().map_or(0, to_f16);
                    let hi = halves.next().map_or(0, to_f16);
                    out.qs.push(lo | (hi << 16));
                }
            }
        }
        DType::Q8_0 | DType::Q4_0 => {
            let (bb, qs_at) = (dtype.block_bytes(), 2);
            let mut pending: Option<u32> = None;
            for block in data.chunks_exact(bb) {
                out.qs.extend(block[qs_at..].chunks_exact(4).map(word));
                let d = half_bits(block) as u32;
                match pending.take() {
                    None => pending = Some(d),
                    Some(lo) => out.scales.push(lo | (d << 16)),
                }
            }
            if let Some(lo) = pending {
                out.scales.push(lo);
            }
        }
        DType::Q4_1 => {
            for block in data.chunks_exact(20) {
                out.scales.push(word(&block[..4]));
                out.qs.extend(block[4..].chunks_exact(4).map(word));
            }
        }
        DType::Q4_K => {
            // Scales: the super-block's first 16 bytes (d, dmin, 12 scale
            // bytes) as 4 words. Values: each 32 GGUF bytes hold two
            // sub-blocks (low nibbles, then high), repacked into the Q4
            // layout one sub-block at a time.
            for block in data.chunks_exact(144) {
                out.scales.extend(block[..16].chunks_exact(4).map(word));
                push_k_nibbles(&block[16..], &mut out.qs);
            }
        }
        DType::Q5_0 | DType::Q5_1 => {
            // GGUF's nibble bytes are already the Q4 layout.
            let (bb, at) = if dtype == DType::Q5_1 {
                (24, 4)
            } else {
                (22, 2)
            };
            for block in data.chunks_exact(bb) {
                out.scales.push(word(&block[at..at + 4]));
                out.scales.push(if at == 4 {
                    word(&block[..4])
                } else {
                    half_bits(block) as u32
                });
                out.qs.extend(block[at + 4..].chunks_exact(4).map(word));
            }
        }
        DType::Q5_K => {
            // As Q4_K, plus one word of fifth bits per block: GGUF keeps
            // block j's in bit j of the 32 high-bit bytes.
            for block in data.chunks_exact(176) {
                out.scales.extend(block[..16].chunks_exact(4).map(word));
                let qh = &block[16..48];
                out.scales.extend((0..8).map(|j| {
                    qh.iter()
                        .enumerate()
                        .fold(0u32, |w, (l, &h)| w | (((h >> j) & 1) as u32) << l)
                }));
                push_k_nibbles(&block[48..176], &mut out.qs);
            }
        }
        DType::Q6_K => {
            for block in data.chunks_exact(210) {
                let codes = crate::quant::blocks::q6_k_codes(block);
                let d = half_bits(&block[208..]) as u32;
                for (bi, c) in codes.chunks_exact(32).enumerate() {
                    let bytes: Vec<u8> =
                        (0..16).map(|i| (c[i] & 0x0f) | (c[i + 16] << 4)).collect();
                    out.qs.extend(bytes.chunks_exact(4).map(word));
                    let highs = |h: &[u8]| {
                        h.iter()
                            .enumerate()
                            .fold(0u32, |w, (i, &v)| w | ((v as u32 >> 4) << (2 * i)))
                    };
                    out.scales.push(highs(&c[..16]));
                    out.scales.push(highs(&c[16..]));
                    let (s0, s1) = (block[192 + 2 * bi] as u32, block[193 + 2 * bi] as u32);
                    out.scales.push(s0 | (s1 << 8) | (d << 16));
                }
            }
        }
    }
    Ok(out)
}

/// Q4_K/Q5_K nibbles (128 bytes, each 32 holding two blocks: the first in
/// the low nibbles) in the Q4 layout, one 32-element block at a time.
fn push_k_nibbles(qs: &[u8], out: &mut Vec<u32>) {
    for pair in qs.chunks_exact(32) {
        for shift in [0, 4] {
            let v = |l: usize| (pair[l] >> shift) & 0x0f;
            let bytes: Vec<u8> = (0..16).map(|i| v(i) | (v(i + 16) << 4)).collect();
            out.extend(bytes.chunks_exact(4).map(word));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_words_and_scales() {
        // Three blocks: scales pack two per word, the third alone.
        let mut data = Vec::new();
        for b in 0..3u8 {
            data.extend_from_slice(&f16::from_f32(b as f32 + 1.0).to_le_bytes());
            data.extend((0..32u8).map(|i| i.wrapping_add(b * 32)));
        }
        let p = pack(DType::Q8_0, &data, 1, 96).unwrap();
        assert_eq!(p.qs.len(), 24);
        assert_eq!(p.qs[0], u32::from_le_bytes([0, 1, 2, 3]));
        assert_eq!(p.qs[8], u32::from_le_bytes([32, 33, 34, 35]));
        assert_eq!(p.scales.len(), 2);
        assert_eq!(p.scales[0] & 0xffff, f16::from_f32(1.0).to_bits() as u32);
        assert_eq!(p.scales[0] >> 16, f16::from_f32(2.0).to_bits() as u32);
        assert_eq!(p.scales[1], f16::from_f32(3.0).to_bits() as u32);
    }

    #[test]
    fn q4_1_scale_pair() {
        let mut data = f16::from_f32(0.5).to_le_bytes().to_vec();
        data.extend_from_slice(&f16::from_f32(-2.0).to_le_bytes());
        data.extend(0..16u8);
        let p = pack(DType::Q4_1, &data, 1, 32).unwrap();
        assert_eq!(
            p.qs,
            vec![0x0302_0100, 0x0706_0504, 0x0b0a_0908, 0x0f0e_0d0c]
        );
        assert_eq!(
            p.scales,
            vec![(f16::from_f32(-2.0).to_bits() as u32) << 16 | 0x3800]
        );
    }

    #[test]
    fn f16_odd_rows_are_padded_and_bf16_converts() {
        let vals = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let f16b: Vec<u8> = vals
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect();
        let p = pack(DType::F16, &f16b, 2, 3).unwrap();
        assert_eq!(p.qs.len(), 4);
        let h = |v: f32| f16::from_f32(v).to_bits() as u32;
        assert_eq!(
            p.qs,
            vec![h(1.0) | h(2.0) << 16, h(3.0), h(4.0) | h(5.0) << 16, h(6.0)]
        );
        let bf: Vec<u8> = vals
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect();
        assert_eq!(pack(DType::BF16, &bf, 2, 3).unwrap(), p);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(pack(DType::Q8_0, &[0; 34], 1, 33).is_err());
        assert!(pack(DType::Q8_0, &[0; 33], 1, 32).is_err());
        assert!(pack(DType::F32, &[0; 4], 1, 0).is_err());
        assert!(pack(DType::F32, &[0; 4], usize::MAX, 2).is_err());
    }
}
