//! The README's first command, `hearth run --chat "Which ocean is the
//! largest?"`, with every option at its default (the library's: greedy,
//! 256 tokens): on the default model it must name the Pacific and end on
//! its own (finish reason stop), not at the token limit.

mod serve_common;

use std::process::Command;

use serve_common::default_model;

#[test]
fn first_command_names_the_pacific_with_the_default_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args([
            "run",
            "--chat",
            "Which ocean is the largest?",
            "--json",
            "--model",
        ])
        .arg(default_model())
        .env("WGPU_BACKEND", "vulkan")
        .output()
        .expect("runs hearth");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "hearth run failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().expect("a JSON line");
    let v: serde_json::Value = serde_json::from_str(line).expect("JSON");
    let text = v["text"].as_str().expect("text");
    assert!(text.contains("Pacific"), "the answer: {text:?}");
    assert_eq!(v["finish_reason"], "stop", "{v}");
}
