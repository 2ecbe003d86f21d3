//! Hugging Face model directories: `config.json` → ModelConfig, safetensors
//! shards (single file or `model.safetensors.index.json`) → tensors under
//! canonical GGUF-style names, and the tokenizer files as text.

use std::collections::HashMap;

use serde_json::Value;

use super::config::{limits, names};
use super::hf_experts::{Parts, Stacked};
use super::load::FileBytes;
use super::moe::HfMoeKind;
use super::{Architecture, DType, HostTensor, ModelConfig, RopeLayout, RopeScaling, WeightSource};
use crate::text::vocab::TokenizerSpec;
use crate::{HearthError, Result};

/// Maps a Hugging Face tensor name to the canonical name; `None` for tensors
/// the forward pass does not use (e.g. `rotary_emb.inv_freq`).
/// A base model saved without its head (`AutoModel`, as sentence-transformers
/// embedders are) names its tensors without the `model.` prefix.
pub fn canonical_name(hf: &str) -> Option<String> {
    if hf == "lm_head.weight" {
        return Some(names::OUTPUT.into());
    }
    let hf = hf.strip_prefix("model.").unwrap_or(hf);
    match hf {
        "embed_tokens.weight" => return Some(names::TOKEN_EMBD.into()),
        "norm.weight" => return Some(names::OUTPUT_NORM.into()),
        _ => {}
    }
    let rest = hf.strip_prefix("layers.")?;
    let (layer, what) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let mapped = match what {
        "input_layernorm.weight" => "attn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "self_attn.q_norm.weight" => "attn_q_norm.weight",
        "self_attn.k_norm.weight" => "attn_k_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        other => super::moe::hf_layer_name(other)?,
    };
    Some(names::blk(layer, mapped))
}

fn cfg_err(m: impl Into<String>) -> HearthError {
    HearthError::Config(format!("config.json: {}", m.into()))
}

fn get_usize(obj: &Value, key: &str) -> Result<Option<usize>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|x| usize::try_from(x).ok())
            .map(Some)
            .ok_or_else(|| cfg_err(format!("`{key}` must be a non-negative integer, found {v}"))),
    }
}

fn req_usize(obj: &Value, key: &str) -> Result<usize> {
    get_usize(obj, key)?.ok_or_else(|| cfg_err(format!("missing field `{key}`")))
}

fn get_f32(obj: &Value, key: &str) -> Result<Option<f32>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(|x| Some(x as f32))
            .ok_or_else(|| cfg_err(format!("`{key}` must be a number, found {v}"))),
    }
}

fn get_bool(obj: &Value, key: &str) -> Result<Option<bool>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| cfg_err(format!("`{key}` must be a bool, found {v}"))),
    }
}

