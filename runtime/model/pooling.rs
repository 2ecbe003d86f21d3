//! How a model turns a prompt's hidden states into one embedding, as the
//! model declares it: GGUF's `{arch}.pooling_type` (llama.cpp's enum) or a
//! sentence-transformers directory (`modules.json`, the Pooling module's
//! `config.json`, an optional Normalize module).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{HearthError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolingType {
    /// The mean over every prompt token.
    Mean,
    /// The first token's state.
    Cls,
    /// The last token's state (decoder embedders such as Qwen3-Embedding).
    Last,
    /// A reranker's score head (llama.cpp's `rank`): declared, not supported.
    Rank,
}

impl PoolingType {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolingType::Mean => "mean",
            PoolingType::Cls => "cls",
            PoolingType::Last => "last",
            PoolingType::Rank => "rank",
        }
    }

    /// `mean`, `cls` or `last` (what `--pooling` takes).
    pub fn parse(s: &str) -> Result<PoolingType> {
        match s {
            "mean" => Ok(PoolingType::Mean),
            "cls" => Ok(PoolingType::Cls),
            "last" => Ok(PoolingType::Last),
            other => Err(HearthError::InvalidField {
                field: "pooling".into(),
                message: format!("`{other}` is not a pooling type (mean, cls or last)"),
            }),
        }
    }
}

/// A model's pooling and whether its embeddings are L2-normalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pooling {
    pub kind: PoolingType,
    pub normalize: bool,
}

/// GGUF `pooling_type`: 0 none, 1 mean, 2 cls, 3 last, 4 rank. llama.cpp
/// L2-normalizes pooled embeddings by default (its server always does), and
/// GGUF has no key that says otherwise, so GGUF pooling normalizes.
pub fn from_gguf(key: &str, value: Option<u64>) -> Result<Option<Pooling>> {
    let kind = match value {
        None | Some(0) => return Ok(None),
        Some(1) => PoolingType::Mean,
        Some(2) => PoolingType::Cls,
        Some(3) => PoolingType::Last,
        Some(4) => PoolingType::Rank,
        Some(v) => {
            return Err(HearthError::Config(format!(
                "GGUF metadata `{key}` = {v} is not a pooling type (0 none, 1 mean, 2 cls, 3 last, 4 rank)"
            )))
        }
    };
    Ok(Some(Pooling {
        kind,
        normalize: true,
    }))
}

/// The module type's class name (`sentence_transformers.models.Pooling` → `Pooling`).
fn class_name(module: &Value) -> &str {
    let ty = module.get("type").and_then(Value::as_str).unwrap_or("");
    ty.rsplit('.').next().unwrap_or(ty)
}

/// The pooling a sentence-transformers directory declares: `modules_json`
/// is `modules.json`; `read(path)` returns the text of a file in the
/// directory (`None` when absent). Only Transformer → Pooling (mean, cls or
/// last token, prompt included) → optional Normalize is supported; any
/// other module (Dense, a different pooling mode) is an error naming it,
/// since the vectors would come out different.
pub fn from_sentence_transformers(
    modules_json: &str,
    read: &mut dyn FnMut(&str) -> Result<Option<String>>,
) -> Result<Option<Pooling>> {
    let bad = |m: String| HearthError::Config(format!("sentence-transformers modules.json: {m}"));
    let v: Value =
        serde_json::from_str(modules_json).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let modules = v
        .as_array()
        .ok_or_else(|| bad("expected an array of modules".into()))?;
    let mut kind = None;
    let mut normalize = false;
    for m in modules {
        match class_name(m) {
            "Transformer" => {}
            "Pooling" => {
                let path = m.get("path").and_then(Value::as_str).unwrap_or("");
                if path.is_empty() || path.contains("..") || path.starts_with('/') {
                    return Err(bad(format!("Pooling module path `{path}` is not a subfolder")));
                }
                let file = format!("{path}/config.json");
                let text = read(&file)?.ok_or_else(|| bad(format!("{file} is missing")))?;
                kind = Some(pooling_config(&file, &text)?);
            }
            "Normalize" => normalize = true,
            other => {
                return Err(HearthError::Unsupported(format!(
                    "sentence-transformers module `{other}` (supported: Transformer, Pooling, Normalize)"
                )))
            }
        }
    }
    Ok(kind.map(|kind| Pooling { kind, normalize }))
}

