//! Block formats against golden fixtures from the Python `gguf` package
//! (tests/fixtures/gen_quant_fixtures.py), plus round-trip error bounds.

use hearth::model::DType;
use hearth::quant::{blocks, dequantize, quantize};
use hearth::HearthError;

const FORMATS: [(&str, DType); 5] = [
    ("f16", DType::F16),
    ("bf16", DType::BF16),
    ("q8_0", DType::Q8_0),
    ("q4_0", DType::Q4_0),
    ("q4_1", DType::Q4_1),
];

/// Formats checked on random blocks dequantized by gguf-py (it has no
/// quantizer for them to compare Hearth's against).
const READ_ONLY: [(&str, DType); 5] = [
    ("q5_0", DType::Q5_0),
    ("q5_1", DType::Q5_1),
    ("q4_k", DType::Q4_K),
    ("q5_k", DType::Q5_K),
    ("q6_k", DType::Q6_K),
];

fn fixture(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/quant")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn quantize_matches_gguf_python_byte_for_byte() {
    let x = f32s(&fixture("input.f32"));
    assert_eq!(x.len(), 320);
    for (name, dtype) in FORMATS {
        let want = fixture(&format!("{name}.bin"));
        let got = quantize(dtype, &x).unwrap();
        assert_eq!(got.len(), want.len(), "{name} size");
        if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
            panic!(
                "{name}: first differing byte {i} (block {}): got {} want {}",
                i / dtype.block_bytes(),
                got[i],
                want[i]
            );
        }
    }
}

#[test]
fn dequantize_matches_gguf_python_value_for_value() {
    for (name, dtype) in FORMATS.into_iter().chain(READ_ONLY) {
        let q = fixture(&format!("{name}.bin"));
        let want = f32s(&fixture(&format!("{name}.deq.f32")));
        let got = dequantize(dtype, &q, want.len()).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g.to_bits() == w.to_bits() || g == w,
                "{name}[{i}]: got {g} want {w}"
            );
        }
    }
}

/// Hearth's own Q4_K/Q6_K quantizers (not ggml's search, so no byte
/// fixtures): every element within the bound its stored scales allow, and
/// the error well below the block step on average.
#[test]
fn k_quant_round_trip_error_bounds() {
    let n = 256 * 6;
    let x: Vec<f32> = (0..n)
        .map(|i| {
            ((i as f32 * 0.37).sin() * 3.0 + (i as f32 * 0.011).cos()) * (1.0 + (i / 256) as f32)
        })
        .collect();
    for dtype in [DType::Q4_K, DType::Q6_K] {
        let q = quantize(dtype, &x).unwrap();
        assert_eq!(q.len(), n / 256 * dtype.block_bytes());
        let y = dequantize(dtype, &q, n).unwrap();
        let (sub, levels) = if dtype == DType::Q4_K {
            (32, 15.0)
        } else {
            (16, 63.0)
        };
        for (s, (xs, ys)) in x.chunks(256).zip(y.chunks(256)).enumerate() {
            // Ideal step of each block, and the super-block's scale quantum.
            let steps: Vec<f32> = xs
                .chunks(sub)
                .map(|b| {
                    let mn = b.iter().copied().fold(0f32, f32::min);
                    let mx = b.iter().copied().fold(0f32, f32::max);
                    (mx - mn) / levels
                })
                .collect();
            let d = steps.iter().copied().fold(0f32, f32::max) / 63.0;
            for (i, (v, r)) in xs.iter().zip(ys).enumerate() {
                let tol = 0.51 * steps[i / sub] + levels * d + 1e-3 * v.abs();
                assert!(
                    (v - r).abs() <= tol,
                    "{dtype:?} super-block {s} [{i}]: {v} -> {r} (tol {tol})"
                );
            }
            let rms = (xs
                .iter()
                .zip(ys)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                / 256.0)
                .sqrt();
            let mean_step = steps.iter().sum::<f32>() / steps.len() as f32;
            assert!(
                rms < 0.6 * mean_step,
                "{dtype:?} super-block {s}: rms {rms} vs step {mean_step}"
            );
        }
    }
}

#[test]
fn read_only_formats_refuse_to_quantize_and_check_sizes() {
    for (name, dtype) in READ_ONLY {
        let q = fixture(&format!("{name}.bin"));
        let n = q.len() / dtype.block_bytes() * dtype.block_elems();
        if !dtype.can_quantize() {
            let err = quantize(dtype, &vec![0.5; n]).unwrap_err().to_string();
            assert!(
                err.contains(name) && err.contains("cannot quantize"),
                "{err}"
            );
        }
        // One byte short of the last block, and a count that splits a block.
        assert!(
            dequantize(dtype, &q[..q.len() - 1], n).is_err(),
            "{name} short"
        );
        assert!(
            dequantize(dtype, &q, n - 1).is_err(),
            "{name} partial block"
        );
    }
}

#[test]
fn f32_is_identity() {
    let x = f32s(&fixture("input.f32"));
    let q = quantize(DType::F32, &x).unwrap();
    assert_eq!(dequantize(DType::F32, &q, x.len()).unwrap(), x);
}

/// Round trips stay within each format's step: half a quantization step
/// for Q8_0/Q4_1 (plus f16 rounding of the scale), one step for Q4_0 whose
/// grid is asymmetric.
#[test]
fn round_trip_error_bounds() {
    let n = 32 * 37;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i as f32 * 0.37).sin() * 3.0) * (1.0 + (i / 32) as f32 * 0.1))
        .collect();
    for (_, dtype) in FORMATS {
        let y = dequantize(dtype, &quantize(dtype, &x).unwrap(), n).unwrap();
        for (b, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            let (min, max) = xb
                .iter()
                .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            for (v, r) in xb.iter().zip(yb) {
                let tol = match dtype {
                    DType::F16 => v.abs() * 1e-3 + 1e-7,
                    DType::BF16 => v.abs() * 4e-3 + 1e-30,
                    DType::Q8_0 => amax / 127.0 * 0.51 + amax * 1e-3,
                    DType::Q4_0 => amax / 8.0 * 1.01 + amax * 1e-3,
                    DType::Q4_1 => (max - min) / 15.0 * 0.51 + amax * 2e-3,
                    DType::F32 => 0.0,
                    other => unreachable!("{other:?} is not produced"),
                };
                assert!(
                    (v - r).abs() <= tol,
                    "{dtype:?} block {b}: {v} -> {r} (tol {tol})"
                );
            }
        }
    }
}

#[test]
fn bf16_rounding_and_nan() {
    // Round to nearest even at the halfway point; NaN stays NaN (quiet).
    assert_eq!(blocks::f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
    assert_eq!(blocks::f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
    assert_eq!(blocks::f32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
    assert!(blocks::bf16_to_f32(blocks::f32_to_bf16(f32::NAN)).is_nan());
    assert_eq!(blocks::bf16_to_f32(blocks::f32_to_bf16(-2.5)), -2.5);
}

#[test]
fn partial_blocks_and_short_data_are_errors() {
    assert!(matches!(
        quantize(DType::Q4_0, &[0.0; 33]),
        Err(HearthError::InvalidRequest(_))
    ));
    assert!(matches!(
        dequantize(DType::Q8_0, &[0u8; 34], 48),
        Err(HearthError::InvalidFile(_))
    ));
    let err = dequantize(DType::Q4_1, &[0u8; 39], 64).unwrap_err();
    assert!(err.to_string().contains("40 needed"), "{err}");
    // A huge element count is refused before anything is allocated.
    assert!(dequantize(DType::F32, &[0u8; 16], usize::MAX / 2).is_err());
}
