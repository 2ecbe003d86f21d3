//! `/tokenize` and `/detokenize` (llama-server's shapes, vLLM's `prompt`)
//! and the context length in `/v1/models`. Oracle: the tiny model's
//! vocabulary as the fixture writes it (id 0 is the space `Ġ`, then `a`..`z`
//! as 1..26, digits 27..36, then `.`, `,`, `!`).

mod serve_common;

use serde_json::json;
use serve_common::*;

/// The fixture vocabulary's id of `c`.
fn id_of(c: char) -> u64 {
    match c {
        ' ' => 0,
        'a'..='z' => 1 + (c as u64 - 'a' as u64),
        '0'..='9' => 27 + (c as u64 - '0' as u64),
        '.' => 37,
        ',' => 38,
        '!' => 39,
        _ => panic!("not in the fixture vocabulary: {c:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenize_detokenize_and_the_context_length() {
    let server = Server::start(&["--api-key", "sk-tok"]);
    let c = client();
    let auth = |r: reqwest::RequestBuilder| r.bearer_auth("sk-tok");
    let text = "hello, world 42!";
    let want: Vec<u64> = text.chars().map(id_of).collect();

    let resp = auth(c.post(server.url("/tokenize")))
        .json(&json!({"content": text}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    let ids: Vec<u64> = v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    assert_eq!(ids, want);
    assert_eq!(v["count"], want.len());
    assert_eq!(v["max_model_len"], CONTEXT);

    // Pieces, and vLLM's `prompt`.
    let v: serde_json::Value = auth(c.post(server.url("/tokenize")))
        .json(&json!({"prompt": "ab c", "with_pieces": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["tokens"],
        json!([
            {"id": 1, "piece": "a"},
            {"id": 2, "piece": "b"},
            {"id": 0, "piece": " "},
            {"id": 3, "piece": "c"},
        ])
    );

    // Back again.
    let v: serde_json::Value = auth(c.post(server.url("/detokenize")))
        .json(&json!({"tokens": want}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["content"], text);

    // Faults name their field.
    for (path, body, param) in [
        ("/detokenize", json!({"tokens": [1, 40]}), "tokens"),
        ("/detokenize", json!({"tokens": "abc"}), "tokens"),
        ("/tokenize", json!({}), "content"),
        (
            "/tokenize",
            json!({"content": "a", "prompt": "b"}),
            "content",
        ),
        ("/tokenize", json!({"content": "a", "text": "b"}), "text"),
    ] {
        let resp = auth(c.post(server.url(path)))
            .json(&body)
            .send()
            .await
            .unwrap();
        let e = expect_error(resp, 400).await;
        assert_eq!(e["param"], param, "{path} {body}: {e}");
    }

    // Behind the API key like the completions.
    let resp = c
        .post(server.url("/tokenize"))
        .json(&json!({"content": "a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let models: serde_json::Value = auth(c.get(server.url("/v1/models")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["context_length"], CONTEXT);
    assert_eq!(models["data"][0]["max_model_len"], CONTEXT);
}
