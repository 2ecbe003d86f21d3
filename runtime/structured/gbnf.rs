//! llama.cpp's GBNF grammars, translated to llguidance's Lark syntax.

use crate::Result;

/// Translates a GBNF grammar to Lark (placeholder until the translator lands).
pub fn gbnf_to_lark(_gbnf: &str) -> Result<String> {
    Err(crate::HearthError::InvalidField {
        field: "grammar".into(),
        message: "GBNF grammars are not translated yet".into(),
    })
}
