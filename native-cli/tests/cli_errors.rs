//! Bad input through the `hearth` binary: every case exits non-zero with an
//! error line that names the problem, and never panics.

mod serve_common;

use std::path::Path;

use serve_common::gguf_writer::{self, GgufWriter, Val};
use serve_common::hearth_cmd;

/// The writer's tiny model with single-character tokens (any lowercase prompt encodes).
fn tiny_model(arch: &str, tied: bool) -> GgufWriter {
    gguf_writer::tiny_char_model(arch, tied)
}

fn hearth(args: &[&str]) -> (bool, String, String) {
    hearth_env(args, &[])
}

fn hearth_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = hearth_cmd()
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run hearth");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `hearth run` on `bytes` written as a GGUF and expects a clean failure mentioning `needle`.
fn expect_run_error(bytes: &[u8], extra: &[&str], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.gguf");
    std::fs::write(&p, bytes).unwrap();
    expect_error_at(&p, extra, needle);
}

fn expect_error_at(p: &Path, extra: &[&str], needle: &str) {
    let mut args = vec!["run", "--model", p.to_str().unwrap()];
    if !extra.iter().any(|a| *a == "--prompt" || *a == "--chat") {
        args.extend(["--prompt", "hello world", "--max-tokens", "2"]);
    }
    args.extend(extra);
    let (ok, _out, err) = hearth(&args);
    assert!(!ok, "expected failure for {needle:?}; stderr: {err}");
    assert!(
        !err.contains("panicked"),
        "panic instead of an error: {err}"
    );
    assert!(err.contains("error:"), "no error line: {err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "error should mention {needle:?}: {err}"
    );
}

#[test]
fn truncated_gguf() {
    let bytes = tiny_model("llama", false).build();
    for cut in [10, 100, bytes.len() / 2, bytes.len() - 1] {
        expect_run_error(&bytes[..cut], &[], "invalid model file");
    }
}

#[test]
fn bad_magic() {
    let mut bytes = tiny_model("llama", false).build();
    bytes[..4].copy_from_slice(b"GGUX");
    expect_run_error(&bytes, &[], "magic");
}

#[test]
fn tensor_offset_past_end() {
    let mut w = tiny_model("llama", false);
    w.tensors[3].offset = Some(1 << 40);
    expect_run_error(&w.build(), &[], "past the end");
}

#[test]
fn unknown_tensor_type() {
    let mut w = tiny_model("llama", false);
    w.tensors[5].type_id = 10; // Q2_K
    expect_run_error(&w.build(), &[], "Q2_K");
}

#[test]
fn unsupported_architecture() {
    let mut w = tiny_model("llama", false);
    w.kv("general.architecture", Val::str("gpt2"));
    expect_run_error(&w.build(), &[], "architecture `gpt2`");
}

#[test]
fn missing_tensor() {
    let mut w = tiny_model("llama", false);
    w.tensors.retain(|t| t.name != "blk.1.ffn_down.weight");
    expect_run_error(&w.build(), &[], "blk.1.ffn_down.weight");
}

#[test]
fn shape_mismatch() {
    let mut w = tiny_model("llama", false);
    let t = w
        .tensors
        .iter_mut()
        .find(|t| t.name == "blk.0.attn_k.weight")
        .unwrap();
    // [kv_dim, hidden] = [32, 64] stored as [64, 32].
    t.shape.reverse();
    expect_run_error(&w.build(), &[], "blk.0.attn_k.weight");
}

#[test]
fn prompt_longer_than_context() {
    // The tiny model's context is 256 tokens.
    let long = "ab ".repeat(200);
    expect_run_error(
        &tiny_model("llama", false).build(),
        &["--prompt", &long],
        "context",
    );
}

#[test]
fn empty_prompt() {
    expect_run_error(
        &tiny_model("llama", false).build(),
        &["--prompt", ""],
        "empty",
    );
}

#[test]
fn missing_file_and_directory_without_config() {
    let dir = tempfile::tempdir().unwrap();
    expect_error_at(&dir.path().join("nope.gguf"), &[], "nope.gguf");
    expect_error_at(dir.path(), &[], "config.json");
}

#[test]
fn bad_options() {
    let bytes = tiny_model("llama", false).build();
    expect_run_error(&bytes, &["--dtype", "q3"], "unknown dtype");
    expect_run_error(&bytes, &["--temperature=-1"], "temperature");
    expect_run_error(&bytes, &["--kv-memory", "lots"], "invalid size");
    expect_run_error(
        &bytes,
        &["--kv-dtype", "q5"],
        "expected one of f16, f32, q8, q4",
    );
    // The tiny model's heads of 16 are not whole 32-element groups.
    expect_run_error(&bytes, &["--kv-dtype", "q4"], "head_dim 16");
}

