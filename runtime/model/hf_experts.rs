//! Hugging Face checkpoints store each expert's matrices as separate
//! tensors (`...experts.E.w1.weight`); the canonical form stacks them into
//! one `[experts, rows, cols]` tensor per projection, as GGUF does. The
//! parts stay where they are in the shards and are concatenated only when
//! the stacked tensor is read.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use super::config::names;
use super::hf::Entry;
use super::moe::{hf_expert_name, MoeConfig};
use super::ModelConfig;
use crate::{HearthError, Result};

/// Per stacked canonical name, the experts' parts found, by expert index.
pub(super) type Parts = HashMap<String, BTreeMap<usize, Entry>>;

/// One stacked tensor: its parts in expert order and its stacked shape.
#[derive(Debug)]
pub(super) struct Stacked {
    pub parts: Vec<Entry>,
    pub shape: Vec<usize>,
}

const PROJECTIONS: [&str; 3] = [
    "ffn_gate_exps.weight",
    "ffn_up_exps.weight",
    "ffn_down_exps.weight",
];

/// Checks that every sparse layer has exactly experts `0..num_experts`
/// for each projection, all of one shape and dtype, and stacks them.
/// `experts_key` names the config's expert count in errors. A dense model
/// ignores expert tensors (as transformers does with `num_experts` = 0).
pub(super) fn stack(
    mut parts: Parts,
    config: &ModelConfig,
    mixtral: bool,
    experts_key: &str,
) -> Result<HashMap<String, Stacked>> {
    let Some(moe) = &config.moe else {
        return Ok(HashMap::new());
    };
    let mut out = HashMap::new();
    for l in 0..config.num_layers {
        for proj in PROJECTIONS {
            let name = names::blk(l, proj);
            let found = parts.remove(&name).unwrap_or_default();
            if !moe.is_sparse(l) {
                continue;
            }
            out.insert(
                name.clone(),
                stack_one(&name, found, moe, mixtral, experts_key)?,
            );
        }
    }
    // Parts of layers that do not exist: the layer-count check names them.
    if let Some((name, _)) = parts.into_iter().find(|(_, p)| !p.is_empty()) {
        return Err(HearthError::Config(format!(
            "config.json: `num_hidden_layers` = {} but the directory has experts for {name}",
            config.num_layers
        )));
    }
    Ok(out)
}

fn stack_one(
    name: &str,
    found: BTreeMap<usize, Entry>,
    moe: &MoeConfig,
    mixtral: bool,
    experts_key: &str,
) -> Result<Stacked> {
    let e = moe.num_experts;
    if let Some((&last, part)) = found.iter().next_back().filter(|(&i, _)| i >= e) {
        return Err(HearthError::Config(format!(
            "config.json: `{experts_key}` = {e} but the directory has `{}` (expert {last})",
            part.hf_name
        )));
    }
    if let Some(missing) = (0..e).find(|i| !found.contains_key(i)) {
        return Err(HearthError::MissingTensor(hf_expert_name(
            mixtral, name, missing,
        )));
    }
    let parts: Vec<Entry> = found.into_values().collect();
    let first = &parts[0];
    for p in &parts[1..] {
        if p.shape != first.shape {
            return Err(HearthError::ShapeMismatch {
                name: p.hf_name.clone(),
                expected: first.shape.clone(),
                found: p.shape.clone(),
            });
        }
        if p.dtype != first.dtype {
            return Err(HearthError::InvalidFile(format!(
                "`{}` and `{}` are experts of one projection but differ in dtype",
                first.hf_name, p.hf_name
            )));
        }
    }
    let mut shape = vec![e];
    shape.extend_from_slice(&first.shape);
    Ok(Stacked { parts, shape })
}

impl Stacked {
    /// The parts' bytes one after another, read through `range`.
    pub fn concat<'a>(
        &self,
        range: impl Fn(&Entry) -> Result<Cow<'a, [u8]>>,
    ) -> Result<Cow<'a, [u8]>> {
        let total: usize = self.parts.iter().map(|p| p.range.len()).sum();
        let mut data = Vec::with_capacity(total);
        for p in &self.parts {
            data.extend_from_slice(&range(p)?);
        }
        Ok(Cow::Owned(data))
    }
}
