//! `hearth embed`: texts from arguments or stdin lines, one JSON vector per
//! line on stdout. Oracle: sentence-transformers' vectors for the fixture
//! (tests/fixtures/embed/llama_mean: mean pooling, not normalized).

mod serve_common;

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;
use serve_common::{assert_embedding_close, embed_fixture, hearth_cmd, tiny_model_bytes};

fn fixture() -> PathBuf {
    embed_fixture("llama_mean")
}

fn golden() -> (Vec<String>, Vec<Vec<f32>>) {
    let g: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("golden.json")).unwrap())
            .unwrap();
    (
        serde_json::from_value(g["inputs"].clone()).unwrap(),
        serde_json::from_value(g["embeddings"].clone()).unwrap(),
    )
}

/// Runs `hearth embed ARGS` with `stdin`; (success, stdout, stderr).
fn embed(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = hearth_cmd()
        .arg("embed")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hearth embed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn vectors(stdout: &str) -> Vec<Vec<f32>> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn arguments_and_stdin_lines_give_the_goldens() {
    let (inputs, want) = golden();
    let model = fixture();
    let m = model.to_str().unwrap();
    let mut args = vec!["--model", m];
    args.extend(inputs.iter().map(String::as_str));
    let (ok, out, err) = embed(&args, "");
    assert!(ok, "{err}");
    assert!(err.contains("mean pooling, 32 dimensions"), "{err}");
    let got = vectors(&out);
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_embedding_close(g, w, &format!("argument {i}"));
    }
    let (ok, out, err) = embed(&["--model", m], &(inputs.join("\n") + "\n"));
    assert!(ok, "{err}");
    assert_eq!(vectors(&out), got, "stdin lines == arguments");
}

#[test]
fn bad_inputs_exit_non_zero_naming_the_problem() {
    let model = fixture();
    let m = model.to_str().unwrap();
    let (ok, _, err) = embed(&["--model", m], "hello\n\nworld\n");
    assert!(!ok && err.contains("stdin line 2 is empty"), "{err}");
    let (ok, _, err) = embed(&["--model", m], "");
    assert!(!ok && err.contains("nothing to embed"), "{err}");
    let (ok, _, err) = embed(&["--model", m, "--pooling", "max", "x"], "");
    assert!(!ok && err.contains("not a pooling type"), "{err}");
    // A generator that declares no pooling: refused unless --pooling says how.
    let dir = tempfile::tempdir().unwrap();
    let tiny = dir.path().join("tiny.gguf");
    std::fs::write(&tiny, tiny_model_bytes()).unwrap();
    let t = tiny.to_str().unwrap();
    let (ok, _, err) = embed(&["--model", t, "hello"], "");
    assert!(!ok && err.contains("--pooling"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let (ok, out, err) = embed(&["--model", t, "--pooling", "last", "hello", "abc"], "");
    assert!(ok, "{err}");
    assert_eq!(vectors(&out).len(), 2);
}