#[test]
fn quantized_kv_reported_and_usable() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.gguf");
    let mut w = gguf_writer::tiny_model_hd("llama", false, 32);
    gguf_writer::char_vocab(&mut w);
    std::fs::write(&p, w.build()).unwrap();
    let path = p.to_str().unwrap();
    let (ok, out, err) = hearth(&["info", "--json", "--model", path]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // 2 layers x 2 KV heads x (K+V) x head row bytes of 32 elements.
    let per = &v["model"]["kv_bytes_per_token"];
    assert_eq!(
        [&per["f16"], &per["f32"], &per["q8"], &per["q4"]].map(|b| b.as_u64().unwrap()),
        [8 * 64, 8 * 128, 8 * 36, 8 * 20],
        "{v}"
    );
    assert!(v["adapters"].as_array().is_some_and(|a| !a.is_empty()));
    let (ok, out, err) = hearth(&["info", "--model", path]);
    assert!(
        ok && out.contains("--kv-dtype q4") && out.contains("0.312x f16"),
        "{out}{err}"
    );
    for dtype in ["q8", "q4"] {
        let (ok, out, err) = hearth(&[
            "bench",
            "--model",
            path,
            "--kv-dtype",
            dtype,
            "--prompt-tokens",
            "20",
            "--gen-tokens",
            "3",
            "--json",
        ]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["kv_dtype"], dtype);
        assert_eq!(v["kv_bytes_per_token"], per[dtype], "{v}");
        assert!(v["decode_tok_s"].as_f64().is_some_and(|x| x > 0.0), "{v}");
    }
}

#[test]
fn tiny_model_runs_and_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.gguf");
    std::fs::write(&p, tiny_model("llama", false).build()).unwrap();
    let (ok, out, err) = hearth(&[
        "run",
        "--model",
        p.to_str().unwrap(),
        "--prompt",
        "t1 t2 t3",
        "--max-tokens",
        "5",
        "--temperature",
        "0",
        "--ignore-eos",
        "--json",
        "--logprobs",
        "3",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["ids"].as_array().unwrap().len(), 5);
    let top = v["top_logprobs"].as_array().unwrap();
    assert_eq!(top.len(), 5);
    for (step, row) in top.iter().enumerate() {
        let row = row.as_array().unwrap();
        assert_eq!(row.len(), 3);
        // Greedy: the chosen id is the best candidate; log-probs are <= 0 and sorted.
        assert_eq!(row[0]["id"], v["ids"][step]);
        let lps: Vec<f64> = row.iter().map(|e| e["logprob"].as_f64().unwrap()).collect();
        assert!(
            lps.windows(2).all(|w| w[0] >= w[1]) && lps[0] <= 0.0,
            "{lps:?}"
        );
    }
}

