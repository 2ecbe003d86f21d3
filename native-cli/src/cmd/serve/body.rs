//! Reading a request body: the size limit is enforced while reading (and
//! from `Content-Length` before reading anything), and every way a body can
//! be wrong — not UTF-8, not JSON, not an object, a wrong type, an unknown
//! field — becomes a 400 in OpenAI's shape that names the field, instead of
//! axum's plain-text rejections.

use axum::body::Body;
use axum::http::{header, HeaderMap};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::errors::ApiError;

pub async fn read_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::body_too_large(limit));
    }
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("Could not read the request body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::body_too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    parse_json(&buf)
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "The request body is not valid UTF-8 (invalid byte at offset {}).",
            e.valid_up_to()
        ))
    })?;
    // serde would also read a struct from a JSON array; OpenAI's API takes objects only.
    match text.trim_start().chars().next() {
        None => {
            return Err(ApiError::bad_request(
                "The request body is empty; expected a JSON object.",
            ))
        }
        Some('{') => {}
        Some(_) => {
            // Tell malformed JSON apart from well-formed JSON of the wrong kind.
            return Err(match serde_json::from_str::<serde_json::Value>(text) {
                Ok(_) => ApiError::bad_request("The request body must be a JSON object."),
                Err(e) => invalid_json(&e),
            });
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        data_error(&path, e.into_inner())
    })?;
    de.end().map_err(|e| invalid_json(&e))?;
    Ok(value)
}

fn invalid_json(e: &serde_json::Error) -> ApiError {
    ApiError::bad_request(format!(
        "We could not parse the JSON body of your request: {e}. The body must be a JSON object."
    ))
}

/// serde_json's message without its " at line L column C" suffix.
fn bare_message(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    msg.strip_suffix(&suffix).unwrap_or(&msg).to_string()
}

/// What an untagged field accepts, for a message better than serde's
/// "data did not match any variant".
fn expected_for(path: &str) -> Option<&'static str> {
    let last = path.rsplit('.').next().unwrap_or(path);
    Some(match last {
        "stop" => "a string or an array of strings",
        "prompt" => {
            "a string, an array of strings, an array of token ids or an array of arrays of token ids"
        }
        "content" => "a string or an array of content parts",
        "seed" => "an integer",
        _ => return None,
    })
}

/// `field` under `path`: serde_path_to_error's path already ends with an
/// unknown field's name, but not with a missing one's.
fn field_path(path: &str, field: &str) -> String {
    if path.is_empty() || path == "." {
        field.to_string()
    } else if path == field || path.ends_with(&format!(".{field}")) {
        path.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn data_error(path: &str, e: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    if matches!(
        e.classify(),
        Category::Syntax | Category::Eof | Category::Io
    ) {
        return invalid_json(&e);
    }
    let msg = bare_message(&e);
    let at_root = path.is_empty() || path == ".";
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let param = field_path(path, rest.split('`').next().unwrap_or(rest));
        return ApiError::invalid_param(
            &param,
            format!("Unrecognized request argument supplied: {param}"),
        );
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let param = field_path(path, rest.split('`').next().unwrap_or(rest));
        return ApiError::invalid_param(&param, format!("Missing required parameter: `{param}`."));
    }
    if at_root {
        return ApiError::bad_request(format!("Invalid request body: {msg}."));
    }
    let detail = match expected_for(path) {
        Some(exp) if msg.contains("did not match any variant") => format!("expected {exp}"),
        _ => msg,
    };
    ApiError::invalid_param(path, format!("Invalid value for `{path}`: {detail}."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Req {
        model: String,
        max_tokens: Option<i64>,
        stop: Option<Stop>,
        messages: Option<Vec<Msg>>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Msg {
        role: String,
    }

    #[derive(Deserialize, Debug)]
    #[serde(untagged)]
    #[allow(dead_code)]
    enum Stop {
        One(String),
        Many(Vec<String>),
    }

    fn err(body: &[u8]) -> ApiError {
        parse_json::<Req>(body).unwrap_err()
    }

    #[test]
    fn every_bad_body_names_its_problem() {
        assert!(err(b"{\"model\": ").message.contains("could not parse"));
        assert!(err(b"[1, 2]").message.contains("JSON object"));
        assert!(err(b"").message.contains("empty"));
        assert!(err(b"{\"model\": \"m\xff\"}").message.contains("UTF-8"));
        let e = err(br#"{"model": "m", "max_tokens": "ten"}"#);
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        let e = err(br#"{"model": "m", "frobnicate": 1}"#);
        assert_eq!(e.param.as_deref(), Some("frobnicate"));
        assert!(e
            .message
            .contains("Unrecognized request argument supplied: frobnicate"));
        let e = err(br#"{"model": "m", "messages": [{"role": "user", "colour": 1}]}"#);
        assert_eq!(e.param.as_deref(), Some("messages[0].colour"));
        let e = err(br#"{"model": "m", "stop": 3}"#);
        assert_eq!(e.param.as_deref(), Some("stop"));
        assert!(e.message.contains("a string or an array of strings"));
        let e = err(br#"{"max_tokens": 3}"#);
        assert_eq!(e.param.as_deref(), Some("model"));
        assert!(err(br#"{"model": "m"} x"#)
            .message
            .contains("could not parse"));
        assert!(parse_json::<Req>(br#" {"model": "m", "stop": ["a"]} "#).is_ok());
    }
}
