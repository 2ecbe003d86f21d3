//! `/tokenize` and `/detokenize` as llama-server has them (`content`,
//! `add_special`, `with_pieces`; `tokens`), also taking vLLM's `prompt`.
//! Both run on a blocking worker: a body of many megabytes takes a while to
//! tokenize, and the async threads serve every other connection.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::errors::ApiError;
use super::routes::App;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenizeBody {
    content: Option<String>,
    /// vLLM's name for `content`.
    prompt: Option<String>,
    #[serde(default)]
    add_special: bool,
    #[serde(default)]
    with_pieces: bool,
    /// Accepted for clients that send it; one model is served.
    #[allow(dead_code)]
    model: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DetokenizeBody {
    tokens: Vec<u32>,
    #[allow(dead_code)]
    model: Option<String>,
}

pub async fn tokenize(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    raw: Body,
) -> Result<Json<Value>, ApiError> {
    let req: TokenizeBody = app.read_body(&headers, raw).await?;
    let text = match (req.content, req.prompt) {
        (Some(t), None) | (None, Some(t)) => t,
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_param(
                "content",
                "Give the text as `content` or as `prompt`, not both.",
            ))
        }
        (None, None) => {
            return Err(ApiError::invalid_param(
                "content",
                "`content` (the text to tokenize) is required.",
            ))
        }
    };
    let engine = app.engine.clone();
    let ctx = app.engine.context_length;
    let (add_special, with_pieces) = (req.add_special, req.with_pieces);
    tokio::task::spawn_blocking(move || {
        let (tok, pieces) = engine.tokens();
        let ids = tok
            .encode(&text, add_special)
            .map_err(|e| ApiError::invalid_param("content", e.to_string()))?;
        let tokens: Vec<Value> = if with_pieces {
            ids.iter()
                .map(|&id| {
                    let p = pieces.piece(tok, id);
                    // llama-server: the piece as a string, or its bytes when
                    // they are not valid UTF-8 alone.
                    let piece = match std::str::from_utf8(&p.bytes) {
                        Ok(s) => json!(s),
                        Err(_) => json!(p.bytes),
                    };
                    json!({"id": id, "piece": piece})
                })
                .collect()
        } else {
            ids.iter().map(|&id| json!(id)).collect()
        };
        Ok(Json(json!({
            "tokens": tokens,
            "count": ids.len(),
            "max_model_len": ctx,
        })))
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenizing failed: {e}")))?
}

pub async fn detokenize(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    raw: Body,
) -> Result<Json<Value>, ApiError> {
    let req: DetokenizeBody = app.read_body(&headers, raw).await?;
    let engine = app.engine.clone();
    tokio::task::spawn_blocking(move || {
        let (tok, _) = engine.tokens();
        let text = tok
            .decode(&req.tokens, false)
            .map_err(|e| ApiError::invalid_param("tokens", e.to_string()))?;
        // `content` is llama-server's name, `prompt` vLLM's.
        Ok(Json(json!({"content": text, "prompt": text})))
    })
    .await
    .map_err(|e| ApiError::internal(format!("detokenizing failed: {e}")))?
}
