//! Tool calling with the official `openai` Python package as the client
//! (tests/openai_tools.py) on the tiny tool model. It runs where
//! `$HEARTH_PYTHON` (scripts/test.sh sets it to a venv that has the package)
//! or `python3` can import `openai`; elsewhere it says it skipped.

mod serve_common;

use serve_common::tools_model::tool_model_bytes;
use serve_common::*;

#[test]
fn official_openai_client_calls_tools() {
    let Some(py) = python_with("openai") else {
        eprintln!(
            "skipped: no python3 with the `openai` package (scripts/test.sh sets HEARTH_PYTHON)"
        );
        return;
    };
    let server = Server::start_with_model(tool_model_bytes(), &[]);
    let stdout = run_client_script(&py, "openai_tools.py", &server, &[MODEL]);
    assert!(
        stdout.starts_with("ok"),
        "openai_tools.py did not report ok:\n{stdout}\nserver log:\n{}",
        server.log()
    );
    eprintln!("{stdout}");
}
