//! Shared by the `serve_*` and CLI tests: a tiny model written to a temp file, the
//! real `hearth serve` binary started on a free port (read back from its
//! log), an SSE reader and `hearth run --json` as the single-request oracle.
#![allow(dead_code)]

#[path = "../../../tests/fixtures/gguf_writer.rs"]
pub mod gguf_writer;
pub mod tools_model;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gguf_writer::Val;
use serde_json::{json, Value};

pub const MODEL: &str = "tiny";
/// The tiny model's context length.
pub const CONTEXT: usize = 256;
/// Upper bound for waits that only guard against hangs (never timing checks).
pub const HANG_GUARD: Duration = Duration::from_secs(300);

/// The writer's tiny model with single-character tokens (any lowercase text
/// encodes) and a chat template that joins the messages' contents. EOS is
/// "b" (id 2).
pub fn tiny_model_bytes() -> Vec<u8> {
    tiny_model_with_template("{% for m in messages %}{{ m.content }} {% endfor %}")
}

/// The tiny model with `template` as its chat template.
pub fn tiny_model_with_template(template: &str) -> Vec<u8> {
    let mut w = gguf_writer::tiny_char_model("llama", false);
    w.kv("tokenizer.chat_template", Val::str(template));
    w.build()
}

fn xdg_runtime_dir() -> PathBuf {
    let xdg = std::env::temp_dir().join("hearth-serve-test-xdg");
    std::fs::create_dir_all(&xdg).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    xdg
}

pub fn hearth_cmd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
    // A key in the environment would lock the tests out.
    cmd.env_remove("HEARTH_API_KEY");
    cmd.env("XDG_RUNTIME_DIR", xdg_runtime_dir()).env(
        "WGPU_BACKEND",
        std::env::var("WGPU_BACKEND").unwrap_or_else(|_| "vulkan".into()),
    );
    cmd
}

pub struct Server {
    child: Child,
    pub base: String,
    pub model_path: PathBuf,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// `hearth serve` on the tiny model, on a free loopback port.
    pub fn start(extra: &[&str]) -> Server {
        Server::start_with_model(tiny_model_bytes(), extra)
    }

    /// `hearth serve` on the model `gguf`.
    pub fn start_with_model(gguf: Vec<u8>, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let model_path = dir.path().join("tiny.gguf");
        std::fs::write(&model_path, gguf).unwrap();
        Server::start_model(model_path, MODEL, extra, dir)
    }

