//! `POST /v1/embeddings` in OpenAI's shape: `input` as a string, an array
//! of strings, an array of token ids or an array of such arrays;
//! `encoding_format` `float` or `base64` (little-endian f32, what the
//! official client asks for by default); `usage` counts the input tokens.
//! Inputs are tokenized here, on a blocking worker, and run through the
//! engine together (prefill only, pooled as the model declares).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::errors::ApiError;
use super::routes::App;

/// OpenAI's cap on inputs per request.
const MAX_INPUTS: usize = 2048;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingsBody {
    model: String,
    input: Value,
    encoding_format: Option<String>,
    dimensions: Option<Value>,
    #[allow(dead_code)] // accepted: end-user ids are the client's bookkeeping
    user: Option<String>,
}

/// One input as the client sent it.
#[derive(Debug, Clone, PartialEq)]
enum Input {
    Text(String),
    Ids(Vec<u32>),
}

fn bad_input(message: impl Into<String>) -> ApiError {
    ApiError::invalid_param("input", message)
}

/// `input` as OpenAI takes it; errors name what is wrong with it.
fn parse_input(v: &Value) -> Result<Vec<Input>, ApiError> {
    let ids = |a: &[Value], at: &str| -> Result<Vec<u32>, ApiError> {
        a.iter()
            .map(|x| {
                x.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| bad_input(format!("{at} holds {x}, not a token id")))
            })
            .collect()
    };
    let inputs = match v {
        Value::String(s) => vec![Input::Text(s.clone())],
        Value::Array(a) if a.is_empty() => {
            return Err(bad_input("`input` is an empty array."));
        }
        Value::Array(a) => match &a[0] {
            Value::String(_) => a
                .iter()
                .enumerate()
                .map(|(i, x)| match x {
                    Value::String(s) => Ok(Input::Text(s.clone())),
                    other => Err(bad_input(format!(
                        "`input[{i}]` is {other}; an array of strings holds only strings."
                    ))),
                })
                .collect::<Result<_, _>>()?,
            Value::Number(_) => vec![Input::Ids(ids(a, "`input`")?)],
            Value::Array(_) => a
                .iter()
                .enumerate()
                .map(|(i, x)| match x {
                    Value::Array(inner) => Ok(Input::Ids(ids(inner, &format!("`input[{i}]`"))?)),
                    other => Err(bad_input(format!(
                        "`input[{i}]` is {other}; an array of token arrays holds only arrays."
                    ))),
                })
                .collect::<Result<_, _>>()?,
            other => {
                return Err(bad_input(format!(
                    "`input[0]` is {other}; `input` takes a string, an array of strings, an array \
                     of token ids or an array of token id arrays."
                )))
            }
        },
        other => {
            return Err(bad_input(format!(
                "`input` is {other}; it takes a string, an array of strings, an array of token \
                 ids or an array of token id arrays."
            )))
        }
    };
    if inputs.len() > MAX_INPUTS {
        return Err(bad_input(format!(
            "`input` has {} entries; at most {MAX_INPUTS} per request.",
            inputs.len()
        )));
    }
    for (i, x) in inputs.iter().enumerate() {
        let empty = match x {
            Input::Text(t) => t.is_empty(),
            Input::Ids(ids) => ids.is_empty(),
        };
        if empty {
            let at = if inputs.len() == 1 && !v.is_array() {
                "`input`".to_string()
            } else {
                format!("`input[{i}]`")
            };
            return Err(bad_input(format!("{at} is empty.")));
        }
    }
    Ok(inputs)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Encoding {
    Float,
    Base64,
}

fn parse_encoding(v: Option<&str>) -> Result<Encoding, ApiError> {
    match v {
        None | Some("float") => Ok(Encoding::Float),
        Some("base64") => Ok(Encoding::Base64),
        Some(other) => Err(ApiError::invalid_param(
            "encoding_format",
            format!("`encoding_format` is `{other}`; it takes `float` or `base64`."),
        )),
    }
}

/// `dimensions`: only the model's own width (truncation is not supported).
fn check_dimensions(v: Option<&Value>, width: usize) -> Result<(), ApiError> {
    match v {
        None | Some(Value::Null) => Ok(()),
        Some(d) if d.as_u64() == Some(width as u64) => Ok(()),
        Some(d) => Err(ApiError::invalid_param(
            "dimensions",
            format!(
                "`dimensions` is {d}; this model's embeddings have {width} dimensions and \
                 shortening them is not supported."
            ),
        )),
    }
}

