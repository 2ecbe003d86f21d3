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
