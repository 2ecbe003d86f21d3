//! What the output holds: its length (`max_tokens`), where it stops
//! (`stop`) and the log-probabilities reported with it (`logprobs`, whose
//! form differs between the endpoints).

use super::checks::int_in;
use super::request::{RequestBody, Stop};
use super::{Endpoint, MAX_LOGPROBS, MAX_STOP};
use crate::cmd::serve::errors::ApiError;

/// OpenAI's default `max_tokens` for the legacy completions endpoint.
pub const COMPLETIONS_DEFAULT_MAX_TOKENS: usize = 16;

/// `None`: as many as the context leaves (chat's default). Chat's
/// `max_completion_tokens` wins over its older `max_tokens`.
pub fn max_tokens(body: &RequestBody, endpoint: Endpoint) -> Result<Option<usize>, ApiError> {
    let chat = endpoint == Endpoint::Chat;
    Ok(match (chat, body.max_completion_tokens, body.max_tokens) {
        (true, Some(m), _) => Some(int_in("max_completion_tokens", m, 1, i64::MAX)?),
        (_, _, Some(m)) => Some(int_in("max_tokens", m, 1, i64::MAX)?),
        (true, None, None) => None,
        (false, _, None) => Some(COMPLETIONS_DEFAULT_MAX_TOKENS),
    })
}

pub fn stop(stop: Option<Stop>) -> Result<Vec<String>, ApiError> {
    let stop = match stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stop.len() > MAX_STOP {
        return Err(ApiError::invalid_param(
            "stop",
            format!(
                "At most {MAX_STOP} stop sequences are allowed, got {}.",
                stop.len()
            ),
        ));
    }
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid_param(
            "stop",
            "Stop sequences must not be empty.",
        ));
    }
    Ok(stop)
}

/// Alternatives per token to report, when logprobs were asked for.
pub fn logprobs(body: &RequestBody, endpoint: Endpoint) -> Result<Option<usize>, ApiError> {
    match endpoint {
        Endpoint::Chat => chat_logprobs(body),
        Endpoint::Completions => completions_logprobs(body),
    }
}

/// Chat: `logprobs` a boolean, `top_logprobs` the alternatives (only with it).
fn chat_logprobs(body: &RequestBody) -> Result<Option<usize>, ApiError> {
    let on = match &body.logprobs {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "logprobs",
                "Invalid value for `logprobs`: expected a boolean (use `top_logprobs` for alternatives).",
            ))
        }
    };
    let top = body
        .top_logprobs
        .map(|k| int_in("top_logprobs", k, 0, MAX_LOGPROBS as i64))
        .transpose()?;
    match (on, top) {
        (false, Some(_)) => Err(ApiError::invalid_param(
            "top_logprobs",
            "`top_logprobs` needs `logprobs` set to true.",
        )),
        (false, None) => Ok(None),
        (true, top) => Ok(Some(top.unwrap_or(0))),
    }
}

/// Completions: `logprobs` is the number of alternatives.
fn completions_logprobs(body: &RequestBody) -> Result<Option<usize>, ApiError> {
    match &body.logprobs {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(k) => Ok(Some(int_in("logprobs", k, 0, MAX_LOGPROBS as i64)?)),
            None => Err(ApiError::invalid_param(
                "logprobs",
                "Invalid value for `logprobs`: expected an integer (alternatives per token).",
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(logprobs: serde_json::Value, top_logprobs: Option<i64>) -> RequestBody {
        RequestBody {
            logprobs: Some(logprobs),
            top_logprobs,
            ..Default::default()
        }
    }

    #[test]
    fn stop_strings() {
        assert_eq!(stop(None).unwrap(), Vec::<String>::new());
        assert_eq!(stop(Some(Stop::One("x".into()))).unwrap(), ["x"]);
        let e = stop(Some(Stop::Many(vec!["s".into(); 17]))).unwrap_err();
        assert_eq!(e.message, "At most 16 stop sequences are allowed, got 17.");
        let e = stop(Some(Stop::Many(vec!["a".into(), String::new()]))).unwrap_err();
        assert_eq!(e.message, "Stop sequences must not be empty.");
    }

    #[test]
    fn max_tokens_defaults_differ_by_endpoint() {
        let none = RequestBody::default();
        assert_eq!(max_tokens(&none, Endpoint::Chat).unwrap(), None);
        assert_eq!(max_tokens(&none, Endpoint::Completions).unwrap(), Some(16));
        let both = RequestBody {
            max_completion_tokens: Some(5),
            max_tokens: Some(7),
            ..Default::default()
        };
        assert_eq!(max_tokens(&both, Endpoint::Chat).unwrap(), Some(5));
        assert_eq!(max_tokens(&both, Endpoint::Completions).unwrap(), Some(7));
    }

    #[test]
    fn logprobs_per_endpoint() {
        use serde_json::json;
        let chat = |b: &RequestBody| logprobs(b, Endpoint::Chat);
        let completions = |b: &RequestBody| logprobs(b, Endpoint::Completions);
        assert_eq!(chat(&body(json!(true), Some(3))).unwrap(), Some(3));
        assert_eq!(chat(&body(json!(true), None)).unwrap(), Some(0));
        assert_eq!(chat(&body(json!(false), None)).unwrap(), None);
        let e = chat(&body(json!(false), Some(2))).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("top_logprobs"));
        assert_eq!(
            chat(&body(json!(true), Some(21))).unwrap_err().message,
            "`top_logprobs` must be between 0 and 20, got 21."
        );
        assert_eq!(completions(&body(json!(4), None)).unwrap(), Some(4));
        assert_eq!(completions(&body(json!(null), None)).unwrap(), None);
        let e = completions(&body(json!(true), None)).unwrap_err();
        assert_eq!(
            e.message,
            "Invalid value for `logprobs`: expected an integer (alternatives per token)."
        );
    }
}
