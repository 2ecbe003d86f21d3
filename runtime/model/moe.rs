//! Mixture-of-experts hyper-parameters (Mixtral, Qwen2-MoE, Qwen3-MoE):
//! how they are read from GGUF metadata and `config.json`, checked, and
//! which canonical tensors a sparse layer has.
//!
//! Canonical expert tensors follow llama.cpp: `blk.N.ffn_gate_inp.weight`
//! (router, `[experts, hidden]`), `blk.N.ffn_{gate,up}_exps.weight`
//! (`[experts, ffn, hidden]`), `blk.N.ffn_down_exps.weight`
//! (`[experts, hidden, ffn]`), and for Qwen2-MoE's shared expert
//! `blk.N.ffn_{gate,up,down}_shexp.weight` and its gate
//! `blk.N.ffn_gate_inp_shexp.weight` (`[hidden]`). Hugging Face's
//! per-expert matrices are stacked into these by the safetensors loader.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::{limits, names};
use crate::{HearthError, Result};

/// Far above any released model (Qwen3-235B has 128, DeepSeek-V3 256).
pub const MAX_EXPERTS: usize = 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoeConfig {
    pub num_experts: usize,
    /// Experts each token is routed to (top-k).
    pub experts_per_token: usize,
    /// Width of one expert's SwiGLU MLP.
    pub expert_intermediate_size: usize,
    /// Renormalise the selected experts' softmax probabilities to sum to one.
    pub norm_topk_prob: bool,
    /// Per layer: whether its feed-forward block is sparse (else a dense
    /// MLP of the model's `intermediate_size`).
    pub sparse_layers: Vec<bool>,
    /// Qwen2-MoE: an always-on expert of this width whose output is scaled
    /// by `sigmoid(ffn_gate_inp_shexp · x)` and added to the routed experts'.
    pub shared_expert_intermediate_size: Option<usize>,
}

impl MoeConfig {
    pub fn is_sparse(&self, layer: usize) -> bool {
        self.sparse_layers.get(layer).copied().unwrap_or(false)
    }

    /// Checks the bounds the forward pass relies on; `key` maps a field
    /// name (`moe.num_experts`, ...) to the key the file stores it under.
    pub fn validate_keyed(&self, num_layers: usize, key: &dyn Fn(&str) -> String) -> Result<()> {
        let err = |m: String| Err(HearthError::Config(m));
        let bounded = |field: &str, v: usize, max: usize| {
            if v == 0 || v > max {
                return err(format!(
                    "`{}` = {v} is outside the supported range 1..={max}",
                    key(field)
                ));
            }
            Ok(())
        };
        bounded("moe.num_experts", self.num_experts, MAX_EXPERTS)?;
        bounded("moe.experts_per_token", self.experts_per_token, MAX_EXPERTS)?;
        if self.experts_per_token > self.num_experts {
            return err(format!(
                "`{}` = {} is more than `{}` = {}",
                key("moe.experts_per_token"),
                self.experts_per_token,
                key("moe.num_experts"),
                self.num_experts
            ));
        }
        bounded(
            "moe.expert_intermediate_size",
            self.expert_intermediate_size,
            limits::MAX_FFN,
        )?;
        if let Some(s) = self.shared_expert_intermediate_size {
            bounded("moe.shared_expert_intermediate_size", s, limits::MAX_FFN)?;
        }
        if self.sparse_layers.len() != num_layers {
            return err(format!(
                "{} sparse-layer flags for {num_layers} layers",
                self.sparse_layers.len()
            ));
        }
        Ok(())
    }