/// RoPE scaling from a `rope_scaling` / `rope_parameters` object.
fn rope_scaling(obj: Option<&Value>) -> Result<RopeScaling> {
    let Some(obj) = obj.filter(|v| !v.is_null()) else {
        return Ok(RopeScaling::None);
    };
    if !obj.is_object() {
        return Err(cfg_err(format!(
            "rope scaling must be an object, found {obj}"
        )));
    }
    let ty = obj
        .get("rope_type")
        .or_else(|| obj.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let req = |k: &str| -> Result<f32> {
        get_f32(obj, k)?.ok_or_else(|| cfg_err(format!("rope scaling `{ty}` needs `{k}`")))
    };
    Ok(match ty {
        "default" | "none" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: req("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: req("factor")?,
            low_freq_factor: req("low_freq_factor")?,
            high_freq_factor: req("high_freq_factor")?,
            original_max_position_embeddings: req("original_max_position_embeddings")?,
        },
        other => {
            return Err(HearthError::Unsupported(format!(
                "RoPE scaling type `{other}` (supported: default, linear, llama3)"
            )))
        }
    })
}

/// Parses `config.json`. `has_lm_head` says whether the weights carry
/// `lm_head.weight`; a model without one is tied whatever the config says.
pub fn parse_config(json: &str, has_lm_head: bool) -> Result<ModelConfig> {
    let v: Value =
        serde_json::from_str(json).map_err(|e| cfg_err(format!("not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(cfg_err("expected a JSON object"));
    }
    let arch_name = match v
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(Value::as_str)
    {
        Some(a) => a.to_string(),
        None => match v.get("model_type").and_then(Value::as_str) {
            Some(t) => t.to_string(),
            None => return Err(cfg_err("missing field `architectures`")),
        },
    };
    let moe_kind = HfMoeKind::from_class(&arch_name);
    // The MoE families share their dense namesakes' attention; `*Model` is
    // the base model without its head, as embedders are saved.
    let arch = match (arch_name.as_str(), moe_kind) {
        ("LlamaForCausalLM" | "LlamaModel" | "llama", _) => Architecture::Llama,
        ("MistralForCausalLM" | "MistralModel" | "mistral", _) | (_, Some(HfMoeKind::Mixtral)) => {
            Architecture::Mistral
        }
        ("Qwen2ForCausalLM" | "Qwen2Model" | "qwen2", _) | (_, Some(HfMoeKind::Qwen2Moe)) => {
            Architecture::Qwen2
        }
        ("Qwen3ForCausalLM" | "Qwen3Model" | "qwen3", _) | (_, Some(HfMoeKind::Qwen3Moe)) => {
            Architecture::Qwen3
        }
        (other, None) => {
            return Err(HearthError::Unsupported(format!(
                "architecture `{other}` (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, their base models such as Qwen3Model, MixtralForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM)"
            )))
        }
    };
    if let Some(act) = v.get("hidden_act").and_then(Value::as_str) {
        if act != "silu" {
            return Err(HearthError::Unsupported(format!(
                "activation `{act}` (only silu is implemented)"
            )));
        }
    }
    if let Some(q) = v.get("quantization_config").filter(|q| !q.is_null()) {
        let method = q
            .get("quant_method")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        return Err(HearthError::Unsupported(format!(
            "pre-quantized checkpoint (quant_method `{method}`); use f32/f16/bf16 weights or a GGUF file"
        )));
    }
    let hidden_size = req_usize(&v, "hidden_size")?;
    let num_heads = req_usize(&v, "num_attention_heads")?;
    let num_kv_heads = get_usize(&v, "num_key_value_heads")?.unwrap_or(num_heads);
    let head_dim = match get_usize(&v, "head_dim")? {
        Some(d) => d,
        None if num_heads > 0 && hidden_size % num_heads == 0 => hidden_size / num_heads,
        None => {
            return Err(cfg_err(format!(
                "hidden_size {hidden_size} is not a multiple of num_attention_heads {num_heads} and no head_dim is given"
            )))
        }
    };
    // Newer configs nest rope_theta and the scaling in `rope_parameters`.
    let (rope_theta, scaling) = match v.get("rope_parameters").filter(|p| !p.is_null()) {
        Some(p) => (
            get_f32(p, "rope_theta")?.or(get_f32(&v, "rope_theta")?),
            rope_scaling(Some(p))?,
        ),
        None => (
            get_f32(&v, "rope_theta")?,
            rope_scaling(v.get("rope_scaling"))?,
        ),
    };
    let tied = get_bool(&v, "tie_word_embeddings")?.unwrap_or(false);
    let num_layers = req_usize(&v, "num_hidden_layers")?;
    let moe = match moe_kind {
        Some(kind) => super::moe::from_hf_config(&v, kind, num_layers.min(limits::MAX_LAYERS))?,
        None => None,
    };
    let attention_bias = match (arch, moe_kind) {
        // Qwen2-MoE names its QKV bias switch `qkv_bias` (default on).
        (_, Some(HfMoeKind::Qwen2Moe)) => get_bool(&v, "qkv_bias")?.unwrap_or(true),
        (Architecture::Qwen2, _) => true,
        _ => get_bool(&v, "attention_bias")?.unwrap_or(false),
    };
    let cfg = ModelConfig {
        arch,
        vocab_size: req_usize(&v, "vocab_size")?,
        hidden_size,
        intermediate_size: req_usize(&v, "intermediate_size")?,
        num_layers,
        num_heads,
        num_kv_heads,
        head_dim,
        rms_norm_eps: get_f32(&v, "rms_norm_eps")?.unwrap_or(1e-6),
        rope_theta: rope_theta.unwrap_or(10000.0),
        rope_layout: RopeLayout::HalfSplit,
        rope_scaling: scaling,
        max_position_embeddings: get_usize(&v, "max_position_embeddings")?.unwrap_or(2048),
        tie_word_embeddings: tied || !has_lm_head,
        attention_bias,
        qk_norm: arch == Architecture::Qwen3,
        moe,
        pooling: None,
    };
    cfg.validate_keyed(&|f| hf_key_of(moe_kind, f))?;
    Ok(cfg)
}

/// [`hf_key`], with the MoE fields named as `kind`'s config names them.
fn hf_key_of(kind: Option<HfMoeKind>, field: &str) -> String {
    match kind.and_then(|k| k.key(field)) {
        Some(k) => k.to_string(),
        None => hf_key(field),
    }
}

/// The `config.json` key of a [`ModelConfig`] field, for error messages.
fn hf_key(field: &str) -> String {
    match field {
        "num_layers" => "num_hidden_layers",
        "num_heads" => "num_attention_heads",
        "num_kv_heads" => "num_key_value_heads",
        other => other,
    }
    .to_string()
}

#[derive(Debug)]
pub(super) struct Entry {
    pub shard: usize,
    pub hf_name: String,
    pub dtype: Result<DType, String>,
    pub shape: Vec<usize>,
    pub range: std::ops::Range<usize>,
}

/// A Hugging Face checkpoint: config plus memory-mapped (or in-memory) shards.
#[derive(Debug)]
pub struct HfModel {
    config: ModelConfig,
    shards: Vec<FileBytes>,
    tensors: HashMap<String, Entry>,
    /// Experts' matrices stacked per projection (see [`super::hf_experts`]).
    stacked: HashMap<String, Stacked>,
    tokenizer_json: Option<String>,
    tokenizer_config_json: Option<String>,
    generation_config_json: Option<String>,
}

/// safetensors' own cap on the JSON header.
const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// Indexes one safetensors shard from its header alone (the data may be a
/// Blob not yet read). The safetensors crate parses and validates the header
/// (offsets contiguous, sizes matching shapes); the data it describes must
/// then end exactly at the end of the file.
fn index_shard(
    name: &str,
    shard: usize,
    bytes: &FileBytes,
    out: &mut HashMap<String, Entry>,
    parts: &mut Parts,
) -> Result<()> {
    let bad = |m: String| HearthError::InvalidFile(format!("safetensors file {name}: {m}"));
    if bytes.len() < 8 {
        return Err(bad(format!(
            "{} bytes is too short for a header",
            bytes.len()
        )));
    }
    let n = u64::from_le_bytes(bytes.range(0, 8)?.as_ref().try_into().expect("8 bytes"));
    if n > MAX_SAFETENSORS_HEADER || n + 8 > bytes.len() {
        return Err(bad(format!(
            "header length {n} does not fit in the file ({} bytes)",
            bytes.len()
        )));
    }
    let header = bytes.range(8, n as usize)?;
    let text =
        std::str::from_utf8(&header).map_err(|e| bad(format!("header is not UTF-8: {e}")))?;
    let meta: safetensors::tensor::Metadata =
        serde_json::from_str(text).map_err(|e| bad(format!("bad header: {e}")))?;
    let base = 8 + n as usize;
    let tensors = meta.tensors();
    let data_end = tensors
        .values()
        .map(|i| i.data_offsets.1)
        .max()
        .unwrap_or(0);
    if base as u64 + data_end as u64 != bytes.len() {
        return Err(bad(format!(
            "header describes {data_end} bytes of data but the file has {}",
            bytes.len() - base as u64
        )));
    }
    for (hf_name, info) in tensors {
        let expert = super::moe::hf_expert_part(&hf_name);
        let Some(canon) = canonical_name(&hf_name).or_else(|| Some(expert.clone()?.0)) else {
            continue;
        };
        let dtype = match info.dtype {
            safetensors::Dtype::F32 => Ok(DType::F32),
            safetensors::Dtype::F16 => Ok(DType::F16),
            safetensors::Dtype::BF16 => Ok(DType::BF16),
            other => Err(format!("{other:?}")),
        };
        let (s, e) = info.data_offsets;
        let entry = Entry {
            shard,
            hf_name: hf_name.clone(),
            dtype,
            shape: super::moe::hf_canonical_shape(&canon, &info.shape),
            range: base + s..base + e,
        };
        let dup = match expert {
            Some((_, i)) => parts.entry(canon).or_default().insert(i, entry).is_some(),
            None => out.insert(canon, entry).is_some(),
        };
        if dup {
            return Err(HearthError::InvalidFile(format!(
                "tensor `{hf_name}` appears in more than one shard"
            )));
        }
    }
    Ok(())
}

impl HfModel {
    /// Builds a model from in-memory parts: `config.json` text and the
    /// safetensors shards as (file name, bytes).
    pub fn from_parts(config_json: &str, shards: Vec<(String, Vec<u8>)>) -> Result<Self> {
        Self::from_files(
            config_json,
            shards
                .into_iter()
                .map(|(n, b)| (n, FileBytes::Owned(b)))
                .collect(),
        )
    }

    /// Builds a model from `config.json` text and the shards as (file name,
    /// bytes) in any form, e.g. Blob-backed in the browser.
    pub fn from_files(config_json: &str, shards: Vec<(String, FileBytes)>) -> Result<Self> {
        if shards.is_empty() {
            return Err(HearthError::InvalidFile("no safetensors files".into()));
        }
        let mut tensors = HashMap::new();
        let mut parts = Parts::new();
        let mut bytes = Vec::with_capacity(shards.len());
        for (i, (name, b)) in shards.into_iter().enumerate() {
            index_shard(&name, i, &b, &mut tensors, &mut parts)?;
            bytes.push(b);
        }
        let config = parse_config(config_json, tensors.contains_key(names::OUTPUT))?;
        let moe_kind = serde_json::from_str::<Value>(config_json)
            .ok()
            .and_then(|v| {
                let class = v.get("architectures")?.get(0)?.as_str()?.to_string();
                HfMoeKind::from_class(&class)
            });
        let key = |f: &str| hf_key_of(moe_kind, f);
        let stacked = super::hf_experts::stack(
            parts,
            &config,
            moe_kind == Some(HfMoeKind::Mixtral),
            &key("moe.num_experts"),
        )?;
        let embd_rows = tensors
            .get(names::TOKEN_EMBD)
            .and_then(|e: &Entry| e.shape.first().copied());
        let all_names = tensors.keys().chain(stacked.keys()).map(String::as_str);
        config
            .check_against_tensors(all_names, embd_rows, &key)
            .and_then(|()| match &config.moe {
                Some(moe) => {
                    let shape = |n: &str| {
                        let t = tensors.get(n).map(|e| e.shape.clone());
                        t.or_else(|| stacked.get(n).map(|s| s.shape.clone()))
                    };
                    moe.check_expert_tensors(&shape, &key)
                }
                None => Ok(()),
            })
            .map_err(|e| match e {
                HearthError::Config(m) => cfg_err(m),
                e => e,
            })?;
        Ok(HfModel {
            config,
            shards: bytes,
            tensors,
            stacked,
            tokenizer_json: None,
            tokenizer_config_json: None,
            generation_config_json: None,
        })
    }

    /// Attaches the tokenizer files (as text) for `tokenizer_spec`.
    pub fn with_tokenizer(
        mut self,
        tokenizer_json: String,
        tokenizer_config_json: Option<String>,
        generation_config_json: Option<String>,
    ) -> Self {
        self.tokenizer_json = Some(tokenizer_json);
        self.tokenizer_config_json = tokenizer_config_json;
        self.generation_config_json = generation_config_json;
        self
    }

    /// Opens a directory with `config.json`, the safetensors file(s) and,
    /// when present, `tokenizer.json`, `tokenizer_config.json`, `generation_config.json`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(dir: &std::path::Path) -> Result<Self> {
        let read = |name: &str| -> Result<Option<String>> {
            let p = dir.join(name);
            match std::fs::read_to_string(&p) {
                Ok(s) => Ok(Some(s)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(HearthError::io(p.display().to_string(), e)),
            }
        };
        let config_json = read("config.json")?.ok_or_else(|| {
            HearthError::InvalidFile(format!("{} has no config.json", dir.display()))
        })?;
        let shard_names: Vec<String> = match read("model.safetensors.index.json")? {
            Some(index) => shard_names_from_index(&index)?,
            None if dir.join("model.safetensors").is_file() => vec!["model.safetensors".into()],
            None => {
                return Err(HearthError::InvalidFile(format!(
                    "{} has neither model.safetensors nor model.safetensors.index.json",
                    dir.display()
                )))
            }
        };
        let mut shards = Vec::with_capacity(shard_names.len());
        for name in shard_names {
            let bytes = FileBytes::map(&dir.join(&name))?;
            shards.push((name, bytes));
        }
        let mut model = Self::from_files(&config_json, shards)?;
        if let Some(modules) = read("modules.json")? {
            model.config.pooling =
                super::pooling::from_sentence_transformers(&modules, &mut |p| read(p))?;
        }
        model.tokenizer_json = read("tokenizer.json")?;
        model.tokenizer_config_json = read("tokenizer_config.json")?;
        model.generation_config_json = read("generation_config.json")?;
        Ok(model)
    }

    /// The tokenizer files as text; `tokenizer.json` is required.
    pub fn tokenizer_spec(&self) -> Result<TokenizerSpec> {
        let tokenizer_json = self.tokenizer_json.clone().ok_or_else(|| {
            HearthError::Tokenizer("the model directory has no tokenizer.json".into())
        })?;
        Ok(TokenizerSpec::HfJson {
            tokenizer_json,
            tokenizer_config_json: self.tokenizer_config_json.clone(),
            generation_config_json: self.generation_config_json.clone(),
        })
    }

    /// Canonical names of the tensors found, sorted.
    pub fn tensor_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .tensors
            .keys()
            .chain(self.stacked.keys())
            .map(String::as_str)
            .collect();
        v.sort_unstable();
        v
    }
}

/// The distinct shard file names of a `model.safetensors.index.json`, in order.
pub fn shard_names_from_index(index_json: &str) -> Result<Vec<String>> {
    let bad = |m: String| HearthError::InvalidFile(format!("model.safetensors.index.json: {m}"));
    let v: Value =
        serde_json::from_str(index_json).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("missing object `weight_map`".into()))?;
    // A set: an index maps every tensor, so shard names repeat many times.
    let mut names = std::collections::BTreeSet::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("`{tensor}` maps to {file}, not a file name")))?;
        // Shards live next to the index; refuse paths that would leave the directory.
        if file.contains('/') || file.contains('\\') || file == ".." || file.is_empty() {
            return Err(bad(format!("shard name `{file}` is not a plain file name")));
        }
        if !names.contains(file) {
            names.insert(file.to_string());
        }
    }
    if names.is_empty() {
        return Err(bad("`weight_map` is empty".into()));
    }
    Ok(names.into_iter().collect())
}

