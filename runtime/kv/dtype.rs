//! How the cache stores one head row (the `head_dim` K or V values of one
//! token and one KV head): plain floats, or 8-/~4-bit codes in groups of
//! [`GROUP`] with f16 scales after the codes (layouts in [`super::quant`]).

use crate::{HearthError, Result};

/// Elements per quantization group: consecutive values of one head row.
pub const GROUP: u32 = 32;

/// Element type of the cached K/V values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KvDtype {
    /// Two halves packed per u32 word (`pack2x16float`); works without `shader-f16`.
    #[default]
    F16,
    /// Exact; for tests and for users who trade memory for bit-exactness.
    F32,
    /// Signed 8-bit codes, one f16 scale per group (0.53x the bytes of f16).
    Q8,
    /// 4 bits per value on average, an f16 scale and minimum per group (0.31x
    /// the bytes of f16): keys take 5-bit codes and values 3-bit ones, of the
    /// row's Walsh-Hadamard transform (layout in [`super::quant`]).
    Q4,
}

impl KvDtype {
    pub const ALL: [KvDtype; 4] = [KvDtype::F16, KvDtype::F32, KvDtype::Q8, KvDtype::Q4];

    /// The `--kv-dtype` spelling.
    pub fn name(self) -> &'static str {
        match self {
            KvDtype::F16 => "f16",
            KvDtype::F32 => "f32",
            KvDtype::Q8 => "q8",
            KvDtype::Q4 => "q4",
        }
    }

    /// Parses a `--kv-dtype` value; the error lists the accepted ones.
    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|d| d.name()).collect();
                HearthError::Config(format!(
                    "unknown KV dtype `{s}` (expected one of {})",
                    names.join(", ")
                ))
            })
    }

    pub fn is_quantized(self) -> bool {
        matches!(self, KvDtype::Q8 | KvDtype::Q4)
    }

    /// u32 words of one head row, scales included. `head_dim` must pass
    /// [`KvDtype::check_head_dim`].
    pub fn row_words(self, head_dim: u32) -> u32 {
        let groups = head_dim / GROUP;
        match self {
            KvDtype::F16 => head_dim / 2,
            KvDtype::F32 => head_dim,
            // Codes, then the groups' f16 scales two per word.
            KvDtype::Q8 => head_dim / 4 + groups.div_ceil(2),
            // 4 bits per value, then one (scale, min) f16 pair per group:
            // a key row holds its fifth bits in the value row's spare words.
            KvDtype::Q4 => head_dim / 8 + groups,
        }
    }

    /// Bytes of one head row, scales included.
    pub fn row_bytes(self, head_dim: u32) -> u64 {
        self.row_words(head_dim) as u64 * 4
    }

    /// The quantized forms work on whole groups of one head row.
    pub fn check_head_dim(self, head_dim: u32) -> Result<()> {
        if self.is_quantized() && !head_dim.is_multiple_of(GROUP) {
            return Err(HearthError::Unsupported(format!(
                "KV dtype {} with head_dim {head_dim} (quantized KV needs head_dim a multiple of {GROUP}; use the f16 KV cache: --kv-dtype f16, or kv_dtype: 'f16' on the web)",
                self.name()
            )));
        }
        Ok(())
    }
}

impl std::fmt::Display for KvDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_sizes_and_ratios() {
        assert_eq!(KvDtype::F16.row_bytes(64), 128);
        assert_eq!(KvDtype::F32.row_bytes(64), 256);
        assert_eq!(KvDtype::Q8.row_bytes(64), 68);
        assert_eq!(KvDtype::Q4.row_bytes(64), 40);
        // An odd group count still rounds its scale words up.
        assert_eq!(KvDtype::Q8.row_bytes(96), 96 + 8);
        for hd in [32, 64, 96, 128, 256] {
            let f16 = KvDtype::F16.row_bytes(hd) as f64;
            assert!(KvDtype::Q8.row_bytes(hd) as f64 <= 0.5625 * f16, "hd {hd}");
            assert!(KvDtype::Q4.row_bytes(hd) as f64 <= 0.3125 * f16, "hd {hd}");
        }
    }

    #[test]
    fn parse_and_head_dim_checks() {
        for d in KvDtype::ALL {
            assert_eq!(KvDtype::parse(d.name()).unwrap(), d);
        }
        let e = KvDtype::parse("q5").unwrap_err().to_string();
        assert!(e.contains("q5") && e.contains("f16, f32, q8, q4"), "{e}");
        assert!(KvDtype::Q8.check_head_dim(16).is_err());
        assert!(KvDtype::Q4.check_head_dim(48).is_err());
        assert!(KvDtype::Q4.check_head_dim(64).is_ok());
        assert!(KvDtype::F16.check_head_dim(16).is_ok());
    }
}