#[test]
fn info_lists_an_adapter() {
    let (ok, out, err) = hearth(&["info", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let a = &v.as_array().expect("array of adapters")[0];
    assert!(a["max_storage_binding"].as_u64().unwrap() > 0);
    assert!(a["backend"].is_string());
}

#[test]
fn bench_prints_the_json_fields() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.gguf");
    std::fs::write(&p, tiny_model("llama", false).build()).unwrap();
    // Forced f16 prompt matmuls (CPU adapters default to f32), reported as such.
    let (ok, out, err) = hearth_env(
        &[
            "bench",
            "--model",
            p.to_str().unwrap(),
            "--prompt-tokens",
            "20",
            "--gen-tokens",
            "4",
            "--json",
            "--roofline",
        ],
        &[("HEARTH_TILED_F16", "1")],
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    for key in [
        "prefill_tok_s",
        "decode_tok_s",
        "weight_gb_s",
        "copy_gb_s",
        "weight_pct_of_copy",
    ] {
        let x = v[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing: {v}"));
        assert!(x.is_finite() && x > 0.0, "{key} = {x}");
    }
    assert!(v["adapter"].as_str().is_some_and(|a| !a.is_empty()));
    assert_eq!(v["prompt_tokens"], 20);
    assert_eq!(v["gen_tokens"], 4);
    let f = &v["features"];
    assert!(
        f["shader_f16"].is_boolean() && f["subgroups"].is_boolean(),
        "{f}"
    );
    assert_eq!(f["tiled_f16"], f["shader_f16"], "HEARTH_TILED_F16=1: {f}");
}

#[test]
fn bad_speculative_options_are_named() {
    let bytes = tiny_model("llama", false).build();
    expect_run_error(&bytes, &["--draft", "eagle"], "unknown --draft `eagle`");
    expect_run_error(
        &bytes,
        &["--draft", "ngram", "--max-draft", "0"],
        "--max-draft",
    );
    expect_run_error(
        &bytes,
        &["--draft", "model"],
        "--draft model needs --draft-model",
    );
}

/// `--draft-model`: a draft with another tokenizer is refused by name; one
/// with the same tokenizer drafts, and `run --json` reports its counts.
#[test]
fn draft_model_is_checked_and_used() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target.gguf");
    let other = dir.path().join("other-vocab.gguf");
    std::fs::write(&target, tiny_model("llama", false).build()).unwrap();
    std::fs::write(&other, gguf_writer::tiny_model("llama", false).build()).unwrap();
    expect_error_at(
        &target,
        &["--draft-model", other.to_str().unwrap()],
        "tokenizer does not match the target's",
    );
    let (ok, out, err) = hearth(&[
        "run",
        "--model",
        target.to_str().unwrap(),
        "--draft-model",
        target.to_str().unwrap(),
        "--prompt",
        "hello world",
        "--max-tokens",
        "12",
        "--ignore-eos",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let spec = &v["spec"];
    // The draft is the target itself: greedy drafts are all accepted.
    assert!(spec["drafted"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(spec["accepted"], spec["drafted"], "{v}");
}

/// `hearth perplexity --json` prints what the issue names, and bad input is an error.
#[test]
fn perplexity_reports_json_and_names_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.gguf");
    std::fs::write(&model, tiny_model("llama", false).build()).unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(
        &text,
        "hello world, the quick brown fox jumps over the lazy dog ".repeat(3),
    )
    .unwrap();
    let m = model.to_str().unwrap();
    let t = text.to_str().unwrap();
    let json_of = |extra: &[&str]| -> serde_json::Value {
        let mut a = vec![
            "perplexity",
            "--model",
            m,
            "--file",
            t,
            "--window",
            "32",
            "--json",
        ];
        a.extend(extra);
        let (ok, out, err) = hearth(&a);
        assert!(ok, "{err}");
        serde_json::from_str(out.trim()).expect("one JSON object")
    };
    let v = json_of(&[]);
    let ppl = v["perplexity"].as_f64().unwrap();
    let n = v["tokens"].as_u64().unwrap();
    assert!(ppl.is_finite() && ppl >= 1.0, "{v}");
    assert!(n > 100, "{v}");
    // --agreement: the f16-KV reference is the model itself here, so its
    // greedy tokens are its own top-1 choices (teacher-forced rows may only
    // differ on near-ties).
    let v = json_of(&["--agreement", "16"]);
    assert_eq!(v["agreement"]["tokens"], 16, "{v}");
    assert!(v["agreement"]["top1"].as_f64().unwrap() >= 0.9, "{v}");
    for (args, needle) in [
        (
            vec!["--file", "/nonexistent/text.txt"],
            "/nonexistent/text.txt",
        ),
        (vec!["--file", t, "--window", "1"], "window 1"),
        (
            vec!["--file", t, "--agreement", "100000"],
            "--agreement 100000",
        ),
    ] {
        let mut a = vec!["perplexity", "--model", m];
        a.extend(args);
        let (ok, _, err) = hearth(&a);
        assert!(
            !ok && err.contains(needle) && !err.contains("panicked"),
            "{needle}: {err}"
        );
    }
}

#[test]
fn dummy_weights_bench_a_skeleton_file() {
    let whole = tiny_model("llama", false).build();
    let data_at = hearth::model::gguf::GgufFile::from_bytes(whole.clone())
        .unwrap()
        .data_offset();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("skeleton.gguf");
    std::fs::write(&p, &whole[..data_at]).unwrap();
    let path = p.to_str().unwrap();
    let args = [
        "bench",
        "--model",
        path,
        "--prompt-tokens",
        "9",
        "--gen-tokens",
        "3",
        "--json",
    ];
    let (ok, _, err) = hearth(&args);
    assert!(!ok && err.contains("runs past the end"), "{err}");
    let (ok, out, err) = hearth(&[&args[..], &["--dummy-weights"]].concat());
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["gen_tokens"], 3);
    assert!(v["decode_tok_s"].as_f64().is_some_and(|x| x > 0.0), "{v}");
}

/// Options are checked before the model loads: with a model path that does
/// not exist, a bad option is what gets reported.
#[test]
fn options_are_checked_before_the_model_loads() {
    for (extra, needle) in [
        (&["--dtype", "q3"][..], "unknown dtype"),
        (&["--temperature=-1"][..], "temperature"),
        (&["--kv-memory", "lots"][..], "invalid size"),
        (
            &["--kv-dtype", "q5"][..],
            "expected one of f16, f32, q8, q4",
        ),
        (&["--top-p", "2"][..], "top_p"),
    ] {
        let mut args = vec![
            "run",
            "--model",
            "/nonexistent/model.gguf",
            "--prompt",
            "hi",
        ];
        args.extend(extra);
        let (ok, _out, err) = hearth(&args);
        assert!(!ok);
        assert!(err.to_lowercase().contains(needle), "{extra:?}: {err}");
        assert!(
            !err.contains("nonexistent"),
            "{extra:?} was checked after loading: {err}"
        );
    }
}

/// Each fact once: a missing model file's OS error is not repeated, and the
/// top-level help leads with the commands to start with.
#[test]
fn missing_file_said_once_and_help_starts_a_new_user() {
    let (ok, _out, err) = hearth(&[
        "run",
        "--model",
        "/nonexistent/model.gguf",
        "--prompt",
        "hi",
    ]);
    assert!(!ok);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    assert_eq!(err.matches("/nonexistent/model.gguf").count(), 1, "{err}");
    let (ok, out, _) = hearth(&["--help"]);
    assert!(ok);
    let head: String = out.lines().take(6).collect::<Vec<_>>().join("\n");
    assert!(head.contains("hearth run --chat"), "{out}");
    assert!(head.contains("hearth chat"), "{out}");
}
