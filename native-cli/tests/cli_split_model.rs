//! `hearth info` and `hearth run` on a split GGUF (llama.cpp's `gguf-split`
//! names), given any shard: the same answers as the model in one file.

mod serve_common;

use serve_common::gguf_writer::{self, write_split};
use serve_common::{hearth_cmd, run_alone};

fn info_json(model: &std::path::Path) -> serde_json::Value {
    let out = hearth_cmd()
        .args(["info", "--json", "--model", model.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn info_and_run_on_a_shard_match_the_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let w = gguf_writer::tiny_char_model("llama", false);
    let whole = dir.path().join("whole.gguf");
    std::fs::write(&whole, w.build()).unwrap();
    let shards = write_split(dir.path(), "tiny", &w.split(3));

    let (one, split) = (info_json(&whole), info_json(&shards[0]));
    assert_eq!(
        split["model"]["kv_bytes_per_token"],
        one["model"]["kv_bytes_per_token"]
    );
    let source = split["model"]["source"].as_str().unwrap();
    assert!(source.contains("in 3 files"), "{source}");

    let want = run_alone(&whole, "hello world", 8, &["--ignore-eos"]);
    for shard in [&shards[0], &shards[2]] {
        let got = run_alone(shard, "hello world", 8, &["--ignore-eos"]);
        assert_eq!(
            (&got["prompt_ids"], &got["ids"], &got["text"]),
            (&want["prompt_ids"], &want["ids"], &want["text"]),
            "{}",
            shard.display()
        );
    }
}

#[test]
fn a_missing_shard_is_an_error_line_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let shards = write_split(
        dir.path(),
        "tiny",
        &gguf_writer::tiny_char_model("llama", false).split(2),
    );
    std::fs::remove_file(&shards[1]).unwrap();
    let out = hearth_cmd()
        .args(["run", "--model", shards[0].to_str().unwrap()])
        .args(["--prompt", "hello", "--max-tokens", "2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !err.contains("panicked"), "{err}");
    assert!(
        err.contains("error:")
            && err.contains("shard 2 of 2 is missing: ")
            && err.contains("tiny-00002-of-00002.gguf"),
        "{err}"
    );
}
