//! Structured output through the official `openai` Python package
//! (tests/openai_structured.py) against `hearth serve` on the default model:
//! JSON schemas (answers checked with `jsonschema`), json_object, a GBNF
//! grammar, completions with response_format, and the 400s. It runs where
//! `$HEARTH_PYTHON` (scripts/test.sh sets it to a venv with `openai` and
//! `jsonschema`) or `python3` can import both; elsewhere it says it skipped.

mod serve_common;

use serve_common::*;

#[test]
fn structured_output_with_the_official_client() {
    let Some(py) = python_with("openai, jsonschema") else {
        eprintln!(
            "skipped: no python3 with the `openai` and `jsonschema` packages \
             (scripts/test.sh sets HEARTH_PYTHON)"
        );
        return;
    };
    let server = Server::start_model(
        default_model(),
        "smollm2",
        &[],
        tempfile::tempdir().unwrap(),
    );
    let stdout = run_client_script(&py, "openai_structured.py", &server, &["smollm2"]);
    eprintln!("{stdout}");
}
