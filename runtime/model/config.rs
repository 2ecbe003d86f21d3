//! The architecture-independent description of a decoder-only transformer,
//! filled from GGUF metadata or a Hugging Face `config.json`.

use serde::{Deserialize, Serialize};

pub use crate::types::RopeLayout;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor`.
    Linear {
        factor: f32,
    },
    /// Llama 3.1 frequency-dependent scaling.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: f32,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub rope_layout: RopeLayout,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    /// lm_head shares the token embedding matrix.
    pub tie_word_embeddings: bool,
    /// Q/K/V projections carry a bias (Qwen2).
    pub attention_bias: bool,
    /// Per-head RMSNorm on Q and K before RoPE (Qwen3).
    pub qk_norm: bool,
    /// Mixture-of-experts feed-forward blocks (Mixtral, Qwen2/3-MoE);
    /// `None` for a dense model.
    #[serde(default)]
    pub moe: Option<super::moe::MoeConfig>,
    /// How embeddings pool the prompt, when the model declares it (GGUF
    /// `pooling_type`, sentence-transformers modules); `None`: it does not.
    #[serde(default)]
    pub pooling: Option<super::Pooling>,
}

impl ModelConfig {
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Inverse frequencies for each rotated pair (length head_dim/2), with the
    /// configured scaling applied. GPU and CPU reference both use this table.
    pub fn rope_inv_freqs(&self) -> Vec<f32> {
        let half = self.head_dim / 2;
        let d = self.head_dim as f64;
        (0..half)
            .map(|i| {
                let base = 1.0 / (self.rope_theta as f64).powf(2.0 * i as f64 / d);
                let f = match self.rope_scaling {
                    RopeScaling::None => base,
                    RopeScaling::Linear { factor } => base / factor as f64,
                    RopeScaling::Llama3 {
                        factor,
                        low_freq_factor,
                        high_freq_factor,
                        original_max_position_embeddings,
                    } => {
                        let (factor, lo, hi, old) = (
                            factor as f64,
                            low_freq_factor as f64,
                            high_freq_factor as f64,
                            original_max_position_embeddings as f64,
                        );
                        let low_freq_wavelen = old / lo;
                        let high_freq_wavelen = old / hi;
                        let wavelen = 2.0 * std::f64::consts::PI / base;
                        if wavelen < high_freq_wavelen {
                            base
                        } else if wavelen > low_freq_wavelen {
                            base / factor
                        } else {
                            let smooth = (old / wavelen - lo) / (hi - lo);
                            (1.0 - smooth) * base / factor + smooth * base
                        }
                    }
                };
                f as f32
            })
            .collect()
    }

    /// Checks the invariants the kernels rely on and the bounds every size
    /// is held to; a file that breaks them gets a clear error. Errors name
    /// the config's own fields; loaders call [`ModelConfig::validate_keyed`]
    /// to name their file's keys instead.
    pub fn validate(&self) -> crate::Result<()> {
        self.validate_keyed(&|field| field.to_string())
    }

    /// [`ModelConfig::validate`] with `key` mapping a field name
    /// (`num_layers`, `rms_norm_eps`, ...) to the key the file stores it under.
    pub fn validate_keyed(&self, key: &dyn Fn(&str) -> String) -> crate::Result<()> {
        let err = |m: String| Err(crate::HearthError::Config(m));
        let bounded = |field: &str, v: usize, max: usize| {
            if v == 0 || v > max {
                return err(format!(
                    "`{}` = {v} is outside the supported range 1..={max}",
                    key(field)
                ));
            }
            Ok(())
        };
        bounded("num_layers", self.num_layers, limits::MAX_LAYERS)?;
        bounded("hidden_size", self.hidden_size, limits::MAX_HIDDEN)?;
        bounded("intermediate_size", self.intermediate_size, limits::MAX_FFN)?;
        bounded("vocab_size", self.vocab_size, limits::MAX_VOCAB)?;
        bounded("num_heads", self.num_heads, limits::MAX_HEADS)?;
        bounded("num_kv_heads", self.num_kv_heads, limits::MAX_HEADS)?;
        bounded(
            "max_position_embeddings",
            self.max_position_embeddings,
            limits::MAX_CONTEXT,
        )?;
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return err(format!(
                "`{}` ({}) must be a multiple of `{}` ({})",
                key("num_heads"),
                self.num_heads,
                key("num_kv_heads"),
                self.num_kv_heads
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) || self.head_dim > 256 {
            return err(format!(
                "`{}` = {} must be even and at most 256",
                key("head_dim"),
                self.head_dim
            ));
        }
        let positive = |field: &str, v: f32| {
            if !(v.is_finite() && v > 0.0) {
                return err(format!(
                    "`{}` = {v} must be finite and positive",
                    key(field)
                ));
            }
            Ok(())
        };
        positive("rms_norm_eps", self.rms_norm_eps)?;
        positive("rope_theta", self.rope_theta)?;
        match self.rope_scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => positive("rope_scaling.factor", factor)?,
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                positive("rope_scaling.factor", factor)?;
                positive("rope_scaling.low_freq_factor", low_freq_factor)?;
                positive("rope_scaling.high_freq_factor", high_freq_factor)?;
                positive(
                    "rope_scaling.original_max_position_embeddings",
                    original_max_position_embeddings,
                )?;
                if high_freq_factor <= low_freq_factor {
                    return err(format!(
                        "`{}` ({high_freq_factor}) must be larger than `{}` ({low_freq_factor})",
                        key("rope_scaling.high_freq_factor"),
                        key("rope_scaling.low_freq_factor")
                    ));
                }
            }
        }
        if let Some(moe) = &self.moe {
            moe.validate_keyed(self.num_layers, key)?;
        }
        Ok(())
    }

    /// Checks the config against the tensors in the file, before anything
    /// is sized from it: the layer count must equal the layers whose tensors
    /// are present (`blk.N.*`, canonical names), and the vocabulary the
    /// embedding matrix's rows (`embd_rows`, when the file has one).
    pub fn check_against_tensors<'a>(
        &self,
        names: impl Iterator<Item = &'a str>,
        embd_rows: Option<usize>,
        key: &dyn Fn(&str) -> String,
    ) -> crate::Result<()> {
        let err = |m: String| Err(crate::HearthError::Config(m));
        let layers: std::collections::BTreeSet<usize> = names
            .filter_map(|n| n.strip_prefix("blk.")?.split_once('.')?.0.parse().ok())
            .collect();
        let last = layers.last().copied();
        if layers.len() != self.num_layers || last.map(|l| l + 1) != Some(self.num_layers) {
            let found = match last {
                None => "no layer tensors".to_string(),
                Some(l) => format!("tensors for {} layers (numbered up to {l})", layers.len()),
            };
            return err(format!(
                "`{}` = {} but the file has {found}",
                key("num_layers"),
                self.num_layers
            ));
        }
        if let Some(rows) = embd_rows.filter(|&r| r != self.vocab_size) {
            return err(format!(
                "`{}` = {} but {} has {rows} rows",
                key("vocab_size"),
                self.vocab_size,
                names::TOKEN_EMBD
            ));
        }
        Ok(())
    }
}

/// Bounds on model sizes, far above any real model's and low enough that
/// nothing sized from them can exhaust memory before the tensors are checked.
pub mod limits {
    pub const MAX_LAYERS: usize = 1024;
    pub const MAX_HIDDEN: usize = 1 << 16;
    pub const MAX_FFN: usize = 1 << 18;
    pub const MAX_HEADS: usize = 1024;
    pub const MAX_VOCAB: usize = 1 << 22;
    pub const MAX_CONTEXT: usize = 1 << 24;
}

/// Canonical (GGUF-style) tensor names; the safetensors loader maps Hugging Face names onto these.
pub mod names {
    pub const TOKEN_EMBD: &str = "token_embd.weight";
    pub const OUTPUT_NORM: &str = "output_norm.weight";
    pub const OUTPUT: &str = "output.weight";

    pub fn blk(layer: usize, what: &str) -> String {
        format!("blk.{layer}.{what}")
    }
}