    /// `hearth serve` on the model file at `model_path`, served as `name`
    /// (`dir` lives as long as the server).
    pub fn start_model(
        model_path: PathBuf,
        name: &str,
        extra: &[&str],
        dir: tempfile::TempDir,
    ) -> Server {
        let mut child = hearth_cmd()
            .args(["serve", "--model", model_path.to_str().unwrap()])
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(["--served-model-name", name])
            .args(extra)
            .env("HEARTH_LOG", "warn,hearth=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hearth serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("at http://").nth(1) {
                    let addr = rest.split('/').next().unwrap_or_default().to_string();
                    let _ = tx.send(addr);
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(HANG_GUARD) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "hearth serve did not log its address; log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        Server {
            child,
            base: format!("http://{addr}"),
            model_path,
            log,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit (bounded by the hang guard).
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if t0.elapsed() > HANG_GUARD {
                let _ = self.child.kill();
                panic!("hearth serve did not exit; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `hearth run --json` on the same model: what one request alone generates.
pub fn run_alone(model: &Path, prompt: &str, max_tokens: usize, extra: &[&str]) -> Value {
    let out = hearth_cmd()
        .args([
            "run",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            prompt,
        ])
        .args([
            "--max-tokens",
            &max_tokens.to_string(),
            "--temperature",
            "0",
            "--json",
        ])
        .args(extra)
        .output()
        .expect("run hearth");
    assert!(
        out.status.success(),
        "hearth run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// The Python that can import `modules` (e.g. `"openai, jsonschema"`):
/// `$HEARTH_PYTHON` (scripts/test.sh sets it to its venv) or `python3`;
/// `None` when neither can and `$HEARTH_PYTHON` is unset (the caller skips).
/// A set `$HEARTH_PYTHON` that cannot import them fails the test.
pub fn python_with(modules: &str) -> Option<String> {
    let py = std::env::var("HEARTH_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    assert!(
        std::env::var_os("HEARTH_PYTHON").is_none(),
        "HEARTH_PYTHON={py} cannot import {modules}"
    );
    None
}

/// The default model (SmolLM2-135M-Instruct Q4_1) in `$HEARTH_MODELS` or
/// the repository's models/: fails (does not skip) when it is missing.
pub fn default_model() -> PathBuf {
    let dir = std::env::var_os("HEARTH_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models"));
    let p = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.exists(),
        "{} is missing: run `bash scripts/hearth.sh fetch` (scripts/test.sh does)",
        p.display()
    );
    p
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

pub async fn post(c: &reqwest::Client, url: &str, body: &Value) -> reqwest::Response {
    c.post(url).json(body).send().await.expect("send request")
}

/// The `data:` payloads of an SSE response, read incrementally.
pub struct SseReader {
    stream: futures_util::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl SseReader {
    pub fn new(resp: reqwest::Response) -> SseReader {
        assert_eq!(resp.status(), 200, "stream request failed");
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        assert!(ct.starts_with("text/event-stream"), "content-type {ct}");
        SseReader {
            stream: resp.bytes_stream().map(|r| r.map(|b| b.to_vec())).boxed(),
            buf: Vec::new(),
        }
    }

    /// The next `data:` payload; `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buf.drain(..i + 2).collect();
                let event = String::from_utf8(raw).expect("UTF-8 event");
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some(data.join("\n"));
            }
            match self.stream.next().await {
                Some(Ok(b)) => self.buf.extend_from_slice(&b),
                Some(Err(e)) => panic!("stream broke: {e}"),
                None => {
                    assert!(
                        self.buf.iter().all(u8::is_ascii_whitespace),
                        "trailing bytes: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    );
                    return None;
                }
            }
        }
    }

    /// Every remaining payload.
    pub async fn rest(&mut self) -> Vec<String> {
        let mut v = Vec::new();
        while let Some(d) = self.next().await {
            v.push(d);
        }
        v
    }
}

/// What a completed stream said, per choice, checked for OpenAI's framing:
/// JSON chunks of `object`, then `[DONE]` last.
#[derive(Debug, Default)]
pub struct Streamed {
    pub text: Vec<String>,
    pub finish: Vec<Option<String>>,
    pub usage: Option<Value>,
    pub chunks: Vec<Value>,
}

pub fn assemble(payloads: &[String], object: &str, choices: usize) -> Streamed {
    assert_eq!(
        payloads.last().map(String::as_str),
        Some("[DONE]"),
        "stream must end with [DONE]: {payloads:?}"
    );
    let mut s = Streamed {
        text: vec![String::new(); choices],
        finish: vec![None; choices],
        ..Default::default()
    };
    for p in &payloads[..payloads.len() - 1] {
        let v: Value = serde_json::from_str(p).unwrap_or_else(|e| panic!("{e}: {p}"));
        assert_eq!(v["object"], object, "{v}");
        let cs = v["choices"].as_array().unwrap();
        if cs.is_empty() {
            assert!(s.usage.is_none(), "two usage chunks");
            s.usage = Some(v["usage"].clone());
        }
        for c in cs {
            let i = c["index"].as_u64().unwrap() as usize;
            assert!(s.finish[i].is_none(), "chunk after finish_reason: {v}");
            let t = if object == "chat.completion.chunk" {
                c["delta"]["content"].as_str()
            } else {
                c["text"].as_str()
            };
            s.text[i].push_str(t.unwrap_or(""));
            if let Some(f) = c["finish_reason"].as_str() {
                s.finish[i] = Some(f.to_string());
            }
        }
        s.chunks.push(v);
    }
    s
}

pub fn completion_body(prompt: &str, max_tokens: usize, extra: Value) -> Value {
    let mut b = json!({
        "model": MODEL,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
    });
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

/// A `/metrics` value (first sample of that name without labels).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(name)?;
            rest.strip_prefix(' ')?.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

/// Polls `/metrics` until no sequence runs or waits and no KV block is in
/// use; returns that exposition.
pub async fn wait_idle(c: &reqwest::Client, server: &Server) -> String {
    let t0 = Instant::now();
    loop {
        let text = c
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let busy = metric(&text, "hearth_running_sequences")
            + metric(&text, "hearth_waiting_sequences")
            + metric(&text, "hearth_kv_blocks_used");
        if busy == 0.0 {
            return text;
        }
        assert!(
            t0.elapsed() < HANG_GUARD,
            "engine never went idle:\n{text}\nlog:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks OpenAI's error shape and returns the `error` object.
pub async fn expect_error(resp: reqwest::Response, status: u16) -> Value {
    let got = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "body: {text}");
    let v: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("error body not JSON ({e}): {text}"));
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].is_string(), "{v}");
    assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
    e.clone()
}

/// A fixture of `tests/fixtures/embed/` (tiny random-initialised embedding
/// models and their sentence-transformers vectors).
pub fn embed_fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/embed")
        .join(case)
}

/// Embedding vectors equal within 1e-3 of the expected vector's largest component.
pub fn assert_embedding_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-3 * scale,
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

/// Runs the client script `native-cli/tests/SCRIPT` with `py` as `SCRIPT
/// URL/v1 ARGS...` against `server`. The test fails, showing the script's
/// output and the server's log, unless the script exits 0; returns its stdout.
pub fn run_client_script(py: &str, script: &str, server: &Server, args: &[&str]) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let out = Command::new(py)
        .arg(path)
        .arg(server.url("/v1"))
        .args(args)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    stdout
}
