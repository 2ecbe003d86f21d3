//! Speculative decoding in `hearth serve`: the server default (`--draft
//! ngram`) and the per-request `draft` field give the greedy text plain
//! decoding gives, the drafted/accepted counters move only for requests
//! that draft, and a bad `draft` value is a 400.

mod serve_common;

use serde_json::{json, Value};
use serve_common::*;

const PROMPT: &str = "hello world hello world hello";
const MAX: usize = 40;

async fn text_of(c: &reqwest::Client, server: &Server, extra: Value) -> String {
    let resp = post(
        c,
        &server.url("/v1/completions"),
        &completion_body(PROMPT, MAX, extra),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    v["choices"][0]["text"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drafting_requests_match_plain_decoding_and_are_counted() {
    let server = Server::start(&["--draft", "ngram"]);
    let alone = run_alone(&server.model_path, PROMPT, MAX, &["--draft", "off"]);
    let want = alone["text"].as_str().unwrap();
    let c = client();

    // Server default: drafts.
    assert_eq!(text_of(&c, &server, json!({})).await, want);
    let m = wait_idle(&c, &server).await;
    let drafted = metric(&m, "hearth_spec_draft_tokens_total");
    let accepted = metric(&m, "hearth_spec_accepted_tokens_total");
    assert!(drafted > 0.0, "{m}");
    assert!(accepted <= drafted);
    let rate = metric(&m, "hearth_spec_acceptance_rate");
    assert!((rate - accepted / drafted).abs() < 1e-9);

    // Opted out: same text, counters unchanged.
    assert_eq!(text_of(&c, &server, json!({"draft": "off"})).await, want);
    let m = wait_idle(&c, &server).await;
    assert_eq!(metric(&m, "hearth_spec_draft_tokens_total"), drafted);

    // Streaming with drafts delivers the same text in chunks.
    let resp = post(
        &c,
        &server.url("/v1/completions"),
        &completion_body(PROMPT, MAX, json!({"draft": "ngram", "stream": true})),
    )
    .await;
    let mut sse = SseReader::new(resp);
    let s = assemble(&sse.rest().await, "text_completion", 1);
    assert_eq!(s.text[0], want);

    let resp = post(
        &c,
        &server.url("/v1/completions"),
        &completion_body(PROMPT, MAX, json!({"draft": "eagle"})),
    )
    .await;
    let e = expect_error(resp, 400).await;
    assert_eq!(e["param"], "draft");
}

/// `--draft-model`: requests that choose `"draft": "model"` draft with it
/// and get plain decoding's greedy text; a server without one answers such
/// a request with a 400 that names the option.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draft_model_requests_match_plain_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let draft = dir.path().join("draft.gguf");
    std::fs::write(&draft, tiny_model_bytes()).unwrap();
    let server = Server::start(&["--draft-model", draft.to_str().unwrap(), "--draft", "off"]);
    let alone = run_alone(&server.model_path, PROMPT, MAX, &["--draft", "off"]);
    let want = alone["text"].as_str().unwrap();
    let c = client();
    assert_eq!(text_of(&c, &server, json!({})).await, want);
    let m = wait_idle(&c, &server).await;
    assert_eq!(metric(&m, "hearth_spec_draft_tokens_total"), 0.0);
    assert_eq!(text_of(&c, &server, json!({"draft": "model"})).await, want);
    let m = wait_idle(&c, &server).await;
    assert!(metric(&m, "hearth_spec_draft_tokens_total") > 0.0, "{m}");

    let plain = Server::start(&[]);
    let resp = post(
        &c,
        &plain.url("/v1/completions"),
        &completion_body(PROMPT, MAX, json!({"draft": "model"})),
    )
    .await;
    let e = expect_error(resp, 400).await;
    assert!(
        e["message"].as_str().unwrap().contains("--draft-model"),
        "{e}"
    );
}
