//! `hearth pull` and hub model names against a stand-in hub on loopback
//! (`hub_stub`): which files a name picks, the Hugging Face cache layout
//! they land in (the oracle: the stub's own bytes and sha256), resuming a
//! cut download, refusing a corrupt one, and the errors for a missing or
//! gated repo.

mod hub_stub;
mod serve_common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use hub_stub::{sha256_hex, Hub, StubRepo, COMMIT};
use serve_common::{hearth_cmd, run_alone, tiny_model_bytes, HANG_GUARD};

/// Distinct bytes per file, long enough to be cut in half (and again).
fn data(tag: &str) -> Vec<u8> {
    (0..20_000u32)
        .flat_map(|i| format!("{tag}:{i};").into_bytes())
        .collect()
}

fn gguf_repo() -> StubRepo {
    StubRepo::new(
        "test/tiny-GGUF",
        &[
            ("README.md", b"# tiny".to_vec()),
            ("tiny-F16.gguf", data("f16")),
            ("tiny-Q4_K_M.gguf", data("q4km")),
            ("tiny-Q8_0.gguf", data("q8")),
            ("mmproj-tiny-F16.gguf", data("mmproj")),
        ],
    )
}

struct Env {
    hub: Hub,
    home: tempfile::TempDir,
}

impl Env {
    fn new(repos: Vec<StubRepo>) -> Env {
        Env {
            hub: Hub::start(repos),
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// `hearth` pointed at the stub hub with an empty, private cache.
    fn cmd(&self) -> Command {
        let mut c = hearth_cmd();
        c.env("HF_ENDPOINT", &self.hub.base)
            .env("HF_HOME", self.home.path());
        for v in [
            "HF_TOKEN",
            "HF_TOKEN_PATH",
            "HF_HUB_CACHE",
            "HUGGINGFACE_HUB_CACHE",
            "HF_HUB_OFFLINE",
        ] {
            c.env_remove(v);
        }
        c
    }

    fn pull(&self, name: &str) -> Output {
        self.cmd()
            .args(["pull", name])
            .output()
            .expect("runs hearth")
    }

    fn repo_dir(&self, repo: &str) -> PathBuf {
        self.home
            .path()
            .join("hub")
            .join(format!("models--{}", repo.replace('/', "--")))
    }

    fn snapshot(&self, repo: &str) -> PathBuf {
        self.repo_dir(repo).join("snapshots").join(COMMIT)
    }
}

/// The path `hearth pull` printed (stdout holds nothing else).
fn pulled(out: &Output) -> PathBuf {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "hearth pull failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout must be the path alone: {stdout:?}");
    PathBuf::from(lines[0])
}

fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    assert!(
        out.stdout.is_empty(),
        "stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_bytes(path: &Path, want: &[u8]) {
    let got = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(got == want, "{} has the wrong bytes", path.display());
}

#[test]
fn a_repo_name_takes_q4_k_m_into_the_hf_cache_layout() {
    let env = Env::new(vec![gguf_repo()]);
    let out = env.pull("test/tiny-GGUF");
    let path = pulled(&out);
    assert_eq!(
        path,
        env.snapshot("test/tiny-GGUF").join("tiny-Q4_K_M.gguf")
    );
    assert_bytes(&path, &data("q4km"));
    // The layout the Python tools share: a blob named by its sha256, a
    // snapshot link to it, and refs/main naming the commit.
    let blob = env
        .repo_dir("test/tiny-GGUF")
        .join("blobs")
        .join(sha256_hex(&data("q4km")));
    assert_eq!(
        std::fs::canonicalize(&path).unwrap(),
        std::fs::canonicalize(blob).unwrap()
    );
    let main = std::fs::read_to_string(env.repo_dir("test/tiny-GGUF").join("refs/main")).unwrap();
    assert_eq!(main.trim(), COMMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Q4_K_M") && stderr.contains("Q8_0"),
        "{stderr}"
    );
    // Only the chosen file was downloaded.
    assert!(env
        .hub
        .file_requests("test/tiny-GGUF", "tiny-Q8_0.gguf")
        .is_empty());
    assert!(env
        .hub
        .file_requests("test/tiny-GGUF", "tiny-F16.gguf")
        .is_empty());
}

#[test]
fn a_quant_suffix_picks_that_file_and_an_unknown_one_lists_the_choices() {
    let env = Env::new(vec![gguf_repo()]);
    let path = pulled(&env.pull("test/tiny-GGUF:q8_0"));
    assert_bytes(&path, &data("q8"));
    let err = failed(&env.pull("test/tiny-GGUF:Q5_K_M"));
    for want in ["no Q5_K_M", "F16", "Q4_K_M", "Q8_0"] {
        assert!(err.contains(want), "{want} missing from: {err}");
    }
    assert!(!err.contains("mmproj"), "{err}");
}

#[test]
fn a_file_name_takes_that_file_without_listing_the_repo() {
    let env = Env::new(vec![gguf_repo()]);
    let path = pulled(&env.pull("test/tiny-GGUF/tiny-F16.gguf"));
    assert_eq!(path, env.snapshot("test/tiny-GGUF").join("tiny-F16.gguf"));
    assert_bytes(&path, &data("f16"));
    assert!(env.hub.log().iter().all(|l| !l.path.starts_with("/api/")));
}

#[test]
fn a_split_gguf_downloads_every_shard_and_names_the_first() {
    let shards: Vec<(String, Vec<u8>)> = (1..=3)
        .map(|i| {
            (
                format!("Q4_K_M/big-Q4_K_M-0000{i}-of-00003.gguf"),
                data(&format!("shard{i}")),
            )
        })
        .collect();
    let mut files: Vec<(&str, Vec<u8>)> = shards
        .iter()
        .map(|(n, b)| (n.as_str(), b.clone()))
        .collect();
    files.push(("big-Q8_0.gguf", data("big8")));
    let env = Env::new(vec![StubRepo::new("test/big-GGUF", &files)]);
    let path = pulled(&env.pull("test/big-GGUF"));
    let snap = env.snapshot("test/big-GGUF");
    assert_eq!(path, snap.join(&shards[0].0));
    for (name, bytes) in &shards {
        assert_bytes(&snap.join(name), bytes);
    }
    // Naming a later shard also fetches the set and hands on the first.
    let env = Env::new(vec![StubRepo::new("test/big-GGUF", &files)]);
    let path = pulled(&env.pull("test/big-GGUF/Q4_K_M/big-Q4_K_M-00002-of-00003.gguf"));
    assert_eq!(path, env.snapshot("test/big-GGUF").join(&shards[0].0));
    assert_bytes(
        &env.snapshot("test/big-GGUF").join(&shards[2].0),
        &shards[2].1,
    );
}

#[test]
fn a_repo_without_gguf_gives_its_safetensors_folder() {
    let files = [
        ("README.md", b"# st".to_vec()),
        (
            "config.json",
            br#"{"architectures":["LlamaForCausalLM"]}"#.to_vec(),
        ),
        ("tokenizer.json", br#"{"model":{}}"#.to_vec()),
        ("model.safetensors", data("weights")),
        ("onnx/model.onnx", data("onnx")),
    ];
    let env = Env::new(vec![StubRepo::new("test/tiny-st", &files)]);
    let dir = pulled(&env.pull("test/tiny-st"));
    assert_eq!(dir, env.snapshot("test/tiny-st"));
    for (name, bytes) in &files[1..4] {
        assert_bytes(&dir.join(name), bytes);
    }
    assert!(!dir.join("README.md").exists() && !dir.join("onnx").exists());
}

#[test]
fn a_cut_download_resumes_where_it_stopped() {
    let env = Env::new(vec![gguf_repo()]);
    let file = "tiny-Q8_0.gguf";
    // One cut: the same run resumes it.
    env.hub.cut_next(1);
    assert_bytes(&pulled(&env.pull("test/tiny-GGUF:Q8_0")), &data("q8"));
    let resumed = |env: &Env| {
        env.hub
            .file_requests("test/tiny-GGUF", file)
            .iter()
            .any(|l| {
                l.range
                    .as_deref()
                    .is_some_and(|r| r != "bytes=0-0" && r != "bytes=0-")
            })
    };
    assert!(resumed(&env), "no ranged request: {:?}", env.hub.log());

    // More cuts than one run retries: it fails, keeps the partial file, and
    // the next run completes it.
    let env = Env::new(vec![gguf_repo()]);
    env.hub.cut_next(3);
    let err = failed(&env.pull("test/tiny-GGUF:Q8_0"));
    assert!(err.contains("again"), "{err}");
    let part = env
        .repo_dir("test/tiny-GGUF")
        .join("blobs")
        .join(format!("{}.part", sha256_hex(&data("q8"))));
    let partial = std::fs::metadata(&part)
        .expect("the partial download stays")
        .len() as usize;
    assert!(partial > 0 && partial < data("q8").len(), "{partial}");
    let path = pulled(&env.pull("test/tiny-GGUF:Q8_0"));
    assert_bytes(&path, &data("q8"));
    let last = env.hub.file_requests("test/tiny-GGUF", file).pop().unwrap();
    assert_eq!(
        last.range.as_deref(),
        Some(format!("bytes={partial}-").as_str())
    );
}

#[test]
fn a_download_that_fails_its_checksum_is_refused_and_deleted() {
    let env = Env::new(vec![gguf_repo()]);
    env.hub.corrupt(true);
    let err = failed(&env.pull("test/tiny-GGUF"));
    assert!(
        err.contains("checksum mismatch") && err.contains("tiny-Q4_K_M.gguf"),
        "{err}"
    );
    let blob = env
        .repo_dir("test/tiny-GGUF")
        .join("blobs")
        .join(sha256_hex(&data("q4km")));
    assert!(!blob.exists(), "the corrupt blob stays");
    assert!(!env
        .snapshot("test/tiny-GGUF")
        .join("tiny-Q4_K_M.gguf")
        .exists());
    env.hub.corrupt(false);
    assert_bytes(&pulled(&env.pull("test/tiny-GGUF")), &data("q4km"));
}

#[test]
fn missing_repos_and_files_are_named() {
    let env = Env::new(vec![gguf_repo()]);
    let err = failed(&env.pull("test/no-such-repo"));
    assert!(
        err.contains("test/no-such-repo was not found") && err.contains("404"),
        "{err}"
    );
    let err = failed(&env.pull("test/tiny-GGUF/tiny-Q2_K.gguf"));
    assert!(err.contains("has no file tiny-Q2_K.gguf"), "{err}");
    // `--model` takes the same names, with the same error.
    let out = env
        .cmd()
        .args(["run", "--model", "test/no-such-repo", "--prompt", "a"])
        .output()
        .unwrap();
    assert!(failed(&out).contains("test/no-such-repo was not found"));
}

#[test]
fn a_gated_repo_says_to_set_hf_token_and_works_with_it() {
    let repo = StubRepo::new("test/gated", &[("m-Q4_0.gguf", data("gated"))]).gated("sesame");
    let env = Env::new(vec![repo]);
    let err = failed(&env.pull("test/gated"));
    assert!(
        err.contains("401") && err.contains("HF_TOKEN") && err.contains("gated"),
        "{err}"
    );
    let out = env
        .cmd()
        .env("HF_TOKEN", "sesame")
        .args(["pull", "test/gated"])
        .output()
        .unwrap();
    assert_bytes(&pulled(&out), &data("gated"));
}

#[cfg(unix)]
#[test]
fn a_file_another_tool_cached_is_used_without_a_download() {
    let env = Env::new(vec![gguf_repo()]);
    // The cache as huggingface_hub writes it.
    let dir = env.repo_dir("test/tiny-GGUF");
    let sha = sha256_hex(&data("q4km"));
    std::fs::create_dir_all(dir.join("blobs")).unwrap();
    std::fs::create_dir_all(dir.join("refs")).unwrap();
    std::fs::create_dir_all(env.snapshot("test/tiny-GGUF")).unwrap();
    std::fs::write(dir.join("blobs").join(&sha), data("q4km")).unwrap();
    std::fs::write(dir.join("refs/main"), COMMIT).unwrap();
    let link = env.snapshot("test/tiny-GGUF").join("tiny-Q4_K_M.gguf");
    std::os::unix::fs::symlink(format!("../../blobs/{sha}"), &link).unwrap();
    assert_eq!(pulled(&env.pull("test/tiny-GGUF")), link);
    assert!(env.hub.downloads().is_empty(), "{:?}", env.hub.downloads());
    // And what hearth fetched, a second run finds.
    pulled(&env.pull("test/tiny-GGUF:Q8_0"));
    let n = env.hub.downloads().len();
    pulled(&env.pull("test/tiny-GGUF:Q8_0"));
    assert_eq!(env.hub.downloads().len(), n);
}

#[test]
fn run_generates_from_a_model_named_on_the_hub() {
    let env = Env::new(vec![StubRepo::new(
        "test/run-GGUF",
        &[("tiny-Q8_0.gguf", tiny_model_bytes())],
    )]);
    let out = env
        .cmd()
        .args(["run", "--model", "test/run-GGUF", "--prompt", "abc"])
        .args(["--max-tokens", "6", "--temperature", "0", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    // The oracle: the same bytes run from a local file.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("tiny.gguf");
    std::fs::write(&local, tiny_model_bytes()).unwrap();
    let want = run_alone(&local, "abc", 6, &[]);
    assert_eq!(got["ids"], want["ids"]);
    assert_eq!(got["text"], want["text"]);
    assert!(!got["ids"].as_array().unwrap().is_empty());
    // A hub name as the draft model too: greedy drafts change no token.
    let out = env
        .cmd()
        .args(["run", "--model", "test/run-GGUF", "--prompt", "abc"])
        .args(["--draft-model", "test/run-GGUF:Q8_0"])
        .args(["--max-tokens", "6", "--temperature", "0", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drafted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(drafted["ids"], want["ids"]);
}

#[test]
fn without_the_hub_a_cached_model_is_still_found() {
    let env = Env::new(vec![gguf_repo()]);
    let first = pulled(&env.pull("test/tiny-GGUF:Q8_0"));
    // Nothing listens on port 1; HF_HUB_OFFLINE asks for no request at all.
    for (var, value) in [
        ("HF_ENDPOINT", "http://127.0.0.1:1"),
        ("HF_HUB_OFFLINE", "1"),
    ] {
        let out = env
            .cmd()
            .env(var, value)
            .args(["pull", "test/tiny-GGUF:Q8_0"])
            .output()
            .unwrap();
        assert_eq!(pulled(&out), first, "{var}");
    }
    let out = env
        .cmd()
        .env("HF_HUB_OFFLINE", "1")
        .args(["pull", "test/tiny-GGUF:Q4_K_M"])
        .output()
        .unwrap();
    assert!(failed(&out).contains("HF_HUB_OFFLINE"));
}

#[test]
fn serve_takes_a_hub_name_and_serves_the_model_under_it() {
    let env = Env::new(vec![StubRepo::new(
        "test/run-GGUF",
        &[("tiny-Q8_0.gguf", tiny_model_bytes())],
    )]);
    let mut child = env
        .cmd()
        .args(["serve", "--model", "test/run-GGUF:Q8_0"])
        .args(["--host", "127.0.0.1", "--port", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("at http://") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx.recv_timeout(HANG_GUARD);
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("hearth serve logs its address");
    assert!(line.contains("model `test/run-GGUF:Q8_0`"), "{line}");
}
