//! `hearth chat` on SmolLM2, driven through piped stdin. Oracles: `hearth
//! run --json` on the same conversation (`--chat`, or `--messages` for
//! several turns) gives the same answer from the same number of prompt
//! tokens; and the prefix cache serves a turn exactly the whole KV blocks
//! of the previous turn's prompt (blocks holding generated rows are not
//! shared, see runtime/kv/prefix_cache.rs), so it prefills the rest.

mod serve_common;

use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::mpsc;

use hearth::kv::DEFAULT_BLOCK_SIZE;
use serde_json::{json, Value};
use serve_common::{default_model, hearth_cmd, HANG_GUARD};

const MAX_TOKENS: &str = "12";

/// One turn's stats line: `hearth: prompt P tokens (C cached, F prefilled
/// in S s); N tokens, R tok/s (HOW)`.
#[derive(Debug)]
struct Turn {
    prompt: usize,
    cached: usize,
    prefilled: usize,
    tokens: usize,
    how: String,
}

fn turns(stderr: &str) -> Vec<Turn> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("hearth: prompt "))
        .map(|l| {
            let nums: Vec<usize> = l
                .split(|c: char| !c.is_ascii_digit() && c != '.')
                .filter_map(|w| w.parse().ok())
                .collect();
            let how = l.rsplit_once('(').unwrap().1.trim_end_matches(')');
            Turn {
                prompt: nums[0],
                cached: nums[1],
                prefilled: nums[2],
                tokens: l
                    .split("; ")
                    .nth(1)
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap(),
                how: how.to_string(),
            }
        })
        .collect()
}

/// `hearth chat` with `script` on stdin: (stdout, stderr, turns).
fn chat(script: &str, extra: &[&str]) -> (String, String, Vec<Turn>) {
    let mut child = hearth_cmd()
        .args(["chat", "--model", default_model().to_str().unwrap()])
        .args(["--max-tokens", MAX_TOKENS])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hearth chat");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "hearth chat failed: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let t = turns(&stderr);
    (String::from_utf8(out.stdout).unwrap(), stderr, t)
}