/// Little-endian f32s in standard base64, as OpenAI's `base64` format.
fn base64_floats(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub async fn embeddings(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    embed(app, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn embed(app: Arc<App>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    app.check_open()?;
    let settings = &app.settings;
    let req: EmbeddingsBody = app.read_body(&headers, body).await?;
    app.check_model(&req.model)?;
    let inputs = parse_input(&req.input)?;
    let encoding = parse_encoding(req.encoding_format.as_deref())?;
    check_dimensions(req.dimensions.as_ref(), app.engine.hidden_size)?;
    app.engine.check_pooling()?;
    let engine = app.engine.clone();
    let ids = tokio::task::spawn_blocking(move || engine.tokenize_inputs(&inputs))
        .await
        .map_err(|e| ApiError::internal(format!("tokenizing the input: {e}")))??;
    // Held until the vectors are back: as many inputs at once as permits.
    let wave = ids.len().min(settings.max_sequences).max(1);
    let permit = app
        .admission
        .clone()
        .try_acquire_many_owned(wave as u32)
        .map_err(|_| {
            ApiError::queue_full(format!(
                "The server is busy: {} sequences are running or queued; retry later \
                 (--max-num-seqs + --max-queue).",
                settings.max_sequences
            ))
        })?;
    let prompt_tokens: usize = ids.iter().map(Vec::len).sum();
    let vectors = app.engine.embed(ids, wave, arrived).await?;
    drop(permit);
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = match encoding {
                Encoding::Float => json!(v),
                Encoding::Base64 => json!(base64_floats(v)),
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": app.model_id,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }))
    .into_response())
}

impl super::engine::EngineClient {
    /// Token ids of every input: text bounded in bytes by what the context
    /// could hold, then tokenized as the model adds special tokens; ids as
    /// they are. Each is checked against the context and the vocabulary.
    fn tokenize_inputs(&self, inputs: &[Input]) -> Result<Vec<Vec<u32>>, ApiError> {
        inputs
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let at = if inputs.len() == 1 {
                    "The input".to_string()
                } else {
                    format!("`input[{i}]`")
                };
                let prompt = match x {
                    Input::Text(t) => hearth::Prompt::Text(t.clone()),
                    Input::Ids(ids) => hearth::Prompt::Ids(ids.clone()),
                };
                let ids = self.input_ids(&prompt, &at)?;
                if ids.len() > self.context_length {
                    return Err(bad_input(format!(
                        "This model's maximum context length is {} tokens; {at} has {} tokens. \
                         Please shorten it.",
                        self.context_length,
                        ids.len()
                    ))
                    .with_code("context_length_exceeded"));
                }
                Ok(ids)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(v: Value) -> String {
        let e = parse_input(&v).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input"));
        e.message
    }

    #[test]
    fn every_input_shape_openai_takes() {
        let t = |s: &str| Input::Text(s.into());
        assert_eq!(parse_input(&json!("hi")).unwrap(), [t("hi")]);
        assert_eq!(parse_input(&json!(["a", "b"])).unwrap(), [t("a"), t("b")]);
        assert_eq!(
            parse_input(&json!([1, 2, 3])).unwrap(),
            [Input::Ids(vec![1, 2, 3])]
        );
        assert_eq!(
            parse_input(&json!([[1], [2, 3]])).unwrap(),
            [Input::Ids(vec![1]), Input::Ids(vec![2, 3])]
        );
    }

    #[test]
    fn bad_inputs_name_the_entry() {
        assert!(err(json!([])).contains("empty array"));
        assert!(err(json!("")).contains("`input` is empty"));
        assert!(err(json!(["a", ""])).contains("`input[1]` is empty"));
        assert!(err(json!(["a", 3])).contains("`input[1]` is 3"));
        assert!(err(json!([1, -2])).contains("holds -2, not a token id"));
        assert!(err(json!([[1], "x"])).contains("`input[1]` is \"x\""));
        assert!(err(json!([[1], [5000000000u64]])).contains("`input[1]` holds 5000000000"));
        assert!(err(json!({"a": 1})).contains("it takes a string"));
        assert!(err(json!([true])).contains("`input[0]` is true"));
        let many: Vec<&str> = vec!["x"; MAX_INPUTS + 1];
        assert!(err(json!(many)).contains("at most 2048"));
    }

    #[test]
    fn encodings_and_dimensions() {
        assert_eq!(parse_encoding(None).unwrap(), Encoding::Float);
        assert_eq!(parse_encoding(Some("base64")).unwrap(), Encoding::Base64);
        let e = parse_encoding(Some("int8")).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("encoding_format"));
        check_dimensions(Some(&json!(32)), 32).unwrap();
        check_dimensions(None, 32).unwrap();
        let e = check_dimensions(Some(&json!(16)), 32).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("dimensions"));
        assert!(e.message.contains("32 dimensions"));
    }

    #[test]
    fn base64_is_little_endian_f32() {
        assert_eq!(base64_floats(&[1.0]), "AACAPw==");
        assert_eq!(base64_floats(&[]), "");
    }
}
