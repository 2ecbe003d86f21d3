//! `hearth run --json-schema FILE | --grammar FILE | --regex RE`: bad input
//! exits non-zero with a message naming the problem; good input constrains
//! the output (checked against the schema, grammar or pattern itself).

mod serve_common;

use std::path::{Path, PathBuf};

use serve_common::{default_model, gguf_writer, hearth_cmd};

fn hearth(args: &[&str]) -> (bool, String, String) {
    let out = hearth_cmd().args(args).output().expect("run hearth");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The writer's tiny random model with single-character tokens (space,
/// a-z, 0-9, `.`, `,`, `!`; EOS is "b", so patterns here avoid it),
/// written into `dir`.
fn tiny_model(dir: &Path) -> PathBuf {
    let p = dir.join("model.gguf");
    std::fs::write(&p, gguf_writer::tiny_char_model("llama", false).build()).unwrap();
    p
}

/// `hearth run` on the tiny model with `extra`; a clean failure whose
/// error line mentions every one of `needles`.
fn expect_error(extra: &[&str], needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let mut args = vec!["run", "--model", model.to_str().unwrap()];
    args.extend(["--prompt", "hello", "--max-tokens", "4"]);
    args.extend(extra);
    let (ok, _out, err) = hearth(&args);
    assert!(!ok, "expected failure for {extra:?}; stderr: {err}");
    assert!(
        !err.contains("panicked"),
        "panic instead of an error: {err}"
    );
    for n in needles {
        assert!(err.contains(n), "error should mention {n:?}: {err}");
    }
}

fn file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn constraint_flags_exclude_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let s = file(dir.path(), "s.json", "{}");
    let g = file(dir.path(), "g.gbnf", "root ::= \"a\"");
    for flags in [
        ["--json-schema", &s, "--regex", "a"],
        ["--json-schema", &s, "--grammar", &g],
        ["--grammar", &g, "--regex", "a"],
    ] {
        expect_error(&flags, &["cannot be used with"]);
    }
}

#[test]
fn unreadable_or_malformed_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let missing = missing.to_str().unwrap();
    expect_error(
        &["--json-schema", missing],
        &["--json-schema", "cannot read", "nope.json"],
    );
    expect_error(&["--grammar", missing], &["--grammar", "cannot read"]);
    let bad = file(dir.path(), "bad.json", "{\"type\": ");
    expect_error(&["--json-schema", &bad], &["bad.json is not valid JSON"]);
    let g = file(dir.path(), "g.gbnf", "root ::= \"a\" item\n");
    expect_error(
        &["--grammar", &g],
        &[
            "g.gbnf",
            "line 1, column 14",
            "`item` is used but not defined",
        ],
    );
    let g = file(dir.path(), "g2.gbnf", "root ::= [abc\n");
    expect_error(&["--grammar", &g], &["line 1, column 10", "not closed"]);
}

#[test]
fn schemas_regexes_and_grammars_that_do_not_compile_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    // llguidance implements no `patternProperties`-like `dependentSchemas`.
    let s = file(
        dir.path(),
        "s.json",
        r#"{"type": "object", "dependentSchemas": {"a": {"required": ["b"]}}}"#,
    );
    expect_error(&["--json-schema", &s], &["JSON schema", "dependentSchemas"]);
    let s = file(dir.path(), "t.json", r#"{"type": "strnig"}"#);
    expect_error(&["--json-schema", &s], &["JSON schema", "strnig"]);
    expect_error(&["--regex", "(ab"], &["regex"]);
    let l = file(dir.path(), "g.lark", "start: nothing_here\n");
    expect_error(&["--grammar", &l], &["Lark grammar", "nothing_here"]);
}

#[test]
fn a_regex_constrains_the_tiny_models_output() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let (ok, out, err) = hearth(&[
        "run",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "hello",
        "--max-tokens",
        "20",
        "--regex",
        "[0-9]{3}(,[c-e]{2})?\\.",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let text = v["text"].as_str().unwrap();
    let b = text.as_bytes();
    let digits = b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit);
    let tail = &text[3.min(text.len())..];
    let rest_ok = tail == "."
        || (tail.len() == 4
            && tail.starts_with(',')
            && tail[1..3].bytes().all(|c| (b'c'..=b'e').contains(&c))
            && tail.ends_with('.'));
    assert!(digits && rest_ok, "{text:?} does not match the regex");
    assert_eq!(v["finish_reason"], "stop", "{v}");
}

#[test]
fn a_json_schema_and_a_grammar_constrain_smollm2() {
    let dir = tempfile::tempdir().unwrap();
    let schema = file(
        dir.path(),
        "city.json",
        r#"{"type": "object", "properties": {
             "city": {"type": "string", "maxLength": 20},
             "country": {"type": "string", "enum": ["France", "Italy", "Spain"]}},
           "required": ["city", "country"], "additionalProperties": false}"#,
    );
    let model = default_model();
    let run = |flags: &[&str]| {
        let mut args = vec!["run", "--model", model.to_str().unwrap()];
        args.extend([
            "--chat",
            "Name a city in France, as JSON.",
            "--max-tokens",
            "60",
        ]);
        args.extend(flags);
        args.push("--json");
        let (ok, out, err) = hearth(&args);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        assert_eq!(v["finish_reason"], "stop", "{v}");
        v["text"].as_str().unwrap().to_string()
    };
    let text = run(&["--json-schema", &schema]);
    let v: serde_json::Value = serde_json::from_str(&text).expect("the output is JSON");
    let o = v.as_object().expect("an object");
    assert_eq!(o.len(), 2, "{text}");
    assert!(
        o["city"].as_str().is_some_and(|c| c.chars().count() <= 20),
        "{text}"
    );
    assert!(
        ["France", "Italy", "Spain"].contains(&o["country"].as_str().unwrap()),
        "{text}"
    );

    let g = file(
        dir.path(),
        "yes.gbnf",
        "root ::= (\"yes\" | \"no\") \", because \" [a-z ]{1,30} \".\"\n",
    );
    let text = run(&["--grammar", &g]);
    let (head, tail) = text.split_once(", because ").expect(&text);
    assert!(head == "yes" || head == "no", "{text}");
    let body = tail.strip_suffix('.').expect(&text);
    assert!(
        (1..=30).contains(&body.len()) && body.bytes().all(|c| c == b' ' || c.is_ascii_lowercase()),
        "{text}"
    );
}