    /// The canonical tensors (name, PyTorch shape) of sparse layer `l`'s
    /// feed-forward block.
    pub fn layer_tensors(&self, l: usize, hidden: usize) -> Vec<(String, Vec<usize>)> {
        let (e, f, h) = (self.num_experts, self.expert_intermediate_size, hidden);
        let mut v = vec![
            (names::blk(l, "ffn_gate_inp.weight"), vec![e, h]),
            (names::blk(l, "ffn_gate_exps.weight"), vec![e, f, h]),
            (names::blk(l, "ffn_up_exps.weight"), vec![e, f, h]),
            (names::blk(l, "ffn_down_exps.weight"), vec![e, h, f]),
        ];
        if let Some(s) = self.shared_expert_intermediate_size {
            v.push((names::blk(l, "ffn_gate_shexp.weight"), vec![s, h]));
            v.push((names::blk(l, "ffn_up_shexp.weight"), vec![s, h]));
            v.push((names::blk(l, "ffn_down_shexp.weight"), vec![h, s]));
            v.push((names::blk(l, "ffn_gate_inp_shexp.weight"), vec![h]));
        }
        v
    }

    /// Every sparse layer must have its router and stacked experts, and the
    /// expert count their leading dimension implies must be the config's
    /// (`meta` maps a canonical name to its shape; errors name
    /// `key("moe.num_experts")`).
    pub fn check_expert_tensors(
        &self,
        meta: &dyn Fn(&str) -> Option<Vec<usize>>,
        key: &dyn Fn(&str) -> String,
    ) -> Result<()> {
        for (l, _) in self.sparse_layers.iter().enumerate().filter(|(_, s)| **s) {
            for what in [
                "ffn_gate_inp.weight",
                "ffn_gate_exps.weight",
                "ffn_up_exps.weight",
                "ffn_down_exps.weight",
            ] {
                let name = names::blk(l, what);
                let Some(shape) = meta(&name) else {
                    return Err(HearthError::MissingTensor(name));
                };
                let want_dims = if what == "ffn_gate_inp.weight" { 2 } else { 3 };
                if shape.len() != want_dims || shape[0] != self.num_experts {
                    return Err(HearthError::Config(format!(
                        "`{}` = {} but {name} has shape {shape:?} ({} experts)",
                        key("moe.num_experts"),
                        self.num_experts,
                        shape.first().copied().unwrap_or(0)
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Which Hugging Face MoE family a `config.json` class names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HfMoeKind {
    Mixtral,
    Qwen2Moe,
    Qwen3Moe,
}

impl HfMoeKind {
    pub fn from_class(class: &str) -> Option<HfMoeKind> {
        Some(match class {
            "MixtralForCausalLM" | "mixtral" => HfMoeKind::Mixtral,
            "Qwen2MoeForCausalLM" | "qwen2_moe" => HfMoeKind::Qwen2Moe,
            "Qwen3MoeForCausalLM" | "qwen3_moe" => HfMoeKind::Qwen3Moe,
            _ => return None,
        })
    }

    /// The `config.json` key of a [`MoeConfig`] field, for error messages.
    pub fn key(self, field: &str) -> Option<&'static str> {
        Some(match (self, field) {
            (HfMoeKind::Mixtral, "moe.num_experts") => "num_local_experts",
            (_, "moe.num_experts") => "num_experts",
            (_, "moe.experts_per_token") => "num_experts_per_tok",
            (HfMoeKind::Mixtral, "moe.expert_intermediate_size") => "intermediate_size",
            (_, "moe.expert_intermediate_size") => "moe_intermediate_size",
            (_, "moe.shared_expert_intermediate_size") => "shared_expert_intermediate_size",
            _ => return None,
        })
    }
}

fn cfg_err(m: impl Into<String>) -> HearthError {
    HearthError::Config(format!("config.json: {}", m.into()))
}

fn usize_of(v: &Value, key: &str) -> Result<Option<usize>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .and_then(|x| usize::try_from(x).ok())
            .map(Some)
            .ok_or_else(|| cfg_err(format!("`{key}` must be a non-negative integer, found {x}"))),
    }
}

/// The MoE part of a Hugging Face `config.json` of `kind`; `None` when the
/// model has no experts (`num_experts` = 0 makes every layer dense).
pub fn from_hf_config(v: &Value, kind: HfMoeKind, num_layers: usize) -> Result<Option<MoeConfig>> {
    let req = |field: &str| -> Result<usize> {
        let k = kind.key(field).expect("a MoE field");
        usize_of(v, k)?.ok_or_else(|| cfg_err(format!("missing field `{k}`")))
    };
    // Routers that score with something other than a softmax over all
    // experts before top-k (DeepSeek-style sigmoid, grouped top-k, scaling)
    // would be computed wrongly; refuse them by name.
    if let Some(s) = v.get("scoring_func").and_then(Value::as_str) {
        if s != "softmax" {
            return Err(HearthError::Unsupported(format!(
                "MoE router `scoring_func` = \"{s}\" (only softmax is implemented)"
            )));
        }
    }
    for k in [
        "topk_method",
        "n_group",
        "routed_scaling_factor",
        "n_shared_experts",
    ] {
        if v.get(k).is_some_and(|x| !x.is_null()) {
            return Err(HearthError::Unsupported(format!(
                "MoE router option `{k}` (not implemented)"
            )));
        }
    }
    // Qwen3-MoE's config class maps `num_experts` onto `num_local_experts`
    // and transformers 5 saves the latter; released configs have the former.
    let num_experts = match (kind, usize_of(v, "num_local_experts")?) {
        (HfMoeKind::Qwen3Moe, Some(n)) if v.get("num_experts").is_none() => n,
        _ => req("moe.num_experts")?,
    };
    if num_experts == 0 {
        return Ok(None);
    }
    let experts_per_token = req("moe.experts_per_token")?;
    let expert_intermediate_size = req("moe.expert_intermediate_size")?;
    let bool_of = |key: &str, default: bool| -> Result<bool> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(x) => x
                .as_bool()
                .ok_or_else(|| cfg_err(format!("`{key}` must be a bool, found {x}"))),
        }
    };
    let (norm_topk_prob, sparse_layers, shared) = match kind {
        // Mixtral always renormalises the top-k and has no dense layers.
        HfMoeKind::Mixtral => (true, vec![true; num_layers], None),
        HfMoeKind::Qwen2Moe | HfMoeKind::Qwen3Moe => {
            let step = usize_of(v, "decoder_sparse_step")?.unwrap_or(1);
            if step == 0 {
                return Err(cfg_err("`decoder_sparse_step` must be at least 1"));
            }
            let mlp_only: Vec<usize> = match v.get("mlp_only_layers") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| {
                        x.as_u64()
                            .and_then(|x| usize::try_from(x).ok())
                            .filter(|&l| l < num_layers)
                            .ok_or_else(|| {
                                cfg_err(format!(
                                    "`mlp_only_layers` entry {x} is not a layer index below {num_layers}"
                                ))
                            })
                    })
                    .collect::<Result<_>>()?,
                Some(x) => {
                    return Err(cfg_err(format!(
                        "`mlp_only_layers` must be a list of layer indices, found {x}"
                    )))
                }
            };
            // transformers' Qwen2MoeDecoderLayer / Qwen3MoeDecoderLayer rule.
            let sparse = (0..num_layers)
                .map(|l| !mlp_only.contains(&l) && (l + 1) % step == 0)
                .collect();
            let shared = match kind {
                HfMoeKind::Qwen2Moe => Some(req("moe.shared_expert_intermediate_size")?),
                _ => None,
            };
            (bool_of("norm_topk_prob", false)?, sparse, shared)
        }
    };
    Ok(Some(MoeConfig {
        num_experts,
        experts_per_token,
        expert_intermediate_size,
        norm_topk_prob,
        sparse_layers,
        shared_expert_intermediate_size: shared,
    }))
}

/// Where a Hugging Face per-expert matrix goes: the canonical stacked
/// tensor and the expert's index in it. Mixtral names them
/// `block_sparse_moe.experts.E.w1/w3/w2` (gate/up/down), the Qwen MoEs
/// `mlp.experts.E.{gate,up,down}_proj`.
pub fn hf_expert_part(hf: &str) -> Option<(String, usize)> {
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, what) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let rest = what
        .strip_prefix("block_sparse_moe.experts.")
        .or_else(|| what.strip_prefix("mlp.experts."))?;
    let (expert, proj) = rest.split_once('.')?;
    let expert: usize = expert.parse().ok()?;
    let stacked = match proj {
        "w1.weight" | "gate_proj.weight" => "ffn_gate_exps.weight",
        "w3.weight" | "up_proj.weight" => "ffn_up_exps.weight",
        "w2.weight" | "down_proj.weight" => "ffn_down_exps.weight",
        _ => return None,
    };
    Some((names::blk(layer, stacked), expert))
}

