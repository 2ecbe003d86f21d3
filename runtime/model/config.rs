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

    /// Checks the invariants the kernels rely on; a file that breaks them gets a clear error.
    pub fn validate(&self) -> crate::Result<()> {
        let err = |m: String| Err(crate::HearthError::Config(m));
        if self.num_layers == 0 || self.hidden_size == 0 || self.vocab_size == 0 {
            return err("num_layers, hidden_size and vocab_size must be non-zero".into());
        }
        if self.num_heads == 0
            || self.num_kv_heads == 0
            || !self.num_heads.is_multiple_of(self.num_kv_heads)
        {
            return err(format!(
                "num_heads ({}) must be a non-zero multiple of num_kv_heads ({})",
                self.num_heads, self.num_kv_heads
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) || self.head_dim > 256 {
            return err(format!(
                "head_dim {} must be even and at most 256",
                self.head_dim
            ));
        }
        if self.intermediate_size == 0 {
            return err("intermediate_size must be non-zero".into());
        }
        if self.rope_theta.is_nan() || self.rope_theta <= 0.0 {
            return err(format!("rope_theta {} must be positive", self.rope_theta));
        }
        Ok(())
    }
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
