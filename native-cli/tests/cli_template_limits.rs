//! `hearth run --chat` on a model whose chat template would run for hours
//! (issue 20): it exits non-zero, naming the template's instruction budget.

mod serve_common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serve_common::gguf_writer::{self, Val};
use serve_common::hearth_cmd;

/// Guards against a hang only; the run takes well under a second of templating.
const HANG_GUARD: Duration = Duration::from_secs(120);

#[test]
fn run_chat_with_an_endless_template_fails_cleanly() {
    let mut w = gguf_writer::tiny_char_model("llama", false);
    w.kv(
        "tokenizer.chat_template",
        Val::str("{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}"),
    );
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("endless.gguf");
    std::fs::write(&model, w.build()).unwrap();
    let mut child = hearth_cmd()
        .args(["run", "--model", model.to_str().unwrap()])
        .args(["--chat", "hi", "--max-tokens", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hearth");
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > HANG_GUARD {
            let _ = child.kill();
            panic!("hearth run --chat hung on the endless template");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("instruction budget"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