/// The canonical name of a Hugging Face router or shared-expert tensor
/// (`what` is the part after `model.layers.N.`).
pub fn hf_layer_name(what: &str) -> Option<&'static str> {
    Some(match what {
        "block_sparse_moe.gate.weight" | "mlp.gate.weight" => "ffn_gate_inp.weight",
        "mlp.shared_expert.gate_proj.weight" => "ffn_gate_shexp.weight",
        "mlp.shared_expert.up_proj.weight" => "ffn_up_shexp.weight",
        "mlp.shared_expert.down_proj.weight" => "ffn_down_shexp.weight",
        "mlp.shared_expert_gate.weight" => "ffn_gate_inp_shexp.weight",
        _ => return None,
    })
}

/// The HF name of expert `e`'s part of a stacked canonical tensor, for
/// "missing tensor" errors that name what the directory should hold.
pub fn hf_expert_name(kind_mixtral: bool, stacked: &str, e: usize) -> String {
    let (layer, what) = stacked
        .strip_prefix("blk.")
        .and_then(|r| r.split_once('.'))
        .unwrap_or(("?", stacked));
    let proj = match (kind_mixtral, what) {
        (true, "ffn_gate_exps.weight") => "w1",
        (true, "ffn_up_exps.weight") => "w3",
        (true, _) => "w2",
        (false, "ffn_gate_exps.weight") => "gate_proj",
        (false, "ffn_up_exps.weight") => "up_proj",
        (false, _) => "down_proj",
    };
    let block = if kind_mixtral {
        "block_sparse_moe"
    } else {
        "mlp"
    };
    format!("model.layers.{layer}.{block}.experts.{e}.{proj}.weight")
}

