//! Fields Hearth refuses: the other endpoint's own, and options it accepts
//! only in their harmless form (no `echo`, ...), each a 400 naming the
//! field rather than silently ignored.

use super::checks::{unrecognized, unsupported};
use super::request::RequestBody;
use super::Endpoint;
use crate::cmd::serve::errors::ApiError;

/// The first field of the other endpoint present in `body`.
pub fn foreign_fields(body: &RequestBody, endpoint: Endpoint) -> Result<(), ApiError> {
    let foreign: &[(&str, bool)] = match endpoint {
        Endpoint::Chat => &[
            ("prompt", body.prompt.is_some()),
            ("echo", body.echo.is_some()),
            ("suffix", body.suffix.is_some()),
            ("best_of", body.best_of.is_some()),
        ],
        Endpoint::Completions => &[
            ("messages", body.messages.is_some()),
            (
                "max_completion_tokens",
                body.max_completion_tokens.is_some(),
            ),
            ("top_logprobs", body.top_logprobs.is_some()),
            ("tools", body.tools.is_some()),
            ("tool_choice", body.tool_choice.is_some()),
            ("parallel_tool_calls", body.parallel_tool_calls.is_some()),
        ],
    };
    match foreign.iter().find(|(_, present)| *present) {
        Some((field, _)) => Err(unrecognized(field)),
        None => Ok(()),
    }
}

/// Completions' `echo`, `suffix` and `best_of` beyond their no-op values.
pub fn completions_options(body: &RequestBody, n: usize) -> Result<(), ApiError> {
    if body.echo == Some(true) {
        return Err(unsupported("echo", "`echo`"));
    }
    if body.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(unsupported("suffix", "`suffix`"));
    }
    if let Some(b) = body.best_of {
        if b != n as i64 {
            return Err(unsupported("best_of", "`best_of` other than `n`"));
        }
    }
    Ok(())
}

/// `logit_bias`, where it asks for anything.
pub fn features(body: &RequestBody) -> Result<(), ApiError> {
    if body.logit_bias.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(unsupported("logit_bias", "`logit_bias`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_other_endpoints_fields_are_unrecognized() {
        let body = RequestBody {
            echo: Some(false),
            top_logprobs: Some(1),
            ..Default::default()
        };
        let e = foreign_fields(&body, Endpoint::Chat).unwrap_err();
        assert_eq!(e.message, "Unrecognized request argument supplied: echo");
        let e = foreign_fields(&body, Endpoint::Completions).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("top_logprobs"));
        assert!(foreign_fields(&RequestBody::default(), Endpoint::Chat).is_ok());
    }

    #[test]
    fn no_op_values_pass() {
        let body = RequestBody {
            echo: Some(false),
            suffix: Some(String::new()),
            best_of: Some(2),
            tools: Some(vec![]),
            tool_choice: Some("auto".into()),
            ..Default::default()
        };
        assert!(completions_options(&body, 2).is_ok());
        assert!(features(&body).is_ok());
        let e = completions_options(&body, 1).unwrap_err();
        assert_eq!(
            e.message,
            "`best_of` other than `n` is not supported by this server."
        );
    }
}
