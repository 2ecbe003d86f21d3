//! Hostile chat templates and huge prompts (issue 20): a template that
//! would run for hours or write gigabytes fails its request with a 400
//! naming the limit, while other requests are served, `/health` stays ok
//! and SIGTERM still ends the server; a prompt far longer than the context
//! is refused by its byte count, without tokenizing, while a stream runs.

mod serve_common;

use serde_json::{json, Value};
use serve_common::*;

/// 10^10 loop iterations: hours without an instruction budget.
const NESTED_LOOPS: &str =
    "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}";

/// 10 GB of output.
const HUGE_OUTPUT: &str = "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}";

fn chat_body(text: &str) -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 2,
    })
}

/// A stream of `max_tokens` tokens, started before the hostile request and
/// read to its end after it.
async fn stream_completes_alongside(
    c: &reqwest::Client,
    server: &Server,
    hostile: Value,
    path: &str,
) -> Value {
    let body = completion_body("abc", 40, json!({"stream": true, "ignore_eos": true}));
    let mut sse = SseReader::new(post(c, &server.url("/v1/completions"), &body).await);
    let mut payloads = vec![sse.next().await.expect("first chunk")];
    let refused = tokio::time::timeout(HANG_GUARD, post(c, &server.url(path), &hostile))
        .await
        .expect("the hostile request hung");
    let e = expect_error(refused, 400).await;
    // Meanwhile the server answers and the stream runs to its end.
    let health = c.get(server.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    payloads.extend(sse.rest().await);
    let s = assemble(&payloads, "text_completion", 1);
    assert_eq!(s.finish[0].as_deref(), Some("length"));
    e
}

async fn sigterm_exits_within_grace(mut server: Server) {
    server.signal("TERM");
    let status = server.wait_exit();
    assert!(status.success(), "exit {status:?}; log:\n{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_template_fails_its_request_and_the_server_goes_on() {
    let server = Server::start_with_model(
        tiny_model_with_template(NESTED_LOOPS),
        &["--shutdown-grace", "5"],
    );
    let c = client();
    let e = stream_completes_alongside(&c, &server, chat_body("hi"), "/v1/chat/completions").await;
    let m = e["message"].as_str().unwrap();
    assert!(m.contains("instruction budget"), "{e}");
    assert_eq!(e["param"], "messages");
    sigterm_exits_within_grace(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_output_template_fails_its_request() {
    let server = Server::start_with_model(
        tiny_model_with_template(HUGE_OUTPUT),
        &["--shutdown-grace", "5"],
    );
    let c = client();
    let e = stream_completes_alongside(&c, &server, chat_body("hi"), "/v1/chat/completions").await;
    let m = e["message"].as_str().unwrap();
    assert!(m.contains("output exceeds"), "{e}");
    sigterm_exits_within_grace(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_prompt_is_refused_by_its_size_while_a_stream_runs() {
    let server = Server::start(&["--max-body-bytes", "8MiB"]);
    let c = client();
    let prompt = "a".repeat(3_900_000);
    let e = stream_completes_alongside(
        &c,
        &server,
        completion_body(&prompt, 2, json!({})),
        "/v1/completions",
    )
    .await;
    assert_eq!(e["param"], "prompt");
    // Refused by its byte count (before tokenizing), naming the context.
    let m = e["message"].as_str().unwrap();
    assert!(
        m.contains("3900000 bytes") && m.contains(&CONTEXT.to_string()),
        "{e}"
    );
    // The same for a chat's messages.
    let chat = chat_body(&prompt);
    let e = expect_error(
        post(&c, &server.url("/v1/chat/completions"), &chat).await,
        400,
    )
    .await;
    assert_eq!(e["param"], "messages");
    wait_idle(&c, &server).await;
}