/// `1_Pooling/config.json`: the `pooling_mode_*` flags (exactly one set),
/// or a `pooling_mode` string.
fn pooling_config(file: &str, text: &str) -> Result<PoolingType> {
    let bad = |m: String| HearthError::Config(format!("sentence-transformers {file}: {m}"));
    let v: Value = serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    if v.get("include_prompt").and_then(Value::as_bool) == Some(false) {
        return Err(HearthError::Unsupported(format!(
            "{file}: pooling without the prompt (`include_prompt: false`)"
        )));
    }
    let mode = match v.get("pooling_mode").and_then(Value::as_str) {
        Some(m) => m.to_string(),
        None => {
            let on: Vec<&str> = v
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, x)| x.as_bool() == Some(true))
                .filter_map(|(k, _)| k.strip_prefix("pooling_mode_"))
                .collect();
            match on[..] {
                [m] => m.to_string(),
                [] => return Err(bad("no `pooling_mode_*` flag is true".into())),
                _ => {
                    return Err(bad(format!(
                        "several pooling modes at once: {}",
                        on.join(", ")
                    )))
                }
            }
        }
    };
    match mode.as_str() {
        "mean_tokens" | "mean" => Ok(PoolingType::Mean),
        "cls_token" | "cls" => Ok(PoolingType::Cls),
        "lasttoken" | "last" | "last_token" => Ok(PoolingType::Last),
        other => Err(HearthError::Unsupported(format!(
            "{file}: pooling mode `{other}` (supported: mean_tokens, cls_token, lasttoken)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULES: &str = r#"[
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
    ]"#;

    fn with_pooling(config: &'static str) -> impl FnMut(&str) -> Result<Option<String>> {
        move |p: &str| Ok((p == "1_Pooling/config.json").then(|| config.to_string()))
    }

    #[test]
    fn sentence_transformers_last_token_normalized() {
        let cfg = r#"{"word_embedding_dimension": 32, "pooling_mode_cls_token": false,
            "pooling_mode_mean_tokens": false, "pooling_mode_lasttoken": true, "include_prompt": true}"#;
        let p = from_sentence_transformers(MODULES, &mut with_pooling(cfg)).unwrap();
        assert_eq!(
            p,
            Some(Pooling {
                kind: PoolingType::Last,
                normalize: true
            })
        );
    }

    #[test]
    fn sentence_transformers_mean_without_normalize() {
        let modules = r#"[{"path": "", "type": "sentence_transformers.models.Transformer"},
            {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]"#;
        let mut read = with_pooling(r#"{"pooling_mode": "mean"}"#);
        let p = from_sentence_transformers(modules, &mut read)
            .unwrap()
            .unwrap();
        assert_eq!((p.kind, p.normalize), (PoolingType::Mean, false));
    }

    #[test]
    fn unsupported_sentence_transformers_setups_are_named() {
        let err = |modules: &str, cfg: &'static str| {
            from_sentence_transformers(modules, &mut with_pooling(cfg))
                .unwrap_err()
                .to_string()
        };
        let two = r#"{"pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": true}"#;
        assert!(err(MODULES, two).contains("several pooling modes at once"));
        let max = r#"{"pooling_mode_max_tokens": true}"#;
        assert!(err(MODULES, max).contains("pooling mode `max_tokens`"));
        let dense = r#"[{"path": "2_Dense", "type": "sentence_transformers.models.Dense"}]"#;
        assert!(err(dense, max).contains("module `Dense`"));
        let away = r#"[{"path": "../x", "type": "sentence_transformers.models.Pooling"}]"#;
        assert!(err(away, max).contains("not a subfolder"));
        assert!(err("{", max).contains("modules.json: not valid JSON"));
        let missing = r#"[{"path": "3_P", "type": "sentence_transformers.models.Pooling"}]"#;
        assert!(err(missing, max).contains("3_P/config.json is missing"));
    }

    #[test]
    fn gguf_pooling_types() {
        assert_eq!(from_gguf("k", None).unwrap(), None);
        assert_eq!(from_gguf("k", Some(0)).unwrap(), None);
        let kind = |v| from_gguf("k", Some(v)).unwrap().unwrap().kind;
        assert_eq!(kind(1), PoolingType::Mean);
        assert_eq!(kind(2), PoolingType::Cls);
        assert_eq!(kind(3), PoolingType::Last);
        assert_eq!(kind(4), PoolingType::Rank);
        assert!(from_gguf("qwen3.pooling_type", Some(9))
            .unwrap_err()
            .to_string()
            .contains("`qwen3.pooling_type` = 9 is not a pooling type"));
    }
}
