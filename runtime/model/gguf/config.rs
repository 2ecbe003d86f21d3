//! ModelConfig and tokenizer vocabulary from GGUF metadata.

use super::{GgufFile, MetaValue};
use crate::model::config::{limits, names};
use crate::model::pooling;
use crate::model::{Architecture, ModelConfig, RopeLayout, RopeScaling};
use crate::text::vocab::GgufVocab;
use crate::{HearthError, Result};

fn missing(key: &str) -> HearthError {
    HearthError::Config(format!("GGUF metadata key `{key}` is missing"))
}

impl GgufFile {
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")?
            .ok_or_else(|| missing("general.architecture"))
    }

    /// A per-model integer that some converters write as a per-layer array;
    /// a uniform array is accepted, a varying one is not supported.
    fn layer_uniform(&self, key: &str) -> Result<Option<usize>> {
        if let Some(MetaValue::Array(arr)) = self.get(key) {
            let vals: Vec<Option<u64>> = arr.iter().map(MetaValue::as_u64).collect();
            return match vals.first() {
                Some(Some(v)) if vals.iter().all(|x| *x == Some(*v)) => {
                    usize::try_from(*v).map(Some).map_err(|_| {
                        HearthError::Config(format!("GGUF metadata `{key}` = {v} is too large"))
                    })
                }
                _ => Err(HearthError::Unsupported(format!(
                    "GGUF metadata `{key}` varies per layer"
                ))),
            };
        }
        self.get_usize(key)
    }

    fn required(&self, key: &str) -> Result<usize> {
        self.layer_uniform(key)?.ok_or_else(|| missing(key))
    }

    /// The model description for the `llama` (also Mistral) and `qwen2`/`qwen3` architectures.
    pub fn config(&self) -> Result<ModelConfig> {
        let arch_name = self.architecture()?;
        let (arch, rope_layout) = match arch_name {
            // llama.cpp's converter permutes llama Q/K rows for interleaved pairs.
            "llama" => (Architecture::Llama, RopeLayout::Interleaved),
            // The MoE variants share their dense namesakes' attention.
            "qwen2" | "qwen2moe" => (Architecture::Qwen2, RopeLayout::HalfSplit),
            "qwen3" | "qwen3moe" => (Architecture::Qwen3, RopeLayout::HalfSplit),
            other => {
                return Err(HearthError::Unsupported(format!(
                    "architecture `{other}` (supported GGUF architectures: llama, qwen2, qwen3, qwen2moe, qwen3moe)"
                )))
            }
        };
        let k = |s: &str| format!("{arch_name}.{s}");
        let hidden_size = self.required(&k("embedding_length"))?;
        let num_heads = self.required(&k("attention.head_count"))?;
        let num_kv_heads = self
            .layer_uniform(&k("attention.head_count_kv"))?
            .unwrap_or(num_heads);
        let head_dim = match self.layer_uniform(&k("attention.key_length"))? {
            Some(d) => d,
            None if num_heads > 0 && hidden_size % num_heads == 0 => hidden_size / num_heads,
            None => {
                return Err(HearthError::Config(format!(
                    "`{}` = {hidden_size} is not a multiple of `{}` = {num_heads}",
                    k("embedding_length"),
                    k("attention.head_count")
                )))
            }
        };
        // Features the forward pass does not implement are refused up front
        // rather than producing wrong output.
        if let Some(rot) = self.get_usize(&k("rope.dimension_count"))? {
            if rot != head_dim {
                return Err(HearthError::Unsupported(format!(
                    "partial rotary embedding ({rot} of {head_dim} dimensions)"
                )));
            }
        }
        let vocab_size = match self.get_usize(&k("vocab_size"))? {
            Some(v) => v,
            None => self
                .get_array("tokenizer.ggml.tokens")?
                .map(|a| a.len())
                .ok_or_else(|| missing(&k("vocab_size")))?,
        };
        let rms_norm_eps = self
            .get_f32(&k("attention.layer_norm_rms_epsilon"))?
            .ok_or_else(|| missing(&k("attention.layer_norm_rms_epsilon")))?;
        let intermediate_size = self.required(&k("feed_forward_length"))?;
        let num_layers = self.required(&k("block_count"))?;
        let moe = self.moe_config(
            arch_name,
            num_layers.min(limits::MAX_LAYERS),
            intermediate_size,
        )?;
        let cfg = ModelConfig {
            arch,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps,
            rope_theta: self.get_f32(&k("rope.freq_base"))?.unwrap_or(10000.0),
            rope_layout,
            rope_scaling: self.rope_scaling(arch_name, head_dim)?,
            max_position_embeddings: self.required(&k("context_length"))?,
            tie_word_embeddings: !self.has_tensor(names::OUTPUT),
            attention_bias: self.has_tensor(&names::blk(0, "attn_q.bias")),
            qk_norm: self.has_tensor(&names::blk(0, "attn_q_norm.weight")),
            moe,
            pooling: pooling::from_gguf(&k("pooling_type"), self.get_u64(&k("pooling_type"))?)?,
        };
        cfg.validate_keyed(&|f| self.config_key(arch_name, f))?;
        Ok(cfg)
    }

    /// The metadata key a [`ModelConfig`] field comes from, for error messages.
    pub(crate) fn config_key(&self, arch: &str, field: &str) -> String {
        let k = |s: &str| format!("{arch}.{s}");
        match field {
            "num_layers" => k("block_count"),
            "hidden_size" => k("embedding_length"),
            "intermediate_size" => k("feed_forward_length"),
            "vocab_size" if self.get(&k("vocab_size")).is_none() => "tokenizer.ggml.tokens".into(),
            "vocab_size" => k("vocab_size"),
            "num_heads" => k("attention.head_count"),
            "num_kv_heads" => k("attention.head_count_kv"),
            "head_dim" => k("attention.key_length"),
            "rms_norm_eps" => k("attention.layer_norm_rms_epsilon"),
            "rope_theta" => k("rope.freq_base"),
            "max_position_embeddings" => k("context_length"),
            f if f.starts_with("rope_scaling.") => match self.get(&k("rope.scaling.factor")) {
                Some(_) => k("rope.scaling.factor"),
                None if self.get(&k("rope.scale_linear")).is_some() => k("rope.scale_linear"),
                None => format!("rope_freqs.weight ({f})"),
            },
            f if f.starts_with("moe.") => Self::moe_key(arch, f).unwrap_or_else(|| f.to_string()),
            other => other.to_string(),
        }
    }

    /// Checks a config read from this file against its tensors (see
    /// [`ModelConfig::check_against_tensors`]), naming this file's keys.
    pub fn check_config_tensors(&self, cfg: &ModelConfig) -> Result<()> {
        let arch = self.architecture()?;
        let embd_rows = self
            .tensor_info(names::TOKEN_EMBD)
            .and_then(|t| t.dims.last())
            .map(|&d| usize::try_from(d).unwrap_or(usize::MAX));
        let key = |f: &str| self.config_key(arch, f);
        cfg.check_against_tensors(
            self.tensor_infos().iter().map(|t| t.name.as_str()),
            embd_rows,
            &key,
        )?;
        if let Some(moe) = &cfg.moe {
            moe.check_expert_tensors(&|n| self.tensor_info(n).map(|t| t.shape()), &key)?;
        }
        Ok(())
    }

    fn rope_scaling(&self, arch: &str, head_dim: usize) -> Result<RopeScaling> {
        let ty = self.get_str(&format!("{arch}.rope.scaling.type"))?;
        let factor = self.get_f32(&format!("{arch}.rope.scaling.factor"))?;
        let scaling = match (ty, factor) {
            (None | Some("none"), _) => match self.get_f32(&format!("{arch}.rope.scale_linear"))? {
                Some(f) if f != 1.0 => RopeScaling::Linear { factor: f },
                _ => RopeScaling::None,
            },
            (Some("linear"), Some(f)) => RopeScaling::Linear { factor: f },
            (Some("linear"), None) => return Err(missing(&format!("{arch}.rope.scaling.factor"))),
            (Some(other), _) => {
                return Err(HearthError::Unsupported(format!(
                    "RoPE scaling type `{other}` (supported: none, linear, llama3)"
                )))
            }
        };
        if self.has_tensor("rope_freqs.weight") {
            if !self.has_tensor_data("rope_freqs.weight") {
                // A header-only file (dummy weights): the scaling changes
                // RoPE's angles, not its cost, so benchmarks run without it.
                tracing::warn!("rope_freqs.weight has no data in this file; RoPE runs unscaled");
                return Ok(scaling);
            }
            if scaling != RopeScaling::None {
                return Err(HearthError::Unsupported(
                    "rope_freqs.weight together with metadata RoPE scaling".into(),
                ));
            }
            return self.llama3_scaling_from_tensor(head_dim);
        }
        Ok(scaling)
    }

    /// Llama-3 GGUFs carry their RoPE scaling as per-pair frequency divisors.
    /// They are matched against Llama 3.1/3.2's scaling (low 1, high 4,
    /// original context 8192, factor = the largest divisor), which the
    /// rest of the runtime knows how to compute; any other table is refused.
    fn llama3_scaling_from_tensor(&self, head_dim: usize) -> Result<RopeScaling> {
        let t = self.tensor("rope_freqs.weight")?;
        let divisors = t.to_f32()?;
        if divisors.len() != head_dim / 2 {
            return Err(HearthError::InvalidFile(format!(
                "rope_freqs.weight has {} entries, expected head_dim/2 = {}",
                divisors.len(),
                head_dim / 2
            )));
        }
        let factor = divisors.iter().copied().fold(1.0f32, f32::max);
        if divisors.iter().all(|&d| (d - 1.0).abs() < 1e-6) {
            return Ok(RopeScaling::None);
        }
        let candidate = RopeScaling::Llama3 {
            factor,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        };
        let theta = self.get_f32(&format!("{}.rope.freq_base", self.architecture()?))?;
        let probe = ModelConfig {
            arch: Architecture::Llama,
            vocab_size: 1,
            hidden_size: head_dim,
            intermediate_size: 1,
            num_layers: 1,
            num_heads: 1,
            num_kv_heads: 1,
            head_dim,
            rms_norm_eps: 1e-5,
            rope_theta: theta.unwrap_or(10000.0),
            rope_layout: RopeLayout::Interleaved,
            rope_scaling: RopeScaling::None,
            max_position_embeddings: 1,
            tie_word_embeddings: true,
            attention_bias: false,
            qk_norm: false,
            moe: None,
            pooling: None,
        };
        let base = probe.rope_inv_freqs();
        let scaled = ModelConfig {
            rope_scaling: candidate,
            ..probe
        }
        .rope_inv_freqs();
        let matches = base
            .iter()
            .zip(&scaled)
            .zip(&divisors)
            .all(|((b, s), d)| ((b / d) - s).abs() <= 1e-3 * s.abs());
        if matches {
            Ok(candidate)
        } else {
            Err(HearthError::Unsupported(
                "rope_freqs.weight does not match Llama-3 RoPE scaling (low 1, high 4, original context 8192)".into(),
            ))
        }
    }

    /// The tokenizer description from `tokenizer.ggml.*` and `tokenizer.chat_template`.
    pub fn vocab(&self) -> Result<GgufVocab> {
        let tok = |s: &str| format!("tokenizer.ggml.{s}");
        let model = self
            .get_str(&tok("model"))?
            .ok_or_else(|| missing("tokenizer.ggml.model"))?
            .to_string();
        let tokens = self
            .get_array_of(&tok("tokens"), "strings", |v| {
                v.as_str().map(str::to_string)
            })?
            .ok_or_else(|| missing("tokenizer.ggml.tokens"))?;
        let scores =
            self.get_array_of(&tok("scores"), "numbers", |v| v.as_f64().map(|x| x as f32))?;
        let token_types = self.get_array_of(&tok("token_type"), "integers", |v| {
            v.as_i64().and_then(|x| i32::try_from(x).ok())
        })?;
        for (what, len) in [
            ("scores", scores.as_ref().map(Vec::len)),
            ("token_type", token_types.as_ref().map(Vec::len)),
        ] {
            if let Some(len) = len.filter(|&l| l != tokens.len()) {
                return Err(HearthError::InvalidFile(format!(
                    "tokenizer.ggml.{what} has {len} entries but there are {} tokens",
                    tokens.len()
                )));
            }
        }
        let merges = self.get_array_of(&tok("merges"), "strings", |v| {
            v.as_str().map(str::to_string)
        })?;
        let id = |s: &str| -> Result<Option<u32>> {
            let key = tok(s);
            match self.get_u64(&key)? {
                None => Ok(None),
                Some(v) if v < tokens.len() as u64 => u32::try_from(v).map(Some).map_err(|_| {
                    HearthError::InvalidFile(format!("{key} = {v} does not fit a 32-bit token id"))
                }),
                Some(v) => Err(HearthError::InvalidFile(format!(
                    "{key} = {v} is outside the vocabulary of {} tokens",
                    tokens.len()
                ))),
            }
        };
        Ok(GgufVocab {
            pre: self.get_str(&tok("pre"))?.map(str::to_string),
            bos_token_id: id("bos_token_id")?,
            eos_token_id: id("eos_token_id")?,
            eot_token_id: id("eot_token_id")?,
            unknown_token_id: id("unknown_token_id")?,
            padding_token_id: id("padding_token_id")?,
            add_bos_token: self.get_bool(&tok("add_bos_token"))?,
            add_eos_token: self.get_bool(&tok("add_eos_token"))?,
            add_space_prefix: self.get_bool(&tok("add_space_prefix"))?,
            chat_template: self.get_str("tokenizer.chat_template")?.map(str::to_string),
            model,
            tokens,
            scores,
            token_types,
            merges,
        })
    }
}