impl WeightSource for HfModel {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn has_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name) || self.stacked.contains_key(name)
    }

    fn tensor(&self, name: &str) -> Result<HostTensor<'_>> {
        if let Some(st) = self.stacked.get(name) {
            let dtype = entry_dtype(&st.parts[0])?;
            return Ok(HostTensor {
                name: name.to_string(),
                dtype,
                shape: st.shape.clone(),
                data: st
                    .concat(|p| self.shards[p.shard].range(p.range.start as u64, p.range.len()))?,
            });
        }
        let (e, dtype) = self.entry(name)?;
        // index_shard checked that every range lies within its shard.
        Ok(HostTensor {
            name: name.to_string(),
            dtype,
            shape: e.shape.clone(),
            data: self.shards[e.shard].range(e.range.start as u64, e.range.len())?,
        })
    }

    fn tensor_meta(&self, name: &str) -> Result<(DType, Vec<usize>)> {
        if let Some(st) = self.stacked.get(name) {
            return Ok((entry_dtype(&st.parts[0])?, st.shape.clone()));
        }
        let (e, dtype) = self.entry(name)?;
        Ok((dtype, e.shape.clone()))
    }
}

impl HfModel {
    fn entry(&self, name: &str) -> Result<(&Entry, DType)> {
        let e = self
            .tensors
            .get(name)
            .ok_or_else(|| HearthError::MissingTensor(name.to_string()))?;
        Ok((e, entry_dtype(e)?))
    }
}

fn entry_dtype(e: &Entry) -> Result<DType> {
    e.dtype.clone().map_err(|d| {
        HearthError::Unsupported(format!(
            "tensor `{}` has safetensors dtype {d}; supported are F32, F16 and BF16",
            e.hf_name
        ))
    })
}
