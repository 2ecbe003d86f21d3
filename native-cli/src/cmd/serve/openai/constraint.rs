//! Structured output: `response_format` (OpenAI's `text`, `json_object`,
//! `json_schema`) and `grammar` (llama.cpp's GBNF, as its server takes it)
//! on both endpoints, as the library's [`Constraint`]. Whether a schema or
//! grammar compiles is the engine's to say when it admits the request
//! (a 400 naming the field, see `serve::engine`).

use hearth::structured::{Constraint, ResponseFormat};
use hearth::HearthError;

use super::request::RequestBody;
use crate::cmd::serve::errors::ApiError;

/// The request's constraint and the field it came from.
pub fn constraint(body: &RequestBody) -> Result<Option<(Constraint, &'static str)>, ApiError> {
    let from_format = match &body.response_format {
        None => None,
        Some(rf) => response_format(rf)?.map(|c| (c, "response_format")),
    };
    match (&body.grammar, from_format) {
        (Some(_), Some(_)) => Err(ApiError::invalid_param(
            "grammar",
            "`grammar` and a `response_format` other than `text` cannot be combined; \
             give one of them.",
        )),
        (Some(g), None) if g.trim().is_empty() => Err(ApiError::invalid_param(
            "grammar",
            "`grammar` is empty; give a GBNF grammar with a `root` rule.",
        )),
        (Some(g), None) => Ok(Some((Constraint::Gbnf(g.clone()), "grammar"))),
        (None, c) => Ok(c),
    }
}

/// `response_format` through the library's parser; its errors name the
/// field (`response_format`, `response_format.json_schema.schema`, ...).
fn response_format(v: &serde_json::Value) -> Result<Option<Constraint>, ApiError> {
    ResponseFormat::from_value(v)
        .and_then(|f| f.constraint())
        .map_err(|e| match e {
            HearthError::InvalidField { field, message } => {
                ApiError::invalid_param(&field, format!("Invalid '{field}': {message}."))
            }
            e => ApiError::invalid_param("response_format", e.to_string()),
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::serve::body::parse_json;

    fn parse(body: serde_json::Value) -> Result<Option<(Constraint, &'static str)>, ApiError> {
        let body: RequestBody = parse_json(body.to_string().as_bytes())?;
        constraint(&body)
    }

    fn param(body: serde_json::Value) -> (String, String) {
        let e = parse(body).unwrap_err();
        (e.param.unwrap_or_default(), e.message)
    }

    #[test]
    fn each_form_becomes_its_constraint() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let cases = [
            (json!({"model": "m"}), None),
            (
                json!({"model": "m", "response_format": {"type": "text"}}),
                None,
            ),
            (
                json!({"model": "m", "response_format": {"type": "json_object"}}),
                Some((Constraint::JsonObject, "response_format")),
            ),
            (
                json!({"model": "m", "response_format": {"type": "json_schema", "json_schema":
                    {"name": "thing_1", "schema": schema, "strict": true, "description": "d"}}}),
                Some((Constraint::JsonSchema(schema.clone()), "response_format")),
            ),
            (
                json!({"model": "m", "grammar": "root ::= \"a\""}),
                Some((Constraint::Gbnf("root ::= \"a\"".into()), "grammar")),
            ),
            (
                json!({"model": "m", "grammar": "root ::= \"a\"", "response_format": {"type": "text"}}),
                Some((Constraint::Gbnf("root ::= \"a\"".into()), "grammar")),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(parse(body.clone()).unwrap(), want, "{body}");
        }
    }

    #[test]
    fn bad_forms_name_their_field() {
        let cases = [
            (
                json!({"model": "m", "response_format": {"type": "xml"}}),
                "response_format",
                "xml",
            ),
            (
                json!({"model": "m", "response_format": {"type": "json_schema"}}),
                "response_format",
                "json_schema",
            ),
            (
                json!({"model": "m", "response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}),
                "response_format",
                "name",
            ),
            (
                json!({"model": "m", "response_format": {"type": "json_schema", "json_schema": {"name": "", "schema": {}}}}),
                "response_format.json_schema.name",
                "must not be empty",
            ),
            (
                json!({"model": "m", "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
                "response_format.json_schema.schema",
                "needs a schema",
            ),
            (
                json!({"model": "m", "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}, "bogus": 1}}}),
                "response_format",
                "bogus",
            ),
            (
                json!({"model": "m", "response_format": "json_object"}),
                "response_format",
                "",
            ),
            (
                json!({"model": "m", "grammar": "root ::= \"a\"", "response_format": {"type": "json_object"}}),
                "grammar",
                "cannot be combined",
            ),
            (
                json!({"model": "m", "grammar": " \n"}),
                "grammar",
                "is empty",
            ),
        ];
        for (body, want_param, want_text) in cases {
            let (p, m) = param(body.clone());
            assert_eq!(p, want_param, "{body}: {m}");
            assert!(m.contains(want_text), "{body}: {m}");
        }
    }
}
