//! The official `openai` Python package as the client (tests/openai_client.py).
//! It runs where `$HEARTH_PYTHON` (scripts/test.sh sets it to a venv that
//! has the package) or `python3` can import `openai`; elsewhere it says it
//! skipped.

mod serve_common;

use serve_common::*;

#[test]
fn official_openai_client() {
    let Some(py) = python_with("openai") else {
        eprintln!(
            "skipped: no python3 with the `openai` package (scripts/test.sh sets HEARTH_PYTHON)"
        );
        return;
    };
    let server = Server::start(&[]);
    run_client_script(&py, "openai_client.py", &server, &[MODEL]);
}
