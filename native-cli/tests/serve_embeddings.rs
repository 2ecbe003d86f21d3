//! `POST /v1/embeddings` over HTTP on a sentence-transformers directory
//! (the Qwen3-Embedding-style fixture: last token, normalized). Oracle: the
//! vectors sentence-transformers wrote in its golden.json; also the
//! official `openai` client (tests/openai_embeddings.py) where
//! `$HEARTH_PYTHON` or `python3` has it.

mod serve_common;

use std::path::PathBuf;

use base64::Engine as _;
use serde_json::{json, Value};
use serve_common::*;

const NAME: &str = "qwen3-embed";

fn fixture() -> PathBuf {
    embed_fixture("qwen3_last_norm")
}

fn golden() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("golden.json")).unwrap()).unwrap()
}

fn start(extra: &[&str]) -> Server {
    Server::start_model(fixture(), NAME, extra, tempfile::tempdir().unwrap())
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

async fn embed(c: &reqwest::Client, s: &Server, body: Value) -> Value {
    let resp = post(c, &s.url("/v1/embeddings"), &body).await;
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn embeddings_match_sentence_transformers_in_every_input_form() {
    let g = golden();
    let server = start(&[]);
    let c = client();
    let inputs = g["inputs"].clone();
    let want: Vec<Vec<f32>> = g["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    let tokens: usize = g["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_array().unwrap().len())
        .sum();

    let r = embed(&c, &server, json!({"model": NAME, "input": inputs})).await;
    assert_eq!(r["object"], "list");
    assert_eq!(r["model"], NAME);
    assert_eq!(
        r["usage"],
        json!({"prompt_tokens": tokens, "total_tokens": tokens})
    );
    let data = r["data"].as_array().unwrap();
    assert_eq!(data.len(), want.len());
    for (i, (d, w)) in data.iter().zip(&want).enumerate() {
        assert_eq!(d["object"], "embedding");
        assert_eq!(d["index"], i);
        assert_embedding_close(&floats(&d["embedding"]), w, &format!("input {i}"));
    }

    // base64: the same floats, little-endian.
    let b = embed(
        &c,
        &server,
        json!({"model": NAME, "input": inputs, "encoding_format": "base64"}),
    )
    .await;
    for (d, f) in b["data"].as_array().unwrap().iter().zip(data) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(d["embedding"].as_str().unwrap())
            .unwrap();
        let got: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(got, floats(&f["embedding"]));
    }

    // One string; token ids; arrays of token ids; `dimensions` equal to the width.
    let one = embed(
        &c,
        &server,
        json!({"model": NAME, "input": inputs[2], "dimensions": 32}),
    )
    .await;
    assert_embedding_close(
        &floats(&one["data"][0]["embedding"]),
        &want[2],
        "one string",
    );
    let ids = g["input_ids"].clone();
    let single = embed(&c, &server, json!({"model": NAME, "input": ids[1]})).await;
    assert_embedding_close(
        &floats(&single["data"][0]["embedding"]),
        &want[1],
        "token ids",
    );
    assert_eq!(
        single["usage"]["prompt_tokens"],
        ids[1].as_array().unwrap().len()
    );
    let many = embed(
        &c,
        &server,
        json!({"model": NAME, "input": [ids[0], ids[3]]}),
    )
    .await;
    assert_embedding_close(&floats(&many["data"][0]["embedding"]), &want[0], "ids 0");
    assert_embedding_close(&floats(&many["data"][1]["embedding"]), &want[3], "ids 3");
    wait_idle(&c, &server).await;
}

#[tokio::test]
async fn bad_requests_are_400s_naming_the_field() {
    let server = start(&[]);
    let c = client();
    let url = server.url("/v1/embeddings");
    let cases = [
        (json!({"model": NAME, "input": []}), "input", "empty array"),
        (
            json!({"model": NAME, "input": ["a", ""]}),
            "input",
            "`input[1]` is empty",
        ),
        (
            json!({"model": NAME, "input": ["a", 7]}),
            "input",
            "`input[1]` is 7",
        ),
        (
            json!({"model": NAME, "input": [1, -1]}),
            "input",
            "not a token id",
        ),
        (
            json!({"model": NAME, "input": [[1], [99999]]}),
            "input",
            "outside the vocabulary",
        ),
        (
            json!({"model": NAME, "input": vec![5; 513]}),
            "input",
            "maximum context length is 512",
        ),
        (
            json!({"model": NAME, "input": "x", "encoding_format": "int8"}),
            "encoding_format",
            "float",
        ),
        (
            json!({"model": NAME, "input": "x", "dimensions": 8}),
            "dimensions",
            "32 dimensions",
        ),
    ];
    for (body, param, needle) in cases {
        let e = expect_error(post(&c, &url, &body).await, 400).await;
        assert_eq!(e["param"], param, "{body}: {e}");
        assert!(
            e["message"].as_str().unwrap().contains(needle),
            "{body}: {e}"
        );
    }
    let long = json!({"model": NAME, "input": vec![5; 513]});
    let e = expect_error(post(&c, &url, &long).await, 400).await;
    assert_eq!(e["code"], "context_length_exceeded");
    let unknown = json!({"model": NAME, "input": "x", "temperature": 1});
    let e = expect_error(post(&c, &url, &unknown).await, 400).await;
    assert!(
        e["message"].as_str().unwrap().contains("temperature"),
        "{e}"
    );
    let e = expect_error(
        post(&c, &url, &json!({"model": "other", "input": "x"})).await,
        404,
    )
    .await;
    assert_eq!(e["param"], "model");
    // Nothing leaked, and the server still answers.
    wait_idle(&c, &server).await;
    embed(&c, &server, json!({"model": NAME, "input": "hello"})).await;
}

/// More inputs than the server holds sequences: they run a few at a time,
/// and every vector is still the golden one, in input order.
#[tokio::test]
async fn more_inputs_than_the_server_holds_run_in_waves() {
    let g = golden();
    let server = start(&["--max-num-seqs", "1", "--max-queue", "1"]);
    let c = client();
    let inputs: Vec<Value> = (0..5).map(|i| g["inputs"][i % 4].clone()).collect();
    let r = embed(&c, &server, json!({"model": NAME, "input": inputs})).await;
    let data = r["data"].as_array().unwrap();
    assert_eq!(data.len(), 5);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["index"], i);
        let want = floats(&g["embeddings"][i % 4]);
        assert_embedding_close(&floats(&d["embedding"]), &want, &format!("input {i}"));
    }
    wait_idle(&c, &server).await;
}

/// A generator that declares no pooling: refused, naming `--pooling`;
/// with `--pooling mean` it embeds (normalized, as llama.cpp does).
#[tokio::test]
async fn a_model_without_pooling_needs_the_flag() {
    let c = client();
    let plain = Server::start(&[]);
    let body = json!({"model": MODEL, "input": "hello"});
    let e = expect_error(post(&c, &plain.url("/v1/embeddings"), &body).await, 400).await;
    assert_eq!(e["param"], "model");
    assert!(e["message"].as_str().unwrap().contains("--pooling"), "{e}");
    drop(plain);
    let mean = Server::start(&["--pooling", "mean"]);
    let r = embed(&c, &mean, body).await;
    let v = floats(&r["data"][0]["embedding"]);
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
}

#[test]
fn official_openai_client() {
    let Some(py) = python_with("openai") else {
        eprintln!(
            "skipped: no python3 with the `openai` package (scripts/test.sh sets HEARTH_PYTHON)"
        );
        return;
    };
    let server = start(&[]);
    let golden = fixture().join("golden.json");
    run_client_script(
        &py,
        "openai_embeddings.py",
        &server,
        &[NAME, golden.to_str().unwrap()],
    );
}