/// Hugging Face keeps the shared expert's gate as a `[1, hidden]` linear
/// layer; llama.cpp and the canonical form store it as a `[hidden]` vector.
pub fn hf_canonical_shape(canonical: &str, shape: &[usize]) -> Vec<usize> {
    match shape {
        [1, h] if canonical.ends_with("ffn_gate_inp_shexp.weight") => vec![*h],
        _ => shape.to_vec(),
    }
}

/// A model's parameters, and how many of them one token uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ParamCounts {
    pub total: u64,
    /// What one token reads: every dense tensor, and of each sparse layer
    /// the router and `experts_per_token` of its experts.
    pub active: u64,
}

/// Counts the tensors a model of `config` has (`tensors`: names and
/// shapes, as [`crate::model::load::expected_tensors`] lists them).
pub fn parameter_counts(
    config: &super::ModelConfig,
    tensors: &[(String, Vec<usize>)],
) -> ParamCounts {
    let mut c = ParamCounts {
        total: 0,
        active: 0,
    };
    for (name, shape) in tensors {
        let n: u64 = shape.iter().map(|&d| d as u64).product();
        c.total += n;
        c.active += match &config.moe {
            Some(m) if name.ends_with("_exps.weight") => {
                n / m.num_experts as u64 * m.experts_per_token as u64
            }
            _ => n,
        };
    }
    c
}