/// `hearth run --json` on the default model: (text, prompt tokens).
fn run(args: &[&str]) -> (String, usize) {
    let out = hearth_cmd()
        .args(["run", "--model", default_model().to_str().unwrap()])
        .args(["--max-tokens", MAX_TOKENS, "--json"])
        .args(args)
        .output()
        .expect("run hearth");
    assert!(
        out.status.success(),
        "hearth run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let prompt = v["prompt_ids"].as_array().unwrap().len();
    (v["text"].as_str().unwrap().to_string(), prompt)
}

/// A system message long enough that the cached share of a turn is clear.
const SYSTEM: &str = "You are a patient geography tutor. You answer questions about \
countries, capitals, rivers and mountains in one short sentence, and you never \
make up facts. When you are unsure, you say so plainly and suggest where the \
student could look the answer up.";

#[test]
fn turn_two_reuses_turn_one_and_answers_as_run_does() {
    let (q1, q2) = ("What is the capital of France?", "And of Italy?");
    let (a1, p1) = run(&["--chat", q1, "--system", SYSTEM]);
    let dir = tempfile::tempdir().unwrap();
    let convo = dir.path().join("convo.json");
    let messages = json!([
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": q1},
        {"role": "assistant", "content": a1},
        {"role": "user", "content": q2},
    ]);
    std::fs::write(&convo, messages.to_string()).unwrap();
    let (a2, p2) = run(&["--messages", convo.to_str().unwrap()]);

    let script = format!("{q1}\n{q2}\n/reset\n{q1}\n");
    let (stdout, stderr, t) = chat(&script, &["--system", SYSTEM]);
    assert_eq!(stdout, format!("{a1}\n{a2}\n{a1}\n"), "{stderr}");
    assert_eq!(t.len(), 3, "{stderr}");
    let bs = DEFAULT_BLOCK_SIZE as usize;

    assert_eq!((t[0].prompt, t[0].cached, t[0].prefilled), (p1, 0, p1));
    // Turn 2 recomputes only past turn 1's prompt blocks.
    assert_eq!(t[1].prompt, p2);
    assert_eq!(t[1].cached, p1 - p1 % bs, "{stderr}");
    assert_eq!(t[1].prefilled, p2 - t[1].cached);
    assert!(
        t[1].prefilled * 2 < p2,
        "most of turn 2 came from the cache: {t:?}"
    );
    // /reset forgets the conversation: the same question is turn 1 again,
    // all of it cached but the last block (its last row gives the logits).
    assert_eq!(t[2].prompt, p1);
    assert_eq!(t[2].cached, (p1 - 1) / bs * bs, "{stderr}");
    assert!(stderr.contains("new conversation"), "{stderr}");
}

#[test]
fn system_and_sampling_settings_apply_and_bad_ones_do_not_end_the_session() {
    let pirate = "You are a pirate. Answer like one.";
    let q = "Hello, who are you?";
    let (answer, prompt) = run(&[
        "--chat",
        q,
        "--system",
        pirate,
        "--temperature",
        "0.7",
        "--seed",
        "7",
    ]);
    let script = format!(
        "/set temperature -1\n/set temperature warm\n/set top_k many\n/frobnicate\n\
         /system {pirate}\n/set seed 7\n/set temperature 0.7\n{q}\n/exit\nNever answered.\n"
    );
    let (stdout, stderr, t) = chat(&script, &[]);
    for needle in [
        "temperature: must be >= 0, got -1",
        "temperature: `warm` is not a number",
        "top_k: `many` is not a whole number",
        "unknown command /frobnicate",
    ] {
        assert!(stderr.contains(needle), "no `{needle}` in: {stderr}");
    }
    assert_eq!(stdout, format!("{answer}\n"), "{stderr}");
    assert_eq!(t.len(), 1, "/exit ends the session: {stderr}");
    assert_eq!(t[0].prompt, prompt, "the pirate's system message");
}

#[test]
fn ctrl_c_stops_the_answer_and_the_next_line_is_answered() {
    let mut child = hearth_cmd()
        .args(["chat", "--model", default_model().to_str().unwrap()])
        .args(["--max-tokens", "400"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hearth chat");
    let script =
        "Tell me a long story about a dragon and a knight.\n/set max_tokens 6\nWhat is 2+2?\n";
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            let _ = tx.send(());
        }
        all
    });
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    rx.recv_timeout(HANG_GUARD)
        .expect("the story never started");
    let ok = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -INT failed");
    let status = child.wait().unwrap();
    let stderr = err_reader.join().unwrap();
    reader.join().unwrap();
    assert!(status.success(), "Ctrl-C ended the session: {stderr}");
    let t = turns(&stderr);
    assert_eq!(t.len(), 2, "{stderr}");
    assert_eq!(t[0].how, "stopped by Ctrl-C", "{stderr}");
    assert!(t[0].tokens < 400);
    assert_eq!((t[1].how.as_str(), t[1].tokens), ("length", 6), "{stderr}");
    // The stopped answer stays in the conversation.
    assert!(t[1].prompt > t[0].prompt + t[0].tokens / 2, "{t:?}");
}

/// Checked before the model loads: each fails with a line naming the problem.
#[test]
fn bad_flags_and_message_files_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let model = default_model();
    let model = model.to_str().unwrap();
    let fails = |args: &[&str], needle: &str| {
        let out = hearth_cmd().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains(needle),
            "{args:?}: no `{needle}` in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    };
    fails(
        &["chat", "--model", model, "--temperature", "-1"],
        "--temperature: must be >= 0",
    );
    fails(
        &["chat", "--model", model, "--top-p", "2"],
        "--top-p: must be in (0, 1]",
    );
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let missing = dir.path().join("missing.json");
    fails(
        &[
            "run",
            "--model",
            model,
            "--messages",
            missing.to_str().unwrap(),
        ],
        "--messages: cannot read",
    );
    fails(
        &[
            "run",
            "--model",
            model,
            "--messages",
            &file("obj.json", "{\"role\": \"user\"}"),
        ],
        "is not a JSON array of {\"role\", \"content\"} messages",
    );
    fails(
        &[
            "run",
            "--model",
            model,
            "--messages",
            &file("empty.json", "[]"),
        ],
        "holds no messages",
    );
}
