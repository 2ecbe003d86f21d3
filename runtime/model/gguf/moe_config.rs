//! The mixture-of-experts part of a GGUF file's metadata, as llama.cpp
//! writes it for Mixtral (`llama` with `expert_count`), `qwen2moe` and
//! `qwen3moe`.

use super::GgufFile;
use crate::model::config::names;
use crate::model::moe::MoeConfig;
use crate::{HearthError, Result};

/// llama.cpp's `LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX`.
const GATING_SOFTMAX: u64 = 1;

impl GgufFile {
    /// `None` for a dense model. `ffn` is the model's `feed_forward_length`,
    /// which is the experts' width for `llama` (Mixtral) and the shared
    /// expert's default width for `qwen2moe`, as in llama.cpp.
    pub(super) fn moe_config(
        &self,
        arch: &str,
        num_layers: usize,
        ffn: usize,
    ) -> Result<Option<MoeConfig>> {
        let k = |s: &str| format!("{arch}.{s}");
        let num_experts = self.get_usize(&k("expert_count"))?.unwrap_or(0);
        if num_experts == 0 {
            return Ok(None);
        }
        if !matches!(arch, "llama" | "qwen2moe" | "qwen3moe") {
            return Err(HearthError::Unsupported(format!(
                "mixture-of-experts `{arch}` model ({num_experts} experts; supported: llama (Mixtral), qwen2moe, qwen3moe)"
            )));
        }
        if self.has_tensor(&names::blk(0, "ffn_gate.0.weight")) {
            return Err(HearthError::Unsupported(
                "per-expert GGUF tensors (`blk.N.ffn_gate.E.weight`, the layout of early Mixtral conversions); re-convert the model with a current llama.cpp".into(),
            ));
        }
        let missing =
            |key: String| HearthError::Config(format!("GGUF metadata key `{key}` is missing"));
        let experts_per_token = self
            .get_usize(&k("expert_used_count"))?
            .ok_or_else(|| missing(k("expert_used_count")))?;
        let expert_intermediate_size = match arch {
            "llama" => ffn,
            _ => self
                .get_usize(&k("expert_feed_forward_length"))?
                .ok_or_else(|| missing(k("expert_feed_forward_length")))?,
        };
        if let Some(g) = self.get_u64(&k("expert_gating_func"))? {
            if g != GATING_SOFTMAX {
                return Err(HearthError::Unsupported(format!(
                    "`{}` = {g} (only 1, a softmax over all experts before top-k, is implemented)",
                    k("expert_gating_func")
                )));
            }
        }
        if let Some(s) = self.get_f32(&k("expert_weights_scale"))? {
            if s != 1.0 {
                return Err(HearthError::Unsupported(format!(
                    "`{}` = {s} (scaled expert weights are not implemented)",
                    k("expert_weights_scale")
                )));
            }
        }
        for key in ["leading_dense_block_count", "expert_group_count"] {
            if self.get_usize(&k(key))?.unwrap_or(0) > 0 {
                return Err(HearthError::Unsupported(format!(
                    "`{}` (not implemented)",
                    k(key)
                )));
            }
        }
        // llama.cpp renormalises the top-k for Mixtral and Qwen3-MoE and
        // not for Qwen2-MoE unless the file says otherwise.
        let norm_topk_prob = match self.get_bool(&k("expert_weights_norm"))? {
            Some(b) => b,
            None => arch != "qwen2moe",
        };
        let shared = match arch {
            "qwen2moe" => Some(
                self.get_usize(&k("expert_shared_feed_forward_length"))?
                    .unwrap_or(ffn),
            ),
            _ => {
                if self.get_usize(&k("expert_shared_count"))?.unwrap_or(0) > 0 {
                    return Err(HearthError::Unsupported(format!(
                        "shared experts in a `{arch}` model"
                    )));
                }
                None
            }
        };
        // A layer is dense when it carries a dense MLP and no router (a
        // converted Qwen MoE with `mlp_only_layers`); any other layer must
        // have the expert tensors, and their absence is reported by name.
        let sparse_layers = (0..num_layers)
            .map(|l| {
                self.has_tensor(&names::blk(l, "ffn_gate_inp.weight"))
                    || !self.has_tensor(&names::blk(l, "ffn_gate.weight"))
            })
            .collect();
        Ok(Some(MoeConfig {
            num_experts,
            experts_per_token,
            expert_intermediate_size,
            norm_topk_prob,
            sparse_layers,
            shared_expert_intermediate_size: shared,
        }))
    }

    /// The metadata key of a [`MoeConfig`] field, for error messages.
    pub(super) fn moe_key(arch: &str, field: &str) -> Option<String> {
        let k = |s: &str| Some(format!("{arch}.{s}"));
        match field {
            "moe.num_experts" => k("expert_count"),
            "moe.experts_per_token" => k("expert_used_count"),
            "moe.expert_intermediate_size" if arch == "llama" => k("feed_forward_length"),
            "moe.expert_intermediate_size" => k("expert_feed_forward_length"),
            "moe.shared_expert_intermediate_size" => k("expert_shared_feed_forward_length"),
            _ => None,
        }
    }
}
