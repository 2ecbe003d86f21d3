//! `hearth serve` answers like `hearth run`: greedy completions, streamed or
//! not, with n choices, logprobs and usage, in OpenAI's shapes.

mod serve_common;

use serde_json::{json, Value};
use serve_common::*;

const PROMPT: &str = "hello world";
const MAX: usize = 24;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * (1.0 + a.abs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_match_hearth_run() {
    let server = Server::start(&[]);
    let alone = run_alone(&server.model_path, PROMPT, MAX, &["--logprobs", "3"]);
    let want_text = alone["text"].as_str().unwrap();
    let want_finish = alone["finish_reason"].as_str().unwrap();
    let want_tokens = alone["ids"].as_array().unwrap().len();
    let prompt_tokens = alone["prompt_ids"].as_array().unwrap().len();
    assert!(want_tokens > 0);
    let c = client();

    // Non-streaming, with logprobs, two greedy choices.
    let resp = post(
        &c,
        &server.url("/v1/completions"),
        &completion_body(PROMPT, MAX, json!({"n": 2, "logprobs": 3})),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], MODEL);
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    for (i, ch) in choices.iter().enumerate() {
        assert_eq!(ch["index"], i);
        assert_eq!(ch["text"], want_text, "choice {i}");
        assert_eq!(ch["finish_reason"], want_finish);
        let lp = &ch["logprobs"];
        let token_lps = lp["token_logprobs"].as_array().unwrap();
        assert_eq!(token_lps.len(), want_tokens);
        assert_eq!(lp["tokens"].as_array().unwrap().len(), want_tokens);
        assert_eq!(lp["text_offset"].as_array().unwrap().len(), want_tokens);
        for (step, row) in alone["top_logprobs"].as_array().unwrap().iter().enumerate() {
            // Greedy: the chosen token is the best candidate.
            let best = row[0]["logprob"].as_f64().unwrap();
            assert!(
                close(token_lps[step].as_f64().unwrap(), best),
                "step {step}"
            );
            let top = lp["top_logprobs"][step].as_object().unwrap();
            assert!(!top.is_empty() && top.len() <= 3);
            assert!(top.values().any(|x| close(x.as_f64().unwrap(), best)));
        }
    }
    assert_eq!(
        v["usage"]["prompt_tokens"], prompt_tokens,
        "counted once for n=2"
    );
    assert_eq!(v["usage"]["completion_tokens"], 2 * want_tokens);
    assert_eq!(v["usage"]["total_tokens"], prompt_tokens + 2 * want_tokens);

    // Streaming with usage.
    let resp = post(
        &c,
        &server.url("/v1/completions"),
        &completion_body(
            PROMPT,
            MAX,
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ),
    )
    .await;
    let payloads = SseReader::new(resp).rest().await;
    let s = assemble(&payloads, "text_completion", 1);
    assert_eq!(s.text[0], want_text);
    assert_eq!(s.finish[0].as_deref(), Some(want_finish));
    let usage = s.usage.expect("include_usage chunk");
    assert_eq!(usage["prompt_tokens"], prompt_tokens);
    assert_eq!(usage["completion_tokens"], want_tokens);
    // The usage chunk is the last one before [DONE]; the others carry usage: null.
    assert!(s.chunks.last().unwrap()["choices"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(s.chunks[..s.chunks.len() - 1]
        .iter()
        .all(|c| c["usage"].is_null()));

    // Streaming without usage: no usage chunk, no usage field.
    let resp = post(
        &c,
        &server.url("/v1/completions"),
        &completion_body(
            PROMPT,
            MAX,
            json!({"stream": true, "n": 2, "ignore_eos": true}),
        ),
    )
    .await;
    let s = assemble(&SseReader::new(resp).rest().await, "text_completion", 2);
    assert!(s.usage.is_none());
    assert_eq!(s.text[0], s.text[1]);
    assert_eq!(s.finish[0].as_deref(), Some("length"));
    assert!(s.chunks.iter().all(|c| c.get("usage").is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_matches_hearth_run_chat() {
    let server = Server::start(&[]);
    let c = client();
    let alone = {
        let out = hearth_cmd()
            .args(["run", "--model", server.model_path.to_str().unwrap()])
            .args([
                "--chat",
                "good day",
                "--max-tokens",
                "20",
                "--temperature",
                "0",
            ])
            .args(["--json", "--ignore-eos"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "good day"}],
        "max_completion_tokens": 20,
        "temperature": 0,
        "ignore_eos": true,
        "logprobs": true,
        "top_logprobs": 2,
        "user": "someone",
    });
    let v: Value = post(&c, &server.url("/v1/chat/completions"), &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "chat.completion", "{v}");
    let ch = &v["choices"][0];
    assert_eq!(ch["message"]["role"], "assistant");
    assert_eq!(ch["message"]["content"], alone["text"]);
    assert_eq!(ch["finish_reason"], "length");
    let content = ch["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 20);
    let mut joined = Vec::new();
    for e in content {
        assert!(e["token"].is_string() && e["logprob"].as_f64().unwrap() <= 0.0);
        joined.extend(
            e["bytes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_u64().unwrap() as u8),
        );
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        assert_eq!(top[0]["token"], e["token"], "greedy picks the best");
    }
    // The tokens' bytes spell the text (single-character vocabulary, "Ġ" = space).
    assert_eq!(
        String::from_utf8(joined).unwrap(),
        alone["text"].as_str().unwrap()
    );
    assert_eq!(
        v["usage"]["prompt_tokens"],
        alone["prompt_ids"].as_array().unwrap().len()
    );

    // Streamed: a role chunk first, then content, then finish_reason, then [DONE].
    let mut body = body;
    body["stream"] = json!(true);
    body["logprobs"] = json!(false);
    body.as_object_mut().unwrap().remove("top_logprobs");
    let payloads = SseReader::new(post(&c, &server.url("/v1/chat/completions"), &body).await)
        .rest()
        .await;
    let s = assemble(&payloads, "chat.completion.chunk", 1);
    assert_eq!(s.chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(s.text[0], alone["text"].as_str().unwrap());
    assert_eq!(s.finish[0].as_deref(), Some("length"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_health_and_metrics() {
    let server = Server::start(&[]);
    let c = client();
    let v: Value = c
        .get(server.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], MODEL);
    assert_eq!(v["data"][0]["max_model_len"], CONTEXT);
    let v: Value = c
        .get(server.url(&format!("/v1/models/{MODEL}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["id"], MODEL);
    let e = expect_error(
        c.get(server.url("/v1/models/gpt-4")).send().await.unwrap(),
        404,
    )
    .await;
    assert_eq!(e["code"], "model_not_found");
    assert_eq!(
        c.get(server.url("/health")).send().await.unwrap().status(),
        200
    );

    // The same 40-token prompt twice: the second finds its full blocks cached.
    let shared = "the same long prompt, twice over. ".repeat(2);
    for _ in 0..2 {
        let resp = post(
            &c,
            &server.url("/v1/completions"),
            &completion_body(&shared[..40], 5, json!({"ignore_eos": true})),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let _ = resp.text().await;
    }
    let text = wait_idle(&c, &server).await;
    assert_eq!(
        metric(&text, "hearth_prefix_cache_query_tokens_total"),
        80.0
    );
    assert_eq!(metric(&text, "hearth_prefix_cache_hit_tokens_total"), 32.0);
    assert!(metric(&text, "hearth_prefix_cache_hit_rate") > 0.0);
    assert!(metric(&text, "hearth_kv_blocks_cached") >= 2.0);
    for name in [
        "hearth_prompt_tokens_total",
        "hearth_generation_tokens_total",
        "hearth_kv_blocks_free",
        "hearth_kv_blocks_total",
        "hearth_kv_blocks_cached",
        "hearth_prefix_cache_hit_rate",
        "hearth_preemptions_total",
        "hearth_time_to_first_token_seconds_count",
        "hearth_inter_token_latency_seconds_count",
    ] {
        metric(&text, name);
    }
    assert_eq!(metric(&text, "hearth_generation_tokens_total"), 10.0);
    assert_eq!(metric(&text, "hearth_prompt_tokens_total"), 80.0);
    let ttft = metric(&text, "hearth_time_to_first_token_seconds_count");
    assert_eq!(ttft, 2.0);
    let itl = metric(&text, "hearth_inter_token_latency_seconds_count");
    assert_eq!(itl, 8.0);
    assert!(
        text.contains(r#"hearth_http_requests_total{endpoint="/v1/completions",status="200"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"hearth_http_requests_total{endpoint="/v1/models/{id}",status="404"} 1"#),
        "{text}"
    );
}
