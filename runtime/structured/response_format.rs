//! OpenAI's `response_format`, as the server and the JS API take it.

use serde::Deserialize;

use super::Constraint;
use crate::{HearthError, Result};

/// `{"type": "text"}`, `{"type": "json_object"}` or
/// `{"type": "json_schema", "json_schema": {"name", "schema", "strict", "description"}}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonSchemaFormat {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub schema: Option<serde_json::Value>,
    /// Hearth always follows the schema strictly; accepted for compatibility.
    #[serde(default)]
    pub strict: Option<bool>,
}

impl ResponseFormat {
    /// Parses `v`; a shape that is not one of the three is
    /// `InvalidField { field: "response_format" }` saying what is wrong.
    pub fn from_value(v: &serde_json::Value) -> Result<ResponseFormat> {
        ResponseFormat::deserialize(v).map_err(|e| HearthError::InvalidField {
            field: "response_format".into(),
            message: e.to_string(),
        })
    }

    /// The constraint it asks for (`None` for plain text).
    pub fn constraint(&self) -> Result<Option<Constraint>> {
        Ok(match self {
            ResponseFormat::Text => None,
            ResponseFormat::JsonObject => Some(Constraint::JsonObject),
            ResponseFormat::JsonSchema { json_schema } => {
                if json_schema.name.is_empty() {
                    return Err(HearthError::InvalidField {
                        field: "response_format.json_schema.name".into(),
                        message: "must not be empty".into(),
                    });
                }
                let schema =
                    json_schema
                        .schema
                        .clone()
                        .ok_or_else(|| HearthError::InvalidField {
                            field: "response_format.json_schema.schema".into(),
                            message: "a json_schema response format needs a schema".into(),
                        })?;
                Some(Constraint::JsonSchema(schema))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field_of(v: serde_json::Value) -> String {
        let r = ResponseFormat::from_value(&v).and_then(|f| f.constraint());
        match r {
            Err(HearthError::InvalidField { field, .. }) => field,
            other => panic!("{v}: expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn the_three_formats_map_to_their_constraints() {
        let c = |v| {
            ResponseFormat::from_value(&v)
                .unwrap()
                .constraint()
                .unwrap()
        };
        assert_eq!(c(json!({"type": "text"})), None);
        assert_eq!(
            c(json!({"type": "json_object"})),
            Some(Constraint::JsonObject)
        );
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        assert_eq!(
            c(
                json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": true}})
            ),
            Some(Constraint::JsonSchema(schema))
        );
    }

    #[test]
    fn bad_formats_name_the_field() {
        assert_eq!(field_of(json!({"type": "xml"})), "response_format");
        assert_eq!(field_of(json!({"type": "json_schema"})), "response_format");
        assert_eq!(
            field_of(json!({"type": "json_schema", "json_schema": {"name": "x"}})),
            "response_format.json_schema.schema"
        );
        assert_eq!(
            field_of(json!({"type": "json_schema", "json_schema": {"name": "", "schema": {}}})),
            "response_format.json_schema.name"
        );
    }
}
